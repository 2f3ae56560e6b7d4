"""Reading `rules/*.yaml` and `mappings/*.yaml`: YAML with the line of every node kept, shapes
checked by the schema, meaning checked by the core, and every problem reported at once as
`file:line: message`. Nothing here raises at an admin: problems come back as findings."""

from __future__ import annotations

import hashlib
import os
import types
import typing
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from connector.core import schema
from connector.core.findings import Finding, Where, did_you_mean
from connector.core.mapping import Mapping
from connector.core.ruleset import RuleSet, compile_mapping, compile_rules

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


def read_yaml(path: Path) -> tuple[YamlFile | None, list[Finding]]:
    name = display(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        return None, [Finding("error", "schema", f"cannot read the file: {exc}", name)]
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        problem = getattr(exc, "problem", None) or str(exc)
        return None, [Finding("error", "schema",
                              f"not valid YAML: {problem} (check the indentation and the quotes "
                              "around values with ':' or '#')", name,
                              mark.line + 1 if mark else None)]
    finally:
        loader.dispose()
    out = YamlFile(name, None)
    findings: list[Finding] = []
    if node is None:
        return out, findings

    def walk(n: yaml.Node, at: DataPath) -> Any:
        out.lines.setdefault(at, n.start_mark.line + 1)
        if isinstance(n, yaml.MappingNode):
            loader.flatten_mapping(n)
            result: dict[Any, Any] = {}
            for k, v in n.value:
                key = loader.construct_object(k, deep=True)
                if isinstance(key, (dict, list)):
                    findings.append(Finding("error", "schema", "a key must be a plain name",
                                            name, k.start_mark.line + 1))
                    continue
                if key in result:
                    findings.append(Finding(
                        "error", "schema", f"'{key}' appears twice here (first at line "
                        f"{out.lines.get(at + (key,))}); YAML keeps only the last one", name,
                        k.start_mark.line + 1))
                    continue
                out.lines[at + (key,)] = k.start_mark.line + 1
                result[key] = walk(v, at + (key,))
            return result
        if isinstance(n, yaml.SequenceNode):
            return [walk(v, at + (i,)) for i, v in enumerate(n.value)]
        return loader.construct_object(n, deep=True)

    try:
        out.data = walk(node, ())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        findings.append(Finding("error", "schema", f"not valid YAML: {exc}", name,
                                mark.line + 1 if mark else None))
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
    for err in exc.errors():
        loc = tuple(err["loc"])
        at = _data_path(data, loc)
        where: Where = locate(at)
        kind = err["type"]
        if kind == "extra_forbidden":
            parent = _model_at(model, at[:-1])
            allowed = list(parent.model_fields) if parent else []
            name = at[-1] if at else loc[-1]
            message = f"unknown key '{name}'{did_you_mean(str(name), allowed)}"
            if allowed:
                message += "; allowed here: " + ", ".join(
                    (parent.model_fields[a].alias or a) for a in allowed)  # type: ignore[union-attr]
        elif kind == "missing":
            message = f"'{loc[-1]}' is missing here"
            if at:
                message = f"{_dotted(at)}: '{loc[-1]}' is missing"
        else:
            msg = err["msg"].removeprefix("Value error, ")
            message = f"{_dotted(at)}: {msg}" if at else msg
            if kind in ("string_type", "int_type", "decimal_type", "bool_type", "dict_type",
                        "list_type", "literal_error", "decimal_parsing"):
                message += f" (got {err.get('input')!r})"
        if (where, message) in seen:
            continue  # a union reports the same place once per member
        seen.add((where, message))
        findings.append(Finding.at(where, "error", "schema", message))
    return findings


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

    @property
    def ok(self) -> bool:
        return self.rules is not None and not any(f.severity == "error" for f in self.findings)


def yaml_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob("*.y*ml") if p.suffix in (".yaml", ".yml"))


def load_mappings(folder: Path, findings: list[Finding]) -> dict[str, tuple[Mapping, Path]]:
    out: dict[str, tuple[Mapping, Path]] = {}
    if not folder.is_dir():
        findings.append(Finding("error", "schema", f"no mappings folder at {display(folder)} "
                                "(use --mappings DIR)", display(folder)))
        return out
    for path in yaml_files(folder):
        mapping = load_mapping_file(path, findings)
        if mapping is not None:
            out.setdefault(mapping.crm, (mapping, path))
    return out


def load_mapping_file(path: Path, findings: list[Finding]) -> Mapping | None:
    doc, problems = read_yaml(path)
    findings += problems
    if doc is None or problems:
        return None
    if not isinstance(doc.data, dict):
        findings.append(Finding("error", "schema", "a mapping file is a set of keys "
                                "(crm:, object:, fields: ...)", doc.path, 1))
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
    findings += problems
    return None if problems else mapping


def load_rules_spec(folder: Path, findings: list[Finding]
                    ) -> tuple[schema.RulesSpec | None, list[YamlFile], Any]:
    docs: list[YamlFile] = []
    if not folder.is_dir():
        findings.append(Finding("error", "schema", f"no rules folder at {display(folder)} "
                                "(use --rules DIR)", display(folder)))
        return None, docs, None
    paths = yaml_files(folder)
    if not paths:
        findings.append(Finding("error", "schema", f"no *.yaml files in {display(folder)}",
                                display(folder)))
    merged: dict[str, Any] = {}
    owner: dict[str, YamlFile] = {}
    for path in paths:
        doc, problems = read_yaml(path)
        findings += problems
        if doc is None:
            continue
        docs.append(doc)
        if doc.data is None:
            continue
        if not isinstance(doc.data, dict):
            findings.append(Finding("error", "schema", "a rule file is a set of top-level keys "
                                    "(factors:, workflows:, computed: ...)", doc.path, 1))
            continue
        for key, value in doc.data.items():
            if key in merged:
                first = owner[key]
                findings.append(Finding(
                    "error", "schema", f"'{key}' is already defined in {first.path}:"
                    f"{first.lines.get((key,))}; a top-level key lives in one file only",
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
        return None, docs, locate
    return spec, docs, locate


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


def load(rules_dir: Path, mappings_dir: Path, crm: str | None = None,
         mapping_file: Path | None = None) -> Loaded:
    """Everything `check` and every command need, with every problem found."""
    findings: list[Finding] = []
    if mapping_file is not None:
        m = load_mapping_file(mapping_file, findings)
        mappings = {m.crm: (m, mapping_file)} if m else {}
        if m is None and not findings:
            findings.append(Finding("error", "schema", "not a CRM mapping (no 'crm:' key)",
                                    display(mapping_file)))
    else:
        mappings = load_mappings(mappings_dir, findings)
        if not mappings and not any(f.severity == "error" for f in findings):
            findings.append(Finding("error", "schema", "no CRM mapping (a file with 'crm: "
                                    f"salesforce') in {display(mappings_dir)}",
                                    display(mappings_dir)))
    spec, docs, locate = load_rules_spec(rules_dir, findings)
    chosen = crm or ("salesforce" if "salesforce" in mappings else next(iter(mappings), None))
    version = version_of([*yaml_files(rules_dir)] + ([mappings[chosen][1]] if chosen in mappings
                                                      else []))
    rules: RuleSet | None = None
    if spec is not None and mappings:
        if chosen not in mappings:
            findings.append(Finding("error", "schema", f"no mapping for CRM '{chosen}' in "
                                    f"{display(mappings_dir)}"))
        seen: set[Finding] = set(findings)
        # The same rules drive every CRM: check them against each mapping, report once.
        for name, (mapping, _) in sorted(mappings.items(), key=lambda kv: kv[0] != chosen):
            compiled, problems = compile_rules(spec, mapping, locate, version)
            for p in problems:
                if p not in seen:
                    seen.add(p)
                    findings.append(p)
            if name == chosen:
                rules = compiled
    return Loaded(rules, findings, {k: m for k, (m, _) in mappings.items()}, docs, version)
