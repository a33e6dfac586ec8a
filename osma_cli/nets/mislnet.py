"""MISLNet: Bayar & Stamm's constrained CNN, the embedding network Fang et al. (BMVC 2023) pick.

Layers (Bayar & Stamm, IEEE TIFS 2018, and MISL's PyTorch code, github
ductai199x/mislnet-based-models, ``p256`` variant):

- constrained convolution, 5x5, 3 filters by default (the paper; MISL's code defaults to 6,
  hence ``num_constrained_filters``), no padding, no bias: prediction-error residuals;
- conv 7x7 96 stride 2, conv 5x5 64, conv 5x5 64, each BatchNorm + TanH + 3x3/2 max pooling;
- conv 1x1 128 + BatchNorm + TanH;
- fully connected 200 + TanH, fully connected ``embedding_dim`` + TanH.

One change: the flatten before the first fully connected layer (which ties the network to
one patch size) is replaced by global average pooling, which also takes the place of the
paper's average pooling after the 1x1 block. Any input of at least 39x39 works
(39 -5x5-> 35 -7x7/2-> 15 -pool-> 7 -pool-> 3 -pool-> 1).

Embedding: the 200-d TanH output of the second fully connected layer, as in MISL's code,
where camera-model pre-training puts a linear classifier on it and drops it afterwards.

The constrained layer computes in float32 even under autocast (see ``constrained``).
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from osma_cli.nets.base import EmbeddingNet
from osma_cli.nets.constrained import ConstrainedConv2d
from osma_cli.nets.registry import register_model


def _conv_block(in_ch: int, out_ch: int, kernel: int, *, stride: int, padding: int, pool: bool) -> nn.Sequential:
    """Conv + BatchNorm + TanH (+ 3x3/2 max pooling)."""
    layers: list[nn.Module] = [
        nn.Conv2d(in_ch, out_ch, kernel, stride=stride, padding=padding),
        nn.BatchNorm2d(out_ch),
        nn.Tanh(),
    ]
    if pool:
        layers.append(nn.MaxPool2d(kernel_size=3, stride=2))
    return nn.Sequential(*layers)


class MISLNet(EmbeddingNet):
    """Constrained conv, four conv blocks, global average pooling, two TanH fully connected layers."""

    def __init__(self, *, embedding_dim: int = 200, num_constrained_filters: int = 3, hidden_dim: int = 200) -> None:
        super().__init__(embedding_dim=embedding_dim, min_input_size=39)
        self.constrained = ConstrainedConv2d(3, num_constrained_filters, 5, bias=False)
        self.blocks = nn.Sequential(
            _conv_block(num_constrained_filters, 96, 7, stride=2, padding=0, pool=True),
            _conv_block(96, 64, 5, stride=1, padding=2, pool=True),
            _conv_block(64, 64, 5, stride=1, padding=2, pool=True),
            _conv_block(64, 128, 1, stride=1, padding=0, pool=False),
        )
        self.fc = nn.Sequential(nn.Linear(128, hidden_dim), nn.Tanh(), nn.Linear(hidden_dim, embedding_dim), nn.Tanh())

    def forward_features(self, x: Tensor) -> Tensor:
        return self.blocks(self.constrained(x))

    def forward_head(self, features: Tensor) -> Tensor:
        return self.fc(features.mean(dim=(2, 3)))

    def constrain(self) -> None:
        self.constrained.constrain()


@register_model("mislnet")
def mislnet(*, embedding_dim: int = 200, **kwargs: Any) -> MISLNet:
    """MISLNet with a 200-d embedding (MISL's fully connected width) unless told otherwise."""
    return MISLNet(embedding_dim=embedding_dim, **kwargs)
