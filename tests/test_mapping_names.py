"""Mapping names are API names: `object:`, `id:`, `modified:` and every CRM field are pasted into
SOQL and HubSpot's filters, so anything but letters, digits and underscores (and the dots of a
relationship path) is refused by `check` at its file and line, for both CRMs."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from connector.cli import main

ROOT = Path(__file__).resolve().parent.parent
INJECTIONS = ["Opportunity WHERE Name != null) OR (Id", "Name, (SELECT Id FROM Notes)", "Name'",
              "Amount--", "Account. Name", "Account..Name", "1Name", "Name\nFROM User", "",
              "hs_object_id\" OR \"1\"=\"1", "dealname/*"]


def copy(tmp_path: Path) -> tuple[Path, Path]:
    shutil.copytree(ROOT / "rules", tmp_path / "rules")
    shutil.copytree(ROOT / "mappings", tmp_path / "mappings")
    return tmp_path / "rules", tmp_path / "mappings"


def check(capsys, rules: Path, mappings: Path) -> tuple[int, str]:
    code = main(["check", "--rules", str(rules), "--mappings", str(mappings)])
    out = capsys.readouterr()
    return code, out.out + out.err


def replace_line(path: Path, pattern: str, new: str) -> int:
    """Put `new` in place of the line matching `pattern`; its line number."""
    lines = path.read_text().splitlines()
    for i, line in enumerate(lines):
        if re.match(pattern, line):
            lines[i] = new
            path.write_text("\n".join(lines) + "\n")
            return i + 1
    raise AssertionError(pattern)


def quoted(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


@pytest.mark.parametrize("crm, key, pattern", [
    ("salesforce", "object", r"^object:"), ("salesforce", "id", r"^id:"),
    ("salesforce", "modified", r"^modified:"), ("salesforce", "  name", r"^  name:"),
    ("salesforce", "  owner_email", r"^  owner_email:"),
    ("hubspot", "object", r"^object:"), ("hubspot", "id", r"^id:"),
    ("hubspot", "  amount", r"^  amount:"), ("hubspot", "  owner_name", r"^  owner_name:"),
])
@pytest.mark.parametrize("bad", INJECTIONS)
def test_a_name_that_is_not_an_api_name_is_refused_at_its_line(tmp_path, capsys, crm, key,
                                                              pattern, bad):
    rules, mappings = copy(tmp_path)
    line = replace_line(mappings / f"{crm}.yaml", pattern, f"{key}: {quoted(bad)}")
    code, out = check(capsys, rules, mappings)
    assert code == 1
    assert f"{crm}.yaml:{line}: error" in out and "is not an API name" in out, out
    assert "Traceback" not in out


@pytest.mark.parametrize("crm, key, pattern, good", [
    ("salesforce", "object", r"^object:", "Custom_Deal__c"),
    ("salesforce", "  account_name", r"^  account_name:", "Account.Parent.Owner.Name"),
    ("salesforce", "  name", r"^  name:", "ns__Field_Name__c"),
    ("hubspot", "object", r"^object:", "0-3"),          # deals by their object type id
    ("hubspot", "object", r"^object:", "2-1234567"),    # a custom object
    ("hubspot", "  account_name", r"^  account_name:", "hs_primary_associated_company.name"),
])
def test_api_names_and_relationship_paths_pass(tmp_path, capsys, crm, key, pattern, good):
    rules, mappings = copy(tmp_path)
    replace_line(mappings / f"{crm}.yaml", pattern, f"{key}: {good}")
    code, out = check(capsys, rules, mappings)
    assert "not an API name" not in out and code == 0, out


def test_an_export_mapping_of_column_labels_reads_exports_and_never_reaches_the_crm(tmp_path):
    """A Salesforce report names its columns by label ("Close Date"): a mapping that says
    `labels: true` may use them, reads exports with them, and is refused for the CRM itself."""
    from connector.core.mapping import Mapping
    from connector.crm import open_crm
    from connector.errors import ConfigurationError
    from connector.files import load

    label_mapping = ROOT / "tests" / "exports" / "mappings" / "report_en.yaml"
    loaded = load(ROOT / "rules", ROOT / "mappings", mapping_file=label_mapping)
    assert loaded.ok, loaded.findings
    mapping = loaded.rules.mapping
    assert mapping.labels and mapping.fields["close_date"] == "Close Date"
    with pytest.raises(ConfigurationError, match="labels: true"):
        open_crm(None, mapping, None)
    # without the key, the same labels are refused as API names
    plain = tmp_path / "report.yaml"
    plain.write_text(label_mapping.read_text().replace("labels: true", "labels: false"))
    refused = load(ROOT / "rules", ROOT / "mappings", mapping_file=plain)
    assert not refused.ok and any("is not an API name" in f.message for f in refused.findings)
    assert isinstance(mapping, Mapping)
