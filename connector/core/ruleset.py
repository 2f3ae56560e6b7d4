"""The typed rule set, and `compile_rules`: from the files' shapes (schema) to a rule set whose
every reference is resolved, or to the list of everything that is wrong with it."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from dataclasses import field as dc_field
from decimal import Decimal
from fractions import Fraction
from typing import Any, Literal

from connector.core import schema
from connector.core.expressions import RESERVED, ExpressionError, Formula, parse_formula
from connector.core.findings import Finding, Kind, Where, did_you_mean
from connector.core.mapping import ID, Mapping
from connector.core.values import KINDS, FieldType, as_text
from connector.errors import RecordError, Text

Path = tuple[str | int, ...]
Locate = Callable[[Path], Where]
Cube = tuple[int, ...]  # one bit mask per factor: bit i set = the factor's i-th value allowed

CLOSED_WON = "closed-won"
CLOSED_LOST = "closed-lost"
PROBABILITY = "probability"
EXPLANATION = "explanation"  # optional mapped field: why the record has its probability
# A closed deal's probability, whatever the workflows say. Decimal, as the workflows' own
# probabilities are: formulas then take their fast path.
CLOSED_PROBABILITY = {CLOSED_WON: Decimal(100), CLOSED_LOST: Decimal(0)}


def norm(value: object) -> str:
    """How a factor value is compared: its text, trimmed, without regard to case."""
    return as_text(value).strip().casefold()


@dataclass(frozen=True, eq=False)
class Factor:
    name: str
    field: str
    values: tuple[str, ...]                              # best first
    bands: tuple[tuple[str, Decimal], ...] | None = None  # best first, lower bound inclusive
    empty: int | None = None                             # index used for a blank field
    where: Where = Where()
    _index: dict[str, int] = dc_field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self._index.update({norm(v): i for i, v in enumerate(self.values)})
        if self.bands is not None:
            by_bound = sorted(range(len(self.bands)), key=lambda i: self.bands[i][1],  # type: ignore[index]
                              reverse=True)
            object.__setattr__(self, "_by_bound",
                               tuple((self.bands[i][1], i) for i in by_bound))  # type: ignore[index]

    @property
    def full(self) -> int:
        return (1 << len(self.values)) - 1

    def index_of(self, value: object) -> int:
        """The index of a record's value; an unknown value fails the record."""
        if value is None or value == "":
            if self.empty is not None:
                return self.empty
            raise RecordError(Text("'{field}' is empty and factor '{factor}' needs it",
                                   field=self.field, factor=self.name))
        if self.bands is not None:
            if isinstance(value, bool) or not isinstance(value, (int, Decimal)):
                raise RecordError(Text("'{field}' is {value!r}, not a number, and factor "
                                       "'{factor}' has numeric bands",
                                       field=self.field, value=value, factor=self.name))
            for bound, i in self._by_bound:  # type: ignore[attr-defined]
                if value >= bound:
                    return i  # type: ignore[no-any-return]
            lowest = self._by_bound[-1][0]  # type: ignore[attr-defined]
            raise RecordError(Text("'{field}' = {value} is below every band of factor "
                                   "'{factor}' (the lowest starts at {lowest})",
                                   field=self.field, value=as_text(value), factor=self.name,
                                   lowest=as_text(lowest)))
        try:
            return self._index[norm(value)]
        except KeyError:
            raise RecordError(Text(
                "unknown {factor} {value!r}{hint}: factor '{factor}' knows {values}",
                factor=self.name, value=as_text(value), values=", ".join(self.values),
                hint=did_you_mean(as_text(value), self.values))) from None


@dataclass(frozen=True)
class Closed:
    field: str
    won: frozenset[str]   # normalised values
    lost: frozenset[str]
    labels: tuple[str, ...] = ()  # the values as the CRM writes them, won then lost

    def state(self, value: object) -> str | None:
        key = norm(value)
        if key in self.won:
            return CLOSED_WON
        if key in self.lost:
            return CLOSED_LOST
        return None


@dataclass(frozen=True, eq=False)
class Workflow:
    name: str
    cubes: tuple[Cube, ...]
    sets: dict[str, Any]                    # field -> Formula or literal
    actions: tuple[str, ...] = ()
    where: Where = Where()
    generated: bool = False

    @property
    def probability(self) -> Decimal | None:
        p = self.sets.get(PROBABILITY)
        return p if isinstance(p, Decimal) else None


@dataclass(frozen=True)
class Weights:
    minimum: Fraction
    maximum: Fraction
    step: Fraction
    weights: tuple[Fraction, ...]          # aligned with the rule set's factors

    def probability(self, combo: tuple[int, ...], sizes: tuple[int, ...]) -> Fraction:
        """The SPEC's formula, exactly: min + (max-min) * sum(w*score)/sum(w), rounded to the
        nearest multiple of step (ties up) and clamped."""
        total = sum(self.weights)
        if total == 0:
            raw = self.minimum
        else:
            acc = sum((w * score(i, n) for w, i, n in zip(self.weights, combo, sizes)), Fraction(0))
            raw = self.minimum + (self.maximum - self.minimum) * acc / total
        return clamp(round_up_half(raw, self.step), self.minimum, self.maximum)


def score(i: int, n: int) -> Fraction:
    """The i-th of n values (best first) scores (n-1-i)/(n-1); a lone value scores 1."""
    return Fraction(1) if n == 1 else Fraction(n - 1 - i, n - 1)


def round_up_half(x: Fraction, step: Fraction) -> Fraction:
    q = x / step
    return (q + Fraction(1, 2)).__floor__() * step


def clamp(x: Fraction, lo: Fraction, hi: Fraction) -> Fraction:
    return max(lo, min(hi, x))


@dataclass(frozen=True)
class Action:
    name: str
    kind: Literal["email", "http", "erp", "approval", "audience"]
    spec: Any
    where: Where = Where()


@dataclass(frozen=True, eq=False)
class Trigger:
    name: str
    condition: Formula
    actions: tuple[str, ...]
    where: Where = Where()
    since: Formula | None = None                        # escalation: days counted from here
    steps: tuple[tuple[int, tuple[str, ...]], ...] = ()  # (after_days, actions), ascending


@dataclass(frozen=True, eq=False)
class RuleSet:
    factors: tuple[Factor, ...]
    closed: Closed | None
    workflows: tuple[Workflow, ...]
    weights: Weights | None
    computed: dict[str, Formula]
    actions: dict[str, Action]
    triggers: tuple[Trigger, ...]
    mapping: Mapping
    version: str = ""
    explanation_label: str = "rules"  # "rules 344c5c68ec2a" in the mapping's language

    @property
    def sizes(self) -> tuple[int, ...]:
        return tuple(len(f.values) for f in self.factors)

    @property
    def time_dependent_triggers(self) -> tuple[Trigger, ...]:
        """Triggers that may turn true with no edit in the CRM (they read `today`, or escalate
        in steps): only the daily sweep sees them turn."""
        uses_today = self.names_using_today()
        return tuple(t for t in self.triggers if t.steps or t.condition.names & uses_today)

    def names_read(self) -> set[str]:
        """The canonical names the rules read: the factors' and the closed state's fields,
        every name a formula or a condition reads, and the writeback fields (compared with
        what would be written)."""
        names = {f.field for f in self.factors} | set(self.mapping.writeback)
        if self.closed is not None:
            names.add(self.closed.field)
        formulas = [*self.computed.values(), *(t.condition for t in self.triggers),
                    *(t.since for t in self.triggers if t.since is not None),
                    *(v for w in self.workflows for v in w.sets.values()
                      if isinstance(v, Formula))]
        for formula in formulas:
            names |= formula.names
        return names

    def names_using_today(self) -> set[str]:
        names = {"today"}
        changed = True
        while changed:
            changed = False
            for name, formula in self.computed.items():
                if name not in names and formula.names & names:
                    names.add(name)
                    changed = True
        return names


# --- compile -----------------------------------------------------------------------------------

class _Collector:
    def __init__(self, locate: Locate) -> None:
        self.locate = locate
        self.findings: list[Finding] = []

    def error(self, path: Path, kind: Kind, message: str, rules: Iterable[str] = ()) -> None:
        self.findings.append(Finding.at(self.locate(path), "error", kind, message, tuple(rules)))

    def warning(self, path: Path, kind: Kind, message: str, rules: Iterable[str] = ()) -> None:
        self.findings.append(Finding.at(self.locate(path), "warning", kind, message, tuple(rules)))

    @property
    def failed(self) -> bool:
        return any(f.severity == "error" for f in self.findings)


# What the CRMs' API names are made of: the names are pasted into SOQL and HubSpot's filters,
# so anything else (a space, a quote, a parenthesis) is refused before it can change a query.
_API_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
_HUBSPOT_OBJECT_TYPE_ID = re.compile(r"[0-9]+-[0-9]+")  # 0-3 (deals), 2-12345 (a custom object)


def _api_name_problem(name: str, path: bool = False) -> Text | None:
    """Why `name` is not an API name (a relationship path `Account.Name` when `path`)."""
    parts = name.split(".") if path else [name]
    if all(_API_NAME.fullmatch(part) for part in parts):
        return None
    shown = name if len(name) <= 60 else f"{name[:60]}..."
    if path:
        return Text("'{name}' is not an API name: letters, digits and underscores, starting "
                    "with a letter (a relationship path joins names with dots: Account.Name)",
                    name=shown)
    return Text("'{name}' is not an API name: letters, digits and underscores, starting with "
                "a letter", name=shown)


def _check_names(spec: schema.MappingSpec, c: _Collector) -> None:
    hubspot_type_id = spec.crm == "hubspot" and _HUBSPOT_OBJECT_TYPE_ID.fullmatch(spec.object)
    if not hubspot_type_id and (why := _api_name_problem(spec.object)):
        c.error(("object",), "schema", Text("{key}: {reason}", key="object", reason=why))
    if spec.labels:  # column labels of an export: never in a query (open_crm refuses them)
        return
    for key in ("id", "modified"):
        if why := _api_name_problem(getattr(spec, key)):
            c.error((key,), "schema", Text("{key}: {reason}", key=key, reason=why))
    for name, crm_field in spec.fields.items():
        if why := _api_name_problem(crm_field, path=True):
            c.error(("fields", name), "schema",
                    Text("field '{name}': {reason}", name=name, reason=why))


def compile_mapping(spec: schema.MappingSpec, locate: Locate, source: str | None = None
                    ) -> tuple[Mapping, list[Finding]]:
    c = _Collector(locate)
    _check_names(spec, c)
    if ID in spec.fields:
        c.error(("fields", ID), "reference",
                Text("'{name}' is reserved for the record id; it comes from 'id: {id}'",
                     name=ID, id=spec.id))
    for name in spec.writeback:
        if name not in spec.fields:
            c.error(("writeback",), "reference",
                    Text("writeback field '{name}' is not in 'fields'{hint}", name=name,
                         hint=did_you_mean(name, spec.fields)))
    for name in spec.types:
        if name not in spec.fields:
            c.error(("types", name), "reference",
                    Text("'{key}' names '{name}', which is not in 'fields'{hint}", key="types",
                         name=name, hint=did_you_mean(name, spec.fields)))
    for i, name in enumerate(spec.optional):
        if name not in spec.fields:
            c.error(("optional", i), "reference",
                    Text("'{key}' names '{name}', which is not in 'fields'{hint}",
                         key="optional", name=name, hint=did_you_mean(name, spec.fields)))
    types = {n: FieldType(k) for n, k in spec.types.items() if k in KINDS}  # type: ignore[arg-type]
    mapping = Mapping(spec.crm, spec.object, spec.id, spec.modified, dict(spec.fields),
                      tuple(spec.writeback), types, source, spec.locale, frozenset(spec.optional),
                      spec.labels)
    return mapping, c.findings


def compile_rules(spec: schema.RulesSpec, mapping: Mapping, locate: Locate, version: str = ""
                  ) -> tuple[RuleSet | None, list[Finding]]:
    """Resolve every reference; return the rule set, or None and every error found."""
    c = _Collector(locate)
    fields = mapping.canonical_names
    factors = _compile_factors(spec, fields | set(spec.computed), c)
    factor_by_name = {f.name: f for f in factors}
    closed = _compile_closed(spec, fields, factor_by_name, c)

    set_fields = {k for w in (spec.workflows or []) for k in w.set}
    known = set(fields) | set(spec.computed) | set(factor_by_name) | set_fields | RESERVED
    computed = _compile_computed(spec, known, c)

    workflows: tuple[Workflow, ...] = ()
    weights: Weights | None = None
    if spec.workflows is not None and spec.probability is not None:
        c.error(("probability",), "schema",
                Text("give either 'workflows' or 'probability' (weights), not both"))
    elif spec.workflows is not None:
        workflows = _compile_workflows(spec, factors, closed, known, computed, mapping, c)
    elif spec.probability is not None:
        weights = _compile_weights(spec.probability, factors, c)
        if weights is not None:
            workflows = generate_workflows(factors, weights)
    else:
        c.error((), "schema", Text("the rules define no 'workflows' and no 'probability' "
                                   "weights: add one of them"))
    actions = _compile_actions(spec, mapping, c)
    for i, w in enumerate(spec.workflows or []):
        for j, a in enumerate(w.actions):
            if a not in actions:
                c.error(("workflows", i, "actions", j), "reference",
                        Text("workflow '{workflow}': unknown action '{action}'{hint}",
                             workflow=w.name, action=a, hint=did_you_mean(a, actions)), [w.name])
    triggers = _compile_triggers(spec, known, actions, c)
    _check_order(computed, workflows, factors, c)
    if c.failed:
        return None, c.findings
    rs = RuleSet(tuple(factors), closed, workflows, weights, computed, actions, triggers, mapping,
                 version)
    return rs, c.findings


def _compile_factors(spec: schema.RulesSpec, fields: Iterable[str], c: _Collector
                     ) -> list[Factor]:
    known_fields = set(fields)
    out: list[Factor] = []
    if not spec.factors:
        c.error(("factors",), "schema", Text("no 'factors': name at least one factor"))
    for name, f in spec.factors.items():
        path: Path = ("factors", name)
        if name in RESERVED or name == ID:
            c.error(path, "reference", Text("factor '{factor}': the name is reserved; choose "
                                            "another", factor=name))
        if f.field not in known_fields:
            c.error(path + ("field",), "reference",
                    Text("factor '{factor}': unknown field '{field}'{hint}; fields come from "
                         "the mapping's 'fields' or from 'computed'", factor=name, field=f.field,
                         hint=did_you_mean(f.field, known_fields)))
        bands: tuple[tuple[str, Decimal], ...] | None = None
        if f.bands is not None:
            bands = tuple(f.bands.items())
            values = tuple(b for b, _ in bands)
            bounds = [b for _, b in bands]
            if len(set(bounds)) != len(bounds):
                c.error(path + ("bands",), "schema",
                        Text("factor '{factor}': two bands start at the same bound",
                             factor=name))
        else:
            values = tuple(as_text(v) for v in f.values or [])
        seen: dict[str, int] = {}
        for i, v in enumerate(values):
            if norm(v) in seen:
                c.error(path + ("values", i), "schema",
                        Text("factor '{factor}': value '{value}' is listed twice",
                             factor=name, value=v))
            seen[norm(v)] = i
        empty = None
        if f.empty is not None:
            empty = seen.get(norm(f.empty))
            if empty is None:
                c.error(path + ("empty",), "reference",
                        Text("factor '{factor}': 'empty' is '{value}', which is not one of "
                             "its values{hint}", factor=name, value=as_text(f.empty),
                             hint=did_you_mean(as_text(f.empty), values)))
        out.append(Factor(name, f.field, values, bands, empty, c.locate(path)))
    return out


def _compile_closed(spec: schema.RulesSpec, fields: frozenset[str],
                    factors: dict[str, Factor], c: _Collector) -> Closed | None:
    cl = spec.closed
    if cl is None:
        return None
    if cl.field not in fields:
        c.error(("closed", "field"), "reference",
                Text("closed: unknown field '{field}'{hint}", field=cl.field,
                     hint=did_you_mean(cl.field, fields)))
    won = frozenset(norm(v) for v in cl.won)
    lost = frozenset(norm(v) for v in cl.lost)
    if won & lost:
        c.error(("closed",), "schema", Text("closed: a value is both won and lost: {values}",
                                            values=", ".join(sorted(won & lost))))
    for f in factors.values():
        if f.field == cl.field:
            for i, v in enumerate(f.values):
                if norm(v) in won | lost:
                    c.error(("factors", f.name, "values", i), "reference",
                            Text("factor '{factor}': '{value}' is a closed state; closed deals "
                                 "are outside the workflows, so remove it from the values",
                                 factor=f.name, value=v))
    return Closed(cl.field, won, lost, tuple(as_text(v) for v in [*cl.won, *cl.lost]))


def _formula(source: str, known: set[str]) -> Formula:
    """A formula checked, and compiled as the hot path compiles it (see prove_compiles)."""
    # imported here: the fast path is built on rule sets, so it imports this module
    from connector.core._fast import prove_compiles

    formula = parse_formula(source, known)
    prove_compiles(formula)
    return formula


def _compile_computed(spec: schema.RulesSpec, known: set[str], c: _Collector
                      ) -> dict[str, Formula]:
    out: dict[str, Formula] = {}
    for name, source in spec.computed.items():
        if name in RESERVED or name == ID:
            c.error(("computed", name), "reference",
                    Text("computed field '{name}': the name is reserved", name=name))
            continue
        try:
            out[name] = _formula(str(source), known)
        except ExpressionError as exc:
            c.error(("computed", name), "expression",
                    Text("computed field '{name}': {reason}", name=name, reason=exc.text))
    return out


def _cube_masks(block: dict[str, Any], base_path: Path, wf: str, factors: list[Factor],
                closed: Closed | None, c: _Collector) -> Cube | None:
    index = {f.name: k for k, f in enumerate(factors)}
    masks = [f.full for f in factors]
    ok = True
    for key, wanted in block.items():
        path = base_path + (key,)
        if key not in index:
            c.error(path, "reference",
                    Text("workflow '{workflow}': unknown factor '{factor}'{hint}", workflow=wf,
                         factor=key, hint=did_you_mean(key, index)), [wf])
            ok = False
            continue
        f = factors[index[key]]
        items = wanted if isinstance(wanted, list) else [wanted]
        mask = 0
        for j, item in enumerate(items):
            ipath = path + (j,) if isinstance(wanted, list) else path
            if isinstance(item, (dict, list)):
                c.error(ipath, "schema", Text("workflow '{workflow}': factor '{factor}' takes a "
                                              "value or a list of values", workflow=wf,
                                              factor=key), [wf])
                ok = False
                continue
            try:
                mask |= 1 << f._index[norm(item)]
            except KeyError:
                text = as_text(item)
                if closed is not None and f.field == closed.field and closed.state(item):
                    message = Text("workflow '{workflow}': unknown value '{value}' for factor "
                                   "'{factor}': '{value}' is a closed state, handled outside "
                                   "the workflows (closed-won is 100, closed-lost 0)",
                                   workflow=wf, value=text, factor=key)
                else:
                    message = Text("workflow '{workflow}': unknown value '{value}' for factor "
                                   "'{factor}'{hint}; factor '{factor}' knows {values}",
                                   workflow=wf, value=text, factor=key,
                                   hint=did_you_mean(text, f.values), values=", ".join(f.values))
                c.error(ipath, "reference", message, [wf])
                ok = False
        masks[index[key]] = mask
    return tuple(masks) if ok else None


def _compile_workflows(spec: schema.RulesSpec, factors: list[Factor], closed: Closed | None,
                       known: set[str], computed: dict[str, Formula], mapping: Mapping,
                       c: _Collector) -> tuple[Workflow, ...]:
    out: list[Workflow] = []
    names: dict[str, int] = {}
    for i, w in enumerate(spec.workflows or []):
        path: Path = ("workflows", i)
        if w.name in names:
            first = c.locate(("workflows", names[w.name], "name"))
            c.error(path + ("name",), "schema", Text(
                "workflow '{workflow}' is defined twice (first at {file}:{line}): give each "
                "workflow its own name", workflow=w.name, file=first.file, line=first.line),
                [w.name])
        if w.name in (CLOSED_WON, CLOSED_LOST):
            c.error(path + ("name",), "reference",
                    Text("workflow '{workflow}': the name is reserved for closed deals",
                         workflow=w.name), [w.name])
        names.setdefault(w.name, i)
        cubes: list[Cube] = []
        when = dict(w.when)
        blocks = when.pop("any", None)
        base = _cube_masks(when, path + ("when",), w.name, factors, closed, c)
        if blocks is not None and not isinstance(blocks, list):
            c.error(path + ("when", "any"), "schema",
                    Text("workflow '{workflow}': 'any' takes a list of conditions",
                         workflow=w.name), [w.name])
            blocks = []
        if base is not None:
            if blocks is None:
                cubes.append(base)
            else:
                for j, block in enumerate(blocks):
                    bpath = path + ("when", "any", j)
                    if not isinstance(block, dict):
                        c.error(bpath, "schema", Text("workflow '{workflow}': each 'any' entry "
                                                      "is a set of factor: value pairs",
                                                      workflow=w.name), [w.name])
                        continue
                    if "any" in block:
                        c.error(bpath, "schema",
                                Text("workflow '{workflow}': 'any' cannot nest",
                                     workflow=w.name), [w.name])
                        continue
                    cube = _cube_masks(block, bpath, w.name, factors, closed, c)
                    if cube is not None:
                        cubes.append(tuple(a & b for a, b in zip(base, cube)))
        sets = _compile_sets(w, path, known, computed, mapping, c)
        out.append(Workflow(w.name, tuple(cubes), sets, tuple(w.actions),
                            c.locate(path + ("name",))))
    return tuple(out)


def _compile_sets(w: schema.WorkflowSpec, path: Path, known: set[str],
                  computed: dict[str, Formula], mapping: Mapping, c: _Collector
                  ) -> dict[str, Any]:
    sets: dict[str, Any] = {}
    for key, value in w.set.items():
        spath = path + ("set", key)
        if key in computed:
            c.error(spath, "reference", Text("workflow '{workflow}': '{field}' is a computed "
                                             "field; a workflow cannot also set it",
                                             workflow=w.name, field=key), [w.name])
            continue
        if key in RESERVED or key == ID:
            c.error(spath, "reference", Text("workflow '{workflow}': '{field}' is reserved and "
                                             "cannot be set", workflow=w.name, field=key),
                    [w.name])
            continue
        if key not in mapping.fields:
            c.warning(spath, "reference", Text("workflow '{workflow}' sets '{field}', which the "
                                               "mapping does not name: it is computed but never "
                                               "written", workflow=w.name, field=key), [w.name])
        elif key not in mapping.writeback:
            c.warning(spath, "reference", Text("workflow '{workflow}' sets '{field}', which is "
                                               "not in the mapping's writeback list: it is never "
                                               "written", workflow=w.name, field=key), [w.name])
        if isinstance(value, str) and value.lstrip().startswith("="):
            try:
                sets[key] = _formula(value, known)
            except ExpressionError as exc:
                c.error(spath, "expression", Text("workflow '{workflow}': set '{field}': {reason}",
                                                  workflow=w.name, field=key, reason=exc.text),
                        [w.name])
        elif isinstance(value, (dict, list)):
            c.error(spath, "schema", Text("workflow '{workflow}': set '{field}' takes a value or "
                                          "an '= formula'", workflow=w.name, field=key), [w.name])
        elif isinstance(value, bool) or value is None:
            sets[key] = value
        elif isinstance(value, (int, float, Decimal)):
            sets[key] = Decimal(str(value))
        else:
            sets[key] = value
    p = sets.get(PROBABILITY)
    if PROBABILITY not in w.set:
        c.error(path + ("set",), "schema", Text("workflow '{workflow}' sets no probability: add "
                                            "'set: {{probability: N}}'", workflow=w.name),
                [w.name])
    elif isinstance(p, Decimal) and not Decimal(0) <= p <= Decimal(100):
        c.error(path + ("set", PROBABILITY), "schema",
                Text("workflow '{workflow}': probability {value} is outside 0..100",
                     workflow=w.name, value=p), [w.name])
    elif not isinstance(p, (Decimal, Formula)) and PROBABILITY in sets:
        c.error(path + ("set", PROBABILITY), "schema",
                Text("workflow '{workflow}': probability must be a number or an '= formula'",
                     workflow=w.name), [w.name])
    return sets


def _compile_weights(p: schema.ProbabilitySpec, factors: list[Factor], c: _Collector
                     ) -> Weights | None:
    names = {f.name for f in factors}
    ok = True
    for key in p.weights:
        if key not in names:
            c.error(("probability", "weights", key), "reference",
                    Text("weights: unknown factor '{factor}'{hint}", factor=key,
                         hint=did_you_mean(key, names)))
            ok = False
    for f in factors:
        if f.name not in p.weights:
            c.error(("probability", "weights"), "reference",
                    Text("weights: factor '{factor}' has no weight (give it 0 to ignore it)",
                         factor=f.name))
            ok = False
    if not ok:
        return None
    return Weights(Fraction(p.min), Fraction(p.max), Fraction(p.step),
                   tuple(Fraction(p.weights[f.name]) for f in factors))


def probability_name(value: Fraction) -> str:
    d = Decimal(value.numerator) / Decimal(value.denominator)
    return "p" + format(d.normalize(), "f")


def reachable_values(factors: Iterable[Factor], weights: Weights) -> list[Fraction]:
    """Every probability the weights can give, without walking the product: the set of
    reachable weighted sums is built factor by factor."""
    sums = {Fraction(0)}
    for w, f in zip(weights.weights, factors):
        n = len(f.values)
        sums = {s + w * score(i, n) for s in sums for i in range(n)}
    total = sum(weights.weights)
    out = set()
    for s in sums:
        raw = weights.minimum if total == 0 else (
            weights.minimum + (weights.maximum - weights.minimum) * s / total)
        out.add(clamp(round_up_half(raw, weights.step), weights.minimum, weights.maximum))
    return sorted(out, reverse=True)


def generate_workflows(factors: Iterable[Factor], weights: Weights) -> tuple[Workflow, ...]:
    """One workflow per reachable probability value, named p<value>. Their conditions are the
    weights formula itself (see table.DecisionTable), so they carry no cubes."""
    return tuple(
        Workflow(probability_name(v), (), {PROBABILITY: Decimal(v.numerator) / v.denominator},
                 generated=True)
        for v in reachable_values(list(factors), weights))


def _compile_actions(spec: schema.RulesSpec, mapping: Mapping, c: _Collector
                     ) -> dict[str, Action]:
    out: dict[str, Action] = {}
    for name, a in spec.actions.items():
        kind: Literal["email", "http", "erp", "approval", "audience"] = (
            "email" if a.email else "http" if a.http else "approval" if a.approval
            else "audience" if a.audience else "erp")
        out[name] = Action(name, kind, a.email or a.http or a.approval or a.audience or a.erp,
                           c.locate(("actions", name)))
    for name, a in spec.actions.items():
        if a.approval is None:
            continue
        path: Path = ("actions", name, "approval")
        field = a.approval.field
        if field not in mapping.writeback:
            c.error(path + ("field",), "reference",
                    Text("approval '{approval}': field '{field}' must be a writeback field of "
                         "the mapping (the decision is written there){hint}", approval=name,
                         field=field, hint=did_you_mean(field, mapping.writeback)))
        for key in ("on_approve", "on_reject"):
            for j, other in enumerate(getattr(a.approval, key)):
                if other not in out:
                    c.error(path + (key, j), "reference", Text(
                        "approval '{approval}': unknown action '{action}'{hint}", approval=name,
                        action=other, hint=did_you_mean(other, out)))
                elif out[other].kind == "approval":
                    c.error(path + (key, j), "reference", Text(
                        "approval '{approval}': '{action}' is itself an approval; chain "
                        "approvals through a trigger instead", approval=name, action=other))
    return out


def _compile_triggers(spec: schema.RulesSpec, known: set[str], actions: dict[str, Action],
                      c: _Collector) -> tuple[Trigger, ...]:
    out: list[Trigger] = []
    names: set[str] = set()
    for i, t in enumerate(spec.triggers):
        path: Path = ("triggers", i)
        name = t.name or f"trigger-{i + 1}"
        if name in names:
            c.error(path + ("name",), "schema",
                    Text("trigger '{trigger}' is defined twice", trigger=name))
        names.add(name)
        named = [(path + ("do", j), a) for j, a in enumerate(t.do)]
        named += [(path + ("steps", k, "do", j), a)
                  for k, step in enumerate(t.steps) for j, a in enumerate(step.do)]
        for at, a in named:
            if a not in actions:
                c.error(at, "reference",
                        Text("trigger '{trigger}': unknown action '{action}'{hint}",
                             trigger=name, action=a, hint=did_you_mean(a, actions)))
        days = [step.after_days for step in t.steps]
        if len(set(days)) != len(days):
            c.error(path + ("steps",), "schema", Text("trigger '{trigger}': two steps have the "
                                                      "same after_days", trigger=name))
        try:
            formula = _formula(t.when, known)
            since = _formula(t.since, known) if t.since else None
        except ExpressionError as exc:
            c.error(path + ("since" if t.since and "since" in str(exc) else "when",),
                    "expression", Text("trigger '{trigger}': {reason}", trigger=name,
                                       reason=exc.text))
            continue
        steps = tuple(sorted((s.after_days, tuple(s.do)) for s in t.steps))
        out.append(Trigger(name, formula, tuple(t.do), c.locate(path), since, steps))
    return tuple(out)


def _check_order(computed: dict[str, Formula], workflows: tuple[Workflow, ...],
                 factors: list[Factor], c: _Collector) -> None:
    """Cycles among computed fields (and a workflow's own formulas), and factors that would
    need a value only known after the workflow is chosen."""
    graph = {n: set(f.names) & set(computed) for n, f in computed.items()}
    for cycle in _cycles(graph):
        c.error(("computed", cycle[0]), "cycle",
                Text("computed fields depend on each other in a circle: {cycle}",
                     cycle=" -> ".join(cycle)))
    after_match = {PROBABILITY, "rule"} | {k for w in workflows for k in w.sets}
    late = after_match | set()
    changed = True
    while changed:
        changed = False
        for n, f in computed.items():
            if n not in late and f.names & late:
                late.add(n)
                changed = True
    for factor in factors:
        if factor.field in late:
            c.error(("factors", factor.name, "field"), "cycle",
                    Text("factor '{factor}' reads '{field}', which is only known after a "
                         "workflow is chosen", factor=factor.name, field=factor.field))
    for w in workflows:
        wgraph = dict(graph)
        for k, v in w.sets.items():
            if isinstance(v, Formula):
                wgraph[k] = set(v.names) & (set(computed) | set(w.sets))
        for cycle in _cycles(wgraph):
            if any(n in w.sets for n in cycle):
                c.error(("workflows",), "cycle", Text(
                    "workflow '{workflow}': its formulas depend on each other in a circle: "
                    "{cycle}", workflow=w.name, cycle=" -> ".join(cycle)), [w.name])


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    # Depth first without recursion: a chain of a thousand computed fields is a legal rule set.
    found: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the path, 2: done
    for root in graph:
        if root in state:
            continue
        state[root] = 1
        path = [root]
        todo = [iter(sorted(graph.get(root, ())))]
        while todo:
            for m in todo[-1]:
                if state.get(m) == 1:
                    found.append(path[path.index(m):] + [m])
                elif m not in state:
                    state[m] = 1
                    path.append(m)
                    todo.append(iter(sorted(graph.get(m, ()))))
                    break
            else:
                todo.pop()
                state[path.pop()] = 2
    return found


def read_by_factors(rules: RuleSet) -> list[str]:
    """The computed fields a factor reads, directly or through another, in evaluation order:
    they are computed before the workflow is chosen."""
    reads = {n: set(f.names) for n, f in rules.computed.items()}
    early: set[str] = set()
    todo = [f.field for f in rules.factors if f.field in rules.computed]
    while todo:
        name = todo.pop()
        if name not in early:
            early.add(name)
            todo.extend(n for n in reads[name] if n in rules.computed)
    return [n for n in evaluation_order(reads) if n in early]


def evaluation_order(formulas: dict[str, set[str]]) -> list[str]:
    """Names in an order where each comes after the names it reads (the graph has no cycle)."""
    order: list[str] = []
    done: set[str] = set()
    for root in formulas:
        if root in done:
            continue
        done.add(root)
        path = [root]
        todo = [iter(sorted(formulas.get(root, ())))]
        while todo:
            for m in todo[-1]:
                if m in formulas and m not in done:
                    done.add(m)
                    path.append(m)
                    todo.append(iter(sorted(formulas.get(m, ()))))
                    break
            else:
                todo.pop()
                order.append(path.pop())
    return order
