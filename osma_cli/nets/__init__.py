"""Feature extractors (embedding networks, closed-set classifiers, descriptors) and their registry.

Importing this package registers every architecture: ``get_model("mislnet")`` works
after ``import osma_cli.nets``. Add a network by writing a module with a keyword-only
builder decorated with ``@register_model(name)`` and importing it here.
"""

from osma_cli.nets import dct_cnn, fsd, mislnet, pose_classifier, resnet  # noqa: F401  (imported to register)
from osma_cli.nets.base import ClassifierNet, DescriptorNet, EmbeddingNet, ImageModel, InputPolicy
from osma_cli.nets.registry import get_model, get_model_builder, list_models, model_kind, register_model

__all__ = [
    "ClassifierNet",
    "DescriptorNet",
    "EmbeddingNet",
    "InputPolicy",
    "ImageModel",
    "get_model",
    "get_model_builder",
    "list_models",
    "model_kind",
    "register_model",
]
