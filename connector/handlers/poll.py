"""The poll function, on an EventBridge schedule: read what changed in the CRM since the cursor,
compute, write back and commit (the cursor moves only forward, even with two polls at once),
then ask the worker, through the queue, to run the outbox items that are due.

Its first poll is a backfill, as `sync`'s is: what is already true is recorded and fires
nothing. Invoked by hand with `{"fire_backfill": true}`, that first poll fires it instead."""

from __future__ import annotations

from connector.handlers import runtime

lambda_handler = runtime.scheduled(
    "poll", lambda pipeline, event: pipeline.poll(fire_backfill=event.get("fire_backfill") is True))


__all__ = ["lambda_handler"]
