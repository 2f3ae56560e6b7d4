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
from email import policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import jinja2

from connector.actions import opaque
from connector.core.schema import EmailSpec
from connector.errors import ConfigurationError, RecordError, RetriableError, Text
from connector.templates import (
    ENV_REFERENCE,
    InvalidTemplate,
    TemplateRenderError,
    make_environment,
    render_context,
    render_problem,
    render_value,
    syntax_problem,
)


def render_email(spec: EmailSpec, values: Mapping[str, Any], rules_dir: Path,
                 environ: Mapping[str, str] | None = None, locale: str | None = None
                 ) -> dict[str, Any]:
    """To, cc, subject, and the text and HTML bodies, `${NAME}` read from `environ` (left as
    written without it: a preview), the `money`, `percent` and `date` filters in `locale` (the
    mapping's). A template that fails, or a recipient that is not one address, fails this
    record."""
    to = [_recipient(t, values, environ) for t in spec.to]
    cc = [_recipient(t, values, environ) for t in spec.cc]
    subject = " ".join(str(render_value(spec.subject, values, environ, locale)).split())
    if spec.template:
        env = make_environment(rules_dir, locale)
        try:
            template = env.get_template(spec.template)
            body = template.render(render_context(values, environ))
        except jinja2.TemplateNotFound:
            raise ConfigurationError(Text("email template {template} not found under {folder}",
                                          template=spec.template, folder=str(rules_dir))
                                     ) from None
        except jinja2.TemplateSyntaxError as exc:
            raise InvalidTemplate(spec.template, Text("line {line}: {problem}", line=exc.lineno,
                                                      problem=syntax_problem(exc))) from None
        except jinja2.TemplateError as exc:
            raise TemplateRenderError(spec.template, render_problem(exc)) from None
        is_html = spec.template.casefold().endswith((".html", ".htm"))
    else:
        body = str(render_value(spec.body or "", values, environ, locale))
        is_html = False
    if is_html:
        text = html.unescape(re.sub(r"<[^>]+>", "", body))
        html_body = body
    else:
        text = body
        html_body = f"<html><body><pre style=\"font-family: sans-serif; white-space: pre-wrap\">" \
                    f"{html.escape(body)}</pre></body></html>"
    return {"to": to, "cc": cc, "subject": subject, "text": text, "html": html_body}


def _recipient(template: str, values: Mapping[str, Any],
               environ: Mapping[str, str] | None) -> str:
    # Each `to:` / `cc:` entry is one recipient: a field holding "a@x.com, b@evil.example"
    # must not add one.
    text = str(render_value(template, values, environ)).strip()
    if not text:
        raise RecordError(Text("email recipient {template} is empty for this opportunity",
                               template=repr(template)))
    # A preview keeps `${NAME}` as written: check it as the address it will be.
    problem = address_problem(text if environ is not None else
                              ENV_REFERENCE.sub("name@example.invalid", text))
    if problem:
        # A variable's value is not quoted: only the record's own data is.
        if ENV_REFERENCE.search(template):
            raise RecordError(Text("email recipient {template} for this opportunity: {problem}",
                                   template=repr(template), problem=problem))
        raise RecordError(Text("email recipient {template} is {value} for this opportunity: "
                               "{problem}", template=repr(template),
                               value=repr(text if len(text) <= 80 else text[:77] + "..."),
                               problem=problem))
    return text


def address_problem(text: str) -> Text | None:
    """Why `text` is not exactly one email address ("Ann <ann@acme.com>" is one), or None."""
    if re.search(r"[\x00-\x1f\x7f]", text):
        return Text("it holds a line break or a control character")
    try:
        header = policy.default.header_factory("To", text)
        groups = header.groups
    except (IndexError, ValueError, TypeError):  # the parser's own failures on odd input
        return Text("not an email address")
    addresses = [a for g in groups for a in g.addresses]
    if len(addresses) > 1:
        return Text("{n} addresses where one is expected", n=len(addresses))
    if header.defects or len(groups) != 1 or groups[0].display_name is not None or \
            not addresses or not addresses[0].username or not addresses[0].domain:
        return Text("not an email address")
    return None


def build_message(rendered: Mapping[str, Any], sender: str, key: str) -> EmailMessage:
    try:
        return _message(rendered, sender, key)
    except ValueError as exc:  # a header the email library refuses: this message cannot go
        raise RecordError(Text("the email cannot be built: {reason}", reason=str(exc))) from None


def _message(rendered: Mapping[str, Any], sender: str, key: str) -> EmailMessage:
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


def checked_sender(sender: str) -> str:
    problem = address_problem(sender)
    if problem:
        raise ConfigurationError(Text("EMAIL_FROM must be one email address: {problem}",
                                      problem=problem))
    return sender


class SmtpSender:
    """SMTP_URL: smtp://[user:password@]host:port (STARTTLS when the server offers it) or
    smtps://... (TLS from the start)."""

    def __init__(self, url: str, sender: str, timeout: float = 30.0) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
            raise ConfigurationError(Text("SMTP_URL must read smtp://host:port or "
                                          "smtps://host:port"))
        self.host = parts.hostname
        self.port = parts.port or (465 if parts.scheme == "smtps" else 25)
        self.tls = parts.scheme == "smtps"
        self.user = unquote(parts.username) if parts.username else None
        self._password = unquote(parts.password) if parts.password else None
        if not f"{self.user or ''}{self._password or ''}".isascii():
            # smtplib sends the login as ASCII: anything else fails on every email
            raise ConfigurationError(Text("the user and password in SMTP_URL must be ASCII"))
        self.sender = checked_sender(sender)
        self.timeout = timeout

    def send(self, rendered: Mapping[str, Any], key: str) -> str:
        message = build_message(rendered, self.sender, key)
        try:
            smtp_class = smtplib.SMTP_SSL if self.tls else smtplib.SMTP
            with smtp_class(self.host, self.port, timeout=self.timeout) as smtp:
                smtp.ehlo()  # the server's extensions are known only after EHLO
                if not self.tls and smtp.has_extn("starttls"):
                    smtp.starttls()
                    smtp.ehlo()
                if self.user and self._password:
                    if not smtp.has_extn("auth"):
                        raise ConfigurationError(Text(
                            "SMTP_URL has a user and password, but the SMTP server offers no "
                            "login (AUTH) here"))
                    smtp.login(self.user, self._password)
                smtp.send_message(message)
        except smtplib.SMTPAuthenticationError:
            raise ConfigurationError(Text("the SMTP server refused the login in SMTP_URL")
                                     ) from None
        except smtplib.SMTPNotSupportedError:
            raise RecordError(Text("the SMTP server cannot take this email's non-ASCII addresses "
                                   "(no SMTPUTF8)")) from None
        except smtplib.SMTPRecipientsRefused as exc:
            raise RecordError(Text("the SMTP server refused the recipients {recipients}",
                                   recipients=", ".join(exc.recipients))) from None
        except smtplib.SMTPResponseException as exc:
            if 400 <= exc.smtp_code < 500:  # 4xx: try again later, per RFC 5321
                raise RetriableError(Text("SMTP {code}: try again later", code=exc.smtp_code)
                                     ) from None
            raise RecordError(Text("SMTP {code}: {reason}", code=exc.smtp_code,
                                   reason=repr(exc.smtp_error))) from None
        except (TimeoutError, OSError, smtplib.SMTPException) as exc:
            raise RetriableError(Text("cannot reach the SMTP server {host}:{port} ({error})",
                                      host=self.host, port=self.port,
                                      error=type(exc).__name__)) from None
        return f"email to {', '.join(rendered['to'])}"
