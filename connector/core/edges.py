"""Rising edges: an action fires when its condition turns true, not while it stays true.

An action's condition holds when any of its sources does (the workflow that names it, the
triggers that `do` it), so a deal that enters p90 and turns large at once gets one email, not
two. The ledger keeps, per record and action, whether it held at the last look and how many
times it has risen (its episode). A record seen for the first time has an empty ledger: its true
conditions rise (the first sync is a backfill).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # a type only: the state store (and so every Lambda) imports this module
    from connector.core.outcome import ActionDue


@dataclass(frozen=True)
class Edge:
    action: str
    sources: tuple[str, ...]   # what made it due: 'workflow:p90', 'trigger:large-deal'
    episode: int
    key: str = ""              # the ledger's key: the action, or an escalation step

    def __post_init__(self) -> None:
        if not self.key:
            object.__setattr__(self, "key", self.action)


@dataclass(frozen=True)
class LedgerState:
    active: bool
    episode: int


def rising_edges(previous: Mapping[str, LedgerState], due: Iterable[ActionDue]
                 ) -> tuple[dict[str, LedgerState], list[Edge]]:
    """The ledger's changed entries (by action, or escalation step) and the edges that fire
    now."""
    sources: dict[str, list[str]] = {}
    actions: dict[str, str] = {}
    for d in due:
        sources.setdefault(d.key, []).append(d.source)
        actions[d.key] = d.action
    changes: dict[str, LedgerState] = {}
    fired: list[Edge] = []
    for key in sorted(sources):
        before = previous.get(key)
        if before is None or not before.active:
            episode = (before.episode if before else 0) + 1
            changes[key] = LedgerState(True, episode)
            fired.append(Edge(actions[key], tuple(sorted(set(sources[key]))), episode, key))
    for key, before in previous.items():
        if before.active and key not in sources:
            changes[key] = LedgerState(False, before.episode)
    return changes, fired
