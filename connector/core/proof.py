"""The proof that exactly one workflow fires for every combination of factor values.

It never walks the product of the factors' values (10 factors of 6 values are 60 million
combinations). It works on cubes, one set of values per factor, kept as bit masks: two cubes
overlap when every factor's masks intersect; the gaps are what is left of the whole space after
splitting it along the workflows' cubes.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from connector.core.findings import Finding
from connector.core.ruleset import Cube, Factor, RuleSet
from connector.errors import Text

MAX_REPORTED = 20  # per kind of problem; the message says how many more there are


def prove(rules: RuleSet) -> list[Finding]:
    """Overlaps, gaps and unreachable workflows (errors), monotonicity breaks (warnings)."""
    if rules.weights is not None:
        return _weights_monotonicity(rules)
    findings: list[Finding] = []
    findings += unreachable(rules)
    findings += overlaps(rules)
    findings += gaps(rules)
    findings += monotonicity(rules)
    return findings


def _example(factors: Sequence[Factor], cube: Cube) -> dict[str, str]:
    """The best combination inside a cube: the lowest set bit of each factor's mask."""
    return {f.name: f.values[(m & -m).bit_length() - 1] for f, m in zip(factors, cube)}


def _describe(factors: Sequence[Factor], cube: Cube) -> str:
    parts = []
    for f, m in zip(factors, cube):
        if m == f.full:
            continue
        vals = [v for i, v in enumerate(f.values) if m >> i & 1]
        parts.append(f"{f.name}={vals[0]}" if len(vals) == 1 else
                     f"{f.name} in [{', '.join(vals)}]")
    return ", ".join(parts) or Text("every combination")


def describe_cubes(factors: Sequence[Factor], cubes: Sequence[Cube]) -> str:
    """A workflow's condition in words: 'stage=Prospecting or stage in [A, B], size=large'."""
    described = [_describe(factors, c) for c in cubes if all(c)]
    if not described:
        return Text("nothing")
    return _either(described)


def _either(described: Sequence[str]) -> str:
    """'a or b or c', joined in halves: a workflow of a thousand `any:` blocks nests ten
    deep when it is said in Spanish, not a thousand."""
    if len(described) == 1:
        return described[0]
    half = len(described) // 2
    return Text("{either} or {other}", either=_either(described[:half]),
                other=_either(described[half:]))


def _combinations(cube: Cube) -> Text:
    n = _count(cube)
    if n == 1:
        return Text("1 combination")
    return Text("{count} combinations", count=n)


def _count(cube: Cube) -> int:
    n = 1
    for m in cube:
        n *= m.bit_count()
    return n


def unreachable(rules: RuleSet) -> list[Finding]:
    out: list[Finding] = []
    for w in rules.workflows:
        if not any(all(cube) for cube in w.cubes):
            out.append(Finding.at(w.where, "error", "unreachable",
                                  Text("workflow '{workflow}' matches no combination of factor "
                                       "values (an empty list of values, or 'any: []'?)",
                                       workflow=w.name), (w.name,)))
    return out


def _live_cubes(rules: RuleSet) -> list[tuple[int, Cube]]:
    return [(k, c) for k, w in enumerate(rules.workflows) for c in w.cubes if all(c)]


def overlaps(rules: RuleSet) -> list[Finding]:
    """Every pair of workflows that share a combination, with an example of one."""
    cubes = _live_cubes(rules)
    seen: dict[tuple[int, int], Cube] = {}
    for x in range(len(cubes)):
        kx, cx = cubes[x]
        for y in range(x + 1, len(cubes)):
            ky, cy = cubes[y]
            if kx == ky or (kx, ky) in seen:
                continue
            for a, b in zip(cx, cy):
                if not a & b:
                    break
            else:
                seen[(kx, ky)] = tuple(a & b for a, b in zip(cx, cy))
    out: list[Finding] = []
    for (kx, ky), common in seen.items():
        if len(out) == MAX_REPORTED:
            break
        wx, wy = rules.workflows[kx], rules.workflows[ky]
        out.append(Finding.at(
            wy.where, "error", "overlap",
            Text("workflows '{first}' (line {line}) and '{second}' both match {condition} "
                 "({combinations}): make their conditions exclusive", first=wx.name,
                 line=wx.where.line, second=wy.name, condition=_describe(rules.factors, common),
                 combinations=_combinations(common)),
            (wx.name, wy.name), _example(rules.factors, common)))
    if len(seen) > MAX_REPORTED:
        out.append(Finding("error", "overlap", Text("... and {count} more overlapping pairs",
                                                    count=len(seen) - MAX_REPORTED)))
    return out


def _classes(space_d: int, masks: list[int]) -> list[int]:
    """The values of one factor grouped so that no cube's mask straddles two groups."""
    groups: list[int] = []
    for m in masks:
        m &= space_d
        for g in [g for g in groups if g & m]:
            groups.remove(g)
            m |= g
        groups.append(m)
    return groups


def uncovered(space: Cube, cubes: list[Cube]) -> Iterator[Cube]:
    """The parts of `space` that no cube covers, as disjoint cubes (a lazy cube subtraction)."""
    inside = [c for c in cubes if all(a & b for a, b in zip(c, space))]
    if not inside:
        yield space
        return
    for c in inside:
        if all(s & ~m == 0 for s, m in zip(space, c)):
            return  # one cube covers the whole space
    # A clean cut first: a factor whose values fall in groups no cube straddles. The values no
    # cube allows are a gap outright, and each group is solved on its own without splitting any
    # cube (splitting along one cube's edge cuts the others into many pieces: a million calls
    # for 500 workflows, where clean cuts need ten thousand).
    for d, s in enumerate(space):
        if s & (s - 1) == 0:
            continue
        groups = _classes(s, [c[d] for c in inside])
        covered = 0
        for g in groups:
            covered |= g
        if len(groups) > 1 or covered != s:
            if s & ~covered:
                yield space[:d] + (s & ~covered,) + space[d + 1:]
            for g in groups:
                yield from uncovered(space[:d] + (g,) + space[d + 1:],
                                     [c for c in inside if c[d] & g])
            return
    # No clean cut: split where the most restrictive cube cuts the space.
    cut = min(inside, key=lambda c: sum((s & m).bit_count() for s, m in zip(space, c)))
    for d, (s, m) in enumerate(zip(space, cut)):
        if s & ~m:
            yield from uncovered(space[:d] + (s & m,) + space[d + 1:], inside)
            yield from uncovered(space[:d] + (s & ~m,) + space[d + 1:], inside)
            return


def gaps(rules: RuleSet) -> list[Finding]:
    everything = tuple(f.full for f in rules.factors)
    cubes = [c for _, c in _live_cubes(rules)]
    out: list[Finding] = []
    more = 0
    for gap in uncovered(everything, cubes):
        if len(out) == MAX_REPORTED:
            more += 1
            if more > 10_000:
                break
            continue
        out.append(Finding("error", "gap",
                           Text("no workflow matches {condition} ({combinations}): add a "
                                "workflow or widen one", condition=_describe(rules.factors, gap),
                                combinations=_combinations(gap)),
                           example=_example(rules.factors, gap)))
    if more:
        counted = f"{more}+" if more > 10_000 else more  # the search stopped counting there
        out.append(Finding("error", "gap", Text("... and {count} more uncovered regions",
                                                count=counted)))
    return out


def monotonicity(rules: RuleSet) -> list[Finding]:
    """A better value of one factor, all else equal, must not give a lower probability.

    For workflows A (lower probability) and B (higher): a break needs A and B to meet on every
    factor but one, f, where A holds a value just better than one B holds. Checking adjacent
    values is enough: the order is transitive.
    """
    cubes = [(rules.workflows[k], c) for k, c in _live_cubes(rules)]
    found: dict[tuple[str, str, str], Finding] = {}
    for wa, ca in cubes:
        pa = wa.probability
        if pa is None:
            continue
        for wb, cb in cubes:
            pb = wb.probability
            if pb is None or pa >= pb:
                continue
            apart = [d for d, (a, b) in enumerate(zip(ca, cb)) if not a & b]
            if len(apart) > 1:
                continue  # apart on two factors: never "all else equal"
            for d in apart or range(len(ca)):
                better = ca[d] & (cb[d] >> 1)  # A has value i, B has value i+1
                if not better:
                    continue
                i = (better & -better).bit_length() - 1
                f = rules.factors[d]
                key = (wa.name, wb.name, f.name)
                if key in found:
                    continue
                point = [a & b for a, b in zip(ca, cb)]
                point[d] = 1 << i
                example = _example(rules.factors, tuple(point))
                found[key] = Finding.at(
                    wa.where, "warning", "monotonicity",
                    Text("{factor}={better} is better than {factor}={worse}, yet gives "
                         "{low} % ('{lower}') where the worse value gives {high} % ('{higher}'), "
                         "all else equal", factor=f.name, better=f.values[i],
                         worse=f.values[i + 1], low=_pct(pa), lower=wa.name, high=_pct(pb),
                         higher=wb.name), (wa.name, wb.name), example)
    return list(found.values())[:MAX_REPORTED]


def _pct(value: object) -> str:
    return format(value, "f") if value is not None else "?"


def _weights_monotonicity(rules: RuleSet) -> list[Finding]:
    """A generated table is exclusive and complete by construction; only a negative weight can
    make a better value score lower, and only when the factor has values to choose between and
    the probability has room to move."""
    weights = rules.weights
    assert weights is not None
    if weights.maximum <= weights.minimum:
        return []
    return [
        Finding("warning", "monotonicity",
                Text("factor '{factor}' has a negative weight: its better values lower the "
                     "probability", factor=f.name))
        for f, w in zip(rules.factors, weights.weights) if w < 0 and len(f.values) > 1]
