"""The decision table: which workflow a combination of factor values falls into, and the
effective table, one row per combination, for `table`."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

from connector.core.ruleset import RuleSet, Workflow, probability_name


class DecisionTable:
    """Looks up the workflows matching a combination (a tuple of value indices, one per factor).

    Explicit workflows are matched against their cubes, once per distinct combination (the
    answer is remembered: real data has few distinct combinations). Weight-generated tables
    compute the SPEC's formula instead.
    """

    def __init__(self, rules: RuleSet) -> None:
        self.rules = rules
        self.sizes = rules.sizes
        self._cubes = [(k, cube) for k, w in enumerate(rules.workflows) for cube in w.cubes]
        # For each factor and value, the set of cubes that allow it, as the bits of an int: a
        # combination's cubes are the AND of one such set per factor (microseconds, where
        # scanning 600 cubes took most of a millisecond).
        self._allow = [[sum(1 << j for j, (_, cube) in enumerate(self._cubes)
                            if cube[d] >> i & 1) for i in range(n)]
                       for d, n in enumerate(self.sizes)]
        self._by_name = {w.name: k for k, w in enumerate(rules.workflows)}
        self._memo: dict[tuple[int, ...], tuple[int, ...]] = {}

    def match(self, combo: tuple[int, ...]) -> tuple[int, ...]:
        hit = self._memo.get(combo)
        if hit is not None:
            return hit
        if self.rules.weights is not None:
            p = self.rules.weights.probability(combo, self.sizes)
            hit = (self._by_name[probability_name(p)],)
        else:
            bits = -1
            for allowed, i in zip(self._allow, combo):
                bits &= allowed[i]
            found: list[int] = []
            while bits:  # cubes are in workflow order: the workflows come out in order
                low = bits & -bits
                k = self._cubes[low.bit_length() - 1][0]
                if not found or found[-1] != k:
                    found.append(k)
                bits ^= low
            hit = tuple(found)
        if len(self._memo) < 1_000_000:
            self._memo[combo] = hit
        return hit

    def workflows_of(self, combo: tuple[int, ...]) -> list[Workflow]:
        return [self.rules.workflows[k] for k in self.match(combo)]

    def rows(self) -> Iterator[tuple[tuple[str, ...], list[Workflow]]]:
        """Every combination, in best-first order, with the workflows it falls into."""
        factors = self.rules.factors
        for combo in itertools.product(*(range(n) for n in self.sizes)):
            yield (tuple(f.values[i] for f, i in zip(factors, combo)), self.workflows_of(combo))

    def combinations(self) -> int:
        total = 1
        for n in self.sizes:
            total *= n
        return total
