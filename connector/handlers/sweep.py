"""The sweep function, on its own daily schedule: re-evaluate every open opportunity, so that
conditions that age (`today`, escalations, close dates passing) fire with no edit in the CRM;
rising edges go through the same ledger as a poll. Then the worker runs the outbox."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.logging import correlation_paths

from connector.handlers import runtime

logger = runtime.logger()


@logger.inject_lambda_context(correlation_id_path=correlation_paths.EVENT_BRIDGE,
                              clear_state=True)
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    rt = runtime.current()
    report = rt.app.pipeline.sweep()
    rt.state.take_added()
    rt.nudge(str(event.get("id") or context.aws_request_id))
    result = runtime.summary(report)
    if report.stopped:
        logger.warning("sweep stopped", extra=result)
    else:
        logger.info("sweep done", extra=result)
    return result
