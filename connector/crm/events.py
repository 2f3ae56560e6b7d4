"""Webhook deliveries and change events, turned into change notices.

Pure functions: no I/O and no clock (``now`` is passed in, in unix seconds). Every way a delivery
can be refused raises `WebhookRejected`, with the HTTP status to answer:

* 401 (`Unauthorized`): a missing, forged or stale signature or token, a timestamp too far in the
  future, another Salesforce org, or a secret that is not configured. Nothing is processed.
* 400 (`MalformedBody`): anything else wrong with the body: not UTF-8, not JSON or XML, a DTD or
  entity declaration in XML (billion laughs, external entities), the wrong shape, an id that is not
  a record id, or a body over `MAX_BODY_BYTES`.

No other exception leaves this module for any input bytes, and no message carries a secret or
echoes what the sender sent.

What each CRM sends:

* Salesforce Outbound Message (SOAP 1.1, ``text/xml``): authenticated by ``?token=WEBHOOK_SECRET``
  in the URL (the caller compares it with `token_matches`) and by its ``OrganizationId``, which must
  be the configured org (15- or 18-character form). The answer is `outbound_ack`. One notice per
  ``Notification``, deduplicated by the notification ``Id`` (Salesforce resends the same one until
  it gets the Ack, for up to 24 hours).
* Signed JSON from Apex, Flow or middleware: ``X-Connector-Timestamp: <unix seconds>``,
  ``X-Connector-Signature: v1=<hex HMAC-SHA256(WEBHOOK_SECRET, timestamp + "." + raw body)>``,
  body ``{"ids": [...]}`` or ``{"records": [{...}]}``; 5 minutes tolerance either way.
* Salesforce Change Data Capture events as Event Relay puts them on Amazon EventBridge
  (``detail.payload.ChangeEventHeader``). Changes made by our own API client (``changeOrigin``
  ``com/salesforce/api/<api>/<version>;client=<our client>``) are dropped: the Salesforce client
  must send ``Sforce-Call-Options: client=<our client>`` for this to work.
* HubSpot webhooks, signed with ``X-HubSpot-Signature-v3`` over method, URI, raw body and the
  millisecond ``X-HubSpot-Request-Timestamp``; 5 minutes tolerance. Changes made by our own app
  (``changeSource`` ``INTEGRATION`` with ``sourceId`` = our app id) are dropped.

Deletions (Salesforce ``DELETE``/``GAP_DELETE``, HubSpot ``*.deletion``) give no notice: there is
nothing left to compute. A change Salesforce cannot list record by record (``GAP_OVERFLOW``, or a
``recordIds`` wildcard such as ``006*``) gives a notice with ``resync=True`` and no ids: run a poll.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from xml.etree.ElementTree import Element, ParseError

import defusedxml
import defusedxml.ElementTree as SafeET

from connector.errors import ConnectorError

MAX_BODY_BYTES = 1_048_576
"""The largest body accepted, in bytes (1 MiB). Salesforce sends at most 100 notifications per
Outbound Message and HubSpot at most 100 events per request, far below this; anything larger is
refused with 400 before it is parsed or hashed."""

TOLERANCE_SECONDS = 300
"""How far a signed timestamp may be from ``now``, in the past or in the future."""

MAX_OUTBOUND_NOTIFICATIONS = 100
"""Salesforce's own limit (``maxOccurs="100"`` in the Outbound Message WSDL)."""

SOAP_ENVELOPE_NS = "http://schemas.xmlsoap.org/soap/envelope/"
OUTBOUND_NS = "http://soap.sforce.com/2005/09/outbound"
XSI_NS = "http://www.w3.org/2001/XMLSchema-instance"

SALESFORCE = "salesforce"
HUBSPOT = "hubspot"
SOURCE_OUTBOUND_MESSAGE = "salesforce-outbound-message"
SOURCE_SIGNED_JSON = "signed-json"
SOURCE_CDC = "salesforce-cdc"
SOURCE_HUBSPOT = "hubspot-webhook"

_OUTBOUND_ACK = (
    b'<?xml version="1.0" encoding="UTF-8"?>'
    b'<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/">'
    b"<soapenv:Body>"
    b'<notificationsResponse xmlns="http://soap.sforce.com/2005/09/outbound">'
    b"<Ack>true</Ack>"
    b"</notificationsResponse>"
    b"</soapenv:Body>"
    b"</soapenv:Envelope>"
)

_SF_ID = re.compile(r"[A-Za-z0-9]{15}(?:[A-Za-z0-9]{3})?")
_SF_WILDCARD = re.compile(r"[A-Za-z0-9]{3}\*")
_SUFFIX_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"
_UNIX_SECONDS = re.compile(r"[0-9]{1,12}")
_UNIX_MILLIS = re.compile(r"[0-9]{1,15}")
# HubSpot's v3 instructions: decode exactly these percent-escapes in the request URI before
# hashing (and nothing else). Hex digits are case-insensitive in percent-encoding (RFC 3986 2.1).
_HUBSPOT_DECODE = re.compile(r"%(3A|2F|3F|40|21|24|27|28|29|2A|2C|3B)", re.IGNORECASE)
_HUBSPOT_OBJECT_TYPE_IDS = {"0-1": "contact", "0-2": "company", "0-3": "deal", "0-5": "ticket"}
_CDC_DELETES = frozenset({"DELETE", "GAP_DELETE"})


class WebhookRejected(ConnectorError):
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
    """Records of one CRM that changed, as one delivery told it.

    ``records`` holds the CRM fields when the delivery carried them (Outbound Message fields,
    signed JSON ``records``), one per id, in the same order; ``None`` when only ids came (the
    records must be read). ``dedupe_key`` is the same for every redelivery of the same change and
    differs between changes. ``resync`` means "something changed that cannot be listed": poll.
    """

    crm: str
    object_type: str
    record_ids: tuple[str, ...]
    dedupe_key: str
    source: str
    records: tuple[Mapping[str, Any], ...] | None = None
    resync: bool = False


# -- shared checks ---------------------------------------------------------------------------


def _check_size(body: object) -> bytes:
    if not isinstance(body, bytes | bytearray | memoryview):
        raise MalformedBody("the body must be raw bytes")
    data = bytes(body)
    if len(data) > MAX_BODY_BYTES:
        raise MalformedBody(f"the body is larger than {MAX_BODY_BYTES} bytes")
    return data


def _header(headers: object, name: str) -> str | None:
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


def _utf8(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


def _same_secret(expected: bytes, given: bytes) -> bool:
    return hmac.compare_digest(expected, given)


def token_matches(expected: str, given: str | None) -> bool:
    """Constant-time check of the ``?token=`` of an Outbound Message URL. An empty expected
    token (``WEBHOOK_SECRET`` not configured) matches nothing."""
    if not expected or not isinstance(given, str):
        return False
    return _same_secret(_utf8(expected), _utf8(given))


def _check_fresh(age_seconds: float, header: str) -> None:
    if not math.isfinite(age_seconds):
        raise Unauthorized(f"{header} cannot be checked against the clock")
    if age_seconds > TOLERANCE_SECONDS:
        raise Unauthorized(f"{header} is more than 5 minutes old: the request is stale")
    if age_seconds < -TOLERANCE_SECONDS:
        raise Unauthorized(f"{header} is more than 5 minutes in the future")


def _load_json(data: bytes) -> Any:
    try:
        return json.loads(data.decode("utf-8"))
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, UnicodeDecodeError, too deep
        raise MalformedBody("the body is not valid UTF-8 JSON") from exc


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _salesforce_id(value: object, what: str) -> str:
    if not isinstance(value, str) or not _SF_ID.fullmatch(value):
        raise MalformedBody(f"{what} is not a 15- or 18-character Salesforce id")
    return value


def _case_safe_15(value: str) -> str | None:
    """The exact 15-character form of a Salesforce id, or None if it is not one.

    An 18-character id is the 15-character one plus 3 characters that record, 5 characters each,
    which letters are upper case; the 18-character form is therefore case-insensitive, and its
    letters' case is restored from that suffix. The 15-character form is case-sensitive."""
    if not _SF_ID.fullmatch(value):
        return None
    if len(value) == 15:
        return value
    chars = list(value[:15])
    for chunk, flag in enumerate(value[15:].upper()):
        bits = _SUFFIX_ALPHABET.find(flag)
        if bits < 0:
            return None
        for j in range(5):
            i = chunk * 5 + j
            upper = bool(bits >> j & 1)
            if upper and not chars[i].isalpha():
                return None  # a suffix that no real id has
            chars[i] = chars[i].upper() if upper else chars[i].lower()
    return "".join(chars)


def same_salesforce_id(a: str, b: str) -> bool:
    """Whether two Salesforce ids, each in its 15- or 18-character form, name the same record."""
    left, right = _case_safe_15(a), _case_safe_15(b)
    return left is not None and left == right


def _dedupe_ids(ids: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(ids))


# -- signed JSON -----------------------------------------------------------------------------


def verify_signed_json(secret: str, headers: Mapping[str, str], body: bytes, now: float) -> None:
    """Check ``X-Connector-Signature: v1=<hex>`` (several, comma-separated, are allowed, for a
    secret rotation) over ``X-Connector-Timestamp + "." + body``; raise `WebhookRejected`."""
    data = _check_size(body)
    if not secret:
        raise Unauthorized("WEBHOOK_SECRET is not configured: signed requests are refused")
    timestamp = _header(headers, "X-Connector-Timestamp")
    signature = _header(headers, "X-Connector-Signature")
    if timestamp is None or signature is None:
        raise Unauthorized("X-Connector-Timestamp and X-Connector-Signature are required")
    if not _UNIX_SECONDS.fullmatch(timestamp):
        raise Unauthorized("X-Connector-Timestamp must be unix seconds")
    _check_fresh(now - int(timestamp), "X-Connector-Timestamp")
    expected = hmac.new(_utf8(secret), timestamp.encode("ascii") + b"." + data,
                        hashlib.sha256).hexdigest().encode("ascii")
    matched = False
    for part in signature.split(","):
        scheme, _, value = part.strip().partition("=")
        if scheme == "v1":
            matched |= _same_secret(expected, _utf8(value.strip().lower()))
    if not matched:
        raise Unauthorized("X-Connector-Signature does not match the body and timestamp")


def parse_signed_json(body: bytes, *, timestamp: str | None = None, id_field: str = "Id",
                      object_type: str = "Opportunity") -> list[ChangeNotice]:
    """``{"ids": [...]}`` or ``{"records": [{...CRM fields...}]}`` -> at most one notice.

    Call it after `verify_signed_json`, passing the same ``timestamp`` header: the dedupe key is
    the hash of the signed timestamp and body, so a replay of the same request is recognised
    while the same ids sent again later are a new change. Without ``timestamp`` the key is the
    body's hash alone (keep such keys only for the tolerance window)."""
    data = _check_size(body)
    doc = _load_json(data)
    if not isinstance(doc, dict) or len(doc) != 1 or not ({"ids", "records"} & doc.keys()):
        raise MalformedBody('the body must be {"ids": [...]} or {"records": [...]}')
    records: tuple[Mapping[str, Any], ...] | None = None
    if "ids" in doc:
        ids = doc["ids"]
        if not isinstance(ids, list):
            raise MalformedBody('"ids" must be a list of record ids')
        record_ids = _dedupe_ids(_salesforce_id(i, "an entry of ids") for i in ids)
    else:
        raw = doc["records"]
        if not isinstance(raw, list) or not all(isinstance(r, dict) for r in raw):
            raise MalformedBody('"records" must be a list of objects')
        record_ids = tuple(_salesforce_id(r.get(id_field), f"a record's {id_field}") for r in raw)
        if len(set(record_ids)) != len(record_ids):
            raise MalformedBody("the same record appears twice in records")
        records = tuple(raw)
    if not record_ids:
        return []
    signed = (timestamp.encode("utf-8", "surrogatepass") + b"." if timestamp else b"") + data
    key = f"{SALESFORCE}:signed:{hashlib.sha256(signed).hexdigest()}"
    return [ChangeNotice(crm=SALESFORCE, object_type=object_type, record_ids=record_ids,
                         dedupe_key=key, source=SOURCE_SIGNED_JSON, records=records)]


# -- Salesforce Outbound Message -------------------------------------------------------------


def outbound_ack() -> bytes:
    """The SOAP answer that tells Salesforce the notifications were received (send it only
    once they are stored: Salesforce resends until it gets it)."""
    return _OUTBOUND_ACK


def _local(tag: str) -> str:
    return tag.rpartition("}")[2]


def _child(parent: Element, ns: str, name: str) -> Element:
    found = parent.find(f"{{{ns}}}{name}")
    if found is None:
        raise MalformedBody(f"not a Salesforce Outbound Message: no {name} element")
    return found


def _text(parent: Element, ns: str, name: str) -> str:
    return (_child(parent, ns, name).text or "").strip()


def _sobject_fields(sobject: Element) -> dict[str, str | None]:
    fields: dict[str, str | None] = {}
    for field in sobject:
        if len(field):  # a nested element: Outbound Messages carry the object's own fields only
            continue
        nil = field.get(f"{{{XSI_NS}}}nil", "").strip().lower() in ("true", "1")
        fields[_local(field.tag)] = None if nil else (field.text or "")
    return fields


def parse_outbound_message(body: bytes, expected_org_id: str,
                           token_ok: bool) -> tuple[list[ChangeNotice], bytes]:
    """A Salesforce Outbound Message -> (one notice per Notification, the SOAP Ack to answer).

    ``token_ok`` is `token_matches` of the URL's ``?token=`` (Outbound Messages cannot sign);
    ``expected_org_id`` is ``SALESFORCE_ORG_ID``, 15 or 18 characters."""
    data = _check_size(body)
    if not token_ok:
        raise Unauthorized("the URL's token is missing or wrong")
    if not isinstance(expected_org_id, str) or _case_safe_15(expected_org_id) is None:
        raise Unauthorized("SALESFORCE_ORG_ID is not configured as a valid org id")
    try:
        # Salesforce sends UTF-8. Parsing text, not bytes, makes expat ignore the declared
        # encoding, so no codec named by the sender is ever looked up.
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise MalformedBody("the body is not UTF-8") from exc
    try:
        root = SafeET.fromstring(text, forbid_dtd=True, forbid_entities=True,
                                 forbid_external=True)
    except (ParseError, defusedxml.DefusedXmlException, ValueError, LookupError) as exc:
        raise MalformedBody("the body is not well-formed XML without a DTD") from exc
    if root.tag != f"{{{SOAP_ENVELOPE_NS}}}Envelope":
        raise MalformedBody("not a SOAP 1.1 envelope")
    notifications = _child(_child(root, SOAP_ENVELOPE_NS, "Body"), OUTBOUND_NS, "notifications")
    if not same_salesforce_id(_text(notifications, OUTBOUND_NS, "OrganizationId"),
                              expected_org_id):
        raise Unauthorized("OrganizationId is not SALESFORCE_ORG_ID")
    items = notifications.findall(f"{{{OUTBOUND_NS}}}Notification")
    if len(items) > MAX_OUTBOUND_NOTIFICATIONS:
        raise MalformedBody(f"more than {MAX_OUTBOUND_NOTIFICATIONS} notifications")
    notices = []
    for item in items:
        notification_id = _salesforce_id(_text(item, OUTBOUND_NS, "Id"), "a Notification Id")
        sobject = _child(item, OUTBOUND_NS, "sObject")
        object_type = _local(sobject.get(f"{{{XSI_NS}}}type", "").rpartition(":")[2])
        if not object_type:
            raise MalformedBody("an sObject has no xsi:type")
        fields = _sobject_fields(sobject)
        record_id = _salesforce_id(fields.get("Id"), "an sObject Id")
        notices.append(ChangeNotice(
            crm=SALESFORCE, object_type=object_type, record_ids=(record_id,),
            dedupe_key=f"{SALESFORCE}:outbound:{notification_id}",
            source=SOURCE_OUTBOUND_MESSAGE, records=(fields,)))
    return notices, outbound_ack()


# -- Salesforce Change Data Capture through Event Relay -> EventBridge -----------------------


def _client_of(change_origin: str) -> str | None:
    """``com/salesforce/api/rest/62.0;client=crm-automation`` -> ``crm-automation``."""
    for part in change_origin.split(";")[1:]:
        name, _, value = part.strip().partition("=")
        if name.strip() == "client":
            return value.strip().rstrip("/")
    return None


def parse_cdc_event(event: Mapping[str, Any] | bytes | str,
                    our_client: str) -> list[ChangeNotice]:
    """A Change Data Capture event as Event Relay delivers it to EventBridge (the event dict a
    Lambda target receives, or its JSON) -> at most one notice.

    The change is dropped when ``changeOrigin`` names ``our_client`` (the connector's own
    writes), or when it is a deletion. The dedupe key is the event's transaction key and
    sequence number, which Salesforce keeps across redeliveries."""
    if isinstance(event, bytes | bytearray | memoryview | str):
        raw = event.encode("utf-8", "surrogatepass") if isinstance(event, str) else event
        event = _load_json(_check_size(raw))
    if not isinstance(event, Mapping):
        raise MalformedBody("a change event must be a JSON object")
    detail = event.get("detail")
    if not isinstance(detail, Mapping):
        raise MalformedBody("not an EventBridge event: no detail")
    payload = detail.get("payload", detail)  # Event Relay nests it; AppFlow does not
    header = payload.get("ChangeEventHeader") if isinstance(payload, Mapping) else None
    if not isinstance(header, Mapping):
        raise MalformedBody("not a change event: no detail.payload.ChangeEventHeader")
    entity = header.get("entityName")
    change_type = header.get("changeType")
    record_ids = header.get("recordIds")
    origin = header.get("changeOrigin") or ""
    transaction = header.get("transactionKey")
    sequence = header.get("sequenceNumber")
    if not (isinstance(entity, str) and entity and isinstance(change_type, str) and change_type
            and isinstance(record_ids, list) and isinstance(origin, str)
            and isinstance(transaction, str) and transaction and _is_int(sequence)):
        raise MalformedBody("ChangeEventHeader lacks entityName, changeType, recordIds, "
                            "transactionKey or sequenceNumber")
    if not all(isinstance(i, str) for i in record_ids):
        raise MalformedBody("recordIds must be strings")
    client = _client_of(origin)
    if our_client and client is not None and client == our_client.strip().rstrip("/"):
        return []
    if change_type.upper() in _CDC_DELETES:
        return []
    key = f"{SALESFORCE}:cdc:{transaction}:{sequence}"
    resync = change_type.upper() == "GAP_OVERFLOW" or any(
        _SF_WILDCARD.fullmatch(i) for i in record_ids)
    if resync:
        return [ChangeNotice(crm=SALESFORCE, object_type=entity, record_ids=(), dedupe_key=key,
                             source=SOURCE_CDC, resync=True)]
    ids = _dedupe_ids(_salesforce_id(i, "an entry of recordIds") for i in record_ids)
    if not ids:
        return []
    return [ChangeNotice(crm=SALESFORCE, object_type=entity, record_ids=ids, dedupe_key=key,
                         source=SOURCE_CDC)]


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
    data = _check_size(body)
    if not secret:
        raise Unauthorized("HUBSPOT_CLIENT_SECRET is not configured: HubSpot requests are refused")
    signature = _header(headers, "X-HubSpot-Signature-v3")
    timestamp = _header(headers, "X-HubSpot-Request-Timestamp")
    if signature is None or timestamp is None:
        raise Unauthorized("X-HubSpot-Signature-v3 and X-HubSpot-Request-Timestamp are required")
    if not _UNIX_MILLIS.fullmatch(timestamp):
        raise Unauthorized("X-HubSpot-Request-Timestamp must be unix milliseconds")
    _check_fresh(now - int(timestamp) / 1000, "X-HubSpot-Request-Timestamp")
    if not isinstance(method, str) or not isinstance(uri, str):
        raise Unauthorized("the request method and URI are needed to check the signature")
    source = _utf8(method.upper()) + _utf8(hubspot_signed_uri(uri)) + data + timestamp.encode()
    expected = base64.b64encode(hmac.new(_utf8(secret), source, hashlib.sha256).digest())
    if not _same_secret(expected, _utf8(signature.strip())):
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


def parse_hubspot_events(body: bytes, our_app_id: int | str | None) -> list[ChangeNotice]:
    """A HubSpot webhook batch (a JSON array of events) -> one notice per event that matters.

    Dropped: deletions, association changes (no object of their own), and changes our own app
    made (``changeSource`` ``INTEGRATION``/``API`` with ``sourceId`` = ``our_app_id``; the
    batch's ``appId`` is the receiving app, not the author, and is not used). The dedupe key is
    (portalId, subscriptionId, objectId, propertyName, occurredAt): ``eventId`` is not unique and
    ``attemptNumber`` grows on each retry."""
    data = _check_size(body)
    doc = _load_json(data)
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
        if not (isinstance(subscription, str) and "." in subscription and _is_int(subscription_id)
                and _is_int(occurred) and _is_int(portal)
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
        key = f"{HUBSPOT}:{portal}:{subscription_id}:{object_id}:{prop or ''}:{occurred}"
        notices.setdefault(key, ChangeNotice(
            crm=HUBSPOT, object_type=_hubspot_object_type(event, subscription),
            record_ids=(str(object_id),), dedupe_key=key, source=SOURCE_HUBSPOT))
    return list(notices.values())
