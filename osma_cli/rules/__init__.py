"""Open-set scoring rules of a reference store, by name: one module per rule, one registry.

``get_rule("mahalanobis", shrinkage=0.2)`` builds a rule; ``list_rules()`` names them. A
store records its rule's name and settings (``OpenSetRule.spec``), and stores written before
rules existed are ``fang`` stores. A new rule is one module with an ``OpenSetRule`` subclass
plus one line in ``_RULES`` below.
"""

from __future__ import annotations

from osma_cli.errors import UsageError
from osma_cli.names import unknown_name
from osma_cli.rules.base import STATISTICS, FittedRule, GeneratorStats, OpenSetRule, ScoredBatch
from osma_cli.rules.fang import FangRule
from osma_cli.rules.gmm import GMMRule
from osma_cli.rules.mahalanobis import MahalanobisRule

DEFAULT_RULE = "fang"
_RULES: dict[str, type[OpenSetRule]] = {}


def register_rule(cls: type[OpenSetRule]) -> type[OpenSetRule]:
    """Register a rule class under its ``name``; duplicates are refused."""
    if not cls.name:
        raise UsageError(f"{cls.__name__} has no name")
    if cls.name in _RULES:
        raise UsageError(f"a rule named {cls.name!r} is already registered ({_RULES[cls.name].__name__})")
    _RULES[cls.name] = cls
    return cls


for _cls in (FangRule, MahalanobisRule, GMMRule):
    register_rule(_cls)


def list_rules() -> list[str]:
    return sorted(_RULES)


def get_rule(name: str = DEFAULT_RULE, **params) -> OpenSetRule:
    """The rule registered under ``name`` with settings ``params``; unknown names get close matches."""
    try:
        cls = _RULES[name]
    except KeyError:
        raise unknown_name("rule", name, _RULES, listing="rules") from None
    try:
        return cls(**params)
    except TypeError as exc:
        raise UsageError(f"rule {name!r} does not take {params!r}: {exc}") from None


def rule_from_spec(spec: dict | None) -> OpenSetRule:
    """A rule from its saved ``{"name": ..., "params": {...}}``; None (old stores) is ``fang``."""
    if not spec:
        return get_rule(DEFAULT_RULE)
    return get_rule(str(spec.get("name", DEFAULT_RULE)), **dict(spec.get("params") or {}))


__all__ = [
    "DEFAULT_RULE",
    "STATISTICS",
    "FittedRule",
    "GeneratorStats",
    "OpenSetRule",
    "ScoredBatch",
    "get_rule",
    "list_rules",
    "register_rule",
    "rule_from_spec",
]
