"""What the Lambda functions share, built once per container and kept while it is warm: the
Powertools logger, the secrets (read from SSM Parameter Store at run time, never written in
serverless.yml), the settings, the app on the DynamoDB state, the work queue and the SES sender.

The environment serverless.yml gives each function:

    STATE_URL           dynamodb://TABLE
    WORK_QUEUE_URL      the SQS queue the worker reads
    IDEMPOTENCY_TABLE   Powertools' idempotency records (the worker only)
    SECRETS_PATH        an SSM path, e.g. /crm-automation/prod/sync/; each SecureString under
                        it becomes the variable of its last segment (.../sync/ERP_PASSWORD), read
                        once per cold start (a variable set in the environment wins)
    EMAIL_TRANSPORT     ses | smtp (default: smtp when SMTP_URL is set, else ses in Lambda)
    SES_CONFIGURATION_SET   optional
    RULES_DIR, MAPPINGS_DIR default: rules/ and mappings/ beside the code
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
from collections.abc import Callable, Iterable, MutableMapping
from functools import cache, cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from connector.errors import ConfigurationError, RetriableError, Text

if TYPE_CHECKING:
    from aws_lambda_powertools import Logger

    from connector.app import App
    from connector.pipeline import DrainReport, Pipeline, RunReport
    from connector.settings import Settings
    from connector.state import StateStore

SERVICE = "crm-automation"
IDEMPOTENCY_TTL = dt.timedelta(hours=72)   # SQS keeps a message 4 days; CDC replays 72 h
SQS_BATCH = 10                             # SendMessageBatch's limit


@cache
def logger() -> Logger:
    """The Powertools logger (structured JSON, with the correlation id of each invocation).
    The connector's own `logging` loggers write through it too."""
    import logging

    from aws_lambda_powertools import Logger
    from aws_lambda_powertools.logging.utils import copy_config_to_registered_loggers

    log = Logger(service=os.environ.get("POWERTOOLS_SERVICE_NAME") or SERVICE)
    logging.getLogger("connector")
    copy_config_to_registered_loggers(source_logger=log, include={"connector"})
    return log


def outbox_message(key: str, attempts: int = 0) -> dict[str, Any]:
    """The queue message that asks the worker to run one outbox item. `attempts` tells the
    tries of one item apart (the worker's idempotency key is the message body)."""
    return {"kind": "outbox", "key": key, "attempts": attempts}


def load_secrets(environ: MutableMapping[str, str], ssm: Any, path: str) -> list[str]:
    """Every parameter under `path` into `environ` (without overwriting); returns the names,
    never the values."""
    from botocore.exceptions import BotoCoreError, ClientError

    loaded: list[str] = []
    try:
        for page in ssm.get_paginator("get_parameters_by_path").paginate(
                Path=path.rstrip("/") or "/", WithDecryption=True, Recursive=False):
            for parameter in page.get("Parameters", []):
                name = str(parameter["Name"]).rstrip("/").rpartition("/")[2].upper()
                if name and name not in environ:
                    environ[name] = str(parameter["Value"])
                    loaded.append(name)
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        raise ConfigurationError(Text("cannot read the secrets under SSM path {path} ({code}): "
                                      "check SECRETS_PATH and the function's role", path=path,
                                      code=code)) from None
    except BotoCoreError as exc:
        raise RetriableError(Text("cannot reach SSM Parameter Store ({error})",
                                  error=type(exc).__name__)) from None
    return loaded


class WorkQueue:
    """The SQS queue of outbox work. A message that cannot be sent is a RetriableError: the
    webhook then answers 503 and the sender delivers again."""

    def __init__(self, url: str, client: Any) -> None:
        self.url = url
        self._sqs = client

    def send(self, messages: Iterable[dict[str, Any]]) -> int:
        from botocore.exceptions import BotoCoreError, ClientError

        bodies = [json.dumps(m, sort_keys=True, separators=(",", ":")) for m in messages]
        for i in range(0, len(bodies), SQS_BATCH):
            entries = [{"Id": str(n), "MessageBody": b}
                       for n, b in enumerate(bodies[i:i + SQS_BATCH])]
            for _ in range(3):
                try:
                    answer = self._sqs.send_message_batch(QueueUrl=self.url, Entries=entries)
                except ClientError as exc:
                    code = exc.response.get("Error", {}).get("Code", "")
                    raise RetriableError(Text("the work queue refused the messages ({code})",
                                              code=code)) from None
                except BotoCoreError as exc:
                    raise RetriableError(Text("cannot reach SQS ({error})",
                                              error=type(exc).__name__)) from None
                failed = {f["Id"] for f in answer.get("Failed", [])}
                entries = [e for e in entries if e["Id"] in failed]
                if not entries:
                    break
            else:
                raise RetriableError(Text("the work queue refused {n} messages",
                                          n=len(entries)))
        return len(bodies)


class QueueingStore:
    """The webhook function's `store`: the notice goes into the state (deduplicated there),
    and a message for the worker is queued; `flush` sends them once the route has answered."""

    def __init__(self, state: StateStore, queue: WorkQueue,
                 now: Callable[[], dt.datetime]) -> None:
        self.state = state
        self.queue = queue
        self.now = now
        self.pending: list[dict[str, Any]] = []

    def __call__(self, key: str, ids: list[str]) -> bool:
        from connector.state.notices import store_notice

        stored = store_notice(self.state, key, ids, self.now())
        # A duplicate is queued again too: its first message may be the one that got lost
        # (the sender redelivers when we answered 503). The worker runs a done item never.
        self.pending.append(outbox_message(f"notice:{key}"))
        return stored

    def flush(self) -> int:
        sent = self.queue.send(self.pending)
        self.pending = []
        return sent


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class Runtime:
    """Everything a function needs, each part built on first use."""

    def __init__(self, environ: MutableMapping[str, str] | None = None,
                 now: Callable[[], dt.datetime] = _utcnow) -> None:
        self.environ = os.environ if environ is None else environ
        self.now = now
        self._clients: dict[str, Any] = {}

    def client(self, service: str) -> Any:
        if service not in self._clients:
            import boto3
            from botocore.config import Config

            self._clients[service] = boto3.client(service, config=Config(
                retries={"mode": "standard", "max_attempts": 5}, connect_timeout=5,
                read_timeout=30))
        return self._clients[service]

    def _folder(self, variable: str, default: str) -> Path:
        given = self.environ.get(variable)
        if given:
            return Path(given)
        root = self.environ.get("LAMBDA_TASK_ROOT")
        return Path(root) / default if root else Path(default)

    @property
    def rules_dir(self) -> Path:
        return self._folder("RULES_DIR", "rules")

    @property
    def mappings_dir(self) -> Path:
        return self._folder("MAPPINGS_DIR", "mappings")

    @cached_property
    def settings(self) -> Settings:
        from connector.settings import load_settings

        path = self.environ.get("SECRETS_PATH")
        if path:
            names = load_secrets(self.environ, self.client("ssm"), path)
            logger().info("secrets loaded", extra={"secrets": sorted(names)})
        return load_settings()

    @cached_property
    def state(self) -> StateStore:
        from connector.state import open_state

        return open_state(self.settings.state_url, dynamodb=lambda: self.client("dynamodb"))

    def enqueue(self, keys: Iterable[str]) -> int:
        """One work message per outbox key (what a run added, to run next)."""
        return self.queue.send(outbox_message(k) for k in keys)

    @cached_property
    def queue(self) -> WorkQueue:
        url = self.environ.get("WORK_QUEUE_URL")
        if not url:
            raise ConfigurationError(Text("WORK_QUEUE_URL is not set: serverless.yml gives it "
                                          "to every function"))
        return WorkQueue(url, self.client("sqs"))

    @cached_property
    def app(self) -> App:
        from connector.app import build_app

        return build_app(self.rules_dir, self.mappings_dir, self.settings, state=self.state,
                         now=self.now, senders=self.senders())

    @cached_property
    def version(self) -> str:
        """The rule set's version, for /health, without building the app when not built."""
        if "app" in self.__dict__:
            return self.app.version
        from connector.files import load

        return load(self.rules_dir, self.mappings_dir, crm=self.environ.get("CRM") or None).version

    def senders(self) -> dict[str, Callable[..., Any]]:
        """The action senders that differ in the cloud: email through SES."""
        transport = (self.environ.get("EMAIL_TRANSPORT") or "").strip().lower()
        if not transport:
            in_lambda = bool(self.environ.get("AWS_LAMBDA_FUNCTION_NAME"))
            transport = "ses" if in_lambda and not self.settings.smtp_url else "smtp"
        if transport == "smtp":
            return {}
        if transport != "ses":
            raise ConfigurationError(Text("EMAIL_TRANSPORT must be 'ses' or 'smtp'"))

        def send(rendered: Any, key: str) -> str:
            return str(self.ses.send(rendered, key))

        return {"email": send}

    @cached_property
    def ses(self) -> Any:
        from connector.actions.ses import SesSender

        return SesSender(self.settings.email_from, client=self.client("sesv2"),
                         configuration_set=self.environ.get("SES_CONFIGURATION_SET") or None)

    def webhook_store(self) -> QueueingStore:
        return QueueingStore(self.state, self.queue, self.now)

    def nudge(self, reason: str) -> None:
        """Ask the worker to look for due outbox items (retries whose time came)."""
        self.queue.send([{"kind": "drain", "id": reason}])


def summary(report: RunReport | DrainReport) -> dict[str, Any]:
    """A report as JSON-ready numbers and short texts (logs, the functions' answers); the
    outbox items it added, counted."""
    data = dataclasses.asdict(report)
    data["added"] = len(data["added"])
    return {k: v for k, v in data.items() if v not in (None, [], "")}


def scheduled(name: str, run: Callable[[Pipeline, dict[str, Any]], RunReport]
              ) -> Callable[[dict[str, Any], Any], dict[str, Any]]:
    """The handler of a scheduled run (poll, sweep): `run` the pipeline (given the event),
    leave the outbox items it added for the worker's drain (no message each), nudge the worker
    once, and log the report (a warning when the run stopped: the cursor is kept for the next
    schedule)."""
    from aws_lambda_powertools.logging import correlation_paths

    log = logger()

    @log.inject_lambda_context(correlation_id_path=correlation_paths.EVENT_BRIDGE,
                               clear_state=True)
    def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        rt = current()
        report = run(rt.app.pipeline, event)
        rt.nudge(str(event.get("id") or context.aws_request_id))
        result = summary(report)
        if report.stopped:
            log.warning(f"{name} stopped", extra=result)
        else:
            log.info(f"{name} done", extra=result)
        return result

    return lambda_handler  # type: ignore[no-any-return]


_current: Runtime | None = None


def current() -> Runtime:
    global _current
    if _current is None:
        _current = Runtime()
    return _current


def reset(runtime: Runtime | None = None) -> None:
    """Start again with fresh clients and settings (tests), or with the given runtime."""
    global _current
    _current = runtime


__all__ = ["IDEMPOTENCY_TTL", "QueueingStore", "Runtime", "WorkQueue", "current",
           "load_secrets", "logger", "outbox_message", "reset", "scheduled", "summary"]
