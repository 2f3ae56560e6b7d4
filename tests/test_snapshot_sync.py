"""Snapshots taken by the pipeline on a fake Salesforce org: every record read (poll, webhook,
sweep) leaves one when its values changed, with the commit of its batch; no extra API call; a
crash before the commit leaves none and the redo none twice; a closed deal's is dated on its
close date; `history export` writes them as the snapshot CSV that the mapping reads back."""

from __future__ import annotations

import csv

import pytest
import responses

from connector.cli import main
from connector.pipeline import Pipeline
from tests.fake_salesforce import Clock, FakeOrg
from tests.test_sync import fill, make_app


@pytest.fixture
def org():
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        yield FakeOrg(rsps, Clock())


def snapshots(app):
    return list(app.state.read_snapshots())


def test_each_read_appends_what_changed_and_costs_no_api_call(tmp_path, org):
    fill(org, 300)
    app = make_app(tmp_path, org)
    pipeline = app.pipeline
    org.clock.advance(seconds=1)
    before = org.api_calls
    report = pipeline.poll()
    assert len(snapshots(app)) == 300
    org.clock.advance(seconds=1)
    pipeline.poll()                          # our own writes come back: changed values
    assert len(snapshots(app)) == 300 + report.written
    org.clock.advance(seconds=1)
    pipeline.sweep()                         # read again, nothing changed
    pipeline.fetch_and_process(list(org.records)[:20], reprocess=True)
    assert len(snapshots(app)) == 300 + report.written
    used = org.api_calls - before

    # The same runs without snapshots make the same calls.
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        other = FakeOrg(rsps, Clock())
        fill(other, 300)
        bare_app = make_app(tmp_path / "bare", other)
        bare = Pipeline(app.pipeline.rules, bare_app.crm, bare_app.state, now=other.clock,
                        snapshots=False)
        other.clock.advance(seconds=1)
        start = other.api_calls
        bare.poll()
        other.clock.advance(seconds=1)
        bare.poll()
        other.clock.advance(seconds=1)
        bare.sweep()
        bare.fetch_and_process(list(other.records)[:20], reprocess=True)
        assert other.api_calls - start == used
        assert snapshots(bare_app) == []


def test_a_crash_before_the_commit_leaves_no_snapshot_and_the_redo_one(tmp_path, org):
    fill(org, 40)
    app = make_app(tmp_path, org)
    pipeline = app.pipeline

    def crash():
        raise RuntimeError("the process dies after the write-back")

    org.after_write = crash
    org.clock.advance(seconds=1)
    with pytest.raises(RuntimeError):
        pipeline.poll()
    assert snapshots(app) == []
    org.after_write = None
    org.clock.advance(seconds=1)
    redo = pipeline.poll()                 # the batch again: the write-back is there already
    assert redo.written == 0 and redo.read == 40
    rows = snapshots(app)
    assert sorted(r["Id"] for r in rows) == sorted(org.records)    # one each, as now
    for row in rows:
        assert row["Probability_Rule__c"] == org.records[row["Id"]]["Probability_Rule__c"]
    org.clock.advance(seconds=1)
    pipeline.poll()
    pipeline.sweep()
    assert len(snapshots(app)) == 40


def test_a_closed_deal_is_dated_on_its_close_date(tmp_path, org):
    org.add("006WON", StageName="Closed Won", CloseDate="2026-10-02", Amount=5000)
    org.add("006OPEN", StageName="Prospecting", CloseDate="2027-03-01")
    app = make_app(tmp_path, org)
    org.clock.advance(seconds=1)
    app.pipeline.poll()
    dates = {r["Id"]: r["as_of"] for r in snapshots(app)}
    assert dates["006WON"] == "2026-10-02T00:00:00.000000+00:00"
    assert dates["006OPEN"].startswith("2026-11-26T09:00:00.002")   # its SystemModstamp


def test_history_export_writes_the_snapshot_csv(tmp_path, org, monkeypatch, capsys):
    fill(org, 25)
    app = make_app(tmp_path, org)
    org.clock.advance(seconds=1)
    app.pipeline.poll()
    expected = snapshots(app)
    monkeypatch.setenv("STATE_URL", f"sqlite:///{tmp_path / 'state.db'}")
    target = tmp_path / "history.csv"
    assert main(["history", "export", str(target)]) == 0
    assert f"wrote {len(expected)} snapshots" in capsys.readouterr().out
    with target.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    mapping = app.pipeline.mapping
    assert list(rows[0]) == [*mapping.crm_fields, "as_of"]
    assert rows == expected
    for row in rows:                           # read back as the rules read an export
        values = mapping.read(row)
        assert values["id"] == row["Id"] and values["stage"] == row["StageName"]
    assert not list(tmp_path.glob(".history.csv*"))  # no partial file left
