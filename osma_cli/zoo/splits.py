"""Which generators each split of the built-in benchmark knows, and what the others are.

A split knows ``real`` and the generators its ``SplitPlan`` keeps (``recipe.SplitPlan``).
Every other generator is an unknown of the kind that says how it differs from the known
ones, as in POSE (Yang et al., CVPR 2023):

- ``seed``: a known generator has the same family and training set (only the seed differs);
- ``dataset``: its family is known, but only from another training set;
- ``arch``: no generator of its family is known, but one trained on the same set is.

A generator that fits none of these (its family and its training set both unseen) would
have no kind; ``check_split`` refuses such a plan, and one where a kind is missing.
"""

from __future__ import annotations

from dataclasses import dataclass

from osma_cli.errors import UsageError
from osma_cli.evaluation.sources import UNKNOWN_KINDS
from osma_cli.zoo.recipe import GeneratorSpec, SplitPlan, ZooRecipe

KNOWN = "known"


@dataclass(frozen=True)
class SplitRoles:
    """The roles of every generator in one split."""

    name: str
    known: tuple[str, ...]
    """Known generators in label order: label ``i + 1`` (label 0 is ``real``)."""
    unknown: dict[str, str]
    """Unknown generator -> its kind (``seed``, ``arch`` or ``dataset``), in recipe order."""

    def role(self, name: str) -> str:
        """``"known"`` or the unknown kind of generator ``name``."""
        return KNOWN if name in self.known else self.unknown[name]

    def unknown_of_kind(self, kind: str) -> list[str]:
        return [name for name, k in self.unknown.items() if k == kind]


def unknown_kind(spec: GeneratorSpec, known: list[GeneratorSpec]) -> str:
    """How ``spec`` differs from the known generators; ``""`` when no kind fits."""
    if any(k.family == spec.family and k.dataset == spec.dataset for k in known):
        return "seed"
    if any(k.family == spec.family for k in known):
        return "dataset"
    if any(k.dataset == spec.dataset for k in known):
        return "arch"
    return ""


def split_roles(recipe: ZooRecipe, plan: SplitPlan) -> SplitRoles:
    """Known and unknown generators of ``plan``, checked (``check_split``)."""
    known = []
    for spec in recipe.generators:
        family = recipe.family_plan(spec.family)
        if (
            spec.family != plan.unknown_family
            and spec.dataset == family.dataset
            and spec.seed != plan.unseen_seed.get(spec.family)
        ):
            known.append(spec)
    unknown = {spec.name: unknown_kind(spec, known) for spec in recipe.generators if spec not in known}
    roles = SplitRoles(plan.name, tuple(s.name for s in known), unknown)
    check_split(recipe, plan, roles)
    return roles


def check_split(recipe: ZooRecipe, plan: SplitPlan, roles: SplitRoles) -> None:
    """Refuse a plan whose split would not test every unknown kind cleanly."""
    names = {s.name for s in recipe.generators}
    if plan.unknown_family not in {f.family for f in recipe.families}:
        raise UsageError(f"{plan.name}: left-out family {plan.unknown_family!r} is not in the zoo")
    for family, seed in plan.unseen_seed.items():
        seeds = recipe.family_plan(family).seeds
        if not 0 <= seed < seeds:
            raise UsageError(f"{plan.name}: unseen seed {seed} of {family} is not among 0..{seeds - 1}")
    if not roles.known:
        raise UsageError(f"{plan.name}: no generator is known")
    both = set(roles.known) & set(roles.unknown)
    if both or set(roles.known) | set(roles.unknown) != names:
        raise UsageError(f"{plan.name}: generators are not partitioned into known and unknown")
    no_kind = [name for name, kind in roles.unknown.items() if not kind]
    if no_kind:
        raise UsageError(
            f"{plan.name}: {', '.join(no_kind)} differ from every known generator "
            f"in both family and training set, so they have no unknown kind"
        )
    missing = [kind for kind in UNKNOWN_KINDS if kind not in roles.unknown.values()]
    if missing:
        raise UsageError(
            f"{plan.name}: no unknown generator of kind {', '.join(missing)}",
            hint="leave out a seed of every known family and train each family on two sets",
        )


def all_roles(recipe: ZooRecipe) -> list[SplitRoles]:
    """The roles of every split of ``recipe``, in order."""
    return [split_roles(recipe, plan) for plan in recipe.splits]
