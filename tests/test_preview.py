"""The dry run renders what each action would send (emails, HTTP bodies, ERP orders) for the
report, and sends nothing."""

from __future__ import annotations

import csv
import datetime as dt
import shutil
from pathlib import Path

from connector.actions import ActionRunner
from connector.files import load
from connector.report import render
from connector.simulate import simulate
from tests.test_audience_sync import ACTIONS

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "opportunities.csv"


def never(*args, **kwargs):
    raise AssertionError("a dry run must not send anything")


def test_previews_are_rendered_and_nothing_is_sent():
    rules = load(ROOT / "rules", ROOT / "mappings").rules
    runner = ActionRunner(rules, ROOT / "rules", ROOT / "mappings",
                          senders={"email": never, "http": never, "erp": never})
    summary = simulate(rules, EXAMPLE, None, dt.date(2026, 11, 26), preview=runner.render)
    kinds = {}
    for p in summary.previews:
        kinds.setdefault(p.action, p)
    assert {"notify-director", "push-marketing", "erp-order"} <= set(kinds)
    email = kinds["notify-director"].rendered
    assert email is not None and email["subject"].startswith("Approval needed: ")
    assert "director@example.com" in email["to"] and "is now at " in email["text"]
    # the fields only templates read (owner, name) are read for the previewed rows too
    with EXAMPLE.open(encoding="utf-8-sig", newline="") as f:
        row = next(r for r in csv.DictReader(f) if r["Id"] == kinds["notify-director"].record_id)
    assert row["Owner.Email"] in email["to"]
    assert email["subject"].startswith(f"Approval needed: {row['Name']} (")
    push = kinds["push-marketing"].rendered
    assert push is not None and push["url"] == "${MARKETING_WEBHOOK_URL}"  # never the secret URL
    order = kinds["erp-order"].rendered
    assert order is not None and order["reference"] == kinds["erp-order"].record_id
    page = render(rules, summary, EXAMPLE, dt.date(2026, 11, 26))
    assert 'id="previews"' in page and "Approval needed: " in page


def test_audience_previews_show_the_member_and_never_the_list_from_the_environment(tmp_path):
    rules_dir = tmp_path / "rules"
    shutil.copytree(ROOT / "rules", rules_dir)
    (rules_dir / "actions.yaml").write_text(ACTIONS, encoding="utf-8")
    rules = load(rules_dir, ROOT / "mappings").rules
    runner = ActionRunner(rules, rules_dir, ROOT / "mappings", senders={
        "audience": never, "audience-batch": never}, environ={"NURTURE_LIST": "secret-list"})

    summary = simulate(rules, EXAMPLE, None, dt.date(2026, 11, 26), preview=runner.render)

    shown = next(p for p in summary.previews if p.action == "nurture")
    with EXAMPLE.open(encoding="utf-8-sig", newline="") as f:
        row = next(r for r in csv.DictReader(f) if r["Id"] == shown.record_id)
    assert shown.kind == "audience" and shown.rendered == {
        "provider": "mailchimp", "list": "${NURTURE_LIST}", "email": row["Owner.Email"],
        "status": "subscribed", "merge_fields": {"FNAME": row["Owner.Name"], "DEAL": row["Name"]},
        "tags": ["nurture", row["Proposal_Type__c"]] if row["Proposal_Type__c"] else ["nurture"],
        "remove_tags": []}
    page = render(rules, summary, EXAMPLE, dt.date(2026, 11, 26))
    assert row["Owner.Email"] in page and "secret-list" not in page
