"""The HubSpot adapter of the CRM port, on HubSpot's CRM v3 REST API: check the mapping against
the deal properties, poll with the CRM search API, read by id in batches, write back in batches,
and give the rules each pipeline stage's label instead of its id.

What it costs (https://developers.hubspot.com/docs/guides/apps/api-usage/usage-details):

* setup, once per process: the deal properties, the deal pipelines, and the owners (when an owner
  attribute is mapped); the company properties in `describe` when a company attribute is mapped;
* a poll of N deals: ceil(N / 200) search calls (200 is the search API's page size), plus one
  for each move of the window past the search API's 10,000-results ceiling; plus one batch read
  of 100 companies for the primary companies not read before in this process;
* a fetch of N ids: ceil(N / 100) batch reads;
* a write of M deals: ceil(M / 100) batch updates, 100 being HubSpot's batch limit.

Limits honoured: the burst limit (per 10 seconds) and the daily limit, from the
`X-HubSpot-RateLimit-*` headers and the 429 answers (whose `policyName` says which limit was
hit); and the search API's own limit of a few requests a second per account, which its answers
do not announce: searches are spaced `search_interval` seconds apart. Every call goes through
one retry policy (connector.retry); a daily limit used up stops the run (FatalError) with the
cursor kept. No message carries the token.

Values: HubSpot sends every property as a string. Dates come as ISO 8601 or as epoch
milliseconds and are given to the rules as ISO 8601; numbers stay decimal strings (never float)
for the mapping to read as Decimal; a blank ("") is None. Writes send strings the same way.

Stages: `dealstage` holds a stage id; records carry the stage's label instead. Closed-won and
closed-lost come from each stage's own metadata (`isClosed`, `probability` 1.0 or 0.0): a
closed-won stage whose label the rules do not list as won reads as the first of `won`, and the
same for lost, so no portal's spelling can turn a won deal into an open one.

References: a mapped path `hubspot_owner_id.email` reads an attribute of the owner whose id the
property holds (owners API: id, email, firstName, lastName, name, userId); a path through a
property that references a company (`hs_primary_associated_company.name`) reads that company's
property. Any other path is refused by `describe`.
"""

from __future__ import annotations

import datetime as dt
import difflib
import logging
import re
from collections import Counter
from collections.abc import Callable, Collection, Iterator, Sequence
from collections.abc import Mapping as MappingABC
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, TypeVar

import requests

from connector.core.mapping import Mapping
from connector.core.values import TEXT, FieldType
from connector.crm import Record, WriteResult, scrub
from connector.errors import ConfigurationError, ConnectorError, FatalError, RetriableError
from connector.retry import RetryLater, RetryPolicy, retry_after_seconds

log = logging.getLogger(__name__)

T = TypeVar("T")

API_BASE = "https://api.hubapi.com"
PAGE_SIZE = 200            # results per search page, the search API's maximum
MAX_RESULTS = 10_000       # results one search can page through; `after` beyond is a 400
BATCH_SIZE = 100           # inputs per batch read or batch update, HubSpot's maximum
OWNERS_PAGE = 500          # owners per page, the owners API's maximum
SEARCH_INTERVAL = 0.25     # seconds between two searches: the search API takes ~4-5 a second
BURST_INTERVAL = 10.0      # seconds of HubSpot's rolling burst window, when a 429 says none
DAILY_RECHECK = 3600.0     # seconds after which a used-up daily allowance is asked again
# https://developers.hubspot.com/docs/guides/api/crm/search#limitations

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_MS = dt.timedelta(milliseconds=1)
_NAME = re.compile(r"^[A-Za-z0-9_]+$")   # a property's internal name
_MILLIS = re.compile(r"^-?\d{1,15}$")
STAGE_PROPERTY = "dealstage"
PIPELINE_PROPERTY = "pipeline"
OWNER_ATTRIBUTES = ("id", "email", "firstName", "lastName", "name", "userId")
# References HubSpot defines even when describe has not run (the properties say it too:
# referencedObjectType OWNER / COMPANY).
_KNOWN_REFERENCES = {"hubspot_owner_id": "OWNER", "hs_primary_associated_company": "COMPANY"}
_RECORD_ERRORS = 400, 404, 409, 422   # batch-update answers that a record's data can cause
# A batch refused for a property, not a value: 'Property "x" does not exist', '"x" is a read
# only property'.
_PROPERTY_GONE = re.compile(r"does not exist|read[ -]only property", re.IGNORECASE)

_SCOPES = ("crm.objects.deals.read, crm.objects.deals.write, crm.schemas.deals.read, "
           "crm.objects.owners.read, crm.objects.companies.read")


@dataclass(frozen=True)
class Stage:
    """One pipeline stage: its id, its label, its pipeline, and whether it closes the deal."""

    id: str
    label: str
    pipeline: str
    closed: bool
    won: bool


@dataclass
class _Answer:
    status: int
    body: Any
    headers: MappingABC[str, str]


class HubSpotCrm:
    """The CRM port on one HubSpot portal, for one mapping (`crm: hubspot`, `object: deals`).

    `access_token` is a private app's token or an OAuth access token, or a callable giving a
    fresh one (called again once when HubSpot answers 401, e.g. an OAuth token past its 30
    minutes). `won` and `lost` are the rules' closed-won and closed-lost stage values (the first
    of each is what a closed stage with another label reads as); `stage_labels` renames stages
    (by id or label) to the rules' values."""

    def __init__(self, mapping: Mapping, access_token: str | Callable[[], str], *,
                 base_url: str = API_BASE, retry: RetryPolicy | None = None,
                 session: requests.Session | None = None, timeout: float = 60.0,
                 won: Sequence[str] = ("Closed Won",),
                 lost: Sequence[str] = ("Closed Lost", "Cancelled"),
                 stage_labels: MappingABC[str, str] | None = None,
                 search_interval: float = SEARCH_INTERVAL,
                 quota_total_percent: float = 80.0,
                 secrets: Collection[str] = ()) -> None:
        if mapping.crm != "hubspot":
            raise ConfigurationError(f"{mapping.source or 'the mapping'}: crm is "
                                     f"'{mapping.crm}', not 'hubspot'")
        if not won or not lost:
            raise ConfigurationError("HubSpot needs the rules' closed-won and closed-lost "
                                     "stage values (closed: won: [...], lost: [...])")
        self._mapping = mapping
        self._base = base_url.rstrip("/")
        self._retry = retry or RetryPolicy()
        self._http = session or requests.Session()
        self._timeout = timeout
        self._won = tuple(won)
        self._lost = tuple(lost)
        self._stage_labels = {k.casefold(): v for k, v in (stage_labels or {}).items()}
        self._search_interval = search_interval
        self._quota_percent = quota_total_percent
        self._token_source = access_token if callable(access_token) else None
        self._token = access_token if isinstance(access_token, str) else ""
        self._secrets = [s for s in (*secrets, self._token) if s and len(s) >= 4]
        self._properties: dict[str, dict[str, Any]] | None = None    # deal properties, by name
        self._stages: dict[str, Stage] | None = None                 # by stage id
        self._owners: dict[str, dict[str, Any] | None] | None = None  # by owner id
        self._companies: dict[str, dict[str, Any] | None] = {}       # by company id
        self._deal_pipeline: dict[str, str] = {}                     # deal id -> pipeline id
        self._unknown_stages: set[str] = set()                       # ids read again once
        self._daily: tuple[int, int] | None = None      # (allowed, remaining) today
        self._daily_at = 0.0                            # when the headers said so
        self._burst: tuple[int, float] | None = None    # (remaining, window seconds)
        self._last_search: float | None = None
        self.calls = 0
        self.auth_calls = 0
        self.calls_by_kind: Counter[str] = Counter()
        self.window_moves = 0
        bad = [name for name in (mapping.object, mapping.id_field, mapping.modified_field)
               if not _NAME.match(name)]
        bad += [path for path in mapping.fields.values()
                if not all(_NAME.match(p) for p in path.split(".")) or path.count(".") > 1]
        if bad:
            raise ConfigurationError(f"{self._where}: not HubSpot property names (or "
                                     f"property.attribute): {', '.join(map(repr, bad))}")

    @classmethod
    def from_settings(cls, settings: Any, mapping: Mapping, *, closed: Any = None,
                      **kwargs: Any) -> HubSpotCrm:
        """The adapter from the settings (HUBSPOT_ACCESS_TOKEN) and, when given, the rules'
        `closed` states (connector.core.ruleset.Closed)."""
        token: Any = getattr(settings, "hubspot_access_token", None)
        text = token.get_secret_value() if hasattr(token, "get_secret_value") else token
        if not text:
            raise ConfigurationError(
                "HUBSPOT_ACCESS_TOKEN is not set: create a private app in HubSpot (Settings > "
                f"Integrations > Private apps) with the scopes {_SCOPES}, and set its token")
        if closed is not None and closed.won and closed.lost:
            # The rules' own spelling when known (labels), else their normalised values.
            labels = tuple(getattr(closed, "labels", ()) or ())
            won = [x for x in labels if x.strip().casefold() in closed.won]
            lost = [x for x in labels if x.strip().casefold() in closed.lost]
            kwargs.setdefault("won", won or sorted(closed.won))
            kwargs.setdefault("lost", lost or sorted(closed.lost))
        secrets = settings.secrets() if hasattr(settings, "secrets") else []
        kwargs.setdefault("quota_total_percent",
                          getattr(settings, "hubspot_quota_total_percent", 80.0))
        return cls(mapping, str(text), secrets=secrets, **kwargs)

    # --- the port -------------------------------------------------------------------------

    def describe(self) -> dict[str, FieldType]:
        """Check the mapping against the deal properties (and the pipelines, and the owners or
        company properties a path reads) and return each canonical field's type."""
        m = self._mapping
        props = self._deal_properties()
        problems: list[str] = []
        for label, name in (("the record id", m.id_field), ("the poll cursor", m.modified_field)):
            if name not in props:
                problems.append(f"{label} ({name}): {self._no_property(name, props)}")
        types: dict[str, FieldType] = {}
        company_attributes: dict[str, str] = {}
        for canonical, path in m.fields.items():
            head, _, attribute = path.partition(".")
            prop = props.get(head)
            if prop is None:
                problems.append(f"'{canonical}' ({path}): {self._no_property(head, props)}")
                continue
            if not attribute:
                types[canonical] = field_type(prop, m.type_of(canonical))
                continue
            target = _reference(prop)
            if target == "OWNER":
                if attribute not in OWNER_ATTRIBUTES:
                    problems.append(f"'{canonical}' ({path}): an owner has no '{attribute}'"
                                    f"{_did_you_mean(attribute, OWNER_ATTRIBUTES)}; use one "
                                    f"of {', '.join(OWNER_ATTRIBUTES)}")
            elif target == "COMPANY":
                company_attributes[canonical] = attribute
            else:
                problems.append(f"'{canonical}' ({path}): '{head}' does not reference an owner "
                                "or a company, so it has no attributes to read")
            types[canonical] = m.type_of(canonical) or TEXT
        if company_attributes:
            companies = self._object_properties("companies")
            for canonical, attribute in company_attributes.items():
                if attribute not in companies:
                    problems.append(f"'{canonical}' ({m.fields[canonical]}): companies have no "
                                    f"property '{attribute}'"
                                    f"{_did_you_mean(attribute, list(companies))}")
        for name in m.writeback:
            if name not in m.fields:
                continue  # the mapping file's own check
            path = m.fields[name]
            prop = props.get(path)
            if "." in path:
                problems.append(f"writeback '{name}' ({path}) is a property of a related record; "
                                f"only the {m.object}' own properties can be written")
            elif prop is None:
                continue  # reported above
            elif prop.get("calculated") or str(prop.get("fieldType", "")).startswith(
                    "calculation"):
                problems.append(f"writeback '{name}' ({path}) is calculated by HubSpot: map it "
                                "to a custom property the connector can write")
            elif (prop.get("modificationMetadata") or {}).get("readOnlyValue"):
                problems.append(f"writeback '{name}' ({path}) is read-only in HubSpot: map it to "
                                "a custom property the connector can write")
            elif prop.get("numberDisplayHint") == "probability" and \
                    (m.type_of(name) or TEXT).kind == "percent":
                problems.append(f"writeback '{name}' ({path}) holds a fraction 0..1 and the "
                                "rules write a percentage 0..100: map it to a custom number "
                                "property")
        if STAGE_PROPERTY in m.fields.values():
            self._pipelines()
        heads = {p.partition(".")[0] for p in m.fields.values() if "." in p}
        if any(_reference(props.get(h, {}), h) == "OWNER" for h in heads):
            self._owner_table()
        if problems:
            raise ConfigurationError("\n".join(f"{self._where}: {p}" for p in problems))
        return types

    def changed(self, since: dt.datetime | None, until: dt.datetime) -> Iterator[list[Record]]:
        """Pages of up to 200 deals modified in [since, until], oldest first.

        The search API pages by offset (`after`) and stops at 10,000 results: past that the
        window moves forward to start at the last modification time seen, so the deals sharing
        that time are read again (the pipeline drops them), never skipped. Each window is read
        whole before its pages are handed out: the pipeline's write-back moves the deals it
        writes out of the window, and an offset taken over a window that shrinks while it is
        paged would skip as many deals as left it. For the same reason a window whose `total`
        changes between two pages (someone edited a deal meanwhile) is read again from the
        last page that was read before the change."""
        self._metadata()
        low = _utc(since)
        high = _utc(until)
        assert high is not None
        while True:
            window, last, more = self._read_window(low, high)
            for page in _chunks(window, PAGE_SIZE):
                yield self._finish(page)
            if not more:
                return
            self.window_moves += 1
            first = self._stamp(window[0]) if window else None
            if last is None or first == last:
                # The whole window is one instant (a bulk update stamped more than 10,000
                # deals alike): read that instant by id, then go on one millisecond later.
                stamp = last if last is not None else (low or _EPOCH)
                for page in _chunks(self._read_instant(stamp), PAGE_SIZE):
                    yield self._finish(page)
                low = stamp + _MS
            else:
                low = last
            log.info("HubSpot: the search window moves to %s (the 10,000-results ceiling)",
                     low.isoformat())

    def open_records(self, field: str, closed: list[str]) -> Iterator[list[Record]]:
        """Pages of 200 deals whose `field` holds none of the `closed` values, by id: what the
        daily sweep re-evaluates. For the stage, the closed values are the rules' labels and
        every stage HubSpot marks closed is left out too. Paged by id (each page a search for
        the ids after the last one read), so neither the 10,000-results ceiling nor the
        sweep's own writes between pages can make it skip a deal."""
        self._metadata()
        wanted = {c.casefold() for c in closed}
        if field == STAGE_PROPERTY:
            values = sorted(s.id for s in self._pipelines().values()
                            if s.closed or (self.stage_label(s.id) or "").casefold() in wanted)
        else:
            values = sorted(dict.fromkeys(closed))
        last_id: str | None = None
        while True:
            filters: list[dict[str, Any]] = []
            if values:
                filters.append({"propertyName": field, "operator": "NOT_IN", "values": values})
            if last_id is not None:
                filters.append({"propertyName": self._mapping.id_field, "operator": "GT",
                                "value": last_id})
            body = self._search(filters, None, sort=self._mapping.id_field, what="the sweep")
            page = [self._record(r) for r in _results(body)]
            if page:
                yield self._finish(page)
            if not page or _next_after(body) is None:
                return
            last_id = str(page[-1][self._mapping.id_field])

    def fetch(self, ids: list[str]) -> list[Record]:
        """The deals with these ids: one batch read per 100 ids; unknown ids are left out."""
        self._metadata()
        unique = list(dict.fromkeys(str(i).strip() for i in ids if str(i).strip().isdigit()))
        records: list[Record] = []
        for chunk in _chunks(unique, BATCH_SIZE):
            answer = self._request(
                "reading deals by id", "POST", f"/crm/v3/objects/{self._mapping.object}"
                "/batch/read", kind="batch_read", params={"archived": "false"},
                json_body={"properties": self._wanted(), "inputs": [{"id": i} for i in chunk]},
                accept=(200, 207))
            records += [self._record(r) for r in _results(answer.body)]
        return self._finish(records) if records else []

    def write(self, updates: list[tuple[str, dict[str, Any]]]) -> list[WriteResult]:
        """Write the given properties of each deal: 100 deals a call. HubSpot answers 207
        with the ids it could not update; a batch it refuses whole for one deal's value is
        split until that deal fails alone."""
        m = self._mapping
        allowed = {m.fields[n] for n in m.writeback if n in m.fields}
        merged: dict[str, dict[str, Any]] = {}
        for record_id, fields in updates:
            refused = sorted(f for f in fields if f not in allowed)
            if refused:
                raise ValueError(f"not writeback properties of {self._where}: "
                                 f"{', '.join(refused)}")
            merged.setdefault(str(record_id), {}).update(fields)
        results: dict[str, WriteResult] = {rid: WriteResult(rid, True)
                                           for rid, fields in merged.items() if not fields}
        todo = [(rid, {name: self._outgoing(rid, name, value) for name, value in fields.items()})
                for rid, fields in merged.items() if fields]
        for chunk in _chunks(todo, BATCH_SIZE):
            results.update(self._write_batch(chunk))
        failed = sum(not r.ok for r in results.values())
        if todo:
            log.info("HubSpot: wrote %d deals, %d failed", len(todo) - failed, failed)
        return [results[str(rid)] for rid, _ in updates]

    # --- for connector.history, which reads what the port does not ------------------------

    def post(self, what: str, path: str, body: Any, *, kind: str) -> Any:
        """One POST through this adapter's token, limits and retry policy: the JSON answer."""
        return self._request(what, "POST", path, kind=kind, json_body=body,
                             accept=(200, 207)).body

    def incoming(self, name: str, value: Any) -> Any:
        """A property's value as records carry it: dates as ISO 8601, a stage as its label."""
        self._metadata()
        value = _incoming(value, ((self._properties or {}).get(name) or {}).get("type"))
        return self.stage_label(value) if name == STAGE_PROPERTY else value

    # --- stages ----------------------------------------------------------------------------

    def stages(self) -> dict[str, Stage]:
        """Every stage of the object's pipelines, by stage id (read once, then cached)."""
        return dict(self._pipelines())

    def stage_label(self, stage_id: str | None) -> str | None:
        """What the rules see for a stage id: its label, renamed by `stage_labels`, and a
        closed stage as one of the rules' closed values."""
        if stage_id is None or stage_id == "":
            return None
        stage = self._pipelines().get(stage_id)
        if stage is None and stage_id not in self._unknown_stages:
            # A stage added since the pipelines were read: read them once more.
            self._unknown_stages.add(stage_id)
            self._stages = None
            stage = self._pipelines().get(stage_id)
        if stage is None:
            return stage_id   # the rules will say that they do not know it
        label = self._stage_labels.get(stage.id.casefold()) or \
            self._stage_labels.get(stage.label.casefold()) or stage.label
        if stage.closed:
            names = self._won if stage.won else self._lost
            if label.casefold() not in {n.casefold() for n in names}:
                return names[0]
        return label

    def stage_id(self, label: str, pipeline: str | None = None) -> str:
        """The stage id for a label the rules use, in the deal's pipeline when known; an
        unknown or ambiguous label is a ValueError (nothing is written)."""
        found = [s.id for s in self._pipelines().values()
                 if (pipeline is None or s.pipeline == pipeline) and
                 (self.stage_label(s.id) or "").casefold() == label.casefold()]
        if len(set(found)) != 1:
            where = f" in pipeline '{pipeline}'" if pipeline else ""
            what = "no stage" if not found else f"{len(found)} stages"
            raise ValueError(f"{what} of HubSpot{where} read as '{label}': the stage cannot "
                             "be written")
        return found[0]

    # --- reading ---------------------------------------------------------------------------

    def _read_window(self, low: dt.datetime | None, high: dt.datetime
                     ) -> tuple[list[Record], dt.datetime | None, bool]:
        """(the window's deals oldest first, the last modification time read, whether the
        ceiling cut the window short)."""
        pages: list[list[Record]] = []
        totals: list[int | None] = []
        after: str | None = None
        while True:
            try:
                body = self._search(self._window_filters(low, high), after)
            except ConfigurationError:
                if after is None:
                    raise
                # A 400 on a later page: HubSpot's ceiling came sooner than documented.
                log.warning("HubSpot refused the search page after %s; moving the window",
                            after)
                return self._window(pages), self._last(pages), True
            total = body.get("total") if isinstance(body.get("total"), int) else None
            if totals and total != totals[-1] and pages:
                # The window changed under the paging: what the offset now points at moved.
                log.info("HubSpot: the search total went from %s to %s while paging; reading "
                         "again from the last page before the change", totals[-1], total)
                return self._window(pages), self._last(pages), True
            totals.append(total)
            pages.append([self._record(r) for r in _results(body)])
            after = _next_after(body)
            if after is None:
                return self._window(pages), self._last(pages), False
            if not after.isdigit() or int(after) + PAGE_SIZE > MAX_RESULTS:
                return self._window(pages), self._last(pages), True

    def _read_instant(self, stamp: dt.datetime) -> list[Record]:
        """Every deal modified at exactly `stamp`, by ascending id (keyset paging by id, which
        no ceiling and no concurrent edit can make skip a deal)."""
        records: list[Record] = []
        last_id: str | None = None
        while True:
            filters: list[dict[str, Any]] = [
                {"propertyName": self._mapping.modified_field, "operator": "EQ",
                 "value": str(_millis(stamp))}]
            if last_id is not None:
                filters.append({"propertyName": self._mapping.id_field, "operator": "GT",
                                "value": last_id})
            body = self._search(filters, None, sort=self._mapping.id_field)
            page = [self._record(r) for r in _results(body)]
            records += page
            if not page or _next_after(body) is None:
                return records
            last_id = str(page[-1][self._mapping.id_field])

    def _window_filters(self, low: dt.datetime | None, high: dt.datetime
                        ) -> list[dict[str, Any]]:
        modified = self._mapping.modified_field
        # Millisecond epochs, both bounds floored: HubSpot stamps whole milliseconds.
        filters = [{"propertyName": modified, "operator": "LTE", "value": str(_millis(high))}]
        if low is not None:
            filters.insert(0, {"propertyName": modified, "operator": "GTE",
                               "value": str(_millis(low))})
        return filters

    def _search(self, filters: list[dict[str, Any]], after: str | None,
                sort: str | None = None, what: str = "the poll search") -> dict[str, Any]:
        body: dict[str, Any] = {
            "filterGroups": [{"filters": filters}] if filters else [],
            "sorts": [{"propertyName": sort or self._mapping.modified_field,
                       "direction": "ASCENDING"}],
            "properties": self._wanted(),
            "limit": PAGE_SIZE,
        }
        if after is not None:
            body["after"] = after
        answer = self._request(what, "POST",
                               f"/crm/v3/objects/{self._mapping.object}/search", kind="search",
                               json_body=body)
        return answer.body if isinstance(answer.body, dict) else {}

    def _window(self, pages: list[list[Record]]) -> list[Record]:
        """The window's deals once each (a later read wins), by modification time then id."""
        by_id: dict[str, Record] = {}
        for page in pages:
            for record in page:
                by_id[str(record[self._mapping.id_field])] = record
        return sorted(by_id.values(), key=self._order)

    def _last(self, pages: list[list[Record]]) -> dt.datetime | None:
        stamps = [s for page in pages for s in map(self._stamp, page) if s is not None]
        return max(stamps) if stamps else None

    def _order(self, record: Record) -> tuple[dt.datetime, int, str]:
        rid = str(record.get(self._mapping.id_field) or "")
        return (self._stamp(record) or _EPOCH, int(rid) if rid.isdigit() else 0, rid)

    def _stamp(self, record: Record) -> dt.datetime | None:
        return _parse_instant(record.get(self._mapping.modified_field))

    def _wanted(self) -> list[str]:
        """The deal properties to ask for: the id, the cursor, each mapped property (or the
        reference a path starts with), and the pipeline when the stage is mapped."""
        m = self._mapping
        names = [m.id_field, m.modified_field, *(p.partition(".")[0] for p in m.fields.values())]
        if STAGE_PROPERTY in names:
            names.append(PIPELINE_PROPERTY)
        return list(dict.fromkeys(names))

    def _record(self, result: Any) -> Record:
        """One search or batch result as a flat record: each property by its name, blanks as
        None, epoch-millisecond dates as ISO 8601, the stage id as its label."""
        if not isinstance(result, dict):
            return {}
        props = result.get("properties") or {}
        meta = self._properties or {}
        record: Record = {}
        for name in self._wanted():
            value = props.get(name)
            record[name] = _incoming(value, (meta.get(name) or {}).get("type"))
        rid = str(result.get("id") or props.get(self._mapping.id_field) or "")
        record[self._mapping.id_field] = rid
        if STAGE_PROPERTY in record:
            pipeline = record.get(PIPELINE_PROPERTY)
            if pipeline:
                self._deal_pipeline[rid] = str(pipeline)
            record[STAGE_PROPERTY] = self.stage_label(record[STAGE_PROPERTY])
        return record

    def _finish(self, records: list[Record]) -> list[Record]:
        """Fill the mapped reference paths (owner.email, company.name) of a page of records:
        owners from the table read once, companies in batches of 100, each read once."""
        paths = [p for p in self._mapping.fields.values() if "." in p]
        if not paths:
            return records
        meta = self._properties or {}
        company_ids: set[str] = set()
        company_attributes: set[str] = set()
        for path in paths:
            head, _, attribute = path.partition(".")
            if _reference(meta.get(head, {}), head) == "COMPANY":
                company_attributes.add(attribute)
                company_ids |= {_object_id(r.get(head)) for r in records} - {""}
        missing = sorted(i for i in company_ids if i not in self._companies)
        if missing:
            self._read_companies(missing, sorted(company_attributes))
        for record in records:
            for path in paths:
                head, _, attribute = path.partition(".")
                target = _reference(meta.get(head, {}), head)
                ref = _object_id(record.get(head))
                value: Any = None
                if ref and target == "OWNER":
                    value = _owner_attribute(self._owner(ref), attribute)
                elif ref and target == "COMPANY":
                    company = self._companies.get(ref) or {}
                    value = _incoming(company.get(attribute), None)
                record[path] = value
        return records

    def _read_companies(self, ids: list[str], attributes: list[str]) -> None:
        for chunk in _chunks(ids, BATCH_SIZE):
            answer = self._request("reading the deals' companies", "POST",
                                   "/crm/v3/objects/companies/batch/read", kind="companies",
                                   params={"archived": "false"},
                                   json_body={"properties": attributes,
                                              "inputs": [{"id": i} for i in chunk]},
                                   accept=(200, 207))
            for result in _results(answer.body):
                self._companies[str(result.get("id"))] = result.get("properties") or {}
            for i in chunk:
                self._companies.setdefault(i, None)   # deleted or unknown: read once only

    def _owner(self, owner_id: str) -> dict[str, Any] | None:
        table = self._owner_table()
        if owner_id not in table:
            # An owner added since the table was read, or deactivated: ask for that one.
            answer = self._request("reading a deal owner", "GET", f"/crm/v3/owners/{owner_id}",
                                   kind="owners", params={"idProperty": "id"},
                                   accept=(200, 404))
            table[owner_id] = answer.body if answer.status == 200 and \
                isinstance(answer.body, dict) else None
        return table[owner_id]

    def _owner_table(self) -> dict[str, dict[str, Any] | None]:
        if self._owners is None:
            owners: dict[str, dict[str, Any] | None] = {}
            after: str | None = None
            while True:
                params = {"limit": str(OWNERS_PAGE), "archived": "false"}
                if after:
                    params["after"] = after
                answer = self._request("reading the owners", "GET", "/crm/v3/owners",
                                       kind="owners", params=params)
                for owner in _results(answer.body):
                    owners[str(owner.get("id"))] = owner
                after = _next_after(answer.body)
                if after is None:
                    break
            self._owners = owners
        return self._owners

    # --- metadata --------------------------------------------------------------------------

    def _metadata(self) -> None:
        """What reading needs before the first record: the property types (dates) and, when
        the stage is mapped, the pipelines. Read once; `describe` reads them too."""
        self._deal_properties()
        if STAGE_PROPERTY in self._wanted():
            self._pipelines()

    def _deal_properties(self) -> dict[str, dict[str, Any]]:
        if self._properties is None:
            self._properties = self._object_properties(self._mapping.object)
        return self._properties

    def _object_properties(self, object_type: str) -> dict[str, dict[str, Any]]:
        answer = self._request(f"reading the {object_type} properties", "GET",
                               f"/crm/v3/properties/{object_type}", kind="properties",
                               params={"archived": "false"})
        return {str(p.get("name")): p for p in _results(answer.body)}

    def _pipelines(self) -> dict[str, Stage]:
        if self._stages is None:
            answer = self._request("reading the pipelines", "GET",
                                   f"/crm/v3/pipelines/{self._mapping.object}",
                                   kind="pipelines")
            stages: dict[str, Stage] = {}
            for pipeline in _results(answer.body):
                if pipeline.get("archived"):
                    continue
                for s in pipeline.get("stages") or []:
                    meta = s.get("metadata") or {}
                    closed = str(meta.get("isClosed", "false")).lower() == "true"
                    try:
                        probability = Decimal(str(meta.get("probability", "0")))
                    except InvalidOperation:
                        probability = Decimal(0)
                    stages[str(s.get("id"))] = Stage(
                        str(s.get("id")), str(s.get("label") or s.get("id")),
                        str(pipeline.get("id")), closed, closed and probability >= 1)
            self._stages = stages
        return self._stages

    # --- write-back ------------------------------------------------------------------------

    def _outgoing(self, record_id: str, name: str, value: Any) -> str:
        if name == STAGE_PROPERTY and isinstance(value, str) and value:
            return self.stage_id(value, self._deal_pipeline.get(record_id))
        prop = (self._properties or {}).get(name) or {}
        return hubspot_value(value, str(prop.get("type") or ""))

    def _write_batch(self, chunk: list[tuple[str, dict[str, str]]]) -> dict[str, WriteResult]:
        """Up to 100 deals in one call. A whole batch refused for a record's data (HubSpot
        names no id then) is split in two, until the record at fault fails alone."""
        answer = self._request(
            "the write-back", "POST", f"/crm/v3/objects/{self._mapping.object}/batch/update",
            kind="batch_update", accept=(200, 207, *_RECORD_ERRORS),
            json_body={"inputs": [{"id": rid, "properties": props} for rid, props in chunk]})
        results: dict[str, WriteResult] = {}
        if answer.status in _RECORD_ERRORS:
            code, message = _error_of(answer.body, answer.status)
            if _PROPERTY_GONE.search(message):
                # Not one deal's value: the property itself. Every deal would fail alike, and
                # splitting the batch would only spend calls finding that out.
                raise FatalError(self._scrub(
                    f"HubSpot refused the write-back ({code}: {message}): a writeback "
                    f"property no longer exists or is read-only; check {self._where} "
                    "against the deal properties (the run stops, the cursor is kept)"))
            named = [rid for rid, _ in chunk if rid in set(_error_ids(answer.body))]
            if len(chunk) == 1 or named:
                at_fault = named or [chunk[0][0]]
                for rid in at_fault:
                    results[rid] = WriteResult(rid, False, code, self._scrub(message))
                rest = [u for u in chunk if u[0] not in results]
                if rest:
                    results.update(self._write_batch(rest))
                return results
            half = len(chunk) // 2
            results.update(self._write_batch(chunk[:half]))
            results.update(self._write_batch(chunk[half:]))
            return results
        body = answer.body if isinstance(answer.body, dict) else {}
        for error in body.get("errors") or []:
            if not isinstance(error, dict):
                continue
            code, message = _error_of(error, answer.status)
            for rid in _error_ids(error):
                results[rid] = WriteResult(rid, False, code, self._scrub(message))
        done = {str(r.get("id")) for r in _results(body)}
        for rid, _ in chunk:
            if rid in results:
                continue
            results[rid] = WriteResult(rid, True) if rid in done else WriteResult(
                rid, False, "NO_RESULT", "HubSpot returned no result for this deal")
        return results

    # --- calls -----------------------------------------------------------------------------

    def _request(self, what: str, method: str, path: str, *, kind: str,
                 json_body: Any = None, params: dict[str, str] | None = None,
                 accept: tuple[int, ...] = (200,)) -> _Answer:
        """One API call, retried by the policy."""
        return self._retry.call(
            lambda: self._once(what, method, path, kind, json_body, params, accept))

    def _once(self, what: str, method: str, path: str, kind: str, json_body: Any,
              params: dict[str, str] | None, accept: tuple[int, ...]) -> _Answer:
        renewed = False
        while True:
            self._check_quota()
            self._pace(kind)
            token = self._current_token()
            self.calls += 1
            self.calls_by_kind[kind] += 1
            try:
                response = self._http.request(
                    method, self._base + path, json=json_body, params=params,
                    timeout=self._timeout,
                    headers={"Authorization": f"Bearer {token}", "Accept": "application/json"})
            except requests.Timeout:
                raise RetriableError(f"HubSpot did not answer {what} within "
                                     f"{self._timeout:g} s") from None
            except requests.ConnectionError as exc:
                raise RetriableError(f"cannot reach HubSpot for {what} "
                                     f"({type(exc).__name__})") from None
            if kind == "search":
                self._last_search = self._retry.clock()
            self._read_limits(response.headers)
            body = _json(response)
            if response.status_code == 401 and self._token_source is not None and not renewed:
                log.info("HubSpot: the access token was refused; getting a fresh one")
                self._token = ""
                renewed = True
                continue
            if response.status_code in accept:
                return _Answer(response.status_code, body, response.headers)
            raise self._error(what, response.status_code, body, response.headers)

    def _current_token(self) -> str:
        if not self._token and self._token_source is not None:
            self.auth_calls += 1
            try:
                self._token = self._token_source()
            except ConnectorError:
                raise
            except Exception as exc:  # the caller's token source: say what, never the secret
                raise FatalError(f"could not get a HubSpot access token "
                                 f"({type(exc).__name__})") from None
            if self._token and len(self._token) >= 4:
                self._secrets.append(self._token)
        return self._token

    def _error(self, what: str, status: int, body: Any,
               headers: MappingABC[str, str]) -> ConnectorError:
        """The connector error for a HubSpot error answer."""
        code, message = _error_of(body, status)
        text = self._scrub(f"HubSpot refused {what} (HTTP {status}, {code}: {message})")
        policy = str(body.get("policyName", "")).upper() if isinstance(body, dict) else ""
        if status == 429 and policy == "DAILY":
            return FatalError(f"{text}: the portal's daily API limit is used up; the run stops "
                              "here and the cursor is kept, to resume after midnight in the "
                              "portal's time zone")
        if status == 429:
            return RetryLater(text, self._wait_after_429(policy, headers))
        if status >= 500:
            return RetryLater(text, retry_after_seconds(headers.get("Retry-After")))
        if status == 401:
            return FatalError(f"{text}: HUBSPOT_ACCESS_TOKEN is invalid, expired or revoked: "
                              "set the private app's current token (or a fresh OAuth token)")
        if status == 403:
            return FatalError(f"{text}: the token lacks a scope; grant the app {_SCOPES}")
        if status in (400, 404):
            return ConfigurationError(f"{text}: check {self._where}")
        return FatalError(text)

    def _wait_after_429(self, policy: str, headers: MappingABC[str, str]) -> float | None:
        asked = retry_after_seconds(headers.get("Retry-After"))
        if asked is not None:
            return asked
        interval = _int(headers.get("X-HubSpot-RateLimit-Interval-Milliseconds"))
        if interval is not None and interval > 0:
            return interval / 1000
        if "SECONDLY" in policy and "TEN" not in policy:
            return 1.0
        return BURST_INTERVAL

    def _read_limits(self, headers: MappingABC[str, str]) -> None:
        daily = _int(headers.get("X-HubSpot-RateLimit-Daily"))
        daily_left = _int(headers.get("X-HubSpot-RateLimit-Daily-Remaining"))
        if daily is not None and daily_left is not None:
            self._daily = (daily, daily_left)
            self._daily_at = self._retry.clock()
        left = _int(headers.get("X-HubSpot-RateLimit-Remaining"))
        interval = _int(headers.get("X-HubSpot-RateLimit-Interval-Milliseconds"))
        if left is not None:
            self._burst = (left, (interval or BURST_INTERVAL * 1000) / 1000)

    def _check_quota(self) -> None:
        """Stop before the call past the daily limit, or past the share of it above which the
        portal's other integrations need the rest (HUBSPOT_QUOTA_TOTAL_PERCENT)."""
        if self._daily is None or self._daily[0] <= 0:
            return
        if self._retry.clock() - self._daily_at > DAILY_RECHECK:
            return   # an hour on (a process kept warm): let one call see whether it was reset
        allowed, left = self._daily
        used = allowed - left
        if left <= 0 or used * 100 >= allowed * self._quota_percent:
            raise FatalError(
                f"the portal has used {used:,} of its {allowed:,} daily API calls; the "
                f"connector stops at {self._quota_percent:g}% to leave the rest to other "
                "integrations; the cursor is kept")

    def _pace(self, kind: str) -> None:
        """Wait out the burst window when its last call was used, and space the searches."""
        if self._burst is not None and self._burst[0] <= 0:
            log.info("HubSpot: the burst limit is reached; waiting %.1f s", self._burst[1])
            self._retry.sleep(self._burst[1])
            self._burst = None
        if kind == "search" and self._last_search is not None and self._search_interval > 0:
            wait = self._search_interval - (self._retry.clock() - self._last_search)
            if wait > 0:
                self._retry.sleep(wait)

    # --- small helpers ---------------------------------------------------------------------

    @property
    def _where(self) -> str:
        return self._mapping.source or f"mappings/{self._mapping.crm}.yaml"

    def _scrub(self, text: str) -> str:
        return scrub(text, self._secrets)

    def _no_property(self, name: str, props: MappingABC[str, Any]) -> str:
        return (f"{self._mapping.object} have no property '{name}'"
                f"{_did_you_mean(name, list(props))} (use the internal name, not the label)")


# --- values ----------------------------------------------------------------------------------

def field_type(prop: MappingABC[str, Any], declared: FieldType | None = None) -> FieldType:
    """Our type for one HubSpot property. HubSpot says `number` for every number: a currency
    one is money; for the others the mapping file's `types:` says money, percent or integer."""
    kind = str(prop.get("type") or "").lower()
    if kind == "number":
        if prop.get("showCurrencySymbol") or prop.get("numberDisplayHint") == "currency":
            return FieldType("money", declared.scale if declared else None)
        if declared is not None and declared.kind in ("money", "percent", "integer", "number"):
            return declared
        return FieldType("number")
    if kind == "date":
        return FieldType("date")
    if kind == "datetime":
        # A datetime shown as a date picker (closedate) is a date unless the file says not.
        if declared is not None and declared.kind in ("date", "datetime"):
            return declared
        return FieldType("date" if prop.get("fieldType") == "date" else "datetime")
    if kind == "bool":
        return FieldType("boolean")
    return TEXT   # string, enumeration, phone_number ...


def hubspot_value(value: Any, prop_type: str = "") -> str:
    """A value as HubSpot takes it: a string. Numbers exactly (a float that the pipeline made
    of a Decimal goes back through its shortest repr), dates ISO, blank as ""."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Decimal):
        return _plain_number(value)
    if isinstance(value, float):
        return _plain_number(Decimal(repr(value)))
    if isinstance(value, int):
        return str(value)
    if isinstance(value, dt.datetime):
        moment = value if value.tzinfo else value.replace(tzinfo=dt.UTC)
        return moment.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace(
            "+00:00", "Z")
    if isinstance(value, dt.date):
        # A date property takes YYYY-MM-DD; a datetime one, midnight UTC of that day.
        if prop_type == "datetime":
            return f"{value.isoformat()}T00:00:00.000Z"
        return value.isoformat()
    return str(value)


def _plain_number(value: Decimal) -> str:
    if not value.is_finite():
        raise ValueError(f"{value} cannot be written to HubSpot")
    text = format(value, "f")
    return text


def _incoming(value: Any, prop_type: str | None) -> Any:
    """A property value as HubSpot sent it -> what the mapping reads: "" -> None, epoch
    milliseconds of a date or datetime property -> ISO 8601."""
    if value is None:
        return None
    if isinstance(value, str):
        if value == "":
            return None
        if prop_type in ("date", "datetime") and _MILLIS.match(value.strip()):
            moment = _EPOCH + int(value.strip()) * _MS
            if prop_type == "date":
                return moment.date().isoformat()
            return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return value


def _parse_instant(value: Any) -> dt.datetime | None:
    if value is None or value == "":
        return None
    if isinstance(value, dt.datetime):
        return value if value.tzinfo else value.replace(tzinfo=dt.UTC)
    text = str(value).strip()
    if _MILLIS.match(text):
        return _EPOCH + int(text) * _MS
    try:
        moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def _millis(value: dt.datetime) -> int:
    return (value - _EPOCH) // _MS


def _utc(value: dt.datetime | None) -> dt.datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


def _object_id(value: Any) -> str:
    """A reference property's value as an id ('1234', also when HubSpot writes '1234.0')."""
    if value is None or value == "":
        return ""
    text = str(value).strip()
    try:
        number = Decimal(text)
    except InvalidOperation:
        return text
    return str(int(number)) if number == number.to_integral_value() else text


def _owner_attribute(owner: MappingABC[str, Any] | None, attribute: str) -> Any:
    if not owner:
        return None
    if attribute == "name":
        name = " ".join(str(owner.get(k) or "").strip() for k in ("firstName", "lastName"))
        return name.strip() or owner.get("email") or None
    value = owner.get(attribute)
    return None if value in (None, "") else str(value)


def _reference(prop: MappingABC[str, Any], name: str | None = None) -> str | None:
    """OWNER or COMPANY when the property holds such an id."""
    target = prop.get("referencedObjectType") if prop else None
    if isinstance(target, str) and target:
        return target.upper()
    return _KNOWN_REFERENCES.get(name or str(prop.get("name") if prop else ""))


# --- answers ---------------------------------------------------------------------------------

def _json(response: requests.Response) -> Any:
    if not response.content:
        return None
    try:
        return response.json(parse_float=Decimal)
    except ValueError:
        return response.text[:300]


def _results(body: Any) -> list[dict[str, Any]]:
    if isinstance(body, dict) and isinstance(body.get("results"), list):
        return [r for r in body["results"] if isinstance(r, dict)]
    return []


def _next_after(body: Any) -> str | None:
    if not isinstance(body, dict):
        return None
    after = ((body.get("paging") or {}).get("next") or {}).get("after")
    return str(after) if after not in (None, "") else None


def _error_of(body: Any, status: int) -> tuple[str, str]:
    """(category, message) of a HubSpot error: {"status": "error", "category", "message"}."""
    if isinstance(body, dict):
        code = body.get("category") or body.get("errorType") or body.get("subCategory")
        message = str(body.get("message") or "")[:500]
        return (str(code) if code else f"HTTP_{status}"), message or "no details"
    if isinstance(body, str) and body.strip():
        return f"HTTP_{status}", body.strip()[:300]
    return f"HTTP_{status}", "no details"


def _error_ids(body: Any) -> list[str]:
    if not isinstance(body, dict):
        return []
    context = body.get("context") or {}
    ids = context.get("ids") if isinstance(context, dict) else None
    return [str(i) for i in ids] if isinstance(ids, list) else []


def _int(value: str | None) -> int | None:
    try:
        return int(str(value).strip()) if value is not None else None
    except ValueError:
        return None


def _did_you_mean(name: str, candidates: Sequence[str]) -> str:
    close = difflib.get_close_matches(name, list(candidates), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _chunks(items: Sequence[T], size: int) -> list[list[T]]:
    return [list(items[i:i + size]) for i in range(0, len(items), size)]


__all__ = ["API_BASE", "BATCH_SIZE", "MAX_RESULTS", "PAGE_SIZE", "HubSpotCrm", "Stage",
           "field_type", "hubspot_value"]
