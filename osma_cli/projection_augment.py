"""Perturbed copies of the training images for a descriptor's projection (``--augment``).

A descriptor's projection (``osma_cli.projection``) is fitted on the known generators'
training images. Images met in the wild have been resized or re-compressed on their way,
and a resized image's descriptor moves away from its generator's references. Fitting the
projection on the training images *and* perturbed copies of them (each copy labelled as
its source) puts that move into the within-class scatter, so the shrunk LDA keeps the
directions the perturbation moves least. The references, tau and the validation images
stay clean: only the space they are scored in changes (issue 17).

The copies are the files of ``osma benchmark --perturb`` (``osma_cli.evaluation.perturbed``:
written once under ``$OSMA_HOME/cache/perturbed``, deterministic, a JPEG copy as a real
``.jpg``), so their descriptors are cached like any image's. Every regime describes every
copy (a JPEG regime re-encodes it at its quality, as it does its references): a photo
resized and then re-compressed is scored in a JPEG regime, so that regime's projection
needs the resized copies too.

The specs are kept in the weights' recipe under ``RECIPE_KEY``, so that ``osma benchmark``,
which refits the projection on each split's training images, fits it as the weights were.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from osma_cli.data.perturb import Perturbation, parse_perturbations
from osma_cli.evaluation.perturbed import perturbed_file

RECIPE_KEY = "projection_augment"
"""The recipe's list of perturbation specs the projection was fitted with (absent: none)."""


def parse_augment(specs: Sequence[str]) -> tuple[Perturbation, ...]:
    """``--augment`` values (``standard`` for the whole sweep); () when none is given."""
    return parse_perturbations(specs) if specs else ()


def augment_of(recipe: Mapping[str, Any]) -> tuple[Perturbation, ...]:
    """The perturbations a weights file's projection was fitted with; () for older weights."""
    return parse_augment(list(recipe.get(RECIPE_KEY) or ()))


def augmented_inputs(
    paths: Sequence[Path], labels: np.ndarray, augment: Sequence[Perturbation]
) -> tuple[list[Path], np.ndarray]:
    """The perturbed copies of ``paths`` (every perturbation in turn) and their labels.

    A file that cannot be read is its own "copy" (``perturbed_file``), so the describing
    step reports it as it does the clean file.
    """
    copies = [perturbed_file(Path(p), perturbation) for perturbation in augment for p in paths]
    return copies, np.tile(np.asarray(labels), len(augment))
