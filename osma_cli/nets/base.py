"""The contracts the registered networks keep, so that embedding code needs no per-model cases.

Two kinds of network share the input contract (``ImageModel``): an **embedding** network
(``EmbeddingNet``, the metric-learning kind) and a closed-set **classifier**
(``ClassifierNet``, POSE's task model). Both map an image batch to one vector per image
(``output_dim`` wide): an embedding, or class probabilities. Everything downstream (the
embedder, the cache, the streaming loaders) treats that vector alike; only the scoring
differs (``osma_cli.attribution``).

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

import torch
from torch import Tensor, nn

from osma_cli.errors import UsageError


def check_positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UsageError(f"{name} must be a positive integer, got {value!r}")
    return value


class ImageModel(nn.Module):
    """What every registered network shares: the input contract and the constraint hook."""

    kind: str = ""
    min_input_size: int

    def __init__(self, *, min_input_size: int) -> None:
        super().__init__()
        self.min_input_size = min_input_size

    @property
    def output_dim(self) -> int:
        """Width of the per-image vector ``forward`` returns."""
        raise NotImplementedError

    def constrain(self) -> None:
        """Re-impose weight constraints after an optimiser step; nothing to do by default."""

    def check_input(self, x: Tensor) -> None:
        """Refuse inputs outside the contract with a message, not a shape error deep inside."""
        if x.ndim != 4 or x.shape[1] != 3:
            raise UsageError(f"{type(self).__name__} expects a (B, 3, H, W) tensor, "
                             f"got shape {tuple(x.shape)}")
        if not x.is_floating_point():
            raise UsageError(f"{type(self).__name__} expects float input in [0, 1], got {x.dtype}",
                             hint="convert uint8 images with x.float() / 255")
        height, width = x.shape[-2:]
        if min(height, width) < self.min_input_size:
            raise UsageError(f"{type(self).__name__} needs inputs of at least "
                             f"{self.min_input_size}x{self.min_input_size} pixels, got {height}x{width}")


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
