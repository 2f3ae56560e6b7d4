"""Salesforce's change deliveries, turned into change notices (see connector.crm.events for
the refusals and the checks they share):

* Outbound Message (SOAP 1.1, ``text/xml``): authenticated by ``?token=WEBHOOK_SECRET`` in the
  URL (the caller compares it with `token_matches`) and by its ``OrganizationId``, which must be
  the configured org (15- or 18-character form). The answer is `outbound_ack`. One notice per
  ``Notification``, deduplicated by the notification ``Id`` (Salesforce resends the same one
  until it gets the Ack, for up to 24 hours).
* Signed JSON from Apex, Flow or middleware: ``X-Connector-Timestamp: <unix seconds>``,
  ``X-Connector-Signature: v1=<hex HMAC-SHA256(WEBHOOK_SECRET, timestamp + "." + raw body)>``,
  body ``{"ids": [...]}`` or ``{"records": [{...}]}``; 5 minutes tolerance either way.
* Change Data Capture events as Event Relay puts them on Amazon EventBridge
  (``detail.payload.ChangeEventHeader``). Changes made by our own API client (``changeOrigin``
  ``com/salesforce/api/<api>/<version>;client=<our client>``) are dropped: the Salesforce client
  sends ``Sforce-Call-Options: client=<our client>`` for this to work.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping
from typing import Any
from xml.etree.ElementTree import Element, ParseError

import defusedxml
import defusedxml.ElementTree as SafeET

from connector.crm.events import (
    UNIX_SECONDS,
    ChangeNotice,
    MalformedBody,
    Unauthorized,
    check_fresh,
    check_size,
    dedupe_ids,
    header,
    is_int,
    load_json,
    same_secret,
    token_matches,
    utf8,
)

OBJECT_TYPE = "Opportunity"
"""The object a signed JSON delivery names, when it does not say."""

MAX_OUTBOUND_NOTIFICATIONS = 100
"""Salesforce's own limit (``maxOccurs="100"`` in the Outbound Message WSDL)."""

SOAP_ENVELOPE_NS = "http://schemas.xmlsoap.org/soap/envelope/"
OUTBOUND_NS = "http://soap.sforce.com/2005/09/outbound"
XSI_NS = "http://www.w3.org/2001/XMLSchema-instance"

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
_CDC_DELETES = frozenset({"DELETE", "GAP_DELETE"})


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


# -- signed JSON -----------------------------------------------------------------------------


def verify_signed_json(secret: str, headers: Mapping[str, str], body: bytes, now: float) -> None:
    """Check ``X-Connector-Signature: v1=<hex>`` (several, comma-separated, are allowed, for a
    secret rotation) over ``X-Connector-Timestamp + "." + body``; raise `WebhookRejected`."""
    data = check_size(body)
    if not secret:
        raise Unauthorized("WEBHOOK_SECRET is not configured: signed requests are refused")
    timestamp = header(headers, "X-Connector-Timestamp")
    signature = header(headers, "X-Connector-Signature")
    if timestamp is None or signature is None:
        raise Unauthorized("X-Connector-Timestamp and X-Connector-Signature are required")
    if not UNIX_SECONDS.fullmatch(timestamp):
        raise Unauthorized("X-Connector-Timestamp must be unix seconds")
    check_fresh(now - int(timestamp), "X-Connector-Timestamp")
    expected = hmac.new(utf8(secret), timestamp.encode("ascii") + b"." + data,
                        hashlib.sha256).hexdigest().encode("ascii")
    matched = False
    for part in signature.split(","):
        scheme, _, value = part.strip().partition("=")
        if scheme == "v1":
            matched |= same_secret(expected, utf8(value.strip().lower()))
    if not matched:
        raise Unauthorized("X-Connector-Signature does not match the body and timestamp")


def parse_signed_json(body: bytes, *, timestamp: str | None = None, id_field: str = "Id",
                      object_type: str = OBJECT_TYPE) -> list[ChangeNotice]:
    """``{"ids": [...]}`` or ``{"records": [{...CRM fields...}]}`` -> at most one notice.

    Call it after `verify_signed_json`, passing the same ``timestamp`` header: the dedupe key is
    the hash of the signed timestamp and body, so a replay of the same request is recognised
    while the same ids sent again later are a new change. Without ``timestamp`` the key is the
    body's hash alone (keep such keys only for the tolerance window)."""
    data = check_size(body)
    doc = load_json(data)
    if not isinstance(doc, dict) or len(doc) != 1 or not ({"ids", "records"} & doc.keys()):
        raise MalformedBody('the body must be {"ids": [...]} or {"records": [...]}')
    if "ids" in doc:
        ids = doc["ids"]
        if not isinstance(ids, list):
            raise MalformedBody('"ids" must be a list of record ids')
        record_ids = dedupe_ids(_salesforce_id(i, "an entry of ids") for i in ids)
    else:
        raw = doc["records"]
        if not isinstance(raw, list) or not all(isinstance(r, dict) for r in raw):
            raise MalformedBody('"records" must be a list of objects')
        record_ids = tuple(_salesforce_id(r.get(id_field), f"a record's {id_field}") for r in raw)
        if len(set(record_ids)) != len(record_ids):
            raise MalformedBody("the same record appears twice in records")
    if not record_ids:
        return []
    signed = (timestamp.encode("utf-8", "surrogatepass") + b"." if timestamp else b"") + data
    key = f"salesforce:signed:{hashlib.sha256(signed).hexdigest()}"
    return [ChangeNotice(object_type=object_type, record_ids=record_ids, dedupe_key=key)]


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
    data = check_size(body)
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
        notices.append(ChangeNotice(object_type=object_type, record_ids=(record_id,),
                                    dedupe_key=f"salesforce:outbound:{notification_id}"))
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
        event = load_json(check_size(raw))
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
            and isinstance(transaction, str) and transaction and is_int(sequence)):
        raise MalformedBody("ChangeEventHeader lacks entityName, changeType, recordIds, "
                            "transactionKey or sequenceNumber")
    if not all(isinstance(i, str) for i in record_ids):
        raise MalformedBody("recordIds must be strings")
    client = _client_of(origin)
    if our_client and client is not None and client == our_client.strip().rstrip("/"):
        return []
    if change_type.upper() in _CDC_DELETES:
        return []
    key = f"salesforce:cdc:{transaction}:{sequence}"
    resync = change_type.upper() == "GAP_OVERFLOW" or any(
        _SF_WILDCARD.fullmatch(i) for i in record_ids)
    if resync:
        return [ChangeNotice(object_type=entity, record_ids=(), dedupe_key=key, resync=True)]
    ids = dedupe_ids(_salesforce_id(i, "an entry of recordIds") for i in record_ids)
    if not ids:
        return []
    return [ChangeNotice(object_type=entity, record_ids=ids, dedupe_key=key)]




__all__ = ["OBJECT_TYPE", "outbound_ack", "parse_cdc_event", "parse_outbound_message",
           "parse_signed_json", "same_salesforce_id", "token_matches", "verify_signed_json"]
