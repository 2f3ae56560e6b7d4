"""The state store in one DynamoDB table: the cloud backend, shared by Lambdas that may run at
the same time. Every write two of them could race on is conditional:

- the cursor only moves forward (`value < :new`);
- a notification is remembered once (`attribute_not_exists`);
- a commit (handled versions, ledger, new outbox items) is one TransactWriteItems of at most
  100 items; an outbox key that already exists is left as it is (SQLite's INSERT OR IGNORE);
- an outbox claim is an update conditional on the item being pending and its lease lapsed;
- a snapshot is put only if it is not there (`record#ID`, `snapshot#ORDER#DIGEST`, ORDER being
  `Snapshot.order`), in the transaction of its record's commit; `snapshot-last` beside it
  holds the digest of the record's latest one, which a commit reads first (one BatchGetItem
  per 100 records) so that only changed values are appended; it moves forward only.

One table, keys `pk` and `sk`; `expires_at` is its TTL attribute (notifications, handled
versions and done outbox items expire; the ledger and the cursor never do). Two sparse indexes:
`due` (pending items by next try) and `status` (items by status, oldest first).
`TABLE` is the definition; serverless.yml declares the same one, and a test checks they agree.
"""

from __future__ import annotations

import datetime as dt
import json
import random
import re
import time
from collections.abc import Iterable, Iterator
from typing import Any

from connector.core.edges import LedgerState
from connector.errors import ConfigurationError, RetriableError, Text, restored, stored
from connector.state import (
    Commit,
    OutboxItem,
    Snapshot,
    Status,
    pack_values,
    unpack_values,
    utc_text,
)

TRANSACTION_LIMIT = 100       # DynamoDB's limit of items per TransactWriteItems
BATCH_GET_LIMIT = 100         # ... and of keys per BatchGetItem
NOTIFICATION_TTL = dt.timedelta(days=7)    # Salesforce resends for 24 h; CDC keeps 72 h
HANDLED_TTL = dt.timedelta(days=30)        # far beyond the poll's overlap and any redelivery
DONE_TTL = dt.timedelta(days=90)           # `outbox list --all` history
SNAPSHOT_LAST = "snapshot-last"            # sort key of a record's latest snapshot digest
STATUSES: tuple[Status, ...] = ("pending", "parked", "waiting", "done")

TABLE: dict[str, Any] = {
    "AttributeDefinitions": [
        {"AttributeName": name, "AttributeType": "S"}
        for name in ("pk", "sk", "due_pk", "due_sk", "status", "order_sk")],
    "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"},
                  {"AttributeName": "sk", "KeyType": "RANGE"}],
    "GlobalSecondaryIndexes": [
        {"IndexName": "due",
         "KeySchema": [{"AttributeName": "due_pk", "KeyType": "HASH"},
                       {"AttributeName": "due_sk", "KeyType": "RANGE"}],
         "Projection": {"ProjectionType": "ALL"}},
        {"IndexName": "status",
         "KeySchema": [{"AttributeName": "status", "KeyType": "HASH"},
                       {"AttributeName": "order_sk", "KeyType": "RANGE"}],
         "Projection": {"ProjectionType": "ALL"}},
    ],
    "BillingMode": "PAY_PER_REQUEST",
}
TTL_ATTRIBUTE = "expires_at"

_RETRIABLE = frozenset({
    "ProvisionedThroughputExceededException", "ThrottlingException", "RequestLimitExceeded",
    "InternalServerError", "ServiceUnavailable", "TransactionConflictException",
    "TransactionInProgressException", "LimitExceededException"})
_CONFIGURATION = frozenset({"ResourceNotFoundException", "AccessDeniedException",
                            "UnrecognizedClientException", "ValidationException"})


# Every attribute in an expression is written `#name` (DynamoDB reserves words such as status,
# value and key); `_call` supplies ExpressionAttributeNames from them.
_NAME = re.compile(r"#(\w+)")
_EXPRESSIONS = ("KeyConditionExpression", "FilterExpression", "ConditionExpression",
                "UpdateExpression", "ProjectionExpression")


_iso = utc_text


def _after(value: dt.datetime) -> str:
    """The smallest string above every `<iso(value)>#...` index key."""
    return _iso(value + dt.timedelta(microseconds=1))


def _epoch(value: dt.datetime) -> str:
    return str(int(value.timestamp()))


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def _s(value: str) -> dict[str, str]:
    return {"S": value}


def _n(value: int) -> dict[str, str]:
    return {"N": str(value)}


def _outbox_pk(key: str) -> dict[str, dict[str, str]]:
    return {"pk": _s(f"outbox#{key}"), "sk": _s("outbox")}


class _Cancelled(Exception):
    def __init__(self, codes: list[str]) -> None:
        super().__init__(", ".join(codes))
        self.codes = codes


class DynamoState:
    """`dynamodb://TABLE`. Pass `client` (a boto3 DynamoDB client) to use your own, e.g. in
    tests, or `resource` (a boto3 DynamoDB service resource) to use its region and endpoint."""

    def __init__(self, table_name: str, *, client: Any = None, resource: Any = None) -> None:
        if not table_name:
            raise ConfigurationError(Text("STATE_URL must name the table: dynamodb://TABLE"))
        if client is None:
            import boto3
            from botocore.config import Config

            config = Config(retries={"mode": "standard", "max_attempts": 5})
            if resource is not None:
                # A resource's own client turns Python values into DynamoDB's typed ones and
                # would wrap ours again: a plain client at the same region and endpoint.
                meta = resource.meta.client.meta
                client = boto3.client("dynamodb", region_name=meta.region_name,
                                      endpoint_url=meta.endpoint_url,
                                      config=meta.config.merge(config))
            else:
                client = boto3.client("dynamodb", config=config)
        self.table = table_name
        self._db = client

    # --- calls, with errors translated to the connector's policy -------------------------------
    def _call(self, operation: str, **kwargs: Any) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError

        names = {m for k in _EXPRESSIONS if k in kwargs for m in _NAME.findall(kwargs[k])}
        if names:
            kwargs["ExpressionAttributeNames"] = {f"#{n}": n for n in sorted(names)}
        try:
            return getattr(self._db, operation)(**kwargs)
        except ClientError as exc:
            error = exc.response.get("Error", {})
            code = str(error.get("Code", ""))
            if code == "ConditionalCheckFailedException":
                raise
            if code == "TransactionCanceledException":
                reasons = exc.response.get("CancellationReasons") or []
                raise _Cancelled([str(r.get("Code", "None")) for r in reasons]) from None
            if code in _CONFIGURATION:
                raise ConfigurationError(Text(
                    "DynamoDB table '{table}' refused {operation} ({code}): check that it "
                    "exists, in this region, and that this role may use it", table=self.table,
                    operation=operation, code=code)) from None
            if code in _RETRIABLE or exc.response.get("ResponseMetadata", {}).get(
                    "HTTPStatusCode", 0) >= 500:
                raise RetriableError(Text("DynamoDB is busy or down ({code}); try again",
                                          code=code)) from None
            raise RetriableError(Text("DynamoDB refused {operation} ({code})",
                                      operation=operation, code=code)) from None
        except BotoCoreError as exc:
            raise RetriableError(Text("cannot reach DynamoDB ({error})",
                                      error=type(exc).__name__)) from None

    def _conditional(self, operation: str, **kwargs: Any) -> bool:
        """Run a conditional write: False when the condition did not hold."""
        from botocore.exceptions import ClientError

        try:
            self._call(operation, TableName=self.table, **kwargs)
        except ClientError:  # only ConditionalCheckFailedException gets here
            return False
        return True

    def _query(self, **kwargs: Any) -> Iterator[dict[str, Any]]:
        while True:
            page = self._call("query", TableName=self.table, **kwargs)
            yield from page.get("Items", [])
            if "LastEvaluatedKey" not in page:
                return
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    # --- cursor -----------------------------------------------------------------------------
    def get_cursor(self, name: str) -> str | None:
        found = self._call("get_item", TableName=self.table, ConsistentRead=True,
                           Key={"pk": _s(f"cursor#{name}"), "sk": _s("cursor")}).get("Item")
        return found["value"]["S"] if found else None

    def set_cursor(self, name: str, value: str) -> None:
        # Forward only (connector.state.cursor.later): a slower Lambda never moves it back.
        self._conditional(
            "update_item", Key={"pk": _s(f"cursor#{name}"), "sk": _s("cursor")},
            UpdateExpression="SET #value = :v",
            ConditionExpression="attribute_not_exists(#value) OR #value < :v",
            ExpressionAttributeValues={":v": _s(value)})

    # --- versions and notifications -----------------------------------------------------------
    def handled(self, versions: Iterable[tuple[str, str]]) -> set[tuple[str, str]]:
        keys = [{"pk": _s(f"record#{r}"), "sk": _s(f"version#{v}")}
                for r, v in dict.fromkeys(versions)]
        return {(row["pk"]["S"].removeprefix("record#"), row["sk"]["S"].removeprefix("version#"))
                for row in self._get_many(keys, "pk, sk")}

    def _get_many(self, keys: list[dict[str, Any]], projection: str) -> list[dict[str, Any]]:
        """The items with these keys (those that exist), 100 keys a BatchGetItem."""
        found: list[dict[str, Any]] = []
        for i in range(0, len(keys), BATCH_GET_LIMIT):
            request: dict[str, Any] = {self.table: {
                "Keys": keys[i:i + BATCH_GET_LIMIT], "ConsistentRead": True,
                "ProjectionExpression": projection}}
            for attempt in range(10):
                answer = self._call("batch_get_item", RequestItems=request)
                found += answer.get("Responses", {}).get(self.table, [])
                request = answer.get("UnprocessedKeys") or {}
                if not request:
                    break
                _pause(attempt)
            else:
                raise RetriableError(Text("DynamoDB left keys unread after 10 tries; try again"))
        return found

    def remember_notification(self, key: str, now: dt.datetime) -> bool:
        return self._conditional(
            "put_item",
            Item={"pk": _s(f"notice#{key}"), "sk": _s("notice"), "at": _s(_iso(now)),
                  TTL_ATTRIBUTE: {"N": _epoch(now + NOTIFICATION_TTL)}},
            # One that expired but that TTL has not deleted yet counts as gone.
            ConditionExpression="attribute_not_exists(pk) OR #expires_at < :now",
            ExpressionAttributeValues={":now": {"N": _epoch(now)}})

    # --- ledger and commit --------------------------------------------------------------------
    def ledger(self, record_id: str) -> dict[str, LedgerState]:
        rows = self._query(
            KeyConditionExpression="pk = :pk AND begins_with(sk, :ledger)", ConsistentRead=True,
            ExpressionAttributeValues={":pk": _s(f"record#{record_id}"),
                                       ":ledger": _s("ledger#")})
        return {row["sk"]["S"].removeprefix("ledger#"): LedgerState(
            bool(row["active"]["BOOL"]), int(row["episode"]["N"])) for row in rows}

    def _writes(self, commit: Commit, now: dt.datetime,
                last: dict[str, str | None]) -> list[dict[str, Any]]:
        """One commit's writes, outbox first and the handled version last: should a commit
        ever need more than one transaction, a crash between them leaves it to be redone, and
        the redo finds its outbox items there already and leaves them be."""
        stamp = _iso(now)
        writes: list[dict[str, Any]] = []
        seen: set[str] = set()
        for item in commit.outbox:
            if item.key in seen:      # the first one wins, as it does in SQLite
                continue
            seen.add(item.key)
            writes.append({"Put": {
                "TableName": self.table, "Item": self._outbox_row(item, now, stamp),
                "ConditionExpression": "attribute_not_exists(pk)"}})
        for action, entry in commit.ledger.items():
            writes.append({"Put": {"TableName": self.table, "Item": {
                "pk": _s(f"record#{commit.record_id}"), "sk": _s(f"ledger#{action}"),
                "active": {"BOOL": bool(entry.active)}, "episode": _n(entry.episode)}}})
        snapshot = commit.snapshot
        if snapshot is not None and snapshot.digest != last.get(commit.record_id):
            last[commit.record_id] = snapshot.digest
            writes += self._snapshot_writes(snapshot)
        if commit.version is not None:
            writes.append({"Put": {"TableName": self.table, "Item": {
                "pk": _s(f"record#{commit.record_id}"), "sk": _s(f"version#{commit.version}"),
                "at": _s(stamp), TTL_ATTRIBUTE: {"N": _epoch(now + HANDLED_TTL)}}}})
        return writes

    def _outbox_row(self, item: OutboxItem, now: dt.datetime, stamp: str) -> dict[str, Any]:
        next_at = _iso(item.next_at or now)
        row: dict[str, Any] = {
            **_outbox_pk(item.key), "key": _s(item.key), "record_id": _s(item.record_id),
            "action": _s(item.action), "kind": _s(item.kind),
            "payload": _s(json.dumps(item.payload, default=str)), "status": _s(item.status),
            "attempts": _n(0), "next_at": _s(next_at), "reason": _s(stored(item.reason)),
            "created": _s(stamp), "updated": _s(stamp), "order_sk": _s(f"{stamp}#{item.key}")}
        if item.status == "pending":
            row["due_pk"] = _s("due")
            row["due_sk"] = _s(f"{next_at}#{item.key}")
        if item.status == "done":
            row[TTL_ATTRIBUTE] = {"N": _epoch(now + DONE_TTL)}
        return row

    def commit(self, commits: Iterable[Commit], now: dt.datetime) -> None:
        # Every item is built before anything is written: a commit that cannot be serialised
        # fails the whole call with nothing written.
        commits = list(commits)
        last = self._last_digests({c.record_id for c in commits if c.snapshot is not None})
        groups = [self._writes(c, now, last) for c in commits]
        chunk: list[dict[str, Any]] = []
        keys: set[tuple[str, str]] = set()
        for writes in groups:
            if len(writes) > TRANSACTION_LIMIT:  # one record beyond a transaction: in order
                self._transact(chunk)
                chunk, keys = [], set()
                for i in range(0, len(writes), TRANSACTION_LIMIT):
                    self._transact(writes[i:i + TRANSACTION_LIMIT])
                continue
            mine = {_key_of(w) for w in writes}
            # A transaction may not touch one item twice, nor hold more than 100 writes.
            if len(chunk) + len(writes) > TRANSACTION_LIMIT or keys & mine:
                self._transact(chunk)
                chunk, keys = [], set()
            chunk.extend(writes)
            keys |= mine
        self._transact(chunk)

    def _transact(self, writes: list[dict[str, Any]]) -> int:
        """Write these together; returns how many were written (a conditional put whose item
        exists is left out)."""
        for attempt in range(8):
            if not writes:
                return 0
            try:
                self._call("transact_write_items", TransactItems=writes)
                return len(writes)
            except _Cancelled as cancelled:
                codes = cancelled.codes
                if len(codes) == len(writes) and "ConditionalCheckFailed" in codes and all(
                        c in ("None", "ConditionalCheckFailed") for c in codes):
                    # Those outbox keys exist already: keep them as they are, write the rest.
                    writes = [w for w, c in zip(writes, codes) if c != "ConditionalCheckFailed"]
                    continue
                _pause(attempt)  # a conflict with another writer: try again
        raise RetriableError(Text("DynamoDB kept cancelling the state commit; try again"))

    # --- outbox -------------------------------------------------------------------------------
    @staticmethod
    def _item(row: dict[str, Any]) -> OutboxItem:
        status: Any = row["status"]["S"]
        return OutboxItem(
            row["key"]["S"], row["record_id"]["S"], row["action"]["S"], row["kind"]["S"],
            json.loads(row["payload"]["S"]), status, int(row["attempts"]["N"]),
            dt.datetime.fromisoformat(row["next_at"]["S"]) if "next_at" in row else None,
            restored(row.get("reason", {}).get("S", "")),
            dt.datetime.fromisoformat(row["created"]["S"]) if "created" in row else None,
            dt.datetime.fromisoformat(row["lease_until"]["S"])
            if "lease_until" in row and status == "pending" else None,
            row.get("holder", {}).get("S", ""))

    def due(self, now: dt.datetime, limit: int = 100) -> list[OutboxItem]:
        found: list[OutboxItem] = []
        if limit <= 0:
            return found
        for row in self._query(
                IndexName="due", KeyConditionExpression="#due_pk = :due AND #due_sk < :after",
                FilterExpression="#status = :pending AND (attribute_not_exists(#lease_until) "
                                 "OR #lease_until <= :now)",
                ExpressionAttributeValues={":due": _s("due"), ":after": _s(_after(now)),
                                           ":pending": _s("pending"), ":now": _s(_iso(now))},
                Limit=max(limit, 25)):
            found.append(self._item(row))
            if len(found) >= limit:
                break
        return found

    def claim(self, key: str, now: dt.datetime, lease: dt.timedelta, holder: str = "") -> bool:
        return self._conditional(
            "update_item", Key=_outbox_pk(key),
            UpdateExpression="SET #lease_until = :until, #holder = :holder, "
                             "#attempts = #attempts + :one, #updated = :now",
            ConditionExpression="attribute_exists(pk) AND #status = :pending AND "
                                "(attribute_not_exists(#lease_until) OR #lease_until <= :now)",
            ExpressionAttributeValues={":until": _s(_iso(now + lease)), ":one": _n(1),
                                       ":holder": _s(holder), ":now": _s(_iso(now)),
                                       ":pending": _s("pending")})

    def in_flight(self, now: dt.datetime) -> list[OutboxItem]:
        # A leased item was due when it was claimed: read the due ones only, not the retries
        # that wait for a later time.
        found = [self._item(row) for row in self._query(
            IndexName="due", KeyConditionExpression="#due_pk = :due AND #due_sk < :after",
            FilterExpression="#status = :pending AND #lease_until > :now",
            ExpressionAttributeValues={":due": _s("due"), ":after": _s(_after(now)),
                                       ":pending": _s("pending"), ":now": _s(_iso(now))})]
        return sorted(found, key=lambda i: (i.lease_until or _EPOCH, i.key))

    def reclaim(self, key: str, holder: str, now: dt.datetime) -> bool:
        return self._conditional(
            "update_item", Key=_outbox_pk(key),
            UpdateExpression="SET #updated = :now REMOVE #lease_until",
            ConditionExpression="#status = :pending AND #holder = :holder AND "
                                "#lease_until > :now",
            ExpressionAttributeValues={":pending": _s("pending"), ":holder": _s(holder),
                                       ":now": _s(_iso(now))})

    def record_verdict(self, request: str, items: list[OutboxItem], now: dt.datetime) -> bool:
        stamp = _iso(now)
        writes: list[dict[str, Any]] = [{"Put": {
            "TableName": self.table, "Item": self._outbox_row(item, now, stamp),
            "ConditionExpression": "attribute_not_exists(pk)"}}
            for item in items]
        writes.append({"Update": {
            "TableName": self.table, "Key": _outbox_pk(request),
            "UpdateExpression": "SET #status = :done, #reason = :empty, #updated = :now, "
                                "#expires_at = :expires REMOVE #lease_until, #due_pk, #due_sk",
            "ConditionExpression": "attribute_exists(pk)",
            "ExpressionAttributeNames": {f"#{n}": n for n in (
                "status", "reason", "updated", "expires_at", "lease_until", "due_pk",
                "due_sk")},
            "ExpressionAttributeValues": {":done": _s("done"), ":empty": _s(""),
                                          ":now": _s(stamp),
                                          ":expires": {"N": _epoch(now + DONE_TTL)}}}})
        for attempt in range(8):
            try:
                self._call("transact_write_items", TransactItems=writes)
                return True
            except _Cancelled as cancelled:
                if "ConditionalCheckFailed" in cancelled.codes:
                    return False      # the decision is there: the first one recorded wins
                _pause(attempt)
        raise RetriableError(Text("DynamoDB kept cancelling the decision; try again"))

    def done(self, key: str, now: dt.datetime) -> None:
        self._conditional(
            "update_item", Key=_outbox_pk(key),
            UpdateExpression="SET #status = :done, #reason = :empty, #updated = :now, "
                             "#expires_at = :expires REMOVE #lease_until, #due_pk, #due_sk",
            ConditionExpression="attribute_exists(pk)",
            ExpressionAttributeValues={":done": _s("done"), ":empty": _s(""),
                                       ":now": _s(_iso(now)),
                                       ":expires": {"N": _epoch(now + DONE_TTL)}})

    def retry_later(self, key: str, reason: str, at: dt.datetime) -> None:
        self._conditional(
            "update_item", Key=_outbox_pk(key),
            UpdateExpression="SET #next_at = :at, #due_sk = :due_sk, #reason = :reason, "
                             "#updated = :at REMOVE #lease_until",
            ConditionExpression="attribute_exists(pk) AND #status = :pending",
            ExpressionAttributeValues={":at": _s(_iso(at)), ":due_sk": _s(f"{_iso(at)}#{key}"),
                                       ":reason": _s(stored(reason)), ":pending": _s("pending")})

    def _set_aside(self, key: str, status: Status, reason: str, now: dt.datetime) -> None:
        self._conditional(
            "update_item", Key=_outbox_pk(key),
            UpdateExpression="SET #status = :status, #reason = :reason, #updated = :now "
                             "REMOVE #lease_until, #due_pk, #due_sk",
            ConditionExpression="attribute_exists(pk) AND #status <> :done",
            ExpressionAttributeValues={":status": _s(status), ":reason": _s(stored(reason)),
                                       ":now": _s(_iso(now)), ":done": _s("done")})

    def park(self, key: str, reason: str, now: dt.datetime) -> None:
        self._set_aside(key, "parked", reason, now)

    def wait(self, key: str, reason: str, now: dt.datetime) -> None:
        self._set_aside(key, "waiting", reason, now)

    def item(self, key: str) -> OutboxItem | None:
        found = self._call("get_item", TableName=self.table, Key=_outbox_pk(key),
                           ConsistentRead=True).get("Item")
        return self._item(found) if found else None

    def _by_status(self, status: str) -> list[OutboxItem]:
        return [self._item(row) for row in self._query(
            IndexName="status", KeyConditionExpression="#status = :status",
            ExpressionAttributeValues={":status": _s(status)})]

    def items(self, status: Status | None = None) -> list[OutboxItem]:
        found = [i for s in (STATUSES if status is None else (status,))
                 for i in self._by_status(s)]
        return sorted(found, key=lambda i: (i.created or _EPOCH, i.key))

    def _release(self, key: str, now: dt.datetime, condition: str,
                 values: dict[str, Any]) -> bool:
        return self._conditional(
            "update_item", Key=_outbox_pk(key),
            UpdateExpression="SET #status = :pending, #next_at = :now, #due_pk = :due, "
                             "#due_sk = :due_sk, #updated = :now REMOVE #lease_until",
            ConditionExpression=f"attribute_exists(pk) AND ({condition})",
            ExpressionAttributeValues={":pending": _s("pending"), ":now": _s(_iso(now)),
                                       ":due": _s("due"), ":due_sk": _s(f"{_iso(now)}#{key}"),
                                       **values})

    def release(self, keys: Iterable[str] | None, now: dt.datetime) -> int:
        if keys is not None:
            return sum(self._release(k, now, "#status <> :done", {":done": _s("done")})
                       for k in dict.fromkeys(keys))
        # The parked, and the pending that wait for their next try (not one being run).
        later = [row["key"]["S"] for row in self._query(
            IndexName="due", KeyConditionExpression="#due_pk = :due AND #due_sk >= :after",
            ExpressionAttributeValues={":due": _s("due"), ":after": _s(_after(now))})]
        parked = [i.key for i in self._by_status("parked")]
        condition = ("#status = :parked OR (#status = :pending AND #next_at > :now AND "
                     "(attribute_not_exists(#lease_until) OR #lease_until <= :now))")
        return sum(self._release(k, now, condition, {":parked": _s("parked")})
                   for k in dict.fromkeys(parked + later))

    def drop(self, keys: Iterable[str]) -> int:
        return sum(self._conditional(
            "delete_item", Key=_outbox_pk(k),
            ConditionExpression="attribute_exists(pk) AND #status <> :done",
            ExpressionAttributeValues={":done": _s("done")}) for k in dict.fromkeys(keys))

    # --- snapshots ----------------------------------------------------------------------------
    def _last_digests(self, record_ids: set[str]) -> dict[str, str | None]:
        keys = [{"pk": _s(f"record#{r}"), "sk": _s(SNAPSHOT_LAST)} for r in sorted(record_ids)]
        return {row["pk"]["S"].removeprefix("record#"): row["digest"]["S"]
                for row in self._get_many(keys, "pk, digest")}

    def _snapshot_writes(self, snapshot: Snapshot) -> list[dict[str, Any]]:
        pk = _s(f"record#{snapshot.record_id}")
        return [
            {"Put": {"TableName": self.table, "ConditionExpression": "attribute_not_exists(pk)",
                     "Item": {"pk": pk, "sk": _s(f"snapshot#{snapshot.order}#{snapshot.digest}"),
                              "record_id": _s(snapshot.record_id),
                              "names": _s(pack_values(snapshot.names)),
                              "vals": _s(pack_values(snapshot.values))}}},
            {"Put": {"TableName": self.table,
                     "Item": {"pk": pk, "sk": _s(SNAPSHOT_LAST), "order": _s(snapshot.order),
                              "digest": _s(snapshot.digest)},
                     # An older snapshot (history pulled after a sync) never becomes the last.
                     "ConditionExpression": "attribute_not_exists(pk) OR #order <= :order",
                     "ExpressionAttributeNames": {"#order": "order"},
                     "ExpressionAttributeValues": {":order": _s(snapshot.order)}}}]

    def add_snapshots(self, snapshots: Iterable[Snapshot]) -> int:
        newest: dict[str, tuple[Snapshot, dict[str, Any]]] = {}  # record -> its pointer
        rows: dict[str, dict[str, Any]] = {}
        for snapshot in snapshots:
            row, pointer = self._snapshot_writes(snapshot)
            rows.setdefault(row["Put"]["Item"]["sk"]["S"] + "\0" + snapshot.record_id, row)
            kept = newest.get(snapshot.record_id)
            if kept is None or kept[0].order <= snapshot.order:
                newest[snapshot.record_id] = (snapshot, pointer)
        added = 0
        writes = list(rows.values())
        for i in range(0, len(writes), TRANSACTION_LIMIT):
            added += self._transact(writes[i:i + TRANSACTION_LIMIT])
        pointers = [pointer for _, pointer in newest.values()]
        for i in range(0, len(pointers), TRANSACTION_LIMIT):
            self._transact(pointers[i:i + TRANSACTION_LIMIT])
        return added

    def read_snapshots(self) -> Iterator[dict[str, str]]:
        """A scan of the table: history is read in bulk, seldom, and sorted here."""
        found: list[tuple[str, str, dict[str, str]]] = []
        kwargs: dict[str, Any] = {
            "FilterExpression": "begins_with(sk, :snapshot)",
            "ExpressionAttributeValues": {":snapshot": _s("snapshot#")}}
        while True:
            page = self._call("scan", TableName=self.table, ConsistentRead=True, **kwargs)
            for row in page.get("Items", []):
                found.append((row["record_id"]["S"], row["sk"]["S"],
                              dict(zip(unpack_values(row["names"]["S"]),
                                       unpack_values(row["vals"]["S"]), strict=True))))
            if "LastEvaluatedKey" not in page:
                break
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
        found.sort(key=lambda f: (f[0], f[1]))
        for _, sk, fields in found:
            yield {**fields, "as_of": sk.split("#")[1]}

    def close(self) -> None:
        """Nothing to release: the client's connections are pooled per process."""


def _key_of(write: dict[str, Any]) -> tuple[str, str]:
    item = write["Put"]["Item"]
    return item["pk"]["S"], item["sk"]["S"]


def _pause(attempt: int) -> None:
    """Full jitter, from 50 ms up to 2 s."""
    time.sleep(random.uniform(0, min(2.0, 0.05 * 2 ** attempt)))


def create_table(client: Any, table_name: str) -> None:
    """Create the table as serverless.yml declares it (tests, a local DynamoDB), TTL on."""
    client.create_table(TableName=table_name, **TABLE)
    client.get_waiter("table_exists").wait(TableName=table_name,
                                           WaiterConfig={"Delay": 1, "MaxAttempts": 30})
    client.update_time_to_live(TableName=table_name, TimeToLiveSpecification={
        "Enabled": True, "AttributeName": TTL_ATTRIBUTE})
