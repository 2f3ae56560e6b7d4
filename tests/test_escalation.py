"""Escalation in time, through the daily sweep: a deal that stays in Negotiation gets one email
at day 7, one at day 14, one at day 30, and none after it moves on; moving back starts a new
episode. The sweep of 10,000 open deals costs ceil(10000/2000) query calls and writes nothing
that has not changed."""

from __future__ import annotations

import datetime as dt
import math
import shutil
from pathlib import Path

import pytest
import responses

from connector.app import build_app
from connector.settings import Settings
from tests.fake_salesforce import INSTANCE, Clock, FakeOrg, stamp
from tests.smtp_server import smtp  # noqa: F401 - the fixture

ROOT = Path(__file__).resolve().parent.parent
DEAL = "006E00000000000001"

ESCALATION = """
actions:
  tell-owner:
    email: {to: ["{{ owner_email }}"], subject: "7 days in Negotiation: {{ name }}", body: "."}
  tell-manager:
    email: {to: [manager@example.com], subject: "14 days in Negotiation: {{ name }}", body: "."}
  tell-director:
    email: {to: [director@example.com], subject: "30 days in Negotiation: {{ name }}", body: "."}
triggers:
  - name: stuck-in-negotiation
    when: stage == 'Negotiation/Review'
    since: stage_changed
    steps:
      - {after_days: 7, do: [tell-owner]}
      - {after_days: 14, do: [tell-manager]}
      - {after_days: 30, do: [tell-director]}
"""


def rules_with_escalation(tmp_path: Path) -> tuple[Path, Path]:
    rules, mappings = tmp_path / "rules", tmp_path / "mappings"
    shutil.copytree(ROOT / "rules", rules)
    mappings.mkdir()
    (rules / "actions.yaml").write_text(ESCALATION)
    workflows = (rules / "probability.yaml").read_text()
    (rules / "probability.yaml").write_text(workflows.replace("actions: [notify-director]", ""))
    mapping = (ROOT / "mappings" / "salesforce.yaml").read_text()
    mapping = mapping.replace("  stage: StageName\n",
                              "  stage: StageName\n  stage_changed: LastStageChangeDate\n", 1)
    (mappings / "salesforce.yaml").write_text(mapping)
    return rules, mappings


@pytest.fixture
def world(tmp_path, smtp):  # noqa: F811
    url, inbox = smtp
    rules, mappings = rules_with_escalation(tmp_path)
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        rsps.add_passthru("http://127.0.0.1")
        org = FakeOrg(rsps, Clock(dt.datetime(2026, 11, 2, 6, 0, tzinfo=dt.UTC)))
        settings = Settings(_env_file=None, salesforce_instance_url=INSTANCE,
                            salesforce_access_token="00Dxx!session", smtp_url=url,
                            email_from="crm@example.com",
                            state_url=f"sqlite:///{tmp_path / 'state.db'}")
        app = build_app(rules, mappings, settings, now=org.clock)
        yield app, org, inbox


def move(org, stage):
    org.edit(DEAL, StageName=stage, LastStageChangeDate=stamp(org.clock()))


def day(app, org):
    """One day passes: the nightly sweep, then the outbox."""
    org.clock.advance(days=1)
    app.pipeline.poll()
    app.pipeline.sweep()
    app.pipeline.drain()


def subjects(inbox):
    return [m["Subject"].split(":")[0] for m in inbox.messages]


def test_one_email_per_step_per_episode(world):
    app, org, inbox = world
    org.add(DEAL, StageName="Proposal/Price Quote", Proposal_Type__c="Firm",
            Relationship_Level__c="Known", Name="Port cranes",
            LastStageChangeDate=stamp(org.clock()))
    move(org, "Negotiation/Review")
    for n in range(1, 41):
        day(app, org)
        sent = subjects(inbox)
        expected = (["7 days in Negotiation"] if n >= 7 else []) + \
                   (["14 days in Negotiation"] if n >= 14 else []) + \
                   (["30 days in Negotiation"] if n >= 30 else [])
        assert sent == expected, f"day {n}: {sent}"
    move(org, "Proposal/Price Quote")            # the deal moves on: the episode ends
    for _ in range(10):
        day(app, org)
    assert len(inbox.messages) == 3
    move(org, "Negotiation/Review")              # and back: a new episode
    for _ in range(7):
        day(app, org)
    assert subjects(inbox)[3:] == ["7 days in Negotiation"]


def test_check_names_the_triggers_that_need_the_sweep(tmp_path, capsys):
    from connector.cli import main

    rules, mappings = rules_with_escalation(tmp_path)
    assert main(["check", "--rules", str(rules), "--mappings", str(mappings)]) == 0
    assert "stuck-in-negotiation" in capsys.readouterr().out


def test_a_sweep_of_10000_open_deals_costs_five_queries_and_writes_nothing_unchanged(
        tmp_path, smtp):  # noqa: F811
    url, _ = smtp
    rules, mappings = rules_with_escalation(tmp_path)
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        org = FakeOrg(rsps, Clock())
        for i in range(10_000):
            org.add(f"006{i:015d}", StageName="Prospecting", Amount=5000, Probability=10,
                    Weighted_Amount__c=500, Probability_Rule__c="p10",
                    LastStageChangeDate=stamp(org.clock()))
        for i in range(300):
            org.add(f"006C{i:014d}", StageName="Closed Won", Amount=5000)
        settings = Settings(_env_file=None, salesforce_instance_url=INSTANCE,
                            salesforce_access_token="00Dxx!session", smtp_url=url,
                            email_from="crm@example.com",
                            state_url=f"sqlite:///{tmp_path / 'state.db'}")
        app = build_app(rules, mappings, settings, now=org.clock)
        pipeline = app.pipeline
        before = org.api_calls
        report = pipeline.sweep()
        assert report.read == 10_000                 # the closed deals are not read
        assert org.api_calls - before == math.ceil(10_000 / 2000)
        assert org.calls["composite"] == 0 and report.written == 0
