"""`history pull`: fill the state store's snapshots from the CRM's own history (SPEC 8).

Reads every opportunity as it is now (the poll query, everything up to now), then the CRM's
history of their mapped fields (connector.history.salesforce / .hubspot), rebuilds each one's
states from its first recorded change on (connector.history.asof) and stores them as snapshots,
with the record as read now last. Pulling twice adds nothing the first did not.

A field with no history keeps the value read now in every past state: the report counts, per
field, the opportunities where that is so, and says which of those fields the rules read. The
history read is held in memory until it is stored (a few hundred bytes a change).
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

from connector.core.ruleset import RuleSet
from connector.crm import Crm, Record
from connector.errors import ConfigurationError, Text
from connector.history.asof import Change, timeline
from connector.history.snapshots import Snapshotter, text
from connector.state import Snapshot, StateStore

CHUNK = 1000   # opportunities whose snapshots are stored in one transaction


@dataclass
class PullReport:
    opportunities: int = 0
    changes: int = 0                 # history values read
    snapshots: int = 0               # snapshots added to the store
    orphans: int = 0                 # history values of opportunities not read (deleted ...)
    api_calls: int = 0
    approximated: Counter[str] = field(default_factory=Counter)  # CRM field -> opportunities
    read_by_rules: frozenset[str] = frozenset()   # the CRM fields the rules read


def pull(crm: Crm, rules: RuleSet, store: StateStore, now: dt.datetime,
         since: dt.datetime | None = None) -> PullReport:
    mapping = rules.mapping
    report = PullReport(read_by_rules=frozenset(
        mapping.crm_field(n) for n in rules.names_read() if n in mapping.canonical_names))
    calls = crm.calls
    current: dict[str, Record] = {}
    # The poll query floors its bounds to whole seconds: reading to the next second keeps a
    # record changed in this one from passing for a deleted one.
    for page in crm.changed(None, now + dt.timedelta(seconds=1)):
        for record in page:
            current[text(mapping.crm_value(record, mapping.id_field))] = record
    history: dict[str, list[Change]] = {}
    for record_id, change in _changes(crm, rules, list(current), since):
        if record_id in current:
            history.setdefault(record_id, []).append(change)
            report.changes += 1
        else:
            report.orphans += 1
    report.api_calls = crm.calls - calls
    report.opportunities = len(current)
    constant = {mapping.id_field, mapping.modified_field}
    taker = Snapshotter(mapping, rules.closed)
    batch: list[Snapshot] = []
    for done, (record_id, record) in enumerate(current.items(), 1):
        changes = history.get(record_id, [])
        read_now = taker.take(record, now)
        known = read_now.fields
        for at, state in timeline(known, changes, constant):
            values = {**state.values, mapping.modified_field: at.isoformat()}
            batch.append(taker.take(values, at))
        batch.append(read_now)
        report.approximated.update(set(known) - constant - {c.field for c in changes})
        if done % CHUNK == 0:
            report.snapshots += store.add_snapshots(batch)
            batch = []
    report.snapshots += store.add_snapshots(batch)
    return report


def _changes(crm: Crm, rules: RuleSet, ids: list[str],
             since: dt.datetime | None) -> Iterator[tuple[str, Change]]:
    from connector.crm.hubspot.client import HubSpotCrm
    from connector.crm.salesforce.client import SalesforceCrm

    if isinstance(crm, SalesforceCrm):
        from connector.history import salesforce

        return salesforce.read_changes(crm, rules.mapping, since)
    if isinstance(crm, HubSpotCrm):
        from connector.history import hubspot

        return hubspot.read_changes(crm, rules.mapping, ids, since)
    raise ConfigurationError(Text("no history reader for the CRM '{crm}'",
                                  crm=rules.mapping.crm))
