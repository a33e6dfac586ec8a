"""The contracts the registered feature extractors keep, so that embedding code needs no per-model cases.

Three kinds share the input contract (``ImageModel``): an **embedding** network
(``EmbeddingNet``, the metric-learning kind), a closed-set **classifier** (``ClassifierNet``,
POSE's task model) and a training-free **descriptor** (``DescriptorNet``, e.g. forensic
self-descriptions). Each maps an image batch to one vector per image (``output_dim``
wide): an embedding, class probabilities, or a projected descriptor. Everything downstream
(the embedder, the cache, the streaming loaders) treats that vector alike; only the scoring
differs (``osma_cli.attribution``). How the embedder feeds a model (which pixels, which
dtype, whether mixed precision may be used) is the model's ``input_policy``.

Embedding networks:

- Input: a float tensor (B, 3, H, W), RGB in [0, 1], any H, W >= ``min_input_size``, not
  necessarily square and not necessarily the crop size the network was trained on. A network
  that wants mean/std normalisation does it inside ``forward_features``, so callers never
  have to know it.
- Output: (B, embedding_dim), raw. L2 normalisation is a property of the *weights*
  (``WeightsMeta.l2_normalize``) and is applied in one place outside the network.
- ``forward_features`` returns a spatial feature map; ``forward_head`` pools it globally
  and maps it to the embedding, so any input size works.
- ``constrain()`` is called by training code after every optimiser step; it re-imposes
  constraints that gradient steps break (MISLNet's constrained convolution). No-op here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from osma_cli.errors import UsageError
from osma_cli.regimes import regimes_for


@dataclass(frozen=True)
class InputPolicy:
    """How the embedder turns files into model input, declared by the model, not by callers.

    - ``small``: what happens to an image smaller than the crop on a side. ``None`` lets the
      user choose (``pad`` mirror-pads to the crop, ``skip`` skips the file); ``"keep"`` takes
      the pixels there are (no padding: a descriptor that measures pixel correlations would
      otherwise measure the padding), so crops of different images can differ in size.
    - ``dtype``: the float type pixels are given in (float64 where normal equations need it).
    - ``mixed_precision``: whether autocast may run the model (never for a least-squares solve).
    - ``compression_sensitive``: whether a JPEG input's record should say that the verdict
      holds only for images compressed as the references were.
    """

    small: str | None = None
    dtype: torch.dtype = torch.float32
    mixed_precision: bool = True
    compression_sensitive: bool = False


def check_positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UsageError(f"{name} must be a positive integer, got {value!r}")
    return value


class ImageModel(nn.Module):
    """What every registered network shares: the input contract and the constraint hook."""

    kind: str = ""
    min_input_size: int
    input_policy: InputPolicy = InputPolicy()

    def __init__(self, *, min_input_size: int) -> None:
        super().__init__()
        self.min_input_size = min_input_size

    @property
    def output_dim(self) -> int:
        """Width of the per-image vector ``forward`` returns."""
        raise NotImplementedError

    def constrain(self) -> None:
        """Re-impose weight constraints after an optimiser step; nothing to do by default."""

    def identity_config(self) -> dict:
        """Settings that change the output but are not tensors, hashed into the weights' identity.

        A network's tensors (with its architecture) determine its function: nothing to add.
        A descriptor with few or no parameters must name its settings here, so that two
        descriptors with other settings never share an identity (stores and caches check it).
        """
        return {}

    def check_input(self, x: Tensor) -> None:
        """Refuse inputs outside the contract with a message, not a shape error deep inside."""
        if x.ndim != 4 or x.shape[1] != 3:
            raise UsageError(f"{type(self).__name__} expects a (B, 3, H, W) tensor, got shape {tuple(x.shape)}")
        if not x.is_floating_point():
            raise UsageError(
                f"{type(self).__name__} expects float input in [0, 1], got {x.dtype}",
                hint="convert uint8 images with x.float() / 255",
            )
        height, width = x.shape[-2:]
        if min(height, width) < self.min_input_size:
            raise UsageError(
                f"{type(self).__name__} needs inputs of at least "
                f"{self.min_input_size}x{self.min_input_size} pixels, got {height}x{width}"
            )


class EmbeddingNet(ImageModel):
    """Base class of the embedding networks: an image batch in, one embedding per image out."""

    kind = "embedding"
    embedding_dim: int

    def __init__(self, *, embedding_dim: int, min_input_size: int) -> None:
        super().__init__(min_input_size=min_input_size)
        self.embedding_dim = check_positive_int("embedding_dim", embedding_dim)

    @property
    def output_dim(self) -> int:
        return self.embedding_dim

    def forward_features(self, x: Tensor) -> Tensor:
        """(B, 3, H, W) in [0, 1] -> (B, C, h, w) feature map."""
        raise NotImplementedError

    def forward_head(self, features: Tensor) -> Tensor:
        """(B, C, h, w) feature map -> (B, embedding_dim) raw embedding."""
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        self.check_input(x)
        return self.forward_head(self.forward_features(x))


class ClassifierNet(ImageModel):
    """A closed-set classifier over ``n_classes`` known classes (POSE's task model).

    - ``features(x)``: (B, embedding_dim) the feature vector training losses act on;
    - ``logits(x)``: (B, n_classes) raw class scores (what cross-entropy takes);
    - ``forward(x)``: (B, n_classes) softmax probabilities, in float32: the per-image vector
      the embedding pipeline carries (averaged over crops like an embedding), from which
      attribution takes the candidate (arg max) and the rejection score (1 - max).
    """

    kind = "classifier"
    embedding_dim: int
    n_classes: int

    def __init__(self, *, embedding_dim: int, n_classes: int, min_input_size: int) -> None:
        super().__init__(min_input_size=min_input_size)
        self.embedding_dim = check_positive_int("embedding_dim", embedding_dim)
        self.n_classes = check_positive_int("n_classes", n_classes)
        if n_classes < 2:
            raise UsageError(f"a classifier needs at least 2 classes, got {n_classes}")

    @property
    def output_dim(self) -> int:
        return self.n_classes

    def features(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def classify(self, features: Tensor) -> Tensor:
        """(B, embedding_dim) features -> (B, n_classes) logits."""
        raise NotImplementedError

    def features_and_logits(self, x: Tensor) -> tuple[Tensor, Tensor]:
        self.check_input(x)
        features = self.features(x)
        return features, self.classify(features)

    def logits(self, x: Tensor) -> Tensor:
        return self.features_and_logits(x)[1]

    def forward(self, x: Tensor) -> Tensor:
        logits = self.logits(x)
        with torch.autocast(device_type=logits.device.type, enabled=False):
            return torch.softmax(logits.float(), dim=1)


class DescriptorNet(ImageModel):
    """A training-free descriptor: ``describe`` (the costly, fixed part) then a linear ``project``.

    ``describe(x)`` maps (B, 3, H, W) pixels in [0, 1], float64, to (B, ``raw_dim``) raw
    descriptors; ``project`` applies the affine map ``(d - mean) @ matrix`` fitted on known
    generators (``osma_cli.projection``), kept as the buffers ``projection_mean`` and
    ``projection_matrix`` when the builder is asked for a projection; without one, the output is
    the raw descriptor. Raw descriptors are what the embedding cache keeps (``feature_state``
    leaves the projection out of their identity), so refitting a projection re-describes nothing.

    ``jpeg_regimes`` (``osma_cli.regimes``): JPEG qualities for which the descriptor carries a
    projection of its own (buffers ``projection_mean_jpeg<Q>``, ``projection_matrix_jpeg<Q>``),
    fitted on images re-encoded at that quality; the plain buffers are the ``lossless`` regime's.
    """

    kind = "descriptor"
    input_policy = InputPolicy(small="keep", dtype=torch.float64, mixed_precision=False, compression_sensitive=True)
    embedding_dim: int
    raw_dim: int
    PROJECTION_PREFIX = "projection_"

    def __init__(
        self,
        *,
        embedding_dim: int,
        raw_dim: int,
        projected: bool,
        min_input_size: int,
        jpeg_regimes: Sequence[int] = (),
    ) -> None:
        super().__init__(min_input_size=min_input_size)
        self.embedding_dim = check_positive_int("embedding_dim", embedding_dim)
        self.raw_dim = check_positive_int("raw_dim", raw_dim)
        self.projected = bool(projected)
        self.regimes = regimes_for(jpeg_regimes)
        if len(self.regimes) > 1 and not self.projected:
            raise UsageError("JPEG regimes need a projection each", hint="build the descriptor with projected=True")
        if self.projected:
            for regime in self.regimes:
                mean, matrix = self._buffer_names(regime.jpeg_quality)
                self.register_buffer(mean, torch.zeros(raw_dim, dtype=torch.float64))
                self.register_buffer(matrix, torch.zeros(raw_dim, embedding_dim, dtype=torch.float64))
        elif embedding_dim != raw_dim:
            raise UsageError(
                f"an unprojected descriptor outputs its {raw_dim} raw values, not embedding_dim={embedding_dim}",
                hint=f"use embedding_dim={raw_dim}",
            )

    @staticmethod
    def _buffer_names(jpeg_quality: int | None) -> tuple[str, str]:
        suffix = "" if jpeg_quality is None else f"_jpeg{jpeg_quality}"
        return f"projection_mean{suffix}", f"projection_matrix{suffix}"

    def _projection(self, jpeg_quality: int | None) -> tuple[Tensor, Tensor]:
        if jpeg_quality not in [r.jpeg_quality for r in self.regimes]:
            raise UsageError(
                f"this descriptor has no JPEG regime of quality {jpeg_quality}",
                hint=f"its regimes: {', '.join(r.name for r in self.regimes)}",
            )
        mean, matrix = self._buffer_names(jpeg_quality)
        return getattr(self, mean), getattr(self, matrix)

    @property
    def output_dim(self) -> int:
        return self.embedding_dim

    def describe(self, x: Tensor) -> Tensor:
        """(B, 3, H, W) float64 in [0, 1] -> (B, raw_dim) float64."""
        raise NotImplementedError

    def project(self, raw: Tensor, jpeg_quality: int | None = None) -> Tensor:
        """The projection of the regime of ``jpeg_quality`` (None: lossless)."""
        if not self.projected:
            return raw
        mean, matrix = self._projection(jpeg_quality)
        return (raw.to(mean.dtype) - mean) @ matrix

    def set_projection(self, mean: Tensor, matrix: Tensor, jpeg_quality: int | None = None) -> None:
        if not self.projected:
            raise UsageError("this descriptor was built without a projection", hint="build it with projected=True")
        if tuple(mean.shape) != (self.raw_dim,) or tuple(matrix.shape) != (self.raw_dim, self.embedding_dim):
            raise UsageError(
                f"projection of shape {tuple(mean.shape)}, {tuple(matrix.shape)} does not fit "
                f"({self.raw_dim},), ({self.raw_dim}, {self.embedding_dim})"
            )
        own_mean, own_matrix = self._projection(jpeg_quality)
        own_mean.copy_(mean.to(own_mean))
        own_matrix.copy_(matrix.to(own_matrix))

    def feature_config(self) -> dict:
        """The settings that make the raw descriptor: ``identity_config`` less the regimes."""
        return {k: v for k, v in self.identity_config().items() if k != "jpeg_regimes"}

    def feature_state(self) -> dict[str, Tensor]:
        """The tensors that make the raw descriptor (the state dict less the projections)."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith(self.PROJECTION_PREFIX)}

    def forward(self, x: Tensor) -> Tensor:
        self.check_input(x)
        return self.project(self.describe(x))
