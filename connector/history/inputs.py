"""Where a history comes from: `--input FILE` (a SPEC 8 snapshot CSV, from `history export`
or any other system), else the configured state store's snapshots, written to a temporary CSV
as `history export` writes them, so both are read by the same engine."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from tempfile import TemporaryDirectory

from connector.core.ruleset import RuleSet


@contextmanager
def history_file(rules: RuleSet, given: Path | None) -> Iterator[Path]:
    if given is not None:
        yield given
        return
    from connector.history.snapshots import write_snapshot_csv
    from connector.settings import load_settings
    from connector.state import open_state

    store = open_state(load_settings().state_url)
    try:
        with TemporaryDirectory(prefix="crm-history-") as folder:
            path = Path(folder) / "snapshots.csv"
            write_snapshot_csv(store.read_snapshots(), path, rules.mapping)
            yield path
    finally:
        store.close()
