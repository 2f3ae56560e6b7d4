"""Property tests of the proof (overlaps, gaps, unreachable workflows, monotonicity) and of the
decision table, against a brute-force reference that enumerates every combination.

Random tables are built through the real path: plain data -> `schema.RulesSpec` ->
`ruleset.compile_rules` (see tests/helpers_core.py)."""

from __future__ import annotations

import datetime as dt
import itertools
import re
from collections.abc import Sequence

import pytest
from helpers_core import (
    Cube,
    brute_matches,
    build,
    combo_of,
    combos,
    factor_name,
    in_cube,
    table_data,
    table_mapping,
    value_name,
    workflow_name,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connector.core import proof
from connector.core.evaluate import Evaluator
from connector.core.table import DecisionTable
from connector.errors import RecordError

MAX = proof.MAX_REPORTED
TODAY = dt.date(2031, 5, 17)
PROBABILITIES = [0, 10, 20, 30, 40, 50, 60, 70, 80, 90, 100]

SETTINGS = settings(max_examples=200, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])

Table = tuple[list[int], list[tuple[int, list[Cube]]], list[bool]]


# --- strategies ---------------------------------------------------------------------------------

@st.composite
def cubes_for(draw: st.DrawFn, sizes: Sequence[int]) -> Cube:
    """Per factor: mostly a non-empty subset of its values, sometimes omitted (any value),
    occasionally the empty list (a block that can never match)."""
    cube: Cube = {}
    for d, n in enumerate(sizes):
        kind = draw(st.integers(0, 11))
        if kind == 0:
            cube[d] = frozenset()
        elif kind <= 3:
            continue
        else:
            cube[d] = draw(st.frozensets(st.integers(0, n - 1), min_size=1))
    return cube


@st.composite
def tables(draw: st.DrawFn) -> Table:
    sizes = draw(st.lists(st.integers(1, 4), min_size=1, max_size=4))
    n = draw(st.integers(1, 8))
    workflows = [(draw(st.sampled_from(PROBABILITIES)),
                  draw(st.lists(cubes_for(sizes), min_size=1, max_size=3)))
                 for _ in range(n)]
    wrap = draw(st.lists(st.booleans(), min_size=n, max_size=n))
    return sizes, workflows, wrap


@st.composite
def partitions(draw: st.DrawFn) -> Table:
    """An exclusive and complete table: the space split recursively into disjoint blocks, each
    block given to one of up to 8 workflows."""
    sizes = draw(st.lists(st.integers(1, 4), min_size=1, max_size=4))
    leaves: list[list[frozenset[int]]] = []

    def split(cube: list[frozenset[int]], depth: int) -> None:
        splittable = [d for d, s in enumerate(cube) if len(s) > 1]
        if not splittable or depth >= 5 or not draw(st.booleans()):
            leaves.append(cube)
            return
        d = draw(st.sampled_from(splittable))
        values = sorted(cube[d])
        part = draw(st.frozensets(st.sampled_from(values), min_size=1,
                                  max_size=len(values) - 1))
        split(cube[:d] + [part] + cube[d + 1:], depth + 1)
        split(cube[:d] + [cube[d] - part] + cube[d + 1:], depth + 1)

    split([frozenset(range(n)) for n in sizes], 0)
    owners = draw(st.lists(st.integers(0, 7), min_size=len(leaves), max_size=len(leaves)))
    used = sorted(set(owners))
    workflows: list[tuple[int, list[Cube]]] = []
    for k in used:
        cubes = []
        for leaf, owner in zip(leaves, owners):
            if owner != k:
                continue
            omit_full = draw(st.booleans())
            cubes.append({d: s for d, s in enumerate(leaf)
                          if not (omit_full and len(s) == sizes[d])})
        workflows.append((draw(st.sampled_from(PROBABILITIES)), cubes))
    wrap = draw(st.lists(st.booleans(), min_size=len(used), max_size=len(used)))
    return sizes, workflows, wrap


def compiled(table: Table):
    sizes, workflows, wrap = table
    return build(table_data(sizes, workflows, wrap), table_mapping(len(sizes)))


# --- reading the findings back ------------------------------------------------------------------

_PART = re.compile(r"(f\d+)=(f\d+v\d+)|(f\d+) in \[([^\]]*)\]")


def parse_region(text: str, sizes: Sequence[int]) -> set[tuple[int, ...]]:
    """A finding's description of a region ('f0=f0v1, f2 in [f2v0, f2v3]', or 'every
    combination') back to the set of combinations it names."""
    allowed = [set(range(n)) for n in sizes]
    if text != "every combination":
        consumed = 0
        for m in _PART.finditer(text):
            name = m.group(1) or m.group(3)
            values = [m.group(2)] if m.group(1) else m.group(4).split(", ")
            d = int(name[1:])
            allowed[d] = {int(v.split("v")[1]) for v in values}
            assert all(v == value_name(d, int(v.split("v")[1])) for v in values), text
            consumed += len(m.group(0))
        assert consumed + 2 * (len(list(_PART.finditer(text))) - 1) == len(text), text
    return set(itertools.product(*(sorted(a) for a in allowed)))


def index_of(name: str) -> int:
    assert re.fullmatch(r"w\d+", name), name
    return int(name[1:])


def probabilities(table: Table) -> list[int]:
    return [p for p, _ in table[1]]


# --- overlaps -----------------------------------------------------------------------------------

@SETTINGS
@given(tables())
def test_overlaps_are_exactly_the_pairs_brute_force_finds(table: Table) -> None:
    sizes, workflows, _ = table
    rules = compiled(table)
    matches = brute_matches(sizes, workflows)
    pairs = {frozenset(p) for ks in matches.values() for p in itertools.combinations(ks, 2)}

    found = [f for f in proof.prove(rules) if f.kind == "overlap"]
    assert bool(found) == bool(pairs)
    assert all(f.severity == "error" for f in found)
    named = [f for f in found if f.rules]
    more = [f for f in found if not f.rules]
    reported = set()
    for f in named:
        assert len(f.rules) == 2 and f.rules[0] != f.rules[1]
        ks = {index_of(r) for r in f.rules}
        assert f.example is not None
        assert ks <= set(matches[combo_of(f.example, sizes)]), (f.message, f.example)
        m = re.search(r"both match (.*) \((\d+) combinations?\): ", f.message)
        assert m, f.message
        region = parse_region(m.group(1), sizes)
        assert int(m.group(2)) == len(region)
        assert combo_of(f.example, sizes) in region
        assert all(ks <= set(matches[c]) for c in region), f.message
        assert frozenset(ks) not in reported, "a pair reported twice"
        reported.add(frozenset(ks))
    if len(pairs) <= MAX:
        assert reported == pairs
        assert not more
    else:
        assert reported < pairs and len(reported) == MAX
        assert len(more) == 1 and f"{len(pairs) - MAX} more" in more[0].message


# --- gaps ---------------------------------------------------------------------------------------

@SETTINGS
@given(tables())
def test_gaps_are_exactly_the_unmatched_combinations(table: Table) -> None:
    sizes, workflows, _ = table
    rules = compiled(table)
    unmatched = {c for c, ks in brute_matches(sizes, workflows).items() if not ks}

    found = [f for f in proof.prove(rules) if f.kind == "gap"]
    assert bool(found) == bool(unmatched)
    assert all(f.severity == "error" for f in found)
    regions = [f for f in found if f.example is not None]
    more = [f for f in found if f.example is None]
    covered: set[tuple[int, ...]] = set()
    for f in regions:
        example = combo_of(f.example, sizes)
        assert example in unmatched, (f.message, f.example)
        m = re.fullmatch(r"no workflow matches (.*) \((\d+) combinations?\): .*", f.message)
        assert m, f.message
        region = parse_region(m.group(1), sizes)
        assert int(m.group(2)) == len(region)
        assert example in region
        assert region <= unmatched, f.message
        assert not region & covered, "two gap regions share a combination"
        covered |= region
    if more:
        assert len(regions) == MAX and len(more) == 1
        assert re.search(r"\.\.\. and \d+\+? more uncovered regions", more[0].message)
    else:
        assert covered == unmatched


@SETTINGS
@given(tables())
def test_uncovered_splits_the_gaps_into_disjoint_cubes(table: Table) -> None:
    """The function behind the gap report, untruncated: disjoint cubes whose union is exactly
    what no workflow matches."""
    sizes, workflows, _ = table
    rules = compiled(table)
    unmatched = {c for c, ks in brute_matches(sizes, workflows).items() if not ks}
    everything = tuple((1 << n) - 1 for n in sizes)
    cubes = [c for w in rules.workflows for c in w.cubes if all(c)]
    seen: set[tuple[int, ...]] = set()
    for gap in proof.uncovered(everything, cubes):
        points = set(itertools.product(*([i for i in range(n) if m >> i & 1]
                                          for n, m in zip(sizes, gap))))
        assert points, "an empty gap cube"
        assert not points & seen
        seen |= points
    assert seen == unmatched


@SETTINGS
@given(tables())
def test_compiled_cubes_are_the_written_conditions(table: Table) -> None:
    sizes, workflows, _ = table
    rules = compiled(table)
    assert [w.name for w in rules.workflows] == [workflow_name(k) for k in range(len(workflows))]
    for w, (p, cubes) in zip(rules.workflows, workflows):
        expected = [tuple(sum(1 << i for i in c.get(d, range(n))) for d, n in enumerate(sizes))
                    for c in cubes]
        assert list(w.cubes) == expected
        assert w.probability == p


# --- unreachable --------------------------------------------------------------------------------

@SETTINGS
@given(tables())
def test_unreachable_iff_a_workflow_matches_nothing(table: Table) -> None:
    sizes, workflows, _ = table
    rules = compiled(table)
    matches = brute_matches(sizes, workflows)
    reached = {k for ks in matches.values() for k in ks}
    expected = {workflow_name(k) for k in range(len(workflows)) if k not in reached}
    found = [f for f in proof.prove(rules) if f.kind == "unreachable"]
    assert all(f.severity == "error" and len(f.rules) == 1 for f in found)
    assert [f.rules[0] for f in found] == sorted(
        {f.rules[0] for f in found}, key=lambda n: index_of(n)), "reported once each, in order"
    assert {f.rules[0] for f in found} == expected


# --- monotonicity -------------------------------------------------------------------------------

def brute_breaks(sizes: Sequence[int], table: Table) -> set[tuple[int, int, int]]:
    """(a, b, d): a combination matched by workflow a, the same with factor d one value worse
    matched by workflow b, and a's probability lower than b's."""
    p = probabilities(table)
    matches = brute_matches(sizes, table[1])
    out = set()
    for combo, ks in matches.items():
        for d in range(len(sizes)):
            if combo[d] + 1 >= sizes[d]:
                continue
            worse = combo[:d] + (combo[d] + 1,) + combo[d + 1:]
            out |= {(a, b, d) for a in ks for b in matches[worse] if p[a] < p[b]}
    return out


@SETTINGS
@given(tables())
def test_monotonicity_warnings_are_exactly_the_breaks(table: Table) -> None:
    sizes, workflows, _ = table
    rules = compiled(table)
    p = probabilities(table)
    breaks = brute_breaks(sizes, table)
    found = [f for f in proof.prove(rules) if f.kind == "monotonicity"]
    assert bool(found) == bool(breaks)
    reported = set()
    for f in found:
        assert f.severity == "warning"
        a, b = (index_of(r) for r in f.rules)
        m = re.match(r"(f\d+)=(f\d+v\d+) is better than (f\d+)=(f\d+v\d+), yet gives", f.message)
        assert m, f.message
        d = int(m.group(1)[1:])
        assert m.group(3) == factor_name(d)
        better = combo_of(f.example, sizes)
        assert m.group(2) == value_name(d, better[d])
        assert m.group(4) == value_name(d, better[d] + 1)
        worse = better[:d] + (better[d] + 1,) + better[d + 1:]
        assert any(in_cube(better, c) for c in workflows[a][1]), f.message
        assert any(in_cube(worse, c) for c in workflows[b][1]), f.message
        assert p[a] < p[b]
        assert (a, b, d) in breaks
        reported.add((a, b, d))
    assert len(reported) == len(found)
    if len(breaks) <= MAX:
        assert reported == breaks
    else:
        assert len(reported) == MAX


# --- the decision table and evaluation ----------------------------------------------------------

def spelled(d: int, i: int, variant: int) -> str:
    """The way a CRM might spell a value: any case, with stray blanks."""
    name = value_name(d, i)
    return [name, name.upper(), f"  {name.title()} "][variant % 3]


@SETTINGS
@given(tables())
def test_match_returns_every_matching_workflow(table: Table) -> None:
    """On any table, valid or not: the table's answer is the brute force's, and a record that
    does not fall into exactly one workflow is an error for that record alone."""
    sizes, workflows, _ = table
    rules = compiled(table)
    dtable = DecisionTable(rules)
    evaluator = Evaluator(rules)
    for n, (combo, ks) in enumerate(brute_matches(sizes, workflows).items()):
        assert dtable.match(combo) == tuple(ks)
        assert dtable.match(combo) == tuple(ks), "the remembered answer differs"
        record = {factor_name(d): spelled(d, i, n) for d, i in enumerate(combo)}
        if len(ks) == 1:
            out = evaluator.evaluate(record, TODAY)
            assert out.rule == workflow_name(ks[0])
        else:
            with pytest.raises(RecordError) as err:
                evaluator.evaluate(record, TODAY)
            text = str(err.value)
            if ks:
                assert all(workflow_name(k) in text for k in ks), text
            else:
                assert "no workflow matches" in text


@SETTINGS
@given(partitions())
def test_exclusive_complete_tables_prove_clean_and_pick_brute_forces_workflow(
        table: Table) -> None:
    sizes, workflows, _ = table
    rules = compiled(table)
    p = probabilities(table)
    assert [f for f in proof.prove(rules) if f.severity == "error"] == []
    dtable = DecisionTable(rules)
    evaluator = Evaluator(rules)
    matches = brute_matches(sizes, workflows)
    for n, combo in enumerate(combos(sizes)):
        (k,) = matches[combo]
        assert dtable.match(combo) == (k,)
        assert [w.name for w in dtable.workflows_of(combo)] == [workflow_name(k)]
        record = {"id": f"006{n}", "probability": None, "rule": None,
                  **{factor_name(d): spelled(d, i, n) for d, i in enumerate(combo)}}
        out = evaluator.evaluate(record, TODAY)
        assert out.rule == workflow_name(k)
        assert out.values["probability"] == p[k]
        assert out.factors == {factor_name(d): value_name(d, i) for d, i in enumerate(combo)}
        assert out.changes == {"probability": p[k], "rule": workflow_name(k)}
        assert out.record_id == f"006{n}"
    rows = list(dtable.rows())
    assert len(rows) == dtable.combinations() == len(matches)
    assert [tuple(value_name(d, i) for d, i in enumerate(c)) for c in combos(sizes)] == [
        r[0] for r in rows]


# --- explicit cases the random tables rarely reach ----------------------------------------------

def test_any_with_no_blocks_is_unreachable() -> None:
    sizes = [2]
    rules = build({
        "factors": {"f0": {"field": "f0", "values": ["f0v0", "f0v1"]}},
        "workflows": [
            {"name": "w0", "when": {"any": []}, "set": {"probability": 10}},
            {"name": "w1", "when": {}, "set": {"probability": 20}},
        ]}, table_mapping(len(sizes)))
    found = proof.prove(rules)
    assert [(f.kind, f.rules) for f in found if f.severity == "error"] == [
        ("unreachable", ("w0",))]


def test_base_condition_and_any_blocks_intersect() -> None:
    """`when: {f0: x, any: [...]}` is f0 = x AND (one of the blocks)."""
    rules = build({
        "factors": {"f0": {"field": "f0", "values": ["f0v0", "f0v1"]},
                    "f1": {"field": "f1", "values": ["f1v0", "f1v1", "f1v2"]}},
        "workflows": [
            {"name": "w0", "when": {"f0": "f0v0", "any": [{"f1": "f1v0"}, {"f1": "f1v2"}]},
             "set": {"probability": 50}},
            {"name": "w1", "when": {"any": [{"f0": "f0v1"}, {"f1": "f1v1"}]},
             "set": {"probability": 40}},
        ]}, table_mapping(2))
    table = DecisionTable(rules)
    expected = {(0, 0): (0,), (0, 1): (1,), (0, 2): (0,), (1, 0): (1,), (1, 1): (1,),
                (1, 2): (1,)}
    assert {c: table.match(c) for c in combos([2, 3])} == expected
    assert [f for f in proof.prove(rules) if f.severity == "error"] == []


def test_many_overlapping_pairs_are_truncated_with_a_count() -> None:
    n = 8  # 8 workflows matching everything: 28 pairs
    rules = build({
        "factors": {"f0": {"field": "f0", "values": ["f0v0"]}},
        "workflows": [{"name": workflow_name(k), "when": {}, "set": {"probability": 10}}
                      for k in range(n)]}, table_mapping(1))
    found = [f for f in proof.prove(rules) if f.kind == "overlap"]
    assert len(found) == MAX + 1
    assert f"{n * (n - 1) // 2 - MAX} more" in found[-1].message
