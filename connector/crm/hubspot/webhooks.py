"""HubSpot's webhooks, turned into change notices (see connector.crm.events for the refusals
and the checks they share): signed with ``X-HubSpot-Signature-v3`` over method, URI, raw body and
the millisecond ``X-HubSpot-Request-Timestamp``; 5 minutes tolerance. Changes made by our own
app (``changeSource`` ``INTEGRATION`` with ``sourceId`` = our app id) are dropped, and so are
events of objects that are not deals.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Mapping
from typing import Any

from connector.crm.events import (
    UNIX_MILLIS,
    ChangeNotice,
    MalformedBody,
    Unauthorized,
    check_fresh,
    check_size,
    header,
    is_int,
    load_json,
    same_secret,
    utf8,
)

OBJECT_TYPE = "deal"
"""The object whose events are notices; contacts and companies are not opportunities."""

# hashing (and nothing else). Hex digits are case-insensitive in percent-encoding (RFC 3986 2.1).
_HUBSPOT_DECODE = re.compile(r"%(3A|2F|3F|40|21|24|27|28|29|2A|2C|3B)", re.IGNORECASE)
_HUBSPOT_OBJECT_TYPE_IDS = {"0-1": "contact", "0-2": "company", "0-3": "deal", "0-5": "ticket"}


# -- HubSpot ---------------------------------------------------------------------------------


def hubspot_signed_uri(uri: str) -> str:
    """The request URI as HubSpot hashes it: ``%3A %2F %3F %40 %21 %24 %27 %28 %29 %2A %2C %3B``
    decoded, everything else (``%20``, ``%26``, ``+``...) left as it came."""
    return _HUBSPOT_DECODE.sub(lambda m: bytes.fromhex(m.group(1)).decode("ascii"), uri)


def verify_hubspot_v3(secret: str, method: str, uri: str, body: bytes,
                      headers: Mapping[str, str], now: float) -> None:
    """Check ``X-HubSpot-Signature-v3`` = base64(HMAC-SHA256(client secret, method + URI + body
    + X-HubSpot-Request-Timestamp)). ``uri`` is the full URL HubSpot called, scheme, host and
    query included (behind a proxy or API Gateway, the public one); raise `WebhookRejected`."""
    data = check_size(body)
    if not secret:
        raise Unauthorized("HUBSPOT_CLIENT_SECRET is not configured: HubSpot requests are refused")
    signature = header(headers, "X-HubSpot-Signature-v3")
    timestamp = header(headers, "X-HubSpot-Request-Timestamp")
    if signature is None or timestamp is None:
        raise Unauthorized("X-HubSpot-Signature-v3 and X-HubSpot-Request-Timestamp are required")
    if not UNIX_MILLIS.fullmatch(timestamp):
        raise Unauthorized("X-HubSpot-Request-Timestamp must be unix milliseconds")
    check_fresh(now - int(timestamp) / 1000, "X-HubSpot-Request-Timestamp")
    if not isinstance(method, str) or not isinstance(uri, str):
        raise Unauthorized("the request method and URI are needed to check the signature")
    source = utf8(method.upper()) + utf8(hubspot_signed_uri(uri)) + data + timestamp.encode()
    expected = base64.b64encode(hmac.new(utf8(secret), source, hashlib.sha256).digest())
    if not same_secret(expected, utf8(signature.strip())):
        raise Unauthorized("X-HubSpot-Signature-v3 does not match the request")


def _hubspot_object_type(event: Mapping[str, Any], subscription: str) -> str:
    prefix = subscription.partition(".")[0]
    if prefix != "object":
        return prefix
    type_id = event.get("objectTypeId")
    if not isinstance(type_id, str) or not type_id:
        raise MalformedBody("a generic object event has no objectTypeId")
    return _HUBSPOT_OBJECT_TYPE_IDS.get(type_id, type_id)


def _ours(event: Mapping[str, Any], our_app_id: int | str | None) -> bool:
    source = event.get("changeSource")
    source_id = event.get("sourceId")
    if our_app_id is None or str(our_app_id) == "" or not isinstance(source, str):
        return False
    if source.upper() not in ("INTEGRATION", "API"):
        return False
    return isinstance(source_id, str | int) and not isinstance(source_id, bool) and (
        str(source_id) == str(our_app_id))


def parse_hubspot_events(body: bytes, our_app_id: int | str | None,
                         object_type: str = OBJECT_TYPE) -> list[ChangeNotice]:
    """A HubSpot webhook batch (a JSON array of events) -> one notice per event that matters.

    Dropped: events of other objects than `object_type`, deletions, association changes (no
    object of their own), and changes our own app made (``changeSource``
    ``INTEGRATION``/``API`` with ``sourceId`` = ``our_app_id``; the batch's ``appId`` is the
    receiving app, not the author, and is not used). The dedupe key is
    (portalId, subscriptionId, objectId, propertyName, occurredAt): ``eventId`` is not unique and
    ``attemptNumber`` grows on each retry."""
    data = check_size(body)
    doc = load_json(data)
    if not isinstance(doc, list):
        raise MalformedBody("a HubSpot webhook body is a JSON array of events")
    notices: dict[str, ChangeNotice] = {}
    for event in doc:
        if not isinstance(event, dict):
            raise MalformedBody("every HubSpot event must be a JSON object")
        subscription = event.get("subscriptionType", event.get("eventType"))
        subscription_id = event.get("subscriptionId")
        occurred = event.get("occurredAt")
        portal = event.get("portalId")
        prop = event.get("propertyName")
        if not (isinstance(subscription, str) and "." in subscription and is_int(subscription_id)
                and is_int(occurred) and is_int(portal)
                and (prop is None or isinstance(prop, str))):
            raise MalformedBody("a HubSpot event lacks subscriptionType, subscriptionId, "
                                "portalId or occurredAt")
        action = subscription.partition(".")[2]
        if action in ("deletion", "privacyDeletion") or action.startswith("association"):
            continue
        object_id = event.get("objectId")
        if not isinstance(object_id, int) or isinstance(object_id, bool) or object_id < 0:
            raise MalformedBody("a HubSpot event has no objectId")
        if _ours(event, our_app_id):
            continue
        if _hubspot_object_type(event, subscription) != object_type:
            continue
        key = f"hubspot:{portal}:{subscription_id}:{object_id}:{prop or ''}:{occurred}"
        notices.setdefault(key, ChangeNotice(object_type=object_type,
                                             record_ids=(str(object_id),), dedupe_key=key))
    return list(notices.values())



__all__ = ["OBJECT_TYPE", "hubspot_signed_uri", "parse_hubspot_events", "verify_hubspot_v3"]
