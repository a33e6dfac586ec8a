"""The default recipe and its five splits: every generator has one role, every kind is there."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

import pytest

from osma_cli.errors import UsageError
from osma_cli.evaluation.sources import UNKNOWN_KINDS
from osma_cli.zoo.recipe import DATASETS, SplitPlan, default_recipe
from osma_cli.zoo.splits import KNOWN, all_roles, split_roles

RECIPE = default_recipe()
SPECS = {spec.name: spec for spec in RECIPE.generators}


def test_the_zoo_has_the_generators_the_issue_asks_for():
    assert len(RECIPE.generators) >= 20
    assert len(SPECS) == len(RECIPE.generators)
    families = Counter(spec.family for spec in RECIPE.generators)
    assert len(families) >= 5
    for family in families:
        seeds = {
            s.seed for s in RECIPE.generators if s.family == family and s.dataset == RECIPE.family_plan(family).dataset
        }
        assert len(seeds) >= 3, family
    for dataset in DATASETS:
        assert len({s.family for s in RECIPE.generators if s.dataset == dataset}) >= 2
    assert any(spec.adversarial for spec in RECIPE.generators)


def test_generator_seeds_come_from_the_name():
    a, b = RECIPE.generators[0], RECIPE.generators[1]
    assert a.rng_seed("init") == replace(a).rng_seed("init")
    assert a.rng_seed("init") != b.rng_seed("init") != a.rng_seed("data")


@pytest.mark.parametrize("roles", all_roles(RECIPE), ids=lambda r: r.name)
def test_each_split_partitions_the_generators(roles):
    assert not set(roles.known) & set(roles.unknown)
    assert set(roles.known) | set(roles.unknown) == set(SPECS)
    assert 0.35 <= len(roles.known) / len(SPECS) <= 0.6  # about half known
    kinds = Counter(roles.unknown.values())
    assert set(kinds) == set(UNKNOWN_KINDS)
    known = [SPECS[name] for name in roles.known]
    for name, kind in roles.unknown.items():
        spec = SPECS[name]
        same_family = [k for k in known if k.family == spec.family]
        if kind == "seed":
            assert any(k.dataset == spec.dataset for k in same_family)
        elif kind == "dataset":
            assert same_family and all(k.dataset != spec.dataset for k in same_family)
        else:
            assert kind == "arch" and not same_family
            assert any(k.dataset == spec.dataset for k in known)


def test_splits_differ_and_every_generator_is_unknown_somewhere():
    roles = all_roles(RECIPE)
    assert len(roles) == 5
    assert len({r.known for r in roles}) == 5
    for name in SPECS:
        assert any(r.role(name) != KNOWN for r in roles)
    left_out = {r.name: {SPECS[n].family for n, k in r.unknown.items() if k == "arch"} for r in roles}
    assert len({frozenset(v) for v in left_out.values()}) == 5


def test_a_plan_without_some_kind_is_refused():
    plan = RECIPE.splits[0]
    with pytest.raises(UsageError, match="unseen seed 5"):
        split_roles(RECIPE, replace(plan, unseen_seed={**plan.unseen_seed, "tconv": 5}))
    no_seed_unknowns = SplitPlan("x", plan.unknown_family, {})
    with pytest.raises(UsageError, match="kind seed"):
        split_roles(RECIPE, no_seed_unknowns)
    with pytest.raises(UsageError, match="not in the zoo"):
        split_roles(RECIPE, replace(plan, unknown_family="gan"))


def test_unknown_names_get_suggestions():
    with pytest.raises(UsageError, match="did you mean"):
        RECIPE.generator("tconv-camera-s0")
