"""The HubSpot adapter of the CRM port, on HubSpot's CRM v3 REST API: check the mapping against
the deal properties, poll with the CRM search API (connector.crm.hubspot.search), read by id in
batches, write back in batches, and give the rules each pipeline stage's label instead of its id
(connector.crm.hubspot.metadata).

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
do not announce: searches are spaced `search_interval` seconds apart. The call loop, the quota,
the error tree and `write` are the base's (connector.crm._base). No message carries the token.

References: a mapped path `hubspot_owner_id.email` reads an attribute of the owner whose id the
property holds (owners API: id, email, firstName, lastName, name, userId); a path through a
property that references a company (`hs_primary_associated_company.name`) reads that company's
property. Any other path is refused by `describe`.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from collections.abc import Callable, Collection, Iterator, Sequence
from collections.abc import Mapping as MappingABC
from dataclasses import dataclass
from decimal import Decimal
from functools import partial
from typing import Any

import requests

from connector.core.findings import did_you_mean
from connector.core.mapping import Mapping
from connector.core.ruleset import Closed
from connector.core.values import TEXT, FieldType
from connector.crm import Record, WriteResult
from connector.crm._base import (
    CrmAdapter,
    SessionExpired,
    StageNames,
    chunks,
    closed_values,
    utc,
)
from connector.crm.hubspot import search
from connector.crm.hubspot.metadata import (
    BATCH_SIZE,
    EPOCH,
    MS,
    OWNER_ATTRIBUTES,
    PIPELINE_PROPERTY,
    STAGE_PROPERTY,
    Stage,
    field_type,
    hubspot_value,
    incoming,
    parse_instant,
    reference,
    stages_of,
)
from connector.crm.hubspot.references import References
from connector.errors import ConfigurationError, ConnectorError, FatalError, RecordError, Text
from connector.formatting import listed
from connector.retry import RetryPolicy, retry_after_seconds

log = logging.getLogger(__name__)

API_BASE = "https://api.hubapi.com"
SEARCH_INTERVAL = 0.25     # seconds between two searches: the search API takes ~4-5 a second
BURST_INTERVAL = 10.0      # seconds of HubSpot's rolling burst window, when a 429 says none
DAILY_RECHECK = 3600.0     # seconds after which a used-up daily allowance is asked again

_NAME = re.compile(r"^[A-Za-z0-9_]+$")   # a property's internal name
_RECORD_ERRORS = 400, 404, 409, 422   # batch-update answers that a record's data can cause
# A batch refused for a property, not a value: 'Property "x" does not exist', '"x" is a read
# only property'.
_PROPERTY_GONE = re.compile(r"does not exist|read[ -]only property", re.IGNORECASE)

WRITE_BACK = Text("the write-back")
_SCOPES = ("crm.objects.deals.read, crm.objects.deals.write, crm.schemas.deals.read, "
           "crm.objects.owners.read, crm.objects.companies.read")


@dataclass
class _Answer:
    status: int
    body: Any
    headers: MappingABC[str, str]


class HubSpotCrm(CrmAdapter):
    """The CRM port on one HubSpot portal, for one mapping (`crm: hubspot`, `object: deals`).

    `access_token` is a private app's token or an OAuth access token, or a callable giving a
    fresh one (called again once when HubSpot answers 401, e.g. an OAuth token past its 30
    minutes). `won` and `lost` are the rules' closed-won and closed-lost stage values (the first
    of each is what a closed stage with another label reads as); `stage_labels` renames stages
    (by id or label) to the rules' values."""

    name = "HubSpot"
    account = "portal"
    settings_prefix = "HUBSPOT"
    page_size = search.PAGE_SIZE
    write_size = BATCH_SIZE
    allowance_hint = Text("the portal's daily API limit is used up; the run stops here and the "
                          "cursor is kept, to resume after midnight in the portal's time zone")
    access_hint = Text("the token lacks a scope; grant the app {scopes}", scopes=_SCOPES)
    login_hint = Text("HUBSPOT_ACCESS_TOKEN is invalid, expired or revoked: set the private "
                      "app's current token (or a fresh OAuth token)")
    renewed_hint = login_hint

    def __init__(self, mapping: Mapping, access_token: str | Callable[[], str], *,
                 base_url: str = API_BASE, retry: RetryPolicy | None = None,
                 session: requests.Session | None = None, timeout: float = 60.0,
                 won: Sequence[str] = ("Closed Won",),
                 lost: Sequence[str] = ("Closed Lost", "Cancelled"),
                 stage_labels: MappingABC[str, str] | None = None,
                 search_interval: float = SEARCH_INTERVAL,
                 quota_total_percent: float = 80.0, quota_run_percent: float = 25.0,
                 secrets: Collection[str] = ()) -> None:
        token = access_token if isinstance(access_token, str) else ""
        super().__init__(mapping, retry=retry, timeout=timeout, secrets=[*secrets, token],
                         quota_total_percent=quota_total_percent,
                         quota_run_percent=quota_run_percent)
        if mapping.crm != "hubspot":
            raise ConfigurationError(Text("{file}: crm is '{crm}', not 'hubspot'",
                                          file=mapping.source or Text("the mapping"),
                                          crm=mapping.crm))
        if not won or not lost:
            raise ConfigurationError(Text("HubSpot needs the rules' closed-won and closed-lost "
                                          "stage values (closed: won: [...], lost: [...])"))
        self._base = base_url.rstrip("/")
        self._http = session or requests.Session()
        self._names = StageNames(tuple(won), tuple(lost),
                                 {k.casefold(): v for k, v in (stage_labels or {}).items()})
        self._search_interval = search_interval
        self._token_source = access_token if callable(access_token) else None
        self._token = token
        self._properties: dict[str, dict[str, Any]] | None = None    # deal properties, by name
        self._stages: dict[str, Stage] | None = None                 # by stage id
        self._references = References(self._request, list(mapping.fields.values()))
        self._deal_pipeline: dict[str, str] = {}                     # deal id -> pipeline id
        self._unknown_stages: set[str] = set()                       # ids read again once
        self._daily: tuple[int, int] | None = None      # (allowed, remaining) today
        self._daily_at = 0.0                            # when the headers said so
        self._burst: tuple[int, float] | None = None    # (remaining, window seconds)
        self._last_search: float | None = None
        self._window = search.Window(partial(self._search, what=Text("the poll search")),
                                     self._record, mapping.modified_field, mapping.id_field,
                                     self._stamp)
        self.window_moves = 0
        bad = [name for name in (mapping.object, mapping.id_field, mapping.modified_field)
               if not _NAME.match(name)]
        bad += [path for path in mapping.fields.values()
                if not all(_NAME.match(p) for p in path.split(".")) or path.count(".") > 1]
        if bad:
            raise ConfigurationError(Text("{file}: not HubSpot property names (or "
                                          "property.attribute): {names}", file=self._where,
                                          names=", ".join(map(repr, bad))))

    @classmethod
    def from_settings(cls, settings: Any, mapping: Mapping, *, closed: Closed | None = None,
                      **kwargs: Any) -> HubSpotCrm:
        """The adapter from the settings (HUBSPOT_ACCESS_TOKEN) and, when given, the rules'
        `closed` states."""
        token: Any = getattr(settings, "hubspot_access_token", None)
        text = token.get_secret_value() if hasattr(token, "get_secret_value") else token
        if not text:
            raise ConfigurationError(Text(
                "HUBSPOT_ACCESS_TOKEN is not set: create a private app in HubSpot (Settings > "
                "Integrations > Private apps) with the scopes {scopes}, and set its token",
                scopes=_SCOPES))
        if closed is not None and closed.won and closed.lost:
            won, lost = closed_values(closed)
            kwargs.setdefault("won", won)
            kwargs.setdefault("lost", lost)
        secrets = settings.secrets() if hasattr(settings, "secrets") else []
        for share in ("total", "run"):
            value = getattr(settings, f"hubspot_quota_{share}_percent", None)
            if value is not None:
                kwargs.setdefault(f"quota_{share}_percent", value)
        return cls(mapping, str(text), secrets=secrets, **kwargs)

    # --- the port -------------------------------------------------------------------------

    def describe(self) -> dict[str, FieldType]:
        """Check the mapping against the deal properties (and the pipelines, and the owners or
        company properties a path reads) and return each canonical field's type."""
        m = self._mapping
        props = self._deal_properties()
        problems: list[Text] = []
        for label, name in ((Text("the record id"), m.id_field),
                            (Text("the poll cursor"), m.modified_field)):
            if name not in props:
                problems.append(Text("{field} ({path}): {problem}", field=label, path=name,
                                     problem=self._no_property(name, props)))
        types: dict[str, FieldType] = {}
        company_attributes: dict[str, str] = {}
        for canonical, path in m.fields.items():
            head, _, attribute = path.partition(".")
            prop = props.get(head)
            if prop is None:
                problems.append(Text("{field} ({path}): {problem}", field=repr(canonical),
                                     path=path, problem=self._no_property(head, props)))
                continue
            if not attribute:
                types[canonical] = field_type(prop, m.type_of(canonical))
                continue
            target = reference(prop)
            if target == "OWNER":
                if attribute not in OWNER_ATTRIBUTES:
                    problems.append(Text(
                        "'{field}' ({path}): an owner has no '{attribute}'{hint}; use one of "
                        "{attributes}", field=canonical, path=path, attribute=attribute,
                        hint=did_you_mean(attribute, OWNER_ATTRIBUTES),
                        attributes=", ".join(OWNER_ATTRIBUTES)))
            elif target == "COMPANY":
                company_attributes[canonical] = attribute
            else:
                problems.append(Text("'{field}' ({path}): '{property}' does not reference an "
                                     "owner or a company, so it has no attributes to read",
                                     field=canonical, path=path, property=head))
            types[canonical] = m.type_of(canonical) or TEXT
        if company_attributes:
            companies = self._object_properties("companies")
            for canonical, attribute in company_attributes.items():
                if attribute not in companies:
                    problems.append(Text(
                        "'{field}' ({path}): companies have no property '{attribute}'{hint}",
                        field=canonical, path=m.fields[canonical], attribute=attribute,
                        hint=did_you_mean(attribute, list(companies))))
        for name in m.writeback:
            if name not in m.fields:
                continue  # the mapping file's own check
            path = m.fields[name]
            prop = props.get(path)
            if "." in path:
                problems.append(Text("writeback '{field}' ({path}) is a property of a related "
                                     "record; only the {object}' own properties can be written",
                                     field=name, path=path, object=m.object))
            elif prop is None:
                continue  # reported above
            elif prop.get("calculated") or str(prop.get("fieldType", "")).startswith(
                    "calculation"):
                problems.append(Text("writeback '{field}' ({path}) is calculated by HubSpot: "
                                     "map it to a custom property the connector can write",
                                     field=name, path=path))
            elif (prop.get("modificationMetadata") or {}).get("readOnlyValue"):
                problems.append(Text("writeback '{field}' ({path}) is read-only in HubSpot: map "
                                     "it to a custom property the connector can write",
                                     field=name, path=path))
            elif prop.get("numberDisplayHint") == "probability" and \
                    (m.type_of(name) or TEXT).kind == "percent":
                problems.append(Text("writeback '{field}' ({path}) holds a fraction 0..1 and the "
                                     "rules write a percentage 0..100: map it to a custom "
                                     "number property", field=name, path=path))
        if STAGE_PROPERTY in m.fields.values():
            self._pipelines()
        heads = {p.partition(".")[0] for p in m.fields.values() if "." in p}
        if any(reference(props.get(h, {}), h) == "OWNER" for h in heads):
            self._references.owners()
        if problems:
            raise ConfigurationError(listed([Text("{file}: {problem}", file=self._where,
                                                  problem=p) for p in problems], "\n"))
        return types

    def changed(self, since: dt.datetime | None, until: dt.datetime) -> Iterator[list[Record]]:
        """Pages of up to 200 deals modified in [since, until], oldest first, window by window
        (see connector.crm.hubspot.search)."""
        self._metadata()
        low = utc(since)
        high = utc(until)
        assert high is not None
        while True:
            window, last, more = self._window.read(low, high)
            for page in chunks(window, self.page_size):
                yield self._finish(page)
            if not more:
                return
            self.window_moves += 1
            first = self._stamp(window[0]) if window else None
            if last is None or first == last:
                # The whole window is one instant (a bulk update stamped more than 10,000
                # deals alike): read that instant by id, then go on one millisecond later.
                stamp = last if last is not None else (low or EPOCH)
                for page in chunks(self._window.instant(stamp), self.page_size):
                    yield self._finish(page)
                low = stamp + MS
            else:
                low = last
            log.info("HubSpot: the search window moves to %s (the 10,000-results ceiling)",
                     low.isoformat())

    def open_records(self, field: str, closed: list[str]) -> Iterator[list[Record]]:
        """Pages of 200 deals whose `field` holds none of the `closed` values, by id: what the
        daily sweep re-evaluates. For the stage, the closed values are the rules' labels and
        every stage HubSpot marks closed is left out too. Paged by id, so neither the
        10,000-results ceiling nor the sweep's own writes between pages can make it skip."""
        self._metadata()
        wanted = {c.casefold() for c in closed}
        if field == STAGE_PROPERTY:
            values = sorted(s.id for s in self._pipelines().values()
                            if s.closed or (self.stage_label(s.id) or "").casefold() in wanted)
        else:
            values = sorted(dict.fromkeys(closed))
        filters = [{"propertyName": field, "operator": "NOT_IN", "values": values}] \
            if values else []
        for page in search.by_id(partial(self._search, what=Text("the sweep")), self._record,
                                 self._mapping.id_field, filters):
            yield self._finish(page)

    def fetch(self, ids: list[str]) -> list[Record]:
        """The deals with these ids: one batch read per 100 ids; unknown ids are left out."""
        self._metadata()
        unique = list(dict.fromkeys(str(i).strip() for i in ids if str(i).strip().isdigit()))
        records: list[Record] = []
        for chunk in chunks(unique, BATCH_SIZE):
            answer = self._request(
                Text("reading deals by id"), "POST", f"/crm/v3/objects/{self._mapping.object}"
                "/batch/read", kind="batch_read", params={"archived": "false"},
                json_body={"properties": self._wanted(), "inputs": [{"id": i} for i in chunk]},
                accept=(200, 207))
            records += [self._record(r) for r in search.results(answer.body)]
        return self._finish(records) if records else []

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
        return self._names.label(stage.id, stage.label, stage.closed, stage.won)

    def stage_id(self, label: str, pipeline: str | None = None) -> str:
        """The stage id for a label the rules use, in the deal's pipeline when known; an
        unknown or ambiguous label fails the record (RecordError)."""
        found = [s.id for s in self._pipelines().values()
                 if (pipeline is None or s.pipeline == pipeline) and
                 (self.stage_label(s.id) or "").casefold() == label.casefold()]
        if len(set(found)) != 1:
            stages = Text("no stage") if not found else Text("{n} stages", n=len(found))
            if pipeline:
                raise RecordError(Text("{stages} of HubSpot in pipeline '{pipeline}' read as "
                                       "'{label}': the stage cannot be written", stages=stages,
                                       pipeline=pipeline, label=label))
            raise RecordError(Text("{stages} of HubSpot read as '{label}': the stage cannot be "
                                   "written", stages=stages, label=label))
        return found[0]

    # --- reading ---------------------------------------------------------------------------

    def _search(self, filters: list[dict[str, Any]], after: str | None, sort: str | None, *,
                what: str) -> dict[str, Any]:
        body: dict[str, Any] = {
            "filterGroups": [{"filters": filters}] if filters else [],
            "sorts": [{"propertyName": sort or self._mapping.modified_field,
                       "direction": "ASCENDING"}],
            "properties": self._wanted(),
            "limit": self.page_size,
        }
        if after is not None:
            body["after"] = after
        answer = self._request(what, "POST",
                               f"/crm/v3/objects/{self._mapping.object}/search", kind="search",
                               json_body=body)
        return answer.body if isinstance(answer.body, dict) else {}

    def _stamp(self, record: Record) -> dt.datetime | None:
        return parse_instant(record.get(self._mapping.modified_field))

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
            record[name] = incoming(value, (meta.get(name) or {}).get("type"))
        rid = str(result.get("id") or props.get(self._mapping.id_field) or "")
        record[self._mapping.id_field] = rid
        if STAGE_PROPERTY in record:
            pipeline = record.get(PIPELINE_PROPERTY)
            if pipeline:
                self._deal_pipeline[rid] = str(pipeline)
            record[STAGE_PROPERTY] = self.stage_label(record[STAGE_PROPERTY])
        return record

    def _finish(self, records: list[Record]) -> list[Record]:
        return self._references.fill(records, self._properties or {})

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
        answer = self._request(Text("reading the {object} properties", object=object_type),
                               "GET",
                               f"/crm/v3/properties/{object_type}", kind="properties",
                               params={"archived": "false"})
        return {str(p.get("name")): p for p in search.results(answer.body)}

    def _pipelines(self) -> dict[str, Stage]:
        if self._stages is None:
            answer = self._request(Text("reading the pipelines"), "GET",
                                   f"/crm/v3/pipelines/{self._mapping.object}",
                                   kind="pipelines")
            self._stages = stages_of(search.results(answer.body))
        return self._stages

    # --- write-back ------------------------------------------------------------------------

    def _outgoing(self, record_id: str, name: str, value: Any) -> str:
        """A value as HubSpot takes it: a string; a stage label as its id in the deal's
        pipeline."""
        if name == STAGE_PROPERTY and isinstance(value, str) and value:
            return self.stage_id(value, self._deal_pipeline.get(record_id))
        prop = (self._properties or {}).get(name) or {}
        return hubspot_value(value, str(prop.get("type") or ""))

    def _write_call(self, chunk: list[tuple[str, dict[str, Any]]]) -> dict[str, WriteResult]:
        """Up to 100 deals in one call. A whole batch refused for a record's data (HubSpot
        names no id then) is split in two, until the record at fault fails alone."""
        answer = self._request(
            WRITE_BACK, "POST", f"/crm/v3/objects/{self._mapping.object}/batch/update",
            kind="batch_update", accept=(200, 207, *_RECORD_ERRORS),
            json_body={"inputs": [{"id": rid, "properties": props} for rid, props in chunk]})
        results: dict[str, WriteResult] = {}
        if answer.status in _RECORD_ERRORS:
            code, message = _error_of(answer.body, answer.status)
            if _PROPERTY_GONE.search(message):
                # Not one deal's value: the property itself. Every deal would fail alike, and
                # splitting the batch would only spend calls finding that out.
                raise FatalError(self._scrubbed(Text(
                    "HubSpot refused the write-back ({code}: {reason}): a writeback property no "
                    "longer exists or is read-only; check {file} against the deal properties "
                    "(the run stops, the cursor is kept)", code=code, reason=message,
                    file=self._where)))
            named = [rid for rid, _ in chunk if rid in set(_error_ids(answer.body))]
            if len(chunk) == 1 or named:
                at_fault = named or [chunk[0][0]]
                for rid in at_fault:
                    results[rid] = WriteResult(rid, False, code, self._scrub(message))
                rest = [u for u in chunk if u[0] not in results]
                if rest:
                    results.update(self._write_call(rest))
                return results
            half = len(chunk) // 2
            results.update(self._write_call(chunk[:half]))
            results.update(self._write_call(chunk[half:]))
            return results
        body = answer.body if isinstance(answer.body, dict) else {}
        for error in body.get("errors") or []:
            if not isinstance(error, dict):
                continue
            code, message = _error_of(error, answer.status)
            for rid in _error_ids(error):
                results[rid] = WriteResult(rid, False, code, self._scrub(message))
        done = {str(r.get("id")) for r in search.results(body)}
        for rid, _ in chunk:
            if rid in results:
                continue
            results[rid] = WriteResult(rid, True) if rid in done else WriteResult(
                rid, False, "NO_RESULT", Text("HubSpot returned no result for this deal"))
        return results

    # --- for connector.history, which reads what the port does not ------------------------

    def post(self, what: str, path: str, body: Any, *, kind: str) -> Any:
        """One POST through this adapter's token, limits and retry policy: the JSON answer."""
        return self._request(what, "POST", path, kind=kind, json_body=body,
                             accept=(200, 207)).body

    def incoming(self, name: str, value: Any) -> Any:
        """A property's value as records carry it: dates as ISO 8601, a stage as its label."""
        self._metadata()
        value = incoming(value, ((self._properties or {}).get(name) or {}).get("type"))
        return self.stage_label(value) if name == STAGE_PROPERTY else value

    # --- calls -----------------------------------------------------------------------------

    def _request(self, what: str, method: str, path: str, *, kind: str,
                 json_body: Any = None, params: dict[str, str] | None = None,
                 accept: tuple[int, ...] = (200,)) -> _Answer:
        """One API call, retried by the policy."""
        return self._call(what, partial(self._attempt, what, method, path, kind, json_body,
                                        params, accept))

    def _attempt(self, what: str, method: str, path: str, kind: str, json_body: Any,
                 params: dict[str, str] | None, accept: tuple[int, ...]) -> _Answer:
        self._pace(kind)
        token = self._current_token()
        response = self._http.request(
            method, self._base + path, json=json_body, params=params, timeout=self._timeout,
            headers={"Authorization": f"Bearer {token}", "Accept": "application/json"})
        if kind == "search":
            self._last_search = self._retry.clock()
        self._read_limits(response.headers)
        body = _json(response)
        if response.status_code == 401 and self._token_source is not None:
            code, message = _error_of(body, 401)
            raise SessionExpired(self._scrub(f"HTTP 401, {code}: {message}"))
        if response.status_code in accept:
            return _Answer(response.status_code, body, response.headers)
        raise self._error(what, response.status_code, body, response.headers)

    def _log_in(self) -> None:
        self._current_token()

    def _renew(self) -> None:
        log.info("HubSpot: the access token was refused; getting a fresh one")
        self._token = ""

    def _current_token(self) -> str:
        if not self._token and self._token_source is not None:
            self.auth_calls += 1
            try:
                self._token = self._token_source()
            except ConnectorError:
                raise
            except Exception as exc:  # the caller's token source: say what, never the secret
                raise FatalError(Text("could not get a HubSpot access token ({error})",
                                      error=type(exc).__name__)) from None
            self._keep_secret(self._token)
        return self._token

    def _error(self, what: str, status: int, body: Any,
               headers: MappingABC[str, str]) -> ConnectorError:
        """The connector error for a HubSpot error answer; a 429 names the limit it hit."""
        code, message = _error_of(body, status)
        policy = str(body.get("policyName", "")).upper() if isinstance(body, dict) else ""
        if status == 429 and policy == "DAILY":
            return self._refused(what, status, code, message, verdict="allowance")
        wait = self._wait_after_429(policy, headers) if status == 429 else \
            retry_after_seconds(headers.get("Retry-After"))
        return self._refused(what, status, code, message, retry_after=wait)

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

    def _usage(self) -> tuple[int, int] | None:
        if self._daily is None or self._daily[0] <= 0:
            return None
        if self._retry.clock() - self._daily_at > DAILY_RECHECK:
            return None   # an hour on (a process kept warm): let one call see if it was reset
        allowed, left = self._daily
        return allowed - left, allowed

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

    def _no_property(self, name: str, props: MappingABC[str, Any]) -> Text:
        return Text("{object} have no property '{name}'{hint} (use the internal name, not the "
                    "label)", object=self._mapping.object, name=name,
                    hint=did_you_mean(name, list(props)))


# --- answers ---------------------------------------------------------------------------------

def _json(response: requests.Response) -> Any:
    if not response.content:
        return None
    try:
        return response.json(parse_float=Decimal)
    except ValueError:
        return response.text[:300]


def _error_of(body: Any, status: int) -> tuple[str, str]:
    """(category, message) of a HubSpot error: {"status": "error", "category", "message"}."""
    if isinstance(body, dict):
        code = body.get("category") or body.get("errorType") or body.get("subCategory")
        message = str(body.get("message") or "")[:500]
        return (str(code) if code else f"HTTP_{status}"), message or Text("no details")
    if isinstance(body, str) and body.strip():
        return f"HTTP_{status}", body.strip()[:300]
    return f"HTTP_{status}", Text("no details")


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




__all__ = ["API_BASE", "HubSpotCrm"]
