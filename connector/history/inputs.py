"""Where a history comes from: `--input FILE` (a SPEC 8 snapshot CSV, from `history export`
or any other system), else the configured state store's snapshots, written to a temporary CSV
so both are read by the same engine."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from tempfile import TemporaryDirectory

from connector.core.ruleset import RuleSet
from connector.errors import ConfigurationError
from connector.history.source import AS_OF


@contextmanager
def history_file(rules: RuleSet, given: Path | None) -> Iterator[Path]:
    if given is not None:
        yield given
        return
    from connector.settings import load_settings
    from connector.state import open_state

    store = open_state(load_settings().state_url)
    try:
        read = getattr(store, "read_snapshots", None)
        if read is None:
            raise ConfigurationError("this state store keeps no snapshots yet: give --input "
                                     "FILE.csv (a snapshot history)")
        m = rules.mapping
        header = [m.id_field, m.modified_field,
                  *(f for f in m.fields.values() if f not in (m.id_field, m.modified_field)),
                  AS_OF]
        with TemporaryDirectory(prefix="crm-history-") as folder:
            path = Path(folder) / "snapshots.csv"
            with path.open("w", encoding="utf-8", newline="") as out:
                writer = csv.writer(out, lineterminator="\n")
                writer.writerow(header)
                for row in read():
                    writer.writerow([row.get(h, "") for h in header])
            yield path
    finally:
        store.close()
