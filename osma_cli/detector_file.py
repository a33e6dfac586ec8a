"""Detector files: a ``Detector``'s arrays as safetensors, its settings as typed JSON in the header.

The weights' conventions (``osma_cli.weights``): tensors only, never pickle; one JSON object
under one header key (``osma_detector``), type-checked on load; a sha256 over the tensors and
the settings that change a score, checked on load; written atomically. A detector records the
raw descriptor it was fitted on (``descriptor.feature_identity``), and ``check_descriptor``
refuses another: its scores would mean nothing.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from osma_cli import __version__
from osma_cli.atomic import atomic_write
from osma_cli.detection import Detector, MixtureDensity, Standardisation
from osma_cli.errors import UsageError, WeightsError
from osma_cli.home import SHIPPED_MODELS, shipped_dir
from osma_cli.projection import Projection
from osma_cli.weights import METADATA_KEY as WEIGHTS_KEY
from osma_cli.weights import content_hash

METADATA_KEY = "osma_detector"
FORMAT = 1
DEFAULT_DETECTOR_NAME = "detector-fsd.safetensors"
DEFAULT_DESCRIPTOR_NAME = SHIPPED_MODELS["fsd"].weights
TENSORS = ("projection_mean", "projection_matrix", "mixture_weights", "mixture_means", "mixture_precision_cholesky")


@dataclass(frozen=True)
class DetectorMeta:
    """What a detector file says about itself; saved as JSON in the safetensors header."""

    descriptor: dict
    """``feature_identity`` (what is checked), and the descriptor file's ``sha256``, ``architecture``, ``name``."""
    projection: dict
    mixture: dict
    standardisation: dict
    threshold: float
    acceptance: float
    fit: dict = field(default_factory=dict)
    recipe: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    format: int = FORMAT
    licence: str = "MIT"
    osma_version: str = __version__
    created: str = ""
    sha256: str = ""


_FIELD_TYPES: dict[str, type | tuple[type, ...]] = {
    "descriptor": dict,
    "projection": dict,
    "mixture": dict,
    "standardisation": dict,
    "threshold": (int, float),
    "acceptance": (int, float),
    "fit": dict,
    "recipe": dict,
    "metrics": dict,
    "format": int,
    "licence": str,
    "osma_version": str,
    "created": str,
    "sha256": str,
}
_REQUIRED = ("descriptor", "projection", "mixture", "standardisation", "threshold", "acceptance")


def default_detector_path() -> Path | None:
    """The shipped detector (``weights/detector-fsd.safetensors``), if installed."""
    path = shipped_dir() / DEFAULT_DETECTOR_NAME
    return path if path.is_file() else None


def default_descriptor_path() -> Path | None:
    """The shipped descriptor the shipped detector was fitted on (``weights/osma-fsd.safetensors``)."""
    path = shipped_dir() / DEFAULT_DESCRIPTOR_NAME
    return path if path.is_file() else None


def _tensors(detector: Detector) -> dict[str, torch.Tensor]:
    arrays = (
        detector.projection.mean,
        detector.projection.matrix,
        detector.density.weights,
        detector.density.means,
        detector.density.precision_cholesky,
    )
    return {name: torch.tensor(np.array(a, dtype=np.float64)) for name, a in zip(TENSORS, arrays)}


def _identity(tensors: dict[str, torch.Tensor], meta: DetectorMeta) -> str:
    """Hash of the tensors and of every setting that changes a score or a verdict."""
    return content_hash(
        tensors,
        {
            "descriptor": meta.descriptor.get("feature_identity"),
            "standardisation": meta.standardisation,
            "threshold": meta.threshold,
        },
    )


def save_detector(
    path: Path | str, detector: Detector, *, recipe: dict | None = None, metrics: dict | None = None
) -> DetectorMeta:
    """Write ``detector`` to ``path`` atomically; returns the metadata written (hash and time set)."""
    path = Path(path)
    if not path.parent.is_dir():
        raise WeightsError(f"{path}: directory {path.parent} does not exist", hint="create it first")
    if not detector.descriptor.get("feature_identity"):
        raise WeightsError(
            f"{path}: the detector does not record its descriptor's identity",
            hint="fit it with fit_detector(..., descriptor=descriptor_record(embedder))",
        )
    tensors = _tensors(detector)
    meta = DetectorMeta(
        descriptor=dict(detector.descriptor),
        projection=dict(detector.projection.steps),
        mixture={
            "components": detector.density.n_components,
            "covariance": detector.fit.get("covariance"),
            "reg_covar": detector.fit.get("reg_covar"),
            "dim": detector.density.dim,
        },
        standardisation={
            "centre": detector.standardisation.centre,
            "scale": detector.standardisation.scale,
            "method": "median and 1.4826 x MAD of the held-out real photos' nll",
        },
        threshold=float(detector.threshold),
        acceptance=float(detector.acceptance),
        fit=dict(detector.fit),
        recipe=dict(recipe or {}),
        metrics=dict(metrics or {}),
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )
    meta = replace(meta, sha256=_identity(tensors, meta))
    try:
        header = json.dumps(asdict(meta), sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise WeightsError(
            f"{path}: detector metadata is not plain JSON ({exc})",
            hint="keep recipe and metrics to str/int/float/bool/list/dict",
        ) from exc
    try:
        atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata={METADATA_KEY: header}))
    except OSError as exc:
        raise WeightsError(
            f"{path}: cannot write the detector ({exc})", hint="check free space and permissions"
        ) from exc
    return meta


def read_detector_meta(path: Path | str) -> DetectorMeta:
    """The metadata of a detector file, from its header only."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(
            f"{path}: no such detector file",
            hint="check the path, or train one with `osma train --method fsd-detector REAL_DIR`",
        )
    try:
        with safe_open(str(path), framework="pt") as handle:
            header = handle.metadata() or {}
    except (SafetensorError, OSError, ValueError) as exc:
        raise WeightsError(
            f"{path}: not a readable safetensors file ({exc})",
            hint="the file is truncated or not a detector; copy it again",
        ) from exc
    if METADATA_KEY not in header:
        hint = (
            "this is a weights file: pass it to --model, and a detector to --detector"
            if WEIGHTS_KEY in header
            else "use a file written by `osma train --method fsd-detector`"
        )
        raise WeightsError(f"{path}: not an osma detector file (no {METADATA_KEY!r} metadata)", hint=hint)
    return _meta_from_json(path, header[METADATA_KEY])


def load_detector(path: Path | str) -> tuple[Detector, DetectorMeta]:
    """Rebuild the detector in ``path``, verifying its hash."""
    path = Path(path)
    meta = read_detector_meta(path)
    if meta.format > FORMAT:
        raise WeightsError(
            f"{path}: detector format {meta.format} is newer than this osma reads ({FORMAT})", hint="upgrade osma"
        )
    try:
        tensors = load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise WeightsError(f"{path}: tensors cannot be read ({exc})", hint="the file is truncated or corrupt") from exc
    missing = [name for name in TENSORS if name not in tensors]
    if missing or _identity(tensors, meta) != meta.sha256:
        raise WeightsError(
            f"{path}: the detector is modified or corrupt "
            f"({'missing ' + ', '.join(missing) if missing else 'content hash does not match'})",
            hint="copy the detector again, or re-train it; never edit a detector file",
        )
    a = {name: tensors[name].numpy() for name in TENSORS}
    try:
        detector = Detector(
            projection=Projection(a["projection_mean"], a["projection_matrix"], meta.projection),
            density=MixtureDensity(a["mixture_weights"], a["mixture_means"], a["mixture_precision_cholesky"]),
            standardisation=Standardisation(
                centre=float(meta.standardisation["centre"]), scale=float(meta.standardisation["scale"])
            ),
            threshold=float(meta.threshold),
            acceptance=float(meta.acceptance),
            descriptor=meta.descriptor,
            fit=meta.fit,
        )
    except (UsageError, KeyError, TypeError, ValueError) as exc:
        raise WeightsError(
            f"{path}: the detector's arrays do not fit together ({exc})", hint="re-train the detector"
        ) from exc
    return detector, meta


def descriptor_record(feature_identity: str, weights_meta, name: str | None = None) -> dict[str, Any]:
    """What a detector keeps about its descriptor: the identity checked, and provenance."""
    return {
        "feature_identity": feature_identity,
        "sha256": weights_meta.sha256,
        "architecture": weights_meta.architecture,
        "name": name,
    }


def check_descriptor(
    detector_path: Path | str,
    detector: Detector,
    feature_identity: str,
    raw_dim: int,
    descriptor_path: Path | str | None = None,
) -> None:
    """Refuse a descriptor whose raw output is not the one the detector was fitted on."""
    expected = detector.descriptor.get("feature_identity")
    if expected != feature_identity or raw_dim != detector.raw_dim:
        fitted_on = detector.descriptor.get("name") or "another descriptor"
        given = f" {descriptor_path}" if descriptor_path is not None else ""
        raise WeightsError(
            f"{detector_path}: this detector was fitted on the raw descriptions of {fitted_on} "
            f"(identity {str(expected)[:12]}), not on those of the descriptor{given} "
            f"(identity {feature_identity[:12]})",
            hint="pass the descriptor it was fitted on with --model, or re-train the detector "
            "on this one (`osma train --method fsd-detector REAL_DIR --model ...`)",
        )


def _meta_from_json(path: Path, text: str) -> DetectorMeta:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise WeightsError(f"{path}: detector metadata is not valid JSON ({exc})", hint="the file is corrupt") from exc
    if not isinstance(data, dict):
        raise WeightsError(f"{path}: detector metadata is not a JSON object", hint="the file is corrupt")
    absent = [name for name in _REQUIRED if name not in data]
    if absent:
        raise WeightsError(f"{path}: detector metadata lacks {', '.join(absent)}", hint="re-train the detector")
    known = {name: data[name] for name in _FIELD_TYPES if name in data}
    for name, value in known.items():
        wanted = _FIELD_TYPES[name]
        if not isinstance(value, wanted) or isinstance(value, bool):
            raise WeightsError(
                f"{path}: detector metadata field {name!r} has the wrong type ({type(value).__name__})",
                hint="re-train the detector",
            )
    return DetectorMeta(**known)
