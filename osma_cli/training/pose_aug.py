"""POSE's augmentation models: progressive simulation of unknown generators' traces.

POSE (Yang et al., CVPR 2023) expands the "open space" around the known classes with tiny
networks that re-render a known image with a new trace while keeping its content. Each
epoch starts a new one (``ProgressiveAugmenter.start_epoch``); during the epoch it learns,
one step per training batch (``train_step``), with the task network's weights held fixed:

- the **reconstruction loss** ``mean((A_t(x) - x)^2)``: keep the content (and the pixel
  values close), so the change is a trace, not a different image;
- the **diversity loss**, once there are earlier models (``diversity_loss``), on the task
  network's features ``f`` (cosine similarity ``cos``, averaged over the batch)::

      alpha * mean_b cos(f(A_t(x_b)), f(A_j(x_b)))              (be unlike an earlier model j,
                                                               drawn at random each step)
    + beta  * max(1 - mean_b cos(f(x_b), f(A_t(x_b))), 1 - d)   (but stay near the known data:
                                                               no pull once the mean cosine
                                                               similarity passes d)

  with alpha = 1e-4, beta = 1e-2, d = 0.95 and Adam at lr 1e-2 (a fresh optimiser per model);

then it is frozen and kept (``end_epoch``). The task network learns from the augmented
images of known class ``i`` under the label ``K + i`` (``expanded_labels``): for POSE's
classifier through a triplet loss (``osma_cli.training.pose``), for osma's metric-learning
embedding as extra ProxyNCA++ classes with their own proxies (``osma train --open-space-aug``).

The model (``AugmentationModel``): two 3x3 convolutions, 3 -> 32 -> 3 channels, padding 1,
stride 1, so the output has the input's size (no up-sampling, nothing resampled). POSE's
paper describes it as a small convolutional network; its released code
(``models/augment_network.py``) puts no non-linearity between the two convolutions, which
makes the whole model one linear 5x5 filter. osma puts a ReLU between them by default
(``activation="relu"``); ``activation=None`` is the released code's linear model.

Pixel scale: osma's images are in [0, 1]; POSE's code feeds [-1, 1]. The reconstruction
loss is therefore 4x smaller here for the same relative error; the diversity terms, being
cosines of features, do not depend on it.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from osma_cli.defaults import ALPHA, AUG_LR, BETA, MARGIN, WARMUP_STEPS
from osma_cli.errors import UsageError

AUG_HIDDEN = 32
AUG_KERNEL = 3

FeatureFn = Callable[[Tensor], Tensor]


class AugmentationModel(nn.Module):
    """conv 3x3 (3 -> hidden), optional activation, conv 3x3 (hidden -> 3): same size out."""

    def __init__(self, *, hidden: int = AUG_HIDDEN, kernel: int = AUG_KERNEL, activation: str | None = "relu") -> None:
        super().__init__()
        if kernel % 2 != 1 or kernel < 1:
            raise UsageError(f"augmentation kernel must be odd and positive, got {kernel}")
        if activation not in (None, "relu"):
            raise UsageError(f"augmentation activation must be 'relu' or None, got {activation!r}")
        self.conv1 = nn.Conv2d(3, hidden, kernel, stride=1, padding=kernel // 2)
        self.act = nn.ReLU() if activation == "relu" else nn.Identity()
        self.conv2 = nn.Conv2d(hidden, 3, kernel, stride=1, padding=kernel // 2)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv2(self.act(self.conv1(x)))


def reconstruction_loss(augmented: Tensor, original: Tensor) -> Tensor:
    """Mean squared difference between the augmented and the original images."""
    return F.mse_loss(augmented.float(), original.float())


def diversity_loss(
    aug_features: Tensor,
    previous_features: Tensor,
    known_features: Tensor,
    *,
    alpha: float = ALPHA,
    beta: float = BETA,
    margin: float = MARGIN,
) -> tuple[Tensor, dict]:
    """POSE's diversity loss (see the module docstring) and its two terms, as floats."""
    away = F.cosine_similarity(aug_features.float(), previous_features.float(), dim=1, eps=1e-6).mean()
    near = torch.clamp(
        1.0 - F.cosine_similarity(known_features.float(), aug_features.float(), dim=1, eps=1e-6).mean(),
        min=1.0 - margin,
    )
    return alpha * away + beta * near, {
        "similarity_to_earlier": float(away.detach()),
        "distance_to_known": float(near.detach()),
    }


def expanded_labels(labels: Tensor, n_classes: int) -> Tensor:
    """Augmented images of known class ``i`` are labelled ``K + i``."""
    return labels + n_classes


@dataclass(frozen=True)
class AugOptions:
    """How augmentation models are made and trained (POSE's values by default).

    ``warmup_steps`` is osma's, not POSE's: a new model first takes that many
    reconstruction-only Adam steps on the epoch's first batch. POSE's epochs are thousands of
    batches, so its model converges to a faithful re-rendering early in the epoch; an epoch of
    a small training set (osma's zoo splits: 10 batches) leaves a randomly initialised model
    at about 17 dB PSNR, so the "unknown" images are noise rather than new traces on known
    content, and the task network learns to tell noise from images. 100 steps reach about
    33 dB (measured on zoo crops). 0 is POSE's schedule exactly.
    """

    lr: float = AUG_LR
    alpha: float = ALPHA
    beta: float = BETA
    margin: float = MARGIN
    hidden: int = AUG_HIDDEN
    kernel: int = AUG_KERNEL
    activation: str | None = "relu"
    warmup_steps: int = WARMUP_STEPS

    def __post_init__(self) -> None:
        if self.warmup_steps < 0:
            raise UsageError(f"augmentation warm-up steps must be 0 or more, got {self.warmup_steps}")
        if not self.lr > 0:
            raise UsageError(f"augmentation learning rate must be positive, got {self.lr}")
        if self.alpha < 0 or self.beta < 0:
            raise UsageError("the diversity loss weights must be 0 or more")
        if not -1.0 <= self.margin <= 1.0:
            raise UsageError(f"the diversity margin is a cosine similarity, in [-1, 1]; got {self.margin}")

    def to_dict(self) -> dict:
        return {
            "lr": self.lr,
            "alpha": self.alpha,
            "beta": self.beta,
            "margin": self.margin,
            "hidden": self.hidden,
            "kernel": self.kernel,
            "activation": self.activation or "none",
            "warmup_steps": self.warmup_steps,
            "optimizer": "Adam",
            "one_model_per_epoch": True,
        }


def _set_requires_grad(module: nn.Module, flag: bool) -> None:
    for p in module.parameters():
        p.requires_grad_(flag)


class ProgressiveAugmenter:
    """The growing list of augmentation models and the one being trained this epoch.

    ``rng`` (Python's ``random.Random``) draws which earlier model a step compares with;
    seed it for repeatable runs. Models are created on ``device`` from torch's global
    generator, which the training seeds.
    """

    def __init__(self, options: AugOptions, device: torch.device, *, rng: random.Random | None = None) -> None:
        self.options = options
        self.device = device
        self.rng = rng if rng is not None else random.Random(0)
        self.frozen: list[AugmentationModel] = []
        self.current: AugmentationModel | None = None
        self._optimizer: torch.optim.Optimizer | None = None
        self._warmed = False

    def start_epoch(self) -> None:
        o = self.options
        self.current = AugmentationModel(hidden=o.hidden, kernel=o.kernel, activation=o.activation).to(self.device)
        self.current.train()
        self._optimizer = torch.optim.Adam(self.current.parameters(), lr=o.lr)
        self._warmed = False

    def end_epoch(self) -> None:
        if self.current is None:
            return
        self.current.eval()
        _set_requires_grad(self.current, False)
        self.frozen.append(self.current)
        self.current, self._optimizer = None, None

    def pick_earlier(self) -> AugmentationModel | None:
        """One earlier model, drawn at random (None before the second epoch)."""
        return self.frozen[self.rng.randrange(len(self.frozen))] if self.frozen else None

    def train_step(self, task: nn.Module, features: FeatureFn, x: Tensor) -> dict:
        """One optimiser step of the current model on batch ``x``; the task network is held fixed.

        Returns the loss terms (floats). The earlier model compared with is drawn here.
        """
        if self.current is None or self._optimizer is None:
            raise UsageError("start_epoch() first")
        o = self.options
        warmed = None if self._warmed else self.warm_up(x)
        was = [p.requires_grad for p in task.parameters()]
        _set_requires_grad(task, False)
        try:
            self._optimizer.zero_grad(set_to_none=True)
            aug = self.current(x)
            loss = reconstruction_loss(aug, x)
            parts = {"reconstruction": float(loss.detach())}
            if warmed is not None and self.options.warmup_steps:
                parts["warmup_reconstruction"] = warmed
            earlier = self.pick_earlier()
            if earlier is not None:
                with torch.no_grad():
                    previous = earlier(x)
                    previous_features = features(previous)
                    known_features = features(x)
                div, terms = diversity_loss(
                    features(aug), previous_features, known_features, alpha=o.alpha, beta=o.beta, margin=o.margin
                )
                loss = loss + div
                parts.update(terms, diversity=float(div.detach()))
            loss.backward()
            self._optimizer.step()
            parts["augmentation_loss"] = float(loss.detach())
            return parts
        finally:
            for p, flag in zip(task.parameters(), was):
                p.requires_grad_(flag)

    def warm_up(self, x: Tensor) -> float:
        """``warmup_steps`` reconstruction-only steps of the current model on ``x``; the last loss."""
        if self.current is None or self._optimizer is None:
            raise UsageError("start_epoch() first")
        loss = torch.tensor(float("nan"))
        for _ in range(self.options.warmup_steps):
            self._optimizer.zero_grad(set_to_none=True)
            loss = reconstruction_loss(self.current(x), x)
            loss.backward()
            self._optimizer.step()
        self._warmed = True
        return float(loss.detach())

    @torch.no_grad()
    def augment(self, x: Tensor, model: AugmentationModel | None = None) -> Tensor:
        """``x`` through ``model`` (default: the current one), without gradients."""
        model = self.current if model is None else model
        if model is None:
            raise UsageError("no augmentation model yet")
        return model(x)


class OpenSpaceExpander:
    """POSE's augmentation as an open-space regulariser for a metric-learning embedding.

    A ``loop.BatchExpander``: every batch first trains the epoch's augmentation model one step
    against the embedding network's (raw) output, then grows to ``[x; A_t(x); A_j(x)]`` with
    labels ``[y; K + y; K + y]`` (``A_j`` an earlier model drawn at random, from the second
    epoch on, as POSE's task step does). With ``2K`` ProxyNCA++ proxies the augmented images
    of each known class form a class of their own: a negative that every known image is
    pushed away from. Those proxies stay in the loss; nothing of them reaches the weights or
    the references, so at test time only the known generators are references.
    """

    def __init__(self, augmenter: ProgressiveAugmenter, n_classes: int) -> None:
        self.augmenter = augmenter
        self.n_classes = n_classes
        self.last_parts: dict = {}

    def start_epoch(self) -> None:
        self.augmenter.start_epoch()

    def end_epoch(self) -> None:
        self.augmenter.end_epoch()

    def expand(self, model: nn.Module, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        self.last_parts = self.augmenter.train_step(model, model, x)
        aug_labels = expanded_labels(y, self.n_classes)
        xs, ys = [x, self.augmenter.augment(x)], [y, aug_labels]
        earlier = self.augmenter.pick_earlier()
        if earlier is not None:
            xs.append(self.augmenter.augment(x, earlier))
            ys.append(aug_labels)
        return torch.cat(xs), torch.cat(ys)
