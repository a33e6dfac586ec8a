"""The network a training run starts from: the registry's architecture from scratch, or ``--init`` weights."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import cast

from osma_cli.errors import UsageError
from osma_cli.nets import EmbeddingNet


@dataclass(frozen=True)
class Network:
    """A network to train and where it came from."""

    model: EmbeddingNet
    architecture: str
    arch_kwargs: dict
    embedding_dim: int
    init_sha256: str | None = None
    init_record: dict | None = None


def build_network(
    *,
    arch: str | None,
    arch_kwargs: dict | None = None,
    embedding_dim: int | None = None,
    init: Path | None = None,
    crop: int | None = None,
) -> Network:
    """The registry's ``arch`` freshly initialised, or the network of ``init`` weights (in train mode).

    With ``init``, the architecture, its keywords and the embedding size are the file's; any
    of them also given must agree. ``crop`` is checked against the network's minimum input.
    """
    from osma_cli.nets import get_model
    from osma_cli.weights import load_weights

    arch_kwargs = dict(arch_kwargs or {})
    if "embedding_dim" in arch_kwargs:
        raise UsageError("give the embedding size as embedding_dim, not inside arch_kwargs")
    if init is not None:
        model, meta = load_weights(init)
        if meta.is_classifier:
            raise UsageError(
                f"--init {init} is a closed-set classifier ({meta.architecture})",
                hint="start from embedding weights (e.g. from `osma pretrain`), or from scratch",
            )
        clashes = [
            f"{name} {given!r} (the file has {found!r})"
            for name, given, found in (
                ("--arch", arch, meta.architecture),
                ("--embedding-dim", embedding_dim, meta.embedding_dim),
            )
            if given is not None and given != found
        ]
        if arch_kwargs and arch_kwargs != meta.arch_kwargs:
            clashes.append(f"architecture options {arch_kwargs!r} (the file has {meta.arch_kwargs!r})")
        if clashes:
            raise UsageError(
                f"--init {init} does not match: {'; '.join(clashes)}",
                hint="leave these options out: they come from the --init weights",
            )
        record = {
            "path": str(init),
            "sha256": meta.sha256,
            "architecture": meta.architecture,
            "stage": meta.recipe.get("stage"),
            "created": meta.created,
        }
        network = Network(
            model=cast(EmbeddingNet, model),
            architecture=meta.architecture,
            arch_kwargs=dict(meta.arch_kwargs),
            embedding_dim=meta.embedding_dim,
            init_sha256=meta.sha256,
            init_record=record,
        )
    else:
        name = arch or "mislnet"
        kwargs = dict(arch_kwargs)
        if embedding_dim is not None:
            kwargs["embedding_dim"] = embedding_dim
        built = cast(EmbeddingNet, get_model(name, **kwargs))
        network = Network(model=built, architecture=name, arch_kwargs=arch_kwargs, embedding_dim=built.embedding_dim)
    if crop is not None and crop < network.model.min_input_size:
        raise UsageError(
            f"--crop {crop} is below {network.architecture}'s minimum input ({network.model.min_input_size} pixels)",
            hint="use a larger --crop",
        )
    network.model.train()
    return network
