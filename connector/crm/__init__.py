"""The CRM port: what the pipeline asks of a CRM. Each CRM is a subpackage (`salesforce`,
`hubspot`) whose adapter fills in the shared algorithm of `connector.crm._base.CrmAdapter`, and
whose `from_settings(settings, mapping, closed)` builds it; `open_crm` picks the subpackage the
mapping names.

Records travel raw, as the CRM's API returns them (nested relationships kept, Salesforce's
`attributes` dropped); `connector.core.mapping.Mapping.read` turns them into canonical values.
Writes go by record id with CRM field names and JSON-ready values (`json_value`).

Errors are connector.errors: ConfigurationError (the mapping or the credentials are wrong),
RetriableError (the CRM is busy or down, after the retry policy gave up), FatalError (stop the
run and keep the cursor: API allowance used up, session refused).
"""

from __future__ import annotations

import datetime as dt
import importlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from connector.core.values import FieldType
from connector.errors import ConfigurationError, Text

if TYPE_CHECKING:
    from connector.core.mapping import Mapping
    from connector.core.ruleset import Closed

Record = dict[str, Any]


@dataclass(frozen=True)
class WriteResult:
    """What became of one record's write: `ok`, or the CRM's error `code` and `message`."""

    id: str
    ok: bool
    code: str | None = None
    message: str | None = None


@runtime_checkable
class Crm(Protocol):
    """A CRM the connector reads opportunities from and writes computed fields back to."""

    page_size: int
    """Records a read page holds: the pipeline fetches the ids a webhook names this many at
    a time."""

    write_size: int
    """Records one write call takes: the pipeline fills each call this full when it can."""

    @property
    def calls(self) -> int:
        """API calls made so far (logins not included: see `auth_calls`)."""
        ...

    @property
    def auth_calls(self) -> int:
        """Logins made so far."""
        ...

    def describe(self) -> dict[str, FieldType]:
        """Canonical name -> type from the CRM's metadata, after checking that every mapped
        field exists and every writeback field can be written (ConfigurationError else)."""
        ...

    def changed(self, since: dt.datetime | None, until: dt.datetime) -> Iterator[list[Record]]:
        """Pages of the records modified in [since, until] (everything up to `until` when
        `since` is None), ordered by modification time, then id."""
        ...

    def open_records(self, field: str, closed: list[str]) -> Iterator[list[Record]]:
        """Pages of every record whose `field` (a CRM field) holds none of the `closed` values:
        what the daily sweep re-evaluates."""
        ...

    def fetch(self, ids: list[str]) -> list[Record]:
        """The records with these ids (the ones a webhook named); unknown ids are left out."""
        ...

    def write(self, updates: list[tuple[str, dict[str, Any]]]) -> list[WriteResult]:
        """Write each record's changed fields; one result per update, in order. A record the
        CRM refuses fails alone."""
        ...


def open_crm(settings: Any, mapping: Mapping, closed: Closed | None) -> Crm:
    """The adapter of the CRM the mapping names (`crm: hubspot` -> connector.crm.hubspot), built
    from the settings; the rules' `closed` states tell it the closed-won and closed-lost values."""
    if mapping.labels:
        raise ConfigurationError(Text(
            "{file} names export column labels (labels: true): it reads exports only; the CRM "
            "needs a mapping of API names", file=mapping.source or Text("the mapping")))
    name = f"{__name__}.{mapping.crm}"
    try:
        package = importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name != name:
            raise   # the adapter is there; something it imports is not installed
        raise ConfigurationError(Text("no adapter for the CRM '{crm}' yet", crm=mapping.crm)
                                 ) from None
    crm: Crm = package.from_settings(settings, mapping, closed)
    return crm


def scrub(text: str, secrets: Iterable[str]) -> str:
    """The text with every secret replaced: messages may quote a server's answer, and an
    answer may echo a token."""
    for secret in secrets:
        text = text.replace(secret, "***")
    return text


def json_value(value: object) -> object:
    """A value as the CRM's JSON takes it: Decimal -> number, date and datetime -> ISO 8601."""
    if isinstance(value, Decimal):
        integral = value == value.to_integral_value()
        return int(value) if integral else float(value)
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    return value


__all__ = ["Crm", "Record", "WriteResult", "json_value", "open_crm", "scrub"]
