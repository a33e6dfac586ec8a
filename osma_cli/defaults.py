"""The defaults a command shows in ``--help``, each defined once, here.

The core's configuration types (``TrainConfig``, ``PretrainConfig``, ``PoseOptions``,
``AugOptions``, ``DetectorConfig``) and functions take their defaults from these names, and
the CLI's options show the same names, so that ``osma train --help`` and a pipeline calling
the core cannot disagree (``tests/cli/test_defaults.py`` checks every option against its
field). This module imports nothing of osma's, numpy's or torch's, so the CLI reads it
without loading them.
"""

from __future__ import annotations

from pathlib import Path
from typing import TypedDict

# --------------------------------------------------------------------------- training (docs/training.md)

METRIC_EPOCHS = 30
"""Fang et al.'s metric-learning length."""
PRETRAIN_EPOCHS = 30
"""Fang et al. do not state the pre-training length; 30 epochs is osma's choice."""
BATCH_SIZE = 32
"""Training images per batch (also the batch of embedding images)."""
CROP = 256
"""Training crop size in pixels (the paper's)."""
SEED = 0
"""Seed of every random choice of a training run."""
DEVICE = "auto"
"""CUDA when present, else the CPU (``runtime.resolve_device``)."""
DEFAULT_VAL_FRACTION = 0.1
"""Share of each class held out for validation when no validation files are given."""
EMBEDDING_OUT = Path("osma-embedding.safetensors")
"""Where ``osma train`` writes its weights unless told."""
PRETRAINED_OUT = Path("osma-pretrained.safetensors")
"""Where ``osma pretrain`` writes the backbone unless told."""

# The paper's step-decay schedules (Fang, Nguyen & Stamm, BMVC 2023), AdamW: the learning rate of
# epoch e (0-based) is LR * DECAY ** (e // EVERY) (``training/schedule.StepDecay``).
METRIC_LR_FROM_INIT = 1e-4
"""Metric learning from pre-trained (``--init``) weights."""
METRIC_LR_FROM_SCRATCH = 7e-4
"""Metric learning from a freshly initialised network."""
METRIC_LR_DECAY = 0.6
METRIC_DECAY_EVERY = 2
PRETRAIN_LR = 1e-3
"""Camera-model pre-training."""
PRETRAIN_LR_DECAY = 0.65
PRETRAIN_DECAY_EVERY = 3
VAL_REFS_PER_CLASS = 200
"""Training images per class whose centre crops make the validation references (metric learning)."""
VAL_SAMPLES_PER_PIPELINE = 20
"""Validation crops per simulated camera pipeline (``osma pretrain --simulate-cameras``)."""

PROXY_LR_FACTOR = 100.0
"""Loss parameters (proxies) learn this many times faster than the network (``training/schedule.py``
says why)."""
DEFAULT_WEIGHT_DECAY = 0.01
"""AdamW's own default decoupled weight decay, for the network; loss parameters get none."""
DEFAULT_TEMPERATURE = 1.0 / 9.0
"""Teh et al.'s low temperature (their official configs: scale 3 = sqrt(1/T))."""

# --------------------------------------------------------------------------- POSE (training/pose.py, pose_aug.py)

POSE_LR = 1e-4
"""Adam learning rate of POSE's task model (Yang et al.); constant unless --lr-decay is given."""
POSE_LR_DECAY = 1.0
POSE_DECAY_EVERY = 1
POSE_EMBEDDING_DIM = 128
"""Feature size of POSE's block-DCT CNN."""
POSE_WIDTH = 128
POSE_DROPOUT = 0.2
POSE_VARIANT = "paper"
"""Cross-entropy on logits and ReLU augmentation models, as the paper states them."""
DEFAULT_TRIPLET_MARGIN = 0.3
"""POSE's triplet margin (Yang et al., CVPR 2023; their code's default)."""
AUG_LR = 1e-2
"""Adam learning rate of each augmentation model (POSE's)."""
ALPHA = 1e-4
"""Weight of the similarity to an earlier augmentation model's output (POSE's w_dist_pre)."""
BETA = 1e-2
"""Weight of the pull towards the known features (POSE's w_close_known)."""
MARGIN = 0.95
"""Cosine similarity to the known features beyond which the pull stops (POSE's d)."""
WARMUP_STEPS = 100
"""Reconstruction-only steps a new augmentation model takes on its first batch (see ``AugOptions``)."""

# --------------------------------------------------------------------------- embedding (embed.EmbedOptions)

EMBED_BATCH_SIZE = 32
"""Images per batch when embedding files."""
N_CROPS = 1
"""Crops averaged per image: one, the centre-aligned grid crop."""
SMALL = "pad"
"""Images smaller than the crop are mirror-padded (no resampling), not skipped."""

# --------------------------------------------------------------------------- thresholds

DEFAULT_ACCEPTANCE = 0.95
"""Share of known validation images accepted by the calibrated tau."""

# --------------------------------------------------------------------------- the zero-shot detector (docs/detection.md)

DETECTOR_ACCEPTANCE = 0.95
"""Share of the held-out real photos (and copies) the detector's threshold passes as real."""
DETECTOR_OUT = Path("detector.safetensors")
"""Where ``osma train --method fsd-detector`` writes the detector unless told."""
DETECTOR_HELD_OUT = 0.2
"""Share of the real photos (whole sub-folders) held out to calibrate the detector."""
DEFAULT_COPIES = ("offgrid:3", "jpeg:95", "jpeg:90", "jpeg:85")
"""The re-saved copies the shipped detector is fitted with (docs/detection.md says why)."""


class MixtureDefaults(TypedDict):
    """The detector's mixture settings (``DetectorConfig``'s and ``osma train``'s options)."""

    pca_dim: int
    components: int
    covariance: str
    restarts: int


DEFAULT_MIXTURE: MixtureDefaults = {"pca_dim": 64, "components": 4, "covariance": "full", "restarts": 8}
"""Chosen on selection data only (`scripts/detector_figures.py --select`, docs/detection.md)."""


# --------------------------------------------------------------------------- discovery (docs/discovery.md)

DISCOVERY_MIN_CLUSTER_SIZE = 5
"""Fewest images that make a cluster of ``osma discover``."""
DISCOVERY_METHODS = ("hdbscan", "agglomerative")
DISCOVERY_METHOD = "agglomerative"
"""Chosen by measurement (docs/discovery.md): on the zoo's unknown generators and on six real
ones, agglomerative clustering beat HDBSCAN on NMI and ARI for both shipped models."""
DISCOVERY_CUT_SCALE = 2.0
"""Agglomerative cut = this x the median spread (Fang's sigma) of the known generators."""
