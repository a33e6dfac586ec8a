"""Weights files round-trip exactly, hash their tensors, and fail with a message naming the file."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, fields, replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import Tensor, nn

import osma_cli.weights as weights_module
from osma_cli.errors import WeightsError
from osma_cli.nets import EmbeddingNet, get_model, list_models, model_kind, registry
from osma_cli.nets.mislnet import MISLNet
from osma_cli.weights import WeightsMeta, content_hash, load_weights, read_meta, save_weights


def make_meta(architecture: str = "mislnet", embedding_dim: int = 200, **changes: object) -> WeightsMeta:
    meta = WeightsMeta(
        architecture=architecture,
        embedding_dim=embedding_dim,
        crop_size=64,
        l2_normalize=True,
        recipe={"loss": "proxynca++", "epochs": 30},
        metrics={"val_accuracy": 0.93},
    )
    return replace(meta, **changes)


def trained_state(model: nn.Module, side: int = 48) -> nn.Module:
    """Move BatchNorm statistics away from their defaults so the round trip tests them too."""
    torch.manual_seed(0)
    model.train()
    with torch.no_grad():
        model(torch.rand(2, 3, side, side))
    return model.eval()


def write_raw(path: Path, tensors: dict[str, Tensor], meta: dict | None, *, raw_header: str | None = None) -> Path:
    """A safetensors file with whatever metadata a test needs, bypassing save_weights' checks."""
    metadata = None
    if raw_header is not None:
        metadata = {"osma": raw_header}
    elif meta is not None:
        metadata = {"osma": json.dumps(meta)}
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path), metadata=metadata)
    return path


def raw_meta(tensors: dict[str, Tensor], **changes: object) -> dict:
    return {**asdict(make_meta()), "sha256": content_hash(tensors), **changes}


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """A directory of this test's own (tmp_path may hold other fixtures' files)."""
    path = tmp_path / "weights"
    path.mkdir()
    return path


@pytest.fixture(scope="module")
def mislnet() -> MISLNet:
    return trained_state(get_model("mislnet"))


@pytest.fixture
def saved(folder: Path, mislnet: MISLNet) -> Path:
    path = folder / "mislnet.safetensors"
    save_weights(path, mislnet, make_meta())
    return path


def assert_fails(path: Path, *needles: str, loader=load_weights) -> WeightsError:
    with pytest.raises(WeightsError) as caught:
        loader(path)
    text = str(caught.value)
    assert path.name in text
    for needle in needles:
        assert needle in text, text
    return caught.value


@pytest.mark.parametrize("name", list_models())
def test_round_trip_is_exact(folder: Path, name: str) -> None:
    if model_kind(name) == "classifier":
        classes = ["real", "gan a", "gan b"]
        model = trained_state(get_model(name, embedding_dim=32, n_classes=len(classes)))
        meta = make_meta(name, 32, kind="classifier", class_names=classes)
    else:
        model, meta = trained_state(get_model(name, embedding_dim=32)), make_meta(name, 32, kind=model_kind(name))
    path = folder / f"{name}.safetensors"
    written = save_weights(path, model, meta)
    loaded, meta = load_weights(path)
    assert meta == written == read_meta(path)
    assert not loaded.training
    x = torch.rand(2, 3, 52, 40)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
    assert set(os.listdir(folder)) == {path.name}


def test_save_fills_hash_time_and_version(saved: Path, mislnet: MISLNet) -> None:
    meta = read_meta(saved)
    assert meta.sha256 == content_hash(mislnet.state_dict())
    assert meta.created.endswith("+00:00")
    assert meta.recipe == {"loss": "proxynca++", "epochs": 30}
    assert meta.metrics == {"val_accuracy": 0.93}


def test_hash_is_stable_and_independent_of_metadata(folder: Path, mislnet: MISLNet) -> None:
    first = save_weights(folder / "a.safetensors", mislnet, make_meta())
    second = save_weights(folder / "b.safetensors", mislnet, make_meta(recipe={"other": True}, licence="CC-BY-4.0"))
    assert first.sha256 == second.sha256 == content_hash(mislnet.state_dict())


def test_hash_changes_when_a_tensor_changes(mislnet: MISLNet) -> None:
    state = {k: v.clone() for k, v in mislnet.state_dict().items()}
    before = content_hash(state)
    state["fc.0.bias"][0] += 1e-3
    assert content_hash(state) != before
    renamed = {("x" + k if k == "fc.0.bias" else k): v for k, v in mislnet.state_dict().items()}
    assert content_hash(renamed) != content_hash(mislnet.state_dict())


def test_every_metadata_field_is_type_checked() -> None:
    assert set(weights_module._FIELD_TYPES) == {f.name for f in fields(WeightsMeta)}


def test_missing_file(folder: Path) -> None:
    assert_fails(folder / "absent.safetensors", "no such weights file")
    assert_fails(folder / "absent.safetensors", "no such weights file", loader=read_meta)


def test_directory_is_not_a_weights_file(folder: Path) -> None:
    folder = folder / "folder.safetensors"
    folder.mkdir()
    assert_fails(folder, "not a file")


def test_random_bytes(folder: Path) -> None:
    path = folder / "noise.safetensors"
    path.write_bytes(os.urandom(4096))
    assert_fails(path, "not a readable safetensors file")


@pytest.mark.parametrize("keep", [20, -100])
def test_truncated_file(saved: Path, keep: int) -> None:
    data = saved.read_bytes()
    saved.write_bytes(data[:keep])
    assert_fails(saved, "not a readable safetensors file")


def test_safetensors_without_osma_metadata(folder: Path, mislnet: MISLNet) -> None:
    path = write_raw(folder / "plain.safetensors", dict(mislnet.state_dict()), None)
    assert_fails(path, "not an osma weights file")


@pytest.mark.parametrize(
    ("header", "needle"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "not a JSON object"),
        (json.dumps({"architecture": "mislnet"}), "lacks embedding_dim, crop_size, l2_normalize"),
        (
            json.dumps({"architecture": "mislnet", "embedding_dim": "200", "crop_size": 64, "l2_normalize": True}),
            "'embedding_dim' has the wrong type",
        ),
    ],
)
def test_malformed_metadata(folder: Path, mislnet: MISLNet, header: str, needle: str) -> None:
    path = write_raw(folder / "bad-meta.safetensors", dict(mislnet.state_dict()), None, raw_header=header)
    assert_fails(path, needle, loader=read_meta)


def test_unknown_architecture(folder: Path, mislnet: MISLNet) -> None:
    tensors = dict(mislnet.state_dict())
    path = write_raw(folder / "alien.safetensors", tensors, raw_meta(tensors, architecture="mislnett"))
    assert_fails(path, "unknown model 'mislnett'", "did you mean 'mislnet'")


def test_unknown_kind(folder: Path, mislnet: MISLNet) -> None:
    tensors = dict(mislnet.state_dict())
    path = write_raw(folder / "classifier.safetensors", tensors, raw_meta(tensors, kind="regressor"))
    assert_fails(path, "kind 'regressor'")


def test_missing_tensor(folder: Path, mislnet: MISLNet) -> None:
    tensors = {k: v for k, v in mislnet.state_dict().items() if k != "fc.2.weight"}
    path = write_raw(folder / "missing.safetensors", tensors, raw_meta(tensors))
    assert_fails(path, "missing: fc.2.weight")


def test_unexpected_tensor(folder: Path, mislnet: MISLNet) -> None:
    tensors = {**mislnet.state_dict(), "extra.weight": torch.zeros(3)}
    path = write_raw(folder / "extra.safetensors", tensors, raw_meta(tensors))
    assert_fails(path, "unexpected: extra.weight")


def test_misshaped_tensor(folder: Path, mislnet: MISLNet) -> None:
    tensors = dict(mislnet.state_dict())
    path = write_raw(folder / "shape.safetensors", tensors, raw_meta(tensors, embedding_dim=100))
    assert_fails(path, "wrong shape: fc.2.bias (200,) vs (100,)")


def test_tampered_bytes_fail_the_hash(saved: Path) -> None:
    data = bytearray(saved.read_bytes())
    for offset in range(1, 9):
        data[-offset] ^= 0xFF
    saved.write_bytes(bytes(data))
    read_meta(saved)
    assert_fails(saved, "modified or corrupt")


def test_metadata_disagreeing_with_the_output(folder: Path, monkeypatch: pytest.MonkeyPatch, mislnet: MISLNet) -> None:
    monkeypatch.setitem(registry._BUILDERS, "fixed_dim", lambda *, embedding_dim=200: MISLNet())
    tensors = dict(mislnet.state_dict())
    path = write_raw(
        folder / "liar.safetensors", tensors, raw_meta(tensors, architecture="fixed_dim", embedding_dim=64)
    )
    assert_fails(path, "embedding_dim=64", "(200,)")


def test_save_refuses_metadata_that_could_not_be_loaded(folder: Path, mislnet: MISLNet) -> None:
    path = folder / "refused.safetensors"
    save = lambda meta, model=mislnet: save_weights(path, model, meta)  # noqa: E731
    assert_fails(path, "embedding_dim=128", loader=lambda p: save(make_meta(embedding_dim=128)))
    assert_fails(path, "unknown model", loader=lambda p: save(make_meta("no_such_net")))
    six_filters = get_model("mislnet", num_constrained_filters=6)
    assert_fails(
        path, "constrained.weight (6, 3, 5, 5) vs (3, 3, 5, 5)", loader=lambda p: save(make_meta(), six_filters)
    )
    assert_fails(path, "not plain JSON", loader=lambda p: save(make_meta(metrics={"auc": float("nan")})))
    assert_fails(path, "not plain JSON", loader=lambda p: save(make_meta(recipe={"when": object()})))
    assert_fails(path, "unknown weights kind", loader=lambda p: save(make_meta(kind="regressor")))
    assert_fails(
        path, "is an embedding network", loader=lambda p: save(make_meta(kind="classifier", class_names=["a", "b"]))
    )
    assert_fails(path, "repeats embedding_dim", loader=lambda p: save(make_meta(arch_kwargs={"embedding_dim": 200})))
    assert not path.exists()
    assert os.listdir(folder) == []


def test_save_into_missing_directory(folder: Path, mislnet: MISLNet) -> None:
    path = folder / "nowhere" / "w.safetensors"
    assert_fails(path, "does not exist", loader=lambda p: save_weights(p, mislnet, make_meta()))


def test_failed_write_leaves_old_file_and_no_temporary(
    saved: Path, mislnet: MISLNet, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = saved.read_bytes()

    def crash(tensors: dict, filename: str, metadata: dict) -> None:
        Path(filename).write_bytes(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(weights_module, "save_file", crash)
    assert_fails(saved, "cannot write weights", loader=lambda p: save_weights(p, mislnet, make_meta()))
    assert os.listdir(saved.parent) == [saved.name]
    assert saved.read_bytes() == before


class TiedNet(EmbeddingNet):
    """Two layers sharing one weight tensor: safetensors refuses shared storage unless copied."""

    def __init__(self, *, embedding_dim: int = 3) -> None:
        super().__init__(embedding_dim=embedding_dim, min_input_size=1)
        self.first = nn.Linear(3, embedding_dim)
        self.second = nn.Linear(3, embedding_dim)
        self.second.weight = self.first.weight

    def forward_features(self, x: Tensor) -> Tensor:
        return x

    def forward_head(self, features: Tensor) -> Tensor:
        pooled = features.mean(dim=(2, 3))
        return self.first(pooled) + self.second(pooled)


def test_shared_tensors_are_saved(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(registry._BUILDERS, "tied", lambda *, embedding_dim=3: TiedNet(embedding_dim=embedding_dim))
    model = TiedNet()
    path = folder / "tied.safetensors"
    save_weights(path, model, make_meta("tied", 3, crop_size=8))
    loaded, _ = load_weights(path)
    x = torch.rand(2, 3, 4, 4)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))


def test_classifier_metadata_must_fit_the_network(folder: Path) -> None:
    net = get_model("pose_dct_cnn", embedding_dim=16, n_classes=3, width=8)
    good = make_meta("pose_dct_cnn", 16, kind="classifier", class_names=["a", "b", "c"], arch_kwargs={"width": 8})
    with pytest.raises(WeightsError, match="3 outputs but the metadata names 2"):
        save_weights(folder / "few.safetensors", net, replace(good, class_names=["a", "b"]))
    with pytest.raises(WeightsError, match="distinct"):
        save_weights(folder / "dup.safetensors", net, replace(good, class_names=["a", "a", "c"]))
    with pytest.raises(WeightsError, match="is a classifier network"):
        save_weights(folder / "kind.safetensors", net, replace(good, kind="embedding", class_names=[]))
    with pytest.raises(WeightsError, match="classifier weights only"):
        save_weights(
            folder / "names.safetensors",
            get_model("dct_cnn", embedding_dim=16, width=8),
            make_meta("dct_cnn", 16, class_names=["a", "b"], arch_kwargs={"width": 8}),
        )
    written = save_weights(folder / "ok.safetensors", net, good)
    assert read_meta(folder / "ok.safetensors").class_names == ["a", "b", "c"]
    assert written.output_dim == 3 and written.is_classifier


def test_a_reference_store_given_as_weights_says_so(folder: Path) -> None:
    path = folder / "refs.h5"
    path.write_bytes(b"\x89HDF\r\n\x1a\n" + os.urandom(1024))
    error = assert_fails(path, "reference store", "--refs", loader=read_meta)
    assert "download" not in str(error)
    assert_fails(path, "reference store")  # load_weights reads the header first


def test_saved_weights_have_umask_permissions(saved: Path) -> None:
    """safetensors writes its file 0600; a weights file osma writes is readable like any other file."""
    import os

    umask = os.umask(0)
    os.umask(umask)
    assert saved.stat().st_mode & 0o777 == 0o666 & ~umask
