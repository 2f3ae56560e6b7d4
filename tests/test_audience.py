"""Audience actions against fake Mailchimp and Brevo APIs: upserts keyed by the address,
tags added and removed, batches of 500, the providers' refusals sorted into record and
configuration errors, 429 and 5xx tried again by the retry policy."""

from __future__ import annotations

import math
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import responses
from fake_marketing import BREVO_KEY, MAILCHIMP_KEY, FakeBrevo, FakeMailchimp, md5
from hypothesis import given
from hypothesis import strategies as st

from connector.actions.audience import AudienceSender, render_member, subscriber_hash
from connector.checks import check_templates
from connector.core.schema import AudienceSpec
from connector.errors import ConfigurationError, RecordError, RetriableError
from connector.files import load
from connector.retry import RetryPolicy
from tests.test_audience_sync import ACTIONS

LIST = "a1b2c3d4e5"
NURTURE = AudienceSpec.model_validate({
    "provider": "mailchimp", "list": "${NURTURE_LIST}", "email": "{{ owner_email }}",
    "merge_fields": {"FNAME": "{{ owner_name }}", "AMOUNT": "{{ amount }}"},
    "tags": ["nurture", "{{ proposal_type }}"]})
ENV = {"NURTURE_LIST": LIST}


def deal(i: int, **extra: Any) -> dict[str, Any]:
    return {"owner_email": f"Contact.{i}@Example.com", "owner_name": f"Ann {i}", "amount": 1500,
            "proposal_type": "Firm" if i % 2 else "Budgetary"} | extra


@pytest.fixture
def rsps() -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock


def sender(sleeps: list[float] | None = None, **keys: Any) -> AudienceSender:
    policy = RetryPolicy(sleep=(sleeps if sleeps is not None else []).append, jitter=0)
    return AudienceSender(keys.get("mailchimp", MAILCHIMP_KEY), keys.get("brevo", BREVO_KEY),
                          retry=policy)


def test_the_member_is_rendered_with_the_list_from_the_environment() -> None:
    member = render_member(NURTURE, deal(1), ENV)
    assert member == {"provider": "mailchimp", "list": LIST, "email": "Contact.1@Example.com",
                      "status": "subscribed", "merge_fields": {"FNAME": "Ann 1", "AMOUNT": 1500},
                      "tags": ["nurture", "Firm"], "remove_tags": []}
    assert render_member(NURTURE, deal(1))["list"] == "${NURTURE_LIST}"
    with pytest.raises(ConfigurationError, match="NURTURE_LIST"):
        render_member(NURTURE, deal(1), {})


def test_crm_text_is_never_resolved_as_an_environment_variable() -> None:
    member = render_member(NURTURE, deal(1, owner_name="${NURTURE_LIST}"), ENV)
    assert member["merge_fields"]["FNAME"] == "${NURTURE_LIST}"
    member = render_member(NURTURE, deal(1, proposal_type="${NURTURE_LIST}"), ENV)
    assert member["tags"] == ["nurture", "${NURTURE_LIST}"]


def test_the_admins_tags_merge_fields_and_address_read_the_environment() -> None:
    spec = NURTURE.model_copy(update={
        "tags": ["${REGION}-nurture", "{{ proposal_type }}"], "remove_tags": ["${REGION}-active"],
        "merge_fields": {"SOURCE": "${LEAD_SOURCE}"}})
    member = render_member(spec, deal(1), ENV | {"REGION": "andes", "LEAD_SOURCE": "crm"})
    assert member["tags"] == ["andes-nurture", "Firm"] and member["remove_tags"] == ["andes-active"]
    assert member["merge_fields"] == {"SOURCE": "crm"}
    # a preview has no environment: the references stay as the admin wrote them
    shown = render_member(spec, deal(1))
    assert shown["tags"] == ["${REGION}-nurture", "Firm"]
    assert shown["merge_fields"] == {"SOURCE": "${LEAD_SOURCE}"}
    with pytest.raises(ConfigurationError, match="REGION"):
        render_member(spec, deal(1), ENV | {"LEAD_SOURCE": "crm"})


@pytest.mark.parametrize(("email", "message"), [("", "is empty"),
                                                ("not an address", "not an address")])
def test_a_deal_without_an_address_fails_alone(email: str, message: str) -> None:
    with pytest.raises(RecordError, match=message):
        render_member(NURTURE, deal(1, owner_email=email), ENV)


def test_a_tag_both_added_and_removed_is_refused_naming_both() -> None:
    spec = NURTURE.model_copy(update={"remove_tags": ["{{ proposal_type }}"]})
    with pytest.raises(RecordError, match=r"'Firm' is both in 'tags'.*'remove_tags'"):
        render_member(spec, deal(1), ENV)


@given(st.emails())
def test_the_subscriber_hash_ignores_case(email: str) -> None:
    assert subscriber_hash(email) == subscriber_hash(email.upper()) == md5(email)
    assert len(subscriber_hash(email)) == 32


def test_an_upsert_and_its_tags_then_the_same_again_change_nothing(rsps) -> None:
    mailchimp = FakeMailchimp(rsps)
    send = sender().send
    member = render_member(NURTURE, deal(1), ENV)

    send(member, "k1")
    assert mailchimp.calls == [f"PUT /lists/{LIST}/members/{md5(member['email'])}",
                               f"POST /lists/{LIST}/members/{md5(member['email'])}/tags"]
    stored = mailchimp.member(LIST, "contact.1@example.com")
    assert stored is not None and stored["tags"] == {"nurture", "Firm"}
    assert stored["merge_fields"] == {"FNAME": "Ann 1", "AMOUNT": 1500}
    changes = mailchimp.changes

    send(member, "k1")
    assert mailchimp.changes == changes and len(mailchimp.lists[LIST]) == 1

    won = NURTURE.model_copy(update={"tags": [], "remove_tags": ["nurture"]})
    send(render_member(won, deal(1), ENV), "k2")
    assert stored["tags"] == {"Firm"}


def test_five_hundred_members_go_in_one_call_and_again_change_nothing(rsps) -> None:
    mailchimp = FakeMailchimp(rsps)
    members = {f"k{i}": render_member(NURTURE, deal(i), ENV) for i in range(500)}

    outcomes = sender().send_many(members)

    assert mailchimp.calls == [f"POST /lists/{LIST}"]
    assert all(isinstance(o, str) for o in outcomes.values()) and len(outcomes) == 500
    assert len(mailchimp.lists[LIST]) == 500
    assert mailchimp.member(LIST, "contact.7@example.com")["tags"] == {"nurture", "Firm"}
    assert mailchimp.member(LIST, "contact.8@example.com")["tags"] == {"nurture", "Budgetary"}
    changes = mailchimp.changes
    sender().send_many(members)
    assert mailchimp.changes == changes and len(mailchimp.calls) == 2


@pytest.mark.parametrize("n", [1, 499, 500, 501, 1001])
def test_batches_are_as_few_as_the_limit_allows(rsps, n: int) -> None:
    mailchimp = FakeMailchimp(rsps)
    members = {f"k{i}": render_member(NURTURE, deal(i), ENV) for i in range(n)}
    sender().send_many(members)
    assert len(mailchimp.calls) == math.ceil(n / 500)
    assert len(mailchimp.lists[LIST]) == n


def test_in_a_batch_a_refused_member_fails_alone_with_mailchimps_reason(rsps) -> None:
    mailchimp = FakeMailchimp(rsps)
    mailchimp.forgotten.add("contact.2@example.com")
    mailchimp.lists[LIST][md5("contact.3@example.com")] = {
        "email_address": "contact.3@example.com", "status": "unsubscribed",
        "merge_fields": {}, "tags": set()}
    members = {f"k{i}": render_member(NURTURE, deal(i), ENV) for i in range(5)}
    members["k4"] = members["k4"] | {"email": "bad@example"}

    outcomes = sender().send_many(members)

    assert [k for k, o in outcomes.items() if isinstance(o, str)] == ["k0", "k1"]
    assert "permanently deleted" in str(outcomes["k2"])
    assert "compliance state" in str(outcomes["k3"])
    assert "Please provide a valid email address" in str(outcomes["k4"])
    assert all(isinstance(outcomes[k], RecordError) for k in ("k2", "k3", "k4"))
    assert mailchimp.calls == [f"POST /lists/{LIST}"]


def test_members_with_tags_to_remove_and_repeated_addresses_go_alone(rsps) -> None:
    mailchimp = FakeMailchimp(rsps)
    won = NURTURE.model_copy(update={"tags": [], "remove_tags": ["nurture"]})
    members = {"a": render_member(NURTURE, deal(1), ENV),
               "b": render_member(NURTURE, deal(2), ENV),
               "c": render_member(won, deal(3), ENV),
               "d": render_member(NURTURE, deal(1, owner_email="CONTACT.1@example.com"), ENV)}

    outcomes = sender().send_many(members)

    assert all(isinstance(o, str) for o in outcomes.values())
    assert mailchimp.calls[0] == f"POST /lists/{LIST}" and len(mailchimp.calls) == 5
    assert len(mailchimp.lists[LIST]) == 3


@pytest.mark.parametrize(("spec", "message", "error"), [
    ({"list": "nosuchlist"}, "no list 'nosuchlist'", ConfigurationError),
    ({"email": "{{ owner_name }}@example"}, "Invalid Resource", RecordError),
])
def test_mailchimp_refusals_are_sorted(rsps, spec: dict[str, Any], message: str,
                                       error: type[Exception]) -> None:
    FakeMailchimp(rsps)
    member = render_member(NURTURE.model_copy(update={"list_id": spec.get("list", LIST),
                                                      "email": spec.get("email",
                                                                        NURTURE.email)}),
                           deal(1), ENV)
    with pytest.raises(error, match=message) as caught:
        sender().send(member, "k")
    assert not isinstance(caught.value, RetriableError)


def test_a_forgotten_address_is_parked_with_mailchimps_words(rsps) -> None:
    FakeMailchimp(rsps).forgotten.add("contact.1@example.com")
    with pytest.raises(RecordError, match="Forgotten Email Not Subscribed"):
        sender().send(render_member(NURTURE, deal(1), ENV), "k")


def test_a_wrong_key_is_a_configuration_error_without_the_key(rsps) -> None:
    FakeMailchimp(rsps)
    wrong = "ffffffffffffffffffffffffffffffff-us21"
    with pytest.raises(ConfigurationError, match="MAILCHIMP_API_KEY") as caught:
        sender(mailchimp=wrong).send(render_member(NURTURE, deal(1), ENV), "k")
    assert wrong not in str(caught.value)
    with pytest.raises(ConfigurationError, match="data centre"):
        sender(mailchimp="no-data-centre-key!").send(render_member(NURTURE, deal(1), ENV), "k")
    with pytest.raises(ConfigurationError, match="MAILCHIMP_API_KEY"):
        sender(mailchimp=None).send(render_member(NURTURE, deal(1), ENV), "k")


def test_429_and_5xx_are_tried_again_by_the_retry_policy(rsps) -> None:
    mailchimp = FakeMailchimp(rsps)
    mailchimp.faults = [429, 503]
    sleeps: list[float] = []

    sender(sleeps).send_many({"k": render_member(NURTURE, deal(1), ENV)})

    assert len(sleeps) == 2 and len(mailchimp.lists[LIST]) == 1
    mailchimp.faults = [503] * 5
    outcome = sender([]).send_many({"k": render_member(NURTURE, deal(2), ENV)})["k"]
    assert isinstance(outcome, RetriableError)


BREVO_SPEC = AudienceSpec.model_validate({
    "provider": "brevo", "list": 7, "email": "{{ owner_email }}",
    "merge_fields": {"FIRSTNAME": "{{ owner_name }}"}})


def test_brevo_creates_then_updates_the_contact(rsps) -> None:
    brevo = FakeBrevo(rsps)
    send = sender().send
    assert "created" in send(render_member(BREVO_SPEC, deal(1), ENV), "k")
    assert "updated" in send(render_member(BREVO_SPEC, deal(1, owner_name="Bea"), ENV), "k")
    assert brevo.contacts["contact.1@example.com"]["attributes"] == {"FIRSTNAME": "Bea"}
    assert brevo.contacts["contact.1@example.com"]["listIds"] == {7}
    assert len(brevo.contacts) == 1


def test_brevo_refusals_are_sorted(rsps) -> None:
    brevo = FakeBrevo(rsps)
    with pytest.raises(RecordError, match="Invalid email address"):
        sender().send(render_member(BREVO_SPEC, deal(1, owner_email="x@y"), ENV), "k")
    with pytest.raises(ConfigurationError, match="Brevo has no list 9"):
        sender().send(render_member(BREVO_SPEC.model_copy(update={"list_id": 9}), deal(1),
                                    ENV), "k")
    with pytest.raises(ConfigurationError, match="BREVO_API_KEY"):
        sender(brevo="xkeysib-wrong").send(render_member(BREVO_SPEC, deal(1), ENV), "k")
    brevo.faults = [429]
    assert "created" in sender().send(render_member(BREVO_SPEC, deal(1), ENV), "k")


def test_brevo_has_no_tags_and_says_so() -> None:
    with pytest.raises(ValueError, match="Brevo contacts have no tags"):
        AudienceSpec.model_validate({"provider": "brevo", "list": 7, "email": "{{ e }}",
                                     "tags": ["x"]})


def _with_action(tmp_path: Path, action: str) -> tuple[Any, Path]:
    """The bundled rules with the audience actions of test_audience_sync and `action` (YAML
    under `actions:`), loaded; and their folder."""
    root = Path(__file__).resolve().parents[1]
    rules_dir = tmp_path / "rules"
    shutil.copytree(root / "rules", rules_dir)
    (rules_dir / "actions.yaml").write_text(ACTIONS.replace("triggers:", action + "triggers:"),
                                            encoding="utf-8")
    return load(rules_dir, root / "mappings").rules, rules_dir


def test_check_warns_of_a_list_variable_not_set_and_refuses_a_brevo_list_name(tmp_path) -> None:
    rules, rules_dir = _with_action(tmp_path, (
        '  brevo-news:\n    audience: {provider: brevo, list: news, email: "{{ owner_email }}"}\n'))

    unset = check_templates(rules, rules_dir, environ={})
    set_ = check_templates(rules, rules_dir, environ={"NURTURE_LIST": LIST})

    assert [(f.severity, f.message) for f in unset if "NURTURE_LIST" in f.message] == [
        ("warning", "action 'nurture' list: NURTURE_LIST is not set here; sync needs it"),
        ("warning", "action 'out-of-nurture' list: NURTURE_LIST is not set here; sync needs it")]
    assert [f.message for f in set_] == [
        "action 'brevo-news' list: Brevo list ids are numbers, not 'news'"]


def test_check_warns_of_a_variable_not_set_in_tags_and_merge_fields(tmp_path) -> None:
    rules, rules_dir = _with_action(tmp_path, (
        '  regional:\n    audience: {provider: mailchimp, list: "${NURTURE_LIST}", '
        'email: "{{ owner_email }}", tags: ["${REGION}-nurture"], '
        'remove_tags: ["${REGION}-active"], merge_fields: {SOURCE: "${LEAD_SOURCE}"}}\n'))

    found = check_templates(rules, rules_dir, environ={"NURTURE_LIST": LIST})
    assert [(f.severity, f.message) for f in found if "regional" in f.message] == [
        ("warning", "action 'regional' merge_fields.SOURCE: LEAD_SOURCE is not set here; "
                    "sync needs it"),
        ("warning", "action 'regional' tags: REGION is not set here; sync needs it"),
        ("warning", "action 'regional' remove_tags: REGION is not set here; sync needs it")]
    everything = {"NURTURE_LIST": LIST, "REGION": "andes", "LEAD_SOURCE": "crm"}
    assert not [f for f in check_templates(rules, rules_dir, environ=everything)
                if "regional" in f.message]


def test_check_refuses_an_address_from_the_environment_as_one_for_every_deal(tmp_path) -> None:
    rules, rules_dir = _with_action(tmp_path, (
        '  fixed:\n    audience: {provider: mailchimp, list: "${NURTURE_LIST}", '
        'email: "${SALES_INBOX}"}\n'))

    environ = {"NURTURE_LIST": LIST, "SALES_INBOX": "sales@example.com"}
    found = check_templates(rules, rules_dir, environ=environ)
    assert [(f.severity, f.kind) for f in found if "'fixed' email" in f.message] == [
        ("error", "template")]
