"""mappings/hubspot.yaml: the same canonical names and writeback as mappings/salesforce.yaml, so
the same rules/ drive both CRMs; `check` validates the rules against both mappings and passes;
every stage and factor value the rules name has a stage label in the example portal."""

from __future__ import annotations

import json
from pathlib import Path

from connector.cli import main
from connector.files import load
from tests.fake_hubspot import fixture

ROOT = Path(__file__).parent.parent
RULES, MAPPINGS = ROOT / "rules", ROOT / "mappings"


def test_both_mappings_give_the_rules_the_same_canonical_fields_and_writeback():
    loaded = load(RULES, MAPPINGS, crm="hubspot")
    assert loaded.ok, [str(f) for f in loaded.findings]
    hubspot, salesforce = loaded.mappings["hubspot"], loaded.mappings["salesforce"]
    assert (hubspot.crm, hubspot.object, hubspot.id_field, hubspot.modified_field) == (
        "hubspot", "deals", "hs_object_id", "hs_lastmodifieddate")
    assert hubspot.canonical_names == salesforce.canonical_names
    assert hubspot.writeback == salesforce.writeback == ("probability", "weighted_amount",
                                                         "rule")
    assert {n: t.kind for n, t in hubspot.types.items()} == {
        n: t.kind for n, t in salesforce.types.items()}
    assert loaded.rules is not None and loaded.rules.mapping is hubspot


def test_the_rules_compile_the_same_against_either_crm():
    hubspot = load(RULES, MAPPINGS, crm="hubspot").rules
    salesforce = load(RULES, MAPPINGS, crm="salesforce").rules
    assert hubspot is not None and salesforce is not None
    assert [w.name for w in hubspot.workflows] == [w.name for w in salesforce.workflows]
    assert [(f.name, f.field, f.values) for f in hubspot.factors] == [
        (f.name, f.field, f.values) for f in salesforce.factors]
    assert hubspot.version != salesforce.version     # the mapping file is part of the version


def test_check_validates_the_rules_against_both_mappings_and_passes(capsys):
    assert main(["check", "--rules", str(RULES), "--mappings", str(MAPPINGS),
                 "--format", "json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is True
    assert [f for f in report["findings"] if f["severity"] == "error"] == []


def test_a_broken_hubspot_mapping_fails_check(tmp_path, capsys):
    mappings = tmp_path / "mappings"
    mappings.mkdir()
    for name in ("salesforce.yaml", "erp.yaml"):
        (mappings / name).write_text((MAPPINGS / name).read_text())
    text = (MAPPINGS / "hubspot.yaml").read_text().replace("  stage: dealstage",
                                                           "  stge: dealstage")
    (mappings / "hubspot.yaml").write_text(text)
    assert main(["check", "--rules", str(RULES), "--mappings", str(mappings),
                 "--format", "json"]) == 1
    findings = json.loads(capsys.readouterr().out)["findings"]
    assert any("unknown field 'stage' (did you mean 'stge'?)" in f["message"]
               for f in findings if f["severity"] == "error")


def test_the_example_portal_labels_every_stage_the_rules_name():
    loaded = load(RULES, MAPPINGS, crm="hubspot")
    assert loaded.rules is not None and loaded.rules.closed is not None
    labels = {s["label"].casefold() for p in fixture("deal_pipelines.json")["results"]
              for s in p["stages"]}
    stage = next(f for f in loaded.rules.factors if f.field == "stage")
    assert {v.casefold() for v in stage.values} <= labels
    assert loaded.rules.closed.won <= labels
