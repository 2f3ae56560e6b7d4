"""The Salesforce adapter of the CRM port, on simple-salesforce: log in, check the mapping
against `describe`, poll with SOQL, fetch by id, and write back in the fewest API calls.

What it costs (https://developer.salesforce.com/docs/atlas.en-us.salesforce_app_limits_cheatsheet.meta/salesforce_app_limits_cheatsheet/salesforce_app_limits_platform_api.htm):

* a poll of N records: ceil(N / 2000) query calls, one per page of 2,000 rows;
* a fetch of N ids: ceil(N / 10000) calls, five queries of 2,000 ids to a Composite request
  (a GET query URL cannot hold 2,000 ids: URI and headers are limited to 16,384 bytes,
  https://help.salesforce.com/s/articleView?id=000386264&type=1);
* a write of M records: ceil(M / 1000) calls, five sObject Collections of 200 records to a
  Composite request, which Salesforce counts as one call
  (https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/resources_composite_composite_post.htm);
* logins are counted apart, in `auth_calls`.

The call loop, the quota, the error tree and `write` are the base's (connector.crm._base); this
module says how Salesforce answers. No message carries a secret.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from datetime import datetime
from decimal import Decimal
from functools import partial
from typing import Any, TypeVar
from urllib.parse import urlencode

import requests
from simple_salesforce import Salesforce, SalesforceError, SalesforceExpiredSession
from simple_salesforce.api import DEFAULT_API_VERSION

from connector.core.mapping import Mapping
from connector.core.values import FieldType
from connector.crm import Record, WriteResult, json_value
from connector.crm._base import CrmAdapter, SessionExpired, Verdict, chunks
from connector.crm.salesforce import auth, query
from connector.errors import (
    ConfigurationError,
    ConnectorError,
    FatalError,
    RetriableError,
    Text,
)
from connector.formatting import listed
from connector.retry import RetryPolicy, retry_after_seconds
from connector.settings import (
    AUTH_LABELS,
    LOGIN_HELP,
    AuthMethod,
    Settings,
    salesforce_auth,
    salesforce_login,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

PAGE_SIZE = 2000            # rows per query page, Salesforce's maximum
IDS_PER_QUERY = 2000        # ids in one `Id IN (...)`: ~42,000 of SOQL's 100,000 characters
COLLECTION_SIZE = 200       # records per sObject Collections request, Salesforce's maximum
PER_COMPOSITE = 5           # collections or queries per Composite request, Salesforce's maximum
RETRY_CODES = frozenset({"UNABLE_TO_LOCK_ROW", "SERVER_UNAVAILABLE"})   # worth another try
CONFIG_CODES = frozenset({"INVALID_FIELD", "INVALID_TYPE", "MALFORMED_QUERY", "NOT_FOUND"})
LOCKED = "UNABLE_TO_LOCK_ROW"   # a record's own error that is sent again after a wait


WRITE_BACK = Text("the write-back")
BY_ID = Text("fetching records by id")

class _RowsLocked(RetriableError):
    """Some records were locked by another transaction; they are sent again after a wait."""


class SalesforceCrm(CrmAdapter):
    """The CRM port on one Salesforce org, for one mapping. Logs in on the first call."""

    name = "Salesforce"
    account = "org"
    settings_prefix = "SALESFORCE"
    page_size = PAGE_SIZE
    write_size = COLLECTION_SIZE * PER_COMPOSITE
    allowance_hint = Text("the org's API request limit is used up; the run stops here and the "
                          "cursor is kept, to resume when the 24-hour allowance frees up")
    renewed_hint = Text("check that the integration user is active and has API Enabled")

    def __init__(self, settings: Settings, mapping: Mapping, *, retry: RetryPolicy | None = None,
                 session: requests.Session | None = None) -> None:
        super().__init__(mapping, retry=retry, timeout=settings.salesforce_timeout,
                         secrets=settings.secrets(),
                         quota_total_percent=settings.salesforce_quota_total_percent,
                         quota_run_percent=settings.salesforce_quota_run_percent)
        self._settings = settings
        self._method = salesforce_auth(settings)          # ConfigurationError before any call
        self._http = session or requests.Session()
        self._http.hooks["response"].append(self._on_response)
        self._version = settings.salesforce_api_version or DEFAULT_API_VERSION
        self._headers = {"Sforce-Call-Options": f"client={settings.salesforce_client_name}"}
        self._sf: Salesforce | None = None
        self._described: dict[str, dict[str, dict[str, Any]]] = {}   # describe, by object
        self._limit_info: tuple[int, int] | None = None  # (used, allowed), Sforce-Limit-Info
        self._retry_after: float | None = None            # Retry-After of the last response
        bad = [name for name in (mapping.object, mapping.id_field, mapping.modified_field,
                                 *mapping.fields.values()) if not query.API_NAME.match(name)]
        if bad:
            raise ConfigurationError(Text("{file}: not Salesforce API names: {names}",
                                          file=self._where, names=", ".join(map(repr, bad))))
        self.access_hint = Text("check that the integration user has API Enabled and access to "
                                "{object}", object=mapping.object)

    # --- the port -------------------------------------------------------------------------

    def describe(self) -> dict[str, FieldType]:
        """Check the mapping against Salesforce and return each canonical field's type.
        Costs one call for the object and one per related object a path goes through."""
        m = self._mapping
        problems: list[Text] = []
        found: dict[str, dict[str, Any]] = {}
        paths: dict[str, str] = {Text("the record id"): m.id_field,
                                 Text("the poll cursor"): m.modified_field}
        paths.update({f"'{name}'": path for name, path in m.fields.items()})
        for label, path in paths.items():
            try:
                found[label] = query.resolve(m.object, path, self._fields_of)
            except query.Unresolved as why:
                problems.append(Text("{field} ({path}): {problem}", field=label, path=path,
                                     problem=why.text))
        for name in m.writeback:
            crm_field = m.fields.get(name)
            field = found.get(f"'{name}'")
            if crm_field is None or field is None:
                continue  # the mapping file's own check, or a problem already reported
            if "." in crm_field:
                problems.append(Text("writeback '{field}' ({path}) is a field of a related "
                                     "record; only {object}'s own fields can be written",
                                     field=name, path=crm_field, object=m.object))
            elif not field.get("updateable"):
                problems.append(Text("writeback '{field}' ({path}) is not updateable in "
                                     "Salesforce (a formula or system field, or the integration "
                                     "user cannot edit it): grant edit access or remove it from "
                                     "writeback", field=name, path=crm_field))
        if problems:
            raise ConfigurationError(listed([Text("{file}: {problem}", file=self._where,
                                                  problem=p) for p in problems], "\n"))
        return {name: query.field_type(found[f"'{name}'"]) for name in m.fields}

    def changed(self, since: datetime | None, until: datetime) -> Iterator[list[Record]]:
        """Pages of up to 2,000 records modified in [since, until], by modification time then
        id. SOQL datetimes have whole seconds: both bounds are floored, so a record at the edge
        is read again next time rather than skipped."""
        yield from self.query_pages(Text("the poll query"),
                                    query.changed_soql(self._mapping, since, until))

    def open_records(self, field: str, closed: list[str]) -> Iterator[list[Record]]:
        """Pages of 2,000 records whose `field` is none of the `closed` values, by id."""
        yield from self.query_pages(Text("the sweep query"),
                                    query.open_soql(self._mapping, field, closed))

    def fetch(self, ids: list[str]) -> list[Record]:
        """The records with these ids: one query per 2,000 ids, five queries a call."""
        unique = list(dict.fromkeys(i for i in ids if i))
        records: list[Record] = []
        for group in chunks(chunks(unique, IDS_PER_QUERY), PER_COMPOSITE):
            subrequests = [
                {"method": "GET", "referenceId": f"ids{n}",
                 "url": f"/services/data/v{self._version}/query/?"
                        + urlencode({"q": query.fetch_soql(self._mapping, chunk)})}
                for n, chunk in enumerate(group)]
            for body in self._request(BY_ID,
                                      partial(self._queries, subrequests)):
                records += [query.plain(r) for r in body.get("records", [])]
                while not body.get("done", True) and body.get("nextRecordsUrl"):
                    # A page can hold fewer than 2,000 rows when they are wide.
                    body = self._request(BY_ID,
                                         partial(self._query_more, body["nextRecordsUrl"]))
                    records += [query.plain(r) for r in body.get("records", [])]
        return records

    def query_pages(self, what: str, soql: str) -> Iterator[list[Record]]:
        """Pages of up to 2,000 rows of any SOQL query, through this adapter's session, retry
        policy and errors (the poll's, and connector.history's, and the currency rates')."""
        page = self._request(what, partial(self._query, soql))
        while True:
            records = [query.plain(r) for r in page.get("records", [])]
            if records:
                yield records
            if page.get("done", True) or not page.get("nextRecordsUrl"):
                return
            page = self._request(Text("the next page of {what}", what=what),
                                 partial(self._query_more, page["nextRecordsUrl"]))

    # --- calls -----------------------------------------------------------------------------

    def _request(self, what: str, fn: Callable[[Salesforce], T]) -> T:
        """One API call, retried by the policy."""
        return self._call(what, partial(self._attempt, what, fn))

    def _attempt(self, what: str, fn: Callable[[Salesforce], T]) -> T:
        """One try: simple-salesforce's exceptions become connector.errors."""
        sf = self._client()
        self._retry_after = None
        try:
            return fn(sf)
        except SalesforceExpiredSession as exc:
            raise SessionExpired(_error_text(exc.content)) from None
        except SalesforceError as exc:
            raise self._error(what, exc.status, exc.content) from None

    def _query(self, soql: str, sf: Salesforce) -> Any:
        # batchSize is Salesforce's default too; said here so the 2,000 a page is on record.
        # https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/headers_queryoptions.htm
        headers = {**self._headers, "Sforce-Query-Options": f"batchSize={PAGE_SIZE}"}
        return sf.query(soql, headers=headers, timeout=self._timeout)

    def _query_more(self, url: str, sf: Salesforce) -> Any:
        # nextRecordsUrl is relative (/services/data/vXX.X/query/01g...-2000).
        return sf.query_more(url, identifier_is_url=True, headers=self._headers,
                             timeout=self._timeout)

    def _describe(self, sobject: str, sf: Salesforce) -> Any:
        return sf.restful(f"sobjects/{sobject}/describe", headers=self._headers,
                          timeout=self._timeout)

    def _composite(self, sf: Salesforce, subrequests: list[dict[str, Any]]
                   ) -> list[dict[str, Any]]:
        body = json.dumps({"allOrNone": False, "compositeRequest": subrequests},
                          default=_json_default)
        answer = sf.restful("composite", method="POST", data=body, headers=self._headers,
                            timeout=self._timeout)
        return list((answer or {}).get("compositeResponse", []))

    def _queries(self, subrequests: list[dict[str, Any]], sf: Salesforce
                 ) -> list[dict[str, Any]]:
        """Query subrequests' bodies, in order; a failed one fails the call."""
        by_ref = {r.get("referenceId"): r for r in self._composite(sf, subrequests)}
        bodies: list[dict[str, Any]] = []
        for sub in subrequests:
            answer = by_ref.get(sub["referenceId"], {})
            status = int(answer.get("httpStatusCode", 500))
            if status >= 300:
                raise self._error(BY_ID, status, answer.get("body"))
            bodies.append(answer.get("body") or {})
        return bodies

    def _error(self, what: str, status: int, content: Any) -> ConnectorError:
        code, message = _first_error(content)
        return self._refused(what, status, code, message, retry_after=self._retry_after)

    def _verdict(self, status: int, code: str | None) -> Verdict:
        # https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/errorcodes.htm
        if code == "REQUEST_LIMIT_EXCEEDED":
            return "allowance"
        if status == 429 or status >= 500 or code in RETRY_CODES:
            return "later"
        if code in CONFIG_CODES:
            return "mapping"
        return "access" if status == 403 else "fatal"

    def _on_response(self, response: requests.Response, *args: Any, **kwargs: Any) -> None:
        """Every response's Retry-After and Sforce-Limit-Info (api-usage=used/allowed)."""
        self._retry_after = retry_after_seconds(response.headers.get("Retry-After"))
        info = response.headers.get("Sforce-Limit-Info")
        if info:
            usage = Salesforce.parse_api_usage(info).get("api-usage")
            if usage is not None:
                self._limit_info = (usage.used, usage.total)

    def _usage(self) -> tuple[int, int] | None:
        return self._limit_info

    # --- write-back ------------------------------------------------------------------------

    def _write_call(self, chunk: list[tuple[str, dict[str, Any]]]) -> dict[str, WriteResult]:
        """Up to 1,000 records in one Composite call; the locked ones again, as the retry
        policy allows, until none is left or the policy gives up."""
        results: dict[str, WriteResult] = {}
        pending = chunk

        def attempt() -> None:
            nonlocal pending
            answers = self._once(WRITE_BACK,
                                 partial(self._attempt, WRITE_BACK,
                                         partial(self._post_updates, pending)))
            again: list[tuple[str, dict[str, Any]]] = []
            for update, (result, retry) in zip(pending, self._save_results(pending, answers)):
                results[update[0]] = result
                if retry:
                    again.append(update)
            pending = again
            if again:
                raise _RowsLocked(Text("Salesforce could not lock {n} of the records to write "
                                       "({code}): another process is saving them",
                                       n=len(again), code=LOCKED))

        try:
            self._retry.call(attempt)
        except _RowsLocked:
            pass  # the locked records keep their failed result; the caller parks them
        return results

    def _post_updates(self, pending: list[tuple[str, dict[str, Any]]], sf: Salesforce
                      ) -> list[dict[str, Any]]:
        # allOrNone false: a record that fails does not roll the others back.
        # https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/resources_composite_allornone.htm
        subrequests = [
            {"method": "PATCH", "referenceId": f"update{n}",
             "url": f"/services/data/v{self._version}/composite/sobjects",
             "body": {"allOrNone": False,
                      "records": [{"attributes": {"type": self._mapping.object}, "id": rid,
                                   **fields} for rid, fields in group]}}
            for n, group in enumerate(chunks(pending, COLLECTION_SIZE))]
        return self._composite(sf, subrequests)

    def _save_results(self, pending: list[tuple[str, dict[str, Any]]],
                      answers: list[dict[str, Any]]) -> list[tuple[WriteResult, bool]]:
        """(result, send again?) per pending record. SaveResults come in the records' order;
        a failed one may have no id."""
        by_ref = {a.get("referenceId"): a for a in answers}
        out: list[tuple[WriteResult, bool]] = []
        for n, group in enumerate(chunks(pending, COLLECTION_SIZE)):
            answer = by_ref.get(f"update{n}", {})
            status = int(answer.get("httpStatusCode", 500))
            body = answer.get("body")
            if status >= 300 or not isinstance(body, list):
                # The whole collection failed: every record in it shares the error.
                code, message = _first_error(body)
                if code == "REQUEST_LIMIT_EXCEEDED":
                    raise self._error(WRITE_BACK, status, body)
                retry = status == 429 or status >= 500 or code == LOCKED
                out += [(WriteResult(rid, False, code or f"HTTP_{status}",
                                     self._scrub(message) if message
                                     else Text("no details")), retry)
                        for rid, _ in group]
                continue
            for k, (rid, _) in enumerate(group):
                saved = body[k] if k < len(body) else None
                out.append(self._one_result(rid, saved))
        return out

    def _one_result(self, record_id: str, saved: Any) -> tuple[WriteResult, bool]:
        if not isinstance(saved, dict):
            return WriteResult(record_id, False, "NO_RESULT",
                               Text("Salesforce returned no result for this record")), True
        if saved.get("success"):
            return WriteResult(record_id, True), False
        errors = [e for e in saved.get("errors") or [] if isinstance(e, dict)]
        code = str(errors[0].get("statusCode", "UNKNOWN")) if errors else "UNKNOWN"
        parts = []
        for e in errors:
            fields = e.get("fields") or []
            where = f" ({', '.join(map(str, fields))})" if fields else ""
            parts.append(f"{e.get('message', '')}{where}".strip())
        message = self._scrub("; ".join(p for p in parts if p) or code)
        return WriteResult(record_id, False, code, message), code == LOCKED

    # --- sessions --------------------------------------------------------------------------

    def _log_in(self) -> None:
        self._client()

    def _client(self) -> Salesforce:
        if self._sf is None:
            self._sf = self._open(self._method)
        return self._sf

    def _renew(self) -> None:
        method = salesforce_login(self._settings)
        if method is None:
            raise FatalError(Text("the Salesforce session (SALESFORCE_ACCESS_TOKEN) has expired "
                                  "or was revoked, and no credentials are set to log in again: "
                                  "set a fresh SALESFORCE_ACCESS_TOKEN, or one of these to log "
                                  "in with: {ways}", ways=LOGIN_HELP))
        log.info("Salesforce: the session has expired; logging in again (%s)",
                 AUTH_LABELS[method])
        self._sf = self._open(method)

    def _open(self, method: AuthMethod) -> Salesforce:
        s = self._settings
        if method == "session":
            token = auth.secret(s.salesforce_access_token)
            return self._salesforce(session_id=token, instance_url=s.salesforce_instance_url)
        self.auth_calls += 1
        token, instance = auth.login(s, method, self._http, self._version, scrub=self._scrub,
                                     retry_after=lambda: self._retry_after)
        self._keep_secret(token)
        log.info("Salesforce: logged in (%s) at %s", AUTH_LABELS[method], instance)
        return self._salesforce(session_id=token, instance=instance)

    def _salesforce(self, **session: Any) -> Salesforce:
        # A session id only: simple-salesforce then never logs in by itself, so renewing is
        # ours to do (once) and every login is counted. Floats parse as Decimal: money is
        # never float.
        return Salesforce(version=self._version, session=self._http, parse_float=Decimal,
                          object_pairs_hook=dict, **session)

    def _fields_of(self, sobject: str) -> dict[str, dict[str, Any]]:
        if sobject not in self._described:
            body = self._request(Text("describe {object}", object=sobject),
                                 partial(self._describe, sobject))
            self._described[sobject] = {str(f.get("name", "")).casefold(): f
                                        for f in (body or {}).get("fields", [])}
        return self._described[sobject]


def _first_error(content: Any) -> tuple[str | None, str]:
    """(errorCode, message) of an error body: [{"errorCode", "message"}], an OAuth
    {"error", "error_description"}, or text."""
    if isinstance(content, list) and content and isinstance(content[0], dict):
        first = content[0]
        code = first.get("errorCode") or first.get("statusCode")
        return (str(code) if code else None), str(first.get("message", ""))[:500]
    if isinstance(content, dict):
        code = content.get("errorCode") or content.get("error")
        message = content.get("message") or content.get("error_description") or ""
        return (str(code) if code else None), str(message)[:500]
    if isinstance(content, bytes):
        content = content.decode("utf-8", "replace")
    return None, (str(content).strip()[:300] if content else "")


def _error_text(content: Any) -> str:
    code, message = _first_error(content)
    return f"{code}: {message}" if code else (message or Text("no details"))


def _json_default(value: Any) -> Any:
    converted = json_value(value)
    if converted is value:
        raise TypeError(f"a {type(value).__name__} cannot be written to Salesforce")
    return converted


__all__ = ["IDS_PER_QUERY", "PAGE_SIZE", "SalesforceCrm"]
