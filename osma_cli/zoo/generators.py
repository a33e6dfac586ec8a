"""The zoo's generators: small fully-convolutional re-synthesis networks, one decoder per family.

Every generator is the same shape: an encoder that down-samples by ``2**levels`` (4 or 8)
into a narrow latent map, and a decoder that up-samples back to the input size and writes
RGB. The encoder is shared by all families; the **decoder** is what a family is, because
the up-sampling layers are what leave a generator's traces (periodic spectral peaks,
checkerboards, ringing). The families are the decoders of the generators real attribution
benchmarks hold:

============  ===============================================================  ==============
family        decoder                                                           like
============  ===============================================================  ==============
``tconv``     transposed convolution, kernel 3, stride 2 (uneven overlap)        ProGAN / DCGAN
``dcgan``     transposed convolution, kernel 4, stride 2, trained with an        DCGAN / pix2pix
              adversarial PatchGAN term beside the L1 loss
``nearest``   nearest-neighbour up-sampling then 3x3 convolutions                StyleGAN
``bilinear``  bilinear up-sampling then 3x3 convolutions                         StyleGAN2-ish
``shuffle``   sub-pixel convolution (conv to 4x channels, pixel shuffle)         ESRGAN
``resup``     residual blocks with GroupNorm and SiLU, nearest up-sampling +     LDM / VQGAN
              conv between them (the VAE decoder of latent diffusion)            VAE decoder
============  ===============================================================  ==============

A network maps ``(B, 3, H, W)`` RGB in [0, 1] to the same shape (not clamped: training
sees the raw output, ``render`` clamps and quantises). H and W must be multiples of the
stride (``2**levels``). There is no skip connection from the input to the output: every
output pixel is written by the decoder.

Networks are built from a ``GeneratorConfig`` (family + sizes), which is stored with the
weights, so a weights file rebuilds its network exactly (``build_generator``).
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from typing import Literal

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from osma_cli.errors import UsageError


@dataclass(frozen=True)
class GeneratorConfig:
    """The architecture of one generator: enough to rebuild it from its weights."""

    family: str
    width: int = 16
    """Channels at full resolution; each lower level has twice as many, up to ``4 * width``."""
    levels: int = 2
    """Down-sampling steps of 2: the stride is ``2**levels`` (2 gives 4, 3 gives 8)."""
    latent: int = 8
    """Channels of the latent map at the lowest resolution (the bottleneck)."""

    @property
    def stride(self) -> int:
        return 2**self.levels

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> GeneratorConfig:
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown or "family" not in data:
            raise UsageError(f"not a generator configuration: {data!r}", hint=f"expected the keys {sorted(names)}")
        return cls(**data)

    def check(self) -> None:
        if self.family not in FAMILIES:
            close = difflib.get_close_matches(self.family, list(FAMILIES), n=2)
            hint = f"did you mean {close[0]!r}?" if close else f"families: {', '.join(FAMILIES)}"
            raise UsageError(f"unknown generator family {self.family!r}", hint=hint)
        for name in ("width", "levels", "latent"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise UsageError(f"generator {name} must be a positive integer, not {value!r}")
        if self.family == "resup" and self.width % 4:
            raise UsageError("the resup family needs a width divisible by 4 (GroupNorm groups)")


def _channels(config: GeneratorConfig, level: int) -> int:
    """Channels at ``level`` (0 = full resolution)."""
    return config.width * min(2**level, 2)


def _act(family: str) -> nn.Module:
    return nn.SiLU() if family == "resup" else nn.LeakyReLU(0.2)


class Encoder(nn.Module):
    """conv in, then per level a stride-2 conv and a conv; a 1x1 conv to the latent map."""

    def __init__(self, config: GeneratorConfig) -> None:
        super().__init__()
        act = _act(config.family)
        layers: list[nn.Module] = [nn.Conv2d(3, _channels(config, 0), 3, padding=1), act]
        for level in range(1, config.levels + 1):
            c_in, c_out = _channels(config, level - 1), _channels(config, level)
            layers += [nn.Conv2d(c_in, c_out, 3, stride=2, padding=1), act, nn.Conv2d(c_out, c_out, 3, padding=1), act]
        layers.append(nn.Conv2d(_channels(config, config.levels), config.latent, 1))
        self.body = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x)


def _up_tconv(c_in: int, c_out: int, act: nn.Module) -> nn.Module:
    return nn.Sequential(
        nn.ConvTranspose2d(c_in, c_out, 3, stride=2, padding=1, output_padding=1),
        act,
        nn.Conv2d(c_out, c_out, 3, padding=1),
        act,
    )


def _up_dcgan(c_in: int, c_out: int, act: nn.Module) -> nn.Module:
    return nn.Sequential(
        nn.ConvTranspose2d(c_in, c_out, 4, stride=2, padding=1), act, nn.Conv2d(c_out, c_out, 3, padding=1), act
    )


def _up_interpolate(mode: str) -> Callable[[int, int, nn.Module], nn.Module]:
    def build(c_in: int, c_out: int, act: nn.Module) -> nn.Module:
        upsample = (
            nn.Upsample(scale_factor=2, mode="nearest")
            if mode == "nearest"
            else nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)
        )
        return nn.Sequential(
            upsample, nn.Conv2d(c_in, c_out, 3, padding=1), act, nn.Conv2d(c_out, c_out, 3, padding=1), act
        )

    return build


def _up_shuffle(c_in: int, c_out: int, act: nn.Module) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(c_in, 4 * c_out, 3, padding=1), nn.PixelShuffle(2), act, nn.Conv2d(c_out, c_out, 3, padding=1), act
    )


class ResBlock(nn.Module):
    """GroupNorm-SiLU-conv twice with a skip (1x1 conv when the width changes), as in LDM."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(4, c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.norm2 = nn.GroupNorm(4, c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.skip = nn.Identity() if c_in == c_out else nn.Conv2d(c_in, c_out, 1)

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return self.skip(x) + h


def _up_resup(c_in: int, c_out: int, act: nn.Module) -> nn.Module:
    return nn.Sequential(
        ResBlock(c_in, c_out), nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(c_out, c_out, 3, padding=1)
    )


FAMILIES: dict[str, Callable[[int, int, nn.Module], nn.Module]] = {
    "tconv": _up_tconv,
    "dcgan": _up_dcgan,
    "nearest": _up_interpolate("nearest"),
    "bilinear": _up_interpolate("bilinear"),
    "shuffle": _up_shuffle,
    "resup": _up_resup,
}
"""Family name -> the builder of one up-sampling stage ``(c_in, c_out, activation)``."""

ADVERSARIAL_FAMILIES: frozenset[str] = frozenset({"dcgan"})
"""Families trained with a PatchGAN term beside the reconstruction loss."""


class Decoder(nn.Module):
    """Latent map -> RGB: conv in, one up-sampling stage per level, then the output conv."""

    def __init__(self, config: GeneratorConfig) -> None:
        super().__init__()
        family, act = config.family, _act(config.family)
        top = _channels(config, config.levels)
        self.conv_in = nn.Sequential(nn.Conv2d(config.latent, top, 3, padding=1), act)
        stage = FAMILIES[family]
        self.stages = nn.Sequential(
            *[
                stage(_channels(config, level), _channels(config, level - 1), act)
                for level in range(config.levels, 0, -1)
            ]
        )
        width = _channels(config, 0)
        self.conv_out: nn.Module
        if family == "resup":
            self.conv_out = nn.Sequential(
                ResBlock(width, width), nn.GroupNorm(4, width), nn.SiLU(), nn.Conv2d(width, 3, 3, padding=1)
            )
        else:
            self.conv_out = nn.Conv2d(width, 3, 3, padding=1)

    def forward(self, z: Tensor) -> Tensor:
        return self.conv_out(self.stages(self.conv_in(z)))


def _init_weights(module: nn.Module) -> None:
    """He initialisation for the leaky activations, zero biases: PyTorch's default init
    shrinks the signal through a dozen layers and training starts from a flat image."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
        mode: Literal["fan_in", "fan_out"] = "fan_out" if isinstance(module, nn.ConvTranspose2d) else "fan_in"
        nn.init.kaiming_normal_(module.weight, a=0.2, mode=mode, nonlinearity="leaky_relu")
        if module.bias is not None:
            nn.init.zeros_(module.bias)


class Generator(nn.Module):
    """Encoder + decoder: re-synthesises an RGB image of the same size (a multiple of stride)."""

    def __init__(self, config: GeneratorConfig) -> None:
        super().__init__()
        config.check()
        self.config = config
        self.encoder = Encoder(config)
        self.decoder = Decoder(config)
        self.apply(_init_weights)

    def forward(self, x: Tensor) -> Tensor:
        stride = self.config.stride
        if x.ndim != 4 or x.shape[1] != 3:
            raise UsageError(f"a generator expects a (B, 3, H, W) tensor, got {tuple(x.shape)}")
        if x.shape[-2] % stride or x.shape[-1] % stride:
            raise UsageError(
                f"a {self.config.family} generator needs height and width that are "
                f"multiples of {stride}, got {tuple(x.shape[-2:])}"
            )
        return 0.5 + 0.5 * self.decoder(self.encoder(2 * x - 1))


def build_generator(config: GeneratorConfig, *, seed: int | None = None) -> Generator:
    """The network of ``config``; with ``seed``, its initial weights come from that seed only."""
    if seed is None:
        return Generator(config)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return Generator(config)


class PatchDiscriminator(nn.Module):
    """A small PatchGAN (pix2pix): a map of real/fake logits, one per overlapping patch."""

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, width, 4, stride=2, padding=1),
            nn.LeakyReLU(0.2),
            nn.Conv2d(width, 2 * width, 4, stride=2, padding=1),
            nn.GroupNorm(4, 2 * width),
            nn.LeakyReLU(0.2),
            nn.Conv2d(2 * width, 4 * width, 3, padding=1),
            nn.GroupNorm(4, 4 * width),
            nn.LeakyReLU(0.2),
            nn.Conv2d(4 * width, 1, 3, padding=1),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x)


def parameter_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
