"""Closed-set classifier models (POSE) in a tool built around references: what differs, in one place.

A classifier's classes are fixed by its training: their names travel in the weights
(``WeightsMeta.class_names``) and it needs no reference store. It cannot enroll a new
generator (``require_embedding_model`` refuses, saying why), and its threshold tau, on the
rejection score ``1 - max softmax``, has to live somewhere other than a store:

1. ``--threshold`` on the command line, when given;
2. else the **threshold file** beside the weights, ``<weights stem>.threshold.json``, which
   ``osma calibrate`` writes (JSON: the tau record and the weights' content hash, checked on
   reading, so a file left beside other weights is refused, not used);
3. else the provisional tau that ``osma train --method pose`` stored in the weights'
   metadata (``metrics.threshold``: the target acceptance of its validation images).
"""

from __future__ import annotations

import json
from pathlib import Path

from osma_cli.atomic import atomic_write
from osma_cli.attribution import check_tau
from osma_cli.errors import ReferenceStoreError, UsageError
from osma_cli.references import Threshold

THRESHOLD_SUFFIX = ".threshold.json"
FORMAT = "osma-classifier-threshold"


def threshold_path(weights: Path | str) -> Path:
    """``model.safetensors`` -> ``model.threshold.json`` in the same folder."""
    weights = Path(weights)
    return weights.with_name(weights.name.removesuffix(".safetensors") + THRESHOLD_SUFFIX)


def save_classifier_threshold(weights: Path | str, meta, threshold: Threshold) -> Path:
    """Write tau for these weights beside them, atomically; returns the file written."""
    path = threshold_path(weights)
    record = {
        "format": FORMAT,
        "weights_sha256": meta.sha256,
        "architecture": meta.architecture,
        "class_names": list(meta.class_names),
        "threshold": threshold.to_dict(),
    }
    text = json.dumps(record, indent=2) + "\n"
    try:
        atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    except OSError as exc:
        raise ReferenceStoreError(
            f"{path}: cannot write the classifier's threshold ({exc})",
            hint="the folder of the weights must be writable; or copy the weights "
            "somewhere writable, or pass --threshold when attributing",
        ) from exc
    return path


def load_classifier_threshold(weights: Path | str | None, meta) -> Threshold | None:
    """The calibrated tau beside the weights, else the provisional one in their metadata, else None."""
    if weights is not None:
        path = threshold_path(weights)
        if path.is_file():
            try:
                record = json.loads(path.read_text(encoding="utf-8"))
                found = record["weights_sha256"]
                threshold = Threshold.from_dict(record["threshold"])
            except (OSError, ValueError, KeyError, TypeError) as exc:
                raise ReferenceStoreError(
                    f"{path}: not a readable classifier threshold file ({exc})",
                    hint="delete it and run `osma calibrate` again",
                ) from exc
            if found != meta.sha256:
                raise ReferenceStoreError(
                    f"{path} was calibrated for other weights ({found[:12]}, not {meta.sha256[:12]})",
                    hint="run `osma calibrate` again with these weights, or delete the file",
                )
            return threshold
    stored = meta.metrics.get("threshold") if isinstance(meta.metrics, dict) else None
    if isinstance(stored, dict) and "value" in stored:
        return Threshold.from_dict(stored)
    return None


def resolve_classifier_threshold(weights: Path | str | None, meta, override: float | None) -> float:
    """``--threshold`` if given, else the threshold file, else the training's provisional tau."""
    if override is not None:
        return check_tau(override)
    threshold = load_classifier_threshold(weights, meta)
    if threshold is None:
        raise ReferenceStoreError(
            "this classifier has no threshold",
            hint="pass --threshold, or set one with `osma calibrate DIR --model WEIGHTS`",
        )
    return threshold.value


def require_embedding_model(meta, action: str) -> None:
    """Refuse reference-store operations for a closed-set classifier, saying why and what to do."""
    if getattr(meta, "is_classifier", False):
        raise UsageError(
            f"cannot {action} with a closed-set classifier ({meta.architecture}, trained on "
            f"{len(meta.class_names)} classes): its classes are fixed by its training",
            hint="a POSE model only knows the generators it was trained on; to add one, retrain it "
            "(`osma train --method pose`) with that generator's images, or use a metric-learning "
            "model (`osma train`), whose references `osma enroll` extends without retraining",
        )


def refuse_refs_for_classifier(meta, refs: Path | None) -> None:
    """``--refs`` with a classifier is a mistake worth saying (its classes are in its weights)."""
    if refs is not None and getattr(meta, "is_classifier", False):
        raise UsageError(
            f"--refs is not used with a classifier model ({meta.architecture})",
            hint="a classifier's class names and threshold come from its weights "
            "(and its threshold file); leave --refs out",
        )
