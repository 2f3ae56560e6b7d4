"""Webhook authentication and parsing (connector.crm.events and each CRM's webhooks):
real-shaped bodies accepted, every bad delivery refused with 401 or 400, and nothing else ever
raised, for any bytes."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import xml.etree.ElementTree as StdET  # only to read our own Ack back, never a request body
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connector.crm import events
from connector.crm.events import MAX_BODY_BYTES, ChangeNotice, WebhookRejected, token_matches
from connector.crm.hubspot.webhooks import (
    hubspot_signed_uri,
    parse_hubspot_events,
    verify_hubspot_v3,
)
from connector.crm.salesforce.webhooks import (
    outbound_ack,
    parse_cdc_event,
    parse_outbound_message,
    parse_signed_json,
    same_salesforce_id,
    verify_signed_json,
)

FIXTURES = Path(__file__).parent / "fixtures" / "webhooks"
NOW = 1_791_036_400.0  # unix seconds; every test passes its own clock
SECRET = "whsec-7f3a9c1e5b2d4a6f8e0c"
HUBSPOT_SECRET = "5b0c1d2e-3f40-4a51-8b62-7c83d94ea5fb"
ORG_15 = "00D5g00000LqXyZ"
ORG_18 = "00D5g00000LqXyZEAV"
OUR_CLIENT = "crm-automation"
OUR_APP_ID = 1160452
HUBSPOT_URL = "https://hooks.acme.example/webhooks/hubspot"
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def rejected(call, *args, **kwargs) -> WebhookRejected:
    """Run ``call``; it must raise WebhookRejected, which is returned (any other exception
    propagates and fails the test)."""
    with pytest.raises(WebhookRejected) as info:
        call(*args, **kwargs)
    return info.value


def sign_json(body: bytes, timestamp: int | str, secret: str = SECRET) -> dict[str, str]:
    ts = str(timestamp)
    digest = hmac.new(secret.encode(), ts.encode() + b"." + body, hashlib.sha256).hexdigest()
    return {"X-Connector-Timestamp": ts, "X-Connector-Signature": f"v1={digest}"}


def sign_hubspot(method: str, signed_uri: str, body: bytes, timestamp_ms: int | str,
                 secret: str = HUBSPOT_SECRET) -> dict[str, str]:
    """HubSpot's v3 recipe, written out independently of the module: ``signed_uri`` is the URI
    exactly as HubSpot hashes it (already decoded where HubSpot decodes)."""
    ts = str(timestamp_ms)
    source = method.encode() + signed_uri.encode() + body + ts.encode()
    digest = hmac.new(secret.encode(), source, hashlib.sha256).digest()
    return {"X-HubSpot-Signature-v3": base64.b64encode(digest).decode(),
            "X-HubSpot-Request-Timestamp": ts}


def to_18(id15: str) -> str:
    """Salesforce's case-safe suffix, as a reference: for each 5 characters, a bit per upper-case
    letter, read least significant first, indexing A-Z then 0-5."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"
    suffix = ""
    for chunk in range(3):
        bits = sum(1 << j for j, c in enumerate(id15[chunk * 5:chunk * 5 + 5]) if c.isupper())
        suffix += alphabet[bits]
    return id15 + suffix


# -- the rejection type ----------------------------------------------------------------------


def test_rejections_carry_their_status_and_are_connector_errors():
    from connector.errors import ConnectorError

    assert events.Unauthorized("x").status == 401
    assert events.MalformedBody("x").status == 400
    exc = WebhookRejected(401, "nope")
    assert isinstance(exc, ConnectorError)
    assert (exc.status, exc.reason) == (401, "nope")


# -- signed JSON -----------------------------------------------------------------------------


def test_signed_ids_are_accepted_and_listed_in_order():
    body = fixture("signed_json_ids.json")
    headers = sign_json(body, int(NOW) - 12)
    verify_signed_json(SECRET, headers, body, NOW)
    (notice,) = parse_signed_json(body, timestamp=headers["X-Connector-Timestamp"])
    assert notice == ChangeNotice(
        object_type="Opportunity", record_ids=("0065g00000QzW1xAAF", "0065g00000QzW2KAAV"),
        dedupe_key=notice.dedupe_key)
    assert notice.dedupe_key.startswith("salesforce:signed:")


def test_signed_records_name_their_ids():
    body = fixture("signed_json_records.json")
    headers = sign_json(body, int(NOW))
    verify_signed_json(SECRET, headers, body, NOW)
    (notice,) = parse_signed_json(body, timestamp=headers["X-Connector-Timestamp"])
    assert notice.record_ids == ("0065g00000QzW1xAAF",)


def test_signed_headers_are_found_in_any_case_and_rotation_lists_are_allowed():
    body = fixture("signed_json_ids.json")
    good = sign_json(body, int(NOW))
    old = sign_json(body, int(NOW), secret="the-previous-secret")
    verify_signed_json(SECRET, {k.lower(): v for k, v in good.items()}, body, NOW)
    upper_hex = good["X-Connector-Signature"].upper().replace("V1=", "v1=")
    both = {"X-Connector-Timestamp": good["X-Connector-Timestamp"],
            "X-Connector-Signature": f'{old["X-Connector-Signature"]}, {upper_hex}'}
    verify_signed_json(SECRET, both, body, NOW)
    both["X-Connector-Signature"] = f'{upper_hex},{old["X-Connector-Signature"]}'
    verify_signed_json(SECRET, both, body, NOW)


@pytest.mark.parametrize("case", ["wrong secret", "tampered body", "no v1 scheme", "empty",
                                  "timestamp not signed", "other timestamp"])
def test_forged_signed_json_is_401(case):
    body = fixture("signed_json_ids.json")
    headers = sign_json(body, int(NOW))
    if case == "wrong secret":
        headers = sign_json(body, int(NOW), secret=SECRET + "x")
    elif case == "tampered body":
        body = body.replace(b"QzW2K", b"QzW3K")
    elif case == "no v1 scheme":
        headers["X-Connector-Signature"] = headers["X-Connector-Signature"].replace("v1=", "v0=")
    elif case == "empty":
        headers["X-Connector-Signature"] = ""
    elif case == "timestamp not signed":
        digest = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
        headers["X-Connector-Signature"] = f"v1={digest}"
    elif case == "other timestamp":
        headers["X-Connector-Timestamp"] = str(int(NOW) - 1)
    assert rejected(verify_signed_json, SECRET, headers, body, NOW).status == 401


@pytest.mark.parametrize("offset, accepted", [(-300, True), (300, True), (-301, False),
                                              (301, False), (-86_400, False), (86_400, False)])
def test_signed_json_has_five_minutes_tolerance_both_ways(offset, accepted):
    body = fixture("signed_json_ids.json")
    headers = sign_json(body, int(NOW) + offset)
    if accepted:
        verify_signed_json(SECRET, headers, body, NOW)
    else:
        exc = rejected(verify_signed_json, SECRET, headers, body, NOW)
        assert exc.status == 401
        assert ("stale" in exc.reason) == (offset < 0)


@pytest.mark.parametrize("headers", [
    {},
    {"X-Connector-Timestamp": "1791036400"},
    {"X-Connector-Signature": "v1=00"},
    {"X-Connector-Timestamp": "1791036400.5", "X-Connector-Signature": "v1=00"},
    {"X-Connector-Timestamp": "-1791036400", "X-Connector-Signature": "v1=00"},
    {"X-Connector-Timestamp": "١٧٩١٠٣٦٤٠٠", "X-Connector-Signature": "v1=00"},  # not ASCII digits
    {"X-Connector-Timestamp": "9" * 40, "X-Connector-Signature": "v1=00"},
    {"X-Connector-Timestamp": "1791036400", "x-connector-timestamp": "1791036401",
     "X-Connector-Signature": "v1=00"},
])
def test_missing_or_unreadable_signature_headers_are_401(headers):
    assert rejected(verify_signed_json, SECRET, headers, b'{"ids": []}', NOW).status == 401


def test_no_configured_secret_refuses_everything_even_an_empty_hmac():
    body = fixture("signed_json_ids.json")
    headers = sign_json(body, int(NOW), secret="")
    assert rejected(verify_signed_json, "", headers, body, NOW).status == 401


def test_a_replayed_request_has_the_same_key_and_a_new_one_does_not():
    body = fixture("signed_json_ids.json")
    first = sign_json(body, int(NOW))["X-Connector-Timestamp"]
    later = sign_json(body, int(NOW) + 60)["X-Connector-Timestamp"]
    (a,) = parse_signed_json(body, timestamp=first)
    (b,) = parse_signed_json(body, timestamp=first)
    (c,) = parse_signed_json(body, timestamp=later)
    assert a.dedupe_key == b.dedupe_key
    assert a.dedupe_key != c.dedupe_key


def test_repeated_ids_are_listed_once_and_an_empty_list_is_no_notice():
    (notice,) = parse_signed_json(b'{"ids": ["0065g00000QzW1x", "0065g00000QzW1x"]}')
    assert notice.record_ids == ("0065g00000QzW1x",)
    assert parse_signed_json(b'{"ids": []}') == []


@pytest.mark.parametrize("body", [
    b"",
    b"not json",
    b"\xff\xfe{}",
    b"[]",
    b'"ids"',
    b"{}",
    b'{"ids": "0065g00000QzW1xAAF"}',
    b'{"ids": [6]}',
    b'{"ids": ["006 bad id"]}',
    b'{"ids": ["0065g00000QzW1x\' OR Id != \'"]}',
    b'{"ids": ["0065g00000QzW1\'"]}',
    b'{"ids": ["0065g00000Qz\\u00e91x"]}',
    b'{"ids": ["0065g00000QzW1xAAF"], "records": []}',
    b'{"ids": ["0065g00000QzW1xAAF"], "object": "Account"}',
    b'{"records": {"Id": "0065g00000QzW1xAAF"}}',
    b'{"records": [["0065g00000QzW1xAAF"]]}',
    b'{"records": [{"Name": "no id"}]}',
    b'{"records": [{"Id": "0065g00000QzW1xAAF"}, {"Id": "0065g00000QzW1xAAF"}]}',
    b'{"ids": [' + b"1" * 5000 + b"]}",
    b"[" * 100_000 + b"]" * 100_000,
], ids=lambda b: repr(b[:30]))
def test_malformed_signed_json_is_400(body):
    exc = rejected(parse_signed_json, body)
    assert exc.status == 400


def test_oversized_bodies_are_400_before_any_work():
    one = b'"0065g00000QzW1xAAF"'
    body = b'{"ids": [' + b",".join([one] * (MAX_BODY_BYTES // len(one))) + b"]}"
    assert len(body) > MAX_BODY_BYTES
    assert rejected(verify_signed_json, SECRET, sign_json(body, int(NOW)), body, NOW).status == 400
    assert rejected(parse_signed_json, body).status == 400
    assert rejected(parse_outbound_message, body, ORG_18, True).status == 400
    assert rejected(parse_hubspot_events, body, OUR_APP_ID).status == 400
    assert rejected(verify_hubspot_v3, HUBSPOT_SECRET, "POST", HUBSPOT_URL, body,
                    sign_hubspot("POST", HUBSPOT_URL, body, int(NOW * 1000)), NOW).status == 400
    assert rejected(parse_cdc_event, body, OUR_CLIENT).status == 400
    just_fits = b" " * (MAX_BODY_BYTES - len(b'{"ids": []}')) + b'{"ids": []}'
    assert parse_signed_json(just_fits) == []


def test_no_rejection_message_carries_a_secret():
    body = fixture("signed_json_ids.json")
    messages = []
    for headers, secret in [(sign_json(body, int(NOW), secret="x"), SECRET),
                            (sign_json(body, int(NOW) - 999), SECRET),
                            ({"X-Connector-Timestamp": SECRET}, SECRET)]:
        messages.append(str(rejected(verify_signed_json, secret, headers, body, NOW)))
    hub = sign_hubspot("POST", HUBSPOT_URL, body, int(NOW * 1000), secret="other")
    messages.append(str(rejected(verify_hubspot_v3, HUBSPOT_SECRET, "POST", HUBSPOT_URL, body,
                                 hub, NOW)))
    messages.append(str(rejected(parse_outbound_message,
                                 fixture("salesforce_outbound_opportunity.xml"), ORG_18,
                                 token_matches(SECRET, SECRET[:-1]))))
    for message in messages:
        assert SECRET not in message and HUBSPOT_SECRET not in message
        assert "whsec" not in message


# -- Salesforce Outbound Message -------------------------------------------------------------


def test_the_outbound_message_gives_one_notice_for_the_opportunity():
    notices, ack = parse_outbound_message(fixture("salesforce_outbound_opportunity.xml"),
                                          ORG_18, token_matches(SECRET, SECRET))
    (notice,) = notices
    assert notice.object_type == "Opportunity"
    assert notice.record_ids == ("0065g00000QzW1xAAF",)
    assert notice.dedupe_key == "salesforce:outbound:04l5g00002RsNbTAAV"
    assert ack == outbound_ack()


def test_the_ack_is_what_salesforce_expects():
    root = StdET.fromstring(outbound_ack())
    ns = "{http://soap.sforce.com/2005/09/outbound}"
    assert root.tag == "{http://schemas.xmlsoap.org/soap/envelope/}Envelope"
    body = root.find("{http://schemas.xmlsoap.org/soap/envelope/}Body")
    assert body is not None
    ack = body.find(f"{ns}notificationsResponse/{ns}Ack")
    assert ack is not None and ack.text == "true"


def test_each_notification_has_its_own_key_and_a_redelivery_the_same_ones():
    body = fixture("salesforce_outbound_two_opportunities.xml")
    first, _ = parse_outbound_message(body, ORG_18, True)
    again, _ = parse_outbound_message(body, ORG_18, True)
    assert [n.record_ids for n in first] == [("0065g00000QzW1xAAF",), ("0065g00000QzW2KAAV",)]
    assert len({n.dedupe_key for n in first}) == 2
    assert [n.dedupe_key for n in again] == [n.dedupe_key for n in first]


@pytest.mark.parametrize("configured", [ORG_15, ORG_18, ORG_18.lower(), ORG_18.upper()])
def test_the_org_id_matches_in_its_15_and_18_character_forms(configured):
    notices, _ = parse_outbound_message(fixture("salesforce_outbound_opportunity.xml"),
                                        configured, True)
    assert len(notices) == 1


@pytest.mark.parametrize("configured", [
    ORG_15.lower(),            # a 15-character id is case-sensitive: another org
    "00D5g00000LqXyA",         # another org
    "00D5g00000LqXyAEAV",      # another org, with the same suffix letters
    "00D5g00000LqXyZEAA",      # suffix says 'Z' is lower case: another id
    "",                        # not configured
    "00D5g00000LqXy",          # not an id
])
def test_another_org_or_no_org_is_401(configured):
    body = fixture("salesforce_outbound_opportunity.xml")
    assert rejected(parse_outbound_message, body, configured, True).status == 401


def test_a_wrong_or_missing_token_is_401_before_the_body_is_read():
    assert not token_matches(SECRET, SECRET + "x")
    assert not token_matches(SECRET, None)
    assert not token_matches(SECRET, "")
    assert not token_matches("", "")
    assert not token_matches(SECRET, "sécret-ünicode")
    assert token_matches(SECRET, SECRET)
    assert rejected(parse_outbound_message, fixture("salesforce_outbound_opportunity.xml"),
                    ORG_18, token_matches(SECRET, "guess")).status == 401
    assert rejected(parse_outbound_message, b"<not-even-xml", ORG_18, False).status == 401


@pytest.mark.parametrize("name", ["salesforce_outbound_billion_laughs.xml",
                                  "salesforce_outbound_external_entity.xml"])
def test_entity_bombs_and_external_entities_are_400(name):
    assert rejected(parse_outbound_message, fixture(name), ORG_18, True).status == 400


def _outbound(notifications: str, org: str = ORG_18) -> bytes:
    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        '<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" '
        'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><soapenv:Body>'
        '<notifications xmlns="http://soap.sforce.com/2005/09/outbound">'
        f"<OrganizationId>{org}</OrganizationId><ActionId>04k5g000000TfQkAAK</ActionId>"
        f"{notifications}</notifications></soapenv:Body></soapenv:Envelope>").encode()


def _notification(n: int, sobject: str | None = None) -> str:
    sobject = sobject if sobject is not None else (
        '<sObject xsi:type="sf:Opportunity" xmlns:sf="urn:sobject.enterprise.soap.sforce.com">'
        "<sf:Id>0065g00000QzW1xAAF</sf:Id></sObject>")
    return f"<Notification><Id>04l5g00002Rs{n:03d}</Id>{sobject}</Notification>"


def test_up_to_100_notifications_are_taken_and_more_is_400():
    notices, _ = parse_outbound_message(
        _outbound("".join(_notification(n) for n in range(100))), ORG_18, True)
    assert len(notices) == 100
    too_many = _outbound("".join(_notification(n) for n in range(101)))
    assert rejected(parse_outbound_message, too_many, ORG_18, True).status == 400


@pytest.mark.parametrize("body", [
    b"",
    b"<",
    b"\xff\xfe<\x00",
    b"<?xml version='1.0' encoding='no-such-encoding'?><a/>",
    b'<!DOCTYPE a [<!ELEMENT a ANY>]><a/>',
    b"<a/>",
    b'<soapenv:Envelope xmlns:soapenv="http://www.w3.org/2003/05/soap-envelope"/>',
    b'<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"/>',
    b'<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"><soapenv:Body>'
    b"<notifications/></soapenv:Body></soapenv:Envelope>",
    _outbound(_notification(1)).replace(b"<OrganizationId>", b"<OrgId>").replace(
        b"</OrganizationId>", b"</OrgId>"),
    _outbound("<Notification><Id>not an id</Id></Notification>"),
    _outbound("<Notification><Id>04l5g00002Rs001</Id></Notification>"),
    _outbound(_notification(1, '<sObject xmlns:sf="urn:x"><sf:Id>0065g00000QzW1x</sf:Id>'
                               "</sObject>")),
    _outbound(_notification(1, '<sObject xsi:type="sf:Opportunity" xmlns:sf="urn:x">'
                               "<sf:Name>no id</sf:Name></sObject>")),
    _outbound(_notification(1, '<sObject xsi:type="sf:Opportunity" xmlns:sf="urn:x">'
                               "<sf:Id>006' OR Name != '</sf:Id></sObject>")),
    _outbound(_notification(1, '<sObject xsi:type="sf:Opportunity" xmlns:sf="urn:x">'
                               "<sf:Id>0065g00000QzW1'</sf:Id></sObject>")),
    _outbound(_notification(1)).replace(b"</soapenv:Envelope>", b""),
], ids=lambda b: repr(b[:40]))
def test_malformed_outbound_messages_are_400(body):
    assert rejected(parse_outbound_message, body, ORG_18, True).status == 400


def test_an_outbound_message_for_another_object_says_which():
    body = _outbound(_notification(1, '<sObject xsi:type="sf:Account" '
                                      'xmlns:sf="urn:sobject.enterprise.soap.sforce.com">'
                                      "<sf:Id>0015g00000HrTuvAAF</sf:Id></sObject>"))
    (notice,) = parse_outbound_message(body, ORG_18, True)[0]
    assert notice.object_type == "Account"


# -- Salesforce ids --------------------------------------------------------------------------


def test_the_documented_18_character_example():
    assert to_18("001A0000006Vm9r") == "001A0000006Vm9rIAC"
    assert same_salesforce_id("001A0000006Vm9r", "001A0000006Vm9rIAC")
    assert same_salesforce_id("001a0000006vm9riac", "001A0000006Vm9r")
    assert not same_salesforce_id("001a0000006Vm9r", "001A0000006Vm9rIAC")
    assert not same_salesforce_id("001A0000006Vm9r", "001a0000006Vm9r")


@given(st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789",
               min_size=15, max_size=15))
@settings(max_examples=300, deadline=None)
def test_any_id_equals_its_18_character_form_in_any_case(id15):
    id18 = to_18(id15)
    assert same_salesforce_id(id15, id18)
    assert same_salesforce_id(id18, id15)
    assert same_salesforce_id(id18.lower(), id15)
    assert same_salesforce_id(id18.upper(), id18.lower())
    if any(c.isalpha() for c in id15):
        assert not same_salesforce_id(id15.swapcase(), id15)
        assert not same_salesforce_id(to_18(id15.swapcase()), id15)


# -- Change Data Capture through Event Relay -------------------------------------------------


def cdc_event(**header_changes) -> dict:
    event = json.loads(fixture("eventbridge_cdc_opportunity_update.json"))
    event["detail"]["payload"]["ChangeEventHeader"].update(header_changes)
    return event


def test_a_cdc_event_from_event_relay_gives_its_records():
    (notice,) = parse_cdc_event(cdc_event(), OUR_CLIENT)
    assert notice == ChangeNotice(
        object_type="Opportunity", record_ids=("0065g00000QzW1xAAF",),
        dedupe_key="salesforce:cdc:0002b6e1-53f4-9d2a-7c11-8e0f4a6b2d3c:1", resync=False)


def test_a_cdc_event_may_come_as_its_json_bytes():
    (notice,) = parse_cdc_event(fixture("eventbridge_cdc_opportunity_update.json"), OUR_CLIENT)
    assert notice.record_ids == ("0065g00000QzW1xAAF",)


def test_a_redelivered_cdc_event_has_the_same_key_and_the_next_change_another():
    assert parse_cdc_event(cdc_event(), OUR_CLIENT) == parse_cdc_event(cdc_event(), OUR_CLIENT)
    (next_change,) = parse_cdc_event(cdc_event(sequenceNumber=2), OUR_CLIENT)
    (first,) = parse_cdc_event(cdc_event(), OUR_CLIENT)
    assert next_change.dedupe_key != first.dedupe_key


@pytest.mark.parametrize("origin, ours", [
    (f"com/salesforce/api/rest/62.0;client={OUR_CLIENT}", True),
    (f"com/salesforce/api/soap/61.0;client={OUR_CLIENT}", True),
    (f"com/salesforce/api/rest/62.0;client={OUR_CLIENT}/", True),
    ("com/salesforce/api/rest/62.0;client=crm-automation-staging", False),
    ("com/salesforce/api/rest/62.0;client=Astro", False),
    ("com/salesforce/api/rest/62.0", False),
    (f"com/salesforce/api/rest/62.0/{OUR_CLIENT}", False),
    ("", False),
])
def test_our_own_writes_are_skipped_and_only_ours(origin, ours):
    notices = parse_cdc_event(cdc_event(changeOrigin=origin), OUR_CLIENT)
    assert (notices == []) == ours


def test_without_a_client_name_nothing_is_taken_for_ours():
    assert len(parse_cdc_event(cdc_event(changeOrigin="com/salesforce/api/rest/62.0;client="),
                               "")) == 1


def test_merged_changes_list_every_record_once():
    ids = ["0065g00000QzW1xAAF", "0065g00000QzW2KAAV", "0065g00000QzW1xAAF"]
    (notice,) = parse_cdc_event(cdc_event(recordIds=ids), OUR_CLIENT)
    assert notice.record_ids == ("0065g00000QzW1xAAF", "0065g00000QzW2KAAV")


@pytest.mark.parametrize("change_type", ["CREATE", "UPDATE", "UNDELETE", "GAP_CREATE",
                                         "GAP_UPDATE", "GAP_UNDELETE"])
def test_changes_and_gap_events_name_their_records(change_type):
    (notice,) = parse_cdc_event(cdc_event(changeType=change_type), OUR_CLIENT)
    assert notice.record_ids == ("0065g00000QzW1xAAF",) and not notice.resync


@pytest.mark.parametrize("change_type", ["DELETE", "GAP_DELETE"])
def test_deletions_give_no_notice(change_type):
    assert parse_cdc_event(cdc_event(changeType=change_type), OUR_CLIENT) == []


@pytest.mark.parametrize("changes", [{"changeType": "GAP_OVERFLOW", "recordIds": []},
                                    {"changeType": "UPDATE", "recordIds": ["006*"]}])
def test_changes_that_cannot_be_listed_ask_for_a_poll(changes):
    (notice,) = parse_cdc_event(cdc_event(**changes), OUR_CLIENT)
    assert notice.resync and notice.record_ids == ()
    assert notice.object_type == "Opportunity"


def test_appflow_envelopes_without_payload_are_read_too():
    event = cdc_event()
    event["detail"] = event["detail"]["payload"]
    assert parse_cdc_event(event, OUR_CLIENT)[0].record_ids == ("0065g00000QzW1xAAF",)


@pytest.mark.parametrize("event", [
    [],
    {},
    {"detail": "x"},
    {"detail": {"payload": {}}},
    {"detail": {"payload": {"ChangeEventHeader": []}}},
    cdc_event(recordIds="0065g00000QzW1xAAF"),
    cdc_event(recordIds=[7]),
    cdc_event(recordIds=["bad id"]),
    cdc_event(recordIds=["006' OR Id != '"]),
    cdc_event(recordIds=["0065g00000QzW1'"]),
    cdc_event(changeType=None),
    cdc_event(entityName=""),
    cdc_event(transactionKey=5),
    cdc_event(sequenceNumber="1"),
    cdc_event(sequenceNumber=True),
    cdc_event(changeOrigin=["x"]),
    b"not json",
    "[1, 2",
], ids=repr)
def test_malformed_cdc_events_are_400(event):
    assert rejected(parse_cdc_event, event, OUR_CLIENT).status == 400


# -- HubSpot ---------------------------------------------------------------------------------


def test_hubspots_published_v3_example_verifies():
    # The test vector of HubSpot's own client library (hubspot-api-python).
    headers = {"X-HubSpot-Signature-v3": "HPW73RUtKmcYoEDADG0s6MmGFWUzWJKAW07r8RDgcQw=",
               "X-HubSpot-Request-Timestamp": "15000000"}
    body = b"{'example_field':'example_value'}"
    verify_hubspot_v3("yyyyyyyy-yyyy-yyyy-yyyy-yyyyyyyyyyyy", "POST",
                      "https://www.example.com/webhook_uri", body, headers, now=15_000.0)
    exc = rejected(verify_hubspot_v3, "yyyyyyyy-yyyy-yyyy-yyyy-yyyyyyyyyyyy", "POST",
                   "https://www.example.com/webhook_uri", body, headers, now=15_000.0 + 301)
    assert exc.status == 401 and "stale" in exc.reason


def test_a_signed_hubspot_batch_is_accepted():
    body = fixture("hubspot_deal_batch.json")
    verify_hubspot_v3(HUBSPOT_SECRET, "POST", HUBSPOT_URL, body,
                      sign_hubspot("POST", HUBSPOT_URL, body, int(NOW * 1000) - 4000), NOW)


def test_the_uri_is_decoded_as_hubspot_documents_and_no_further():
    body = fixture("hubspot_deal_batch.json")
    sent = (HUBSPOT_URL + "%3Fregion%3Aeu%2Fwest%40acme%21%24%27%28x%29%2A%2C%3B"
            + "?tenant=a%20b&next=%2fdeals%26more")
    hashed = (HUBSPOT_URL + "?region:eu/west@acme!$'(x)*,;"
              + "?tenant=a%20b&next=/deals%26more")
    verify_hubspot_v3(HUBSPOT_SECRET, "POST", sent, body,
                      sign_hubspot("POST", hashed, body, int(NOW * 1000)), NOW)
    assert hubspot_signed_uri(sent) == hashed
    # signed over the URI as it came (undecoded), or with %20 / %26 decoded too: refused
    for wrong in (sent, hashed.replace("%20", " "), hashed.replace("%26", "&")):
        headers = sign_hubspot("POST", wrong, body, int(NOW * 1000))
        assert rejected(verify_hubspot_v3, HUBSPOT_SECRET, "POST", sent, body, headers,
                        NOW).status == 401


@pytest.mark.parametrize("case", ["wrong secret", "tampered body", "other uri", "other method",
                                  "timestamp changed", "hex not base64", "seconds not ms"])
def test_forged_hubspot_requests_are_401(case):
    body = fixture("hubspot_deal_batch.json")
    ts = int(NOW * 1000)
    headers = sign_hubspot("POST", HUBSPOT_URL, body, ts)
    method, uri = "POST", HUBSPOT_URL
    if case == "wrong secret":
        headers = sign_hubspot("POST", HUBSPOT_URL, body, ts, secret="not-the-client-secret")
    elif case == "tampered body":
        body = body.replace(b"closedwon", b"closedlost")
    elif case == "other uri":
        uri = HUBSPOT_URL + "?x=1"
    elif case == "other method":
        method = "PUT"
    elif case == "timestamp changed":
        headers["X-HubSpot-Request-Timestamp"] = str(ts - 1)
    elif case == "hex not base64":
        source = b"POST" + HUBSPOT_URL.encode() + body + str(ts).encode()
        headers["X-HubSpot-Signature-v3"] = hmac.new(HUBSPOT_SECRET.encode(), source,
                                                     hashlib.sha256).hexdigest()
    elif case == "seconds not ms":
        headers = sign_hubspot("POST", HUBSPOT_URL, body, int(NOW))
    assert rejected(verify_hubspot_v3, HUBSPOT_SECRET, method, uri, body, headers,
                    NOW).status == 401


@pytest.mark.parametrize("offset_ms, accepted", [(-300_000, True), (300_000, True),
                                                 (-300_001, False), (300_001, False)])
def test_hubspot_has_five_minutes_tolerance_both_ways(offset_ms, accepted):
    body = fixture("hubspot_deal_batch.json")
    headers = sign_hubspot("POST", HUBSPOT_URL, body, int(NOW * 1000) + offset_ms)
    if accepted:
        verify_hubspot_v3(HUBSPOT_SECRET, "POST", HUBSPOT_URL, body, headers, NOW)
    else:
        assert rejected(verify_hubspot_v3, HUBSPOT_SECRET, "POST", HUBSPOT_URL, body, headers,
                        NOW).status == 401


@pytest.mark.parametrize("headers", [
    {},
    {"X-HubSpot-Signature-v3": "AAAA"},
    {"X-HubSpot-Request-Timestamp": "1791036400000"},
    {"X-HubSpot-Signature-v3": "AAAA", "X-HubSpot-Request-Timestamp": "soon"},
    {"X-HubSpot-Signature-v3": "AAAA", "X-HubSpot-Request-Timestamp": "1e12"},
])
def test_missing_hubspot_headers_are_401(headers):
    assert rejected(verify_hubspot_v3, HUBSPOT_SECRET, "POST", HUBSPOT_URL, b"[]", headers,
                    NOW).status == 401


def test_hubspot_headers_in_lower_case_and_no_secret_configured():
    body = b"[]"
    headers = {k.lower(): v for k, v in
               sign_hubspot("POST", HUBSPOT_URL, body, int(NOW * 1000)).items()}
    verify_hubspot_v3(HUBSPOT_SECRET, "post", HUBSPOT_URL, body, headers, NOW)
    empty = sign_hubspot("POST", HUBSPOT_URL, body, int(NOW * 1000), secret="")
    assert rejected(verify_hubspot_v3, "", "POST", HUBSPOT_URL, body, empty, NOW).status == 401


def test_a_hubspot_batch_gives_the_changes_others_made():
    notices = parse_hubspot_events(fixture("hubspot_deal_batch.json"), OUR_APP_ID)
    assert [(n.object_type, n.record_ids) for n in notices] == [
        ("deal", ("18230945517",)),   # a user moved the stage
        ("deal", ("18230945602",)),   # an import created a deal
        ("deal", ("18230945733",)),   # another app (2931120) changed a deal
    ]  # our own write (sourceId 1160452) and the deletion are not there
    assert notices[0].dedupe_key == "hubspot:24918305:2538662:18230945517:dealstage:1791036309412"


def test_the_receiving_app_id_is_not_taken_for_the_author():
    everything = parse_hubspot_events(fixture("hubspot_deal_batch.json"), None)
    assert len(everything) == 4  # with no app id of ours, our write is not recognised: kept
    other = parse_hubspot_events(fixture("hubspot_deal_batch.json"), "2931120")
    assert "18230945733" not in {n.record_ids[0] for n in other}
    assert len(other) == 3


def test_a_retried_event_has_the_same_key_and_another_property_another_key():
    batch = json.loads(fixture("hubspot_deal_batch.json"))
    retry = dict(batch[0], eventId=4101286121, attemptNumber=3)
    other_property = dict(batch[0], propertyName="amount", propertyValue="125000")
    notices = parse_hubspot_events(json.dumps([batch[0], retry, other_property]).encode(),
                                   OUR_APP_ID)
    assert len(notices) == 2  # the retry within the batch collapses into the first
    (first,) = parse_hubspot_events(json.dumps([batch[0]]).encode(), OUR_APP_ID)
    (again,) = parse_hubspot_events(json.dumps([retry]).encode(), OUR_APP_ID)
    assert first.dedupe_key == again.dedupe_key
    assert notices[1].dedupe_key != first.dedupe_key


def test_hubspots_documented_example_batch_is_read():
    assert parse_hubspot_events(fixture("hubspot_documented_example.json"), OUR_APP_ID) == []
    notices = parse_hubspot_events(fixture("hubspot_documented_example.json"), OUR_APP_ID,
                                   object_type="contact")
    assert [(n.object_type, n.record_ids[0]) for n in notices] == [("contact", "1246965"),
                                                                   ("contact", "1246978")]


def test_generic_object_events_name_the_object_from_its_type_id():
    body = json.dumps([{"subscriptionType": "object.propertyChange", "objectTypeId": "0-3",
                        "subscriptionId": 9, "portalId": 33, "occurredAt": 1, "objectId": 5,
                        "propertyName": "amount", "changeSource": "CRM_UI"},
                       {"subscriptionType": "object.creation", "objectTypeId": "2-1234567",
                        "subscriptionId": 9, "portalId": 33, "occurredAt": 1, "objectId": 6},
                       {"subscriptionType": "deal.associationChange", "subscriptionId": 9,
                        "portalId": 33, "occurredAt": 1, "fromObjectId": 1, "toObjectId": 2}])
    assert [n.record_ids for n in parse_hubspot_events(body.encode(), OUR_APP_ID)] == [("5",)]
    custom = parse_hubspot_events(body.encode(), OUR_APP_ID, object_type="2-1234567")
    assert [n.record_ids for n in custom] == [("6",)]


@pytest.mark.parametrize("body", [
    b"",
    b"{}",
    b'{"events": []}',
    b"[1]",
    b"[[]]",
    b'[{"subscriptionType": "deal.creation"}]',
    b'[{"subscriptionType": "deal.creation", "subscriptionId": 1, "portalId": 2, '
    b'"occurredAt": 3}]',
    b'[{"subscriptionType": "deal.creation", "subscriptionId": 1, "portalId": 2, '
    b'"occurredAt": 3, "objectId": "5"}]',
    b'[{"subscriptionType": "deal.creation", "subscriptionId": true, "portalId": 2, '
    b'"occurredAt": 3, "objectId": 5}]',
    b'[{"subscriptionType": "dealcreation", "subscriptionId": 1, "portalId": 2, '
    b'"occurredAt": 3, "objectId": 5}]',
    b'[{"subscriptionType": "object.creation", "subscriptionId": 1, "portalId": 2, '
    b'"occurredAt": 3, "objectId": 5}]',
    b'[{"subscriptionType": "deal.propertyChange", "subscriptionId": 1, "portalId": 2, '
    b'"occurredAt": 3, "objectId": 5, "propertyName": 7}]',
    b"[" * 50_000 + b"]" * 50_000,
], ids=lambda b: repr(b[:40]))
def test_malformed_hubspot_batches_are_400(body):
    assert rejected(parse_hubspot_events, body, OUR_APP_ID).status == 400


# -- fuzzing: any bytes give a notice list or the rejection, never another exception ---------


def _only_rejection(call, *args) -> None:
    try:
        call(*args)
    except WebhookRejected as exc:
        assert exc.status in (400, 401)


@given(st.binary(max_size=2048))
@FUZZ
def test_any_bytes_into_the_json_parsers(body):
    _only_rejection(parse_signed_json, body)
    _only_rejection(parse_hubspot_events, body, OUR_APP_ID)
    _only_rejection(parse_cdc_event, body, OUR_CLIENT)


@given(st.binary(max_size=2048))
@FUZZ
def test_any_bytes_into_the_outbound_message_parser(body):
    _only_rejection(parse_outbound_message, body, ORG_18, True)


@given(st.binary(max_size=2048),
       st.dictionaries(st.sampled_from(["X-Connector-Timestamp", "x-connector-signature",
                                        "X-Connector-Signature", "X-HubSpot-Signature-v3",
                                        "X-HubSpot-Request-Timestamp", "Other"]),
                       st.one_of(st.text(max_size=80), st.integers(), st.none())),
       st.text(max_size=60), st.floats(allow_nan=True, allow_infinity=True))
@FUZZ
def test_any_request_into_the_signature_checks(body, headers, uri, now):
    _only_rejection(verify_signed_json, SECRET, headers, body, now)
    _only_rejection(verify_hubspot_v3, HUBSPOT_SECRET, "POST", uri, body, headers, now)


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.sampled_from(["ids", "records", "Id", "detail", "payload", "ChangeEventHeader",
                         "recordIds", "changeType", "entityName", "transactionKey",
                         "sequenceNumber", "changeOrigin", "subscriptionType", "subscriptionId",
                         "portalId", "occurredAt", "objectId", "objectTypeId", "propertyName",
                         "changeSource", "sourceId", "x"]), inner, max_size=6),
    max_leaves=30)


@given(_JSON)
@FUZZ
def test_any_json_shape_into_the_json_parsers(doc):
    body = json.dumps(doc).encode()
    _only_rejection(parse_signed_json, body)
    _only_rejection(parse_hubspot_events, body, OUR_APP_ID)
    _only_rejection(parse_cdc_event, doc, OUR_CLIENT)


@given(st.data())
@FUZZ
def test_damaged_real_bodies_give_a_notice_or_the_rejection(data):
    for name, call in [("salesforce_outbound_opportunity.xml",
                        lambda b: parse_outbound_message(b, ORG_18, True)),
                       ("hubspot_deal_batch.json", lambda b: parse_hubspot_events(b, OUR_APP_ID)),
                       ("eventbridge_cdc_opportunity_update.json",
                        lambda b: parse_cdc_event(b, OUR_CLIENT)),
                       ("signed_json_records.json", parse_signed_json)]:
        body = bytearray(fixture(name))
        for _ in range(data.draw(st.integers(1, 4))):
            at = data.draw(st.integers(0, len(body) - 1))
            body[at] = data.draw(st.integers(0, 255))
        cut = data.draw(st.integers(0, len(body)))
        _only_rejection(call, bytes(body[:cut]))
