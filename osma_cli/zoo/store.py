"""Generator weights files: safetensors (float16 tensors) plus a JSON record of the run.

One file per generator, ``<name>.safetensors``, in a folder (``weights/zoo/`` ships with
osma). The header key ``"osma_zoo"`` holds a ``GeneratorRecord``: the generator's spec,
its architecture, the training settings and steps, the PSNR it reached on held-out
photos, and a sha256 over the tensors, checked on load. Tensors are stored as float16
(halving the size); the network is always run from exactly these values, so the recorded
PSNR and the benchmark are those of the stored weights.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file
from safetensors.torch import save as safetensors_bytes

from osma_cli import __version__
from osma_cli.atomic import atomic_write
from osma_cli.errors import WeightsError
from osma_cli.home import shipped_dir
from osma_cli.weights import content_hash
from osma_cli.zoo.generators import Generator, GeneratorConfig, build_generator
from osma_cli.zoo.recipe import GeneratorSpec

METADATA_KEY = "osma_zoo"
SUFFIX = ".safetensors"
STORED_DTYPE = torch.float16


def shipped_zoo_dir() -> Path:
    """``weights/zoo/`` of the installed osma (follows ``OSMA_WEIGHTS_DIR``)."""
    return shipped_dir() / "zoo"


@dataclass(frozen=True)
class GeneratorRecord:
    """What a generator weights file says about itself."""

    name: str
    family: str
    dataset: str
    seed: int
    config: dict
    training: dict
    """The settings it was trained with, ``steps`` included."""
    metrics: dict = field(default_factory=dict)
    """``psnr_heldout`` (dB, mean over held-out tiles), ``psnr_tiles``, ``final_l1``."""
    params: int = 0
    train_seconds: float = 0.0
    """Wall-clock seconds of the training loop (the machine may have been shared)."""
    train_cpu_seconds: float = 0.0
    """CPU seconds of the process over the loop, all threads together."""
    sha256: str = ""
    licence: str = "MIT"
    osma_version: str = __version__

    @property
    def spec(self) -> GeneratorSpec:
        return GeneratorSpec(self.family, self.dataset, self.seed)

    @property
    def generator_config(self) -> GeneratorConfig:
        return GeneratorConfig.from_dict(self.config)


def weights_path(folder: Path, name: str) -> Path:
    return Path(folder) / f"{name}{SUFFIX}"


def stored_tensors(model: Generator) -> dict[str, torch.Tensor]:
    """The tensors as they will be stored (float16, contiguous, on the CPU)."""
    return {name: t.detach().to("cpu", STORED_DTYPE).contiguous().clone() for name, t in model.state_dict().items()}


def round_to_stored(model: Generator) -> Generator:
    """Round ``model``'s parameters to the stored precision, in place."""
    with torch.no_grad():
        for tensor in model.state_dict().values():
            if tensor.is_floating_point():
                tensor.copy_(tensor.to(STORED_DTYPE).to(tensor.dtype))
    return model


def save_generator(path: Path, model: Generator, record: GeneratorRecord) -> GeneratorRecord:
    """Write ``model`` (as float16) and ``record`` atomically; returns the record with its hash."""
    tensors = stored_tensors(model)
    record = GeneratorRecord(**{**asdict(record), "sha256": content_hash(tensors), "osma_version": __version__})
    header = json.dumps(asdict(record), sort_keys=True, allow_nan=False)
    # serialised in memory: safetensors' save_file replaces the file it is given with one
    # of mode 0600, losing the permissions atomic_write set
    data = safetensors_bytes(tensors, metadata={METADATA_KEY: header})
    try:
        atomic_write(path, lambda tmp: tmp.write_bytes(data))
    except OSError as exc:
        raise WeightsError(
            f"{path}: cannot write generator weights ({exc})", hint="check free space and permissions"
        ) from exc
    return record


def read_record(path: Path) -> GeneratorRecord:
    """The record of a generator weights file, from its header only."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(
            f"no generator weights at {path}", hint="`osma zoo train` makes them; osma ships them in weights/zoo/"
        )
    try:
        with safe_open(str(path), framework="pt") as handle:
            text = (handle.metadata() or {}).get(METADATA_KEY)
    except (SafetensorError, OSError, ValueError) as exc:
        raise WeightsError(
            f"{path}: not a readable safetensors file ({exc})",
            hint="the file is corrupt; restore it from the osma sources",
        ) from None
    if text is None:
        raise WeightsError(f"{path}: not a zoo generator (no {METADATA_KEY!r} metadata)")
    try:
        data = json.loads(text)
        return GeneratorRecord(**data)
    except (json.JSONDecodeError, TypeError) as exc:
        raise WeightsError(f"{path}: generator metadata is malformed ({exc})") from None


def load_generator(path: Path, *, dtype: torch.dtype = torch.float64) -> tuple[Generator, GeneratorRecord]:
    """The network of a weights file in ``dtype`` (eval mode), after checking its hash."""
    record = read_record(path)
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError) as exc:
        raise WeightsError(f"{path}: cannot read tensors ({exc})") from None
    if content_hash(tensors) != record.sha256:
        raise WeightsError(
            f"{path}: tensors do not match the sha256 in the file's metadata",
            hint="the file is corrupt; restore it from the osma sources",
        )
    model = build_generator(record.generator_config)
    try:
        model.load_state_dict({name: t.to(torch.float32) for name, t in tensors.items()})
    except RuntimeError as exc:
        raise WeightsError(f"{path}: tensors do not fit a {record.family} generator ({exc})") from None
    return model.to(dtype).eval(), record


def list_records(folder: Path) -> dict[str, GeneratorRecord]:
    """Records of the generator files in ``folder`` by name (empty if there is no folder)."""
    folder = Path(folder)
    if not folder.is_dir():
        return {}
    records = {}
    for path in sorted(folder.glob(f"*{SUFFIX}")):
        record = read_record(path)
        records[record.name] = record
    return records
