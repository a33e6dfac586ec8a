"""The zoo's recipe: which generators exist, how they are trained, how the benchmark is cut.

Everything that decides the built-in benchmark is in one frozen ``ZooRecipe``, so a build
can be fingerprinted and a test can swap in a tiny one. ``default_recipe()`` is the one
osma ships; ``docs/zoo.md`` explains its choices.

Generators come from ``FamilyPlan`` rows: a decoder family trained with ``seeds`` seeds
on its main training set (``tconv-cameras-s0``, ``-s1``, ``-s2``) and once more on another
set (``tconv-deadleaves-s0``). A generator's name fixes its initial weights and the order
of its training crops (both seeded from a hash of the name), so two generators that differ
only by seed differ by nothing else, and the secondary-set generator is a separate run.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

from osma_cli.errors import UsageError
from osma_cli.zoo.generators import ADVERSARIAL_FAMILIES, FAMILIES, GeneratorConfig

DATASETS: tuple[str, ...] = ("cameras", "kair", "deadleaves")
"""The three training sets: camera photos (colour charts, straight from 24 camera models),
KAIR's faces and classic test images, and procedural dead-leaves images."""

REAL = "real"
"""The name of the real class: held-out photos through no generator, label 0."""


@dataclass(frozen=True)
class FamilyPlan:
    """One decoder family: ``seeds`` generators on ``dataset``, one on ``other_dataset``."""

    family: str
    dataset: str
    other_dataset: str
    seeds: int = 3


@dataclass(frozen=True)
class GeneratorSpec:
    """One generator of the zoo; ``name`` is ``{family}-{dataset}-s{seed}``."""

    family: str
    dataset: str
    seed: int

    @property
    def name(self) -> str:
        return f"{self.family}-{self.dataset}-s{self.seed}"

    @property
    def adversarial(self) -> bool:
        return self.family in ADVERSARIAL_FAMILIES

    def rng_seed(self, purpose: str) -> int:
        """A 63-bit seed for ``purpose`` (``"init"``, ``"data"``, ``"disc"``) from the name."""
        digest = hashlib.sha256(f"osma-zoo/{self.name}/{purpose}".encode()).digest()
        return int.from_bytes(digest[:8], "little") >> 1


@dataclass(frozen=True)
class TrainSettings:
    """How every generator is trained (the same for all, so they differ by traces only)."""

    steps: int = 1000
    batch: int = 16
    crop: int = 64
    lr: float = 2e-3
    """Peak learning rate of AdamW; one-cycle schedule (10% warm-up, cosine decay)."""
    width: int = 16
    levels: int = 2
    latent: int = 8
    permute_channels: bool = True
    """Shuffle the RGB channels of each training crop: every set then covers every hue,
    so that generators differ by their traces more than by the colours they learnt."""
    adv_weight: float = 0.01
    """Weight of the PatchGAN term against L1 for the adversarial families."""
    adv_start: float = 0.2
    """Fraction of the steps trained on L1 alone before the PatchGAN term starts."""
    disc_lr: float = 2e-4
    disc_width: int = 16
    threads: int = 1
    """torch threads per generator being trained (``osma zoo train --workers`` trains several
    at once); a run repeats on one machine, not bit for bit across machines."""
    deadleaves_images: int = 48
    deadleaves_size: int = 256
    deadleaves_seed: int = 20240617

    def config(self, family: str) -> GeneratorConfig:
        return GeneratorConfig(family=family, width=self.width, levels=self.levels, latent=self.latent)


@dataclass(frozen=True)
class SplitPlan:
    """One benchmark split: the family left out entirely and the seed left out per family.

    Known: every generator of the other families on their main training set except the
    left-out seed. Unknown: the rest, each of the kind ``unknown_kind`` gives it.
    """

    name: str
    unknown_family: str
    unseen_seed: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class ZooRecipe:
    """The whole zoo: generators, training, photos and benchmark splits."""

    families: tuple[FamilyPlan, ...]
    splits: tuple[SplitPlan, ...]
    training: TrainSettings = TrainSettings()
    tile: int = 256
    """Side of the benchmark's square images (a multiple of every generator's stride)."""
    photos: Path | None = None
    """The photo folder (``photos.csv`` beside the images); None: the one osma ships."""

    def __post_init__(self) -> None:
        seen: set[str] = set()
        for plan in self.families:
            if plan.family not in FAMILIES:
                raise UsageError(f"recipe names unknown family {plan.family!r}")
            for dataset in (plan.dataset, plan.other_dataset):
                if dataset not in DATASETS:
                    raise UsageError(
                        f"recipe names unknown training set {dataset!r}", hint=f"training sets: {', '.join(DATASETS)}"
                    )
            if plan.family in seen:
                raise UsageError(f"family {plan.family!r} is planned twice")
            if plan.dataset == plan.other_dataset or plan.seeds < 1:
                raise UsageError(f"family {plan.family!r}: needs seeds >= 1 and two training sets")
            seen.add(plan.family)
        if self.tile % self.training.config("tconv").stride:
            raise UsageError(f"tile {self.tile} is not a multiple of the generators' stride")

    @property
    def generators(self) -> tuple[GeneratorSpec, ...]:
        """Every generator, family by family: main-set seeds, then the other set."""
        specs = []
        for plan in self.families:
            specs += [GeneratorSpec(plan.family, plan.dataset, s) for s in range(plan.seeds)]
            specs.append(GeneratorSpec(plan.family, plan.other_dataset, 0))
        return tuple(specs)

    def generator(self, name: str) -> GeneratorSpec:
        for spec in self.generators:
            if spec.name == name:
                return spec
        import difflib

        close = difflib.get_close_matches(name, [s.name for s in self.generators], n=3)
        raise UsageError(
            f"no generator named {name!r} in the zoo",
            hint=f"did you mean {' or '.join(close)}?" if close else "`osma zoo list` shows them",
        )

    def family_plan(self, family: str) -> FamilyPlan:
        for plan in self.families:
            if plan.family == family:
                return plan
        raise UsageError(f"no family {family!r} in the zoo")

    def split(self, name: str) -> SplitPlan:
        for plan in self.splits:
            if plan.name == name:
                return plan
        raise UsageError(f"no split {name!r} in the zoo", hint=f"splits: {', '.join(p.name for p in self.splits)}")

    def benchmark_dict(self) -> dict:
        """What decides the benchmark's files (not the photos' bytes): for the fingerprint."""
        return {
            "families": [asdict(p) for p in self.families],
            "splits": [
                {"name": s.name, "unknown_family": s.unknown_family, "unseen_seed": dict(sorted(s.unseen_seed.items()))}
                for s in self.splits
            ],
            "tile": self.tile,
            "generator_config": {f.family: self.training.config(f.family).to_dict() for f in self.families},
        }

    def fingerprint_text(self) -> str:
        return json.dumps(self.benchmark_dict(), sort_keys=True)


DEFAULT_FAMILIES: tuple[FamilyPlan, ...] = (
    FamilyPlan("tconv", "cameras", "deadleaves"),
    FamilyPlan("shuffle", "cameras", "kair"),
    FamilyPlan("nearest", "kair", "cameras"),
    FamilyPlan("resup", "kair", "deadleaves"),
    FamilyPlan("bilinear", "deadleaves", "kair"),
    FamilyPlan("dcgan", "deadleaves", "cameras"),
)
"""Six families; each training set is the main set of two families (3 seeds each) and the
other set of two more."""

SPLIT_UNKNOWN_FAMILIES: tuple[str, ...] = ("resup", "nearest", "shuffle", "bilinear", "dcgan")
"""The family left out of split 1..5 (``tconv``, the oldest design, is known in all)."""


def default_splits(
    families: tuple[FamilyPlan, ...] = DEFAULT_FAMILIES, unknown_families: tuple[str, ...] = SPLIT_UNKNOWN_FAMILIES
) -> tuple[SplitPlan, ...]:
    """Split ``k`` (from 1) leaves out ``unknown_families[k-1]`` and, for the family at
    position ``i``, seed ``(k + i) % seeds``: every seed is left out in some split."""
    return tuple(
        SplitPlan(
            name=f"split{k}",
            unknown_family=left_out,
            unseen_seed={
                plan.family: (k + i) % plan.seeds for i, plan in enumerate(families) if plan.family != left_out
            },
        )
        for k, left_out in enumerate(unknown_families, start=1)
    )


def default_recipe() -> ZooRecipe:
    """The recipe of the zoo osma ships (weights in ``weights/zoo/``)."""
    return ZooRecipe(families=DEFAULT_FAMILIES, splits=default_splits())
