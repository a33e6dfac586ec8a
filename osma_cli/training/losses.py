"""Losses for training embeddings, composed the way pytorch-metric-learning composes them.

Three separate concepts, each small:

- a **distance** (``SquaredL2Distance``, ``CosineSimilarity``) turns two sets of vectors into
  an (N, M) matrix; it owns the normalisation of its inputs;
- a **loss** (``ProxyNCAPlusPlus``, ``CrossEntropyClassifier``) returns one loss per item,
  shape (B,), and owns its learnable parameters (proxies, classifier weights) as
  ``nn.Parameter`` s: the optimiser and the checkpoint must include ``loss.parameters()`` /
  ``loss.state_dict()`` as well as the network's (``osma_cli.training.schedule.param_groups``
  and ``osma_cli.training.checkpoint`` do);
- a **reducer** (``MeanReducer``) turns the per-item losses into the scalar to back-propagate.

Both class losses are a softmax cross-entropy over class logits (``logits``); they differ in
what the logits are. ``BatchHardTripletLoss`` (POSE's metric term) works on the batch alone.

**ProxyNCA++** (Teh, DeVries & Taylor, "ProxyNCA++: Revisiting and Revitalizing Proxy
Neighborhood Component Analysis", ECCV 2020), as Fang et al. (BMVC 2023) train with it: one
learnable proxy ``p_k`` per class; embeddings and proxies are L2-normalised; with ``d`` the
squared Euclidean distance between the normalised vectors and ``T`` the temperature::

    loss_i = -log( exp(-d(x_i, p_{y_i}) / T) / sum_k exp(-d(x_i, p_k) / T) )

The denominator runs over **all** proxies, the positive one included (the softmax
cross-entropy of the official code's ``ProxyNCA_prob``, github euwern/proxynca_pp
``loss.py``); the original ProxyNCA (Movshovitz-Attias et al., 2017) excluded the positive.
Default ``T = 1/9``: the paper's low temperature, which the official code applies as a
scale of ``sqrt(1/T) = 3`` on both normalised vectors before a squared distance
(``config/*.json``: ``"scale": "3"``). Since ``d = 2 - 2 cos`` for unit vectors, this equals
a cosine softmax with scale ``2/T = 18``; ``CosineSimilarity`` gives logits ``cos / T``
directly for those who prefer that form.

Proxies start as standard normal vectors (each coordinate ~N(0, 1)); as they are normalised
in the loss only their direction counts, and with Adam-type optimisers, whose steps are
about ``lr`` per coordinate, the initial scale sets how fast that direction moves
(about ``lr`` radians per step at unit coordinate scale). See ``schedule`` for their
learning rate.

The loss is computed in float32 even under autocast: logits of ``|d| / T <= 36`` lose
too much to bfloat16's 8-bit mantissa.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from osma_cli.defaults import DEFAULT_TEMPERATURE, DEFAULT_TRIPLET_MARGIN
from osma_cli.errors import UsageError

# --------------------------------------------------------------------------- distances


class BaseDistance:
    """An (N, M) matrix between two sets of vectors; ``is_similarity`` says which way is closer."""

    is_similarity: bool = False

    def __init__(self, *, normalize_embeddings: bool = True) -> None:
        self.normalize_embeddings = normalize_embeddings

    def __call__(self, x: Tensor, y: Tensor) -> Tensor:
        if self.normalize_embeddings:
            x, y = F.normalize(x, dim=1), F.normalize(y, dim=1)
        return self.compute_mat(x, y)

    def compute_mat(self, x: Tensor, y: Tensor) -> Tensor:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(normalize_embeddings={self.normalize_embeddings})"


def _squared_l2(x: Tensor, y: Tensor) -> Tensor:
    """The (N, M) squared Euclidean distances, floored at 0 (rounding can make them negative)."""
    sq = (x * x).sum(1, keepdim=True) - 2.0 * x @ y.T + (y * y).sum(1)[None, :]
    return sq.clamp_min(0.0)


class SquaredL2Distance(BaseDistance):
    """``||x - y||^2`` (on normalised vectors by default: ``2 - 2 cos``, in [0, 4])."""

    def compute_mat(self, x: Tensor, y: Tensor) -> Tensor:
        return _squared_l2(x, y)


class L2Distance(BaseDistance):
    """``||x - y||`` on the raw vectors by default (POSE's triplet loss); floored at 1e-6 so
    that the square root keeps a finite gradient at zero distance (a vector and itself)."""

    def __init__(self, *, normalize_embeddings: bool = False) -> None:
        super().__init__(normalize_embeddings=normalize_embeddings)

    def compute_mat(self, x: Tensor, y: Tensor) -> Tensor:
        return _squared_l2(x, y).clamp_min(1e-12).sqrt()


class CosineSimilarity(BaseDistance):
    """``x . y`` of the normalised vectors (larger is closer)."""

    is_similarity = True

    def __init__(self) -> None:
        super().__init__(normalize_embeddings=True)

    def compute_mat(self, x: Tensor, y: Tensor) -> Tensor:
        return x @ y.T


DISTANCES = {"squared_l2": SquaredL2Distance, "cosine": CosineSimilarity, "l2": L2Distance}


def get_distance(name: str) -> BaseDistance:
    try:
        return DISTANCES[name]()
    except KeyError:
        raise UsageError(f"unknown distance {name!r}", hint=f"use one of {', '.join(DISTANCES)}") from None


# --------------------------------------------------------------------------- reducers


class MeanReducer:
    """The mean of the per-item losses (an empty batch reduces to 0 with a gradient)."""

    def __call__(self, losses: Tensor) -> Tensor:
        if losses.numel() == 0:
            return losses.sum()
        return losses.mean()


# --------------------------------------------------------------------------- losses


class ClassLoss(nn.Module):
    """A softmax cross-entropy over per-class logits; subclasses say what the logits are."""

    n_classes: int
    embedding_dim: int

    def __init__(self, n_classes: int, embedding_dim: int) -> None:
        super().__init__()
        for name, value in (("n_classes", n_classes), ("embedding_dim", embedding_dim)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise UsageError(f"{name} must be a positive integer, got {value!r}")
        if n_classes < 2:
            raise UsageError(f"a classification loss needs at least 2 classes, got {n_classes}")
        self.n_classes = n_classes
        self.embedding_dim = embedding_dim

    def logits(self, embeddings: Tensor) -> Tensor:
        """(B, D) embeddings -> (B, n_classes) float32 logits."""
        raise NotImplementedError

    def forward(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        """Per-item losses, shape (B,), float32."""
        self._check(embeddings, labels)
        with torch.autocast(device_type=embeddings.device.type, enabled=False):
            logits = self.logits(embeddings.float())
            return F.cross_entropy(logits, labels.long(), reduction="none")

    def predict(self, embeddings: Tensor) -> Tensor:
        """The class with the largest logit (nearest proxy for ProxyNCA++)."""
        with torch.autocast(device_type=embeddings.device.type, enabled=False):
            return self.logits(embeddings.float()).argmax(dim=1)

    def _check(self, embeddings: Tensor, labels: Tensor) -> None:
        if embeddings.ndim != 2 or embeddings.shape[1] != self.embedding_dim:
            raise UsageError(
                f"{type(self).__name__} expects (B, {self.embedding_dim}) embeddings, got {tuple(embeddings.shape)}"
            )
        if labels.shape != embeddings.shape[:1]:
            raise UsageError(f"labels have shape {tuple(labels.shape)}, expected ({embeddings.shape[0]},)")
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= self.n_classes):
            raise UsageError(
                f"labels must lie in [0, {self.n_classes - 1}], got [{int(labels.min())}, {int(labels.max())}]"
            )


class ProxyNCAPlusPlus(ClassLoss):
    """ProxyNCA++: softmax over all proxies of -distance / temperature (see the module docstring)."""

    def __init__(
        self,
        n_classes: int,
        embedding_dim: int,
        *,
        temperature: float = DEFAULT_TEMPERATURE,
        distance: BaseDistance | None = None,
    ) -> None:
        super().__init__(n_classes, embedding_dim)
        if not (isinstance(temperature, (int, float)) and 0.0 < float(temperature) < float("inf")):
            raise UsageError(f"temperature must be a positive number, got {temperature!r}")
        self.temperature = float(temperature)
        self.distance = distance if distance is not None else SquaredL2Distance()
        self.proxies = nn.Parameter(torch.randn(n_classes, embedding_dim))

    def logits(self, embeddings: Tensor) -> Tensor:
        mat = self.distance(embeddings, self.proxies.float())
        return (mat if self.distance.is_similarity else -mat) / self.temperature

    def extra_repr(self) -> str:
        return (
            f"n_classes={self.n_classes}, embedding_dim={self.embedding_dim}, "
            f"temperature={self.temperature:.6g}, distance={self.distance!r}"
        )


class CrossEntropyClassifier(ClassLoss):
    """A linear classifier on the embedding with cross-entropy: the pre-training head.

    It belongs to the loss, not to the network, so saving the network drops it (Fang et
    al. drop the classifier layer after camera-model pre-training).
    """

    def __init__(self, n_classes: int, embedding_dim: int) -> None:
        super().__init__(n_classes, embedding_dim)
        self.head = nn.Linear(embedding_dim, n_classes)

    def logits(self, embeddings: Tensor) -> Tensor:
        return F.linear(embeddings, self.head.weight.float(), self.head.bias.float())


class BatchHardTripletLoss(nn.Module):
    """Triplet loss with batch-hard mining (Hermans, Beyer & Leibe, 2017), as POSE uses it.

    For each anchor ``i``: its farthest same-label item ``p`` (itself at least, distance 0)
    and its nearest other-label item ``n``; ``loss_i = max(0, d(i, p) - d(i, n) + margin)``.
    The distance is the plain Euclidean one on unnormalised features by default (POSE's).
    Anchors with no other-label item in the batch have no triplet and are left out, so the
    result has one entry per anchor that has one (shape (B',), B' <= B).
    """

    def __init__(self, *, margin: float = DEFAULT_TRIPLET_MARGIN, distance: BaseDistance | None = None) -> None:
        super().__init__()
        if not (isinstance(margin, (int, float)) and float(margin) >= 0.0):
            raise UsageError(f"triplet margin must be 0 or more, got {margin!r}")
        self.margin = float(margin)
        self.distance = distance if distance is not None else L2Distance()

    def forward(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        if embeddings.ndim != 2 or labels.shape != embeddings.shape[:1]:
            raise UsageError(
                f"triplet loss expects (B, D) embeddings and (B,) labels, got "
                f"{tuple(embeddings.shape)} and {tuple(labels.shape)}"
            )
        with torch.autocast(device_type=embeddings.device.type, enabled=False):
            mat = self.distance(embeddings.float(), embeddings.float())
            if self.distance.is_similarity:
                mat = -mat
            same = labels[:, None] == labels[None, :]
            hardest_positive = mat.masked_fill(~same, float("-inf")).amax(dim=1)
            hardest_negative = mat.masked_fill(same, float("inf")).amin(dim=1)
            has_negative = (~same).any(dim=1)
            losses = F.relu(hardest_positive - hardest_negative + self.margin)
            return losses[has_negative]

    def extra_repr(self) -> str:
        return f"margin={self.margin:.6g}, distance={self.distance!r}"
