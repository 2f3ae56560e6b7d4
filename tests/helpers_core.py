"""Builders shared by the core's unit and property tests: a rule set from plain Python data,
through the same path as the rule files (the pydantic schema, then `compile_rules`)."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from connector.core import schema
from connector.core.findings import Finding, Where
from connector.core.mapping import Mapping
from connector.core.ruleset import RuleSet, compile_mapping, compile_rules

# One factor's allowed values in one AND-block: factor index -> allowed value indices.
# A factor missing from the dict is omitted (any value).
Cube = dict[int, frozenset[int]]


def nowhere(_path: object) -> Where:
    return Where()


def make_mapping(fields: Iterable[str], writeback: Sequence[str] = (),
                 types: dict[str, str] | None = None) -> Mapping:
    """A Salesforce mapping whose canonical names are also the CRM field names."""
    spec = schema.MappingSpec.model_validate({
        "crm": "salesforce", "object": "Opportunity", "id": "Id", "modified": "SystemModstamp",
        "fields": {f: f for f in fields}, "writeback": list(writeback), "types": types or {},
    })
    mapping, problems = compile_mapping(spec, nowhere)
    assert not problems, problems
    return mapping


def compile_data(data: dict[str, Any], mapping: Mapping) -> tuple[RuleSet | None, list[Finding]]:
    return compile_rules(schema.RulesSpec.model_validate(data), mapping, nowhere)


def build(data: dict[str, Any], mapping: Mapping) -> RuleSet:
    """Compile rules that must compile, with no error (warnings are allowed)."""
    rules, findings = compile_data(data, mapping)
    errors = [f for f in findings if f.severity == "error"]
    assert rules is not None and not errors, errors
    return rules


# --- the random tables of the proof's property tests -------------------------------------------

def factor_name(d: int) -> str:
    return f"f{d}"


def value_name(d: int, i: int) -> str:
    return f"f{d}v{i}"


def workflow_name(k: int) -> str:
    return f"w{k}"


def table_data(sizes: Sequence[int], workflows: Sequence[tuple[int, list[Cube]]],
               wrap: Sequence[bool] | None = None) -> dict[str, Any]:
    """Rules data for factors of `sizes` values and workflows given as (probability, cubes).
    A one-cube workflow is written `when: {...}` unless `wrap[k]`, then `when: {any: [...]}`."""
    factors = {factor_name(d): {"field": factor_name(d),
                                "values": [value_name(d, i) for i in range(n)]}
               for d, n in enumerate(sizes)}

    def block(cube: Cube) -> dict[str, Any]:
        return {factor_name(d): [value_name(d, i) for i in sorted(allowed)]
                for d, allowed in sorted(cube.items())}

    wfs = []
    for k, (p, cubes) in enumerate(workflows):
        if len(cubes) == 1 and not (wrap and wrap[k]):
            when: dict[str, Any] = block(cubes[0])
        else:
            when = {"any": [block(c) for c in cubes]}
        wfs.append({"name": workflow_name(k), "when": when, "set": {"probability": p}})
    return {"factors": factors, "workflows": wfs}


def table_mapping(n_factors: int) -> Mapping:
    return make_mapping([factor_name(d) for d in range(n_factors)] + ["probability", "rule"],
                        writeback=["probability", "rule"])


def combos(sizes: Sequence[int]) -> Iterator[tuple[int, ...]]:
    return itertools.product(*(range(n) for n in sizes))


def in_cube(combo: Sequence[int], cube: Cube) -> bool:
    return all(combo[d] in allowed for d, allowed in cube.items())


def brute_matches(sizes: Sequence[int], workflows: Sequence[tuple[int, list[Cube]]]
                  ) -> dict[tuple[int, ...], list[int]]:
    """Every combination -> the indices of the workflows matching it, by enumeration."""
    return {combo: [k for k, (_, cubes) in enumerate(workflows)
                    if any(in_cube(combo, c) for c in cubes)]
            for combo in combos(sizes)}


def combo_of(example: dict[str, str], sizes: Sequence[int]) -> tuple[int, ...]:
    """A finding's example ({factor: value}) back to value indices; every factor must be named."""
    assert set(example) == {factor_name(d) for d in range(len(sizes))}, example
    out = []
    for d, n in enumerate(sizes):
        names = [value_name(d, i) for i in range(n)]
        assert example[factor_name(d)] in names, example
        out.append(names.index(example[factor_name(d)]))
    return tuple(out)
