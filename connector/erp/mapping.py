"""`mappings/erp.yaml`: what a closed-won deal becomes in the ERP. Read with the line of every
node, checked (shape, templates, the variables they use) with every problem reported at once,
then rendered per opportunity into a SalesOrder."""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from connector.core.findings import Finding, Where, did_you_mean
from connector.erp.port import Customer, SalesOrder
from connector.errors import RecordError, Text
from connector.files import DataPath, YamlFile, read_yaml, validation_findings
from connector.templates import (
    InvalidTemplate,
    TemplateRenderError,
    render_structure,
    template_variables,
)

ErpKind = Literal["tryton", "rest", "odoo"]

# Line fields that are amounts: always Decimal in a SalesOrder, so no float rounding reaches
# the ERP ("1234.10" must arrive as 1234.10, not 1234.0999...).
DECIMAL_LINE_FIELDS = ("quantity", "unit_price")
# The REST body carries these itself, beside the header's fields.
REST_RESERVED = ("customer", "lines")
# The Odoo adapter sets these itself: the external id, the customer, the opportunity id.
ODOO_RESERVED = ("id", "partner_id", "client_order_ref", "order_line")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CustomerSpec(_Strict):
    match: dict[str, Any] = Field(min_length=1)
    create: dict[str, Any] = Field(min_length=1)


class OrderSpec(_Strict):
    header: dict[str, Any]
    lines: list[dict[str, Any]] = Field(min_length=1)


class ErpMappingSpec(_Strict):
    erp: ErpKind
    customer: CustomerSpec
    order: OrderSpec


@dataclass(frozen=True)
class ErpMapping:
    """The checked `mappings/erp.yaml`: templates still unrendered."""

    erp: ErpKind
    customer_match: dict[str, Any]
    customer_create: dict[str, Any]
    header: dict[str, Any]
    lines: tuple[dict[str, Any], ...]
    source: str | None = None

    def order_for(self, values: Mapping[str, Any],
                  environ: Mapping[str, str] | None = None) -> SalesOrder:
        """The sales order for one opportunity's canonical values, `${NAME}` read from
        `environ` (left as written without it: a preview). A template that fails, an empty
        reference or customer key, or an amount that is not a number raises RecordError for
        this opportunity alone."""
        match = self._render("customer.match", self.customer_match, values, environ)
        for key, value in match.items():
            if value is None or (isinstance(value, str) and not value.strip()):
                # An empty key would match (or create) one shared blank customer for every deal.
                raise RecordError(Text("{at} is empty for this opportunity: the ERP customer "
                                       "cannot be found or created",
                                       at=self._where("customer.match." + key)))
        create = self._render("customer.create", self.customer_create, values, environ)
        header = self._render("order.header", self.header, values, environ)
        reference = header.pop("reference", None)
        if reference is None or not str(reference).strip():
            raise RecordError(Text("{at} is empty for this opportunity: it is the order's "
                                   "idempotency key", at=self._where("order.header.reference")))
        lines = []
        for i, line in enumerate(self.lines):
            rendered = self._render(f"order.lines[{i}]", line, values, environ)
            for key in DECIMAL_LINE_FIELDS:
                if key in rendered:
                    rendered[key] = _decimal(rendered[key], self._where(f"order.lines[{i}].{key}"))
            lines.append(rendered)
        return SalesOrder(str(reference).strip(), Customer(match, create), header, tuple(lines))

    def _where(self, at: str) -> str:
        return f"{self.source} {at}" if self.source else at

    def _render(self, at: str, obj: dict[str, Any], values: Mapping[str, Any],
                environ: Mapping[str, str] | None) -> dict[str, Any]:
        try:
            rendered: dict[str, Any] = render_structure(obj, values, environ)
        except TemplateRenderError as exc:  # InvalidTemplate stays a ConfigurationError
            raise RecordError(Text("{at}: {problem}", at=self._where(at),
                                   problem=exc.text)) from exc
        return rendered


def _decimal(value: Any, where: str) -> Decimal:
    if isinstance(value, bool) or value is None:
        raise RecordError(Text("{at}: {value!r} is not an amount", at=where, value=value))
    if isinstance(value, Decimal):
        return value
    if isinstance(value, int):
        return Decimal(value)
    if isinstance(value, float):
        return Decimal(repr(value))  # the shortest text that reads back as this float
    try:
        return Decimal(str(value).strip())
    except InvalidOperation:
        raise RecordError(Text("{at}: {value!r} is not an amount", at=where,
                               value=str(value))) from None


# --- reading and checking the file ------------------------------------------------------------

def load_erp_mapping(path: Path, known_names: Collection[str]
                     ) -> tuple[ErpMapping | None, list[Finding]]:
    """Read and check `mappings/erp.yaml`; `known_names` are the canonical fields templates may
    use (the CRM mapping's names and `id`). Every problem comes back as a finding with file and
    line; the mapping is None when any is an error."""
    doc, findings = read_yaml(path)
    if doc is None or findings:
        return None, findings
    if not isinstance(doc.data, dict):
        return None, [Finding("error", "schema", Text("the ERP mapping is a set of keys (erp:, "
                                                      "customer:, order:)"), doc.path, 1)]

    def locate(at: DataPath) -> Where:
        return Where(doc.path, doc.line_of(at))

    try:
        spec = ErpMappingSpec.model_validate(doc.data)
    except ValidationError as exc:
        return None, validation_findings(exc, ErpMappingSpec, doc.data, locate)
    findings = _check(spec, doc, set(known_names))
    if any(f.severity == "error" for f in findings):
        return None, findings
    mapping = ErpMapping(spec.erp, dict(spec.customer.match), dict(spec.customer.create),
                         dict(spec.order.header), tuple(dict(x) for x in spec.order.lines),
                         doc.path)
    return mapping, findings


def _check(spec: ErpMappingSpec, doc: YamlFile, known: set[str]) -> list[Finding]:
    findings: list[Finding] = []

    def add(at: DataPath, message: str, kind: Literal["schema", "template"] = "schema",
            severity: Literal["error", "warning"] = "error") -> None:
        findings.append(Finding(severity, kind, message, doc.path, doc.line_of(at)))

    for at, value in _leaves(doc.data, ()):
        if isinstance(value, str):
            _check_template(value, at, known, add)

    header = spec.order.header
    if "reference" not in header:
        add(("order", "header"), Text("'reference' is missing: it is the order's idempotency "
                                      "key, usually \"{{ id }}\" (the opportunity id)"))
    elif isinstance(header["reference"], str):
        try:
            used = template_variables(header["reference"])
        except InvalidTemplate:
            used = {"id"}  # already reported as a template error
        if not used:
            add(("order", "header", "reference"), Text("the reference is the same for every "
                                                       "deal, so every deal would map to one "
                                                       "order: use \"{{ id }}\""))
        elif "id" not in used:
            add(("order", "header", "reference"), Text("the reference does not use '{{ id }}': "
                                                       "two opportunities could share one order"),
                severity="warning")
    if spec.erp == "rest":
        for key in REST_RESERVED:
            if key in header:
                add(("order", "header", key), Text("'{key}' is reserved in the REST order body; "
                                                   "rename this header field", key=key))
    if spec.erp == "odoo":
        for key in ODOO_RESERVED:
            if key in header:
                add(("order", "header", key), Text(
                    "'{key}' is set by the connector on an Odoo order (the external id, the "
                    "customer, the opportunity id); remove it", key=key))
        for i, line in enumerate(spec.order.lines):
            if not {"product", "product_id"} & set(line):
                add(("order", "lines", i), Text(
                    "order.lines[{index}]: an Odoo sale line needs a product: add 'product: "
                    "<internal reference or name>'", index=i))
    for i, line in enumerate(spec.order.lines):
        for key in DECIMAL_LINE_FIELDS:
            if key not in line:
                add(("order", "lines", i), Text("order.lines[{index}]: '{key}' is missing",
                                                index=i, key=key))
            elif not isinstance(line[key], str) or "{" not in line[key]:
                try:
                    _decimal(line[key], "")
                except RecordError:
                    add(("order", "lines", i, key),
                        Text("order.lines[{index}].{key}: {value!r} is not a number",
                             index=i, key=key, value=line[key]))
    return sorted(findings, key=lambda f: f.line or 0)  # in the order the admin reads the file


def _check_template(source: str, at: DataPath, known: set[str],
                    add: Callable[..., None]) -> None:
    try:
        used = template_variables(source)
    except InvalidTemplate as exc:
        add(at, exc.problem, "template")
        return
    for name in sorted(used - known):
        add(at, Text("unknown variable '{name}'{hint}; the fields are the CRM mapping's "
                     "canonical names and 'id'", name=name, hint=did_you_mean(name, sorted(known))),
            "template")


def _leaves(data: Any, at: DataPath) -> list[tuple[DataPath, Any]]:
    if isinstance(data, dict):
        return [leaf for k, v in data.items() for leaf in _leaves(v, (*at, k))]
    if isinstance(data, list):
        return [leaf for i, v in enumerate(data) for leaf in _leaves(v, (*at, i))]
    return [(at, data)]
