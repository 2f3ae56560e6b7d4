"""Email actions: rendered from Jinja2 templates over the opportunity, sent by SMTP.

The body is a text template (or an HTML one, autoescaped, when the file ends in .html); the
message carries both a plain-text and an HTML part. Its Message-ID comes from the idempotency
key, so a mail server or a reader can recognise a duplicate should one ever slip through.
"""

from __future__ import annotations

import html
import re
import smtplib
from collections.abc import Mapping
from email.message import EmailMessage
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import jinja2

from connector.actions import opaque
from connector.core.schema import EmailSpec
from connector.errors import ConfigurationError, RecordError, RetriableError
from connector.templates import InvalidTemplate, TemplateRenderError, make_environment, render_value


def render_email(spec: EmailSpec, values: Mapping[str, Any], rules_dir: Path) -> dict[str, Any]:
    """To, cc, subject, and the text and HTML bodies. A template that fails fails this record."""
    to = [str(render_value(t, values)).strip() for t in spec.to]
    cc = [str(render_value(t, values)).strip() for t in spec.cc]
    missing = [t for t, r in zip(spec.to + spec.cc, to + cc) if not r]
    if missing:
        raise RecordError(f"email recipient {missing[0]!r} is empty for this opportunity")
    subject = " ".join(str(render_value(spec.subject, values)).split())
    if spec.template:
        env = make_environment(rules_dir)
        try:
            template = env.get_template(spec.template)
            body = template.render(**values)
        except jinja2.TemplateNotFound:
            raise ConfigurationError(f"email template {spec.template} not found under "
                                     f"{rules_dir}") from None
        except jinja2.TemplateSyntaxError as exc:
            raise InvalidTemplate(spec.template, f"line {exc.lineno}: {exc.message}") from None
        except jinja2.TemplateError as exc:
            raise TemplateRenderError(spec.template, exc.message or type(exc).__name__) from None
        is_html = spec.template.casefold().endswith((".html", ".htm"))
    else:
        body = str(render_value(spec.body or "", values))
        is_html = False
    if is_html:
        text = html.unescape(re.sub(r"<[^>]+>", "", body))
        html_body = body
    else:
        text = body
        html_body = f"<html><body><pre style=\"font-family: sans-serif; white-space: pre-wrap\">" \
                    f"{html.escape(body)}</pre></body></html>"
    return {"to": to, "cc": cc, "subject": subject, "text": text, "html": html_body}


def build_message(rendered: Mapping[str, Any], sender: str, key: str) -> EmailMessage:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = ", ".join(rendered["to"])
    if rendered["cc"]:
        message["Cc"] = ", ".join(rendered["cc"])
    message["Subject"] = rendered["subject"]
    domain = sender.rpartition("@")[2] or "crm-automation.invalid"
    message["Message-ID"] = f"<{opaque(key)}@{domain}>"
    message.set_content(rendered["text"])
    message.add_alternative(rendered["html"], subtype="html")
    return message


class SmtpSender:
    """SMTP_URL: smtp://[user:password@]host:port (STARTTLS when the server offers it) or
    smtps://... (TLS from the start)."""

    def __init__(self, url: str, sender: str, timeout: float = 30.0) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
            raise ConfigurationError("SMTP_URL must read smtp://host:port or smtps://host:port")
        self.host = parts.hostname
        self.port = parts.port or (465 if parts.scheme == "smtps" else 25)
        self.tls = parts.scheme == "smtps"
        self.user = unquote(parts.username) if parts.username else None
        self._password = unquote(parts.password) if parts.password else None
        self.sender = sender
        self.timeout = timeout

    def send(self, rendered: Mapping[str, Any], key: str) -> str:
        message = build_message(rendered, self.sender, key)
        try:
            smtp_class = smtplib.SMTP_SSL if self.tls else smtplib.SMTP
            with smtp_class(self.host, self.port, timeout=self.timeout) as smtp:
                if not self.tls and smtp.has_extn("starttls"):
                    smtp.starttls()
                if self.user and self._password:
                    smtp.login(self.user, self._password)
                smtp.send_message(message)
        except smtplib.SMTPAuthenticationError:
            raise ConfigurationError("the SMTP server refused the login in SMTP_URL") from None
        except smtplib.SMTPRecipientsRefused as exc:
            raise RecordError(f"the SMTP server refused the recipients "
                              f"{', '.join(exc.recipients)}") from None
        except smtplib.SMTPResponseException as exc:
            if 400 <= exc.smtp_code < 500:  # 4xx: try again later, per RFC 5321
                raise RetriableError(f"SMTP {exc.smtp_code}: try again later") from None
            raise RecordError(f"SMTP {exc.smtp_code}: {exc.smtp_error!r}") from None
        except (TimeoutError, OSError, smtplib.SMTPException) as exc:
            raise RetriableError(f"cannot reach the SMTP server {self.host}:{self.port} "
                                 f"({type(exc).__name__})") from None
        return f"email to {', '.join(rendered['to'])}"
