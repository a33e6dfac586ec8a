"""Every registered network keeps the EmbeddingNet contract; the registry behaves."""

from __future__ import annotations

import inspect

import pytest
import torch

from osma_cli.errors import EXIT_USAGE, UsageError
from osma_cli.nets import (
    ClassifierNet,
    EmbeddingNet,
    get_model,
    get_model_builder,
    list_models,
    model_kind,
    register_model,
    registry,
)
from osma_cli.nets.dct_cnn import block_dct_basis, dct_matrix
from osma_cli.nets.mislnet import MISLNet

BATCH = 2
N_CLASSES = 3


def build(name: str, **kwargs) -> EmbeddingNet | ClassifierNet:
    """The registry's network; classifiers get ``N_CLASSES`` classes."""
    if model_kind(name) == "classifier":
        kwargs.setdefault("n_classes", N_CLASSES)
    return get_model(name, **kwargs)


@pytest.fixture(scope="module", params=list_models())
def model(request: pytest.FixtureRequest) -> EmbeddingNet | ClassifierNet:
    torch.manual_seed(0)
    return build(request.param)


def sizes(model: EmbeddingNet) -> list[tuple[int, int]]:
    """Its minimum square size and a larger non-square one."""
    side = model.min_input_size
    return [(side, side), (side + 5, 2 * side + 3)]


def test_expected_models_are_registered() -> None:
    assert {"mislnet", "resnet50", "dct_cnn", "pose_dct_cnn"} <= set(list_models())
    assert model_kind("pose_dct_cnn") == "classifier" and model_kind("dct_cnn") == "embedding"
    assert list_models() == sorted(list_models())


def test_forward_backward_at_min_and_non_square_sizes(model: EmbeddingNet) -> None:
    model.train()
    for height, width in sizes(model):
        model.zero_grad(set_to_none=True)
        out = model(torch.rand(BATCH, 3, height, width))
        assert out.shape == (BATCH, model.output_dim)
        assert torch.isfinite(out).all()
        if model.kind == "descriptor":
            continue  # training-free: no parameter to take a gradient of
        out.square().mean().backward()
        grads = [p.grad for p in model.parameters() if p.requires_grad]
        assert all(g is not None and torch.isfinite(g).all() for g in grads)
        assert any(g.abs().sum() > 0 for g in grads)


def test_eval_mode_is_deterministic_and_batch_independent(model: EmbeddingNet) -> None:
    model.eval()
    x = torch.rand(BATCH, 3, *sizes(model)[1])
    with torch.no_grad():
        first, second, alone = model(x), model(x), model(x[:1])
    assert torch.equal(first, second)
    torch.testing.assert_close(alone, first[:1], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", list_models())
def test_custom_embedding_dim(name: str) -> None:
    small = build(name, embedding_dim=7).eval()
    with torch.no_grad():
        if isinstance(small, ClassifierNet):
            assert small.features(torch.rand(1, 3, *sizes(small)[0])).shape == (1, 7)
        else:
            assert small(torch.rand(1, 3, *sizes(small)[0])).shape == (1, 7)


def test_inputs_below_min_size_or_wrong_shape_are_refused(model: EmbeddingNet) -> None:
    side = model.min_input_size
    with pytest.raises(UsageError, match="at least"):
        model(torch.rand(1, 3, side - 1, side + 10))
    with pytest.raises(UsageError, match=r"\(B, 3, H, W\)"):
        model(torch.rand(1, 1, side, side))
    with pytest.raises(UsageError, match="float"):
        model(torch.zeros(1, 3, side, side, dtype=torch.uint8))


@pytest.mark.parametrize("name", ["mislnet", "dct_cnn"])
def test_min_input_size_is_tight(name: str) -> None:
    net = get_model(name).eval()
    side = net.min_input_size
    with torch.no_grad():
        net.forward_head(net.forward_features(torch.rand(1, 3, side, side)))
        with pytest.raises(RuntimeError):
            net.forward_head(net.forward_features(torch.rand(1, 3, side - 1, side - 1)))


def test_builders_are_keyword_only() -> None:
    for name in list_models():
        builder = get_model_builder(name)
        kinds = {p.kind for p in inspect.signature(builder).parameters.values()}
        assert kinds <= {inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.VAR_KEYWORD}, name
        with pytest.raises(TypeError):
            builder(16)


def test_registry_refuses_duplicates_and_positional_builders(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry, "_BUILDERS", dict(registry._BUILDERS))
    before = list_models()
    with pytest.raises(UsageError, match="already registered"):
        register_model("mislnet")(lambda *, embedding_dim=200: MISLNet(embedding_dim=embedding_dim))

    def positional(embedding_dim: int = 200) -> MISLNet:
        return MISLNet(embedding_dim=embedding_dim)

    with pytest.raises(UsageError, match="keyword-only"):
        register_model("positional_net")(positional)
    assert list_models() == before


def test_unknown_name_suggests_close_matches() -> None:
    with pytest.raises(UsageError) as caught:
        get_model("mislnt")
    assert "did you mean 'mislnet'" in caught.value.message
    assert "resnet50" in str(caught.value)
    assert caught.value.exit_code == EXIT_USAGE


def test_bad_builder_keyword_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="cannot build model 'mislnet'"):
        get_model("mislnet", no_such_option=1)
    with pytest.raises(UsageError, match="embedding_dim must be a positive integer"):
        get_model("dct_cnn", embedding_dim=0)


def test_block_dct_is_orthonormal() -> None:
    c = dct_matrix(8)
    torch.testing.assert_close(c @ c.T, torch.eye(8, dtype=torch.float64))
    basis = block_dct_basis().view(64, 64).double()
    torch.testing.assert_close(basis @ basis.T, torch.eye(64, dtype=torch.float64), atol=1e-6, rtol=0)
    flat_block = torch.full((1, 1, 8, 8), 0.5)
    coeffs = torch.nn.functional.conv2d(flat_block, block_dct_basis(), stride=8).flatten()
    torch.testing.assert_close(coeffs[0], torch.tensor(4.0))
    assert coeffs[1:].abs().max() < 1e-6


@pytest.mark.parametrize("name", ["mislnet", "dct_cnn"])
def test_forensic_front_end_stays_float32_under_autocast(name: str) -> None:
    net = get_model(name).eval()
    front = net.constrained if name == "mislnet" else None
    seen: list[torch.dtype] = []
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        if front is not None:
            front.register_forward_hook(lambda _m, _i, out: seen.append(out.dtype))
            net(x)
        else:
            seen.append(net.spectrum(x).dtype)
    assert seen == [torch.float32]


def test_resnet_never_downloads(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("a download was attempted")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)
    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)
    assert get_model("resnet50", embedding_dim=16).embedding_dim == 16


def test_classifier_outputs_probabilities_of_its_logits() -> None:
    torch.manual_seed(0)
    net = build("pose_dct_cnn", embedding_dim=16, width=8).eval()
    x = torch.rand(2, 3, 32, 40)
    with torch.no_grad():
        features, logits = net.features_and_logits(x)
        probs = net(x)
    assert features.shape == (2, 16) and logits.shape == (2, N_CLASSES)
    torch.testing.assert_close(probs, torch.softmax(logits, dim=1))
    torch.testing.assert_close(probs.sum(1), torch.ones(2))


def test_classifier_needs_classes() -> None:
    with pytest.raises(UsageError, match="cannot build model 'pose_dct_cnn'"):
        get_model("pose_dct_cnn")
    with pytest.raises(UsageError, match="at least 2 classes"):
        get_model("pose_dct_cnn", n_classes=1)
