"""The scenario of tests/test_serve.py and tests/test_erp_sync.py, in the cloud shape: webhooks
into the webhook function, the notice in DynamoDB and a message on SQS (moto), the worker
writing back to the fake Salesforce org and turning won deals into sales orders in a real
Tryton, exactly once, however often the changes are delivered, polled or retried."""

from __future__ import annotations

import json

from tests import test_lambda_harness as harness
from tests.test_lambda_harness import (
    SECRETS_PATH,
    LambdaContext,
    fixture,
    sent_emails,
    signed_event,
)

aws, world, keep_logging = harness.aws, harness.world, harness.keep_logging  # fixtures

ACCOUNTS = ["Acme Corp", "Globex", "Initech"]
WON = [f"006W{i:014d}" for i in range(20)]
LOST = [f"006L{i:014d}" for i in range(5)]
OPEN = [f"006O{i:014d}" for i in range(5)]


def deals(world, tryton):
    org = world.org
    for i, rid in enumerate(WON):
        org.add(rid, StageName="Closed Won", Amount=1000 + i * 250.5, Name=f"Won deal {i}",
                CloseDate="2026-11-20", Account={"Name": ACCOUNTS[i % 3]})
    for rid in LOST:
        org.add(rid, StageName="Closed Lost", Amount=5000, CloseDate="2026-11-20",
                Account={"Name": "Lost Ltd"})
    for rid in OPEN:
        org.add(rid, StageName="Qualification", Amount=5000, Account={"Name": "Open Inc"})
    url, database, username, password = tryton
    world.aws.ssm.put_parameter(Name=f"{SECRETS_PATH}ERP_PASSWORD", Value=password,
                                Type="SecureString")
    for name, value in (("ERP_URL", url), ("ERP_DATABASE", database),
                        ("ERP_USERNAME", username)):
        world.monkeypatch.setenv(name, value)
    world.new_container()


def ids_webhook(world, ids):
    body = json.dumps({"ids": ids}).encode()
    return world.webhook(signed_event("apigw_v2_signed_json.json", body))


def poll(world):
    from connector.handlers.poll import lambda_handler

    world.org.clock.advance(seconds=1)
    return lambda_handler(fixture("eventbridge_scheduled_event.json"),
                          LambdaContext(function_name="crm-automation-test-poll"))


def orders(tryton):
    return tryton.rpc("model.sale.sale.search_read", [], 0, None, None,
                      ["reference", "party.name", "total_amount"])


def test_webhooks_in_write_back_and_won_deals_become_one_order_each(world, tryton):
    deals(world, tryton)
    # The Outbound Message of tests/test_serve.py, then Apex's signed JSON naming every deal.
    assert world.webhook(fixture("apigw_v2_salesforce_outbound.json"))["statusCode"] == 200
    assert ids_webhook(world, WON + LOST + OPEN + ["0065g00000QzW2KAAV"])["statusCode"] == 202
    assert world.org.api_calls == 0                        # the webhook function read nothing
    answers = world.work()
    assert all(a == {"batchItemFailures": []} for a in answers)
    assert world.org.records["0065g00000QzW1xAAF"]["Probability"] == 90
    assert all(world.org.records[r]["Probability"] == 100 for r in WON)
    assert all(world.org.records[r]["Probability"] == 0 for r in LOST)
    sales = orders(tryton)
    assert sorted(s["reference"] for s in sales) == WON
    assert {s["party."]["name"] for s in sales} == set(ACCOUNTS)
    assert tryton.count("party.party", [("name", "in", ["Lost Ltd", "Open Inc"])]) == 0
    assert len(sent_emails()) == 1                         # the p90 deal's approval email
    # Delivered again, polled, swept by a new container: nothing new anywhere.
    assert ids_webhook(world, WON)["statusCode"] == 202
    world.work()
    world.new_container()
    assert poll(world)["written"] == 0
    world.work()
    assert tryton.count("sale.sale") == 20 and len(sent_emails()) == 1
    assert all(world.org.writes[r] == 1 for r in WON)
    assert [i.key for i in world.items() if i.status != "done"] == []
    assert world.aws.messages(world.aws.dlq_url) == []


def test_with_the_erp_down_the_orders_wait_and_go_once_it_is_back(world, tryton):
    deals(world, tryton)
    tryton.stop()
    ids_webhook(world, WON)
    world.work()
    waiting = [i for i in world.items() if i.kind == "erp"]
    assert len(waiting) == 20 and all(i.status == "pending" and i.reason for i in waiting)
    assert world.aws.messages(world.aws.dlq_url) == []     # the state retries, not the queue
    tryton.restart()
    world.org.clock.advance(hours=7)                       # past the longest backoff
    poll(world)                                            # the schedule's drain message
    world.work()
    assert tryton.count("sale.sale") == 20
    poll(world)
    world.work()
    assert tryton.count("sale.sale") == 20
    assert [i.key for i in world.items() if i.status != "done"] == []
