"""Reading the rule and mapping files (connector/files.py): the line of every key, duplicates,
YAML's traps, one rule set merged from several files, and every problem reported at once."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from connector.core.findings import Finding
from connector.files import load, load_mappings, load_rules_spec, read_yaml, version_of

MAPPING = """\
crm: salesforce
object: Opportunity
id: Id
modified: SystemModstamp
fields:
  name: Name
  stage: StageName
  amount: Amount
  proposal_type: Proposal_Type__c
  probability: Probability
writeback: [probability]
types:
  amount: money
"""

FACTORS = """\
# the factors
factors:
  stage:
    field: stage
    values: [Negotiation, Proposal, Prospecting]
  proposal:
    field: proposal_type
    values: [Firm, Budgetary]
    empty: Budgetary
closed:
  field: stage
  won: [Closed Won]
  lost: [Closed Lost]
"""

WORKFLOWS = """\
workflows:
  - name: p80
    when: {stage: Negotiation, proposal: Firm}
    set: {probability: 80}
  - name: p60
    when: {stage: Negotiation, proposal: Budgetary}
    set: {probability: 60}
  - name: p40
    when: {stage: Proposal}
    set: {probability: 40}
  - name: p10
    when: {stage: Prospecting}
    set: {probability: 10}
"""


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A small valid rule set in rules/ and mappings/, with the files named relative to it."""
    monkeypatch.chdir(tmp_path)
    write(tmp_path, "mappings/salesforce.yaml", MAPPING)
    write(tmp_path, "rules/factors.yaml", FACTORS)
    write(tmp_path, "rules/probability.yaml", WORKFLOWS)
    return tmp_path


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Files are named relative to where the admin stands: here, the test's own folder."""
    monkeypatch.chdir(tmp_path)


def errors(findings: list[Finding]) -> list[str]:
    return [str(f) for f in findings if f.severity == "error"]


def read(tmp_path: Path, text: str) -> tuple[object, list[Finding]]:
    doc, findings = read_yaml(write(tmp_path, "f.yaml", text))
    return (doc.data if doc else None), findings


# --- one file ------------------------------------------------------------------------------------

def test_the_line_of_every_key_and_item(tmp_path: Path) -> None:
    doc, findings = read_yaml(write(tmp_path, "rules/probability.yaml", WORKFLOWS))
    assert doc is not None and not findings
    assert doc.lines[("workflows",)] == 1
    assert doc.lines[("workflows", 0)] == 2
    assert doc.lines[("workflows", 0, "name")] == 2
    assert doc.lines[("workflows", 1, "when")] == 6
    assert doc.lines[("workflows", 1, "when", "proposal")] == 6   # a key inside {...}
    assert doc.lines[("workflows", 3, "set", "probability")] == 13
    # A path the file does not have: the line of the nearest part it has.
    assert doc.line_of(("workflows", 2, "actions", 0)) == 8
    assert doc.data["workflows"][3]["set"]["probability"] == 10


def test_lines_count_comments_and_blank_lines(tmp_path: Path) -> None:
    doc, _ = read_yaml(write(tmp_path, "f.yaml", "# a comment\n\n\ncomputed:\n  x: 1\n"))
    assert doc is not None
    assert doc.lines[("computed", "x")] == 5


def test_a_duplicate_key_names_both_lines_and_keeps_reading(tmp_path: Path) -> None:
    data, findings = read(tmp_path, """\
        factors:
          stage:
            field: stage
            values: [A, B]
            field: other
        closed: {field: stage}
        """)
    assert [(f.line, f.message) for f in findings] == [
        (5, "'field' appears twice here (first at line 3): keep one of them (YAML would "
            "silently use only the last)")]
    assert data == {"factors": {"stage": {"field": "stage", "values": ["A", "B"]}},
                    "closed": {"field": "stage"}}


@pytest.mark.parametrize(("text", "line", "words"), [
    ("a:\n  b: 1\n\tc: 2\n", 3, "replace the tab with spaces"),
    ("a:\n    b: 1\n  c: 2\n", 3, "not indented like the lines above"),
    ("subject: Approval needed: {{ name }}\n", 1, "needs quotes around it"),
    ("a: 1\nb: 'not closed\nc: 3\n", 2, "never closed"),
    ("a: [1, 2\nb: 3\n", 2, "not valid YAML"),
    ("a: 1\n---\nb: 2\n", 2, "remove the second '---'"),
])
def test_a_syntax_error_has_its_line_and_what_to_do(tmp_path: Path, text: str, line: int,
                                                    words: str) -> None:
    doc, findings = read_yaml(write(tmp_path, "f.yaml", text))
    assert doc is None
    assert len(findings) == 1
    assert findings[0].file == "f.yaml" and findings[0].line == line
    assert findings[0].message.startswith("not valid YAML: ")
    assert words in findings[0].message


def test_an_empty_file_is_no_data_and_no_error(tmp_path: Path) -> None:
    doc, findings = read_yaml(write(tmp_path, "f.yaml", "# nothing yet\n"))
    assert doc is not None and doc.data is None and findings == []


def test_a_byte_order_mark_is_fine(tmp_path: Path) -> None:
    path = tmp_path / "f.yaml"
    path.write_bytes(b"\xef\xbb\xbfcomputed:\n  x: 1\n")
    doc, findings = read_yaml(path)
    assert doc is not None and doc.data == {"computed": {"x": 1}} and not findings


def test_a_file_that_is_not_utf8_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "f.yaml"
    path.write_bytes(b"computed:\n  x: 1\n  y: '\xe9t\xe9'\n")  # Latin-1
    doc, findings = read_yaml(path)
    assert doc is None
    assert [(f.line, f.message) for f in findings] == [
        (3, "the file is not UTF-8 text (byte 0xe9): save it as UTF-8")]


def test_a_missing_file_is_a_finding(tmp_path: Path) -> None:
    doc, findings = read_yaml(tmp_path / "nope.yaml")
    assert doc is None and len(findings) == 1
    assert "cannot read the file" in findings[0].message


# --- YAML's traps ---------------------------------------------------------------------------------

def test_yes_no_on_off_stay_text(tmp_path: Path) -> None:
    """YAML 1.1 reads them as booleans: a relationship level 'No' would never match the CRM."""
    data, findings = read(tmp_path, "values: [Yes, No, on, off, y, n, true, False]\n")
    assert not findings
    assert data == {"values": ["Yes", "No", "on", "off", "y", "n", True, False]}


def test_numbers_with_leading_zeros_stay_text(tmp_path: Path) -> None:
    """YAML 1.1 reads 017 as octal 15: a stage code '017' would never match the CRM."""
    data, _ = read(tmp_path, "values: [017, 0x1F, 1_000, 0, -5, 12, 1.5]\n")
    assert data == {"values": ["017", "0x1F", "1_000", 0, -5, 12, 1.5]}


def test_keys_are_names_whatever_they_look_like(tmp_path: Path) -> None:
    data, findings = read(tmp_path, "1: a\nnull: b\ntrue: c\n'quoted': d\n2026-01-01: e\n")
    assert not findings
    assert data == {"1": "a", "null": "b", "true": "c", "quoted": "d", "2026-01-01": "e"}


def test_a_key_must_be_a_plain_name(tmp_path: Path) -> None:
    data, findings = read(tmp_path, "? [a, b]\n: 1\nc: 2\n")
    assert [(f.line, f.message) for f in findings] == [(1, "a key must be a plain name")]
    assert data == {"c": 2}


@pytest.mark.parametrize("text", [
    "computed: !!python/object/apply:os.system ['touch {marker}']\n",
    "computed: {{x: !!python/object/apply:os.system ['touch {marker}']}}\n",
    "computed: !!python/name:os.system\n",
    "x: !!python/object/new:os.system ['touch {marker}']\n",
    "factors: !!set {{a, b}}\n",
])
def test_a_python_tag_is_refused_and_never_constructed(tmp_path: Path, text: str) -> None:
    marker = tmp_path / "ran"
    doc, findings = read_yaml(write(tmp_path, "f.yaml", text.format(marker=marker)))
    assert doc is None
    assert findings and all(f.file == "f.yaml" and f.line == 1 for f in findings)
    assert not marker.exists()


def test_anchors_and_merge_keys_work(tmp_path: Path) -> None:
    data, findings = read(tmp_path, """\
        actions:
          a: &mail
            email: {to: [x@example.com], subject: hi, body: hello}
          b:
            <<: *mail
            description: the same mail
        """)
    assert not findings
    assert data["actions"]["b"]["email"]["subject"] == "hi"  # type: ignore[index]


def test_a_key_written_next_to_a_merge_overrides_it(tmp_path: Path) -> None:
    """YAML's `<<: *anchor` then `key: value` is an override, not a duplicate key."""
    data, findings = read(tmp_path, """\
        base: &base {field: stage, values: [A, B]}
        factors:
          first:
            <<: *base
            field: other
          second:
            field: other
            <<: *base
        """)
    assert not findings
    assert data["factors"]["first"] == {"field": "other", "values": ["A", "B"]}  # type: ignore[index]
    assert data["factors"]["second"] == {"field": "other", "values": ["A", "B"]}  # type: ignore[index]


def test_a_key_written_twice_next_to_a_merge_is_still_a_duplicate(tmp_path: Path) -> None:
    data, findings = read(tmp_path, "base: &b {k: 1}\nx:\n  <<: *b\n  k: 2\n  k: 3\n")
    assert [(f.line, f.message[:40]) for f in findings] == [
        (5, "'k' appears twice here (first at line 4)")]
    assert data["x"] == {"k": 2}  # type: ignore[index]


# --- the rule set from several files -----------------------------------------------------------

def test_files_merge_into_one_rule_set_and_keep_their_lines(project: Path) -> None:
    write(project, "rules/computed.yaml", "# computed\ncomputed:\n  weighted: amount * 2\n")
    findings: list[Finding] = []
    spec, docs, locate = load_rules_spec(project / "rules", findings)
    assert not findings and spec is not None
    assert [d.path for d in docs] == ["rules/computed.yaml", "rules/factors.yaml",
                                      "rules/probability.yaml"]
    assert set(spec.factors) == {"stage", "proposal"}
    assert spec.workflows is not None and [w.name for w in spec.workflows] == [
        "p80", "p60", "p40", "p10"]
    assert spec.computed == {"weighted": "amount * 2"}
    where = locate(("workflows", 2, "when", "stage"))
    assert (where.file, where.line) == ("rules/probability.yaml", 9)
    where = locate(("computed", "weighted"))
    assert (where.file, where.line) == ("rules/computed.yaml", 3)
    where = locate(("factors", "proposal", "empty"))
    assert (where.file, where.line) == ("rules/factors.yaml", 9)


def test_a_top_level_key_lives_in_one_file(project: Path) -> None:
    write(project, "rules/closed.yaml", "# closed states\n\nclosed:\n  field: stage\n")
    loaded = load(project / "rules", project / "mappings")
    assert errors(loaded.findings) == [
        "rules/factors.yaml:10: error: 'closed' is already defined in rules/closed.yaml:3; a "
        "top-level key lives in one file only"]
    assert loaded.rules is None


def test_the_example_project_loads(project: Path) -> None:
    loaded = load(project / "rules", project / "mappings")
    assert errors(loaded.findings) == []
    assert loaded.ok and loaded.rules is not None
    assert [w.name for w in loaded.rules.workflows] == ["p80", "p60", "p40", "p10"]
    assert loaded.rules.workflows[2].where.line == 8
    assert set(loaded.mappings) == {"salesforce"}


def test_yml_files_count_and_others_do_not(project: Path) -> None:
    write(project, "rules/computed.yml", "computed:\n  x: amount * 2\n")
    write(project, "rules/notes.txt", "factors: nonsense\n")
    write(project, "rules/templates/t.yaml", "factors: nonsense\n")
    loaded = load(project / "rules", project / "mappings")
    assert errors(loaded.findings) == []
    assert loaded.rules is not None and set(loaded.rules.computed) == {"x"}


def test_a_rule_file_that_is_a_list_is_refused(project: Path) -> None:
    write(project, "rules/extra.yaml", "- factors\n- workflows\n")
    loaded = load(project / "rules", project / "mappings")
    assert errors(loaded.findings) == [
        "rules/extra.yaml:1: error: a rule file is a set of top-level keys (factors:, "
        "workflows:, computed: ...)"]


def test_missing_folders_are_findings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    loaded = load(tmp_path / "rules", tmp_path / "mappings")
    text = "\n".join(errors(loaded.findings))
    assert "no rules folder at rules (use --rules DIR)" in text
    assert "no mappings folder at mappings (use --mappings DIR)" in text
    assert loaded.rules is None


def test_the_version_follows_the_files(project: Path) -> None:
    before = load(project / "rules", project / "mappings").version
    assert before == load(project / "rules", project / "mappings").version
    paths = [project / "rules/factors.yaml", project / "rules/probability.yaml"]
    assert version_of(paths) == version_of(list(reversed(paths)))
    write(project, "rules/probability.yaml", WORKFLOWS.replace("80", "85"))
    assert load(project / "rules", project / "mappings").version != before


# --- every problem at once -----------------------------------------------------------------------

def test_a_file_that_does_not_parse_hides_no_shape_error_elsewhere(project: Path) -> None:
    """A broken factors.yaml must not make every factor 'unknown' in probability.yaml, but the
    other files' own shape errors are still reported."""
    write(project, "rules/factors.yaml", FACTORS.replace("    values: [Firm", "\tvalues: [Firm"))
    write(project, "rules/probability.yaml", WORKFLOWS.replace("    set: {probability: 40}",
                                                               "    sett: {probability: 40}"))
    loaded = load(project / "rules", project / "mappings")
    found = errors(loaded.findings)
    assert len(found) == 2, found
    assert found[0].startswith("rules/factors.yaml:8: error: not valid YAML")
    assert found[1].startswith("rules/probability.yaml:10: error: unknown key 'sett' "
                               "(did you mean 'set'?)")


def test_shape_and_reference_errors_come_in_one_run(project: Path) -> None:
    write(project, "rules/probability.yaml", """\
        workflows:
          - name: p80
            when: {stage: Negotiation, proposal: Firm}
            set: {probability: 80}
            action: [nowhere]
          - name: 60
            when: {stage: Negotiation, proposal: Budgetary}
            set: {probability: 60}
          - name: p40
            when: {stge: Proposal}
            set: {probability: 40}
          - name: p10
            when: {stage: Prospectin}
            set: {probability: 10}
        """)
    loaded = load(project / "rules", project / "mappings")
    assert sorted(errors(loaded.findings)) == sorted([
        "rules/probability.yaml:5: error: unknown key 'action' (did you mean 'actions'?); "
        "allowed here: name, when, set, actions, description",
        "rules/probability.yaml:6: error: workflows[1].name: expected text (got 60)",
        # The misspelt key is read as the one it is close to: its reference is checked too.
        "rules/probability.yaml:5: error: workflow 'p80': unknown action 'nowhere'",
        # The broken workflow is left out; the lines of the ones after it are still theirs.
        "rules/probability.yaml:10: error: workflow 'p40': unknown factor 'stge' "
        "(did you mean 'stage'?)",
        "rules/probability.yaml:13: error: workflow 'p10': unknown value 'Prospectin' for factor "
        "'stage' (did you mean 'Prospecting'?); factor 'stage' knows Negotiation, Proposal, "
        "Prospecting",
    ])
    assert loaded.rules is None and not loaded.ok


def test_a_broken_factor_stops_the_reference_checks(project: Path) -> None:
    """Without the factor, every workflow naming it would be a false 'unknown factor'."""
    write(project, "rules/factors.yaml", FACTORS.replace("    field: proposal_type\n", ""))
    loaded = load(project / "rules", project / "mappings")
    assert errors(loaded.findings) == [
        "rules/factors.yaml:6: error: factors.proposal: 'field' is missing"]


def test_a_misspelt_top_level_key_is_checked_as_the_one_it_is_close_to(project: Path) -> None:
    write(project, "rules/factors.yaml", FACTORS.replace("factors:", "factor:").replace(
        "field: proposal_type", "field: proposal_typ"))
    loaded = load(project / "rules", project / "mappings")
    assert errors(loaded.findings) == [
        "rules/factors.yaml:2: error: unknown key 'factor' (did you mean 'factors'?); allowed "
        "here: factors, closed, workflows, probability, computed, actions, triggers",
        "rules/factors.yaml:7: error: factor 'proposal': unknown field 'proposal_typ' (did you "
        "mean 'proposal_type'?); fields come from the mapping's 'fields' or from 'computed'"]


def test_a_value_of_no_accepted_type_is_one_error(project: Path) -> None:
    write(project, "rules/factors.yaml", FACTORS.replace("[Firm, Budgetary]",
                                                         "[Firm, [Budgetary]]"))
    loaded = load(project / "rules", project / "mappings")
    assert errors(loaded.findings) == [
        "rules/factors.yaml:8: error: factors.proposal.values[1]: expected text, true/false or "
        "a number (got ['Budgetary'])"]


def test_a_block_indented_too_little_says_so(project: Path) -> None:
    write(project, "rules/factors.yaml", FACTORS.replace("    empty: Budgetary",
                                                         "  empty: Budgetary"))
    loaded = load(project / "rules", project / "mappings")
    assert errors(loaded.findings) == [
        "rules/factors.yaml:9: error: factors.empty: expected a set of keys (field, values, "
        "bands, empty), got 'Budgetary': check the indentation of this line and the ones "
        "below it"]


def test_unknown_keys_are_named_as_the_file_spells_them(project: Path) -> None:
    write(project, "rules/actions.yaml", """\
        actions:
          push:
            http: {url: "https://example.com", jsn: {a: 1}}
        """)
    loaded = load(project / "rules", project / "mappings")
    assert errors(loaded.findings) == [
        "rules/actions.yaml:3: error: unknown key 'jsn' (did you mean 'json'?); allowed here: "
        "method, url, json, headers"]


# --- mappings -------------------------------------------------------------------------------------

def test_an_unknown_crm_gets_a_did_you_mean(project: Path) -> None:
    write(project, "mappings/salesforce.yaml", MAPPING.replace("crm: salesforce",
                                                               "crm: salesfroce"))
    loaded = load(project / "rules", project / "mappings")
    assert errors(loaded.findings) == [
        "mappings/salesforce.yaml:1: error: crm: Input should be 'salesforce' or 'hubspot' "
        "(got 'salesfroce') (did you mean 'salesforce'?)"]


def test_writeback_names_a_field(project: Path) -> None:
    write(project, "mappings/salesforce.yaml", MAPPING.replace("writeback: [probability]",
                                                               "writeback: [probabilty]"))
    loaded = load(project / "rules", project / "mappings")
    assert errors(loaded.findings) == [
        "mappings/salesforce.yaml:11: error: writeback field 'probabilty' is not in 'fields' "
        "(did you mean 'probability'?)"]


def test_one_mapping_per_crm(project: Path) -> None:
    write(project, "mappings/sandbox.yaml", "# the sandbox org\n" + MAPPING)
    findings: list[Finding] = []
    mappings = load_mappings(project / "mappings", findings)
    assert [m[1].name for m in mappings.values()] == ["salesforce.yaml"]
    assert errors(findings) == [
        "mappings/sandbox.yaml:2: error: a second mapping for crm 'salesforce' (the first is "
        "mappings/salesforce.yaml): keep one mapping file per CRM"]


def test_the_erp_mapping_is_not_a_crm_mapping(project: Path) -> None:
    write(project, "mappings/erp.yaml", "erp: tryton\ncustomer: {}\n")
    loaded = load(project / "rules", project / "mappings")
    assert errors(loaded.findings) == []
    assert set(loaded.mappings) == {"salesforce"}


def test_no_crm_mapping_is_an_error(project: Path) -> None:
    (project / "mappings/salesforce.yaml").unlink()
    loaded = load(project / "rules", project / "mappings")
    assert errors(loaded.findings) == [
        "mappings: error: no CRM mapping (a file with 'crm: salesforce') in mappings"]


def test_one_mapping_file_given_directly(project: Path) -> None:
    other = write(project, "elsewhere/hubspot.yaml", MAPPING.replace("salesforce", "hubspot"))
    loaded = load(project / "rules", project / "no-such-folder", mapping_file=other)
    assert errors(loaded.findings) == []
    assert loaded.rules is not None and loaded.rules.mapping.crm == "hubspot"
