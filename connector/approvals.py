"""One-click approvals: signed, expiring, single-use links, and the small pages they open.

A link carries a token: the approval it answers (the outbox key of the approval request), the
record, the action, the decision and an expiry, signed with HMAC-SHA256 under APPROVAL_SECRET.
Opening it (GET) only shows a confirmation page, because mail scanners open links; the button
on that page POSTs, and the first verdict recorded (connector.outbox.record_verdict) wins: a
second click, an expired or an altered token change nothing.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
from dataclasses import dataclass
from html import escape
from typing import Literal

from connector.errors import RefusedInput
from connector.i18n import LANGUAGES, translate

# What an approver answers (not core's Decision, which is what the rules compute).
Verdict = Literal["approve", "reject"]
STATUS = {"approve": "Approved", "reject": "Rejected"}
PENDING = "Pending"


class InvalidToken(RefusedInput):
    """Altered, unsigned, or not a token at all."""


class ExpiredToken(RefusedInput):
    """Signed by us, but past its expiry (`expired`)."""

    def __init__(self, expired: dt.datetime) -> None:
        super().__init__(f"the link expired on {expired:%Y-%m-%d %H:%M} UTC")
        self.expired = expired


@dataclass(frozen=True)
class Claim:
    key: str              # the approval request's outbox key
    record_id: str
    action: str
    decision: Verdict
    expires: dt.datetime


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def make_token(secret: str, claim: Claim) -> str:
    body = _b64(json.dumps({"k": claim.key, "r": claim.record_id, "a": claim.action,
                            "d": claim.decision, "e": int(claim.expires.timestamp())},
                           separators=(",", ":")).encode())
    signature = hmac.new(secret.encode(), body.encode(), hashlib.sha256).digest()
    return f"{body}.{_b64(signature)}"


def read_token(secret: str, token: str, now: dt.datetime) -> Claim:
    if not secret:
        raise InvalidToken("approvals are not configured (APPROVAL_SECRET)")
    body, _dot, signature = token.partition(".")
    try:
        given = _unb64(signature)
        expected = hmac.new(secret.encode(), body.encode(), hashlib.sha256).digest()
        if not signature or not hmac.compare_digest(given, expected):
            raise InvalidToken("the link's signature does not match")
        data = json.loads(_unb64(body))
        claim = Claim(str(data["k"]), str(data["r"]), str(data["a"]), data["d"],
                      dt.datetime.fromtimestamp(int(data["e"]), dt.UTC))
    except InvalidToken:
        raise
    except (ValueError, KeyError, TypeError, UnicodeError) as exc:
        raise InvalidToken("the link is not an approval link") from exc
    if claim.decision not in STATUS:
        raise InvalidToken("the link's decision is unknown")
    if now >= claim.expires:
        raise ExpiredToken(claim.expires)
    return claim


def page(title: str, message: str, token: str | None = None,
         decision: Verdict | None = None, language: str = "en") -> str:
    """A small self-contained page in `language`; with a token, the button that records the
    decision."""
    form = ""
    if token and decision:
        label = (translate(language, "Approve") if decision == "approve"
                 else translate(language, "Reject"))
        form = (f'<form method="post" action="">'
                f'<input type="hidden" name="token" value="{escape(token)}">'
                f'<button type="submit">{escape(label)}</button></form>')
    return (f"<!DOCTYPE html><html lang=\"{escape(language)}\"><head><meta charset=\"utf-8\">"
            f"<title>{escape(title)}</title><style>body{{font-family:sans-serif;max-width:36rem;"
            "margin:3rem auto;padding:0 1rem}button{font-size:1.1rem;padding:.5rem 1.5rem}"
            f"</style></head><body><h1>{escape(title)}</h1><p>{escape(message)}</p>{form}"
            "</body></html>")


def page_language(headers: dict[str, str], default: str) -> str:
    """The approver's language: the first of ours their browser asks for (Accept-Language,
    by its q weights), else `default` (the mapping's)."""
    asked = []
    for i, part in enumerate(headers.get("accept-language", "").split(",")):
        name, _sep, weight = part.strip().partition(";q=")
        try:
            q = float(weight) if weight else 1.0
        except ValueError:
            continue
        code = name.strip().split("-")[0].lower()
        if code in LANGUAGES and q > 0:
            asked.append((-q, i, code))
    return min(asked)[2] if asked else default
