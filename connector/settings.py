"""The connector's settings: every environment variable (and `.env` entry), secrets kept secret.

`load_settings()` reads them and turns a bad value into a ConfigurationError that names the
variable (never its value); `salesforce_auth()` and `salesforce_login()` tell which way of logging
in to Salesforce the settings allow.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from connector.core.validation import EXPECTED, constraint, either
from connector.errors import ConfigurationError, Text
from connector.formatting import listed

AuthMethod = Literal["session", "jwt", "password", "client_credentials"]

AUTH_LABELS: dict[AuthMethod, str] = {
    "session": "existing session",
    "jwt": "JWT bearer",
    "password": "username-password",
    "client_credentials": "client credentials",
}

# What to set for each way in; shown whenever none of them is complete.
LOGIN_HELP = Text(
    "SALESFORCE_USERNAME, SALESFORCE_PASSWORD and SALESFORCE_SECURITY_TOKEN (username-password; "
    "the token may be left out when the org trusts this network); SALESFORCE_CLIENT_ID, "
    "SALESFORCE_USERNAME and SALESFORCE_PRIVATE_KEY_FILE (JWT bearer); SALESFORCE_CLIENT_ID, "
    "SALESFORCE_CLIENT_SECRET and SALESFORCE_DOMAIN=<your My Domain, e.g. acme.my> "
    "(client credentials)")
AUTH_HELP = Text("set one of: SALESFORCE_INSTANCE_URL and SALESFORCE_ACCESS_TOKEN (an existing "
                 "session); {ways}", ways=LOGIN_HELP)

_API_VERSION = re.compile(r"^\d{2,3}\.0$")


class Settings(BaseSettings):
    """Every variable of SPEC section 4, plus the Salesforce client's own knobs."""

    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8",
                                      extra="ignore", case_sensitive=False)

    # Salesforce: an existing session ...
    salesforce_instance_url: str | None = None
    salesforce_access_token: SecretStr | None = None
    # ... or a login: username-password, JWT bearer, client credentials
    salesforce_username: str | None = None
    salesforce_password: SecretStr | None = None
    salesforce_security_token: SecretStr | None = None
    salesforce_domain: str = "login"      # 'login', 'test' (sandbox) or a My Domain ('acme.my')
    salesforce_client_id: str | None = None
    salesforce_private_key_file: Path | None = None
    salesforce_client_secret: SecretStr | None = None
    salesforce_api_version: str | None = None   # None: simple-salesforce's default
    # How the connector behaves against the API
    salesforce_client_name: str = "crm-automation"   # Sforce-Call-Options: client=<this>
    salesforce_timeout: float = Field(120.0, gt=0)   # seconds for one HTTP request
    salesforce_quota_run_percent: float = Field(25.0, gt=0, le=100)
    salesforce_quota_total_percent: float = Field(80.0, gt=0, le=100)

    # Webhooks
    webhook_secret: SecretStr | None = None
    salesforce_org_id: str | None = None
    hubspot_client_secret: SecretStr | None = None
    hubspot_access_token: SecretStr | None = None   # private app token, or an OAuth access token
    hubspot_app_id: str | None = None               # this app's own writes' webhooks: dropped
    hubspot_quota_run_percent: float = Field(25.0, gt=0, le=100)
    hubspot_quota_total_percent: float = Field(80.0, gt=0, le=100)
    crm: Literal["salesforce", "hubspot"] | None = None   # CRM=hubspot picks mappings/hubspot.yaml

    # State, ERP, email
    state_url: str = "sqlite:///.crm-automation/state.db"
    erp_url: str | None = None
    erp_database: str | None = None
    erp_username: str | None = None
    erp_password: SecretStr | None = None
    smtp_url: str | None = None
    email_from: str | None = None
    # Email marketing (audience actions)
    mailchimp_api_key: SecretStr | None = None   # ends in the data centre, e.g. -us21
    brevo_api_key: SecretStr | None = None

    # Approvals: the key that signs one-click links, and the address they point to
    approval_secret: SecretStr | None = None
    public_url: str | None = None     # e.g. https://abc123.execute-api.eu-west-1.amazonaws.com

    @field_validator("salesforce_domain")
    @classmethod
    def _domain(cls, value: str) -> str:
        # Admins paste 'https://acme.my.salesforce.com/'; simple-salesforce wants 'acme.my'.
        text = re.sub(r"^https?://", "", value.strip()).rstrip("/")
        text = re.sub(r"\.salesforce\.com$", "", text, flags=re.IGNORECASE)
        if not text or "/" in text:
            raise ValueError(Text("use 'login', 'test' or your My Domain such as 'acme.my'"))
        return text

    @field_validator("salesforce_instance_url")
    @classmethod
    def _instance_url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        text = value.strip().rstrip("/")
        if not text.startswith("https://"):
            raise ValueError(Text("use the full https:// address, e.g. "
                                  "https://acme.my.salesforce.com"))
        return text

    @field_validator("salesforce_client_name")
    @classmethod
    def _client_name(cls, value: str) -> str:
        # It travels in a header (Sforce-Call-Options: client=<name>) and comes back in change
        # events' changeOrigin, where a comma or a space would break the parsing.
        text = value.strip()
        if not re.fullmatch(r"[A-Za-z0-9_.\-/]{1,80}", text):
            raise ValueError(Text("use letters, digits and _ . - / only (e.g. crm-automation)"))
        return text

    @field_validator("salesforce_api_version")
    @classmethod
    def _api_version(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        text = value.strip().removeprefix("v")
        if not _API_VERSION.match(text):
            raise ValueError(Text("use a version such as 62.0"))
        return text

    @field_validator("salesforce_username", "salesforce_client_id", "salesforce_org_id",
                     "erp_url", "erp_database", "erp_username", "smtp_url", "email_from",
                     "hubspot_app_id")
    @classmethod
    def _blank_is_unset(cls, value: str | None) -> str | None:
        return (value.strip() or None) if value is not None else None

    def secrets(self) -> list[str]:
        """Every secret value that is set, so messages can be checked or scrubbed for them."""
        values = [self.salesforce_access_token, self.salesforce_password,
                  self.salesforce_security_token, self.salesforce_client_secret,
                  self.webhook_secret, self.hubspot_client_secret, self.erp_password,
                  self.approval_secret, self.hubspot_access_token, self.mailchimp_api_key,
                  self.brevo_api_key]
        return [s.get_secret_value() for s in values
                if s is not None and s.get_secret_value()]


def load_settings(**overrides: Any) -> Settings:
    """The settings from the environment and `.env`; a bad value is a ConfigurationError that
    names every variable at fault (never the value: it may be a secret)."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        problems = [Text("{variable}: {problem}",
                         variable=".".join(str(p) for p in err["loc"]).upper(),
                         problem=_problem(err)) for err in exc.errors()]
        raise ConfigurationError(Text("invalid settings: {problems}",
                                      problems=listed(problems, "; "))) from None


def _problem(error: Any) -> str:
    """What is wrong with a setting, in the person's language where we have the words: a
    value of the wrong type, a constraint, our validator's own; else pydantic's (English)."""
    kind, ctx = error["type"], error.get("ctx") or {}
    if kind in EXPECTED:
        return Text("expected {words}", words=EXPECTED[kind])
    choices = re.findall(r"'([^']*)'", str(ctx.get("expected"))) if kind == "literal_error" \
        else []
    if choices:
        return Text("expected {words}", words=either([f"'{c}'" for c in choices]))
    return constraint(kind, ctx) or str(error["msg"])


def _set(value: object) -> bool:
    if isinstance(value, SecretStr):
        return bool(value.get_secret_value())
    return value is not None and value != ""


def salesforce_login(settings: Settings) -> AuthMethod | None:
    """The way the connector can log in anew (to start, or to renew an expired session), or
    None when the settings hold no complete credentials. A username picks a user's flow (JWT
    when a key is given, else username-password); client credentials run as the app's user."""
    s = settings
    if _set(s.salesforce_client_id) and _set(s.salesforce_username) and \
            _set(s.salesforce_private_key_file):
        return "jwt"
    if _set(s.salesforce_username) and _set(s.salesforce_password):
        return "password"
    if _set(s.salesforce_client_id) and _set(s.salesforce_client_secret) and \
            s.salesforce_domain not in ("login", "test"):
        return "client_credentials"
    return None


def salesforce_auth(settings: Settings) -> AuthMethod:
    """How the connector first authenticates: an existing session when one is given (a login,
    if also possible, renews it when it expires), else a login. Raises ConfigurationError saying
    what is missing when no way is complete."""
    s = settings
    if _set(s.salesforce_instance_url) and _set(s.salesforce_access_token):
        return "session"
    login = salesforce_login(s)
    if login is not None:
        return login
    hints = _missing(s)
    if hints:
        raise ConfigurationError(Text("Salesforce credentials are incomplete ({missing}); {help}",
                                      missing=listed(hints, "; "), help=AUTH_HELP))
    raise ConfigurationError(Text("Salesforce credentials are incomplete; {help}",
                                  help=AUTH_HELP))


def _missing(s: Settings) -> list[str]:
    """What each half-configured way lacks, so the admin sees the one variable to add."""
    hints: list[str] = []
    if _set(s.salesforce_instance_url) != _set(s.salesforce_access_token):
        hints.append(Text("an existing session needs both SALESFORCE_INSTANCE_URL and "
                          "SALESFORCE_ACCESS_TOKEN"))
    if _set(s.salesforce_private_key_file) and not (_set(s.salesforce_client_id)
                                                    and _set(s.salesforce_username)):
        hints.append(Text("JWT bearer needs SALESFORCE_CLIENT_ID and SALESFORCE_USERNAME besides "
                          "SALESFORCE_PRIVATE_KEY_FILE"))
    if _set(s.salesforce_client_secret) and not _set(s.salesforce_client_id):
        hints.append(Text("client credentials need SALESFORCE_CLIENT_ID besides "
                          "SALESFORCE_CLIENT_SECRET"))
    if _set(s.salesforce_client_id) and _set(s.salesforce_client_secret) and \
            s.salesforce_domain in ("login", "test"):
        # https://help.salesforce.com/s/articleView?id=sf.remoteaccess_oauth_client_credentials_flow.htm
        hints.append(Text("client credentials need SALESFORCE_DOMAIN set to your My Domain (e.g. "
                          "acme.my), not '{domain}': Salesforce issues these tokens on My Domain "
                          "only", domain=s.salesforce_domain))
    if _set(s.salesforce_username) != _set(s.salesforce_password) and \
            not _set(s.salesforce_private_key_file):
        hints.append(Text("username-password needs both SALESFORCE_USERNAME and "
                          "SALESFORCE_PASSWORD"))
    return hints


__all__ = ["AUTH_HELP", "AUTH_LABELS", "LOGIN_HELP", "AuthMethod", "Settings", "load_settings",
           "salesforce_auth", "salesforce_login"]
