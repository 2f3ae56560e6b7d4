"""The poll function, on an EventBridge schedule: read what changed in the CRM since the cursor,
compute, write back and commit (the cursor moves only forward, even with two polls at once),
then ask the worker, through the queue, to run the outbox items that are due."""

from __future__ import annotations

from connector.handlers import runtime

lambda_handler = runtime.scheduled("poll", lambda pipeline: pipeline.poll())


__all__ = ["lambda_handler"]
