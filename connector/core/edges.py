"""Rising edges: an action fires when its condition turns true, not while it stays true.

The ledger keeps, per record, action and source (the workflow or trigger that names it),
whether the condition held at the last look and how many times it has risen (its episode).
A record seen for the first time has an empty ledger: its true conditions rise (backfill).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from connector.core.evaluate import ActionDue


@dataclass(frozen=True)
class Edge:
    action: str
    source: str
    episode: int


@dataclass(frozen=True)
class LedgerState:
    active: bool
    episode: int


def rising_edges(previous: Mapping[tuple[str, str], LedgerState], due: Iterable[ActionDue]
                 ) -> tuple[dict[tuple[str, str], LedgerState], list[Edge]]:
    """The ledger's new entries (only those that change) and the edges that fire now."""
    now = {(d.action, d.source) for d in due}
    changes: dict[tuple[str, str], LedgerState] = {}
    fired: list[Edge] = []
    for key in sorted(now):
        before = previous.get(key)
        if before is None or not before.active:
            episode = (before.episode if before else 0) + 1
            changes[key] = LedgerState(True, episode)
            fired.append(Edge(key[0], key[1], episode))
    for key, before in previous.items():
        if before.active and key not in now:
            changes[key] = LedgerState(False, before.episode)
    return changes, fired
