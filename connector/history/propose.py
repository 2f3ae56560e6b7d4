"""`calibrate --propose`: the table the evidence asks for, written beside the rules, never
imposed.

Only numbers change, so the workflows' conditions, and with them `check`'s proof that exactly
one workflow takes every combination, stay as they were:

- workflows: each one's probability becomes its observed win rate, made monotone by pooling
  adjacent violators (weighted by deals) along the workflows' order, rounded to a whole
  percent, clamped to 1..99 (0 and 100 are the closed states). The order: by the current
  probability, best first, which is the factors' best-first order wherever the current table is
  monotone (check warns where it is not); workflows sharing a probability are ordered by the
  mean score of the combinations they hold (the weights formula's score, equal weights), so a
  workflow of better factor values comes first. A workflow with fewer deals than calibrate's
  minimum keeps its number, moved only as far as the order needs.
- a `probability: weights` spec: min, max and the weights are fitted by weighted least squares
  of the observed rate per combination on the factors' scores (weights at least 0, so a better
  value never lowers the probability), min and max rounded to the spec's step.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import yaml

from connector.core.ruleset import Weights, clamp, round_up_half, score
from connector.errors import ConfigurationError, Text
from connector.files import yaml_files
from connector.history.calibrate import MINIMUM_DEALS, Counts, weight
from connector.history.source import Plan

LOWEST, HIGHEST = Fraction(1), Fraction(99)


def pool_adjacent_violators(values: list[Fraction], weights: list[Fraction]) -> list[Fraction]:
    """The weighted least-squares fit that never increases along the list."""
    blocks: list[list[Any]] = []  # [weighted sum, weight, how many]
    for v, w in zip(values, weights):
        blocks.append([v * w, w, 1])
        while len(blocks) > 1 and blocks[-2][0] / blocks[-2][1] < blocks[-1][0] / blocks[-1][1]:
            s, w2, n = blocks.pop()
            blocks[-1][0] += s
            blocks[-1][1] += w2
            blocks[-1][2] += n
    out: list[Fraction] = []
    for s, w, n in blocks:
        out += [s / w] * n
    return out


@dataclass(frozen=True)
class Proposal:
    """New numbers: per workflow (name -> percent), or a weights spec."""

    workflows: dict[str, Fraction]
    weights: Weights | None
    weight_names: tuple[str, ...] = ()

    def forecast(self, plan: Plan) -> Callable[[tuple[int, ...]], Fraction]:
        """The proposed table's probability (0..1) of a combination."""
        if self.weights is not None:
            weights, sizes = self.weights, plan.rules.sizes
            return lambda combo: weights.probability(combo, sizes) / 100
        names = [w.name for w in plan.rules.workflows]
        return lambda combo: self.workflows[names[plan.workflow(combo)]] / 100


def _mean_scores(plan: Plan) -> list[Fraction]:
    sizes = plan.rules.sizes
    total = [Fraction(0)] * len(plan.rules.workflows)
    count = [0] * len(plan.rules.workflows)
    for values, ws in plan.table.rows():
        if len(ws) != 1:
            continue
        combo = tuple(f.values.index(v) for f, v in zip(plan.rules.factors, values))
        k = plan.workflow(combo)
        total[k] += sum((score(i, n) for i, n in zip(combo, sizes)), Fraction(0))
        count[k] += 1
    return [t / c if c else Fraction(0) for t, c in zip(total, count)]


def propose(plan: Plan, counts: Counts) -> Proposal:
    if plan.rules.weights is not None:
        return _propose_weights(plan, counts)
    rules = plan.rules
    n = len(rules.workflows)
    deals = [Fraction(0)] * n
    wins = [Fraction(0)] * n
    for key, c in counts.items():
        k = plan.workflow(key[0])
        deals[k] += weight(key, c)
        if key[2]:
            wins[k] += weight(key, c)
    means = _mean_scores(plan)
    current = [Fraction(w.probability or 0) for w in rules.workflows]
    order = sorted(range(n), key=lambda k: (-current[k], -means[k]))
    seen = [k for k in order if deals[k] >= MINIMUM_DEALS]
    fitted = dict(zip(seen, pool_adjacent_violators([100 * wins[k] / deals[k] for k in seen],
                                                    [deals[k] for k in seen])))
    new: dict[str, Fraction] = {}
    above = HIGHEST
    for pos, k in enumerate(order):
        if k in fitted:
            p = fitted[k]
        else:  # no evidence: keep the number, between its neighbours' fitted values
            below = max((fitted[j] for j in order[pos + 1:] if j in fitted), default=LOWEST)
            p = clamp(current[k], below, above)
        p = clamp(round_up_half(p, Fraction(1)), LOWEST, HIGHEST)
        p = min(p, above)  # rounding never breaks the order
        above = p
        new[rules.workflows[k].name] = p
    return Proposal(new, None)


def _propose_weights(plan: Plan, counts: Counts) -> Proposal:
    from scipy.optimize import lsq_linear

    rules = plan.rules
    spec = rules.weights
    assert spec is not None
    sizes = rules.sizes
    per: dict[tuple[int, ...], list[Fraction]] = {}
    for key, c in counts.items():
        s = per.setdefault(key[0], [Fraction(0), Fraction(0)])
        s[0] += weight(key, c)
        if key[2]:
            s[1] += weight(key, c)
    if not per:
        raise ConfigurationError(Text("no closed deal to fit the weights on"))
    rows, target = [], []
    for combo, (w, x) in per.items():
        root = float(w) ** 0.5
        rows.append([root] + [root * float(score(i, n)) for i, n in zip(combo, sizes)])
        target.append(root * float(x / w))
    nf = len(sizes)
    fit = lsq_linear(rows, target, bounds=([0.0] * (nf + 1), [1.0] + [1.0] * nf))
    a, b = fit.x[0], list(fit.x[1:])
    step = spec.step
    lo = clamp(round_up_half(Fraction(a * 100), step), Fraction(0), Fraction(100))
    hi = clamp(round_up_half(Fraction((a + sum(b)) * 100), step), lo, Fraction(100))
    top = max(b) if max(b) > 0 else 1.0
    weights = tuple(Fraction(round(10 * v / top)) for v in b)
    return Proposal({}, Weights(lo, hi, step, weights), tuple(f.name for f in rules.factors))


def rules_file(rules_dir: Path) -> Path:
    """The file that holds the workflows or the `probability:` spec."""
    for path in yaml_files(rules_dir):
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        if isinstance(data, dict) and ("workflows" in data or "probability" in data):
            return path
    raise ConfigurationError(Text("no file in {folder} holds 'workflows:' or 'probability:'",
                                  folder=str(rules_dir)))


def _number(p: Fraction) -> str:
    return str(p.numerator) if p.denominator == 1 else format(float(p), "g")


def rewrite(text: str, proposal: Proposal) -> str:
    """The rule file with only the proposed numbers changed: each scalar is replaced where it
    stands, so comments, order and layout stay."""
    root = yaml.compose(text)
    spans: list[tuple[int, int, str]] = []

    def child(node: Any, key: str) -> Any:
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                if k.value == key:
                    return v
        return None

    if proposal.weights is not None:
        spec = child(root, "probability")
        w = proposal.weights
        for key, value in (("min", w.minimum), ("max", w.maximum)):
            node = child(spec, key)
            if node is not None:
                spans.append((node.start_mark.index, node.end_mark.index, _number(value)))
            else:
                raise ConfigurationError(Text("write 'probability: {key}:' in the rules to "
                                              "propose it", key=key))
        weights = child(spec, "weights")
        for name, value in zip(proposal.weight_names, w.weights):
            node = child(weights, name)
            if node is not None:
                spans.append((node.start_mark.index, node.end_mark.index, _number(value)))
    else:
        for item in getattr(child(root, "workflows"), "value", []):
            name = child(item, "name")
            node = child(child(item, "set"), "probability")
            if name is not None and node is not None and name.value in proposal.workflows:
                spans.append((node.start_mark.index, node.end_mark.index,
                              _number(proposal.workflows[name.value])))
    for start, end, number in sorted(spans, reverse=True):
        text = text[:start] + number + text[end:]
    return text


def diff(old: str, new: str, name: str) -> str:
    return "".join(difflib.unified_diff(old.splitlines(keepends=True),
                                        new.splitlines(keepends=True), name, name + " (proposed)"))
