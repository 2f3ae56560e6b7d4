"""Logging in to Salesforce every way admins do, renewing an expired session once, and never
letting a secret into a message or a log."""

import base64
import json
import logging
from datetime import UTC, datetime
from urllib.parse import parse_qs

import jwt
import pytest
import responses
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from connector.core.mapping import Mapping
from connector.crm import Crm
from connector.crm.salesforce.client import SalesforceCrm
from connector.errors import ConfigurationError, FatalError
from connector.retry import RetryPolicy
from connector.settings import Settings
from tests import salesforce_fixtures as fx

V = "59.0"  # simple-salesforce's default API version
INSTANCE = "https://acme.my.salesforce.com"
QUERY = f"{INSTANCE}/services/data/v{V}/query/"
SOAP_LOGIN = f"https://login.salesforce.com/services/Soap/u/{V}"
TOKEN_URL = "https://login.salesforce.com/services/oauth2/token"

ACCESS_TOKEN = "00DRO000000abcd!AQ4AQOldSessionToken.aaaaaaaaaaaaaaaa"
NEW_TOKEN = "00DRO000000abcd!AQ4AQNewSessionToken.bbbbbbbbbbbbbbbb"
PASSWORD = "Tr0ub4dor&3-horse"
SECURITY_TOKEN = "AbCdEfGhIjKlMnOpQrSt"
CLIENT_SECRET = "8F6A4C2E0B1D3F5A7C9E1B3D5F7A9C0E2B4D6F8A"
SECRETS = (ACCESS_TOKEN, NEW_TOKEN, PASSWORD, SECURITY_TOKEN, CLIENT_SECRET)

MAPPING = Mapping(crm="salesforce", object="Opportunity", id_field="Id",
                  modified_field="SystemModstamp",
                  fields={"name": "Name", "probability": "Probability"},
                  writeback=("probability",), source="mappings/salesforce.yaml")

EMPTY_PAGE = {"totalSize": 0, "done": True, "records": []}
EXPIRED = [{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}]


def soap_login_response(session_id: str, host: str = "acme.my.salesforce.com") -> str:
    # https://developer.salesforce.com/docs/atlas.en-us.api.meta/api/sforce_api_calls_login_loginresult.htm
    return (
        '<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope '
        'xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" '
        'xmlns="urn:partner.soap.sforce.com" '
        'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><soapenv:Body><loginResponse>'
        f'<result><metadataServerUrl>https://{host}/services/Soap/m/{V}/00DRO000000abcd'
        '</metadataServerUrl><passwordExpired>false</passwordExpired><sandbox>false</sandbox>'
        f'<serverUrl>https://{host}/services/Soap/u/{V}/00DRO000000abcd</serverUrl>'
        f'<sessionId>{session_id}</sessionId><userId>005RO000000xyzAYAQ</userId>'
        '<userInfo><organizationId>00DRO000000abcdMAA</organizationId>'
        '<userName>integration@acme.example</userName></userInfo></result>'
        '</loginResponse></soapenv:Body></soapenv:Envelope>')


SOAP_INVALID_LOGIN = (
    '<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope '
    'xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" '
    'xmlns:sf="urn:fault.partner.soap.sforce.com" '
    'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><soapenv:Body><soapenv:Fault>'
    '<faultcode>sf:INVALID_LOGIN</faultcode><faultstring>INVALID_LOGIN: Invalid username, '
    'password, security token; or user locked out.</faultstring><detail>'
    '<sf:LoginFault xsi:type="sf:LoginFault"><sf:exceptionCode>INVALID_LOGIN'
    '</sf:exceptionCode><sf:exceptionMessage>Invalid username, password, security token; or '
    'user locked out.</sf:exceptionMessage></sf:LoginFault></detail></soapenv:Fault>'
    '</soapenv:Body></soapenv:Envelope>')


def oauth_token_response(token: str, instance: str = INSTANCE) -> dict[str, str]:
    # https://help.salesforce.com/s/articleView?id=sf.remoteaccess_oauth_jwt_flow.htm
    return {"access_token": token, "scope": "api", "instance_url": instance,
            "id": "https://login.salesforce.com/id/00DRO000000abcdMAA/005RO000000xyzAYAQ",
            "token_type": "Bearer", "issued_at": "1764151200000",
            "signature": "dGhpcyBpcyBub3QgYSByZWFsIHNpZ25hdHVyZQ=="}


api, clean_environment, sleeps = fx.api, fx.clean_environment, fx.sleeps  # shared fixtures


def crm(sleeps: list[float], **values) -> SalesforceCrm:
    return SalesforceCrm(Settings(_env_file=None, **values), MAPPING,
                         retry=RetryPolicy(sleep=sleeps.append))


def poll(c: SalesforceCrm) -> list:
    return list(c.changed(None, datetime(2026, 11, 26, tzinfo=UTC)))


def bearer(call) -> str:
    return call.request.headers["Authorization"].removeprefix("Bearer ")


def form(call) -> dict[str, str]:
    body = call.request.body
    text = body.decode() if isinstance(body, bytes) else body
    return {k: v[0] for k, v in parse_qs(text).items()}


# --- the four ways in ---------------------------------------------------------------------

def test_an_existing_session_needs_no_login(api, sleeps):
    api.add(responses.GET, QUERY, json=EMPTY_PAGE)
    c = crm(sleeps, salesforce_instance_url=INSTANCE, salesforce_access_token=ACCESS_TOKEN)
    assert isinstance(c, Crm)
    assert poll(c) == []
    assert bearer(api.calls[0]) == ACCESS_TOKEN
    assert (c.calls, c.auth_calls) == (1, 0)


def test_username_password_and_security_token(api, sleeps):
    api.add(responses.POST, SOAP_LOGIN, body=soap_login_response(NEW_TOKEN),
            content_type="text/xml")
    api.add(responses.GET, QUERY, json=EMPTY_PAGE)
    c = crm(sleeps, salesforce_username="integration@acme.example", salesforce_password=PASSWORD,
            salesforce_security_token=SECURITY_TOKEN)
    poll(c)
    login, query = api.calls
    body = login.request.body.decode() if isinstance(login.request.body, bytes) \
        else login.request.body
    assert "<n1:username>integration@acme.example</n1:username>" in body
    assert f"{PASSWORD.replace('&', '&amp;')}{SECURITY_TOKEN}</n1:password>" in body
    assert query.request.url.startswith(QUERY)           # the instance the login named
    assert bearer(query) == NEW_TOKEN
    assert (c.calls, c.auth_calls) == (1, 1)              # the login is counted apart


def test_a_sandbox_logs_in_at_test_salesforce_com(api, sleeps):
    api.add(responses.POST, f"https://test.salesforce.com/services/Soap/u/{V}",
            body=soap_login_response(NEW_TOKEN, "acme--uat.sandbox.my.salesforce.com"))
    api.add(responses.GET, f"https://acme--uat.sandbox.my.salesforce.com/services/data/v{V}/"
            "query/", json=EMPTY_PAGE)
    c = crm(sleeps, salesforce_username="integration@acme.example.uat",
            salesforce_password=PASSWORD, salesforce_domain="test")
    poll(c)
    assert c.auth_calls == 1 and c.calls == 1


@pytest.fixture(scope="module")
def rsa_key():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def write_key(key, folder) -> object:
    key_file = folder / "server.key"
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return key_file


def test_jwt_bearer(api, sleeps, tmp_path, rsa_key):
    key = rsa_key
    key_file = write_key(key, tmp_path)
    api.add(responses.POST, TOKEN_URL, json=oauth_token_response(NEW_TOKEN))
    api.add(responses.GET, QUERY, json=EMPTY_PAGE)
    c = crm(sleeps, salesforce_client_id="3MVG9FakeConsumerKey",
            salesforce_username="integration@acme.example", salesforce_private_key_file=key_file)
    poll(c)
    sent = form(api.calls[0])
    assert sent["grant_type"] == "urn:ietf:params:oauth:grant-type:jwt-bearer"
    claims = jwt.decode(sent["assertion"], key.public_key(), algorithms=["RS256"],
                        audience="https://login.salesforce.com")
    assert claims["iss"] == "3MVG9FakeConsumerKey"
    assert claims["sub"] == "integration@acme.example"
    assert bearer(api.calls[1]) == NEW_TOKEN
    assert (c.calls, c.auth_calls) == (1, 1)


@pytest.mark.parametrize(("domain", "audience"), [
    ("acme.my", "https://login.salesforce.com"),
    ("acme--uat.sandbox.my", "https://test.salesforce.com"),
])
def test_jwt_on_my_domain_keeps_the_login_audience(api, sleeps, tmp_path, rsa_key, domain,
                                                    audience):
    api.add(responses.POST, f"https://{domain}.salesforce.com/services/oauth2/token",
            json=oauth_token_response(NEW_TOKEN))
    api.add(responses.GET, QUERY, json=EMPTY_PAGE)
    c = crm(sleeps, salesforce_client_id="3MVG9FakeConsumerKey", salesforce_domain=domain,
            salesforce_username="integration@acme.example",
            salesforce_private_key_file=write_key(rsa_key, tmp_path))
    poll(c)
    jwt.decode(form(api.calls[0])["assertion"], rsa_key.public_key(), algorithms=["RS256"],
               audience=audience)
    assert c.auth_calls == 1


def test_client_credentials(api, sleeps):
    api.add(responses.POST, f"{INSTANCE}/services/oauth2/token",
            json=oauth_token_response(NEW_TOKEN))
    api.add(responses.GET, QUERY, json=EMPTY_PAGE)
    c = crm(sleeps, salesforce_client_id="3MVG9FakeConsumerKey",
            salesforce_client_secret=CLIENT_SECRET, salesforce_domain="acme.my")
    poll(c)
    token_call = api.calls[0]
    assert form(token_call) == {"grant_type": "client_credentials"}
    basic = base64.b64decode(token_call.request.headers["Authorization"].removeprefix("Basic "))
    assert basic.decode() == f"3MVG9FakeConsumerKey:{CLIENT_SECRET}"
    assert bearer(api.calls[1]) == NEW_TOKEN


def test_no_credentials_is_a_configuration_error_before_any_call(api, sleeps):
    with pytest.raises(ConfigurationError, match="SALESFORCE_ACCESS_TOKEN"):
        crm(sleeps)
    assert len(api.calls) == 0


def test_an_unreadable_private_key_names_the_variable(api, sleeps, tmp_path):
    c = crm(sleeps, salesforce_client_id="3MVG9", salesforce_username="u@acme.example",
            salesforce_private_key_file=tmp_path / "missing.key")
    with pytest.raises(ConfigurationError, match="SALESFORCE_PRIVATE_KEY_FILE"):
        poll(c)


def test_a_refused_login_stops_with_what_to_check(api, sleeps):
    api.add(responses.POST, SOAP_LOGIN, body=SOAP_INVALID_LOGIN, status=500,
            content_type="text/xml")
    c = crm(sleeps, salesforce_username="integration@acme.example", salesforce_password=PASSWORD,
            salesforce_security_token=SECURITY_TOKEN)
    with pytest.raises(FatalError) as caught:
        poll(c)
    message = str(caught.value)
    assert "INVALID_LOGIN" in message and "SALESFORCE_SECURITY_TOKEN" in message
    assert sleeps == [] and c.auth_calls == 1 and c.calls == 0   # refused is not retried


def test_a_refused_oauth_login_stops(api, sleeps):
    api.add(responses.POST, f"{INSTANCE}/services/oauth2/token", status=400,
            json={"error": "invalid_client", "error_description": "invalid client credentials"})
    c = crm(sleeps, salesforce_client_id="3MVG9FakeConsumerKey",
            salesforce_client_secret=CLIENT_SECRET, salesforce_domain="acme.my")
    with pytest.raises(FatalError, match="invalid_client"):
        poll(c)


# --- an expired session ---------------------------------------------------------------------

def test_an_expired_session_is_renewed_once(api, sleeps):
    api.add(responses.GET, QUERY, status=401, json=EXPIRED)
    api.add(responses.POST, SOAP_LOGIN, body=soap_login_response(NEW_TOKEN))
    api.add(responses.GET, QUERY, json=EMPTY_PAGE)
    c = crm(sleeps, salesforce_instance_url=INSTANCE, salesforce_access_token=ACCESS_TOKEN,
            salesforce_username="integration@acme.example", salesforce_password=PASSWORD)
    assert poll(c) == []
    first, login, second = api.calls
    assert bearer(first) == ACCESS_TOKEN and bearer(second) == NEW_TOKEN
    assert login.request.url == SOAP_LOGIN
    assert (c.calls, c.auth_calls) == (2, 1)
    assert sleeps == []


def test_a_session_refused_again_after_renewal_stops(api, sleeps):
    def expired(request):
        # A loop of logins would never end: fail loudly instead.
        assert sum(c.request.url.startswith(QUERY) for c in api.calls) < 5, "renewal loop"
        return 401, {}, json.dumps(EXPIRED)

    api.add_callback(responses.GET, QUERY, callback=expired)
    api.add(responses.POST, SOAP_LOGIN, body=soap_login_response(NEW_TOKEN))
    c = crm(sleeps, salesforce_instance_url=INSTANCE, salesforce_access_token=ACCESS_TOKEN,
            salesforce_username="integration@acme.example", salesforce_password=PASSWORD)
    with pytest.raises(FatalError, match="again right after a new login"):
        poll(c)
    assert c.auth_calls == 1 and c.calls == 2          # renewed once, not in a loop


def test_an_expired_session_without_credentials_says_what_to_set(api, sleeps):
    api.add(responses.GET, QUERY, status=401, json=EXPIRED)
    c = crm(sleeps, salesforce_instance_url=INSTANCE, salesforce_access_token=ACCESS_TOKEN)
    with pytest.raises(FatalError) as caught:
        poll(c)
    message = str(caught.value)
    assert "expired" in message
    for name in ("SALESFORCE_ACCESS_TOKEN", "SALESFORCE_USERNAME", "SALESFORCE_PASSWORD",
                 "SALESFORCE_PRIVATE_KEY_FILE", "SALESFORCE_CLIENT_SECRET"):
        assert name in message
    assert ACCESS_TOKEN not in message
    assert c.auth_calls == 0


# --- secrets --------------------------------------------------------------------------------

def test_no_secret_reaches_a_message_or_a_log(api, sleeps, caplog):
    caplog.set_level(logging.DEBUG)
    failures: list[str] = []
    # A server that echoes what it got, a refused login, an expiry, retries: all logged.
    api.add(responses.GET, QUERY, status=400, json=[
        {"errorCode": "MALFORMED_QUERY", "message": f"unexpected token: {ACCESS_TOKEN}"}])
    with pytest.raises(Exception) as caught:
        poll(crm(sleeps, salesforce_instance_url=INSTANCE, salesforce_access_token=ACCESS_TOKEN))
    failures.append(str(caught.value))
    api.reset()

    api.add(responses.POST, SOAP_LOGIN, status=500, content_type="text/xml",
            body=SOAP_INVALID_LOGIN.replace("user locked out.",
                                            f"user locked out. {SECURITY_TOKEN}"))
    with pytest.raises(FatalError) as caught:
        poll(crm(sleeps, salesforce_username="u@acme.example", salesforce_password=PASSWORD,
                 salesforce_security_token=SECURITY_TOKEN))
    failures.append(str(caught.value))
    api.reset()

    api.add(responses.POST, f"{INSTANCE}/services/oauth2/token", status=400,
            json={"error": "invalid_client", "error_description": f"bad secret {CLIENT_SECRET}"})
    with pytest.raises(FatalError) as caught:
        poll(crm(sleeps, salesforce_client_id="3MVG9", salesforce_client_secret=CLIENT_SECRET,
                 salesforce_domain="acme.my"))
    failures.append(str(caught.value))
    api.reset()

    api.add(responses.GET, QUERY, status=503, json=[
        {"errorCode": "SERVER_UNAVAILABLE", "message": f"busy {ACCESS_TOKEN}"}])
    api.add(responses.GET, QUERY, status=401, json=EXPIRED)
    api.add(responses.POST, SOAP_LOGIN, body=soap_login_response(NEW_TOKEN))
    api.add(responses.GET, QUERY, status=503, json=[   # the session got at run time, too
        {"errorCode": "SERVER_UNAVAILABLE", "message": f"busy {NEW_TOKEN}"}])
    api.add(responses.GET, QUERY, json=EMPTY_PAGE)
    poll(crm(sleeps, salesforce_instance_url=INSTANCE, salesforce_access_token=ACCESS_TOKEN,
             salesforce_username="u@acme.example", salesforce_password=PASSWORD))

    logged = caplog.text + json.dumps([r.getMessage() for r in caplog.records])
    assert "retrying" in logged and "logging in again" in logged   # the logs were written
    assert len(failures) == 3
    for secret in SECRETS:
        assert secret not in logged
        for failure in failures:
            assert secret not in failure
