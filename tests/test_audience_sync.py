"""Lost deals into a Mailchimp nurture list, won deals out of it, end to end: a sync against
the fake org queues the rising edges, the outbox upserts the members in batches of 500; reruns,
and runs killed at random lines then run again, add no member twice and change nothing."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import pytest
import responses
from fake_marketing import MAILCHIMP_KEY, FakeMailchimp

from connector.pipeline import LEASE
from connector.settings import Settings
from tests.fake_salesforce import INSTANCE, Clock, FakeOrg
from tests.test_erp_sync import Killed, kill_at_random, sync

ROOT = Path(__file__).resolve().parents[1]
LIST = "a1b2c3d4e5"
ACTIONS = """
actions:
  notify-director:
    email: {to: [director@example.com], subject: "{{ name }}", body: "{{ name }}"}
  nurture:
    audience:
      provider: mailchimp
      list: "${NURTURE_LIST}"
      email: "{{ owner_email }}"
      merge_fields: {FNAME: "{{ owner_name }}", DEAL: "{{ name }}"}
      tags: [nurture, "{{ proposal_type }}"]
  out-of-nurture:
    audience:
      provider: mailchimp
      list: "${NURTURE_LIST}"
      email: "{{ owner_email }}"
      tags: [customer]
      remove_tags: [nurture]
triggers:
  - name: lost-to-nurture
    when: lost
    do: [nurture]
  - name: won-out-of-nurture
    when: won
    do: [out-of-nurture]
"""


@pytest.fixture
def world(tmp_path, monkeypatch):
    rules = tmp_path / "rules"
    shutil.copytree(ROOT / "rules", rules)
    (rules / "actions.yaml").write_text(ACTIONS, encoding="utf-8")
    monkeypatch.setenv("NURTURE_LIST", LIST)
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        mailchimp = FakeMailchimp(rsps)
        org = FakeOrg(rsps, Clock())
        settings = Settings(_env_file=None, salesforce_instance_url=INSTANCE,
                            salesforce_access_token="00Dxx!session",
                            mailchimp_api_key=MAILCHIMP_KEY,
                            state_url=f"sqlite:///{tmp_path / 'state.db'}")
        yield settings, org, mailchimp, rules


def lose(org: FakeOrg, n: int) -> None:
    for i in range(n):
        org.add(f"006L{i:014d}", StageName="Closed Lost", Amount=5000, Name=f"Lost deal {i}",
                CloseDate="2026-11-20", Proposal_Type__c="Firm" if i % 3 else "Budgetary",
                Owner={"Name": f"Contact {i}", "Email": f"contact{i}@example.com"})


def test_500_lost_deals_make_500_tagged_members_in_one_call(world):
    settings, org, mailchimp, rules = world
    lose(org, 500)

    app = sync(settings, org, rules_dir=rules)

    assert mailchimp.calls == [f"POST /lists/{LIST}"] == [f"POST /lists/{LIST}"] * math.ceil(
        500 / 500)
    members = mailchimp.lists[LIST]
    assert len(members) == 500
    for i in (0, 1, 2, 499):
        member = mailchimp.member(LIST, f"contact{i}@example.com")
        assert member["tags"] == {"nurture", "Firm" if i % 3 else "Budgetary"}
        assert member["merge_fields"] == {"FNAME": f"Contact {i}", "DEAL": f"Lost deal {i}"}
        assert member["status"] == "subscribed"
    assert {i.status for i in app.state.items() if i.kind == "audience"} == {"done"}

    changes = mailchimp.changes
    for _ in range(2):
        sync(settings, org, rules_dir=rules)
    assert len(mailchimp.calls) == 1 and mailchimp.changes == changes


def test_a_won_deal_leaves_the_nurture_tag(world):
    settings, org, mailchimp, rules = world
    lose(org, 2)
    sync(settings, org, rules_dir=rules)
    org.edit("006L00000000000001", StageName="Closed Won")
    sync(settings, org, rules_dir=rules)
    assert mailchimp.member(LIST, "contact1@example.com")["tags"] == {"customer", "Firm"}
    assert mailchimp.member(LIST, "contact0@example.com")["tags"] == {"nurture", "Budgetary"}


def test_a_refused_member_is_parked_with_the_reason_and_the_rest_go(world):
    settings, org, mailchimp, rules = world
    mailchimp.forgotten.add("contact1@example.com")
    lose(org, 3)
    app = sync(settings, org, rules_dir=rules)
    items = {i.record_id: i for i in app.state.items() if i.kind == "audience"}
    assert items["006L00000000000001"].status == "parked"
    assert "permanently deleted" in items["006L00000000000001"].reason
    assert [items[r].status for r in ("006L00000000000000", "006L00000000000002")] == \
        ["done", "done"]
    assert len(mailchimp.lists[LIST]) == 2


def test_mailchimp_down_the_members_wait_and_go_once_it_is_back(world):
    settings, org, mailchimp, rules = world
    lose(org, 10)
    mailchimp.faults = [503] * 5  # the retry policy's five tries, all refused
    app = sync(settings, org, rules_dir=rules)
    waiting = [i for i in app.state.items() if i.kind == "audience"]
    assert len(waiting) == 10 and all(i.status == "pending" and "503" in i.reason
                                      for i in waiting)
    org.clock.advance(hours=7)  # past the longest backoff
    sync(settings, org, rules_dir=rules)
    assert len(mailchimp.lists[LIST]) == 10


def test_killed_after_mailchimp_took_the_batch_the_rerun_changes_nothing(world):
    settings, org, mailchimp, rules = world
    lose(org, 500)

    def die() -> None:
        mailchimp.after_batch = None
        raise Killed

    mailchimp.after_batch = die
    with pytest.raises(Killed):
        sync(settings, org, rules_dir=rules)
    assert len(mailchimp.lists[LIST]) == 500  # Mailchimp has them; the outbox does not know
    changes = mailchimp.changes
    org.clock.advance(seconds=LEASE.total_seconds() + 1)

    app = sync(settings, org, rules_dir=rules)

    assert len(mailchimp.calls) == 2 and mailchimp.changes == changes
    assert {i.status for i in app.state.items() if i.kind == "audience"} == {"done"}


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_kills_then_reruns_add_no_member_twice(world, seed):
    settings, org, mailchimp, rules = world
    lose(org, 500)
    kills = kill_at_random(lambda: sync(settings, org, rules_dir=rules), seed, lines=400_000)
    org.clock.advance(seconds=LEASE.total_seconds() + 1)
    app = sync(settings, org, rules_dir=rules)
    changes = mailchimp.changes
    sync(settings, org, rules_dir=rules)
    assert kills >= 1
    assert [i for i in app.state.items() if i.status != "done"] == []
    assert len(mailchimp.lists[LIST]) == 500
    assert all(m["tags"] == {"nurture", "Firm" if int(m["merge_fields"]["FNAME"].split()[1]) % 3
                             else "Budgetary"} for m in mailchimp.lists[LIST].values())
    assert mailchimp.changes == changes
