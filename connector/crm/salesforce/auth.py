"""Logging in to Salesforce: a new session id and instance host for each of the four methods
(an existing session is used as it is), through simple-salesforce's SalesforceLogin, with
refusals turned into connector.errors and a hint that says what to check."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests
from simple_salesforce import SalesforceAuthenticationFailed, SalesforceLogin

from connector.errors import ConfigurationError, FatalError, RetriableError, Text
from connector.settings import AUTH_LABELS, AuthMethod, Settings

LOGIN_HINTS: dict[AuthMethod, str] = {
    "session": Text("set a fresh SALESFORCE_ACCESS_TOKEN"),
    "password": Text("check SALESFORCE_USERNAME, SALESFORCE_PASSWORD and "
                     "SALESFORCE_SECURITY_TOKEN (reset the token from the user's settings if the "
                     "password changed), and SALESFORCE_DOMAIN ('test' for a sandbox)"),
    "jwt": Text("check SALESFORCE_CLIENT_ID (the connected app's consumer key), "
                "SALESFORCE_USERNAME, that SALESFORCE_PRIVATE_KEY_FILE matches the app's "
                "certificate and that the user is pre-authorized for the app"),
    "client_credentials": Text("check SALESFORCE_CLIENT_ID, SALESFORCE_CLIENT_SECRET, that "
                               "SALESFORCE_DOMAIN is your My Domain and that the connected app "
                               "has client credentials enabled with a run-as user"),
}


def login(settings: Settings, method: AuthMethod, http: requests.Session, version: str, *,
          scrub: Callable[[str], str], retry_after: Callable[[], float | None]
          ) -> tuple[str, str]:
    """(session id, instance host) of a new login; FatalError when refused, RetriableError
    when Salesforce is busy or out of reach (`retry_after` is the wait it asked for)."""
    try:
        return _login(settings, method, http, version)
    except SalesforceAuthenticationFailed as exc:
        code, why = exc.code, (exc.auth_message or "").strip()[:300]
        text = Text("Salesforce refused the {method} login ({reason})",
                    method=AUTH_LABELS[method],
                    reason=scrub(f"{code}{': ' + why if why else ''}"))
        if isinstance(code, int) and (code == 429 or code >= 500):
            raise RetriableError(Text("{refused}: Salesforce is busy, try again", refused=text),
                                 retry_after()) from None
        raise FatalError(Text("{refused}: {hint}", refused=text, hint=LOGIN_HINTS[method])
                         ) from None
    except requests.Timeout:
        raise RetriableError(Text("the Salesforce login did not answer within {seconds} s",
                                  seconds=format(settings.salesforce_timeout, "g"))) from None
    except requests.ConnectionError as exc:
        raise RetriableError(Text("cannot reach Salesforce to log in ({error})",
                                  error=type(exc).__name__)) from None


def _login(s: Settings, method: AuthMethod, http: requests.Session, version: str
           ) -> tuple[str, str]:
    domain = s.salesforce_domain
    if method == "jwt":
        key_file = s.salesforce_private_key_file or Path()
        try:
            key = Path(key_file).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigurationError(Text("SALESFORCE_PRIVATE_KEY_FILE: cannot read {file} "
                                          "({reason})", file=str(key_file),
                                          reason=exc.strerror)) from None
        # The JWT's audience must be login or test.salesforce.com even when the token is
        # asked of a My Domain; simple-salesforce takes `domain` as the audience and
        # `instance_url` as the token host.
        # https://help.salesforce.com/s/articleView?id=xcloud.remoteaccess_oauth_jwt_flow.htm
        sandbox = domain == "test" or ".sandbox." in f".{domain}."
        own = domain not in ("login", "test")
        return SalesforceLogin(username=s.salesforce_username,
                               consumer_key=s.salesforce_client_id, privatekey=key,
                               domain="test" if sandbox else "login",
                               instance_url=domain if own else None, session=http)
    if method == "client_credentials":
        # https://help.salesforce.com/s/articleView?id=sf.remoteaccess_oauth_client_credentials_flow.htm
        return SalesforceLogin(consumer_key=s.salesforce_client_id,
                               consumer_secret=secret(s.salesforce_client_secret),
                               domain=domain, session=http)
    # Username-password over SOAP login(); the security token is appended to the password,
    # and may be empty when the org trusts the caller's IP range.
    return SalesforceLogin(username=s.salesforce_username,
                           password=secret(s.salesforce_password),
                           security_token=secret(s.salesforce_security_token),
                           sf_version=version, domain=domain, session=http)


def secret(value: Any) -> str:
    return value.get_secret_value() if value is not None else ""


__all__ = ["LOGIN_HINTS", "login", "secret"]
