"""Clearing rules as plug-ins: the one list of the rules a round can be cleared by.

A rule is a `ClearingRule` (optalloc.clearing.rules holds the interface and the built-in ones: priority, welfare,
pro_rata). This module is only the registry, light enough for the settings and the command line to read without
loading the engine: the settings' `clearing_rule` is checked against it, the command line offers its names, and the
docs list them with their descriptions. A new rule is one class and one `register` call, in any module:

    from optalloc.clearing.rules import ClearingRule
    from optalloc.rules import register

    @register
    class LowestFeeFirst(ClearingRule):
        name, description, methods = "lowest_fee_first", "granted starting with the lowest fee", ("lowest_fee_first",)
        def solve(self, d, options, method): ...
"""

from __future__ import annotations

from importlib import import_module

# name -> the rule object, or "module:Class" for a built-in (imported when first used)
_RULES: dict[str, object] = {
    "priority": "optalloc.clearing.rules:PriorityRule",
    "welfare": "optalloc.clearing.rules:WelfareRule",
    "pro_rata": "optalloc.clearing.rules:ProRataRule",
}
BUILT_IN = tuple(_RULES)
_BUILT_IN_PATHS = dict(_RULES)
# What each built-in does, for the settings' error messages and the docs without importing the engine.
DESCRIPTIONS = {
    "priority": "granted starting with the highest fee (then earliest, then smallest request_id), each request as much as fits, "
                "its min_cube or nothing (the default)",
    "welfare": "the most fee x cube in total (an LP, or a MIP with minimums); may reject a higher fee to fit lower ones",
    "pro_rata": "fee levels from the top; the level where the pool runs out is shared in proportion to max_cube (single-pool rounds)",
}
DEFAULT = "priority"


def names() -> list[str]:
    """Every registered rule's name, in registration order (the built-ins first)."""
    return list(_RULES)


def get(name: str):
    """The rule called `name` (a KeyError names the registered ones)."""
    if name not in _RULES:
        raise KeyError(f"no clearing rule {name!r} (registered: {', '.join(_RULES)})")
    rule = _RULES[name]
    if isinstance(rule, str):
        module, cls = rule.split(":")
        rule = _RULES[name] = getattr(import_module(module), cls)()
    return rule


def register(rule):
    """Register a rule (a ClearingRule instance, or its class: it is instantiated), under its `name`; returns what it
    was given, so it can decorate a class."""
    obj = rule() if isinstance(rule, type) else rule
    if not getattr(obj, "name", None):
        raise ValueError("a clearing rule needs a name")
    if obj.name in BUILT_IN and f"{type(obj).__module__}:{type(obj).__qualname__}" != _BUILT_IN_PATHS[obj.name]:
        # a stored period's settings name a built-in: it must mean the same rule in every process
        raise ValueError(f"{obj.name!r} is a built-in rule; register yours under another name")
    _RULES[obj.name] = obj
    DESCRIPTIONS[obj.name] = getattr(obj, "description", "")
    return rule


def unregister(name: str) -> None:
    """Remove a rule registered with `register` (the built-ins stay)."""
    if name in BUILT_IN:
        raise ValueError(f"{name!r} is a built-in rule")
    _RULES.pop(name, None)
    DESCRIPTIONS.pop(name, None)
