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

Every call goes through one retry policy (connector.retry) and one translation of
simple-salesforce's exceptions into connector.errors. No message carries a secret.
"""

from __future__ import annotations

import difflib
import json
import logging
import re
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from functools import partial
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlencode

import requests
from simple_salesforce import (
    Salesforce,
    SalesforceAuthenticationFailed,
    SalesforceError,
    SalesforceExpiredSession,
    SalesforceLogin,
    format_soql,
)
from simple_salesforce.api import DEFAULT_API_VERSION

from connector.core.mapping import Mapping
from connector.core.values import TEXT, FieldType, Kind
from connector.crm import Record, WriteResult, json_value, scrub
from connector.errors import (
    ConfigurationError,
    ConnectorError,
    FatalError,
    RetriableError,
)
from connector.retry import RetryLater, RetryPolicy, retry_after_seconds
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
RETRY_CODES = frozenset({"UNABLE_TO_LOCK_ROW"})   # per-record errors worth another try
CONFIG_CODES = frozenset({"INVALID_FIELD", "INVALID_TYPE", "MALFORMED_QUERY", "NOT_FOUND"})

# An API name, or a relationship path of them (Owner.Email, Account.Owner.Name).
_API_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*(\.[A-Za-z][A-Za-z0-9_]*)*$")

# describe's field types -> our kinds; everything else (string, picklist, id, reference,
# textarea, email, phone, url ...) is text.
# https://developer.salesforce.com/docs/atlas.en-us.api.meta/api/sforce_api_calls_describesobjects_describesobjectresult.htm
_KINDS: dict[str, Kind] = {
    "currency": "money",
    "percent": "percent",
    "double": "number",
    "int": "number",
    "long": "number",
    "date": "date",
    "datetime": "datetime",
    "boolean": "boolean",
}

_LOGIN_HINTS: dict[AuthMethod, str] = {
    "session": "set a fresh SALESFORCE_ACCESS_TOKEN",
    "password": "check SALESFORCE_USERNAME, SALESFORCE_PASSWORD and SALESFORCE_SECURITY_TOKEN "
                "(reset the token from the user's settings if the password changed), and "
                "SALESFORCE_DOMAIN ('test' for a sandbox)",
    "jwt": "check SALESFORCE_CLIENT_ID (the connected app's consumer key), SALESFORCE_USERNAME, "
           "that SALESFORCE_PRIVATE_KEY_FILE matches the app's certificate and that the user is "
           "pre-authorized for the app",
    "client_credentials": "check SALESFORCE_CLIENT_ID, SALESFORCE_CLIENT_SECRET, that "
                          "SALESFORCE_DOMAIN is your My Domain and that the connected app has "
                          "client credentials enabled with a run-as user",
}


class _RowsLocked(RetriableError):
    """Some records were locked by another transaction; they are sent again after a wait."""


def field_type(field: dict[str, Any]) -> FieldType:
    """Our type for one describe field: currency -> money at the field's scale, and so on."""
    kind = _KINDS.get(str(field.get("type", "")).lower())
    if kind is None:
        return TEXT
    scale = field.get("scale")
    if kind in ("money", "percent", "number"):
        return FieldType(kind, int(scale) if isinstance(scale, int) else None)
    return FieldType(kind)


class SalesforceCrm:
    """The CRM port on one Salesforce org, for one mapping. Logs in on the first call."""

    def __init__(self, settings: Settings, mapping: Mapping, *, retry: RetryPolicy | None = None,
                 session: requests.Session | None = None) -> None:
        self._settings = settings
        self._mapping = mapping
        self._method = salesforce_auth(settings)          # ConfigurationError before any call
        self._retry = retry or RetryPolicy()
        self._http = session or requests.Session()
        self._http.hooks["response"].append(self._on_response)
        self._version = settings.salesforce_api_version or DEFAULT_API_VERSION
        self._timeout = settings.salesforce_timeout
        self._secrets = [s for s in settings.secrets() if len(s) >= 4]
        self._headers = {"Sforce-Call-Options": f"client={settings.salesforce_client_name}"}
        self._sf: Salesforce | None = None
        self._described: dict[str, dict[str, dict[str, Any]]] = {}   # describe, by object
        self._usage: tuple[int, int] | None = None     # (used, allowed) from Sforce-Limit-Info
        self._retry_after: float | None = None          # Retry-After of the last response
        self.calls = 0
        self.auth_calls = 0
        bad = [name for name in (mapping.object, mapping.id_field, mapping.modified_field,
                                 *mapping.fields.values()) if not _API_NAME.match(name)]
        if bad:
            raise ConfigurationError(f"{self._where}: not Salesforce API names: "
                                     f"{', '.join(map(repr, bad))}")

    # --- the port -------------------------------------------------------------------------

    def describe(self) -> dict[str, FieldType]:
        """Check the mapping against Salesforce and return each canonical field's type.
        Costs one call for the object and one per related object a path goes through."""
        m = self._mapping
        problems: list[str] = []
        found: dict[str, dict[str, Any]] = {}
        paths = {"the record id": m.id_field, "the poll cursor": m.modified_field}
        paths.update({f"'{name}'": path for name, path in m.fields.items()})
        for label, path in paths.items():
            try:
                found[label] = self._resolve(m.object, path)
            except _Unresolved as why:
                problems.append(f"{label} ({path}): {why}")
        for name in m.writeback:
            crm_field = m.fields.get(name)
            field = found.get(f"'{name}'")
            if crm_field is None or field is None:
                continue  # the mapping file's own check, or a problem already reported
            if "." in crm_field:
                problems.append(f"writeback '{name}' ({crm_field}) is a field of a related record; "
                                f"only {m.object}'s own fields can be written")
            elif not field.get("updateable"):
                problems.append(f"writeback '{name}' ({crm_field}) is not updateable in Salesforce "
                                "(a formula or system field, or the integration user cannot "
                                "edit it): grant edit access or remove it from writeback")
        if problems:
            raise ConfigurationError("\n".join(f"{self._where}: {p}" for p in problems))
        return {name: field_type(found[f"'{name}'"]) for name in m.fields}

    def changed(self, since: datetime | None, until: datetime) -> Iterator[list[Record]]:
        """Pages of up to 2,000 records modified in [since, until], by modification time then
        id. SOQL datetimes have whole seconds: both bounds are floored, so a record at the edge
        is read again next time rather than skipped."""
        yield from self._pages("the poll query", self.changed_soql(since, until))

    def open_records(self, field: str, closed: list[str]) -> Iterator[list[Record]]:
        """Pages of 2,000 records whose `field` is none of the `closed` values, by id."""
        m = self._mapping
        where = " WHERE {field:literal} NOT IN {closed}" if closed else ""
        soql = format_soql("SELECT {fields:literal} FROM {object:literal}" + where
                           + " ORDER BY {id:literal}", fields=self._select(), object=m.object,
                           field=field, closed=list(closed), id=m.id_field)
        yield from self._pages("the sweep query", soql)

    def _pages(self, what: str, soql: str) -> Iterator[list[Record]]:
        page = self._request(what, partial(self._query, soql))
        while True:
            records = [_plain(r) for r in page.get("records", [])]
            if records:
                yield records
            if page.get("done", True) or not page.get("nextRecordsUrl"):
                return
            page = self._request(f"the next page of {what}",
                                 partial(self._query_more, page["nextRecordsUrl"]))

    def fetch(self, ids: list[str]) -> list[Record]:
        """The records with these ids: one query per 2,000 ids, five queries a call."""
        unique = list(dict.fromkeys(i for i in ids if i))
        records: list[Record] = []
        for group in _chunks(_chunks(unique, IDS_PER_QUERY), PER_COMPOSITE):
            subrequests = [
                {"method": "GET", "referenceId": f"ids{n}",
                 "url": f"/services/data/v{self._version}/query/?"
                        + urlencode({"q": self.fetch_soql(chunk)})}
                for n, chunk in enumerate(group)]
            for body in self._request("fetching records by id",
                                      partial(self._queries, subrequests)):
                records += [_plain(r) for r in body.get("records", [])]
                while not body.get("done", True) and body.get("nextRecordsUrl"):
                    # A page can hold fewer than 2,000 rows when they are wide.
                    body = self._request("fetching records by id",
                                         partial(self._query_more, body["nextRecordsUrl"]))
                    records += [_plain(r) for r in body.get("records", [])]
        return records

    def query_pages(self, what: str, soql: str) -> Iterator[list[Record]]:
        """Pages of up to 2,000 rows of any SOQL query, through this adapter's session, retry
        policy and errors (connector.history reads the opportunities' history with it)."""
        return self._pages(what, soql)

    def write(self, updates: list[tuple[str, dict[str, Any]]]) -> list[WriteResult]:
        """Write the given fields of each record: 1,000 records a call. Records Salesforce
        refuses (a validation rule ...) fail alone; locked rows are sent again after a wait."""
        m = self._mapping
        allowed = {m.fields[n].casefold() for n in m.writeback if n in m.fields}
        merged: dict[str, dict[str, Any]] = {}
        for record_id, fields in updates:
            refused = sorted(f for f in fields if f.casefold() not in allowed)
            if refused:
                raise ValueError(f"not writeback fields of {self._where}: {', '.join(refused)}")
            merged.setdefault(record_id, {}).update(fields)  # one record, one entry
        results: dict[str, WriteResult] = {rid: WriteResult(rid, True)
                                           for rid, fields in merged.items() if not fields}
        todo = [(rid, fields) for rid, fields in merged.items() if fields]
        for chunk in _chunks(todo, COLLECTION_SIZE * PER_COMPOSITE):
            results.update(self._write_call(chunk))
        failed = sum(not r.ok for r in results.values())
        if todo:
            log.info("Salesforce: wrote %d records, %d failed", len(todo) - failed, failed)
        return [results[rid] for rid, _ in updates]

    # --- SOQL ------------------------------------------------------------------------------

    def changed_soql(self, since: datetime | None, until: datetime) -> str:
        """The poll's SOQL; every value goes through format_soql, names were checked."""
        m = self._mapping
        where = "{modified:literal} <= {until}"
        if since is not None:
            where = "{modified:literal} >= {since} AND " + where
        return format_soql(
            "SELECT {fields:literal} FROM {object:literal} WHERE " + where
            + " ORDER BY {modified:literal}, {id:literal}",
            fields=self._select(), object=m.object, modified=m.modified_field,
            id=m.id_field, since=_utc(since), until=_utc(until))

    def fetch_soql(self, ids: Sequence[str]) -> str:
        """The SOQL for some records by id, each id quoted by format_soql."""
        m = self._mapping
        return format_soql("SELECT {fields:literal} FROM {object:literal} "
                           "WHERE {id:literal} IN {ids}", fields=self._select(),
                           object=m.object, id=m.id_field, ids=list(ids))

    def _select(self) -> str:
        m = self._mapping
        names: dict[str, str] = {}
        for name in (m.id_field, m.modified_field, *m.fields.values()):
            names.setdefault(name.casefold(), name)
        return ", ".join(names.values())

    # --- calls -----------------------------------------------------------------------------

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
                raise self._error("fetching records by id", status, answer.get("body"))
            bodies.append(answer.get("body") or {})
        return bodies

    def _request(self, what: str, fn: Callable[[Salesforce], T]) -> T:
        """One API call, retried by the policy."""
        return self._retry.call(lambda: self._once(what, fn))

    def _once(self, what: str, fn: Callable[[Salesforce], T]) -> T:
        """One API call, with one new login if the session has expired; simple-salesforce's
        exceptions become connector.errors."""
        renewed = False
        while True:
            sf = self._client()
            self._check_quota()
            self.calls += 1
            self._retry_after = None
            try:
                return fn(sf)
            except SalesforceExpiredSession as exc:
                if renewed:
                    raise FatalError(self._scrub(
                        f"Salesforce refused {what} again right after a new login "
                        f"({_error_text(exc.content)}): check that the integration user is "
                        "active and has API Enabled")) from None
                self._renew()
                renewed = True
            except SalesforceError as exc:
                raise self._error(what, exc.status, exc.content) from None
            except requests.Timeout:
                raise RetriableError(f"Salesforce did not answer {what} within "
                                     f"{self._timeout:g} s") from None
            except requests.ConnectionError as exc:
                raise RetriableError(f"cannot reach Salesforce for {what} "
                                     f"({type(exc).__name__})") from None

    def _error(self, what: str, status: int, content: Any) -> ConnectorError:
        """The connector error for a Salesforce error response."""
        code, message = _first_error(content)
        detail = f"{code}: {message}" if code else (message or "no details")
        text = self._scrub(f"Salesforce refused {what} (HTTP {status}, {detail})")
        if code == "REQUEST_LIMIT_EXCEEDED":
            # https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/errorcodes.htm
            return FatalError(f"{text}: the org's API request limit is used up; the run stops "
                              "here and the cursor is kept, to resume when the 24-hour "
                              "allowance frees up")
        if status == 429 or status >= 500 or code in RETRY_CODES or code == "SERVER_UNAVAILABLE":
            return RetryLater(text, self._retry_after)
        if code in CONFIG_CODES:
            return ConfigurationError(f"{text}: check {self._where}")
        if status == 403:
            return FatalError(f"{text}: check that the integration user has API Enabled and "
                              f"access to {self._mapping.object}")
        return FatalError(text)

    def _on_response(self, response: requests.Response, *args: Any, **kwargs: Any) -> None:
        """Every response's Retry-After and Sforce-Limit-Info (api-usage=used/allowed)."""
        self._retry_after = retry_after_seconds(response.headers.get("Retry-After"))
        info = response.headers.get("Sforce-Limit-Info")
        if info:
            usage = Salesforce.parse_api_usage(info).get("api-usage")
            if usage is not None:
                self._usage = (usage.used, usage.total)

    def _check_quota(self) -> None:
        """Stop before the call that would pass the share of the org's daily allowance this
        run may use, or the share above which the org's other integrations need the rest."""
        if self._usage is None or self._usage[1] <= 0:
            return
        used, allowed = self._usage
        total_share = self._settings.salesforce_quota_total_percent
        run_share = self._settings.salesforce_quota_run_percent
        if used * 100 >= allowed * total_share:
            raise FatalError(
                f"the org has used {used:,} of its {allowed:,} daily API requests "
                f"({used / allowed:.0%}); the connector stops at {total_share:g}% "
                "(SALESFORCE_QUOTA_TOTAL_PERCENT) to leave the rest to other integrations; "
                "the cursor is kept")
        if self.calls * 100 >= allowed * run_share:
            raise FatalError(
                f"this run has made {self.calls:,} API requests, {run_share:g}% of the org's "
                f"{allowed:,} a day (SALESFORCE_QUOTA_RUN_PERCENT); it stops here and the "
                "cursor is kept")

    # --- write-back ------------------------------------------------------------------------

    def _write_call(self, chunk: list[tuple[str, dict[str, Any]]]) -> dict[str, WriteResult]:
        """Up to 1,000 records in one Composite call; the locked ones again, as the retry
        policy allows, until none is left or the policy gives up."""
        results: dict[str, WriteResult] = {}
        pending = chunk

        def attempt() -> None:
            nonlocal pending
            answers = self._once("the write-back", partial(self._post_updates, pending))
            again: list[tuple[str, dict[str, Any]]] = []
            for update, (result, retry) in zip(pending, self._save_results(pending, answers)):
                results[update[0]] = result
                if retry:
                    again.append(update)
            pending = again
            if again:
                raise _RowsLocked(f"Salesforce could not lock {len(again)} of the records to "
                                  "write (UNABLE_TO_LOCK_ROW): another process is saving them")

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
            for n, group in enumerate(_chunks(pending, COLLECTION_SIZE))]
        return self._composite(sf, subrequests)

    def _save_results(self, pending: list[tuple[str, dict[str, Any]]],
                      answers: list[dict[str, Any]]) -> list[tuple[WriteResult, bool]]:
        """(result, send again?) per pending record. SaveResults come in the records' order;
        a failed one may have no id."""
        by_ref = {a.get("referenceId"): a for a in answers}
        out: list[tuple[WriteResult, bool]] = []
        for n, group in enumerate(_chunks(pending, COLLECTION_SIZE)):
            answer = by_ref.get(f"update{n}", {})
            status = int(answer.get("httpStatusCode", 500))
            body = answer.get("body")
            if status >= 300 or not isinstance(body, list):
                # The whole collection failed: every record in it shares the error.
                code, message = _first_error(body)
                if code == "REQUEST_LIMIT_EXCEEDED":
                    raise self._error("the write-back", status, body)
                retry = status == 429 or status >= 500 or code in RETRY_CODES
                failed = WriteResult("", False, code or f"HTTP_{status}",
                                     self._scrub(message or "no details"))
                out += [(_with_id(failed, rid), retry) for rid, _ in group]
                continue
            for k, (rid, _) in enumerate(group):
                saved = body[k] if k < len(body) else None
                out.append(self._one_result(rid, saved))
        return out

    def _one_result(self, record_id: str, saved: Any) -> tuple[WriteResult, bool]:
        if not isinstance(saved, dict):
            return WriteResult(record_id, False, "NO_RESULT",
                               "Salesforce returned no result for this record"), True
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
        return WriteResult(record_id, False, code, message), code in RETRY_CODES

    # --- sessions --------------------------------------------------------------------------

    def _client(self) -> Salesforce:
        if self._sf is None:
            self._sf = self._open(self._method)
        return self._sf

    def _renew(self) -> None:
        method = salesforce_login(self._settings)
        if method is None:
            raise FatalError("the Salesforce session (SALESFORCE_ACCESS_TOKEN) has expired or "
                             "was revoked, and no credentials are set to log in again: set a "
                             "fresh SALESFORCE_ACCESS_TOKEN, or one of these to log in with: "
                             + LOGIN_HELP)
        log.info("Salesforce: the session has expired; logging in again (%s)",
                 AUTH_LABELS[method])
        self._sf = self._open(method)

    def _open(self, method: AuthMethod) -> Salesforce:
        s = self._settings
        if method == "session":
            token = s.salesforce_access_token.get_secret_value() \
                if s.salesforce_access_token else ""
            return self._salesforce(session_id=token, instance_url=s.salesforce_instance_url)
        self.auth_calls += 1
        try:
            token, instance = self._login(method)
        except SalesforceAuthenticationFailed as exc:
            code, why = exc.code, (exc.auth_message or "").strip()[:300]
            text = self._scrub(f"Salesforce refused the {AUTH_LABELS[method]} login "
                               f"({code}{': ' + why if why else ''})")
            if isinstance(code, int) and (code == 429 or code >= 500):
                raise RetryLater(f"{text}: Salesforce is busy, try again",
                                 self._retry_after) from None
            raise FatalError(f"{text}: {_LOGIN_HINTS[method]}") from None
        except requests.Timeout:
            raise RetriableError(f"the Salesforce login did not answer within "
                                 f"{self._timeout:g} s") from None
        except requests.ConnectionError as exc:
            raise RetriableError(f"cannot reach Salesforce to log in "
                                 f"({type(exc).__name__})") from None
        self._secrets.append(token)  # a session got at run time is as secret as a password
        log.info("Salesforce: logged in (%s) at %s", AUTH_LABELS[method], instance)
        return self._salesforce(session_id=token, instance=instance)

    def _login(self, method: AuthMethod) -> tuple[str, str]:
        """A new session id and instance host, through simple-salesforce's SalesforceLogin."""
        s = self._settings
        domain = s.salesforce_domain
        if method == "jwt":
            key_file = s.salesforce_private_key_file or Path()
            try:
                key = Path(key_file).read_text(encoding="utf-8")
            except OSError as exc:
                raise ConfigurationError(f"SALESFORCE_PRIVATE_KEY_FILE: cannot read {key_file} "
                                         f"({exc.strerror})") from None
            # The JWT's audience must be login or test.salesforce.com even when the token is
            # asked of a My Domain; simple-salesforce takes `domain` as the audience and
            # `instance_url` as the token host.
            # https://help.salesforce.com/s/articleView?id=xcloud.remoteaccess_oauth_jwt_flow.htm
            sandbox = domain == "test" or ".sandbox." in f".{domain}."
            own = domain not in ("login", "test")
            return SalesforceLogin(username=s.salesforce_username,
                                   consumer_key=s.salesforce_client_id, privatekey=key,
                                   domain="test" if sandbox else "login",
                                   instance_url=domain if own else None, session=self._http)
        if method == "client_credentials":
            # https://help.salesforce.com/s/articleView?id=sf.remoteaccess_oauth_client_credentials_flow.htm
            return SalesforceLogin(consumer_key=s.salesforce_client_id,
                                   consumer_secret=_secret(s.salesforce_client_secret),
                                   domain=domain, session=self._http)
        # Username-password over SOAP login(); the security token is appended to the password,
        # and may be empty when the org trusts the caller's IP range.
        return SalesforceLogin(username=s.salesforce_username,
                               password=_secret(s.salesforce_password),
                               security_token=_secret(s.salesforce_security_token),
                               sf_version=self._version, domain=domain, session=self._http)

    def _salesforce(self, **session: Any) -> Salesforce:
        # A session id only: simple-salesforce then never logs in by itself, so renewing is
        # ours to do (once) and every login is counted. Floats parse as Decimal: money is
        # never float.
        return Salesforce(version=self._version, session=self._http, parse_float=Decimal,
                          object_pairs_hook=dict, **session)

    # --- small helpers ---------------------------------------------------------------------

    @property
    def _where(self) -> str:
        return self._mapping.source or f"mappings/{self._mapping.crm}.yaml"

    def _scrub(self, text: str) -> str:
        return scrub(text, self._secrets)

    def _resolve(self, sobject: str, path: str) -> dict[str, Any]:
        """The describe field at the end of `path` (Owner.Email: Opportunity.Owner -> User
        -> Email), or _Unresolved saying what is wrong."""
        parts = path.split(".")
        for part in parts[:-1]:
            fields = self._fields_of(sobject)
            links = {str(f.get("relationshipName")).casefold(): f for f in fields.values()
                     if f.get("relationshipName")}
            link = links.get(part.casefold())
            if link is None:
                names = [str(f["relationshipName"]) for f in links.values()]
                raise _Unresolved(f"{sobject} has no relationship '{part}'"
                                  f"{_did_you_mean(part, names)}")
            if link["relationshipName"] != part:
                raise _Unresolved(f"Salesforce spells it '{link['relationshipName']}'")
            targets = link.get("referenceTo") or []
            if not targets:
                raise _Unresolved(f"{sobject}.{part} points to no object")
            # A polymorphic link (several targets) is read through its first object type.
            sobject = str(targets[0])
        fields = self._fields_of(sobject)
        field = fields.get(parts[-1].casefold())
        if field is None:
            names = [str(f.get("name")) for f in fields.values()]
            raise _Unresolved(f"{sobject} has no field '{parts[-1]}'"
                              f"{_did_you_mean(parts[-1], names)}")
        if field.get("name") != parts[-1]:
            # Records come back with Salesforce's spelling; the mapping must match it.
            raise _Unresolved(f"Salesforce spells it '{field.get('name')}'")
        return field

    def _fields_of(self, sobject: str) -> dict[str, dict[str, Any]]:
        if sobject not in self._described:
            body = self._request(f"describe {sobject}", partial(self._describe, sobject))
            self._described[sobject] = {str(f.get("name", "")).casefold(): f
                                        for f in (body or {}).get("fields", [])}
        return self._described[sobject]


class _Unresolved(Exception):
    """A mapped field that Salesforce does not have; the message says what is wrong."""


def _secret(value: Any) -> str:
    return value.get_secret_value() if value is not None else ""


def _with_id(result: WriteResult, record_id: str) -> WriteResult:
    return WriteResult(record_id, result.ok, result.code, result.message)


def _did_you_mean(name: str, candidates: list[str]) -> str:
    folded = {c.casefold(): c for c in candidates}
    close = difflib.get_close_matches(name.casefold(), list(folded), n=1)
    return f" (did you mean '{folded[close[0]]}'?)" if close else ""


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
    return f"{code}: {message}" if code else (message or "no details")


def _plain(value: Any) -> Any:
    """A record without Salesforce's `attributes` (type and URL), at every level."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items() if k != "attributes"}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _utc(value: datetime | None) -> datetime | None:
    """A naive datetime is taken as UTC (format_soql would take it as local time)."""
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def _json_default(value: Any) -> Any:
    converted = json_value(value)
    if converted is value:
        raise TypeError(f"a {type(value).__name__} cannot be written to Salesforce")
    return converted


def _chunks(items: Sequence[T], size: int) -> list[list[T]]:
    return [list(items[i:i + size]) for i in range(0, len(items), size)]


__all__ = ["IDS_PER_QUERY", "PAGE_SIZE", "SalesforceCrm", "field_type"]
