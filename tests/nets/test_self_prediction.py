"""Least-squares self-prediction: normal equations, solves and descriptors against independent numpy."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from osma_cli.errors import UsageError
from osma_cli.nets import self_prediction as sp
from osma_cli.nets.self_prediction import (
    descriptor_dim,
    masked_offsets,
    neighbourhood_offsets,
    normal_equations,
    self_description,
    solve_predictor,
)

MIXED = [(0, -1), (-1, 0), (-1, -1), (-1, 1), (-2, 2), (1, 0)]


def design(x: np.ndarray, offsets: list[tuple[int, int]]) -> tuple[np.ndarray, np.ndarray]:
    """Explicit design: A (K, P, M) of x_k(p + o_m) and targets Y (K, P), over the valid region."""
    _, h, w = x.shape
    ys = [dy for dy, _ in offsets] + [0]
    xs = [dx for _, dx in offsets] + [0]
    rows = range(-min(ys), h - max(ys))
    cols = range(-min(xs), w - max(xs))
    a = np.array(
        [[[x[k, y + dy, c + dx] for dy, dx in offsets] for y in rows for c in cols] for k in range(x.shape[0])]
    )
    t = np.array([[x[k, y, c] for y in rows for c in cols] for k in range(x.shape[0])])
    return a.reshape(x.shape[0], -1, len(offsets)), t.reshape(x.shape[0], -1)


def joint_design(x: np.ndarray, offsets: list[tuple[int, int]]) -> tuple[np.ndarray, np.ndarray]:
    a, t = design(x, offsets)
    return np.concatenate(list(a), axis=1), t.sum(axis=0)


def eliminate_constrained_lstsq(a: np.ndarray, y: np.ndarray, groups: int) -> np.ndarray:
    """min |y - a w|^2 with each group summing to 1, by substituting each group's last weight."""
    m = a.shape[1] // groups
    cols, rhs = [], y.copy()
    for g in range(groups):
        block = a[:, g * m : (g + 1) * m]
        rhs = rhs - block[:, -1]
        cols.append(block[:, :-1] - block[:, -1:])
    z = np.linalg.lstsq(np.concatenate(cols, axis=1), rhs, rcond=None)[0].reshape(groups, m - 1)
    return np.concatenate([z, 1.0 - z.sum(axis=1, keepdims=True)], axis=1).reshape(-1)


def ar_channel(rng: np.random.Generator, coefs: dict[tuple[int, int], float], size: int, noise: float) -> np.ndarray:
    """x(p) = sum_o c_o x(p + o) + noise, generated in raster order from a causal 3x2 neighbourhood."""
    burn = 8
    h, w = size + burn, size + 2 * burn
    x = np.zeros((h, w))
    e = rng.normal(0.0, noise, size=(h, w))
    for y in range(1, h):
        for c in range(1, w - 1):
            x[y, c] = sum(v * x[y + dy, c + dx] for (dy, dx), v in coefs.items()) + e[y, c]
    return x[burn:, burn : burn + size]


def rand(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(*shape, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))


def test_neighbourhood_offsets() -> None:
    assert neighbourhood_offsets(3) == [(-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1)]
    seven = neighbourhood_offsets(7)
    assert len(seven) == 48 and (0, 0) not in seven and seven == sorted(seven)
    for bad in (1, 2, 4, 3.0, True, "3"):
        with pytest.raises(UsageError):
            neighbourhood_offsets(bad)


def test_masked_offsets() -> None:
    mask = torch.zeros(5, 5, dtype=torch.bool)
    mask[0, 4] = mask[2, 1] = mask[3, 2] = True
    assert masked_offsets(mask) == [(-2, 2), (0, -1), (1, 0)]
    with pytest.raises(UsageError):
        masked_offsets(torch.ones(3, 3, dtype=torch.bool))
    for bad in (
        torch.zeros(3, 3, dtype=torch.bool),
        torch.ones(4, 4, dtype=torch.bool),
        torch.ones(3, 5, dtype=torch.bool),
        torch.ones(3, 3),
    ):
        with pytest.raises(UsageError):
            masked_offsets(bad)


@pytest.mark.parametrize("offsets", [neighbourhood_offsets(3), MIXED, [(0, -2), (0, 1)], [(2, 0)]])
def test_normal_equations_match_explicit_design(offsets: list[tuple[int, int]]) -> None:
    x = rand(2, 3, 9, 11, seed=1)
    for mode in ("per-channel", "joint"):
        gram, rhs, n = normal_equations(x, offsets, mode=mode)
        for b in range(2):
            if mode == "per-channel":
                a, t = design(x[b].numpy(), offsets)
                want_g, want_h = np.einsum("kpm,kpn->kmn", a, a), np.einsum("kpm,kp->km", a, t)
            else:
                a, t = joint_design(x[b].numpy(), offsets)
                want_g, want_h = a.T @ a, a.T @ t
            assert int(n[b]) == a.shape[-2]
            np.testing.assert_allclose(gram[b].numpy(), want_g, rtol=1e-12, atol=1e-12)
            np.testing.assert_allclose(rhs[b].numpy(), want_h, rtol=1e-12, atol=1e-12)


def test_unconstrained_and_ridge_match_numpy() -> None:
    x = rand(1, 2, 12, 10, seed=2)
    offsets = neighbourhood_offsets(3)
    gram, rhs, n = normal_equations(x, offsets, mode="per-channel")
    w = solve_predictor(gram, rhs, n, groups=1, constrained=False, ridge=0.0)
    a, t = design(x[0].numpy(), offsets)
    for k in range(2):
        np.testing.assert_allclose(w[0, k].numpy(), np.linalg.lstsq(a[k], t[k], rcond=None)[0], atol=1e-8)

    gram, rhs, n = normal_equations(x, offsets, mode="joint")
    a, t = joint_design(x[0].numpy(), offsets)
    np.testing.assert_allclose(
        solve_predictor(gram, rhs, n, groups=2, constrained=False, ridge=0.0)[0].numpy(),
        np.linalg.lstsq(a, t, rcond=None)[0],
        atol=1e-8,
    )
    ridge = 0.05
    g = a.T @ a
    lam = ridge * np.trace(g) / g.shape[0]
    np.testing.assert_allclose(
        solve_predictor(gram, rhs, n, groups=2, constrained=False, ridge=ridge)[0].numpy(),
        np.linalg.solve(g + lam * np.eye(g.shape[0]), a.T @ t),
        rtol=1e-9,
        atol=1e-11,
    )


def test_constrained_matches_kkt_and_elimination() -> None:
    x = rand(1, 3, 10, 9, seed=3)
    offsets = MIXED
    gram, rhs, n = normal_equations(x, offsets, mode="joint")
    a, t = joint_design(x[0].numpy(), offsets)
    w0 = solve_predictor(gram, rhs, n, groups=3, constrained=True, ridge=0.0)[0].numpy()
    np.testing.assert_allclose(w0, eliminate_constrained_lstsq(a, t, 3), atol=1e-8)

    ridge, d, m = 0.02, a.shape[1], len(offsets)
    g = a.T @ a
    e = np.kron(np.eye(3), np.ones((1, m)))
    kkt = np.block([[g + ridge * np.trace(g) / d * np.eye(d), e.T], [e, np.zeros((3, 3))]])
    want = np.linalg.solve(kkt, np.concatenate([a.T @ t, np.ones(3)]))[:d]
    got = solve_predictor(gram, rhs, n, groups=3, constrained=True, ridge=ridge)[0].numpy()
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-11)

    gram, rhs, n = normal_equations(x, offsets, mode="per-channel")
    a, t = design(x[0].numpy(), offsets)
    w = solve_predictor(gram, rhs, n, groups=1, constrained=True, ridge=0.0)
    for k in range(3):
        np.testing.assert_allclose(w[0, k].numpy(), eliminate_constrained_lstsq(a[k], t[k], 1), atol=1e-8)


@pytest.mark.parametrize("mode", ["per-channel", "joint"])
@pytest.mark.parametrize("scale_mode", ["joint", "separate"])
def test_constraint_holds(mode: str, scale_mode: str) -> None:
    x = rand(2, 3, 40, 36, seed=4) - 0.5
    d = self_description(x, block=5, mode=mode, constrained=True, scales=2, scale_mode=scale_mode)
    assert d.shape == (2, descriptor_dim(3, block=5, mode=mode, scales=2, scale_mode=scale_mode))
    sums = d.reshape(2, -1, 24).sum(dim=-1)
    assert torch.allclose(sums, torch.ones_like(sums), atol=1e-9, rtol=0)


def test_causal_ar_process_is_recovered() -> None:
    rng = np.random.default_rng(0)
    truth = [
        {(0, -1): 0.45, (-1, 0): 0.35, (-1, -1): -0.1, (-1, 1): 0.05},
        {(0, -1): -0.3, (-1, 0): 0.5, (-1, -1): 0.1, (-1, 1): 0.05},
    ]
    x = torch.from_numpy(np.stack([[ar_channel(rng, c, 64, 0.1) for c in truth] for _ in range(4)]))
    support = torch.zeros(5, 5, dtype=torch.bool)
    support[:2] = True
    support[2, :2] = True
    offsets = masked_offsets(support)
    want = np.array([[c.get(o, 0.0) for o in offsets] for c in truth])

    gram, rhs, n = normal_equations(x, offsets, mode="per-channel")
    w = solve_predictor(gram.sum(0), rhs.sum(0), n.sum(), groups=1, constrained=False)
    np.testing.assert_allclose(w.numpy(), want, atol=0.04)

    gram, rhs, n = normal_equations(x, offsets, mode="joint")
    w = solve_predictor(gram.sum(0), rhs.sum(0), n.sum(), groups=2, constrained=False)
    np.testing.assert_allclose(w.numpy(), want.reshape(-1), atol=0.04)


def test_noiseless_interpolation_is_exact() -> None:
    ramps = torch.linspace(0, 1, 20, dtype=torch.float64)[None, :] * rand(15, 1, seed=5) + rand(15, 1, seed=6)
    gram, rhs, n = normal_equations(ramps[None, None], [(0, -1), (0, 1)], mode="per-channel")
    w = solve_predictor(gram, rhs, n, groups=1, constrained=False, ridge=0.0)
    assert torch.allclose(w, torch.full_like(w, 0.5), atol=1e-9)


@pytest.mark.parametrize("mode", ["per-channel", "joint"])
def test_batched_equals_one_by_one(mode: str) -> None:
    x = torch.cat([rand(1, 3, 30, 34, seed=7), rand(1, 3, 30, 34, seed=8) ** 3, 0.1 * rand(1, 3, 30, 34, seed=9)])
    together = self_description(x, block=5, mode=mode, constrained=mode == "joint", scales=2, scale_mode="separate")
    alone = torch.cat(
        [
            self_description(
                x[i : i + 1], block=5, mode=mode, constrained=mode == "joint", scales=2, scale_mode="separate"
            )
            for i in range(3)
        ]
    )
    assert torch.allclose(together, alone, atol=1e-10, rtol=0)
    assert not torch.allclose(together[0], together[1], atol=1e-3)


def test_sums_add_over_image_halves() -> None:
    x = rand(2, 2, 26, 17, seed=10)
    offsets = neighbourhood_offsets(5)
    for mode in ("per-channel", "joint"):
        whole = normal_equations(x, offsets, mode=mode)
        top = normal_equations(x[:, :, :14], offsets, mode=mode)
        bottom = normal_equations(x[:, :, 10:], offsets, mode=mode)
        for got, a, b in zip(whole, top, bottom):
            assert torch.allclose(got, a + b, rtol=1e-12, atol=1e-11)


def test_chunking_does_not_change_sums(monkeypatch: pytest.MonkeyPatch) -> None:
    x = rand(3, 2, 23, 21, seed=11)
    offsets = neighbourhood_offsets(5)
    for mode in ("per-channel", "joint"):
        big = normal_equations(x, offsets, mode=mode)
        monkeypatch.setattr(sp, "_CHUNK_ELEMENTS", 1)
        small = normal_equations(x, offsets, mode=mode)
        monkeypatch.undo()
        for a, b in zip(big, small):
            assert torch.allclose(a, b, rtol=1e-13, atol=1e-12)


@pytest.mark.parametrize("mode", ["per-channel", "joint"])
def test_scale_modes_are_sums_and_concatenations(mode: str) -> None:
    x = rand(2, 2, 33, 30, seed=12) - 0.5
    offsets = neighbourhood_offsets(3)
    groups = 2 if mode == "joint" else 1
    levels = [x, F.avg_pool2d(x, 2), F.avg_pool2d(F.avg_pool2d(x, 2), 2)]
    eqs = [normal_equations(level, offsets, mode=mode) for level in levels]
    summed = [sum(e[i] for e in eqs) for i in range(3)]
    want_joint = solve_predictor(*summed, groups=groups, constrained=True).reshape(2, -1)
    want_separate = torch.cat([solve_predictor(*e, groups=groups, constrained=True).reshape(2, -1) for e in eqs], 1)
    for scale_mode, want in (("joint", want_joint), ("separate", want_separate)):
        got = self_description(x, block=3, mode=mode, constrained=True, scales=3, scale_mode=scale_mode)
        assert torch.allclose(got, want, atol=1e-12, rtol=0)


def test_flat_images_give_the_documented_answer() -> None:
    zeros = torch.zeros(1, 2, 20, 20, dtype=torch.float64)
    m = 24
    for mode in ("per-channel", "joint"):
        constrained = self_description(zeros, block=5, mode=mode, constrained=True, scales=2)
        assert torch.equal(constrained, torch.full_like(constrained, 1.0 / m))
        free = self_description(zeros, block=5, mode=mode, constrained=False, scales=2)
        assert torch.equal(free, torch.zeros_like(free))

        grey = torch.full((1, 2, 20, 20), 0.7, dtype=torch.float64)
        for ridge in (0.0, 1e-6):
            c = self_description(grey, block=5, mode=mode, constrained=True, scales=2, ridge=ridge)
            u = self_description(grey, block=5, mode=mode, constrained=False, scales=2, ridge=ridge)
            assert torch.isfinite(c).all() and torch.isfinite(u).all()
            assert torch.allclose(c.reshape(-1, m).sum(-1), torch.ones(c.numel() // m, dtype=torch.float64), atol=1e-9)
            if mode == "per-channel" and ridge > 0:
                assert torch.allclose(c, torch.full_like(c, 1.0 / m), atol=1e-8)
                assert torch.allclose(u, torch.full_like(u, 1.0 / m), atol=1e-8)


def test_images_too_small_give_no_pixels_and_the_flat_answer() -> None:
    tiny = rand(2, 3, 4, 9, seed=13)
    gram, rhs, n = normal_equations(tiny, neighbourhood_offsets(5), mode="joint")
    assert n.tolist() == [0, 0] and not gram.any() and not rhs.any() and gram.shape == (2, 72, 72)
    for shape in ((1, 1, 1, 1), (1, 2, 4, 4), (1, 1, 0, 5)):
        x = torch.rand(*shape, dtype=torch.float64)
        d = self_description(x, block=5, mode="joint", constrained=True, scales=3, scale_mode="separate")
        assert torch.equal(d, torch.full_like(d, 1.0 / 24))

    x = rand(1, 2, 12, 12, seed=14) - 0.5
    separate = self_description(x, block=7, mode="per-channel", constrained=True, scales=3, scale_mode="separate")
    one = self_description(x, block=7, mode="per-channel", constrained=True, scales=1)
    assert torch.allclose(separate[:, : one.shape[1]], one, atol=1e-12)
    assert torch.equal(separate[:, one.shape[1] :], torch.full_like(separate[:, one.shape[1] :], 1.0 / 48))
    joint = self_description(x, block=7, mode="per-channel", constrained=True, scales=3, scale_mode="joint")
    assert torch.allclose(joint, one, atol=1e-12)


def test_descriptor_is_invariant_to_scaling_the_residuals() -> None:
    x = rand(1, 3, 24, 24, seed=15) - 0.5
    for constrained in (True, False):
        a = self_description(x, block=5, mode="joint", constrained=constrained, scales=2)
        b = self_description(1000.0 * x, block=5, mode="joint", constrained=constrained, scales=2)
        assert torch.allclose(a, b, atol=1e-9, rtol=0)


def test_invalid_arguments() -> None:
    x = rand(1, 2, 16, 16, seed=16)
    bad_calls = [
        lambda: self_description(x, mode="both"),
        lambda: self_description(x, scale_mode="mixed"),
        lambda: self_description(x, scales=0),
        lambda: self_description(x, block=4),
        lambda: self_description(x, ridge=-1.0),
        lambda: self_description(x.float()),
        lambda: self_description(x[0]),
        lambda: self_description(torch.full_like(x, float("nan")), block=3),
        lambda: normal_equations(x, [(0, 0), (0, 1)], mode="joint"),
        lambda: normal_equations(x, [(0, 1), (0, 1)], mode="joint"),
        lambda: normal_equations(x, [], mode="joint"),
        lambda: normal_equations(x, [(0, 1.5)], mode="joint"),
        lambda: solve_predictor(
            torch.eye(6, dtype=torch.float64),
            torch.ones(6, dtype=torch.float64),
            torch.tensor(5),
            groups=4,
            constrained=True,
        ),
        lambda: solve_predictor(
            torch.eye(6, dtype=torch.float64)[None],
            torch.ones(1, 6, dtype=torch.float64),
            torch.tensor([5, 5]),
            groups=1,
            constrained=True,
        ),
        lambda: descriptor_dim(0),
    ]
    for call in bad_calls:
        with pytest.raises(UsageError):
            call()


def test_descriptor_dim() -> None:
    assert descriptor_dim(8) == 8 * 120
    assert descriptor_dim(9, block=7, mode="per-channel", scales=2, scale_mode="separate") == 9 * 48 * 2
    assert descriptor_dim(3, block=3, scales=4, scale_mode="joint") == 3 * 8


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_equals_cpu() -> None:
    x = rand(2, 3, 70, 66, seed=17) - 0.5
    for mode in ("per-channel", "joint"):
        for scale_mode in ("joint", "separate"):
            cpu = self_description(x, block=7, mode=mode, scales=2, scale_mode=scale_mode)
            gpu = self_description(x.cuda(), block=7, mode=mode, scales=2, scale_mode=scale_mode)
            assert torch.allclose(gpu.cpu(), cpu, atol=1e-8, rtol=0)
        for a, b in zip(normal_equations(x, MIXED, mode=mode), normal_equations(x.cuda(), MIXED, mode=mode)):
            assert torch.allclose(b.cpu(), a, rtol=1e-10, atol=1e-10)
