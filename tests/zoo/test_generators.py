"""Every decoder family: output shape on any multiple of the stride, determinism, training."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from osma_cli.errors import UsageError
from osma_cli.zoo.generators import (
    ADVERSARIAL_FAMILIES,
    FAMILIES,
    GeneratorConfig,
    PatchDiscriminator,
    build_generator,
)
from osma_cli.zoo.render import deterministic_torch, psnr, quantise, render

TINY = {"width": 4, "latent": 2}


def test_at_least_five_families_and_an_adversarial_one():
    assert {"tconv", "nearest", "bilinear", "shuffle", "resup"} <= set(FAMILIES)
    assert ADVERSARIAL_FAMILIES and ADVERSARIAL_FAMILIES <= set(FAMILIES)


@pytest.mark.parametrize("family", sorted(FAMILIES))
@pytest.mark.parametrize("levels", [2, 3])
def test_output_shape_on_multiples_of_the_stride(family, levels):
    model = build_generator(GeneratorConfig(family=family, levels=levels, **TINY), seed=0)
    stride = 2**levels
    for height, width in [(stride, stride), (2 * stride, 3 * stride), (32, 16)]:
        x = torch.rand(2, 3, height, width)
        assert model(x).shape == (2, 3, height, width)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_refuses_sizes_off_the_stride(family):
    model = build_generator(GeneratorConfig(family=family, **TINY), seed=0)
    with pytest.raises(UsageError, match="multiples of 4"):
        model(torch.rand(1, 3, 16, 18))
    with pytest.raises(UsageError):
        model(torch.rand(1, 1, 16, 16))


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_same_seed_same_network_other_seed_other_network(family):
    config = GeneratorConfig(family=family, **TINY)
    a, b, c = (build_generator(config, seed=s) for s in (7, 7, 8))
    x = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(a(x), b(x))
        assert not torch.equal(a(x), c(x))


def test_building_with_a_seed_leaves_the_global_generator_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    build_generator(GeneratorConfig(family="tconv", **TINY), seed=5)
    assert torch.equal(torch.rand(3), expected)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_render_is_deterministic_uint8_in_float64(family):
    model = build_generator(GeneratorConfig(family=family, **TINY), seed=1).double().eval()
    image = np.random.default_rng(0).integers(0, 256, size=(16, 24, 3), dtype=np.uint8)
    with deterministic_torch():
        first, second = render(model, image), render(model, image)
    assert first.dtype == np.uint8 and first.shape == image.shape
    assert np.array_equal(first, second)


def test_render_does_not_change_global_torch_settings():
    threads = torch.get_num_threads()
    with deterministic_torch(threads=1):
        assert torch.are_deterministic_algorithms_enabled()
    assert torch.get_num_threads() == threads
    assert not torch.are_deterministic_algorithms_enabled()


def test_quantise_clamps_and_rounds_half_to_even():
    values = torch.tensor([-0.5, 0.0, 0.5 / 255, 1.5 / 255, 1.0, 2.0], dtype=torch.float64)
    out = quantise(values.reshape(1, 1, 1, 6).expand(1, 3, 1, 6))
    assert out[0, :, 0].tolist() == [0, 0, 0, 2, 255, 255]


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_every_family_trains(family):
    model = build_generator(GeneratorConfig(family=family, **TINY), seed=0)
    x = torch.rand(2, 3, 16, 16)
    loss = (model(x) - x).abs().mean()
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_patch_discriminator_gives_a_map_of_logits():
    assert PatchDiscriminator(4)(torch.rand(2, 3, 32, 32)).shape == (2, 1, 8, 8)


def test_config_round_trip_and_errors():
    config = GeneratorConfig(family="resup", width=8, levels=3, latent=4)
    assert GeneratorConfig.from_dict(config.to_dict()) == config
    with pytest.raises(UsageError, match="did you mean 'nearest'"):
        build_generator(GeneratorConfig(family="neares"))
    with pytest.raises(UsageError, match="divisible by 4"):
        build_generator(GeneratorConfig(family="resup", width=6))
    with pytest.raises(UsageError):
        GeneratorConfig.from_dict({"family": "tconv", "depth": 3})


def test_psnr():
    a = np.zeros((4, 4, 3), np.uint8)
    assert psnr(a, a) == float("inf")
    assert psnr(a, a + 1) == pytest.approx(10 * np.log10(255**2))
