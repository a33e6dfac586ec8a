"""The contract every embedding network keeps, so that embedding code needs no per-model cases.

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

from torch import Tensor, nn

from osma_cli.errors import UsageError


class EmbeddingNet(nn.Module):
    """Base class of the registered networks: an image batch in, one embedding per image out."""

    embedding_dim: int
    min_input_size: int

    def __init__(self, *, embedding_dim: int, min_input_size: int) -> None:
        super().__init__()
        if isinstance(embedding_dim, bool) or not isinstance(embedding_dim, int) or embedding_dim < 1:
            raise UsageError(f"embedding_dim must be a positive integer, got {embedding_dim!r}")
        self.embedding_dim = embedding_dim
        self.min_input_size = min_input_size

    def forward_features(self, x: Tensor) -> Tensor:
        """(B, 3, H, W) in [0, 1] -> (B, C, h, w) feature map."""
        raise NotImplementedError

    def forward_head(self, features: Tensor) -> Tensor:
        """(B, C, h, w) feature map -> (B, embedding_dim) raw embedding."""
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        self.check_input(x)
        return self.forward_head(self.forward_features(x))

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
