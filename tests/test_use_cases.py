"""The use cases take and return plain values: `run_items(keys)` runs the items named and no
others, and says which items their runs added (the worker queues those); every outbox kind has
one runner, and an item of a kind nobody runs is parked alone with the reason."""

from __future__ import annotations

import typing

from connector.core.ruleset import Action
from connector.outbox import RUNNERS
from connector.state import Commit, Kind, OutboxItem
from connector.state.notices import store_notice
from tests.smtp_server import smtp  # noqa: F401 - the fixture
from tests.test_outbox_recovery import DEALS, LIKELY, world  # noqa: F401 - the fixture

NEW = "006C00000000000009"


def pending(app) -> set[str]:
    return {i.key for i in app.state.items("pending")}


def test_run_items_runs_the_named_items_alone_and_returns_the_keys_they_added(world):  # noqa: F811
    app, org, inbox, pushed, _, _ = world
    waiting = pending(app)                      # the three deals' emails and pushes
    org.add(NEW, Name="Deal 9", **LIKELY)
    org.clock.advance(seconds=1)
    store_notice(app.state, "n1", [NEW], org.clock())

    report = app.pipeline.run_items(["notice:n1"])
    assert report.done == 1 and inbox.messages == [] and pushed == []
    added = pending(app) - waiting
    assert sorted(report.added) == sorted(added) and len(added) == 2   # its email and push
    assert all(key.startswith(f"{NEW}:") for key in report.added)

    then = app.pipeline.run_items(report.added)
    assert then.done == 2 and then.added == [] and pushed == [NEW] and len(inbox.messages) == 1
    assert pending(app) == waiting               # the others still wait for their own turn

    again = app.pipeline.run_items(["notice:n1", *report.added, "no-such-item"])
    assert again.done == 0 and again.added == [] and pushed == [NEW]


def test_a_notice_whose_record_fails_is_parked_and_what_its_other_record_fired_runs(
        world):  # noqa: F811
    """Part of a notice's work went through: the actions it fired are queued all the same."""
    app, org, _, _, _, _ = world
    waiting = pending(app)
    org.add(NEW, Name="Deal 9", **LIKELY)
    org.add("006C00000000000008", StageName="Bargaining")   # no workflow knows this stage
    org.clock.advance(seconds=1)
    store_notice(app.state, "n2", [NEW, "006C00000000000008"], org.clock())

    report = app.pipeline.run_items(["notice:n2"])
    notice = app.state.item("notice:n2")
    assert report.parked == 1 and notice is not None and notice.status == "parked"
    assert "006C00000000000008" in notice.reason
    assert sorted(report.added) == sorted(pending(app) - waiting) and len(report.added) == 2


def test_every_outbox_kind_has_one_runner_and_every_action_kind_is_one():
    assert set(RUNNERS) == set(Kind)
    kinds = typing.get_args(typing.get_type_hints(Action)["kind"])
    assert set(kinds) <= set(Kind)


def test_an_item_of_a_kind_nobody_runs_is_parked_alone(world):  # noqa: F811
    app, org, _, pushed, _, _ = world
    app.state.commit([Commit(DEALS[0], None, outbox=[
        OutboxItem("fax:1", DEALS[0], "fax-it", "fax", {})])], org.clock())
    drained = app.pipeline.drain()
    assert drained.parked == 1 and drained.done == 6 and sorted(pushed) == DEALS
    fax = app.state.item("fax:1")
    assert fax is not None and fax.status == "parked"
    assert fax.reason == "no runner for outbox items of kind 'fax'"
