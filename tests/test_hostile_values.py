"""What an opportunity holds is data, never configuration: a name that reads `${SECRET}` is sent
as that text, a value that would break a header or add a recipient fails its record alone with
the reason, and neither a preview nor an error ever shows a variable's value or a URL."""

from __future__ import annotations

import datetime as dt
import json
import shutil
from decimal import Decimal
from pathlib import Path

import pytest
import requests
import responses
from hypothesis import given, settings
from hypothesis import strategies as st

from connector.actions import ActionRunner, encode_values
from connector.actions.email import address_problem, render_email
from connector.actions.http import HttpSender
from connector.actions.ses import SesSender
from connector.erp.rest import RestErp
from connector.erp.tryton import TrytonErp
from connector.errors import ConfigurationError, RecordError
from connector.files import load
from connector.pipeline import Pipeline
from connector.state import Commit, OutboxItem
from connector.state.sqlite import SqliteState
from connector.templates import render_value
from tests.smtp_server import smtp  # noqa: F401 - the fixture

ROOT = Path(__file__).resolve().parent.parent
HOOK = "https://hooks.example.com/push/T0KEN-in-the-path"
ENVIRON = {"MARKETING_WEBHOOK_URL": HOOK, "MARKETING_TOKEN": "mkt-token-5e1f",
           "API_KEY": "api-key-77aa", "TEAM": "Sales ops", "ERP_WAREHOUSE": "WH-1",
           "DIRECTOR_EMAIL": "director@example.com"}
SECRETS = (HOOK, "T0KEN-in-the-path", "mkt-token-5e1f", "api-key-77aa")
NOW = dt.datetime(2026, 11, 26, 9, 0, tzinfo=dt.UTC)

ACTIONS = """\
actions:
  notify-director:
    email:
      to: ["{{ owner_email }}", "${DIRECTOR_EMAIL}"]
      subject: "{{ name }} for ${TEAM}"
      body: "Deal {{ name }}, team ${TEAM}."
  push-marketing:
    http:
      url: "${MARKETING_WEBHOOK_URL}"
      headers: {Authorization: "Bearer ${MARKETING_TOKEN}", X-Deal: "{{ name }}"}
      json: {name: "{{ name }}", key: "${API_KEY}", stage: "{{ stage }}"}
  erp-order:
    erp: sales_order
"""
ERP = """\
erp: rest
customer:
  match: {name: "{{ account_name }}"}
  create: {name: "{{ account_name }}"}
order:
  header: {reference: "{{ id }}", description: "{{ name }}", warehouse: "${ERP_WAREHOUSE}"}
  lines:
    - {description: "{{ name }}", quantity: 1, unit_price: "{{ amount }}"}
"""


@pytest.fixture
def rules(tmp_path):
    shutil.copytree(ROOT / "rules", tmp_path / "rules")
    shutil.copytree(ROOT / "mappings", tmp_path / "mappings")
    (tmp_path / "rules" / "actions.yaml").write_text(ACTIONS)
    (tmp_path / "mappings" / "erp.yaml").write_text(ERP)
    loaded = load(tmp_path / "rules", tmp_path / "mappings")
    assert loaded.ok, [str(f) for f in loaded.findings]
    return loaded.rules, tmp_path


def deal(**values):
    base = {"id": "006A00000000000001", "name": "Fleet renewal", "stage": "Negotiation/Review",
            "amount": Decimal("150000"), "account_name": "Acme", "owner_email": "ann@acme.com"}
    return {**base, **values}


def runner(rules, **senders):
    ruleset, folder = rules
    return ActionRunner(ruleset, folder / "rules", folder / "mappings", senders=senders,
                        environ=ENVIRON)


def capture(*answers):
    """An endpoint on `responses` that keeps the requests it gets."""
    seen: list[requests.PreparedRequest] = []
    replies = iter(answers or [(200, {}, "{}")] * 10)

    def reply(request):
        seen.append(request)
        return next(replies)

    return seen, reply


# --- item 1: CRM data never expands ${...} ---------------------------------------------------

@responses.activate
def test_a_name_that_reads_like_a_variable_is_sent_as_text(rules):
    seen, reply = capture()
    responses.add_callback(responses.POST, HOOK, reply)
    name = "Acme ${MARKETING_TOKEN} ${API_KEY}"
    runner(rules, http=HttpSender().send).run("push-marketing", "k1", deal(name=name))
    [request] = seen
    assert request.headers["X-Deal"] == name
    assert request.headers["Authorization"] == "Bearer mkt-token-5e1f"  # what the admin wrote
    body = json.loads(request.body)
    assert body == {"name": name, "key": "api-key-77aa", "stage": "Negotiation/Review"}


def test_email_fields_and_erp_payloads_resolve_only_what_the_admin_wrote(rules):
    name = "Big ${TEAM} ${MARKETING_TOKEN}"
    sent = []
    run = runner(rules, email=lambda message, key: sent.append(message),
                 erp=lambda order, key: sent.append(order) or "SO-1")
    run.run("notify-director", "k1", deal(name=name))
    run.run("erp-order", "k2", deal(name=name))
    email, order = sent
    assert email["to"] == ["ann@acme.com", "director@example.com"]
    assert email["subject"] == f"{name} for Sales ops"
    assert email["text"] == f"Deal {name}, team Sales ops."
    assert order.header == {"description": name, "warehouse": "WH-1"}
    assert order.lines[0]["description"] == name


def test_a_file_template_resolves_its_own_variables_only(tmp_path):
    (tmp_path / "note.txt").write_text("Hi {{ name }}, from ${TEAM}.\n")
    from connector.core.schema import EmailSpec

    spec = EmailSpec(to=["a@example.com"], subject="s", template="note.txt")
    rendered = render_email(spec, {"name": "${TEAM}"}, tmp_path, {"TEAM": "ops"})
    assert rendered["text"] == "Hi ${TEAM}, from ops.\n"


def test_a_variable_s_value_is_never_read_as_a_template():
    environ = {"TOKEN": "{{ 7 * 6 }}{% if true %}x{% endif %}"}
    assert render_value("Bearer ${TOKEN}", {}, environ) == "Bearer " + environ["TOKEN"]


def test_an_unset_variable_is_a_configuration_error_naming_it():
    with pytest.raises(ConfigurationError, match=r"set NOT_SET_HERE"):
        render_value("x ${NOT_SET_HERE}", {}, {})


field_text = st.text(alphabet=st.sampled_from(list("ab ${}%#_AKEYPI-")), max_size=40)


@settings(max_examples=300, deadline=None)
@given(value=field_text, prefix=st.text(alphabet="ab.", max_size=5))
def test_any_field_value_renders_as_itself(value, prefix):
    environ = {"A": "resolved-a", "API_KEY": "k"}
    assert render_value(prefix + "{{ name }}", {"name": value}, environ) == prefix + value
    assert render_value(prefix + "${A}{{ name }}", {"name": value}, environ) == \
        prefix + "resolved-a" + value


# --- item 2: no secret in any output ---------------------------------------------------------

def test_previews_show_variables_as_written(rules):
    run = runner(rules)
    push = run.render("push-marketing", deal(name="n")).rendered
    assert push["url"] == "${MARKETING_WEBHOOK_URL}"
    assert push["headers"]["Authorization"] == "Bearer ${MARKETING_TOKEN}"
    assert push["json"]["key"] == "${API_KEY}"
    email = run.render("notify-director", deal()).rendered
    assert email["to"] == ["ann@acme.com", "${DIRECTOR_EMAIL}"]
    assert email["subject"] == "Fleet renewal for ${TEAM}"
    order = run.render("erp-order", deal()).rendered
    assert order["header"]["warehouse"] == "${ERP_WAREHOUSE}"
    shown = json.dumps([push, email, order], default=str)
    assert not [s for s in (*SECRETS, *ENVIRON.values()) if s in shown]


@pytest.mark.parametrize("url", ["hooks.example.com/push/T0KEN-in-the-path",
                                 "ftp://hooks.example.com/T0KEN-in-the-path",
                                 "https://hooks.example.com/T0KEN-in-the-path\r\nX: y"])
def test_a_bad_url_is_a_configuration_error_that_does_not_show_it(url, caplog):
    request = {"method": "POST", "url": url, "headers": {}, "json": {"a": 1}}
    with pytest.raises(ConfigurationError) as caught:
        HttpSender().send(request, "k")
    assert "T0KEN" not in str(caught.value) and "T0KEN" not in caplog.text
    assert "url:" in str(caught.value)


@responses.activate
def test_a_refusal_that_echoes_the_token_or_url_is_reported_without_them(rules):
    echo = f"bad token mkt-token-5e1f for {HOOK}"
    responses.add(responses.POST, HOOK, status=401, body=echo)
    with pytest.raises(RecordError) as caught:
        runner(rules, http=HttpSender().send).run("push-marketing", "k1", deal())
    assert "HTTP 401" in str(caught.value)
    assert not [s for s in SECRETS if s in str(caught.value)]


def test_erp_messages_never_show_a_password_or_query_in_erp_url():
    with pytest.raises(ConfigurationError) as bad:
        RestErp("erp.example.com/api?key=s3cret-q", password="pw").find_order("R")
    assert "s3cret" not in str(bad.value)
    with pytest.raises(ConfigurationError) as bad:
        TrytonErp("erp.example.com/?key=s3cret-q", "db", "admin", "pw").find_order("R")
    assert "s3cret" not in str(bad.value)
    for erp in (RestErp("http://u:s3cret-pw@127.0.0.1:9/api", password="x"),
                TrytonErp("http://u:s3cret-pw@127.0.0.1:9", "db", "admin", "x")):
        with pytest.raises(Exception) as down:
            erp.find_order("R")
        assert "127.0.0.1:9" in str(down.value) and "s3cret" not in str(down.value)
        assert "s3cret" not in repr(erp)


# --- items 3 and 4: a bad value fails its record alone, with the reason ----------------------

def queue(state, *items):
    state.commit([Commit(item.record_id, None, outbox=[item]) for item in items], NOW)


def item(key, action, kind, values):
    return OutboxItem(key, values["id"], action, kind, {"values": encode_values(values)})


@responses.activate
def test_a_line_break_in_a_header_value_parks_that_item_and_the_drain_goes_on(rules, tmp_path):
    seen, reply = capture()
    responses.add_callback(responses.POST, HOOK, reply)
    state = SqliteState(str(tmp_path / "state.db"))
    queue(state, item("a", "push-marketing", "http", deal(id="A", name="Evil\r\nX-Admin: 1")),
          item("b", "push-marketing", "http", deal(id="B", name="Tab\tis fine")),
          item("c", "push-marketing", "http", deal(id="C", name="Snowman \u2603")))
    pipeline = Pipeline(rules[0], None, state, runner(rules, http=HttpSender().send),  # type: ignore[arg-type]
                        now=lambda: NOW)
    report = pipeline.drain()
    assert (report.done, report.parked) == (1, 2)
    parked = {i.key: i.reason for i in state.items("parked")}
    assert "header X-Deal" in parked["a"] and "line break" in parked["a"]
    assert "U+2603" in parked["c"]
    assert [r.headers["X-Deal"] for r in seen] == ["Tab\tis fine"]


def test_one_address_per_recipient_value(rules, smtp, tmp_path):  # noqa: F811
    url, inbox = smtp
    from connector.actions.email import SmtpSender

    state = SqliteState(str(tmp_path / "state.db"))
    queue(state,
          item("two", "notify-director", "email",
               deal(id="A", owner_email="owner@acme.com, attacker@evil.example")),
          item("crlf", "notify-director", "email",
               deal(id="B", owner_email="owner@acme.com\r\nBcc: attacker@evil.example")),
          item("ok", "notify-director", "email", deal(id="C", owner_email="Ann <ann@acme.com>")))
    sender = SmtpSender(url, "crm@example.com").send
    pipeline = Pipeline(rules[0], None, state, runner(rules, email=sender),  # type: ignore[arg-type]
                        now=lambda: NOW)
    report = pipeline.drain()
    assert (report.done, report.parked) == (1, 2)
    parked = {i.key: i.reason for i in state.items("parked")}
    assert "2 addresses where one is expected" in parked["two"]
    assert "line break" in parked["crlf"]
    [message] = inbox.messages
    assert message["To"] == "Ann <ann@acme.com>, director@example.com"
    assert "evil" not in message.as_string()


@settings(max_examples=200, deadline=None)
@given(addresses=st.lists(st.emails(), min_size=1, max_size=3),
       separator=st.sampled_from([", ", ",", ";", " "]))
def test_only_one_address_passes(addresses, separator):
    text = separator.join(addresses)
    problem = address_problem(text)
    if len(addresses) == 1:
        assert problem is None or "not an email address" in problem  # hypothesis' odd ones
    else:
        assert problem is not None


def test_a_bad_email_from_is_a_configuration_error():
    from connector.actions.email import SmtpSender

    for sender in ("crm@example.com, other@example.com", "crm@example.com\r\nBcc: x@y.z", "crm"):
        with pytest.raises(ConfigurationError, match="EMAIL_FROM"):
            SmtpSender("smtp://127.0.0.1:25", sender)
        with pytest.raises(ConfigurationError, match="EMAIL_FROM"):
            SesSender(sender, client=object())


def test_a_bearer_password_that_cannot_be_a_header_is_a_configuration_error():
    with pytest.raises(ConfigurationError, match="ERP_PASSWORD") as caught:
        RestErp("http://127.0.0.1:9", password="s3cr\net")
    assert "s3cr" not in str(caught.value)


def test_a_variable_that_breaks_a_header_is_the_admin_s_to_fix(rules):
    ruleset, folder = rules
    run = ActionRunner(ruleset, folder / "rules", folder / "mappings",
                       senders={"http": HttpSender().send},
                       environ={**ENVIRON, "MARKETING_TOKEN": "ab\nc"})
    with pytest.raises(ConfigurationError, match="MARKETING_TOKEN") as caught:
        run.run("push-marketing", "k", deal())
    assert "ab\nc" not in str(caught.value)


def test_the_dry_run_refuses_the_same_recipients(rules):
    with pytest.raises(RecordError, match="owner_email"):
        runner(rules).render("notify-director", deal(owner_email="a@x.com b@y.com"))


def test_check_refuses_a_header_name_http_cannot_carry(tmp_path, capsys):
    shutil.copytree(ROOT / "rules", tmp_path / "rules")
    shutil.copytree(ROOT / "mappings", tmp_path / "mappings")
    (tmp_path / "rules" / "actions.yaml").write_text(
        ACTIONS.replace("X-Deal:", '"X Deal":'))
    (tmp_path / "mappings" / "erp.yaml").write_text(ERP)
    from connector.cli import main

    assert main(["check", "--format", "json", "--rules", str(tmp_path / "rules"),
                 "--mappings", str(tmp_path / "mappings")]) == 1
    [finding] = json.loads(capsys.readouterr().out)["findings"]
    assert "'X Deal' is not an HTTP header name" in finding["message"]
    assert finding["file"].endswith("actions.yaml") and finding["line"] == 7


@pytest.mark.parametrize("answer", ['[1, 2]', '{"__class__": "Decimal"}', '"text"',
                                    '{"id": 1, "result": 7}'])
@responses.activate
def test_a_server_that_is_not_tryton_is_a_configuration_error(answer):
    """An odd answer to the login is the admin's ERP_URL to fix, never a crash of the drain."""
    responses.add(responses.POST, "http://erp.example.com/db/rpc/", body=answer)
    with pytest.raises(ConfigurationError, match="ERP_URL"):
        TrytonErp("http://erp.example.com", "db", "admin", "pw").find_order("R")


def test_an_smtp_login_that_smtplib_cannot_send_is_a_configuration_error():
    from connector.actions.email import SmtpSender

    with pytest.raises(ConfigurationError, match="ASCII") as caught:
        SmtpSender("smtp://mailer:p%C3%A4ss@127.0.0.1:25", "crm@example.com")
    assert "päss" not in str(caught.value)
