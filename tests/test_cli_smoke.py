"""The bundled example passes `check`, and `table` lists every combination once."""

import json

from connector.cli import main


def test_check_passes_on_the_example(capsys):
    assert main(["check", "--format", "json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is True
    assert [f for f in report["findings"] if f["severity"] == "error"] == []


def test_table_has_one_row_per_combination(capsys):
    assert main(["table", "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 6 * 2 * 4 * 3
    assert all(r["workflow"].startswith("p") and "overlap" not in r["workflow"] for r in rows)
    combos = {tuple(r["factors"].values()) for r in rows}
    assert len(combos) == len(rows)


def test_unknown_command_is_a_usage_error():
    assert main(["no-such-command"]) == 2
