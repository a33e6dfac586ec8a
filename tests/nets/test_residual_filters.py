"""Residual filters: supports, fixed and learned constrained predictors, valid-region residuals."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from osma_cli.errors import UsageError
from osma_cli.nets.residual_filters import FILTER_SUPPORTS, fixed_filters, learn_filters, residuals
from osma_cli.nets.self_prediction import self_description

S = 5
C = S // 2


def rand(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(*shape, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))


def is_constrained(bank: torch.Tensor) -> bool:
    off = bank.sum(dim=(1, 2)) - bank[:, C, C]
    return bool((bank[:, C, C] == 0).all()) and bool(torch.allclose(off, torch.ones_like(off), atol=1e-9, rtol=0))


def gmrf(rng: np.random.Generator, beta: dict[tuple[int, int], float], size: int) -> np.ndarray:
    """A sample of the Gaussian Markov field with E[x(p) | all others] = sum_o beta_o x(p + o).

    Precision operator ``delta - beta`` (beta symmetric, summing to 1: intrinsic, the mean
    frequency dropped), sampled on a torus by FFT, then mapped affinely into [0, 1] (which
    leaves a sum-to-one predictor unchanged).
    """
    wy = 2 * np.pi * np.fft.fftfreq(size)[:, None]
    wx = 2 * np.pi * np.fft.fftfreq(size)[None, :]
    q = 1.0 - sum(b * np.cos(dy * wy + dx * wx) for (dy, dx), b in beta.items())
    q[0, 0] = np.inf
    field = np.real(np.fft.ifft2(np.fft.fft2(rng.normal(size=(size, size))) / np.sqrt(q)))
    return (field - field.min()) / (field.max() - field.min())


def test_supports_are_distinct_odd_squares_without_centre() -> None:
    assert len(FILTER_SUPPORTS) >= 6
    masks = list(FILTER_SUPPORTS.values())
    for mask in masks:
        assert mask.dtype == torch.bool and mask.shape == (S, S) and not mask[C, C] and mask.any()
    assert len({tuple(m.flatten().tolist()) for m in masks}) == len(masks)
    assert {"cross4", "square8", "square24"} <= set(FILTER_SUPPORTS)


def test_fixed_filters_are_uniform_constrained_averages() -> None:
    bank = fixed_filters()
    assert bank.shape == (len(FILTER_SUPPORTS), S, S) and bank.dtype == torch.float64
    assert is_constrained(bank)
    for f, mask in zip(bank, FILTER_SUPPORTS.values()):
        assert torch.equal(f == 0, ~mask)
        assert torch.allclose(f[mask], torch.full_like(f[mask], 1.0 / int(mask.sum())), atol=1e-15)
    sub = fixed_filters(["square24", "h2"])
    assert torch.equal(sub, bank[[list(FILTER_SUPPORTS).index("square24"), list(FILTER_SUPPORTS).index("h2")]])
    for bad in (["nope"], [], "cross4"):
        with pytest.raises(UsageError):
            fixed_filters(bad)


def test_residuals_equal_a_direct_computation() -> None:
    x = rand(2, 3, 11, 13, seed=1)
    bank = fixed_filters()
    bank[2] = 0.0
    bank[2, C, C + 1], bank[2, C - 2, C - 1] = 1.3, -0.3
    r = residuals(x, bank)
    k = bank.shape[0]
    assert r.shape == (2, 3 * k, 11 - S + 1, 13 - S + 1)
    xn, fn = x.numpy(), bank.numpy()
    want = np.zeros(r.shape)
    for c in range(3):
        for i in range(k):
            for y in range(r.shape[2]):
                for u in range(r.shape[3]):
                    window = xn[:, c, y : y + S, u : u + S]
                    want[:, c * k + i, y, u] = xn[:, c, y + C, u + C] - (fn[i] * window).sum(axis=(1, 2))
    np.testing.assert_allclose(r.numpy(), want, atol=1e-14, rtol=0)


def test_flat_planes_have_exactly_zero_residuals() -> None:
    x = torch.full((2, 3, 16, 16), 0.3, dtype=torch.float64)
    x[1, 2] = 0.9
    r = residuals(x, fixed_filters())
    assert torch.equal(r, torch.zeros_like(r))
    d = self_description(r, block=3, mode="joint", constrained=True, scales=2)
    assert torch.equal(d, torch.full_like(d, 1.0 / 8))


def test_residuals_of_small_images_are_empty_and_bad_banks_refused() -> None:
    assert residuals(rand(1, 3, 4, 9), fixed_filters(["h2", "v2"])).shape == (1, 6, 0, 5)
    x = rand(1, 3, 8, 8)
    unconstrained = fixed_filters(["cross4"]) * 0.9
    centred = fixed_filters(["cross4"])
    centred[0, C, C] = 0.1
    for bad in (unconstrained, centred, fixed_filters(["cross4"]).float(), torch.zeros(1, 4, 4, dtype=torch.float64)):
        with pytest.raises(UsageError):
            residuals(x, bad)
    with pytest.raises(UsageError):
        residuals(x.float(), fixed_filters())


def test_learned_filters_satisfy_the_constraint_and_match_numpy() -> None:
    photos = [rand(3, 12, 14, seed=2), rand(3, 9, 10, seed=3) ** 2]
    bank = learn_filters(photos, supports=["cross4", "square8", "h2", "ring16"], ridge=0.0)
    assert bank.shape == (4, S, S) and bank.dtype == torch.float64 and is_constrained(bank)
    for f, name in zip(bank, ["cross4", "square8", "h2", "ring16"]):
        assert torch.equal(f != 0, FILTER_SUPPORTS[name])
    offsets = [(dy - C, dx - C) for dy, dx in FILTER_SUPPORTS["square8"].nonzero().tolist()]
    rows, target = [], []
    for photo in photos:
        p = photo.numpy()
        for c in range(3):
            for y in range(1, p.shape[1] - 1):
                for u in range(1, p.shape[2] - 1):
                    rows.append([p[c, y + dy, u + dx] for dy, dx in offsets])
                    target.append(p[c, y, u])
    a, t = np.array(rows), np.array(target)
    z = np.linalg.lstsq(a[:, :-1] - a[:, -1:], t - a[:, -1], rcond=None)[0]
    want = np.append(z, 1.0 - z.sum())
    np.testing.assert_allclose(bank[1][FILTER_SUPPORTS["square8"]].numpy(), want, atol=1e-9)


def test_learning_supports_together_equals_alone() -> None:
    photos = [rand(3, 20, 18, seed=4)]
    together = learn_filters(photos, supports=["square8", "cross4", "diag4", "square24", "cross8"])
    for i, name in enumerate(["square8", "cross4", "diag4", "square24", "cross8"]):
        assert torch.allclose(together[i], learn_filters(photos, supports=[name])[0], atol=1e-12, rtol=0)
    assert torch.equal(learn_filters(photos), learn_filters(photos))


def test_learned_filters_recover_a_known_predictor() -> None:
    rng = np.random.default_rng(0)
    beta = {(0, -1): 0.35, (0, 1): 0.35, (-1, 0): 0.15, (1, 0): 0.15}
    photos = [torch.from_numpy(np.stack([gmrf(rng, beta, 64) for _ in range(3)])) for _ in range(3)]
    bank = learn_filters(photos, supports=["cross4", "square8", "cross8"])
    want = torch.zeros(S, S, dtype=torch.float64)
    for (dy, dx), b in beta.items():
        want[C + dy, C + dx] = b
    for f in bank:
        assert torch.allclose(f, want, atol=0.02, rtol=0)
    assert not torch.allclose(bank[0], fixed_filters(["cross4"])[0], atol=0.05)


def test_learned_filters_on_noise_are_uniform_and_on_smooth_images_not() -> None:
    noise = [rand(3, 48, 48, seed=10 + i) for i in range(3)]
    smooth = [F.avg_pool2d(rand(3, 52, 52, seed=20 + i)[None], 5, stride=1)[0] for i in range(3)]
    names = ["square8", "cross4"]
    on_noise = learn_filters(noise, supports=names)
    on_smooth = learn_filters(smooth, supports=names)
    assert torch.allclose(on_noise, fixed_filters(names), atol=0.05, rtol=0)
    assert (on_smooth - on_noise).abs().max() > 0.1
    assert is_constrained(on_smooth)


def test_learn_filters_refuses_bad_input() -> None:
    with pytest.raises(UsageError):
        learn_filters([])
    with pytest.raises(UsageError):
        learn_filters([rand(1, 3, 8, 8)])
    with pytest.raises(UsageError):
        learn_filters([torch.zeros(3, 8, 8, dtype=torch.int64)])
    with pytest.raises(UsageError):
        learn_filters([rand(3, 8, 8)], supports=["nope"])
    with pytest.raises(UsageError):
        learn_filters([rand(3, 4, 4)], supports=["square24"])


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_equals_cpu() -> None:
    photos = [rand(3, 40, 44, seed=30), rand(3, 33, 30, seed=31)]
    cpu = learn_filters(photos)
    gpu = learn_filters([p.cuda() for p in photos])
    assert gpu.device.type == "cuda" and torch.allclose(gpu.cpu(), cpu, atol=1e-8, rtol=0)
    x = rand(2, 3, 30, 30, seed=32)
    assert torch.allclose(residuals(x.cuda(), cpu.cuda()).cpu(), residuals(x, cpu), atol=1e-12, rtol=0)
