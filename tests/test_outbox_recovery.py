"""The outbox after the worst: one item that fails in a way no sender foresaw is parked with its
reason while the drain goes on; a run killed with SIGKILL leaves leases that the next run on
this host takes back at once; a lease held by a live run is counted, with when it ends."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import responses
from rich.console import Console

from connector.app import build_app
from connector.cli import _print_drain
from connector.pipeline import LEASE
from connector.settings import Settings
from connector.state import holder
from tests.fake_salesforce import INSTANCE, Clock, FakeOrg
from tests.smtp_server import smtp  # noqa: F401 - the fixture

ROOT = Path(__file__).resolve().parent.parent
HOOK = "https://hooks.example.com/marketing/T0KEN-5ecret-9a8b"
LIKELY = {"StageName": "Negotiation/Review", "Proposal_Type__c": "Firm",
          "Relationship_Level__c": "Trusted", "Amount": 120000}  # p90: an email and a push
DEALS = ["006C00000000000001", "006C00000000000002", "006C00000000000003"]


@pytest.fixture
def world(tmp_path, smtp, monkeypatch):  # noqa: F811
    url, inbox = smtp
    monkeypatch.setenv("MARKETING_WEBHOOK_URL", HOOK)
    pushed: list[str] = []
    broken: set[str] = set()

    def push(request, key):
        deal = request["json"]["opportunity"]
        if deal in broken:   # what a library raises on a value it cannot send
            raise ValueError(f"Invalid header value for {request['url']}")
        pushed.append(deal)
        return "HTTP POST 200"

    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        rsps.add_passthru("http://127.0.0.1")
        org = FakeOrg(rsps, Clock())
        org.add("006C00000000000000", StageName="Prospecting")
        settings = Settings(_env_file=None, salesforce_instance_url=INSTANCE,
                            salesforce_access_token="00Dxx!session", smtp_url=url,
                            email_from="crm@example.com",
                            state_url=f"sqlite:///{tmp_path / 'state.db'}")
        app = build_app(settings=settings, now=org.clock, senders={"http": push})
        app.pipeline.poll()               # a first sync, before the deals of the test
        for deal in DEALS:
            org.add(deal, Name=f"Deal {deal[-1]}", **LIKELY)
        org.clock.advance(seconds=1)
        app.pipeline.poll()
        yield app, org, inbox, pushed, broken, tmp_path / "state.db"


def pushes(app):
    return {i.record_id: i for i in app.state.items() if i.action == "push-marketing"}


def test_an_unexpected_failure_parks_that_item_alone_with_its_reason(world):
    app, org, inbox, pushed, broken, _ = world
    broken.add(DEALS[0])
    drained = app.pipeline.drain()
    assert drained.parked == 1 and drained.done == 5       # 3 emails, 2 pushes
    assert sorted(pushed) == DEALS[1:] and len(inbox.messages) == 3
    bad = pushes(app)[DEALS[0]]
    assert bad.status == "parked" and bad.reason.startswith("unexpected ValueError: Invalid")
    assert "5ecret" not in bad.reason                    # the URL's token is masked
    # Fixed, and retried by the admin: it goes through, nothing else runs twice.
    broken.clear()
    app.state.release([bad.key], org.clock())
    assert app.pipeline.drain().done == 1
    assert sorted(pushed) == sorted(DEALS) and len(inbox.messages) == 3


CLAIM = """
import datetime as dt, sys, time
from connector.state import holder
from connector.state.sqlite import SqliteState
state = SqliteState(sys.argv[1])
now = dt.datetime.fromisoformat(sys.argv[2])
for key in sys.argv[3:]:
    assert state.claim(key, now, dt.timedelta(minutes=10), holder.this_process())
print("claimed", flush=True)
time.sleep(120)
"""


def claim_in_another_process(path, now, keys):
    """Another run on this host takes these items and is still running them."""
    process = subprocess.Popen([sys.executable, "-c", CLAIM, str(path), now.isoformat(), *keys],
                               stdout=subprocess.PIPE, text=True,
                               env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert process.stdout is not None and process.stdout.readline().strip() == "claimed"
    return process


def test_a_killed_runs_items_are_taken_back_by_the_next_run_at_once(world, capsys):
    app, org, _, pushed, _, path = world
    keys = [i.key for i in pushes(app).values()]
    other = claim_in_another_process(path, org.clock(), keys)
    try:
        drained = app.pipeline.drain()          # the other run holds the pushes: counted
        assert drained.done == 3 and pushed == []
        assert drained.in_flight == 3
        assert drained.in_flight_until == (org.clock() + LEASE).isoformat(timespec="seconds")
        _print_drain(Console(width=200), drained)
        said = capsys.readouterr().out
        assert "in flight 3" in said and drained.in_flight_until in said
    finally:
        os.kill(other.pid, signal.SIGKILL)
        other.wait()
    # Killed: its leases would last 10 more minutes; the next run takes them back now.
    drained = app.pipeline.drain()
    assert drained.done == 3 and drained.in_flight == 0
    assert sorted(pushed) == sorted(DEALS)
    assert all(i.status == "done" and i.attempts == 2 for i in pushes(app).values())


def test_the_holder_is_this_process_until_it_is_gone():
    me = holder.this_process()
    assert not holder.is_gone(me)
    done = subprocess.run([sys.executable, "-c",
                           "from connector.state import holder; print(holder.this_process())"],
                          capture_output=True, text=True, check=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    ended = done.stdout.strip()
    assert ended.split(" pid ")[0] == me.split(" pid ")[0] and holder.is_gone(ended)
    scope, _, rest = me.partition(" pid ")
    pid = rest.partition(" started ")[0]
    assert holder.is_gone(f"{scope} pid {pid} started 1")       # the pid, reused by another
    assert not holder.is_gone(f"other-host#0000 pid {pid} started 1")   # never judged
    assert not holder.is_gone("") and holder.host_of(me).endswith(f"pid {pid}")


def test_outbox_list_shows_what_is_in_flight_who_runs_it_and_until_when(world, capsys,
                                                                       monkeypatch):
    import datetime as dt

    from connector.cli import main

    app, _, _, _, _, path = world
    keys = sorted(i.key for i in pushes(app).values())
    now = dt.datetime.now(dt.UTC)
    other = claim_in_another_process(path, now, keys[:1])
    try:
        monkeypatch.setenv("STATE_URL", f"sqlite:///{path}")
        monkeypatch.setenv("COLUMNS", "250")
        assert main(["outbox", "list"]) == 0
    finally:
        os.kill(other.pid, signal.SIGKILL)
        other.wait()
    said = capsys.readouterr().out
    [line] = [s for s in said.splitlines() if keys[0] in s]
    assert "in flight" in line and f"pid {other.pid}" in line
    assert (now + LEASE).isoformat(timespec="seconds")[:16] in line
    assert "6 items, 1 in flight" in said


def test_a_killed_process_not_yet_reaped_is_gone_too():
    child = subprocess.Popen([sys.executable, "-c", "from connector.state import holder; "
                              "print(holder.this_process(), flush=True); import time; "
                              "time.sleep(60)"], stdout=subprocess.PIPE, text=True,
                             env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert child.stdout is not None
    held = child.stdout.readline().strip()
    assert not holder.is_gone(held)
    os.kill(child.pid, signal.SIGKILL)
    try:
        os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)   # dead, left a zombie
        assert holder.is_gone(held)
    finally:
        child.wait()
