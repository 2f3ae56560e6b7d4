"""The poll function, on an EventBridge schedule: read what changed in the CRM since the cursor,
compute, write back and commit (the cursor moves only forward, even with two polls at once),
then ask the worker, through the queue, to run the outbox items that are due."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.logging import correlation_paths

from connector.handlers import runtime

logger = runtime.logger()


@logger.inject_lambda_context(correlation_id_path=correlation_paths.EVENT_BRIDGE,
                              clear_state=True)
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    rt = runtime.current()
    report = rt.app.pipeline.poll()
    rt.state.take_added()            # the worker's drain finds them: no message each
    rt.nudge(str(event.get("id") or context.aws_request_id))
    result = runtime.summary(report)
    if report.stopped:   # the cursor is kept; the next schedule tries again
        logger.warning("poll stopped", extra=result)
    else:
        logger.info("poll done", extra=result)
    return result
