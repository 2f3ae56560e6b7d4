"""What the DynamoDB state adds to the contract (tests/test_state_contract.py runs that on it
too): Lambdas racing on one table, commits beyond one transaction, TTLs, and AWS errors turned
into the connector's policy."""

from __future__ import annotations

import datetime as dt

import pytest

from connector.core.edges import LedgerState
from connector.errors import ConfigurationError, RetriableError
from connector.state import Commit, OutboxItem
from tests import test_lambda_harness as harness

aws, keep_logging = harness.aws, harness.keep_logging  # fixtures

T0 = dt.datetime(2026, 11, 26, 9, 0, tzinfo=dt.UTC)
LEASE = dt.timedelta(minutes=10)
TABLE = "crm-automation-test-state"


def store(aws):
    from connector.state.dynamodb import DynamoState

    return DynamoState(TABLE, client=aws.dynamodb)


def item(key, record="r1"):
    return OutboxItem(key, record, "notify", "email", {"values": {}})


def transactions(aws):
    """The size of every TransactWriteItems the client sends."""
    sizes: list[int] = []
    aws.dynamodb.meta.events.register(
        "provide-client-params.dynamodb.TransactWriteItems",
        lambda params, **_: sizes.append(len(params["TransactItems"])))
    return sizes


def test_two_lambdas_firing_the_same_edge_make_one_outbox_item(aws):
    a, b = store(aws), store(aws)
    # Both read an empty ledger, both fire episode 1; A commits first and runs the email.
    a.commit([Commit("r1", "v1", {"notify": LedgerState(True, 1)}, [item("r1:notify:1")])], T0)
    assert a.claim("r1:notify:1", T0, LEASE)
    a.done("r1:notify:1", T0)
    b.commit([Commit("r1", "v2", {"notify": LedgerState(True, 1)}, [item("r1:notify:1"),
                                                                   item("r1:other:1")])], T0)
    assert [(i.key, i.status) for i in b.items()] == [("r1:notify:1", "done"),
                                                      ("r1:other:1", "pending")]
    assert b.handled([("r1", "v1"), ("r1", "v2")]) == {("r1", "v1"), ("r1", "v2")}


def test_only_one_of_two_simultaneous_claims_wins(aws):
    a, b = store(aws), store(aws)
    a.commit([Commit("r1", "v1", outbox=[item("k")])], T0)
    assert [a.claim("k", T0, LEASE), b.claim("k", T0, LEASE)].count(True) == 1


def test_a_large_batch_goes_in_transactions_of_at_most_100(aws):
    sizes = transactions(aws)
    s = store(aws)
    commits = [Commit(f"r{n}", "v1", {"notify": LedgerState(True, 1)}, [item(f"r{n}:notify:1",
                                                                            f"r{n}")])
               for n in range(120)]
    s.commit(commits, T0)
    assert sizes and max(sizes) <= 100 and sum(sizes) == 360
    # Whole records per transaction: a record's three writes never straddle two.
    assert all(size % 3 == 0 for size in sizes)
    assert len(s.due(T0, limit=1000)) == 120
    assert s.handled([(f"r{n}", "v1") for n in range(120)]) == {(f"r{n}", "v1")
                                                                 for n in range(120)}


def test_one_record_beyond_a_transaction_is_written_whole(aws):
    sizes = transactions(aws)
    s = store(aws)
    s.commit([Commit("r1", "v1", outbox=[item(f"k{n:03d}") for n in range(150)])], T0)
    assert len(sizes) == 2 and max(sizes) == 100
    assert len(s.items()) == 150 and s.handled([("r1", "v1")]) == {("r1", "v1")}


def test_the_same_record_twice_in_a_batch_is_not_one_transaction(aws):
    sizes = transactions(aws)
    s = store(aws)
    s.commit([Commit("r1", "v1", {"notify": LedgerState(True, 1)}),
              Commit("r1", "v2", {"notify": LedgerState(False, 1)})], T0)
    assert sizes == [2, 2] and s.ledger("r1") == {"notify": LedgerState(False, 1)}


def test_expiring_items_carry_the_ttl_attribute_and_the_table_has_ttl_on(aws):
    s = store(aws)
    s.remember_notification("sf:1", T0)
    s.commit([Commit("r1", "v1", {"notify": LedgerState(True, 1)}, [item("k")])], T0)
    s.claim("k", T0, LEASE)
    s.done("k", T0)
    rows = {(r["pk"]["S"], r["sk"]["S"]): r for r in aws.dynamodb.scan(TableName=TABLE)["Items"]}
    assert int(rows[("notice#sf:1", "notice")]["expires_at"]["N"]) > T0.timestamp()
    assert int(rows[("record#r1", "version#v1")]["expires_at"]["N"]) > T0.timestamp()
    assert int(rows[("outbox#k", "outbox")]["expires_at"]["N"]) > T0.timestamp()
    assert "expires_at" not in rows[("record#r1", "ledger#notify")]   # the ledger stays
    ttl = aws.dynamodb.describe_time_to_live(TableName=TABLE)["TimeToLiveDescription"]
    assert ttl == {"TimeToLiveStatus": "ENABLED", "AttributeName": "expires_at"}


def test_an_expired_notification_that_ttl_has_not_deleted_yet_is_new_again(aws):
    s = store(aws)
    assert s.remember_notification("sf:1", T0)
    assert not s.remember_notification("sf:1", T0 + dt.timedelta(days=6))
    assert s.remember_notification("sf:1", T0 + dt.timedelta(days=8))


def test_a_missing_table_is_a_configuration_error_naming_it(aws):
    from connector.state.dynamodb import DynamoState

    with pytest.raises(ConfigurationError, match="no-such-table"):
        DynamoState("no-such-table", client=aws.dynamodb).get_cursor("x")


def test_throttling_is_retriable(aws):
    from botocore.stub import Stubber

    s = store(aws)
    stub = Stubber(aws.dynamodb)
    stub.add_client_error("get_item", "ProvisionedThroughputExceededException",
                          http_status_code=400)
    with stub, pytest.raises(RetriableError):
        s.get_cursor("x")


def test_open_state_reads_the_table_from_state_url(aws):
    from connector.state import open_state
    from connector.state.dynamodb import DynamoState

    s = open_state(f"dynamodb://{TABLE}")
    assert isinstance(s, DynamoState)
    s.set_cursor("c", "2026-11-26T09:00:00+00:00")
    assert store(aws).get_cursor("c") == "2026-11-26T09:00:00+00:00"


def test_a_resource_can_be_injected(aws):
    import boto3

    from connector.state.dynamodb import DynamoState

    s = DynamoState(TABLE, resource=boto3.resource("dynamodb"))
    assert s.remember_notification("sf:9", T0) and not store(aws).remember_notification(
        "sf:9", T0)
