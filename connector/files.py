"""Reading `rules/*.yaml` and `mappings/*.yaml`: YAML with the line of every node kept, shapes
checked by the schema, meaning checked by the core, and every problem reported at once as
`file:line: message`. Nothing here raises at an admin: problems come back as findings."""

from __future__ import annotations

import copy
import dataclasses
import difflib
import hashlib
import os
import re
import types
import typing
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from connector import currency
from connector.core import schema
from connector.core.findings import Finding, Rewording, Where, did_you_mean, reworded
from connector.core.mapping import Mapping
from connector.core.ruleset import RuleSet, compile_mapping, compile_rules
from connector.core.validation import EXPECTED, constraint, either
from connector.errors import Text
from connector.i18n import language_of, translate

DataPath = tuple[str | int, ...]


@dataclass
class YamlFile:
    """One YAML file's data and the line of each node, by its path."""

    path: str
    data: Any
    lines: dict[DataPath, int] = field(default_factory=dict)

    def line_of(self, at: DataPath) -> int | None:
        for n in range(len(at), -1, -1):
            line = self.lines.get(at[:n])
            if line is not None:
                return line
        return None


def display(path: Path) -> str:
    """A path as the admin typed it, or relative to where they stand."""
    try:
        return os.path.relpath(path)
    except ValueError:  # another drive on Windows
        return str(path)


_BOOL = "tag:yaml.org,2002:bool"
_INT = "tag:yaml.org,2002:int"
_MAP = "tag:yaml.org,2002:map"
_SEQ = "tag:yaml.org,2002:seq"
_MERGE = "tag:yaml.org,2002:merge"


class _Loader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 booleans and integers. YAML 1.1 reads `Yes`, `No`, `on`, `off`
    as booleans and `017` as octal 15, so a relationship level called `No` or a stage code `017`
    would silently stop matching the CRM's text; here only true/false are booleans and only
    plain decimals are integers."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag not in (_BOOL, _INT)]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
_Loader.add_implicit_resolver(_BOOL, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
                              list("tTfF"))
_Loader.add_implicit_resolver(_INT, re.compile(r"^[-+]?(?:0|[1-9][0-9]*)$"),
                              list("-+0123456789"))


# PyYAML says what it met, not what to do: the usual causes, by a phrase of its message.
_TABS = Text("YAML indents with spaces only: replace the tab with spaces")
_YAML_HINTS = (
    ("'\\t'", _TABS),
    ("tab character", _TABS),
    ("expected <block end>", Text("this line is not indented like the lines above it")),
    ("mapping values are not allowed", Text("a value with ': ' in it needs quotes around it")),
    ("end of stream", Text("a quote or a bracket opened here is never closed")),
    ("another document", Text("a file holds one YAML document: remove the second '---'")),
)


# PyYAML's words for what it met, for the problems a hand-edited file has; another stays in
# PyYAML's English.
_YAML_MET: tuple[Rewording, ...] = (
    (r"found character (.+) that cannot start any token",
     lambda m: Text("found character {found} that cannot start any token", found=m[1])),
    (r"mapping values are not allowed here",
     lambda m: Text("mapping values are not allowed here")),
    (r"expected (\S+) or (\S+), but got (.+)",
     lambda m: Text("expected {first} or {second}, but got {found}", first=m[1], second=m[2],
                    found=m[3])),
    (r"expected (.+?), but found (.+)",
     lambda m: Text("expected {expected}, but found {found}", expected=m[1], found=m[2])),
    (r"found unexpected end of stream", lambda m: Text("found unexpected end of stream")),
    (r"but found another document", lambda m: Text("but found another document")),
    (r"found undefined alias (.+)", lambda m: Text("found undefined alias {alias}", alias=m[1])),
    (r"found unknown escape character (.+)",
     lambda m: Text("found unknown escape character {found}", found=m[1])),
    (r"could not determine a constructor for the tag (.+)",
     lambda m: Text("could not determine a constructor for the tag {tag}", tag=m[1])),
)


def _yaml_problem(exc: yaml.YAMLError, name: str) -> Finding:
    problem = getattr(exc, "problem", None) or str(exc)
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    hint = next((h for phrase, h in _YAML_HINTS if phrase in problem),
                Text("check the indentation and the quotes around values with ':' or '#'"))
    if "end of stream" in problem and getattr(exc, "context_mark", None):
        mark = exc.context_mark  # type: ignore[attr-defined]  # where the quote opened
    return Finding("error", "schema", Text("not valid YAML: {problem}: {hint}",
                                           problem=reworded(problem, _YAML_MET), hint=hint),
                   name, mark.line + 1 if mark else None)


_TOO_DEEP = Text("not valid YAML: nested too deeply")


def read_yaml(path: Path) -> tuple[YamlFile | None, list[Finding]]:
    """The file's data with the line of every key, or None when it cannot be read at all."""
    name = display(path)
    try:
        raw = path.read_bytes()
        text = raw.decode("utf-8-sig")
    except OSError as exc:
        return None, [Finding("error", "schema", Text("cannot read the file: {reason}",
                                                      reason=exc.strerror or str(exc)), name)]
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        return None, [Finding("error", "schema", Text("the file is not UTF-8 text (byte "
                                                      "0x{byte:02x}): save it as UTF-8",
                                                      byte=raw[exc.start]), name, line)]
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
    except yaml.YAMLError as exc:
        return None, [_yaml_problem(exc, name)]
    except RecursionError:
        return None, [Finding("error", "schema", _TOO_DEEP, name)]
    finally:
        loader.dispose()
    out = YamlFile(name, None)
    findings: list[Finding] = []
    refused: list[Finding] = []
    if node is None:
        return out, findings

    def walk(n: yaml.Node, at: DataPath) -> Any:
        out.lines.setdefault(at, n.start_mark.line + 1)
        if isinstance(n, (yaml.MappingNode, yaml.SequenceNode)) and n.tag not in (_MAP, _SEQ):
            # Only a scalar's tag goes through the safe constructor; a collection's would be
            # silently dropped by this walk, so refuse it rather than guess what it meant.
            tag = n.tag.replace("tag:yaml.org,2002:", "!!")
            refused.append(Finding("error", "schema", Text("the YAML tag '{tag}' is not "
                                                           "allowed here: remove it", tag=tag),
                                   name, n.start_mark.line + 1))
            return None
        if isinstance(n, yaml.MappingNode):
            written = sum(1 for k, _ in n.value if k.tag != _MERGE)
            loader.flatten_mapping(n)
            # flatten_mapping puts the pairs a `<<: *anchor` brings first; a key written here
            # overrides them, as YAML says. Only a key written twice here is a mistake.
            merged_in = len(n.value) - written
            result: dict[Any, Any] = {}
            own: set[str] = set()
            for index, (k, v) in enumerate(n.value):
                if not isinstance(k, yaml.ScalarNode):
                    findings.append(Finding("error", "schema",
                                            Text("a key must be a plain name"),
                                            name, k.start_mark.line + 1))
                    continue
                # Every key in these files is a name: `5:` or `null:` is the name '5' or
                # 'null', never a number or None that later lookups by name cannot find.
                key = k.value
                if key in own:
                    findings.append(Finding("error", "schema", Text(
                        "'{key}' appears twice here (first at line {line}): keep one of them "
                        "(YAML would silently use only the last)", key=key,
                        line=out.lines.get(at + (key,))), name, k.start_mark.line + 1))
                    continue
                if index >= merged_in:
                    own.add(key)
                out.lines[at + (key,)] = k.start_mark.line + 1
                result[key] = walk(v, at + (key,))
            return result
        if isinstance(n, yaml.SequenceNode):
            return [walk(v, at + (i,)) for i, v in enumerate(n.value)]
        return loader.construct_object(n, deep=True)

    try:
        out.data = walk(node, ())
    except yaml.YAMLError as exc:  # a scalar with an unknown tag (`!!python/name:...`)
        return None, [*findings, _yaml_problem(exc, name)]
    except RecursionError:
        return None, [Finding("error", "schema", _TOO_DEEP, name)]
    if refused:  # the file means something we will not read: none of it is used
        return None, findings + refused
    return out, findings


# --- pydantic errors as findings ----------------------------------------------------------------

def _strip(t: Any) -> Any:
    """Optional[X] -> X; Annotated[X, ...] -> X."""
    origin = typing.get_origin(t)
    if origin is typing.Annotated:
        return _strip(typing.get_args(t)[0])
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(t) if a is not type(None)]
        models = [a for a in args if isinstance(a, type) and issubclass(a, BaseModel)]
        if models:
            return models[0]
        if len(args) == 1:
            return _strip(args[0])
    return t


def _model_at(model: type[BaseModel], at: DataPath) -> type[BaseModel] | None:
    current: Any = model
    for part in at:
        current = _strip(current)
        if isinstance(current, type) and issubclass(current, BaseModel):
            info = current.model_fields.get(str(part))
            if info is None:
                info = next((f for f in current.model_fields.values() if f.alias == part), None)
            if info is None:
                return None
            current = info.annotation
        else:
            args = typing.get_args(current)
            if typing.get_origin(current) is dict and len(args) == 2:
                current = args[1]
            elif typing.get_origin(current) is list and args:
                current = args[0]
            else:
                return None
    current = _strip(current)
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _data_path(data: Any, loc: Iterable[Any]) -> DataPath:
    """Keep the parts of a pydantic location that are real keys or indexes of the data."""
    out: list[str | int] = []
    node = data
    for part in loc:
        in_dict = isinstance(node, dict) and part in node
        in_list = isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node)
        if in_dict or in_list:
            out.append(part)
            node = node[part]
    return tuple(out)


def validation_findings(exc: ValidationError, model: type[BaseModel], data: Any,
                        locate: Any) -> list[Finding]:
    findings = []
    seen: set[tuple[Where, str]] = set()
    errors = exc.errors()
    # A value that fits no member of a union (`Scalar`: text, true/false or a number) gets one
    # error per member from pydantic; the admin gets one line saying what would fit.
    fits: dict[DataPath, list[Text]] = {}
    for err in errors:
        if err["type"] in EXPECTED:
            wanted = fits.setdefault(_data_path(data, err["loc"]), [])
            if EXPECTED[err["type"]] not in wanted:
                wanted.append(EXPECTED[err["type"]])
    for err in errors:
        message = _validation_message(err, model, data, fits)
        where: Where = locate(_data_path(data, err["loc"]))
        if (where, message) in seen:
            continue  # a union reports the same place once per member
        seen.add((where, message))
        findings.append(Finding.at(where, "error", "schema", message))
    return findings


def _validation_message(err: Any, model: type[BaseModel], data: Any,
                        fits: dict[DataPath, list[Text]]) -> str:
    loc = tuple(err["loc"])
    at = _data_path(data, loc)
    kind = err["type"]
    got = err.get("input")
    if kind in EXPECTED:
        expected = _model_at(model, at)
        if kind in ("model_type", "model_attributes_type") and expected:
            # A scalar where a block was due is nearly always a line indented too little.
            return Text("{at}: expected a set of keys ({keys}), got {value!r}: check the "
                        "indentation of this line and the ones below it", at=_dotted(at),
                        keys=", ".join(_keys_of(expected)), value=got)
        return Text("{at}: expected {words} (got {value!r})", at=_dotted(at),
                    words=either(fits[at]), value=got)
    if kind == "extra_forbidden":
        parent = _model_at(model, at[:-1])
        allowed = _keys_of(parent) if parent else []
        name = at[-1] if at else loc[-1]
        hint = did_you_mean(str(name), allowed)
        if allowed:
            return Text("unknown key '{key}'{hint}; allowed here: {allowed}", key=name,
                        hint=hint, allowed=", ".join(allowed))
        return Text("unknown key '{key}'{hint}", key=name, hint=hint)
    if kind == "missing":
        if at:
            return Text("{at}: '{key}' is missing", at=_dotted(at), key=loc[-1])
        return Text("'{key}' is missing here", key=loc[-1])
    if kind == "literal_error":
        expected_text = str((err.get("ctx") or {}).get("expected"))
        choices = re.findall(r"'([^']*)'", expected_text)
        said = Text("Input should be {choices} (got {value!r}){hint}",
                    choices=either([f"'{c}'" for c in choices]) if choices else expected_text,
                    value=got, hint=did_you_mean(got, choices) if isinstance(got, str) else "")
    else:  # our words for the types these files meet; pydantic's own (English) for another
        said = constraint(kind, err.get("ctx") or {}) or err["msg"].removeprefix("Value error, ")
    return Text("{at}: {problem}", at=_dotted(at), problem=said) if at else said


def _keys_of(model: type[BaseModel]) -> list[str]:
    """The keys a model takes, as the file spells them (`json`, not `json_body`)."""
    return [f.alias or name for name, f in model.model_fields.items()]


def _dotted(at: DataPath) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else (f".{p}" if i else str(p))
                   for i, p in enumerate(at))


# --- the rule set and the mappings ------------------------------------------------------------

@dataclass
class Loaded:
    rules: RuleSet | None
    findings: list[Finding]
    mappings: dict[str, Mapping]
    rule_files: list[YamlFile]
    version: str = ""
    rates: currency.CurrencyRates | None = None  # mappings/currencies.yaml, when there is one

    @property
    def ok(self) -> bool:
        return self.rules is not None and not any(f.severity == "error" for f in self.findings)


def yaml_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob("*.y*ml") if p.suffix in (".yaml", ".yml"))


def load_mappings(folder: Path, findings: list[Finding]) -> dict[str, tuple[Mapping, Path]]:
    out: dict[str, tuple[Mapping, Path]] = {}
    if not folder.is_dir():
        findings.append(Finding("error", "schema", Text("no mappings folder at {folder} (use "
                                                        "--mappings DIR)", folder=display(folder)),
                                display(folder)))
        return out
    for path in yaml_files(folder):
        mapping = load_mapping_file(path, findings)
        if mapping is None:
            continue
        if mapping.crm in out:
            # Two mappings for one CRM: which one runs would depend on the files' names.
            doc, _ = read_yaml(path)
            findings.append(Finding(
                "error", "schema", Text("a second mapping for crm '{crm}' (the first is "
                                        "{first}): keep one mapping file per CRM",
                                        crm=mapping.crm, first=display(out[mapping.crm][1])),
                display(path), doc.lines.get(("crm",)) if doc else None))
            continue
        out[mapping.crm] = (mapping, path)
    return out


def load_mapping_file(path: Path, findings: list[Finding]) -> Mapping | None:
    if path.name == currency.FILE:
        return None  # the currency rates: read (and checked) once, by `load_rates`
    doc, problems = read_yaml(path)
    findings += problems
    if doc is None or problems:
        return None
    if not isinstance(doc.data, dict):
        findings.append(Finding("error", "schema", Text("a mapping file is a set of keys "
                                                        "(crm:, object:, fields: ...)"),
                                doc.path, 1))
        return None
    if "erp" in doc.data and "crm" not in doc.data:
        return None  # mappings/erp.yaml: checked with the ERP settings (issue 5)

    def locate(at: DataPath) -> Where:
        return Where(doc.path, doc.line_of(at))

    try:
        spec = schema.MappingSpec.model_validate(doc.data)
    except ValidationError as exc:
        findings += validation_findings(exc, schema.MappingSpec, doc.data, locate)
        return None
    mapping, problems = compile_mapping(spec, locate, doc.path)
    if spec.locale is not None:
        from connector.locales import known_locale

        unknown = known_locale(spec.locale)
        if unknown:
            problems.append(Finding.at(locate(("locale",)), "error", "schema", unknown))
    findings += problems
    return None if problems else mapping


Locate = Callable[[DataPath], Where]


@dataclass
class _RulesRead:
    spec: schema.RulesSpec | None
    docs: list[YamlFile]
    locate: Locate | None
    # The rule set minus the parts whose shape is wrong: checked for everything else, never run.
    partial: tuple[schema.RulesSpec, Locate] | None = None


def load_rules_spec(folder: Path, findings: list[Finding]
                    ) -> tuple[schema.RulesSpec | None, list[YamlFile], Any]:
    read = _read_rules(folder, findings)
    return read.spec, read.docs, read.locate


def _read_rules(folder: Path, findings: list[Finding]) -> _RulesRead:
    docs: list[YamlFile] = []
    if not folder.is_dir():
        findings.append(Finding("error", "schema", Text("no rules folder at {folder} (use "
                                                        "--rules DIR)", folder=display(folder)),
                                display(folder)))
        return _RulesRead(None, docs, None)
    paths = yaml_files(folder)
    if not paths:
        findings.append(Finding("error", "schema", Text("no *.yaml files in {folder}",
                                                        folder=display(folder)), display(folder)))
        return _RulesRead(None, docs, None)
    merged: dict[str, Any] = {}
    owner: dict[str, YamlFile] = {}
    unreadable = False
    flawed = False  # read, but not as written: checked for everything else, never run
    for path in paths:
        doc, problems = read_yaml(path)
        findings += problems
        flawed |= bool(problems)
        if doc is None:
            unreadable = True
            continue
        docs.append(doc)
        if doc.data is None:
            continue
        if not isinstance(doc.data, dict):
            findings.append(Finding("error", "schema", Text(
                "a rule file is a set of top-level keys (factors:, workflows:, computed: ...)"),
                doc.path, 1))
            flawed = True
            continue
        for key, value in doc.data.items():
            if key in merged:
                flawed = True
                first = owner[key]
                findings.append(Finding(
                    "error", "schema", Text("'{key}' is already defined in {file}:{line}; a "
                                            "top-level key lives in one file only", key=key,
                                            file=first.path, line=first.lines.get((key,))),
                    doc.path, doc.lines.get((key,))))
                continue
            merged[key] = value
            owner[key] = doc

    def locate(at: DataPath) -> Where:
        if not at or at[0] not in owner:
            return Where(docs[0].path if len(docs) == 1 else None, None)
        doc = owner[str(at[0])]
        return Where(doc.path, doc.line_of(at))

    try:
        spec = schema.RulesSpec.model_validate(merged)
    except ValidationError as exc:
        findings += validation_findings(exc, schema.RulesSpec, merged, locate)
        partial = None if unreadable else _salvage(merged, exc, locate)
        return _RulesRead(None, docs, locate, partial)
    if unreadable:
        # The other files' shapes are checked above; their references are not: with a file
        # missing, every factor or action it defines would be reported as unknown elsewhere.
        return _RulesRead(None, docs, locate)
    if flawed:
        return _RulesRead(None, docs, locate, (spec, locate))
    return _RulesRead(spec, docs, locate)


def _salvage(merged: dict[str, Any], exc: ValidationError, locate: Locate
             ) -> tuple[schema.RulesSpec, Locate] | None:
    """The rule set without the parts whose shape is wrong, so that the references of the rest
    are checked in the same run: every error at once, not the shapes first and the references
    after a second run. A misspelt key is read as the key it is close to (`sets:` as `set:`),
    other unknown keys are dropped, a broken workflow is left out, a broken trigger, action or
    computed field is kept as a name only. None when the broken part is one the rest refers to
    by its content (a factor, `closed`, the weights): checking without it would report every
    reference to it as a false error."""
    data = copy.deepcopy(merged)
    # Which original workflow each one left is: lines and messages keep the files' numbering.
    kept = list(range(len(data["workflows"]))) if isinstance(data.get("workflows"), list) else []
    spelt: dict[DataPath, str] = {}  # a key read as another (files' numbering): its own name

    def original(at: DataPath) -> DataPath:
        if len(at) >= 2 and at[0] == "workflows" and isinstance(at[1], int):
            return (at[0], kept[at[1]], *at[2:])
        return at
    errors = exc.errors()
    for _ in range(4):  # a round removes what the last validation refused; few are ever needed
        drop: set[int] = set()
        for kind, at in [(e["type"], _data_path(data, e["loc"])) for e in errors]:
            if kind == "extra_forbidden" and at:
                parent: Any = data
                for part in at[:-1]:
                    parent = parent[part]
                model = _model_at(schema.RulesSpec, at[:-1])
                names = _keys_of(model) if model else []
                close = difflib.get_close_matches(str(at[-1]), names, n=1, cutoff=0.6)
                value = parent.pop(at[-1], None)
                if close and close[0] not in parent:
                    parent[close[0]] = value
                    spelt[original((*at[:-1], close[0]))] = str(at[-1])
                continue
            if len(at) < 2:
                return None
            top, item = at[0], at[1]
            if top == "workflows" and isinstance(item, int):
                drop.add(item)
            elif top == "triggers" and isinstance(item, int):
                name = data["triggers"][item].get("name") if isinstance(
                    data["triggers"][item], dict) else None
                data["triggers"][item] = {"name": name if isinstance(name, str) else None,
                                          "when": "false", "do": []}
            elif top == "computed":
                data["computed"][item] = "none"
            elif top == "actions":
                data["actions"][item] = {"erp": "sales_order"}
            else:
                return None
        if drop:
            data["workflows"] = [x for i, x in enumerate(data["workflows"]) if i not in drop]
            kept = [k for i, k in enumerate(kept) if i not in drop]
        try:
            spec = schema.RulesSpec.model_validate(data)
            break
        except ValidationError as again:
            errors = again.errors()
    else:
        return None

    def where(at: DataPath) -> Where:
        at = original(at)
        for n in range(len(at), 0, -1):
            if at[:n] in spelt:
                at = (*at[:n - 1], spelt[at[:n]], *at[n:])
                break
        return locate(at)
    return spec, where


def version_of(paths: Iterable[Path]) -> str:
    h = hashlib.sha256()
    for p in sorted(paths):
        h.update(p.name.encode())
        h.update(b"\0")
        try:
            h.update(p.read_bytes())
        except OSError:
            pass
    return h.hexdigest()[:12]


def load_rates(mappings_dir: Path) -> tuple[currency.CurrencyRates | None, list[Finding]]:
    """`mappings/currencies.yaml` (none: no rates), or every problem in it."""
    path = mappings_dir / currency.FILE
    if not path.is_file():
        return None, []
    doc, problems = read_yaml(path)
    if doc is None or problems:
        return None, problems
    return currency.rates_from_file(doc.data, lambda at: Where(doc.path, doc.line_of(at)))


def load(rules_dir: Path, mappings_dir: Path, crm: str | None = None,
         mapping_file: Path | None = None) -> Loaded:
    """Everything `check` and every command need, with every problem found."""
    findings: list[Finding] = []
    if mapping_file is not None:
        m = load_mapping_file(mapping_file, findings)
        mappings = {m.crm: (m, mapping_file)} if m else {}
        if m is None and not findings:
            findings.append(Finding("error", "schema", Text("not a CRM mapping (no 'crm:' key)"),
                                    display(mapping_file)))
    else:
        mappings = load_mappings(mappings_dir, findings)
        if not mappings and not any(f.severity == "error" for f in findings):
            findings.append(Finding("error", "schema", Text(
                "no CRM mapping (a file with 'crm: salesforce') in {folder}",
                folder=display(mappings_dir)), display(mappings_dir)))
    # the rates are in the mappings folder, whichever mapping file reads the export
    rates, problems = load_rates(mappings_dir)
    findings += problems
    read = _read_rules(rules_dir, findings)
    spec, docs = read.spec, read.docs
    checked = (spec, read.locate) if spec is not None and read.locate else read.partial
    chosen = crm or ("salesforce" if "salesforce" in mappings else next(iter(mappings), None))
    version = version_of([*yaml_files(rules_dir)] + ([mappings[chosen][1]] if chosen in mappings
                                                      else []))
    rules: RuleSet | None = None
    if checked is not None and mappings:
        if chosen not in mappings:
            findings.append(Finding("error", "schema", Text("no mapping for CRM '{crm}' in "
                                                            "{folder}", crm=chosen,
                                                            folder=display(mappings_dir))))
        seen: set[Finding] = set(findings)
        # The same rules drive every CRM: check them against each mapping, report once.
        for name, (mapping, _) in sorted(mappings.items(), key=lambda kv: kv[0] != chosen):
            compiled, problems = compile_rules(checked[0], mapping, checked[1], version)
            for p in problems:
                if p not in seen:
                    seen.add(p)
                    findings.append(p)
            if name == chosen and spec is not None and compiled is not None:
                # the explanation a sales rep reads in the CRM is in the mapping's language
                label = translate(language_of(compiled.mapping.locale), "rules")
                rules = dataclasses.replace(compiled, explanation_label=label)
    return Loaded(rules, findings, {k: m for k, (m, _) in mappings.items()}, docs, version,
                  rates)
