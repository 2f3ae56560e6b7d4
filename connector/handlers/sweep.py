"""The sweep function, on its own daily schedule: re-evaluate every open opportunity, so that
conditions that age (`today`, escalations, close dates passing) fire with no edit in the CRM;
rising edges go through the same ledger as a poll. Then the worker runs the outbox."""

from __future__ import annotations

from connector.handlers import runtime

lambda_handler = runtime.scheduled("sweep", lambda pipeline, event: pipeline.sweep())


__all__ = ["lambda_handler"]
