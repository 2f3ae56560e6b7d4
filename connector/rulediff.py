"""The effect of a rule change, before it is deployed: the same export replayed through the
rules as they were (`--before`, a folder or a git ref) and as they are now (`--rules`), record
by record. What an admin reviews before deploying an edit, and what a pull request's CI posts.

A record *changes* when the workflow that takes it differs, or when a field the connector would
write (the mapping's `writeback`) would be written a different value. Both rule sets read the
export through the same mapping, so a difference is the rules' alone."""

from __future__ import annotations

import datetime as dt
import subprocess
import tempfile
from collections import Counter
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from connector.core.evaluate import Decide, Evaluator, Verdict
from connector.core.forecast import OVERDUE, Forecast, money
from connector.core.ruleset import RuleSet
from connector.core.values import as_text
from connector.errors import ConfigurationError, RecordError, Text
from connector.simulate import (
    SHOWN,
    ReadOptions,
    deal_fields,
    distinct_actions,
    id_reader,
    records,
)

__all__ = ["FAILED", "RecordDiff", "RuleDiff", "compare", "rules_at"]

FAILED = "(failed)"  # the "workflow" of a record that a rule set cannot compute


@dataclass
class RecordDiff:
    """One record whose outcome differs: its workflow and written values before -> after."""

    line: int
    record_id: str
    before_rule: str
    after_rule: str
    fields: dict[str, tuple[str, str]]      # writeback field -> (before, after) where they differ
    newly: tuple[str, ...] = ()             # actions due after and not before
    stopped: tuple[str, ...] = ()           # actions due before and not after
    reason: str = ""                        # why a side failed, when one did

    def as_json(self) -> dict[str, Any]:
        return {"line": self.line, "id": self.record_id, "from": self.before_rule,
                "to": self.after_rule,
                "fields": {k: {"before": b, "after": a} for k, (b, a) in self.fields.items()},
                "newly_due": list(self.newly), "no_longer_due": list(self.stopped),
                "reason": self.reason}


@dataclass
class RuleDiff:
    before_version: str
    after_version: str
    read: int = 0
    changed: int = 0
    failed_before: int = 0
    failed_after: int = 0
    moves: Counter[tuple[str, str]] = field(default_factory=Counter)  # (from, to) -> records
    newly: Counter[str] = field(default_factory=Counter)    # action -> records now due
    stopped: Counter[str] = field(default_factory=Counter)  # action -> records no longer due
    records: list[RecordDiff] = field(default_factory=list)  # the first SHOWN changed
    forecast_before: Forecast = field(default_factory=Forecast)
    forecast_after: Forecast = field(default_factory=Forecast)

    def months(self) -> list[tuple[str, Decimal, Decimal]]:
        """(month, weighted before, weighted after), months ascending, both sides' months."""
        before = {b.key: b.weighted_amount for b in self.forecast_before.rows()}
        after = {b.key: b.weighted_amount for b in self.forecast_after.rows()}
        return [(m, before.get(m, Decimal(0)), after.get(m, Decimal(0)))
                for m in sorted(before.keys() | after.keys(), key=lambda m: (m != OVERDUE, m))]

    def totals(self) -> tuple[Decimal, Decimal]:
        """The weighted forecast's total before and after."""
        return (self.forecast_before.total().weighted_amount,
                self.forecast_after.total().weighted_amount)

    def as_json(self) -> dict[str, Any]:
        months = self.months()
        total_before, total_after = self.totals()
        return {
            "before": self.before_version, "after": self.after_version,
            "records": self.read, "changed": self.changed,
            "failed": {"before": self.failed_before, "after": self.failed_after},
            "workflows": [{"from": f, "to": t, "records": n}
                          for (f, t), n in sorted(self.moves.items())],
            "forecast": [{"month": m, "before": money(b), "after": money(a),
                          "delta": money(a - b)} for m, b, a in months],
            "forecast_total": {"before": money(total_before), "after": money(total_after),
                               "delta": money(total_after - total_before)},
            "actions": {"newly_due": dict(sorted(self.newly.items())),
                        "no_longer_due": dict(sorted(self.stopped.items()))},
            "changes": [r.as_json() for r in self.records],
        }


def compare(before: RuleSet, after: RuleSet, source: Path, today: dt.date,
            options: ReadOptions = ReadOptions()) -> RuleDiff:
    """Replays `source` through both rule sets. The export is read once, as `simulate` reads
    it (locale, encoding, delimiter), with the after rules' mapping (the mapping is not part of
    the change); each record is decided by both, and the forecasts are `forecast`'s."""
    result = RuleDiff(before.version, after.version,
                      forecast_before=Forecast(due_by=today, rates=options.rates),
                      forecast_after=Forecast(due_by=today, rates=options.rates))
    decide_before = Evaluator(before).decide
    decide_after = Evaluator(after).decide
    add_before = result.forecast_before.month_adder(deal_fields(before))
    add_after = result.forecast_after.month_adder(deal_fields(after))
    writeback = tuple(after.mapping.writeback)
    with options.open(source) as export:
        record_id = id_reader(after, export)
        for line, raw, values, _error in records(after, export, cells=options.cells(after)):
            result.read += 1
            if values is None:  # unreadable for both: not a difference the rules make
                result.failed_before += 1
                result.failed_after += 1
                result.moves[FAILED, FAILED] += 1
                continue
            old, old_error = _verdict(decide_before, values, today)
            new, new_error = _verdict(decide_after, values, today)
            result.failed_before += old is None
            result.failed_after += new is None
            if old is not None:
                add_before(old[0])
            if new is not None:
                add_after(new[0])
            move = (old[1].rule if old else FAILED, new[1].rule if new else FAILED)
            result.moves[move] += 1
            fields = _written_differences(old, new, writeback)
            due_old = set(distinct_actions(old[3])) if old else set()
            due_new = set(distinct_actions(new[3])) if new else set()
            newly, stopped = tuple(sorted(due_new - due_old)), tuple(sorted(due_old - due_new))
            result.newly.update(newly)
            result.stopped.update(stopped)
            if move[0] == move[1] and not fields and move[0] != FAILED:
                continue
            if move == (FAILED, FAILED) and old_error == new_error:
                continue  # the same failure on both sides changes nothing
            result.changed += 1
            if len(result.records) < SHOWN:
                result.records.append(RecordDiff(
                    line, record_id(raw, values), move[0], move[1], fields,
                    newly, stopped, _reasons(old_error, new_error)))
    return result


def _verdict(decide: Decide, values: Mapping[str, Any], today: dt.date
             ) -> tuple[Verdict | None, str]:
    try:
        return decide(values, today), ""
    except RecordError as exc:
        return None, exc.text


def _reasons(before: str, after: str) -> str:
    """Why a side failed, or both did."""
    if before and after:
        return Text("{before}; {after}", before=before, after=after)
    return before or after


def _written_differences(old: Verdict | None, new: Verdict | None,
                         writeback: tuple[str, ...]) -> dict[str, tuple[str, str]]:
    """The writeback fields each side would leave the record with, where they differ."""
    if old is None or new is None:
        return {}
    out = {}
    for name in writeback:
        a, b = old[0].get(name), new[0].get(name)
        if a != b:
            out[name] = (as_text(a), as_text(b))
    return out


@contextmanager
def rules_at(before: str, rules: Path) -> Iterator[Path]:
    """The folder of the rules as they were: `before` itself when it is a folder, else a git
    ref, read as `rules` was committed there (written to a temporary folder)."""
    path = Path(before)
    if path.is_dir():
        yield path
        return
    resolved = rules.resolve()
    top = _git(resolved.parent if resolved.is_dir() else Path.cwd(), "rev-parse",
               "--show-toplevel")
    if top is None:
        raise ConfigurationError(Text("--before {before}: no such folder, and {rules} is not in "
                                      "a git repository to read a commit from", before=before,
                                      rules=str(rules)))
    root = Path(top.strip())
    relative = resolved.relative_to(root).as_posix()
    listing = _git(root, "ls-tree", "-r", "-z", "--name-only", before, "--", relative)
    if listing is None:
        raise ConfigurationError(Text("--before {before}: no such folder, and not a commit, "
                                      "branch or tag of this repository", before=before))
    names = [n for n in listing.split("\0") if n]
    if not names:
        raise ConfigurationError(Text("--before {before}: that commit has no {folder}/ folder",
                                      before=before, folder=relative))
    with tempfile.TemporaryDirectory(prefix="rules-before-") as tmp:
        folder = Path(tmp) / Path(relative).name
        for name in names:
            blob = subprocess.run(["git", "-C", str(root), "show", f"{before}:{name}"],
                                  capture_output=True)
            if blob.returncode != 0:  # a submodule, a shallow clone's missing object
                raise ConfigurationError(Text("--before {before}: git cannot read {file} at "
                                              "that commit", before=before, file=name))
            target = folder / Path(name).relative_to(relative)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(blob.stdout)
        yield folder


def _git(where: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(["git", "-C", str(where), *args], capture_output=True, text=True)
    except OSError:  # no git on this machine
        return None
    return done.stdout if done.returncode == 0 else None
