"""`mappings/erp.yaml`: every problem found at once with its line, and each opportunity
rendered into a SalesOrder with Decimal amounts."""

from __future__ import annotations

import textwrap
from decimal import Decimal
from pathlib import Path

import pytest

from connector.core.findings import Finding
from connector.erp import Customer, ErpMapping, SalesOrder, load_erp_mapping
from connector.errors import RecordError
from connector.files import load_mapping_file

ROOT = Path(__file__).resolve().parents[1]
KNOWN = {"id", "name", "amount", "account_name", "close_date", "stage"}
GOOD = """\
erp: tryton
customer:
  match: {name: "{{ account_name }}"}
  create: {name: "{{ account_name }}"}
order:
  header:
    reference: "{{ id }}"
    description: "{{ name }}"
  lines:
    - description: "{{ name }}"
      quantity: 1
      unit_price: "{{ amount }}"
"""


def load(tmp_path: Path, text: str) -> tuple[ErpMapping | None, list[Finding]]:
    path = tmp_path / "erp.yaml"
    path.write_text(textwrap.dedent(text))
    return load_erp_mapping(path, KNOWN)


def where(findings: list[Finding]) -> list[tuple[int | None, str]]:
    return [(f.line, f.message) for f in findings]


def test_the_shipped_example_is_valid_for_the_shipped_salesforce_mapping() -> None:
    problems: list[Finding] = []
    crm = load_mapping_file(ROOT / "mappings" / "salesforce.yaml", problems)
    assert crm is not None, problems

    mapping, findings = load_erp_mapping(ROOT / "mappings" / "erp.yaml", crm.canonical_names)

    assert findings == []
    assert mapping is not None and mapping.erp == "tryton"


def test_a_deal_becomes_an_order_with_decimal_amounts(tmp_path: Path) -> None:
    mapping, findings = load(tmp_path, GOOD)
    assert mapping is not None, findings

    order = mapping.order_for({"id": "006A", "name": "Big deal", "amount": Decimal("1234.10"),
                               "account_name": "Acme Corp"})

    assert order == SalesOrder(
        "006A", Customer({"name": "Acme Corp"}, {"name": "Acme Corp"}),
        {"description": "Big deal"},
        ({"description": "Big deal", "quantity": Decimal(1), "unit_price": Decimal("1234.10")},))
    assert all(isinstance(v, Decimal) for v in (order.lines[0]["quantity"],
                                                 order.lines[0]["unit_price"]))


def test_literal_and_text_amounts_become_exact_decimals(tmp_path: Path) -> None:
    mapping, findings = load(tmp_path, GOOD.replace("quantity: 1", "quantity: 0.1").replace(
        'unit_price: "{{ amount }}"', 'unit_price: "{{ amount }}0"'))
    assert mapping is not None, findings

    line = mapping.order_for({"id": "1", "name": "n", "amount": Decimal("19.9"),
                              "account_name": "A"}).lines[0]

    assert line["quantity"] == Decimal("0.1")  # not 0.1000000000000000055511151231257827
    assert line["unit_price"] == Decimal("19.90")


@pytest.mark.parametrize(("values", "message"), [
    ({"account_name": None}, "customer.match.name is empty"),
    ({"account_name": "  "}, "customer.match.name is empty"),
    ({"id": None}, "order.header.reference is empty"),
    ({"amount": None}, r"order.lines\[0\].unit_price: None is not an amount"),
    ({"amount": "12,5 EUR"}, "is not an amount"),
])
def test_a_deal_that_cannot_become_an_order_is_a_record_error(
        tmp_path: Path, values: dict[str, object], message: str) -> None:
    mapping, _ = load(tmp_path, GOOD)
    assert mapping is not None
    deal = {"id": "006A", "name": "n", "amount": Decimal(1), "account_name": "A"} | values

    with pytest.raises(RecordError, match=message):
        mapping.order_for(deal)


def test_a_missing_field_at_render_time_names_the_place_and_the_template(tmp_path: Path
                                                                         ) -> None:
    mapping, _ = load(tmp_path, GOOD)
    assert mapping is not None

    with pytest.raises(RecordError, match=r"order.header: template '\{\{ name \}\}'"):
        mapping.order_for({"id": "006A", "amount": Decimal(1), "account_name": "A"})


def test_every_problem_is_reported_at_once_with_its_line(tmp_path: Path) -> None:
    mapping, findings = load(tmp_path, """\
        erp: tryton
        customer:
          match: {name: "{{ acount_name }}"}
          create: {name: "{{ account_name }}"}
        order:
          header:
            reference: "{{ id }}"
            description: "{{ name }"
          lines:
            - description: "{{ name }}"
              quantity: lots
            - description: x
              quantity: 1
        """)

    assert mapping is None
    assert where(findings) == [
        (3, "unknown variable 'acount_name' (did you mean 'account_name'?); the fields are the "
            "CRM mapping's canonical names and 'id'"),
        (8, "line 1: unexpected '}'"),
        (10, "order.lines[0]: 'unit_price' is missing"),
        (11, "order.lines[0].quantity: 'lots' is not a number"),
        (12, "order.lines[1]: 'unit_price' is missing"),
    ]
    assert {f.kind for f in findings} == {"template", "schema"}


def test_shape_errors_name_the_key_and_the_line(tmp_path: Path) -> None:
    mapping, findings = load(tmp_path, GOOD.replace("erp: tryton", "erp: sap").replace(
        "  header:", "  headers:"))

    assert mapping is None
    lines = where(findings)
    assert (1, "erp: Input should be 'tryton', 'rest' or 'odoo' (got 'sap')") in lines
    assert any(line == 6 and "unknown key 'headers'" in msg and "did you mean 'header'" in msg
               for line, msg in lines), lines


def test_a_reference_that_is_the_same_for_every_deal_is_an_error(tmp_path: Path) -> None:
    mapping, findings = load(tmp_path, GOOD.replace('reference: "{{ id }}"',
                                                    'reference: "SO"'))
    assert mapping is None
    assert where(findings) == [(7, "the reference is the same for every deal, so every deal "
                                   "would map to one order: use \"{{ id }}\"")]


def test_a_reference_without_the_id_is_a_warning(tmp_path: Path) -> None:
    mapping, findings = load(tmp_path, GOOD.replace('reference: "{{ id }}"',
                                                    'reference: "{{ name }}"'))
    assert mapping is not None
    assert [(f.severity, f.line) for f in findings] == [("warning", 7)]


def test_a_missing_reference_is_an_error(tmp_path: Path) -> None:
    mapping, findings = load(tmp_path, GOOD.replace('    reference: "{{ id }}"\n', ""))
    assert mapping is None
    assert findings[0].line == 6 and "'reference' is missing" in findings[0].message


def test_rest_reserves_the_body_keys(tmp_path: Path) -> None:
    mapping, findings = load(tmp_path, GOOD.replace("erp: tryton", "erp: rest").replace(
        'description: "{{ name }}"\n  lines', 'customer: x\n  lines'))
    assert mapping is None
    assert where(findings) == [(8, "'customer' is reserved in the REST order body; rename "
                                   "this header field")]


def test_an_odoo_mapping_names_a_product_per_line_and_leaves_the_connectors_fields(
        tmp_path: Path) -> None:
    odoo = GOOD.replace("erp: tryton", "erp: odoo").replace(
        '    description: "{{ name }}"\n  lines', '    client_order_ref: "{{ name }}"\n  lines')
    mapping, findings = load(tmp_path, odoo)
    assert mapping is None
    assert where(findings) == [
        (8, "'client_order_ref' is set by the connector on an Odoo order (the external id, "
            "the customer, the opportunity id); remove it"),
        (10, "order.lines[0]: an Odoo sale line needs a product: add 'product: <internal "
            "reference or name>'")]
    fixed = GOOD.replace("erp: tryton", "erp: odoo").replace("quantity: 1",
                                                             "quantity: 1\n      product: SRV")
    mapping, findings = load(tmp_path, fixed)
    assert mapping is not None and findings == []
