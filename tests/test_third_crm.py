"""Adding a CRM means one adapter that fills in the base's methods (connector.crm._base): a third
CRM, kept in memory behind a pretend API, built from the base alone, runs through the pipeline's
sync, sweep and webhook path with the base's algorithm: write calls filled to the floor, a
session renewed once, a refused record failing alone, the quota stopping the run with the
cursor kept, secrets scrubbed from messages."""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from connector.app import build_app
from connector.core.values import FieldType
from connector.crm import Crm, Record, WriteResult, open_crm
from connector.crm._base import CrmAdapter, SessionExpired, chunks
from connector.errors import ConfigurationError
from connector.retry import RetryPolicy
from connector.settings import Settings

ROOT = Path(__file__).parent.parent
START = dt.datetime(2026, 11, 26, 9, 0, tzinfo=dt.UTC)
TOKEN = "mem-token-5f2c9e1a0b7d"
STAGES = ["Negotiation/Review", "Proposal/Price Quote", "Value Proposition", "Needs Analysis",
          "Qualification", "Prospecting", "Closed Won", "Closed Lost"]


class MemoryCrm(CrmAdapter):
    """Opportunities in a dict, under Salesforce's field names (the rules' mapping), behind a
    pretend API: every call is counted, the session can be made to expire, the account's
    allowance can be set, and a record can be made to refuse its write."""

    name = "MemoryCRM"
    settings_prefix = "MEMORY"
    page_size = 50
    write_size = 20

    def __init__(self, mapping: Any, clock: Any) -> None:
        super().__init__(mapping, retry=RetryPolicy(sleep=lambda seconds: None),
                         secrets=[TOKEN])
        self.clock = clock
        self.records: dict[str, dict[str, Any]] = {}
        self.write_calls: list[int] = []          # records in each write call
        self.expire_session = False
        self.allowance: tuple[int, int] | None = None   # (used, allowed)
        self.refuse: dict[str, str] = {}          # record id -> why

    # --- the pretend API ---------------------------------------------------------------------
    def add(self, record_id: str, **fields: Any) -> None:
        self.records[record_id] = {"Id": record_id, "Name": f"Deal {record_id}", **fields}
        self.touch(record_id)

    def touch(self, record_id: str, **fields: Any) -> None:
        self.clock.now += dt.timedelta(milliseconds=1)
        self.records[record_id].update(fields, SystemModstamp=self.clock.now.isoformat())

    def _api(self) -> None:
        if self.expire_session:
            self.expire_session = False
            raise SessionExpired(f"session {TOKEN} expired")

    # --- what the base asks of a CRM ---------------------------------------------------------
    def describe(self) -> dict[str, FieldType]:
        m = self._mapping
        return {n: t for n in m.fields if (t := m.type_of(n)) is not None}

    def changed(self, since: dt.datetime | None, until: dt.datetime) -> Iterator[list[Record]]:
        def modified(r: dict[str, Any]) -> dt.datetime:
            return dt.datetime.fromisoformat(r["SystemModstamp"])

        rows = sorted((r for r in self.records.values()
                       if (since is None or modified(r) >= since) and modified(r) <= until),
                      key=lambda r: (r["SystemModstamp"], r["Id"]))
        for page in chunks(rows, self.page_size):
            yield self._call("the poll", lambda page=page: self._api() or [dict(r) for r in page])

    def open_records(self, field: str, closed: list[str]) -> Iterator[list[Record]]:
        rows = sorted((r for r in self.records.values() if r.get(field) not in closed),
                      key=lambda r: r["Id"])
        for page in chunks(rows, self.page_size):
            yield self._call("the sweep", lambda page=page: self._api() or [dict(r) for r in page])

    def fetch(self, ids: list[str]) -> list[Record]:
        return self._call("the fetch", lambda: self._api() or [
            dict(self.records[i]) for i in ids if i in self.records])

    def _write_call(self, chunk: list[tuple[str, dict[str, Any]]]) -> dict[str, WriteResult]:
        def send() -> dict[str, WriteResult]:
            self._api()
            self.write_calls.append(len(chunk))
            results = {}
            for rid, fields in chunk:
                if rid in self.refuse:
                    results[rid] = WriteResult(rid, False, "REFUSED", self._scrub(self.refuse[rid]))
                else:
                    self.touch(rid, **fields)
                    results[rid] = WriteResult(rid, True)
            return results

        return self._call("the write-back", send)

    def _usage(self) -> tuple[int, int] | None:
        return self.allowance

    def _renew(self) -> None:
        self.auth_calls += 1


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> dt.datetime:
        return self.now


@pytest.fixture
def world(tmp_path):
    clock = Clock()
    settings = Settings(_env_file=None, state_url=f"sqlite:///{tmp_path / 'state.db'}")
    app = build_app(ROOT / "rules", ROOT / "mappings", settings, now=clock)
    assert app.loaded.rules is not None
    crm = MemoryCrm(app.loaded.rules.mapping, clock)
    app._crm = crm
    rng = random.Random(5)
    for i in range(500):
        crm.add(f"M{i:04d}", StageName=rng.choice(STAGES), Amount=str(rng.randint(1000, 300000)),
                CloseDate="2027-03-15", Relationship_Level__c=rng.choice(["Strategic", "New"]))
    clock.now += dt.timedelta(seconds=1)
    return app, crm, clock


def test_the_memory_crm_is_a_crm_port(world):
    _, crm, _ = world
    assert isinstance(crm, Crm)


def test_a_sync_through_the_base_writes_each_change_once_in_the_floor_of_calls(world):
    app, crm, clock = world
    report = app.pipeline.poll()
    assert report.stopped is None and report.failed == 0 and report.read == 500
    assert report.written == 500                    # nothing held the rules' values yet
    assert crm.write_calls == [20] * math.ceil(500 / 20)
    assert all(r["Probability_Rule__c"] for r in crm.records.values())
    # Sparse changes over all ten pages: filled calls, not one a page.
    rng = random.Random(9)
    clock.now += dt.timedelta(seconds=1)
    app.pipeline.poll()                             # the echoes
    for rid in rng.sample(sorted(crm.records), 45):
        crm.touch(rid, Probability=1)
    for rid in sorted(crm.records):
        if crm.records[rid]["Probability"] != 1:
            crm.touch(rid, Name=f"Renamed {rid}")
    clock.now += dt.timedelta(seconds=1)
    crm.write_calls.clear()
    report = app.pipeline.poll()
    assert report.written == 45 and crm.write_calls == [20, 20, 5]


def test_the_sweep_and_a_webhook_fetch_run_through_the_same_base(world):
    app, crm, _ = world
    app.pipeline.poll()
    crm.write_calls.clear()
    crm.records["M0007"]["Probability"] = 3     # an edit the CRM did not stamp
    report = app.pipeline.sweep()
    open_records = sum(r["StageName"] not in ("Closed Won", "Closed Lost")
                       for r in crm.records.values())
    assert report.read == open_records and crm.write_calls == [1]
    crm.records["M0008"]["Probability"] = 3
    inner = app.pipeline.fetch_and_process(["M0008", "M0009", "nope"], reprocess=True)
    assert inner.read == 2 and inner.written == 1 and crm.write_calls == [1, 1]


def test_an_expired_session_is_renewed_once_and_a_refused_record_fails_alone(world):
    app, crm, _ = world
    crm.expire_session = True
    crm.refuse["M0003"] = f"validation rule says no (token {TOKEN})"
    report = app.pipeline.poll()
    assert crm.auth_calls == 1 and report.stopped is None
    assert report.parked == 1 and report.written == 499
    assert TOKEN not in " ".join(report.reasons) and "***" in " ".join(report.reasons)
    assert [i.record_id for i in app.state.items("parked")] == ["M0003"]


def test_the_quota_stops_the_run_with_the_cursor_kept(world):
    app, crm, _ = world
    crm.allowance = (0, 40)                          # 25 % of 40: this run may make 10 calls
    report = app.pipeline.poll()
    assert report.stopped and "MEMORY_QUOTA_RUN_PERCENT" in report.stopped
    assert crm.calls == 10
    committed = report.cursor
    assert committed is not None
    waiting = [r for r in crm.records.values() if not r.get("Probability_Rule__c")]
    assert waiting and all(r["SystemModstamp"] >= committed for r in waiting)
    crm.allowance = None
    again = app.pipeline.poll()
    assert again.stopped is None
    assert all(r.get("Probability_Rule__c") for r in crm.records.values())


def test_writes_take_writeback_names_in_any_case_and_refuse_others_with_a_hint(world):
    _, crm, _ = world
    [result] = crm.write([("M0001", {"probability_rule__C": "p10"})])
    assert result.ok and crm.records["M0001"]["Probability_Rule__c"] == "p10"
    with pytest.raises(ConfigurationError, match="did you mean 'Probability'"):
        crm.write([("M0001", {"Probabilty": 10})])
    assert crm.write_calls == [1]


def test_a_crm_without_a_subpackage_is_a_configuration_error(world):
    app, _, _ = world
    mapping = dataclasses.replace(app.loaded.rules.mapping, crm="pipedrive")
    with pytest.raises(ConfigurationError, match="no adapter for the CRM 'pipedrive'"):
        open_crm(app.settings, mapping, None)
