"""Actions exactly once, end to end: a sync against the fake org queues the rising edges, the
outbox sends the emails to a real SMTP server and the pushes over HTTP; reruns, unchanged polls
and duplicate webhooks send nothing twice; a failing endpoint is retried, a refusing one parked."""

from __future__ import annotations

import pytest
import responses

from connector.app import build_app
from connector.settings import Settings
from tests.fake_salesforce import INSTANCE, Clock, FakeOrg
from tests.smtp_server import smtp  # noqa: F401 - the fixture

HOOK = "https://hooks.example.com/marketing/T0KEN"


@pytest.fixture
def world(tmp_path, smtp, monkeypatch):  # noqa: F811
    url, inbox = smtp
    monkeypatch.setenv("MARKETING_WEBHOOK_URL", HOOK)
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        rsps.add_passthru("http://127.0.0.1")
        pushes = []

        def hook(request):
            pushes.append(request)
            return 200, {}, "{}"

        rsps.add_callback(responses.POST, HOOK, hook)
        org = FakeOrg(rsps, Clock())
        settings = Settings(_env_file=None, salesforce_instance_url=INSTANCE,
                            salesforce_access_token="00Dxx!session", smtp_url=url,
                            email_from="crm@example.com",
                            state_url=f"sqlite:///{tmp_path / 'state.db'}")
        app = build_app(settings=settings, now=org.clock)
        yield app, org, inbox, pushes


def sync(app, org):
    org.clock.advance(seconds=1)
    report = app.pipeline.poll(fire_backfill=True)  # the seeded deals' edges fire
    drained = app.pipeline.drain()
    return report, drained


def test_one_email_per_rising_edge_whatever_is_replayed(world):
    app, org, inbox, pushes = world
    org.add("006A00000000000001", StageName="Negotiation/Review", Proposal_Type__c="Firm",
            Relationship_Level__c="Strategic", Amount=150000, Name="Fleet renewal",
            Owner={"Name": "Ann Owner", "Email": "ann@example.com"})
    org.add("006A00000000000002", StageName="Prospecting", Amount=5000)
    _report, drained = sync(app, org)
    # p90 names notify-director, and so does large-deal-likely: one edge, one email.
    subjects = sorted(m["Subject"] for m in inbox.messages)
    assert subjects == ["Approval needed: Fleet renewal (150000)"]
    message = inbox.messages[0]
    assert message["To"] == "ann@example.com, director@example.com"
    assert message.get_body(("plain",)).get_content().count("Fleet renewal") == 1
    assert "Fleet renewal" in message.get_body(("html",)).get_content()
    assert len(pushes) == 1 and pushes[0].headers["Idempotency-Key"]
    assert drained.done == 2 and drained.parked == 0

    for _ in range(3):                       # echoes, unchanged polls
        sync(app, org)
    assert len(inbox.messages) == 1 and len(pushes) == 1

    # The deal falls back, then comes back: a new rising edge, a new email.
    org.edit("006A00000000000001", StageName="Needs Analysis")
    sync(app, org)
    org.edit("006A00000000000001", StageName="Negotiation/Review")
    sync(app, org)
    assert len(inbox.messages) == 2


def test_a_failing_push_is_retried_and_a_refused_one_parked(world):
    app, org, _inbox, _pushes = world
    responses_mock = org.rsps
    answers = iter([(503, {"Retry-After": "1"}, "busy"), (200, {}, "{}")])
    keys = []

    def flaky(request):
        keys.append(request.headers["Idempotency-Key"])
        return next(answers)

    responses_mock.remove(responses.POST, HOOK)  # the plain hook of the fixture
    responses_mock.add_callback(responses.POST, HOOK, flaky)
    org.add("006A00000000000003", StageName="Negotiation/Review", Proposal_Type__c="Budgetary",
            Relationship_Level__c="Known", Amount=10000)       # p60: late-stage push
    _, first = sync(app, org)
    assert first.retrying == 1 and len(keys) == 1
    org.clock.advance(seconds=5)
    second = app.pipeline.drain()
    assert second.done == 1 and len(keys) == 2 and keys[0] == keys[1]  # same key on retry

    responses_mock.remove(responses.POST, HOOK)
    responses_mock.add(responses.POST, HOOK, status=422, body='{"error": "bad stage"}')
    org.add("006A00000000000004", StageName="Negotiation/Review", Proposal_Type__c="Budgetary",
            Relationship_Level__c="New", Amount=20000)
    _, third = sync(app, org)
    assert third.parked == 1
    parked = app.state.items("parked")
    assert len(parked) == 1 and "HTTP 422" in parked[0].reason
    assert HOOK not in parked[0].reason            # the URL (with its token) is never shown
