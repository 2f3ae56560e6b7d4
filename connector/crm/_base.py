"""What every CRM adapter shares: the algorithm of a call and of a write, written once.

An adapter is a subclass of `CrmAdapter` that says how its CRM is reached and read:

    name, account                 "Salesforce", "org": how messages name the CRM and the account
    page_size, write_size         records per read page, records per write call (the floor)
    settings_prefix               SALESFORCE, HUBSPOT: the quota settings' prefix in messages
    describe, changed, open_records, fetch     reading, in the CRM's own query language
    _write_call(chunk)            one write call of at most `write_size` records
    _usage()                      (used, allowed) of the account's daily API allowance, if known
    _log_in(), _renew()           a session before a call; a new one after `SessionExpired`
    _verdict(status, code)        which branch of the error tree a refusal is (a default here)
    _outgoing(record_id, name, value)          a value as the CRM takes it (default: as given)

and the base runs the rest: every call through one retry policy with one renewal of the
session, the quota checked before each call, the error tree, secrets scrubbed from every
message, and `write`: merge, check the names, convert, chunk, one result per update.
"""

from __future__ import annotations

import datetime as dt
import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Sequence
from collections.abc import Mapping as MappingABC
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal, TypeVar

import requests

from connector.core.findings import did_you_mean
from connector.core.mapping import Mapping
from connector.core.values import FieldType
from connector.crm import Record, WriteResult, scrub
from connector.errors import (
    ConfigurationError,
    ConnectorError,
    FatalError,
    RecordError,
    RetriableError,
    Text,
)
from connector.retry import RetryPolicy

if TYPE_CHECKING:
    from connector.core.ruleset import Closed

log = logging.getLogger(__name__)

T = TypeVar("T")

# Which branch of connector.errors a refused call is:
#   allowance  the account's API allowance is used up: stop the run, keep the cursor
#   later      busy or down: retry after the server's delay, if it gave one
#   mapping    the mapping names something the CRM does not have
#   access     the user or the token lacks a right
#   login      the credentials are refused
#   fatal      anything else: stop the run
Verdict = Literal["allowance", "later", "mapping", "access", "login", "fatal"]


class SessionExpired(FatalError):
    """Raised inside a call when the CRM refused the session: the base logs in once more and
    tries the call again. Caught by the base's call loop; were it ever to escape, the session
    is gone and the run stops."""


class CrmAdapter(ABC):
    """The CRM port's shared algorithm; see the module's docstring for what a subclass fills in."""

    name: ClassVar[str]
    account: ClassVar[str] = "account"
    settings_prefix: ClassVar[str]
    page_size: ClassVar[int]
    write_size: ClassVar[int]
    # What the admin should do, after each kind of refusal (see Verdict).
    allowance_hint: str = Text("the run stops here and the cursor is kept")
    access_hint: str = Text("grant the integration user the rights it needs")
    login_hint: str = Text("check the credentials")
    renewed_hint: str = Text("check the credentials")

    def __init__(self, mapping: Mapping, *, retry: RetryPolicy | None = None,
                 timeout: float = 60.0, secrets: Iterable[str] = (),
                 quota_total_percent: float = 80.0, quota_run_percent: float = 25.0) -> None:
        self._mapping = mapping
        self._retry = retry or RetryPolicy()
        self._timeout = timeout
        self._secrets = [s for s in secrets if s and len(s) >= 4]
        self._quota_total = quota_total_percent
        self._quota_run = quota_run_percent
        self.calls = 0
        self.auth_calls = 0

    # --- what a CRM fills in ----------------------------------------------------------------

    @abstractmethod
    def describe(self) -> dict[str, FieldType]: ...

    @abstractmethod
    def changed(self, since: dt.datetime | None, until: dt.datetime
                ) -> Iterator[list[Record]]: ...

    @abstractmethod
    def open_records(self, field: str, closed: list[str]) -> Iterator[list[Record]]: ...

    @abstractmethod
    def fetch(self, ids: list[str]) -> list[Record]: ...

    @abstractmethod
    def _write_call(self, chunk: list[tuple[str, dict[str, Any]]]) -> dict[str, WriteResult]:
        """One write call: a result for each record of the chunk, by id."""

    def _usage(self) -> tuple[int, int] | None:
        """(used, allowed) of the account's daily API allowance, as the last answer told it."""
        return None

    def _log_in(self) -> None:
        """Get a session for the next call when there is none (a login is not an API call:
        it counts in `auth_calls`). A CRM whose credentials need no login has nothing to do."""
        return None

    def _renew(self) -> None:
        raise FatalError(Text("the {crm} session has expired: {hint}", crm=self.name,
                              hint=self.renewed_hint))

    def _outgoing(self, record_id: str, name: str, value: Any) -> Any:
        """A value as the CRM takes it; a RecordError fails that record alone."""
        return value

    def _verdict(self, status: int, code: str | None) -> Verdict:
        if status == 429 or status >= 500:
            return "later"
        if status == 401:
            return "login"
        if status == 403:
            return "access"
        if status in (400, 404):
            return "mapping"
        return "fatal"

    # --- writing ----------------------------------------------------------------------------

    def write(self, updates: list[tuple[str, dict[str, Any]]]) -> list[WriteResult]:
        """Write each record's fields, `write_size` records a call; one result per update, in
        order. A field that is not a writeback field is a ConfigurationError (nothing is
        written); a value the CRM cannot take fails its record alone."""
        names = self._writeback_names()
        merged: dict[str, dict[str, Any]] = {}
        for record_id, fields in updates:
            spelled = {self._writeback_name(f, names): v for f, v in fields.items()}
            merged.setdefault(str(record_id), {}).update(spelled)   # one record, one entry
        results: dict[str, WriteResult] = {}
        todo: list[tuple[str, dict[str, Any]]] = []
        for rid, fields in merged.items():
            try:
                todo.append((rid, {n: self._outgoing(rid, n, v) for n, v in fields.items()}))
            except RecordError as exc:
                results[rid] = WriteResult(rid, False, "INVALID_VALUE", self._scrubbed(exc.text))
        for rid in [rid for rid, fields in todo if not fields]:
            results[rid] = WriteResult(rid, True)
        todo = [(rid, fields) for rid, fields in todo if fields]
        for chunk in chunks(todo, self.write_size):
            results.update(self._write_call(chunk))
        if todo:
            failed = sum(not results[rid].ok for rid, _ in todo)
            log.info("%s: wrote %d records, %d failed", self.name, len(todo) - failed, failed)
        return [results[str(rid)] for rid, _ in updates]

    def _writeback_names(self) -> dict[str, str]:
        m = self._mapping
        return {m.fields[n].casefold(): m.fields[n] for n in m.writeback if n in m.fields}

    def _writeback_name(self, name: str, names: dict[str, str]) -> str:
        """The mapping's spelling of a writeback field; names match in any case."""
        found = names.get(name.casefold())
        if found is None:
            raise ConfigurationError(Text("{file}: '{name}' is not a writeback field{hint}",
                                          file=self._where, name=name,
                                          hint=did_you_mean(name, list(names.values()))))
        return found

    # --- calls ------------------------------------------------------------------------------

    def _call(self, what: str, attempt: Callable[[], T]) -> T:
        """One API call, retried by the policy."""
        return self._retry.call(lambda: self._once(what, attempt))

    def _once(self, what: str, attempt: Callable[[], T]) -> T:
        """One try of a call, with one new login if the session has expired; the transport's
        failures become connector.errors."""
        renewed = False
        while True:
            self._log_in()
            self._check_quota()
            self.calls += 1
            try:
                return attempt()
            except SessionExpired as exc:
                if renewed:
                    raise FatalError(self._scrubbed(Text(
                        "{crm} refused {what} again right after a new login ({reason}): {hint}",
                        crm=self.name, what=what, reason=str(exc), hint=self.renewed_hint))
                    ) from None
                self._renew()
                renewed = True
            except requests.Timeout:
                raise RetriableError(Text("{crm} did not answer {what} within {seconds} s",
                                          crm=self.name, what=what,
                                          seconds=format(self._timeout, "g"))) from None
            except requests.ConnectionError as exc:
                raise RetriableError(Text("cannot reach {crm} for {what} ({error})",
                                          crm=self.name, what=what,
                                          error=type(exc).__name__)) from None

    def _refused(self, what: str, status: int, code: str | None, message: str, *,
                 retry_after: float | None = None, verdict: Verdict | None = None
                 ) -> ConnectorError:
        """The connector error for a refused call: `verdict`, or the adapter's `_verdict`."""
        detail = f"{code}: {message}" if code else (message or Text("no details"))
        text = self._scrubbed(Text("{crm} refused {what} (HTTP {status}, {detail})",
                                   crm=self.name, what=what, status=status, detail=detail))
        verdict = verdict or self._verdict(status, code)
        if verdict == "later":
            return RetriableError(text, retry_after)
        if verdict == "mapping":
            return ConfigurationError(Text("{refused}: check {file}", refused=text,
                                           file=self._where))
        hint = {"allowance": self.allowance_hint, "access": self.access_hint,
                "login": self.login_hint}.get(verdict)
        return FatalError(Text("{refused}: {hint}", refused=text, hint=hint) if hint else text)

    def _check_quota(self) -> None:
        """Stop before the call that would pass the share of the account's daily allowance
        this run may use, or the share above which its other integrations need the rest."""
        usage = self._usage()
        if usage is None or usage[1] <= 0:
            return
        used, allowed = usage
        prefix = self.settings_prefix
        if used * 100 >= allowed * self._quota_total:
            raise FatalError(Text(
                "the {account} has used {used} of its {allowed} daily API calls ({share}); the "
                "connector stops at {limit} ({setting}) to leave the rest to other "
                "integrations; the cursor is kept", account=self.account, used=format(used, ","),
                allowed=format(allowed, ","), share=format(used / allowed, ".0%"),
                limit=format(self._quota_total, "g") + "%",
                setting=prefix + "_QUOTA_TOTAL_PERCENT"))
        if self.calls * 100 >= allowed * self._quota_run:
            raise FatalError(Text(
                "this run has made {calls} API calls, {limit} of the {account}'s {allowed} a "
                "day ({setting}); it stops here and the cursor is kept",
                calls=format(self.calls, ","), limit=format(self._quota_run, "g") + "%",
                account=self.account, allowed=format(allowed, ","),
                setting=prefix + "_QUOTA_RUN_PERCENT"))

    # --- small helpers ----------------------------------------------------------------------

    @property
    def _where(self) -> str:
        return self._mapping.source or f"mappings/{self._mapping.crm}.yaml"

    def _scrub(self, text: str) -> str:
        return scrub(text, self._secrets)

    def _scrubbed(self, text: str) -> str:
        """A message whose values may quote a server's answer: each is scrubbed as `_scrub`
        scrubs a whole text (the message's own words hold no secret)."""
        if not isinstance(text, Text):
            return self._scrub(text)
        return Text(text.template, **{k: self._scrubbed(v) if isinstance(v, str) else v
                                      for k, v in text.values.items()})

    def _keep_secret(self, secret: str) -> None:
        """A token got at run time is as secret as a password: scrub it from messages too."""
        if secret and len(secret) >= 4:
            self._secrets.append(secret)


def closed_values(closed: Closed) -> tuple[list[str], list[str]]:
    """The rules' closed-won and closed-lost values, in the rules' own spelling when known
    (labels), else normalised."""
    won = [x for x in closed.labels if x.strip().casefold() in closed.won]
    lost = [x for x in closed.labels if x.strip().casefold() in closed.lost]
    return won or sorted(closed.won), lost or sorted(closed.lost)


@dataclass(frozen=True)
class StageNames:
    """The closed-state rule, for a CRM whose stages say whether they close the deal: a stage
    the CRM marks closed-won reads as one of the rules' `won` values (the first, when the rules
    do not list its label), and the same for lost, so no spelling in the CRM can turn a won
    deal into an open one. `renames` maps stage ids or labels, folded, to the rules' values."""

    won: tuple[str, ...]
    lost: tuple[str, ...]
    renames: MappingABC[str, str]

    def label(self, stage_id: str, label: str, closed: bool, won: bool) -> str:
        """What the rules see for a stage."""
        label = self.renames.get(stage_id.casefold()) or \
            self.renames.get(label.casefold()) or label
        if closed:
            names = self.won if won else self.lost
            if label.casefold() not in {n.casefold() for n in names}:
                return names[0]
        return label


def chunks(items: Sequence[T], size: int) -> list[list[T]]:
    return [list(items[i:i + size]) for i in range(0, len(items), size)]


def utc(value: dt.datetime | None) -> dt.datetime | None:
    """The moment in UTC; a naive datetime is taken as UTC (never as local time)."""
    if value is None:
        return None
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


__all__ = ["CrmAdapter", "SessionExpired", "StageNames", "Verdict", "chunks", "closed_values",
           "utc"]
