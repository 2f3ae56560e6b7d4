"""What waits is visible: piped at 80 columns, `outbox list` and `table` print every id, key
and factor value whole (a long reason wraps, or goes below the table); `outbox list --format
json` gives every field of every item."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import re
import shutil
from pathlib import Path

import pytest

from connector.cli import main
from connector.state import Commit, OutboxItem
from connector.state.sqlite import SqliteState

ROOT = Path(__file__).resolve().parent.parent
NOW = dt.datetime(2026, 11, 26, 9, 0, tzinfo=dt.UTC)
RECORD = "0065w00000AbCdEfGHIJ"
REASON = ("FIELD_CUSTOM_VALIDATION_EXCEPTION: Amount must be approved by finance before the "
          "probability of an opportunity in Negotiation/Review changes")


@pytest.fixture
def state(tmp_path, monkeypatch):
    monkeypatch.setenv("STATE_URL", f"sqlite:///{tmp_path / 'state.db'}")
    monkeypatch.setenv("COLUMNS", "80")
    store = SqliteState(tmp_path / "state.db")
    version = "2026-11-26T09:00:00.002000+00:00"
    store.commit([
        Commit(RECORD, version, outbox=[OutboxItem(
            f"writeback:{RECORD}:{version}", RECORD, "writeback", "writeback",
            {"ids": [RECORD], "fields": ["probability"]}, status="parked", reason=REASON)]),
        Commit("0065w00000ZyXwVuTSRQ", None, outbox=[OutboxItem(
            "notify-director:0065w00000ZyXwVuTSRQ:large-deal-likely:1", "0065w00000ZyXwVuTSRQ",
            "notify-director", "email", {"values": {"amount": "150000"}, "sources": ["x"]})]),
    ], NOW)
    return store


def words(text: str) -> list[str]:
    return re.findall(r"[A-Za-z0-9_:/.\-]+", text)


def test_piped_outbox_list_never_cuts_a_key_or_an_id(state, capsys):
    assert main(["outbox", "list"]) == 0
    out = capsys.readouterr().out
    assert "…" not in out and "..." not in out
    for item in state.items():
        assert item.key in out and item.record_id in out
    for column in ("kind", "status", "tries", "next", "writeback", "parked", "email", "pending"):
        assert column in out  # no column squeezed out to make room either
    # the reason is all there, wrapped or below the table
    shown = " ".join(words(out))
    assert all(w in shown for w in words(REASON))


def test_outbox_list_json_has_every_field(state, capsys):
    assert main(["outbox", "list", "--format", "json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    items = {i.key: i for i in state.items()}
    assert {row["key"] for row in listed} == set(items)
    for row in listed:
        item = items[row["key"]]
        assert set(row) == {f.name for f in dataclasses.fields(OutboxItem)}
        assert (row["record_id"], row["action"], row["kind"], row["payload"], row["status"],
                row["attempts"], row["reason"]) == (
            item.record_id, item.action, item.kind, item.payload, item.status, item.attempts,
            item.reason)


LONG_STAGE = "Negotiation/Review with the procurement board of the client"


def test_piped_table_never_cuts_a_factor_value(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("COLUMNS", "80")
    rules = tmp_path / "rules"
    shutil.copytree(ROOT / "rules", rules)
    for name in ("factors.yaml", "probability.yaml"):
        path = rules / name
        path.write_text(path.read_text().replace("Negotiation/Review", LONG_STAGE))
    assert main(["table", "--rules", str(rules), "--mappings", str(ROOT / "mappings")]) == 0
    out = capsys.readouterr().out
    assert "…" not in out
    assert out.count(LONG_STAGE) == 2 * 4 * 3  # every row of that stage, whole
    for value in ("Proposal/Price Quote", "Value Proposition", "Budgetary", "Strategic"):
        assert value in out


def test_outbox_list_says_a_stored_reason_in_the_readers_language(tmp_path, monkeypatch,
                                                                  capsys):
    """A reason the pipeline parked as a Text is stored with its template: read later by an
    admin who reads Spanish, it is said in Spanish (JSON keeps the English)."""
    from connector.errors import Text
    from connector.i18n import say

    monkeypatch.setenv("STATE_URL", f"sqlite:///{tmp_path / 'state.db'}")
    reason = Text("gave up after {n} tries: {reason}", n=5,
                  reason=Text("{code}: {reason}", code="HTTP_503", reason="Service Unavailable"))
    store = SqliteState(tmp_path / "state.db")
    store.commit([Commit(RECORD, None, outbox=[OutboxItem(
        f"writeback:{RECORD}:v1", RECORD, "writeback", "writeback", {"ids": [RECORD]},
        status="parked", reason=reason)])], NOW)
    store.close()
    assert main(["--lang", "es", "outbox", "list"]) == 0
    shown = words(capsys.readouterr().out)
    spanish = say(reason, "es")
    assert spanish != reason and all(w in shown for w in words(spanish))
    assert "gave" not in shown and "tries" not in shown
    assert main(["--lang", "en", "outbox", "list", "--format", "json"]) == 0
    [row] = json.loads(capsys.readouterr().out)
    assert row["reason"] == reason  # the English, for machines
