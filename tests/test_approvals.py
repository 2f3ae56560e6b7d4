"""Approvals: a budgetary proposal above a threshold needs a manager's yes or no. The approver
gets two one-click links; the decision is written back to the CRM once and fires its actions;
a second click, an expired link or an altered token change nothing."""

from __future__ import annotations

import re
import shutil
import sqlite3
import threading
import urllib.parse
from pathlib import Path

import pytest
import responses

from connector.app import build_app
from connector.approvals import STATUS
from connector.handlers.approvals import approval_route
from connector.settings import Settings
from connector.web import to_event
from tests.fake_salesforce import INSTANCE, Clock, FakeOrg
from tests.smtp_server import smtp  # noqa: F401 - the fixture

ROOT = Path(__file__).resolve().parent.parent
SECRET = "approval-key-9f8e"
PUBLIC = "https://connector.example.com"
DEAL = "006B00000000000001"

APPROVAL_RULES = """
actions:
  budget-approval:
    approval:
      to: [manager@example.com]
      subject: "Approve the budgetary proposal for {{ name }}?"
      body: "{{ name }} ({{ amount }}): approve {{ approve_url }} or reject {{ reject_url }}"
      field: approval_status
      expires_in_days: 7
      on_approve: [tell-owner]
      on_reject: [tell-owner]
  tell-owner:
    email:
      to: ["{{ owner_email }}"]
      subject: "Decision on {{ name }}"
      body: "The manager has decided."
triggers:
  - name: big-budgetary
    when: proposal_type == 'Budgetary' and amount >= 200000
    do: [budget-approval]
"""


def approval_folders(tmp_path: Path, actions: str,
                     keep: tuple[str, ...] = ("salesforce.yaml",)) -> tuple[Path, Path]:
    """The shipped rules/ and mappings/ with these actions, an `approval_status` writeback
    field, and only the mapping files in `keep`."""
    rules, mappings = tmp_path / "rules", tmp_path / "mappings"
    shutil.copytree(ROOT / "rules", rules)
    shutil.copytree(ROOT / "mappings", mappings)
    (rules / "actions.yaml").write_text(actions)
    mapping = (mappings / "salesforce.yaml").read_text()
    mapping = mapping.replace("  rule: Probability_Rule__c",
                              "  approval_status: Approval_Status__c\n  rule: Probability_Rule__c",
                              1)
    mapping = mapping.replace("writeback: [probability, weighted_amount, rule]",
                              "writeback: [probability, weighted_amount, rule, approval_status]")
    (mappings / "salesforce.yaml").write_text(mapping)
    for other in mappings.glob("*.yaml"):
        if other.name not in keep:
            other.unlink()
    return rules, mappings


@pytest.fixture
def world(tmp_path, smtp):  # noqa: F811
    url, inbox = smtp
    rules, mappings = approval_folders(tmp_path, APPROVAL_RULES)
    workflows = (rules / "probability.yaml").read_text()
    (rules / "probability.yaml").write_text(workflows.replace("actions: [notify-director]", ""))
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        rsps.add_passthru("http://127.0.0.1")
        org = FakeOrg(rsps, Clock())
        org.add(DEAL, StageName="Proposal/Price Quote", Proposal_Type__c="Budgetary",
                Relationship_Level__c="Known", Amount=250000, Name="Harbour cranes")
        settings = Settings(_env_file=None, salesforce_instance_url=INSTANCE,
                            salesforce_access_token="00Dxx!session", smtp_url=url,
                            email_from="crm@example.com", approval_secret=SECRET,
                            public_url=PUBLIC, state_url=f"sqlite:///{tmp_path / 'state.db'}")
        app = build_app(rules, mappings, settings, now=org.clock)
        yield app, org, inbox


def request_approval(app, org, inbox):
    org.clock.advance(seconds=1)
    app.pipeline.poll(fire_backfill=True)
    app.pipeline.drain()
    [message] = [m for m in inbox.messages if m["Subject"].startswith("Approve")]
    text = message.get_body(("plain",)).get_content()
    links = dict(re.findall(r"(approve|reject) (https://\S+)", text))
    return links["approve"], links["reject"]


def click(app, link, method="GET"):
    path = urllib.parse.urlsplit(link).path
    event = to_event(method, path, {}, b"token=x" if method == "POST" else b"")
    return approval_route(event, secret=SECRET, record_verdict=app.pipeline.record_verdict,
                          now=app.now)


def test_an_approval_is_requested_decided_once_and_written_back(world):
    app, org, inbox = world
    approve, reject = request_approval(app, org, inbox)
    assert org.records[DEAL]["Approval_Status__c"] == "Pending"
    [waiting] = [i for i in app.state.items() if i.status == "waiting"]
    assert waiting.kind == "approval" and "manager@example.com" in waiting.reason

    opened = click(app, approve)                       # a mail scanner, or the approver
    assert opened["statusCode"] == 200 and "<form method=\"post\"" in opened["body"]
    assert org.records[DEAL]["Approval_Status__c"] == "Pending"   # GET changes nothing

    assert click(app, approve, "POST")["statusCode"] == 200
    app.pipeline.drain()
    assert org.records[DEAL]["Approval_Status__c"] == "Approved"
    told = [m for m in inbox.messages if m["Subject"] == "Decision on Harbour cranes"]
    assert len(told) == 1

    for link in (approve, reject):                    # a second click, the other link
        assert click(app, link, "POST")["statusCode"] == 409
    app.pipeline.drain()
    assert org.records[DEAL]["Approval_Status__c"] == "Approved"
    assert len([m for m in inbox.messages if m["Subject"] == "Decision on Harbour cranes"]) == 1
    # The echo of our own write, and more polls, ask for no second approval.
    for _ in range(2):
        org.clock.advance(seconds=1)
        app.pipeline.poll()
        app.pipeline.drain()
    assert len([m for m in inbox.messages if m["Subject"].startswith("Approve")]) == 1


def test_a_rejection_is_recorded(world):
    app, org, inbox = world
    _, reject = request_approval(app, org, inbox)
    assert click(app, reject, "POST")["statusCode"] == 200
    app.pipeline.drain()
    assert org.records[DEAL]["Approval_Status__c"] == "Rejected"


def test_expired_and_altered_links_change_nothing(world):
    app, org, inbox = world
    approve, _ = request_approval(app, org, inbox)
    body, signature = approve.rsplit("/", 1)[1].split(".")
    forged = f"{PUBLIC}/approvals/{body}.{signature[:-2]}AA"
    assert click(app, forged, "POST")["statusCode"] == 404
    assert click(app, f"{PUBLIC}/approvals/not-a-token", "POST")["statusCode"] == 404
    org.clock.advance(days=8)
    expired = click(app, approve, "POST")
    assert expired["statusCode"] == 410 and "expired" in expired["body"]
    app.pipeline.drain()
    assert org.records[DEAL]["Approval_Status__c"] == "Pending"


def approval_emails(inbox):
    return [m for m in inbox.messages if m["Subject"].startswith("Approve")]


def test_a_decision_that_fails_to_record_is_not_lost(world, tmp_path):
    """A crash or a locked database while the decision is written leaves nothing behind: the
    approver's next click records it (it used to answer 'already decided' forever)."""
    app, org, inbox = world
    approve, _ = request_approval(app, org, inbox)
    other = sqlite3.connect(tmp_path / "state.db")   # the disk fails under the decision
    other.execute("CREATE TRIGGER fail BEFORE INSERT ON outbox WHEN NEW.key LIKE '%:decision' "
                  "BEGIN SELECT RAISE(ABORT, 'disk I/O error'); END")
    other.commit()
    with pytest.raises(sqlite3.DatabaseError):
        click(app, approve, "POST")
    other.execute("DROP TRIGGER fail")
    other.commit()
    other.close()
    assert click(app, approve, "POST")["statusCode"] == 200
    app.pipeline.drain()
    assert org.records[DEAL]["Approval_Status__c"] == "Approved"
    assert len([m for m in inbox.messages if m["Subject"].startswith("Decision")]) == 1


def test_two_clicks_at_the_same_instant_record_one_decision(world, tmp_path):
    """Two processes (two `serve` threads, two Lambdas) on the same state: one decision wins,
    and only its actions are queued."""
    from connector.outbox import record_verdict
    from connector.state.sqlite import SqliteState

    app, org, inbox = world
    request_approval(app, org, inbox)
    [waiting] = app.state.items("waiting")
    stores = [SqliteState(tmp_path / "state.db") for _ in range(2)]
    start = threading.Barrier(2)
    outcomes: dict[str, str] = {}

    def click_as(store, choice):
        start.wait()
        outcomes[choice] = record_verdict(store, app.pipeline.rules, waiting.key, choice,
                                         org.clock()).outcome

    threads = [threading.Thread(target=click_as, args=(s, c))
               for s, c in zip(stores, ("approve", "reject"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes.values()) == ["already decided", "recorded"]
    [won] = [c for c, o in outcomes.items() if o == "recorded"]
    followers = [i.key for i in app.state.items() if i.key.startswith(f"{waiting.key}:")
                 and i.kind == "email"]
    assert followers == [f"{waiting.key}:{won}:tell-owner"]
    app.pipeline.drain()
    assert org.records[DEAL]["Approval_Status__c"] == STATUS[won]


def test_the_approval_email_goes_once_when_the_pending_write_back_fails(world):
    app, org, inbox = world
    org.clock.advance(seconds=1)
    app.pipeline.poll(fire_backfill=True)  # the seeded deal fires
    org.invalid[DEAL] = "FIELD_CUSTOM_VALIDATION_EXCEPTION: Approval status is locked"
    drained = app.pipeline.drain()
    assert len(approval_emails(inbox)) == 1 and drained.parked == 1
    [parked] = app.state.items("parked")
    assert parked.key.endswith(":pending") and "locked" in parked.reason
    assert app.state.items("waiting")[0].kind == "approval"   # the email is noted as sent
    del org.invalid[DEAL]
    app.state.release(None, org.clock())                      # the admin retries
    app.pipeline.drain()
    assert org.records[DEAL]["Approval_Status__c"] == "Pending"
    assert len(approval_emails(inbox)) == 1


def test_a_late_pending_write_never_overwrites_the_decision(world):
    app, org, inbox = world
    org.clock.advance(seconds=1)
    app.pipeline.poll(fire_backfill=True)  # the seeded deal fires
    org.invalid[DEAL] = "UNABLE_TO_LOCK_ROW"
    app.pipeline.drain()
    del org.invalid[DEAL]
    text = approval_emails(inbox)[0].get_body(("plain",)).get_content()
    approve = dict(re.findall(r"(approve|reject) (https://\S+)", text))["approve"]
    assert click(app, approve, "POST")["statusCode"] == 200
    app.pipeline.drain()
    assert org.records[DEAL]["Approval_Status__c"] == "Approved"
    app.state.release(None, org.clock())                      # the Pending write, late
    app.pipeline.drain()
    assert org.records[DEAL]["Approval_Status__c"] == "Approved"


def test_a_crash_right_after_the_email_resends_it_under_the_same_message_id(world):
    """The documented window: the SMTP server took the email, and the run died before the
    state noted it. The rerun sends it again, with the same Message-ID, so the receiving side
    can drop the copy."""
    app, org, inbox = world
    org.clock.advance(seconds=1)
    app.pipeline.poll(fire_backfill=True)  # the seeded deal fires
    commit = app.state.commit

    def crash(commits, now):
        app.state.commit = commit
        raise SystemExit("killed")

    app.state.commit = crash
    with pytest.raises(SystemExit):
        app.pipeline.drain()
    org.clock.advance(minutes=11)                              # the dead run's lease ends
    app.pipeline.drain()
    first, second = approval_emails(inbox)
    assert first["Message-ID"] == second["Message-ID"]
    assert org.records[DEAL]["Approval_Status__c"] == "Pending"


def test_a_crash_after_the_note_sends_no_second_email(world):
    """The note that the email went (the Pending write-back item) is there: the rerun of the
    approval request goes straight to waiting."""
    app, org, inbox = world
    org.clock.advance(seconds=1)
    app.pipeline.poll(fire_backfill=True)  # the seeded deal fires
    wait = app.state.wait

    def crash(key, reason, now):
        app.state.wait = wait
        raise SystemExit("killed")

    app.state.wait = crash
    with pytest.raises(SystemExit):
        app.pipeline.drain()
    org.clock.advance(minutes=11)
    app.pipeline.drain()
    assert len(approval_emails(inbox)) == 1
    [waiting] = app.state.items("waiting")
    assert waiting.reason.startswith("awaiting the decision of manager@example.com until ")
    assert org.records[DEAL]["Approval_Status__c"] == "Pending"


def test_run_items_runs_an_approval_and_its_pending_note_and_a_verdict_returns_what_follows(
        world):
    """The worker's use case: the request's message runs the request and its Pending write-back
    (nothing left to queue); the click returns the keys of the items it queued."""
    from connector.outbox import record_verdict

    app, org, inbox = world
    org.clock.advance(seconds=1)
    app.pipeline.poll(fire_backfill=True)
    [request] = [i for i in app.state.items("pending") if i.kind == "approval"]
    ran = app.pipeline.run_items([request.key])
    assert ran.added == [] and app.state.item(f"{request.key}:pending").status == "done"
    assert org.records[DEAL]["Approval_Status__c"] == "Pending" and len(inbox.messages) == 1

    recorded = record_verdict(app.state, app.pipeline.rules, request.key, "approve", org.clock())
    assert recorded.outcome == "recorded"
    assert sorted(recorded.added) == sorted(i.key for i in app.state.items("pending"))
    assert f"{request.key}:decision" in recorded.added and len(recorded.added) == 2
    assert app.pipeline.run_items(recorded.added).done == 2
    assert org.records[DEAL]["Approval_Status__c"] == "Approved"


@pytest.mark.parametrize(("accept", "default", "spoken"), [
    ("es-CO,es;q=0.9,en;q=0.8", "en", "es"),       # the approver's browser asks for Spanish
    ("fr-FR,en;q=0.5,es;q=0.4", "es", "en"),       # ... for English before Spanish
    ("fr-FR", "es", "es"),                          # ... for neither: the mapping's language
    ("", "en", "en"),
    ("es;q=0, en", "es", "en"),                     # q=0: not that one
])
def test_the_approval_pages_speak_the_approvers_language(world, accept, default, spoken):
    app, org, inbox = world
    approve, _reject = request_approval(app, org, inbox)
    path = urllib.parse.urlsplit(approve).path
    headers = {"Accept-Language": accept} if accept else {}

    def page(method, link_path=path):  # type: ignore[no-untyped-def]
        event = to_event(method, link_path, headers, b"token=x" if method == "POST" else b"")
        return approval_route(event, secret=SECRET, record_verdict=app.pipeline.record_verdict,
                              now=app.now, language=default)

    opened, decided, again = page("GET"), page("POST"), page("POST")
    broken = page("GET", path[:-3] + "xyz")
    bodies = [p["body"] for p in (opened, decided, again, broken)]
    assert all(f'<html lang="{spoken}">' in b for b in bodies)
    # each page's words, in the two languages: only the spoken one's are there
    shown_on = [bodies[0], bodies[0], bodies[1], bodies[2], bodies[3]]
    spanish = ("¿Aprobar esta solicitud?", "Aprobar</button>", "Aprobada", "Ya decidida",
               "no es válido")
    english = ("Approve this request?", "Approve</button>", "Approved", "Already decided",
               "Not a valid approval link")
    for language, phrases in (("es", spanish), ("en", english)):
        for words, body in zip(phrases, shown_on):
            assert (words in body) == (spoken == language), (words, body)
    assert [p["statusCode"] for p in (opened, decided, again, broken)] == [200, 200, 409, 404]
