"""Weights files: safetensors tensors plus a typed metadata record, never pickle.

A weights file carries everything needed to rebuild and use the network: the registry
name and builder keywords, the embedding size, the crop size it was trained on, whether
its embeddings are L2-normalised, how it was trained, what it reached, and a content hash.
The metadata is one JSON object under the safetensors header key ``"osma"``, so reading it
(``read_meta``) costs one small read. The hash covers the tensors only (names, dtypes,
shapes, bytes), so it identifies the network's parameters whatever the metadata says;
reference stores record it to refuse mixing embeddings from different weights.

Three kinds of weights (``kind``): an **embedding** network (metric learning: attribution
through a reference store), a closed-set **classifier** (POSE: attribution through its
own softmax over the classes it was trained on, whose names it carries in ``class_names``;
``embedding_dim`` is then the width of its feature layer), and a training-free
**descriptor** (attribution through a reference store, like an embedding; its tensors are
its residual filters and its projection). ``output_dim`` is the width of the vector any
one gives per image. ``rule`` names the open-set rule its references should use by default
(``osma_cli.rules``; empty: ``fang``).

Identity. The hash covers the tensors, and also the settings a model declares in
``identity_config`` (a descriptor's neighbourhood, scales, fit...), so two descriptors with
the same filters but other settings never share an identity; networks declare none, so their
identity is their tensors' hash, as in every file written before descriptors existed.

Writes are atomic (temporary file in the same directory, fsync, ``os.replace``): a crash
leaves either the old file or the new one. Every failure is a ``WeightsError`` naming the
file and saying what to do.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from osma_cli import __version__
from osma_cli.atomic import atomic_write
from osma_cli.errors import UsageError, WeightsError
from osma_cli.nets import ClassifierNet, DescriptorNet, EmbeddingNet, ImageModel, get_model, model_kind
from osma_cli.regimes import regimes_for

METADATA_KEY = "osma"
KINDS = ("embedding", "classifier", "descriptor")
_SHOWN = 5


@dataclass(frozen=True)
class WeightsMeta:
    """What a weights file says about its network; saved as JSON in the safetensors header."""

    architecture: str
    embedding_dim: int
    crop_size: int
    l2_normalize: bool
    arch_kwargs: dict = field(default_factory=dict)
    kind: str = "embedding"
    recipe: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    licence: str = "MIT"
    osma_version: str = __version__
    created: str = ""
    sha256: str = ""
    class_names: list = field(default_factory=list)
    rule: dict = field(default_factory=dict)

    @property
    def is_classifier(self) -> bool:
        return self.kind == "classifier"

    @property
    def is_descriptor(self) -> bool:
        return self.kind == "descriptor"

    @property
    def regimes(self) -> tuple:
        """The compression regimes its references are kept in (``osma_cli.regimes``)."""
        return regimes_for(self.arch_kwargs.get("jpeg_regimes", ()) if self.is_descriptor else ())

    @property
    def output_dim(self) -> int:
        """Width of the per-image vector: the embedding, or one probability per class."""
        return len(self.class_names) if self.is_classifier else self.embedding_dim


_REQUIRED = ("architecture", "embedding_dim", "crop_size", "l2_normalize")
_FIELD_TYPES: dict[str, type | tuple[type, ...]] = {
    "architecture": str,
    "embedding_dim": int,
    "crop_size": int,
    "l2_normalize": bool,
    "arch_kwargs": dict,
    "kind": str,
    "recipe": dict,
    "metrics": dict,
    "licence": str,
    "osma_version": str,
    "created": str,
    "sha256": str,
    "class_names": list,
    "rule": dict,
}


def content_hash(state_dict: Mapping[str, Tensor], config: Mapping | None = None) -> str:
    """sha256 over the tensors in name order (name, dtype, shape, raw bytes), then ``config``.

    ``config`` (a model's ``identity_config``) is hashed as canonical JSON after the tensors;
    empty or None adds nothing, so a network's hash is its tensors' alone.
    """
    digest = hashlib.sha256()
    for name in sorted(state_dict):
        tensor = state_dict[name].detach().cpu().contiguous()
        raw = tensor.reshape(-1).view(torch.uint8).numpy().tobytes()
        header = f"{name}\0{str(tensor.dtype).removeprefix('torch.')}\0{tuple(tensor.shape)}\0{len(raw)}\0"
        digest.update(header.encode("utf-8"))
        digest.update(raw)
    if config:
        digest.update(b"\0config\0" + json.dumps(dict(config), sort_keys=True, allow_nan=False).encode("utf-8"))
    return digest.hexdigest()


def model_identity(model: nn.Module, tensors: Mapping[str, Tensor] | None = None) -> str:
    """The identity stores and caches check: tensors plus the model's declared settings."""
    config = model.identity_config() if isinstance(model, ImageModel) else {}
    return content_hash(model.state_dict() if tensors is None else tensors, config)


def feature_identity(model: nn.Module) -> str:
    """Identity of the features the cache keeps: a descriptor's raw output (no projection)."""
    if isinstance(model, DescriptorNet):
        return content_hash(model.feature_state(), {**model.feature_config(), "stage": "raw"})
    return model_identity(model)


def save_weights(path: Path | str, model: nn.Module, meta: WeightsMeta) -> WeightsMeta:
    """Write ``model``'s tensors and ``meta`` to ``path`` atomically; returns meta with hash and time."""
    path = Path(path)
    if not path.parent.is_dir():
        raise WeightsError(f"{path}: directory {path.parent} does not exist", hint="create it first")
    tensors = {name: t.detach().cpu().contiguous().clone() for name, t in model.state_dict().items()}
    _check_savable(path, model, meta, tensors)
    meta = replace(
        meta,
        sha256=model_identity(model, tensors),
        osma_version=__version__,
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )
    try:
        header = json.dumps(asdict(meta), sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise WeightsError(
            f"{path}: metadata is not plain JSON ({exc})",
            hint="keep recipe, metrics and arch_kwargs to str/int/float/bool/list/dict",
        ) from exc
    _atomic_save(path, tensors, {METADATA_KEY: header})
    return meta


def read_meta(path: Path | str) -> WeightsMeta:
    """The metadata of a weights file, from its header only."""
    path = Path(path)
    _check_exists(path)
    _refuse_reference_store(path)
    try:
        with safe_open(str(path), framework="pt") as handle:
            header = handle.metadata() or {}
    except (SafetensorError, OSError, ValueError) as exc:
        raise WeightsError(
            f"{path}: not a readable safetensors file ({exc})",
            hint="the file is truncated or not a weights file; download or copy it again",
        ) from exc
    if METADATA_KEY not in header:
        raise WeightsError(
            f"{path}: not an osma weights file (no {METADATA_KEY!r} metadata)",
            hint="use a file written by osma (training or `save_weights`)",
        )
    return _meta_from_json(path, header[METADATA_KEY])


def load_weights(path: Path | str, device: torch.device | str = "cpu") -> tuple[ImageModel, WeightsMeta]:
    """Rebuild the network named in ``path``, load and verify its tensors, return it in eval mode."""
    path = Path(path)
    meta = read_meta(path)
    if meta.kind not in KINDS:
        raise WeightsError(
            f"{path}: weights of unknown kind {meta.kind!r}",
            hint=f"this osma reads kinds {', '.join(KINDS)}; a newer osma may read it",
        )
    model = _build(path, meta)
    try:
        tensors = load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise WeightsError(
            f"{path}: tensors cannot be read ({exc})",
            hint="the file is truncated or corrupt; download or copy it again",
        ) from exc
    if model_identity(model, tensors) != meta.sha256:
        raise WeightsError(
            f"{path}: content hash does not match the metadata: the file is modified or corrupt",
            hint="download or copy the weights again; never edit a weights file",
        )
    _check_tensors(path, model.state_dict(), tensors)
    model.load_state_dict(tensors, strict=True)
    model.eval()
    _check_output(path, model, meta)
    return model.to(device), meta


def _check_exists(path: Path) -> None:
    if not path.exists():
        raise WeightsError(f"{path}: no such weights file", hint="check the path, or list shipped weights")
    if not path.is_file():
        raise WeightsError(f"{path}: not a file", hint="give the path of a .safetensors weights file")


HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
"""The first bytes of an HDF5 file, such as a reference store (``references.h5``)."""


def _refuse_reference_store(path: Path) -> None:
    """An HDF5 file given as weights is most likely a reference store passed to the wrong option."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(len(HDF5_SIGNATURE))
    except OSError:
        return  # safe_open reports it
    if head == HDF5_SIGNATURE:
        raise WeightsError(
            f"{path}: this is an HDF5 file (a reference store), not a weights file",
            hint="pass a reference store to --refs, and a .safetensors file to --model",
        )


def _check_savable(path: Path, model: nn.Module, meta: WeightsMeta, tensors: Mapping[str, Tensor]) -> None:
    """Refuse to write a file that ``load_weights`` could not turn back into this network."""
    if meta.kind not in KINDS:
        raise WeightsError(f"{path}: unknown weights kind {meta.kind!r}; known: {', '.join(KINDS)}")
    if isinstance(model, (EmbeddingNet, ClassifierNet, DescriptorNet)) and model.embedding_dim != meta.embedding_dim:
        raise WeightsError(
            f"{path}: metadata says embedding_dim={meta.embedding_dim} but the network outputs {model.embedding_dim}",
            hint="fix the metadata before saving",
        )
    if meta.is_classifier:
        names = meta.class_names
        if len(names) < 2 or not all(isinstance(n, str) and n for n in names) or len(set(names)) != len(names):
            raise WeightsError(
                f"{path}: a classifier needs at least 2 distinct, non-empty class names",
                hint="set WeightsMeta.class_names to the training classes, in label order",
            )
        if isinstance(model, ClassifierNet) and model.n_classes != len(names):
            raise WeightsError(
                f"{path}: the classifier has {model.n_classes} outputs but the metadata names {len(names)} classes",
                hint="fix class_names before saving",
            )
    elif meta.class_names:
        raise WeightsError(
            f"{path}: class_names are for classifier weights only",
            hint="leave class_names empty for an embedding network",
        )
    with torch.device("meta"):
        skeleton = _build(path, meta)
    _check_tensors(path, skeleton.state_dict(), tensors)


def _build(path: Path, meta: WeightsMeta) -> ImageModel:
    for key, home in (("embedding_dim", "its own metadata field"), ("n_classes", "class_names")):
        if key in meta.arch_kwargs:
            raise WeightsError(f"{path}: arch_kwargs repeats {key}", hint=f"{key} belongs in {home} only")
    kwargs = dict(meta.arch_kwargs)
    if meta.is_classifier:
        kwargs["n_classes"] = len(meta.class_names)
    try:
        registered = model_kind(meta.architecture)
        if registered != meta.kind:
            raise WeightsError(
                f"{path}: metadata says kind {meta.kind!r} but {meta.architecture!r} is "
                f"a{'n' if registered[0] in 'aeiou' else ''} {registered} network",
                hint="the file's metadata is wrong; re-export it",
            )
        return get_model(meta.architecture, embedding_dim=meta.embedding_dim, **kwargs)
    except UsageError as exc:
        raise WeightsError(
            f"{path}: cannot build its network: {exc.message}", hint=exc.hint or "the file may need a newer osma"
        ) from exc


def _check_tensors(path: Path, expected: Mapping[str, Tensor], found: Mapping[str, Tensor]) -> None:
    """Name missing, unexpected and mis-shaped tensors (a few of each) instead of a bare strict-load error."""
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    misshaped = [
        f"{name} {tuple(found[name].shape)} vs {tuple(expected[name].shape)}"
        for name in sorted(set(expected) & set(found))
        if found[name].shape != expected[name].shape
    ]
    problems = [
        f"{label}: {_few(names)}"
        for label, names in (("missing", missing), ("unexpected", unexpected), ("wrong shape", misshaped))
        if names
    ]
    if problems:
        raise WeightsError(
            f"{path}: tensors do not fit the network ({'; '.join(problems)})",
            hint="the metadata (architecture, embedding_dim, arch_kwargs) does not "
            "describe these tensors; re-export the weights",
        )


def _check_output(path: Path, model: ImageModel, meta: WeightsMeta) -> None:
    side = max(model.min_input_size, 1)
    with torch.no_grad():
        out = model(torch.zeros(1, 3, side, side))
    if out.shape != (1, meta.output_dim):
        what = f"{len(meta.class_names)} classes" if meta.is_classifier else f"embedding_dim={meta.embedding_dim}"
        raise WeightsError(
            f"{path}: metadata says {what} but the network outputs {tuple(out.shape[1:])}",
            hint="the file's metadata is wrong; re-export it",
        )
    if meta.crop_size < model.min_input_size:
        raise WeightsError(
            f"{path}: crop_size {meta.crop_size} is below the network's minimum input {model.min_input_size}",
            hint="the file's metadata is wrong; re-export it",
        )


def _few(names: list[str]) -> str:
    more = f" and {len(names) - _SHOWN} more" if len(names) > _SHOWN else ""
    return ", ".join(names[:_SHOWN]) + more


def _meta_from_json(path: Path, text: str) -> WeightsMeta:
    """Parse and type-check the metadata; unknown keys (from newer osma versions) are ignored."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise WeightsError(
            f"{path}: osma metadata is not valid JSON ({exc})", hint="the file is corrupt; download or copy it again"
        ) from exc
    if not isinstance(data, dict):
        raise WeightsError(f"{path}: osma metadata is not a JSON object", hint="the file is corrupt")
    absent = [name for name in _REQUIRED if name not in data]
    if absent:
        raise WeightsError(f"{path}: osma metadata lacks {', '.join(absent)}", hint="re-export the weights")
    known = {name: data[name] for name in _FIELD_TYPES if name in data}
    for name, value in known.items():
        wanted = _FIELD_TYPES[name]
        if not isinstance(value, wanted) or (wanted is int and isinstance(value, bool)):
            raise WeightsError(
                f"{path}: osma metadata field {name!r} has the wrong type ({type(value).__name__})",
                hint="re-export the weights",
            )
    return WeightsMeta(**known)


def _atomic_save(path: Path, tensors: dict[str, Tensor], metadata: dict[str, str]) -> None:
    """safetensors written atomically; an OSError becomes a WeightsError naming the file."""
    try:
        atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))
    except OSError as exc:
        raise WeightsError(f"{path}: cannot write weights ({exc})", hint="check free space and permissions") from exc
