"""Actions: what a workflow or trigger does besides setting fields. Each runs from the outbox
with an idempotency key, so a retry or a rerun never repeats its effect; `preview` renders it
without sending anything (the dry run shows these).

Kinds: `email` (SMTP on one machine, SES in the cloud), `http` (a push to another platform),
`erp` (a closed-won deal becomes a sales order), `audience` (the contact into an email-marketing
list: Mailchimp, Brevo).
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from connector.core.ruleset import Action, RuleSet
from connector.errors import ConfigurationError, ConnectorError, RecordError, Text
from connector.formatting import listed

# --- the record's values as the outbox keeps them (JSON, types kept) ------------------------


def encode_values(values: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in values.items():
        if isinstance(value, bool) or value is None or isinstance(value, (str, int)):
            out[name] = value
        elif isinstance(value, Decimal):
            out[name] = {"$decimal": str(value)}
        elif isinstance(value, dt.datetime):
            out[name] = {"$datetime": value.isoformat()}
        elif isinstance(value, dt.date):
            out[name] = {"$date": value.isoformat()}
        else:
            out[name] = str(value)
    return out


def decode_values(data: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in data.items():
        if isinstance(value, dict) and len(value) == 1:
            (tag, text), = value.items()
            if tag == "$decimal":
                value = Decimal(text)
            elif tag == "$datetime":
                value = dt.datetime.fromisoformat(text)
            elif tag == "$date":
                value = dt.date.fromisoformat(text)
        out[name] = value
    return out


def idempotency_key(record_id: str, action: str, episode: int) -> str:
    """One key per rising edge: the record, the action, and which time it rose."""
    return f"{record_id}:{action}:{episode}"


def opaque(key: str) -> str:
    """The key as sent to other systems (headers, Message-ID): fixed length, no record names."""
    return hashlib.sha256(key.encode()).hexdigest()[:32]


@dataclass
class Preview:
    action: str
    kind: str
    rendered: dict[str, Any]


class ActionRunner:
    """Renders and runs the rule set's actions. Senders are built lazily, on first use, so a
    dry run or a rule set without emails needs no SMTP settings."""

    def __init__(self, rules: RuleSet, rules_dir: Path, mappings_dir: Path,
                 settings: Any = None, senders: Mapping[str, Callable[..., Any]] | None = None,
                 environ: Mapping[str, str] | None = None) -> None:
        import os

        self.settings = settings
        self.rules = rules
        self.rules_dir = rules_dir
        self.mappings_dir = mappings_dir
        self.environ = os.environ if environ is None else environ
        self._senders: dict[str, Callable[..., Any]] = dict(senders or {})
        self._erp_mapping: Any = None

    def action(self, name: str) -> Action:
        try:
            return self.rules.actions[name]
        except KeyError:
            raise RecordError(Text("action '{name}' is no longer in the rules", name=name)
                              ) from None

    def render(self, name: str, values: Mapping[str, Any]) -> Preview:
        """What the action would send, rendered; nothing is sent. `${NAME}` stays as written:
        previews go into reports, and the variables hold URLs and tokens."""
        action = self.action(name)
        if action.kind == "approval":
            values = {**values, "approve_url": "(approve link)", "reject_url": "(reject link)",
                      "expires_on": "(expiry)"}
        shown = self._rendered(action, values, None)
        if action.kind == "erp":
            shown = {"reference": shown.reference, "customer": shown.customer.match,
                     "header": shown.header, "lines": list(shown.lines)}
        return Preview(name, action.kind, shown)

    def _rendered(self, action: Action, values: Mapping[str, Any],
                  environ: Mapping[str, str] | None) -> Any:
        """What the action sends for a record: the message, the request, the member or the
        sales order. `${NAME}` in what the admin wrote is resolved from `environ`, or left as
        written without it (a preview)."""
        if action.kind in ("email", "approval"):
            from connector.actions.email import render_email

            return render_email(action.spec, values, self.rules_dir, environ,
                                self.rules.mapping.locale)
        if action.kind == "http":
            from connector.actions.http import render_request

            return render_request(action.spec, values, environ)
        if action.kind == "audience":
            from connector.actions.audience import render_member

            return render_member(action.spec, values, environ)
        return self.erp_mapping().order_for(values, environ)

    def erp_mapping(self) -> Any:
        if self._erp_mapping is None:
            from connector.erp import load_erp_mapping

            path = self.mappings_dir / "erp.yaml"
            mapping, findings = load_erp_mapping(path, set(self.rules.mapping.canonical_names))
            if mapping is None:
                raise ConfigurationError(listed([f.located for f in findings], "; ")
                                         or Text("{file}: cannot read the ERP mapping",
                                                 file=str(path)))
            self._erp_mapping = mapping
        return self._erp_mapping

    def run(self, name: str, key: str, values: Mapping[str, Any]) -> str:
        """Perform the action once for this idempotency key; returns what was done. Raises
        RetriableError (try again later) or another ConnectorError (park it)."""
        action = self.action(name)
        sender = self._sender(action.kind)
        done = sender(self._rendered(action, values, self.environ), key)
        return f"sales order {done}" if action.kind == "erp" else str(done)

    def batches(self, name: str) -> bool:
        """Whether this action's items run together (`run_many`): Mailchimp takes 500
        members in one call."""
        action = self.rules.actions.get(name)
        return action is not None and action.kind == "audience" and \
            action.spec.provider == "mailchimp"

    def run_many(self, name: str, items: Mapping[str, Mapping[str, Any]]
                 ) -> dict[str, str | ConnectorError]:
        """Perform the action for many idempotency keys (key -> the record's values) in as
        few calls as the API allows; what came of each, by key. A record that cannot be
        rendered fails alone."""
        action = self.action(name)
        outcomes: dict[str, str | ConnectorError] = {}
        members = {}
        for key, values in items.items():
            try:
                members[key] = self._rendered(action, values, self.environ)
            except ConnectorError as exc:
                outcomes[key] = exc
        if members:
            outcomes.update(self._sender("audience-batch")(members))
        return outcomes

    def request_approval(self, name: str, key: str, record_id: str,
                         values: Mapping[str, Any], now: dt.datetime) -> tuple[str, dt.datetime]:
        """Email the approver two signed one-click links; returns (to whom, expiry)."""
        from connector.approvals import Claim, make_token

        action = self.action(name)
        spec = action.spec
        secret = self.settings.approval_secret if self.settings else None
        base = (self.settings.public_url or "").rstrip("/") if self.settings else ""
        if secret is None or not base:
            raise ConfigurationError(Text("approval actions need APPROVAL_SECRET (the key that "
                                          "signs the links) and PUBLIC_URL (where the links "
                                          "point)"))
        expires = now + dt.timedelta(days=spec.expires_in_days)
        links = {f"{decision}_url": f"{base}/approvals/" + make_token(
            secret.get_secret_value(), Claim(key, record_id, name, decision, expires))
            for decision in ("approve", "reject")}
        message = self._rendered(action, {**values, **links, "expires_on": expires.date()},
                                 self.environ)
        self._sender("email")(message, key)
        return ", ".join(message["to"]), expires

    def _sender(self, kind: str) -> Callable[..., Any]:
        if kind not in self._senders:
            self._senders[kind] = _default_sender(kind, self)
        return self._senders[kind]


def _default_sender(kind: str, runner: ActionRunner) -> Callable[..., Any]:
    from connector.settings import load_settings

    settings = runner.settings or load_settings()
    if kind == "email":
        from connector.actions.email import SmtpSender

        if not settings.smtp_url or not settings.email_from:
            raise ConfigurationError(Text("email actions need SMTP_URL (smtp://host:port) and "
                                          "EMAIL_FROM"))
        return SmtpSender(settings.smtp_url, settings.email_from).send
    if kind == "http":
        from connector.actions.http import HttpSender

        return HttpSender().send
    if kind in ("audience", "audience-batch"):
        from connector.actions.audience import AudienceSender

        mailchimp, brevo = settings.mailchimp_api_key, settings.brevo_api_key
        audiences = AudienceSender(mailchimp.get_secret_value() if mailchimp else None,
                                   brevo.get_secret_value() if brevo else None)
        return audiences.send if kind == "audience" else audiences.send_many
    from connector.erp import connect_erp

    if not settings.erp_url:
        raise ConfigurationError(Text("ERP actions need ERP_URL (and ERP_DATABASE, ERP_USERNAME, "
                                      "ERP_PASSWORD for Tryton)"))
    erp = connect_erp(runner.erp_mapping().erp, settings.erp_url, settings.erp_database,
                      settings.erp_username,
                      settings.erp_password.get_secret_value() if settings.erp_password else None)
    return erp.push_order
