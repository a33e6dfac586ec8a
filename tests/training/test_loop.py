"""The shared epoch loop on tiny synthetic data: learning, constraint, determinism, resume, DDP.

The data are in memory (two texture classes, 48x48, random 8-aligned 40x40 crops drawn per
(seed, epoch, item)), so these tests need nothing from ``osma_cli.data``'s training sets.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file, save_file
from torch.nn import functional as F
from torch.utils.data import Dataset

from osma_cli.attribution import score_embeddings
from osma_cli.data import extract_crops, random_crop
from osma_cli.errors import UsageError
from osma_cli.nets import get_model
from osma_cli.runtime import seed_everything
from osma_cli.training.checkpoint import CheckpointError, load_checkpoint
from osma_cli.training.distributed import DistContext, distributed
from osma_cli.training.loop import LoopSettings, TrainingError, epoch_batches, epoch_rng, fit
from osma_cli.training.losses import ProxyNCAPlusPlus
from osma_cli.training.schedule import METRIC_FROM_SCRATCH, PROXY_LR_FACTOR, make_optimizer
from osma_cli.training.step import LossStep
from tests.conftest import pattern_image
from tests.nets.test_constrained import is_constrained

CROP = 40
SEED = 7


class PatternCrops(Dataset):
    """Items (uint8 (3, 40, 40), label): random aligned crops of fixed 48x48 texture images."""

    def __init__(self, n_per_class: int = 8, seed: int = 0, image_seed: int = 0) -> None:
        rng = np.random.default_rng(image_seed)
        self.images = [pattern_image(kind, rng) for kind in ("smooth", "checker") for _ in range(n_per_class)]
        self.labels = np.repeat([0, 1], n_per_class)
        self.seed, self.epoch = seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        rng = np.random.default_rng([self.seed, self.epoch, i])
        return torch.from_numpy(random_crop(self.images[i], CROP, rng)), int(self.labels[i])

    def centre_crops(self) -> torch.Tensor:
        return torch.from_numpy(np.stack([extract_crops(im, CROP)[0] for im in self.images]))


def embed(model, crops: torch.Tensor) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        out = F.normalize(model(crops.float() / 255.0), dim=1)
    model.train()
    return out


def centroid_validator(reference: PatternCrops, queries: PatternCrops):
    """Nearest-centroid accuracy with the attribution rule (centroids of the reference images)."""
    ref_x, ref_y = reference.centre_crops(), reference.labels
    q_x, q_y = queries.centre_crops(), queries.labels

    def validate(model) -> float:
        ref, q = embed(model, ref_x).numpy(), embed(model, q_x).numpy()
        centroids = np.stack([ref[ref_y == k].mean(0) for k in (0, 1)])
        sigmas = np.array([ref[ref_y == k].std() + 1e-6 for k in (0, 1)])
        return float((score_embeddings(q, centroids, sigmas).candidates == q_y).mean())

    return validate


def mean_loss(model, loss, data: PatternCrops) -> float:
    model.eval()
    with torch.no_grad():
        value = float(loss(model(data.centre_crops().float() / 255.0), torch.as_tensor(data.labels)).mean())
    model.train()
    return value


def new_parts(seed: int = SEED):
    seed_everything(seed)
    return get_model("mislnet", embedding_dim=32), ProxyNCAPlusPlus(2, 32)


def run(
    epochs: int,
    *,
    checkpoint_dir: Path | None = None,
    resume: bool = False,
    validate=None,
    parts=None,
    workers: int = 0,
    **overrides,
):
    model, loss = parts or new_parts()
    data = PatternCrops(seed=SEED)
    settings = LoopSettings(
        epochs=epochs,
        batch_size=8,
        seed=SEED,
        workers=workers,
        checkpoint_dir=checkpoint_dir,
        resume=resume,
        **overrides,
    )
    result = fit(
        LossStep(model, loss, METRIC_FROM_SCRATCH),
        data,
        epoch_indices=lambda e: epoch_rng(SEED, e).permutation(len(data)),
        settings=settings,
        ctx=DistContext(device=torch.device("cpu")),
        validate=validate,
        fingerprint={"seed": SEED, "batch": 8},
    )
    return model, loss, result


def assert_same_state(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for name, tensor in a.items():
        assert torch.equal(tensor, b[name]), name


@pytest.fixture(scope="module")
def trained():
    """One short run shared by several tests: (initial loss, model, loss, result)."""
    model, loss = new_parts()
    data = PatternCrops(seed=SEED)
    before = mean_loss(model, loss, data)
    validate = centroid_validator(PatternCrops(seed=SEED), PatternCrops(n_per_class=4, image_seed=99))
    model, loss, result = run(4, validate=validate, parts=(model, loss))
    return before, model, loss, result, data


def test_training_reduces_the_loss_and_separates_the_classes(trained) -> None:
    before, model, loss, result, data = trained
    assert mean_loss(model, loss, data) < 0.5 * before
    assert result.best_accuracy == 1.0
    assert [h.epoch for h in result.history] == [0, 1, 2, 3]
    assert all(h.steps == 2 and h.images == 16 for h in result.history)
    assert result.history[-1].lr == pytest.approx(METRIC_FROM_SCRATCH.lr_at(3))


def test_constrained_layer_stays_constrained(trained) -> None:
    _, model, _, result, _ = trained
    assert is_constrained(model.constrained)
    best = get_model("mislnet", embedding_dim=32)
    best.load_state_dict(result.best_state)
    assert is_constrained(best.constrained)


def test_the_best_epochs_network_is_kept_not_the_last() -> None:
    scripted = iter([0.5, 0.9, 0.7])
    model, loss = new_parts()
    states = []
    data = PatternCrops(seed=SEED)
    result = fit(
        LossStep(model, loss, METRIC_FROM_SCRATCH),
        data,
        epoch_indices=lambda e: epoch_rng(SEED, e).permutation(len(data)),
        settings=LoopSettings(epochs=3, batch_size=8, seed=SEED),
        ctx=DistContext(device=torch.device("cpu")),
        validate=lambda m: next(scripted),
        on_epoch=lambda stats: states.append({k: v.clone() for k, v in model.state_dict().items()}),
    )
    assert (result.best_epoch, result.best_accuracy) == (1, 0.9)
    assert [h.is_best for h in result.history] == [True, True, False]
    assert_same_state(result.best_state, states[1])
    assert not torch.equal(result.best_state["constrained.weight"], states[2]["constrained.weight"])


def test_same_seed_gives_the_same_weights() -> None:
    model_a, loss_a, _ = run(2)
    model_b, loss_b, _ = run(2)
    assert_same_state(model_a.state_dict(), model_b.state_dict())
    assert torch.equal(loss_a.proxies, loss_b.proxies)
    model_w, _, _ = run(2, workers=1)  # a loader worker draws nothing from its own seed
    assert_same_state(model_a.state_dict(), model_w.state_dict())
    model_c, _, _ = run(2, parts=new_parts(seed=SEED + 1))
    assert not torch.equal(model_a.constrained.weight, model_c.constrained.weight)


def test_interrupted_and_resumed_run_ends_like_an_uninterrupted_one(tmp_path: Path) -> None:
    validate = centroid_validator(PatternCrops(seed=SEED), PatternCrops(n_per_class=4, image_seed=99))
    straight_model, straight_loss, straight = run(2, checkpoint_dir=tmp_path / "a", validate=validate)

    first_model, _, _ = run(1, checkpoint_dir=tmp_path / "b", validate=validate)
    after_one = {k: v.clone() for k, v in first_model.state_dict().items()}
    torch.manual_seed(12345)  # a new process: the global generators are elsewhere
    resumed_model, resumed_loss, resumed = run(2, checkpoint_dir=tmp_path / "b", resume=True, validate=validate)

    assert resumed.resumed_from == 1
    assert not torch.equal(after_one["constrained.weight"], resumed_model.constrained.weight)
    assert_same_state(straight_model.state_dict(), resumed_model.state_dict())
    assert torch.equal(straight_loss.proxies, resumed_loss.proxies)
    assert_same_state(straight.best_state, resumed.best_state)
    assert (straight.best_epoch, straight.best_accuracy) == (resumed.best_epoch, resumed.best_accuracy)
    timing = ("seconds", "images_per_second", "epochs")  # and how many epochs each run planned
    strip = lambda h: {k: v for k, v in h.to_dict().items() if k not in timing}  # noqa: E731
    assert [strip(h) for h in straight.history] == [strip(h) for h in resumed.history]
    a, b = load_checkpoint(tmp_path / "a"), load_checkpoint(tmp_path / "b")
    assert_same_state(a.loss, b.loss)
    assert a.optimizer["param_groups"] == b.optimizer["param_groups"]


def test_proxies_are_in_the_optimiser_and_the_checkpoint(tmp_path: Path) -> None:
    model, loss = new_parts()
    optimizer = make_optimizer(model, loss, METRIC_FROM_SCRATCH)
    proxy_groups = [g for g in optimizer.param_groups if any(p is loss.proxies for p in g["params"])]
    assert len(proxy_groups) == 1
    assert proxy_groups[0]["lr"] == pytest.approx(METRIC_FROM_SCRATCH.lr * PROXY_LR_FACTOR)

    initial = loss.proxies.detach().clone()
    model, loss, _ = run(1, checkpoint_dir=tmp_path, parts=(model, loss))
    assert not torch.equal(initial, loss.proxies.detach())  # the loop's optimiser stepped them
    state = load_checkpoint(tmp_path)
    assert torch.equal(state.loss["proxies"], loss.proxies.detach())
    proxy_index = len(list(model.parameters()))  # the loss group comes after the network's
    assert state.optimizer["state"][proxy_index]["exp_avg"].shape == loss.proxies.shape


def test_existing_checkpoint_and_changed_settings_are_refused(tmp_path: Path) -> None:
    run(1, checkpoint_dir=tmp_path)
    with pytest.raises(UsageError, match="already holds a training checkpoint"):
        run(1, checkpoint_dir=tmp_path)
    model, loss = new_parts()
    data = PatternCrops(seed=SEED)
    with pytest.raises(CheckpointError, match="batch"):
        fit(
            LossStep(model, loss, METRIC_FROM_SCRATCH),
            data,
            epoch_indices=lambda e: np.arange(len(data)),
            settings=LoopSettings(epochs=2, batch_size=8, checkpoint_dir=tmp_path, resume=True),
            ctx=DistContext(device=torch.device("cpu")),
            fingerprint={"seed": SEED, "batch": 16},
        )
    run(1, checkpoint_dir=tmp_path, replace_checkpoint=True)


def test_a_diverging_loss_stops_training() -> None:
    class Broken(ProxyNCAPlusPlus):
        def forward(self, embeddings, labels):
            return super().forward(embeddings, labels) * float("nan")

    seed_everything(SEED)
    with pytest.raises(TrainingError, match="loss became nan"):
        run(1, parts=(get_model("mislnet", embedding_dim=32), Broken(2, 32)))


def test_epoch_batches_share_out_full_batches() -> None:
    indices = np.random.default_rng(0).permutation(23)
    shards = [epoch_batches(indices, 4, rank=r, world_size=2) for r in (0, 1)]
    assert [len(s) for s in shards] == [2, 2]
    flat = [i for s in shards for b in s for i in b]
    assert len(flat) == len(set(flat)) == 16 and set(flat) <= set(indices.tolist())
    assert all(len(b) == 4 for s in shards for b in s)
    assert epoch_batches(indices, 4, max_steps=3) == [indices[i : i + 4].tolist() for i in (0, 4, 8)]
    assert epoch_batches(indices[:5], 8) == [indices[:5].tolist()]
    assert epoch_batches(indices[:1], 8) == []


def test_settings_are_checked() -> None:
    with pytest.raises(UsageError, match="at least 2"):
        LoopSettings(epochs=1, batch_size=1)
    with pytest.raises(UsageError, match="epochs must be a positive integer"):
        LoopSettings(epochs=0, batch_size=8)
    with pytest.raises(UsageError, match="checkpoint folder"):
        LoopSettings(epochs=1, batch_size=8, resume=True)


# --------------------------------------------------------------------------- DDP


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world), RANK=str(rank), LOCAL_RANK=str(rank)
    )
    torch.set_num_threads(1)
    with distributed("cpu") as ctx:
        assert ctx.is_distributed and ctx.rank == rank
        model, loss = new_parts()
        data = PatternCrops(n_per_class=8, seed=SEED)
        epochs = []
        fit(
            LossStep(model, loss, METRIC_FROM_SCRATCH),
            data,
            epoch_indices=lambda e: epoch_rng(SEED, e).permutation(len(data)),
            settings=LoopSettings(epochs=2, batch_size=4, seed=SEED),
            ctx=ctx,
            on_epoch=epochs.append,
        )
        tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
        tensors["proxies"] = loss.proxies.detach()
        tensors["epochs"] = torch.tensor(len(epochs))
        save_file(tensors, f"{out}/rank{rank}.safetensors")


def test_distributed_data_parallel_keeps_processes_in_step(tmp_path: Path) -> None:
    """Two CPU processes (Gloo), as torchrun would start them: identical weights and proxies."""
    mp.start_processes(_ddp_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True, start_method="fork")
    r0, r1 = (load_file(tmp_path / f"rank{r}.safetensors") for r in (0, 1))
    # parameters are all-reduced; BatchNorm's running statistics are rank 0's (DDP broadcasts
    # them before each forward pass), and rank 0 is the one that saves
    params = [f"model.{name}" for name, _ in get_model("mislnet", embedding_dim=32).named_parameters()]
    assert_same_state({k: r0[k] for k in params}, {k: r1[k] for k in params})
    assert torch.equal(r0["proxies"], r1["proxies"])
    assert (int(r0["epochs"]), int(r1["epochs"])) == (2, 0)  # only rank 0 reports
