"""What every CRM's webhooks share: the change notice, the refusals, and the checks of a
delivery (size, headers, signature freshness, JSON). Each CRM parses its own deliveries beside
its adapter: `connector.crm.salesforce.webhooks` (Outbound Messages, signed JSON, Change Data
Capture) and `connector.crm.hubspot.webhooks` (HubSpot's signed webhooks).

Pure functions: no I/O and no clock (``now`` is passed in, in unix seconds). Every way a delivery
can be refused raises `WebhookRejected`, with the HTTP status to answer:

* 401 (`Unauthorized`): a missing, forged or stale signature or token, a timestamp too far in the
  future, another Salesforce org, or a secret that is not configured. Nothing is processed.
* 400 (`MalformedBody`): anything else wrong with the body: not UTF-8, not JSON or XML, a DTD or
  entity declaration in XML (billion laughs, external entities), the wrong shape, an id that is not
  a record id, or a body over `MAX_BODY_BYTES`.

No other exception leaves these modules for any input bytes, and no message carries a secret or
echoes what the sender sent.

Deletions (Salesforce ``DELETE``/``GAP_DELETE``, HubSpot ``*.deletion``) give no notice: there is
nothing left to compute. A change Salesforce cannot list record by record (``GAP_OVERFLOW``, or a
``recordIds`` wildcard such as ``006*``) gives a notice with ``resync=True`` and no ids: run a poll.
"""

from __future__ import annotations

import hmac
import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from connector.errors import RefusedInput

MAX_BODY_BYTES = 1_048_576
"""The largest body accepted, in bytes (1 MiB). Salesforce sends at most 100 notifications per
Outbound Message and HubSpot at most 100 events per request, far below this; anything larger is
refused with 400 before it is parsed or hashed."""

TOLERANCE_SECONDS = 300
"""How far a signed timestamp may be from ``now``, in the past or in the future."""

UNIX_SECONDS = re.compile(r"[0-9]{1,12}")
UNIX_MILLIS = re.compile(r"[0-9]{1,15}")

class WebhookRejected(RefusedInput):
    """A delivery refused: answer ``status`` (401 or 400) with ``reason``; process nothing."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason

    def __str__(self) -> str:
        return f"{self.status}: {self.reason}"


class Unauthorized(WebhookRejected):
    """401: not from who it claims to be, or too old (or too new) to trust."""

    def __init__(self, reason: str) -> None:
        super().__init__(401, reason)


class MalformedBody(WebhookRejected):
    """400: authenticated or not, the body cannot be read as what this route takes."""

    def __init__(self, reason: str) -> None:
        super().__init__(400, reason)


@dataclass(frozen=True)
class ChangeNotice:
    """Records that changed, as one delivery told it. ``object_type`` is the CRM's name of
    their object (Opportunity, deal). ``dedupe_key`` is the same for every redelivery of the
    same change and differs between changes. ``resync`` means "something changed that cannot
    be listed": poll."""

    object_type: str
    record_ids: tuple[str, ...]
    dedupe_key: str
    resync: bool = False


# -- shared checks ---------------------------------------------------------------------------


def check_size(body: object) -> bytes:
    if not isinstance(body, bytes | bytearray | memoryview):
        raise MalformedBody("the body must be raw bytes")
    data = bytes(body)
    if len(data) > MAX_BODY_BYTES:
        raise MalformedBody(f"the body is larger than {MAX_BODY_BYTES} bytes")
    return data


def header(headers: object, name: str) -> str | None:
    """The value of header ``name`` (any case), or None; two different values are refused."""
    if not isinstance(headers, Mapping):
        return None
    wanted = name.lower()
    values = [v for k, v in headers.items() if isinstance(k, str) and k.lower() == wanted]
    if not values:
        return None
    if any(v != values[0] for v in values[1:]):
        raise Unauthorized(f"{name} is given more than once with different values")
    return values[0] if isinstance(values[0], str) else None


def utf8(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


def same_secret(expected: bytes, given: bytes) -> bool:
    return hmac.compare_digest(expected, given)


def token_matches(expected: str, given: str | None) -> bool:
    """Constant-time check of the ``?token=`` of an Outbound Message URL. An empty expected
    token (``WEBHOOK_SECRET`` not configured) matches nothing."""
    if not expected or not isinstance(given, str):
        return False
    return same_secret(utf8(expected), utf8(given))


def check_fresh(age_seconds: float, header: str) -> None:
    if not math.isfinite(age_seconds):
        raise Unauthorized(f"{header} cannot be checked against the clock")
    if age_seconds > TOLERANCE_SECONDS:
        raise Unauthorized(f"{header} is more than 5 minutes old: the request is stale")
    if age_seconds < -TOLERANCE_SECONDS:
        raise Unauthorized(f"{header} is more than 5 minutes in the future")


def load_json(data: bytes) -> Any:
    try:
        return json.loads(data.decode("utf-8"))
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, UnicodeDecodeError, too deep
        raise MalformedBody("the body is not valid UTF-8 JSON") from exc


def is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def dedupe_ids(ids: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(ids))




__all__ = ["MAX_BODY_BYTES", "TOLERANCE_SECONDS", "ChangeNotice", "MalformedBody", "Unauthorized",
           "WebhookRejected", "token_matches"]
