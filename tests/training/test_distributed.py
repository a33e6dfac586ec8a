"""Training over several processes gives the model one process gives (Gloo on the CPU).

Two processes at batch size b see, step by step, the items one process sees at batch size
2b (``epoch_batches``); DDP averages the gradients and ``GlobalBatchNorm`` pools the batch
statistics, so the weights must agree to float32 rounding. Compared here: the loop itself
(two forked processes, as ``test_loop``'s DDP test starts them) and ``osma train`` launched by
``torch.distributed.run``, each against a single process.
"""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from safetensors.torch import load_file, save_file
from torch import nn

from osma_cli.nets import get_model
from osma_cli.training.distributed import DistContext, distributed
from osma_cli.training.loop import LoopSettings, epoch_rng, fit
from osma_cli.training.schedule import METRIC_FROM_SCRATCH
from osma_cli.training.step import LossStep
from osma_cli.training.sync_bn import GlobalBatchNorm, synchronised_batch_norm
from tests.conftest import write_images
from tests.training.test_loop import SEED, PatternCrops, _free_port, embed, new_parts

EPOCHS = 2
ROOT = Path(__file__).resolve().parents[2]
ATOL = 1e-4
"""Weights after a few AdamW steps: float32 sums added in another order move them by ~1e-5
(without pooled BatchNorm statistics they differ by ~4e-3)."""
EMBEDDING_ATOL = 2e-2
"""Unit embeddings of the two models (observed 5e-3; images lie ~1 apart)."""


def null_directions(model: nn.Module) -> set[str]:
    """Biases of convolutions feeding a BatchNorm, and that BatchNorm's running mean.

    The normalisation subtracts such a bias again, so its gradient is zero in exact
    arithmetic: what remains is float32 rounding, which AdamW (dividing by the gradient's
    own scale) turns into steps of about the learning rate, differently in every run. They
    leave training-mode outputs unchanged; their effect on inference is what the
    embeddings' comparison bounds.
    """
    names = set()
    for prefix, module in model.named_modules():
        children = list(module.named_children())
        for (name, a), (next_name, b) in zip(children, children[1:]):
            if isinstance(a, nn.Conv2d) and a.bias is not None and isinstance(b, nn.BatchNorm2d):
                names |= {f"{prefix}.{name}.bias".lstrip("."), f"{prefix}.{next_name}.running_mean".lstrip(".")}
    return names


def train_state(ctx: DistContext, batch_size: int, *, mixed_precision: bool = True) -> dict[str, torch.Tensor]:
    model, loss = new_parts()
    data = PatternCrops(n_per_class=8, seed=SEED)
    fit(
        LossStep(model, loss, METRIC_FROM_SCRATCH, mixed_precision=mixed_precision),
        data,
        epoch_indices=lambda e: epoch_rng(SEED, e).permutation(len(data)),
        settings=LoopSettings(epochs=EPOCHS, batch_size=batch_size, seed=SEED),
        ctx=ctx,
    )
    return {
        **{f"model.{k}": v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()},
        "proxies": loss.proxies.detach().to("cpu", copy=True),
    }


def _worker(rank: int, world: int, port: int, out: str, batch_size: int, device: str = "cpu") -> None:
    """One process of ``world``, as torchrun starts it (NCCL on ``device="cuda"``, in float32)."""
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world), RANK=str(rank), LOCAL_RANK=str(rank)
    )
    torch.set_num_threads(1)
    with distributed(device) as ctx:
        save_file(train_state(ctx, batch_size, mixed_precision=False), f"{out}/rank{rank}.safetensors")


def assert_close_states(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], *, prefix: str = "") -> None:
    """Every tensor to ``ATOL`` except the null directions, and the two networks' embeddings."""
    assert a.keys() == b.keys()
    skipped = {prefix + name for name in null_directions(get_model("mislnet", embedding_dim=32))}
    assert skipped and skipped <= a.keys()
    for name, tensor in a.items():
        if name in skipped:
            continue
        assert torch.allclose(tensor.float(), b[name].float(), atol=ATOL, rtol=0), (
            f"{name}: max difference {(tensor.float() - b[name].float()).abs().max():.3g}"
        )
    crops = PatternCrops(n_per_class=8, seed=SEED).centre_crops()
    embeddings = [embed(network(state, prefix), crops) for state in (a, b)]
    torch.testing.assert_close(embeddings[0], embeddings[1], atol=EMBEDDING_ATOL, rtol=0)


def network(state: dict[str, torch.Tensor], prefix: str) -> nn.Module:
    model = get_model("mislnet", embedding_dim=state[f"{prefix}fc.2.weight"].shape[0])
    model.load_state_dict({k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)})
    return model


def test_two_processes_train_the_model_one_process_trains(tmp_path: Path) -> None:
    """2 processes x batch 4 = 1 process x batch 8, parameters and BatchNorm statistics alike."""
    torch.set_num_threads(1)
    single = train_state(DistContext(device=torch.device("cpu")), batch_size=8)
    mp.start_processes(_worker, args=(2, _free_port(), str(tmp_path), 4), nprocs=2, join=True, start_method="fork")
    ranks = [load_file(tmp_path / f"rank{r}.safetensors") for r in (0, 1)]
    assert_close_states(single, ranks[0], prefix="model.")
    assert_close_states(single, ranks[1], prefix="model.")  # pooled statistics: rank 1's buffers too
    initial = {f"model.{k}": v for k, v in new_parts()[0].state_dict().items()}
    moved = max(float((single[k].float() - initial[k].float()).abs().max()) for k in initial)
    assert moved > 100 * ATOL  # training moved the weights far more than the tolerance


# --------------------------------------------------------------------------- the layer itself


def _bn_worker(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        torch.manual_seed(0)
        x = torch.randn(8, 3, 5, 5) * 3 + 1
        net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
        with synchronised_batch_norm(net):
            assert isinstance(net[1], GlobalBatchNorm)
            y = net(x[rank::world])
            (y**3).mean().backward()
        assert isinstance(net[1], nn.BatchNorm2d)
        grads = {f"grad.{k}": p.grad for k, p in net.named_parameters()}
        save_file({"y": y.detach(), **grads, **net.state_dict()}, f"{out}/bn{rank}.safetensors")
    finally:
        dist.destroy_process_group()


def test_pooled_batch_norm_matches_batch_norm_on_the_whole_batch(tmp_path: Path) -> None:
    """Outputs, gradients (averaged as DDP averages them) and running statistics of one BatchNorm."""
    mp.start_processes(_bn_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True, start_method="fork")
    r0, r1 = (load_file(tmp_path / f"bn{r}.safetensors") for r in (0, 1))
    torch.manual_seed(0)
    x = torch.randn(8, 3, 5, 5) * 3 + 1
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    y = net(x)
    # the mean over 8 items is the mean of the two shares' means over 4: what DDP averages
    (y**3).mean().backward()
    torch.testing.assert_close(r0["y"], y[0::2].detach(), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(r1["y"], y[1::2].detach(), atol=1e-5, rtol=1e-5)
    for name, p in net.named_parameters():
        torch.testing.assert_close((r0[f"grad.{name}"] + r1[f"grad.{name}"]) / 2, p.grad, atol=1e-5, rtol=1e-4)
    for name, buffer in net.state_dict().items():
        torch.testing.assert_close(r0[name], buffer, atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(r1[name], buffer, atol=1e-6, rtol=1e-5)


def test_without_a_process_group_the_layer_is_plain_batch_norm() -> None:
    plain = nn.BatchNorm2d(3)
    layer = GlobalBatchNorm(plain, group=None)
    assert layer.state_dict().keys() == plain.state_dict().keys()
    assert layer.running_mean is plain.running_mean and layer.weight is plain.weight
    x = torch.randn(4, 3, 6, 6)
    reference = nn.BatchNorm2d(3)
    torch.testing.assert_close(layer(x), reference(x))
    torch.testing.assert_close(plain.running_var, reference.running_var)
    layer.eval()
    torch.testing.assert_close(layer(x), reference.eval()(x))


def test_pooled_batch_norm_with_a_weight_and_no_bias(tmp_path: Path) -> None:
    """A layer with a scale but no shift (``BatchNorm2d(..., bias=False)`` in recent torch) pools too.

    One process in a group of one: the pooled statistics are the batch's own, so the layer must
    give what the plain layer gives (it used to add the missing bias and fail).
    """
    torch.manual_seed(0)
    plain = nn.BatchNorm2d(4)
    plain.register_parameter("bias", None)  # what bias=False builds, on every supported torch
    nn.init.uniform_(plain.weight, 0.5, 2.0)
    reference = copy.deepcopy(plain)
    x = torch.randn(6, 4, 5, 5) * 3 + 1
    dist.init_process_group("gloo", init_method=(tmp_path / "store").as_uri(), rank=0, world_size=1)
    try:
        net = nn.Sequential(plain)
        with synchronised_batch_norm(net):
            assert isinstance(net[0], GlobalBatchNorm)
            y = net(x)
    finally:
        dist.destroy_process_group()
    torch.testing.assert_close(y, reference(x), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(plain.running_mean, reference.running_mean)
    torch.testing.assert_close(plain.running_var, reference.running_var)


# --------------------------------------------------------------------------- the command


def osma_train(tree: Path, out: Path, *, nproc: int, batch_size: int) -> subprocess.CompletedProcess:
    command = [
        "-m",
        "osma_cli",
        "train",
        str(tree),
        "--out",
        str(out),
        "--crop",
        "40",
        "--epochs",
        str(EPOCHS),
        "--batch-size",
        str(batch_size),
        "--workers",
        "0",
        "--device",
        "cpu",
        "--seed",
        "3",
        "--val-fraction",
        "0.25",
    ]
    if nproc > 1:
        command = [
            "-m",
            "torch.distributed.run",
            "--nproc-per-node",
            str(nproc),
            "--master-port",
            str(_free_port()),
            *command,
        ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, *command], capture_output=True, text=True, cwd=ROOT, env=env, timeout=240, check=False
    )


def test_torchrun_two_processes_writes_the_weights_of_one_process(tmp_path: Path) -> None:
    """``torch.distributed.run --nproc-per-node 2 -m osma_cli train --batch-size 4`` = one process at 8."""
    pytest.importorskip("osma_cli.data.training_sets")
    from osma_cli.weights import read_meta

    tree = tmp_path / "train"
    write_images(tree / "checkergan", "checker", 8, seed=2)
    write_images(tree / "smoothgan", "smooth", 8, seed=1)
    one = osma_train(tree, tmp_path / "one.safetensors", nproc=1, batch_size=8)
    assert one.returncode == 0, one.stderr[-3000:]
    two = osma_train(tree, tmp_path / "two.safetensors", nproc=2, batch_size=4)
    assert two.returncode == 0, two.stderr[-3000:]
    a, b = load_file(tmp_path / "one.safetensors"), load_file(tmp_path / "two.safetensors")
    assert_close_states(a, b)
    meta_one, meta_two = read_meta(tmp_path / "one.safetensors"), read_meta(tmp_path / "two.safetensors")
    assert (meta_one.recipe["world_size"], meta_two.recipe["world_size"]) == (1, 2)
    assert meta_one.metrics["best_epoch"] == meta_two.metrics["best_epoch"]
    assert meta_one.metrics["val_accuracy"] == meta_two.metrics["val_accuracy"]
