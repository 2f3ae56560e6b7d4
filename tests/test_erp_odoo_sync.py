"""Closed-won deals become Odoo sales orders exactly once, on both transports (JSON-2 for
Odoo 19, XML-RPC for Odoo 17): after one sync and more, after the process is killed at random
lines and run again, and after Odoo was down. Lost and open deals make no order."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import responses
from fake_odoo import API_KEY, DATABASE, LOGIN, FakeOdoo

from connector.pipeline import LEASE
from connector.settings import Settings
from tests.fake_salesforce import INSTANCE, Clock, FakeOrg
from tests.test_erp_sync import ACCOUNTS, HOOK, add_deals, kill_at_random, sync

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(params=[19, 17], ids=["json2", "xmlrpc"])
def world(request, tmp_path, monkeypatch):
    odoo = FakeOdoo(version=request.param)
    mappings = tmp_path / "mappings"
    shutil.copytree(ROOT / "mappings", mappings)
    shutil.copy(ROOT / "tests" / "fixtures" / "odoo" / "erp.yaml", mappings / "erp.yaml")
    monkeypatch.setenv("MARKETING_WEBHOOK_URL", HOOK)
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        rsps.add_passthru("http://127.0.0.1")
        rsps.add(responses.POST, HOOK, json={})
        org = FakeOrg(rsps, Clock())
        add_deals(org)
        settings = Settings(_env_file=None, salesforce_instance_url=INSTANCE,
                            salesforce_access_token="00Dxx!session", erp_url=odoo.url,
                            erp_database=DATABASE, erp_username=LOGIN, erp_password=API_KEY,
                            state_url=f"sqlite:///{tmp_path / 'state.db'}")
        yield settings, org, odoo, mappings
    odoo.close()


def assert_one_order_per_won_deal(odoo: FakeOdoo) -> None:
    refs = sorted(o["client_order_ref"] for o in odoo.orders.values())
    assert refs == sorted(f"006W{i:014d}" for i in range(20))
    assert sorted(p["name"] for p in odoo.partners.values()) == sorted(ACCOUNTS)
    assert len(odoo.xmlids) == 20


def test_twenty_won_deals_make_twenty_orders_for_three_customers(world):
    settings, org, odoo, mappings = world
    sync(settings, org, mappings_dir=mappings)
    assert_one_order_per_won_deal(odoo)
    for order in odoo.orders.values():
        i = int(order["client_order_ref"][4:])
        assert order["amount_untaxed"] == 1000 + i * 250.5
        assert odoo.partners[order["partner_id"]]["name"] == ACCOUNTS[i % 3]
    for _ in range(3):
        sync(settings, org, mappings_dir=mappings)
    assert_one_order_per_won_deal(odoo)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_kills_then_reruns_still_make_one_order_per_won_deal(world, seed):
    settings, org, odoo, mappings = world
    kills = kill_at_random(lambda: sync(settings, org, mappings_dir=mappings), seed)
    org.clock.advance(seconds=LEASE.total_seconds() + 1)
    app = sync(settings, org, mappings_dir=mappings)
    sync(settings, org, mappings_dir=mappings)
    assert kills >= 1
    assert [i for i in app.state.items() if i.status != "done"] == []
    assert_one_order_per_won_deal(odoo)


def test_with_odoo_down_the_orders_wait_and_go_once_it_is_back(world):
    settings, org, odoo, mappings = world
    odoo.down = True
    app = sync(settings, org, mappings_dir=mappings)
    waiting = [i for i in app.state.items() if i.kind == "erp"]
    assert len(waiting) == 20 and all(i.status == "pending" and "Odoo" in i.reason
                                      for i in waiting)
    odoo.down = False
    org.clock.advance(hours=7)  # past the longest backoff
    sync(settings, org, mappings_dir=mappings)
    assert_one_order_per_won_deal(odoo)
