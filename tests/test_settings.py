"""Settings come from the environment and `.env`, secrets stay secret, and the Salesforce auth
helper picks the way in the settings allow or says what to set."""

from pathlib import Path

import pytest

from connector.errors import ConfigurationError
from connector.settings import Settings, load_settings, salesforce_auth, salesforce_login

TOKEN = "00DRO000000abcd!AQ4AQFakeAccessToken.abcdefghij"
PASSWORD = "Tr0ub4dor&3-horse"
CLIENT_SECRET = "8F6A4C2E0B1D3F5A7C9E1B3D5F7A9C0E2B4D6F8A"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch, tmp_path):
    """No variable or .env of the machine running the tests leaks in."""
    import os

    for name in list(os.environ):
        if name.upper().startswith(("SALESFORCE_", "WEBHOOK_", "HUBSPOT_", "STATE_", "ERP_",
                                    "SMTP_", "EMAIL_")):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def settings(**values) -> Settings:
    return Settings(_env_file=None, **values)


def test_defaults():
    s = settings()
    assert s.state_url == "sqlite:///.crm-automation/state.db"
    assert s.salesforce_domain == "login"
    assert s.salesforce_api_version is None
    assert s.salesforce_client_name == "crm-automation"
    assert (s.salesforce_quota_run_percent, s.salesforce_quota_total_percent) == (25.0, 80.0)


def test_every_spec_variable_is_read_from_the_environment(monkeypatch, tmp_path):
    key = tmp_path / "server.key"
    env = {
        "SALESFORCE_INSTANCE_URL": "https://acme.my.salesforce.com",
        "SALESFORCE_ACCESS_TOKEN": TOKEN,
        "SALESFORCE_USERNAME": "integration@acme.example",
        "SALESFORCE_PASSWORD": PASSWORD,
        "SALESFORCE_SECURITY_TOKEN": "AbCdEfGhIjKlMnOp",
        "SALESFORCE_DOMAIN": "test",
        "SALESFORCE_CLIENT_ID": "3MVG9fakeconsumerkey",
        "SALESFORCE_PRIVATE_KEY_FILE": str(key),
        "SALESFORCE_CLIENT_SECRET": CLIENT_SECRET,
        "SALESFORCE_API_VERSION": "62.0",
        "WEBHOOK_SECRET": "whsec-0123456789",
        "SALESFORCE_ORG_ID": "00DRO000000abcd",
        "HUBSPOT_CLIENT_SECRET": "hs-secret-0123",
        "STATE_URL": "dynamodb://crm-state",
        "ERP_URL": "https://erp.example/tryton",
        "ERP_DATABASE": "sales",
        "ERP_USERNAME": "connector",
        "ERP_PASSWORD": "erp-pass-0123",
        "SMTP_URL": "smtp://mail.example:25",
        "EMAIL_FROM": "crm@example.com",
        "MAILCHIMP_API_KEY": "mc-0123456789abcdef-us21",
        "BREVO_API_KEY": "xkeysib-0123456789",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    s = settings()
    assert s.salesforce_access_token is not None
    assert s.salesforce_access_token.get_secret_value() == TOKEN
    assert s.salesforce_private_key_file == key
    assert s.salesforce_domain == "test"
    assert s.state_url == "dynamodb://crm-state"
    assert s.erp_database == "sales" and s.email_from == "crm@example.com"
    assert s.salesforce_org_id == "00DRO000000abcd"
    # Secrets never show in the settings' own text, which may end up in a log.
    shown = repr(s) + str(s) + str(s.model_dump())
    for secret in s.secrets():
        assert secret not in shown
    assert set(s.secrets()) == {TOKEN, PASSWORD, "AbCdEfGhIjKlMnOp", CLIENT_SECRET,
                                "whsec-0123456789", "hs-secret-0123", "erp-pass-0123",
                                "mc-0123456789abcdef-us21", "xkeysib-0123456789"}


def test_a_dotenv_file_is_read(tmp_path):
    dotenv = tmp_path / ".env"
    dotenv.write_text(f"SALESFORCE_INSTANCE_URL=https://acme.my.salesforce.com\n"
                      f"SALESFORCE_ACCESS_TOKEN={TOKEN}\nSALESFORCE_CLIENT_NAME=acme-sync\n")
    s = Settings(_env_file=dotenv)
    assert s.salesforce_client_name == "acme-sync"
    assert salesforce_auth(s) == "session"


def test_the_default_dotenv_is_the_one_in_the_working_directory(tmp_path):
    Path(".env").write_text("STATE_URL=sqlite:///elsewhere.db\n")
    assert load_settings().state_url == "sqlite:///elsewhere.db"


@pytest.mark.parametrize(("given", "kept"), [
    ("acme.my", "acme.my"),
    ("https://acme.my.salesforce.com/", "acme.my"),
    ("ACME.my.salesforce.com", "ACME.my"),
    ("test", "test"),
])
def test_the_domain_is_taken_in_any_usual_form(given, kept):
    assert settings(salesforce_domain=given).salesforce_domain == kept


def test_the_api_version_may_carry_a_v():
    assert settings(salesforce_api_version="v62.0").salesforce_api_version == "62.0"


def test_a_bad_value_names_the_variable_but_not_the_value():
    with pytest.raises(ConfigurationError) as caught:
        load_settings(_env_file=None, salesforce_quota_run_percent=150,
                      salesforce_instance_url="http://acme.my.salesforce.com/?sid=SeCrEt1234")
    message = str(caught.value)
    assert "SALESFORCE_QUOTA_RUN_PERCENT" in message
    assert "SALESFORCE_INSTANCE_URL" in message
    assert "SeCrEt1234" not in message


def test_a_client_name_that_would_break_the_header_is_refused():
    with pytest.raises(ConfigurationError, match="SALESFORCE_CLIENT_NAME"):
        load_settings(_env_file=None, salesforce_client_name="crm, automation")


# --- which way in ---------------------------------------------------------------------------

def test_an_existing_session_comes_first():
    s = settings(salesforce_instance_url="https://acme.my.salesforce.com",
                 salesforce_access_token=TOKEN, salesforce_username="u@acme.example",
                 salesforce_password=PASSWORD)
    assert salesforce_auth(s) == "session"
    assert salesforce_login(s) == "password"  # ... and a login renews it


def test_a_session_alone_cannot_be_renewed():
    s = settings(salesforce_instance_url="https://acme.my.salesforce.com",
                 salesforce_access_token=TOKEN)
    assert salesforce_login(s) is None


def test_username_password_with_or_without_the_security_token():
    s = settings(salesforce_username="u@acme.example", salesforce_password=PASSWORD)
    assert salesforce_auth(s) == "password"
    s = settings(salesforce_username="u@acme.example", salesforce_password=PASSWORD,
                 salesforce_security_token="AbCd")
    assert salesforce_auth(s) == "password"


def test_jwt_needs_the_client_id_the_user_and_the_key(tmp_path):
    key = tmp_path / "server.key"
    s = settings(salesforce_client_id="3MVG9", salesforce_username="u@acme.example",
                 salesforce_private_key_file=key)
    assert salesforce_auth(s) == "jwt"
    with pytest.raises(ConfigurationError) as caught:
        salesforce_auth(settings(salesforce_client_id="3MVG9", salesforce_private_key_file=key))
    assert "SALESFORCE_USERNAME" in str(caught.value)


def test_client_credentials_need_my_domain():
    s = settings(salesforce_client_id="3MVG9", salesforce_client_secret=CLIENT_SECRET,
                 salesforce_domain="acme.my")
    assert salesforce_auth(s) == "client_credentials"
    with pytest.raises(ConfigurationError) as caught:
        salesforce_auth(settings(salesforce_client_id="3MVG9",
                                 salesforce_client_secret=CLIENT_SECRET))
    message = str(caught.value)
    assert "SALESFORCE_DOMAIN" in message and "My Domain" in message
    assert CLIENT_SECRET not in message


def test_nothing_set_says_every_way_in():
    with pytest.raises(ConfigurationError) as caught:
        salesforce_auth(settings())
    message = str(caught.value)
    for name in ("SALESFORCE_INSTANCE_URL", "SALESFORCE_ACCESS_TOKEN", "SALESFORCE_USERNAME",
                 "SALESFORCE_PASSWORD", "SALESFORCE_SECURITY_TOKEN", "SALESFORCE_CLIENT_ID",
                 "SALESFORCE_PRIVATE_KEY_FILE", "SALESFORCE_CLIENT_SECRET"):
        assert name in message


def test_half_a_session_says_which_half_is_missing():
    with pytest.raises(ConfigurationError, match="needs both SALESFORCE_INSTANCE_URL and "
                                                 "SALESFORCE_ACCESS_TOKEN"):
        salesforce_auth(settings(salesforce_instance_url="https://acme.my.salesforce.com"))


def test_a_bad_setting_is_said_in_spanish_and_never_shows_its_value(monkeypatch) -> None:
    from connector.errors import ConfigurationError
    from connector.i18n import say_error, set_language
    from connector.settings import load_settings

    monkeypatch.setenv("SALESFORCE_TIMEOUT", "s3cr3t-not-a-number")
    monkeypatch.setenv("SALESFORCE_QUOTA_RUN_PERCENT", "250")
    with pytest.raises(ConfigurationError) as caught:
        load_settings(_env_file=None)
    set_language("es")
    try:
        said = say_error(caught.value)
    finally:
        set_language("en")
    assert "SALESFORCE_TIMEOUT: se esperaba un número" in said, said
    assert "SALESFORCE_QUOTA_RUN_PERCENT: debe ser 100 o menos" in said, said
    assert "s3cr3t" not in said and "s3cr3t" not in str(caught.value)
    assert "SALESFORCE_TIMEOUT: expected a number" in str(caught.value)
