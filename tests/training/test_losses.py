"""ProxyNCA++ and the classifier head against direct computations; gradient directions."""

from __future__ import annotations

import math

import pytest
import torch
from torch.nn import functional as F

from osma_cli.errors import UsageError
from osma_cli.training.losses import (
    DEFAULT_TEMPERATURE,
    CosineSimilarity,
    CrossEntropyClassifier,
    MeanReducer,
    ProxyNCAPlusPlus,
    SquaredL2Distance,
    get_distance,
)


def direct_proxynca_pp(x: torch.Tensor, proxies: torch.Tensor, labels: torch.Tensor, temperature: float) -> list[float]:
    """Per-item loss by loops in float64: -log(exp(-d_y/T) / sum_k exp(-d_k/T)), all proxies."""
    out = []
    for i in range(x.shape[0]):
        xi = x[i].double()
        xi = xi / math.sqrt(float((xi * xi).sum()))
        terms = []
        for k in range(proxies.shape[0]):
            pk = proxies[k].double()
            pk = pk / math.sqrt(float((pk * pk).sum()))
            d = float(((xi - pk) ** 2).sum())
            terms.append(math.exp(-d / temperature))
        out.append(-math.log(terms[int(labels[i])] / sum(terms)))
    return out


@pytest.mark.parametrize("temperature", [DEFAULT_TEMPERATURE, 0.05, 1.0])
def test_proxynca_pp_matches_direct_loop(temperature: float) -> None:
    torch.manual_seed(0)
    loss = ProxyNCAPlusPlus(5, 7, temperature=temperature)
    x = torch.randn(6, 7) * 3.0
    labels = torch.tensor([0, 1, 2, 3, 4, 2])
    got = loss(x, labels)
    assert got.shape == (6,) and got.dtype == torch.float32
    want = direct_proxynca_pp(x, loss.proxies.detach(), labels, temperature)
    torch.testing.assert_close(got.double(), torch.tensor(want, dtype=torch.float64), rtol=1e-5, atol=1e-5)


def test_default_temperature_is_one_ninth() -> None:
    assert ProxyNCAPlusPlus(3, 4).temperature == pytest.approx(1 / 9)


def test_positive_proxy_is_in_the_denominator() -> None:
    """On its own proxy, orthogonal to the other (T = 1): log(1 + e^-2), not ProxyNCA's -2."""
    loss = ProxyNCAPlusPlus(2, 2, temperature=1.0)
    with torch.no_grad():
        loss.proxies.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    value = float(loss(torch.tensor([[2.0, 0.0]]), torch.tensor([0])).detach())
    assert value == pytest.approx(math.log1p(math.exp(-2.0)), rel=1e-6)


def test_gradient_pulls_embedding_to_its_proxy_and_away_from_the_other() -> None:
    loss = ProxyNCAPlusPlus(2, 2)
    with torch.no_grad():
        loss.proxies.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    angle = math.radians(50)  # closer to the wrong proxy (class 1) than to its own (class 0)
    x = torch.tensor([[math.cos(angle), math.sin(angle)]], requires_grad=True)
    loss(x, torch.tensor([0])).sum().backward()
    p0, p1 = loss.proxies.detach()[0], loss.proxies.detach()[1]
    step = 1e-2
    x_new = (x - step * x.grad).detach()
    cos = lambda a, b: float(F.cosine_similarity(a.reshape(1, -1), b.reshape(1, -1)))  # noqa: E731
    assert cos(x_new, p0) > cos(x.detach(), p0)
    assert cos(x_new, p1) < cos(x.detach(), p1)
    # and the proxies: the positive moves toward the embedding, the negative away from it
    proxies_new = loss.proxies.detach() - step * loss.proxies.grad
    assert cos(proxies_new[0], x.detach()) > cos(p0, x.detach())
    assert cos(proxies_new[1], x.detach()) < cos(p1, x.detach())


def test_squared_l2_on_unit_vectors_equals_cosine_at_half_temperature() -> None:
    """||a - b||^2 = 2 - 2 cos for unit vectors: the two forms give the same loss."""
    torch.manual_seed(1)
    l2 = ProxyNCAPlusPlus(4, 5, temperature=0.2)
    cosine = ProxyNCAPlusPlus(4, 5, temperature=0.1, distance=CosineSimilarity())
    cosine.load_state_dict(l2.state_dict())
    x, labels = torch.randn(8, 5), torch.randint(0, 4, (8,))
    torch.testing.assert_close(l2(x, labels), cosine(x, labels), rtol=1e-5, atol=1e-6)


def test_distances_against_direct_formulas() -> None:
    torch.manual_seed(2)
    a, b = torch.randn(3, 4), torch.randn(5, 4)
    an, bn = a / a.norm(dim=1, keepdim=True), b / b.norm(dim=1, keepdim=True)
    torch.testing.assert_close(SquaredL2Distance()(a, b), torch.cdist(an, bn) ** 2, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(
        SquaredL2Distance(normalize_embeddings=False)(a, b), torch.cdist(a, b) ** 2, rtol=1e-5, atol=1e-5
    )
    torch.testing.assert_close(CosineSimilarity()(a, b), an @ bn.T)
    assert isinstance(get_distance("cosine"), CosineSimilarity)
    with pytest.raises(UsageError, match="unknown distance"):
        get_distance("manhattan")


def test_proxies_are_parameters_of_the_loss() -> None:
    loss = ProxyNCAPlusPlus(3, 4)
    assert [name for name, _ in loss.named_parameters()] == ["proxies"]
    assert "proxies" in loss.state_dict()


def test_reducer_and_per_item_losses() -> None:
    torch.manual_seed(3)
    loss = ProxyNCAPlusPlus(3, 4)
    x, labels = torch.randn(5, 4), torch.tensor([0, 1, 2, 0, 1])
    per_item = loss(x, labels).detach()
    assert float(MeanReducer()(per_item)) == pytest.approx(float(per_item.mean()))
    assert float(MeanReducer()(per_item[:0])) == 0.0


def test_classifier_head_is_cross_entropy_of_a_linear_layer() -> None:
    torch.manual_seed(4)
    head = CrossEntropyClassifier(4, 6)
    x, labels = torch.randn(5, 6), torch.tensor([0, 1, 2, 3, 0])
    want = F.cross_entropy(x @ head.head.weight.T + head.head.bias, labels, reduction="none")
    torch.testing.assert_close(head(x, labels), want)
    assert head.predict(x).shape == (5,)


def test_loss_computes_in_float32_under_autocast() -> None:
    torch.manual_seed(5)
    loss = ProxyNCAPlusPlus(3, 8)
    x, labels = torch.randn(4, 8), torch.tensor([0, 1, 2, 0])
    plain = loss(x, labels)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = loss(x.bfloat16(), labels)
    assert mixed.dtype == torch.float32
    torch.testing.assert_close(mixed, loss(x.bfloat16().float(), labels))
    assert torch.allclose(mixed, plain, atol=0.2)


@pytest.mark.parametrize(
    ("x_shape", "labels", "message"),
    [
        ((4, 5), [0, 1, 2, 0], "expects"),
        ((4, 4), [0, 1, 2], "labels have shape"),
        ((4, 4), [0, 1, 3, 0], r"labels must lie in \[0, 2\]"),
        ((4, 4), [0, -1, 2, 0], "labels must lie"),
    ],
)
def test_bad_inputs_are_refused(x_shape, labels, message) -> None:
    loss = ProxyNCAPlusPlus(3, 4)
    with pytest.raises(UsageError, match=message):
        loss(torch.randn(*x_shape), torch.tensor(labels))


def test_bad_construction_is_refused() -> None:
    with pytest.raises(UsageError, match="at least 2 classes"):
        ProxyNCAPlusPlus(1, 4)
    with pytest.raises(UsageError, match="temperature"):
        ProxyNCAPlusPlus(3, 4, temperature=0.0)
    with pytest.raises(UsageError, match="embedding_dim"):
        CrossEntropyClassifier(3, 0)
