"""POSE's task model: the dct_cnn backbone with an MLP classification head over the known classes.

POSE (Yang et al., CVPR 2023) classifies images into K known generators with a DCT front
end and a small CNN (as in DNA-Det), and scores an image's "knownness" by its largest
softmax probability. Here the backbone is osma's ``dct_cnn`` (blockwise 8x8 DCT
log-spectrum, no resampling, any input size; see ``osma_cli.nets.dct_cnn`` for why it is not
POSE's full-image DCT on 128x128 resized images). Its output, ``embedding_dim`` wide, is the
**feature** on which POSE's triplet loss acts; the head maps it to K logits:

    feature -> ReLU -> Dropout(p) -> Linear(embedding_dim, K)

so pooled backbone features -> fully connected -> ReLU -> dropout -> linear is a two-layer
perceptron, the "MLP head" (the released code has the same two linear layers and the
dropout, with no non-linearity between them; with one between them the head is an MLP in
the usual sense, and the feature the triplet loss sees is unchanged).

Augmented images (POSE's open-space simulation) never reach the head: it has exactly K
outputs, one per known class, and a POSE model can never name a generator it was not
trained on. That is the difference from metric learning, where a new generator is one more
reference (``osma enroll``).
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from osma_cli.nets.base import ClassifierNet
from osma_cli.nets.dct_cnn import DCTCNN
from osma_cli.nets.registry import register_model

DEFAULT_DROPOUT = 0.2
"""The released code's dropout before the last linear layer."""


class PoseClassifier(ClassifierNet):
    """dct_cnn features, then ReLU, dropout and a linear layer to ``n_classes`` logits."""

    def __init__(
        self, *, n_classes: int, embedding_dim: int = 128, width: int = 128, dropout: float = DEFAULT_DROPOUT
    ) -> None:
        backbone = DCTCNN(embedding_dim=embedding_dim, width=width)
        super().__init__(embedding_dim=embedding_dim, n_classes=n_classes, min_input_size=backbone.min_input_size)
        self.backbone = backbone
        self.head = nn.Sequential(nn.ReLU(), nn.Dropout(p=float(dropout)), nn.Linear(embedding_dim, n_classes))

    def features(self, x: Tensor) -> Tensor:
        return self.backbone.forward_head(self.backbone.forward_features(x))

    def classify(self, features: Tensor) -> Tensor:
        return self.head(features)


@register_model("pose_dct_cnn", kind="classifier")
def pose_dct_cnn(*, n_classes: int, embedding_dim: int = 128, **kwargs: Any) -> PoseClassifier:
    """POSE's task model on osma's block-DCT CNN: ``n_classes`` known classes, 128-d features."""
    return PoseClassifier(n_classes=n_classes, embedding_dim=embedding_dim, **kwargs)
