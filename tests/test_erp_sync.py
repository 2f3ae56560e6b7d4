"""Closed-won deals become sales orders in a real Tryton, exactly once: after one sync and
after three more, after the process is killed at random lines and run again, and after the ERP
was down. Lost and open deals make no order."""

from __future__ import annotations

import random
import sys

import pytest
import responses

from connector.app import build_app
from connector.cli import main
from connector.pipeline import LEASE
from connector.settings import Settings
from tests.fake_salesforce import INSTANCE, Clock, FakeOrg

HOOK = "https://hooks.example.com/marketing/T0KEN"
ACCOUNTS = ["Acme Corp", "Globex", "Initech"]


class Killed(BaseException):
    """The process dies at this line."""


def kill_after(lines: int) -> None:
    """Raise Killed at the n-th line the connector executes: a crash at any line."""
    count = 0

    def tracer(frame, event, arg):
        nonlocal count
        if "/connector/" not in frame.f_code.co_filename:
            return None
        if event == "line":
            count += 1
            if count == lines:
                sys.settrace(None)
                raise Killed
        return tracer

    sys.settrace(tracer)


def kill_at_random(run, seed: int, runs: int = 4, lines: int = 30_000) -> int:
    """`run()` `runs` times, each killed at a random line (when it gets that far); the kills."""
    rng = random.Random(seed)
    kills = 0
    for _ in range(runs):
        kill_after(rng.randint(50, lines))
        try:
            run()
        except Killed:
            kills += 1
        finally:
            sys.settrace(None)
    return kills


def add_deals(org: FakeOrg) -> None:
    """20 won deals over 3 accounts, 5 lost and 5 open."""
    for i in range(20):
        org.add(f"006W{i:014d}", StageName="Closed Won", Amount=1000 + i * 250.5,
                Name=f"Won deal {i}", CloseDate="2026-11-20",
                Account={"Name": ACCOUNTS[i % 3]})
    for i in range(5):
        org.add(f"006L{i:014d}", StageName="Closed Lost", Amount=5000,
                CloseDate="2026-11-20", Account={"Name": "Lost Ltd"})
        org.add(f"006O{i:014d}", StageName="Qualification", Amount=5000,
                Account={"Name": "Open Inc"})


@pytest.fixture
def world(tmp_path, tryton, monkeypatch):
    monkeypatch.setenv("MARKETING_WEBHOOK_URL", HOOK)
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        rsps.add_passthru("http://127.0.0.1")
        rsps.add(responses.POST, HOOK, json={})
        org = FakeOrg(rsps, Clock())
        add_deals(org)
        url, database, username, password = tryton
        settings = Settings(_env_file=None, salesforce_instance_url=INSTANCE,
                            salesforce_access_token="00Dxx!session", erp_url=url,
                            erp_database=database, erp_username=username,
                            erp_password=password,
                            state_url=f"sqlite:///{tmp_path / 'state.db'}")
        yield settings, org, tryton


def sync(settings, org, **folders):
    """One `crm-automation sync` in a new process (a new app on the same state); `folders`:
    build_app's rules_dir and mappings_dir, where a test has its own."""
    app = build_app(settings=settings, now=org.clock, **folders)
    org.clock.advance(seconds=1)
    app.pipeline.poll(fire_backfill=True)  # the seeded won deals become orders
    app.pipeline.drain()
    return app


def orders(tryton):
    sales = tryton.rpc("model.sale.sale.search_read", [], 0, None, None,
                       ["reference", "party.name", "total_amount"])
    return sales


def test_twenty_won_deals_make_twenty_orders_for_three_customers(world):
    settings, org, tryton = world
    sync(settings, org)
    sales = orders(tryton)
    assert sorted(s["reference"] for s in sales) == sorted(f"006W{i:014d}" for i in range(20))
    assert {s["party."]["name"] for s in sales} == set(ACCOUNTS)
    assert tryton.count("party.party", [("name", "in", ACCOUNTS)]) == 3
    assert tryton.count("party.party", [("name", "in", ["Lost Ltd", "Open Inc"])]) == 0
    for _ in range(3):
        sync(settings, org)
    assert tryton.count("sale.sale") == 20 and tryton.count("party.party",
                                                            [("name", "in", ACCOUNTS)]) == 3


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_kills_then_reruns_still_make_one_order_per_won_deal(world, seed):
    settings, org, tryton = world
    kills = kill_at_random(lambda: sync(settings, org), seed)
    # A killed worker's claim on an outbox item lapses after the lease; then the rerun.
    org.clock.advance(seconds=LEASE.total_seconds() + 1)
    app = sync(settings, org)
    sync(settings, org)
    assert kills >= 1
    assert [i for i in app.state.items() if i.status != "done"] == []
    sales = orders(tryton)
    assert len(sales) == 20 == len({s["reference"] for s in sales})
    assert tryton.count("party.party", [("name", "in", ACCOUNTS)]) == 3


def test_with_the_erp_down_the_orders_wait_and_go_once_it_is_back(world, monkeypatch,
                                                                  capsys):
    settings, org, tryton = world
    tryton.stop()
    app = sync(settings, org)
    waiting = [i for i in app.state.items() if i.kind == "erp"]
    assert len(waiting) == 20 and all(i.status == "pending" and i.reason for i in waiting)
    assert all("ERP" in i.reason or "Tryton" in i.reason for i in waiting)
    tryton.restart()
    for name, value in (("SALESFORCE_INSTANCE_URL", INSTANCE),
                        ("SALESFORCE_ACCESS_TOKEN", "00Dxx!session"),
                        ("ERP_URL", settings.erp_url), ("ERP_DATABASE", settings.erp_database),
                        ("ERP_USERNAME", settings.erp_username),
                        ("ERP_PASSWORD", settings.erp_password.get_secret_value()),
                        ("STATE_URL", settings.state_url)):
        monkeypatch.setenv(name, value)
    assert main(["outbox", "list"]) == 0
    assert "erp" in capsys.readouterr().out
    assert main(["outbox", "retry"]) == 0
    assert tryton.count("sale.sale") == 20
    sync(settings, org)
    assert tryton.count("sale.sale") == 20
