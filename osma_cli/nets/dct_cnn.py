"""dct_cnn: a fixed frequency transform followed by a small CNN, in the spirit of POSE and DNA-Det.

What POSE does (github TianyunYoung/POSE, ``models/models.py``): resize every image to
128x128, normalise to [-1, 1], take the full-image 2-D DCT of each channel
(``torch_dct.dct_2d``) and feed it to a DCGAN-style CNN that ends in a flatten and a
fully connected layer: a network tied to one input size, fed resampled images.

What this does instead: a blockwise 8x8 orthonormal DCT-II, computed as a stride-8
convolution with a fixed basis (a non-learnable buffer), per colour channel, then the
log-magnitude of each coefficient (as Frank et al., ICML 2020, log-scale their DCT spectra).
Why blockwise rather than full-image:

- each of the 3 x 64 channels *is* one spatial frequency and each position one block, so
  global pooling averages frequency statistics over the image instead of throwing away the
  frequency axis, and the same coefficient means the same frequency at every input size;
  a full-image DCT of an N x N crop puts a given frequency at an index that depends on N;
- osma never resamples (resampling erases the traces), so the transform must accept any
  size; periodic generator artefacts (upsampling by 2, 4, 8) and JPEG's 8x8 grid both
  live at fixed 8x8-DCT coefficients;
- it is one cheap strided convolution, and the CNN then runs at 1/8 resolution: fast on CPU.

The log-magnitude uses eps = 1e-3, about the standard deviation of 8-bit quantisation noise
in an orthonormal coefficient ((1/255)/sqrt(12)); a learned BatchNorm then standardises each
frequency. Rows and columns beyond the last whole 8x8 block are ignored. The transform runs
in float32 even under autocast (bfloat16 would round pixels more coarsely than 1/255).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from osma_cli.nets.base import EmbeddingNet
from osma_cli.nets.registry import register_model

BLOCK = 8
_LOG_EPS = 1e-3


def dct_matrix(n: int) -> Tensor:
    """Orthonormal DCT-II matrix C (n x n): coefficients = C @ signal, and C @ C.T = I."""
    k = torch.arange(n, dtype=torch.float64).unsqueeze(1)
    i = torch.arange(n, dtype=torch.float64).unsqueeze(0)
    basis = torch.cos(math.pi * (2 * i + 1) * k / (2 * n)) * math.sqrt(2.0 / n)
    basis[0] /= math.sqrt(2.0)
    return basis


def block_dct_basis(block: int = BLOCK) -> Tensor:
    """(block^2, 1, block, block) conv weight: output (u, v) of a block is its DCT coefficient."""
    c = dct_matrix(block)
    return torch.einsum("um,vn->uvmn", c, c).reshape(block * block, 1, block, block).float()


def _conv_bn_relu(in_ch: int, out_ch: int, kernel: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, kernel, stride=stride, padding=kernel // 2, bias=False),
        nn.BatchNorm2d(out_ch),
        nn.ReLU(inplace=True),
    )


class DCTCNN(EmbeddingNet):
    """Block DCT log-spectrum, four conv layers on the block grid, global average pooling, linear."""

    dct_basis: Tensor  # a buffer (register_buffer)

    def __init__(self, *, embedding_dim: int = 128, width: int = 128) -> None:
        super().__init__(embedding_dim=embedding_dim, min_input_size=BLOCK)
        coefficients = 3 * BLOCK * BLOCK
        self.register_buffer("dct_basis", block_dct_basis().repeat(3, 1, 1, 1), persistent=False)
        self.spectrum_norm = nn.BatchNorm2d(coefficients)
        self.body = nn.Sequential(
            _conv_bn_relu(coefficients, width, 1),
            _conv_bn_relu(width, width, 3),
            _conv_bn_relu(width, 2 * width, 3, stride=2),
            _conv_bn_relu(2 * width, 2 * width, 3),
        )
        self.fc = nn.Linear(2 * width, embedding_dim)

    def spectrum(self, x: Tensor) -> Tensor:
        """(B, 3, H, W) -> (B, 192, H // 8, W // 8) log-magnitude of the blockwise DCT."""
        with torch.autocast(device_type=x.device.type, enabled=False):
            coeffs = F.conv2d(x.to(self.dct_basis.dtype), self.dct_basis, stride=BLOCK, groups=3)
            return torch.log(coeffs.abs() + _LOG_EPS)

    def forward_features(self, x: Tensor) -> Tensor:
        return self.body(self.spectrum_norm(self.spectrum(x)))

    def forward_head(self, features: Tensor) -> Tensor:
        return self.fc(features.mean(dim=(2, 3)))


@register_model("dct_cnn")
def dct_cnn(*, embedding_dim: int = 128, **kwargs: Any) -> DCTCNN:
    """Block-DCT CNN with a 128-d embedding unless told otherwise."""
    return DCTCNN(embedding_dim=embedding_dim, **kwargs)
