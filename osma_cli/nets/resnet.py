"""ResNet-50 as an embedding network: one of the architectures Fang et al. compare (Table 2).

torchvision's ResNet-50 built with ``weights=None`` (nothing is ever downloaded; osma's
own weights files carry the trained parameters), its classifier replaced by a linear layer
to ``embedding_dim``. ImageNet mean/std normalisation happens inside, so callers feed
[0, 1] RGB like every other osma network. The stem and four stages reduce by 32, so any
input of at least 32x32 leaves one cell for global average pooling.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from osma_cli.nets.base import EmbeddingNet
from osma_cli.nets.registry import register_model

_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


class ResNet50Embedding(EmbeddingNet):
    """torchvision ResNet-50 (random init) with a linear embedding head."""

    mean: Tensor  # buffers (register_buffer)
    std: Tensor

    def __init__(self, *, embedding_dim: int = 512) -> None:
        super().__init__(embedding_dim=embedding_dim, min_input_size=32)
        from torchvision.models import resnet50  # imported here: torchvision is slow to import

        self.backbone = resnet50(weights=None, num_classes=embedding_dim)
        self.register_buffer("mean", torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward_features(self, x: Tensor) -> Tensor:
        net = self.backbone
        x = (x - self.mean) / self.std
        x = net.maxpool(net.relu(net.bn1(net.conv1(x))))
        return net.layer4(net.layer3(net.layer2(net.layer1(x))))

    def forward_head(self, features: Tensor) -> Tensor:
        return self.backbone.fc(features.mean(dim=(2, 3)))


@register_model("resnet50")
def resnet50(*, embedding_dim: int = 512, **kwargs: Any) -> ResNet50Embedding:
    """ResNet-50 with a 512-d embedding unless told otherwise."""
    return ResNet50Embedding(embedding_dim=embedding_dim, **kwargs)
