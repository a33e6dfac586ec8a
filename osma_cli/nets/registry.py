"""One registry of embedding networks: names map to keyword-only builder functions.

Weights files name their architecture; ``get_model`` turns that name (and the builder
keywords stored with the weights) back into a network. Builders are keyword-only, so a
stored ``arch_kwargs`` dict always means the same thing; duplicate names are refused so
that one name can never build two different networks. Builders must also work under
``torch.device("meta")``: ``save_weights`` builds a data-free skeleton that way to check
that the metadata describes the tensors (the round-trip test over every model enforces it).

Each name is registered with its kind: ``"embedding"`` (an ``EmbeddingNet``, built with
``embedding_dim``) or ``"classifier"`` (a ``ClassifierNet``, built with ``embedding_dim`` and
``n_classes``) or ``"descriptor"`` (a ``DescriptorNet``, built with ``embedding_dim`` and its
settings). Weights files record the kind too, and loading checks the two agree.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, TypeVar

from osma_cli.errors import UsageError
from osma_cli.names import unknown_name
from osma_cli.nets.base import ClassifierNet, DescriptorNet, EmbeddingNet, ImageModel

Builder = Callable[..., ImageModel]
B = TypeVar("B", bound=Builder)

MODEL_CLASSES: dict[str, type[ImageModel]] = {
    "embedding": EmbeddingNet,
    "classifier": ClassifierNet,
    "descriptor": DescriptorNet,
}
_BUILDERS: dict[str, Builder] = {}
_KINDS: dict[str, str] = {}


def register_model(name: str, *, kind: str = "embedding") -> Callable[[B], B]:
    """Decorator registering ``builder`` under ``name``; refuses duplicates and positional params."""
    if kind not in MODEL_CLASSES:
        raise UsageError(f"unknown model kind {kind!r}; known: {', '.join(MODEL_CLASSES)}")

    def decorate(builder: B) -> B:
        if name in _BUILDERS:
            raise UsageError(
                f"a model named {name!r} is already registered "
                f"({_BUILDERS[name].__module__}.{_BUILDERS[name].__qualname__})"
            )
        positional = [
            p.name
            for p in inspect.signature(builder).parameters.values()
            if p.kind not in (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.VAR_KEYWORD)
        ]
        if positional:
            raise UsageError(
                f"builder for {name!r} must be keyword-only; positional parameters: {', '.join(positional)}",
                hint="put '*' first in its signature",
            )
        _BUILDERS[name] = builder
        _KINDS[name] = kind
        return builder

    return decorate


def list_models() -> list[str]:
    """Registered model names, sorted."""
    return sorted(_BUILDERS)


def get_model_builder(name: str) -> Builder:
    """The builder registered under ``name``; unknown names get the close matches."""
    try:
        return _BUILDERS[name]
    except KeyError:
        raise unknown_name("model", name, _BUILDERS, listing="models", n=3) from None


def model_kind(name: str) -> str:
    """``"embedding"`` or ``"classifier"``: what the builder registered under ``name`` makes."""
    get_model_builder(name)
    return _KINDS.get(name, "embedding")


def get_model(name: str, **kwargs: Any) -> ImageModel:
    """Build the network registered under ``name`` with builder keywords ``kwargs``."""
    builder = get_model_builder(name)
    try:
        model = builder(**kwargs)
    except TypeError as exc:
        raise UsageError(f"cannot build model {name!r} with {kwargs!r}: {exc}") from exc
    wanted = MODEL_CLASSES[model_kind(name)]
    if not isinstance(model, wanted):
        raise UsageError(f"builder for {name!r} returned {type(model).__name__}, not an {wanted.__name__}")
    return model
