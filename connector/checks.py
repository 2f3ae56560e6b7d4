"""The checks `check` makes beyond the rule set itself, because they read more files: the
action templates (every variable must be a field the rules know) and `mappings/erp.yaml`."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

import jinja2
from jinja2 import meta, nodes

from connector.core.expressions import RESERVED
from connector.core.findings import Finding, Where, did_you_mean
from connector.core.ruleset import RuleSet
from connector.core.schema import AudienceSpec
from connector.errors import Text
from connector.files import display
from connector.templates import ENV_REFERENCE, make_environment, syntax_problem


def known_names(rules: RuleSet) -> set[str]:
    """What a template may read: the mapping's fields, computed fields, factors, the fields
    workflows set, and the reserved names."""
    names = set(rules.mapping.canonical_names) | set(rules.computed) | RESERVED
    names |= {f.name for f in rules.factors}
    names |= {k for w in rules.workflows for k in w.sets}
    return names


def _unknown(source: str, known: set[str], env: jinja2.Environment
             ) -> list[tuple[str, int]] | tuple[int, str]:
    """(name, line) of every variable the template reads that is not known, or the syntax
    error's line and what it is."""
    try:
        tree = env.parse(source)
    except jinja2.TemplateSyntaxError as exc:
        return exc.lineno, syntax_problem(exc)
    free = meta.find_undeclared_variables(tree) - set(env.globals)
    lines: dict[str, int] = {}
    for node in tree.find_all(nodes.Name):
        if node.name in free:
            lines.setdefault(node.name, node.lineno)
    return sorted((n, lines.get(n, 1)) for n in free - known)


APPROVAL_NAMES = {"approve_url", "reject_url", "expires_on"}  # what an approval email adds
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # RFC 9110's token


def check_templates(rules: RuleSet, rules_dir: Path,
                    environ: Mapping[str, str] | None = None) -> list[Finding]:
    findings: list[Finding] = []
    known = known_names(rules)
    env = make_environment(rules_dir)
    for action in rules.actions.values():
        where = action.where
        texts: list[tuple[str, str]] = []
        if action.kind in ("email", "approval"):
            spec = action.spec
            texts += [("to", t) for t in spec.to] + [("cc", t) for t in spec.cc]
            texts.append(("subject", spec.subject))
            if spec.body is not None:
                texts.append(("body", spec.body))
            if spec.template:
                path = rules_dir / spec.template
                if not path.is_file():
                    findings.append(Finding.at(where, "error", "template",
                                               Text("action '{action}': template {template} "
                                                    "not found in {folder}", action=action.name,
                                                    template=spec.template,
                                                    folder=display(rules_dir))))
                else:
                    extra = APPROVAL_NAMES if action.kind == "approval" else set()
                    findings += _file_findings(action.name, path, known | extra, env)
        elif action.kind == "http":
            findings += [Finding.at(where, "error", "schema",
                                    Text("action '{action}' headers: {name!r} is not an HTTP "
                                         "header name (letters, digits and - are)",
                                         action=action.name, name=name))
                         for name in action.spec.headers if not _HEADER_NAME.fullmatch(name)]
            texts.append(("url", action.spec.url))
            texts += [(f"headers.{k}", v) for k, v in action.spec.headers.items()]
            texts += [("json", t) for t in _strings(action.spec.json_body)]
        elif action.kind == "audience":
            spec = action.spec
            texts.append(("email", spec.email))
            texts += [(f"merge_fields.{k}", t) for k, v in spec.merge_fields.items()
                      for t in _strings(v)]
            texts += [("tags", t) for t in spec.tags]
            texts += [("remove_tags", t) for t in spec.remove_tags]
            findings += _audience_findings(action.name, spec, where, texts,
                                           os.environ if environ is None else environ)
        for part, text in texts:
            problems = _unknown(text, known | (APPROVAL_NAMES if action.kind == "approval"
                                               else set()), env)
            if isinstance(problems, tuple):
                findings.append(Finding.at(where, "error", "template", Text(
                    "action '{action}' {part}: line {line}: {problem}", action=action.name,
                    part=part, line=problems[0], problem=problems[1])))
                continue
            for name, _ in problems:
                findings.append(Finding.at(where, "error", "template", Text(
                    "action '{action}' {part}: unknown variable '{name}'{hint}",
                    action=action.name, part=part, name=name, hint=did_you_mean(name, known))))
    return findings


# Mailchimp's merge tags and Brevo's attribute names are capitals (Mailchimp: 10 at most).
_FIELD_NAME = {"mailchimp": re.compile(r"[A-Z][A-Z0-9_]{0,9}"),
               "brevo": re.compile(r"[A-Z][A-Z0-9_]*")}


def _audience_findings(name: str, spec: AudienceSpec, where: Where,
                       texts: list[tuple[str, str]], environ: Mapping[str, str]
                       ) -> list[Finding]:
    """An audience action names its list and reads the address from the record; `texts`
    (part, text) are the rest the admin wrote in it, which may read `${NAME}` too."""
    out = []
    if "{" not in ENV_REFERENCE.sub("", spec.email):  # `${NAME}` is one address for all
        out.append(Finding.at(where, "error", "template", Text(
            "action '{action}' email: {email!r} is the same address for every deal: use the "
            "contact's field, such as \"{{{{ contact_email }}}}\"", action=name,
            email=spec.email)))
    for part, text in [("list", str(spec.list_id)), *texts]:
        for variable in ENV_REFERENCE.findall(text):
            if not environ.get(variable):
                out.append(Finding.at(where, "warning", "reference", Text(
                    "action '{action}' {part}: {variable} is not set here; sync needs it",
                    action=name, part=part, variable=variable)))
    if spec.provider == "brevo" and not ENV_REFERENCE.search(str(spec.list_id)) \
            and not str(spec.list_id).isdigit():
        out.append(Finding.at(where, "error", "schema", Text(
            "action '{action}' list: Brevo list ids are numbers, not {list!r}", action=name,
            list=spec.list_id)))
    for key in spec.merge_fields:
        if not _FIELD_NAME[spec.provider].fullmatch(key):
            out.append(Finding.at(where, "warning", "schema", Text(
                "action '{action}' merge_fields.{key}: {provider} names its fields in "
                "capitals, such as FNAME: check the list's fields", action=name, key=key,
                provider=spec.provider)))
    return out


def _file_findings(action: str, path: Path, known: set[str], env: jinja2.Environment
                   ) -> list[Finding]:
    shown = display(path)
    try:
        source = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return [Finding("error", "template", Text("cannot read the template: {reason}",
                                                  reason=str(exc)), shown)]
    problems = _unknown(source, known, env)
    if isinstance(problems, tuple):
        return [Finding("error", "template", Text("action '{action}': {problem}", action=action,
                                                  problem=problems[1]), shown, problems[0] or 1)]
    return [Finding("error", "template", Text("unknown variable '{name}'{hint} (used by action "
                                              "'{action}')", name=name,
                                              hint=did_you_mean(name, known), action=action),
                    shown, line)
            for name, line in problems]


def _strings(obj: object) -> list[str]:
    if isinstance(obj, str):
        return [obj]
    if isinstance(obj, dict):
        return [s for v in obj.values() for s in _strings(v)]
    if isinstance(obj, list):
        return [s for v in obj for s in _strings(v)]
    return []


def check_erp(rules: RuleSet, mappings_dir: Path) -> list[Finding]:
    """mappings/erp.yaml, when the rules have an ERP action (or the file exists)."""
    path = mappings_dir / "erp.yaml"
    uses_erp = any(a.kind == "erp" for a in rules.actions.values())
    if not path.is_file():
        if uses_erp:
            name = next(a for a in rules.actions.values() if a.kind == "erp")
            return [Finding.at(name.where, "error", "reference",
                               Text("action '{action}' syncs to the ERP, but {file} does not "
                                    "exist", action=name.name, file=display(path)))]
        return []
    from connector.erp import load_erp_mapping

    _, findings = load_erp_mapping(path, known_names(rules))
    return findings
