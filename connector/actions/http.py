"""HTTP actions: a JSON push to another platform (email marketing, a data warehouse, ...).

The URL comes from the environment (`url: "${MARKETING_WEBHOOK_URL}"`), never from the rule
file, so a rule set can be shared without its endpoints and tokens; headers and the body may
name variables too (`Authorization: "Bearer ${MARKETING_TOKEN}"`). Each request carries an
`Idempotency-Key` derived from the opportunity, the action and the rising edge.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import requests

from connector.actions import opaque
from connector.core.schema import HttpSpec
from connector.crm import json_value, scrub
from connector.errors import ConfigurationError, RecordError, RetriableError, Text
from connector.retry import retry_after_seconds
from connector.templates import ENV_REFERENCE, render_structure, render_value, resolve

# What a header value may hold (RFC 9110 5.5): visible characters, spaces and tabs, Latin-1.
_NOT_IN_HEADER = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]|[^\x00-\xff]")


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_jsonable(v) for v in obj]
    return json_value(obj)


def render_request(spec: HttpSpec, values: Mapping[str, Any],
                   environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Method, URL, headers and JSON body, `${NAME}` read from `environ`. Without it (a
    preview) `${NAME}` stays as written: the real URL or token is a secret."""
    headers = {name: _header_value(name, template, values, environ)
               for name, template in spec.headers.items()}
    body = _jsonable(render_structure(spec.json_body, values, environ)) \
        if spec.json_body is not None else None
    return {"method": spec.method, "url": resolve(spec.url, environ), "headers": headers,
            "json": body}


def _header_value(name: str, template: str, values: Mapping[str, Any],
                  environ: Mapping[str, str] | None) -> str:
    """A header's one line. A variable that breaks it is the admin's to fix; a field that
    breaks it fails this record alone. Neither message quotes the value."""
    for variable in ENV_REFERENCE.findall(template):
        if environ is not None and _NOT_IN_HEADER.search(environ.get(variable, "").strip()):
            raise ConfigurationError(Text("{variable} holds a line break or a character an HTTP "
                                          "header cannot carry: it is used in header {name}",
                                          variable=variable, name=name))
    text = str(render_value(template, values, environ)).strip()
    bad = _NOT_IN_HEADER.search(text)
    if bad:
        if bad.group() in "\r\n":
            raise RecordError(Text("header {name}: the value for this opportunity holds a line "
                                   "break", name=name))
        raise RecordError(Text("header {name}: the value for this opportunity holds a character "
                               "an HTTP header cannot carry (U+{code})", name=name,
                               code=format(ord(bad.group()), "04X")))
    return text


class HttpSender:
    def __init__(self, session: requests.Session | None = None, timeout: float = 30.0) -> None:
        self.session = session or requests.Session()
        self.timeout = timeout

    def send(self, request: Mapping[str, Any], key: str) -> str:
        headers = dict(request["headers"])
        headers["Idempotency-Key"] = opaque(key)
        body = None
        if request["json"] is not None:
            headers.setdefault("Content-Type", "application/json")
            try:
                body = json.dumps(request["json"], allow_nan=False)
            except (TypeError, ValueError) as exc:  # a rendered value JSON cannot carry
                raise RecordError(Text("the JSON body cannot be sent: {reason}", reason=str(exc))
                                  ) from None
        url = request["url"]
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname or \
                re.search(r"[\x00-\x1f\x7f]", url):
            raise _bad_url(Text("it is not an http(s) URL"))
        try:
            response = self.session.request(request["method"], url, headers=headers,
                                            data=body, timeout=self.timeout)
        except (requests.ConnectionError, requests.Timeout) as exc:
            raise _failed(request["method"], exc) from None
        except (requests.exceptions.InvalidURL, requests.exceptions.InvalidSchema,
                requests.exceptions.MissingSchema) as exc:
            raise _bad_url(type(exc).__name__) from None
        except requests.exceptions.InvalidHeader:
            # The values were checked when rendered: what is left is a header's name.
            raise ConfigurationError(Text("an HTTP action's header name is not a valid HTTP "
                                          "header name: check its headers: in the rules")
                                     ) from None
        except requests.RequestException as exc:  # the answer broke off: the next try may pass
            raise _failed(request["method"], exc) from None
        status = response.status_code
        if status == 429 or status >= 500:
            raise RetriableError(Text("HTTP {status} from the endpoint; will retry",
                                      status=status),
                                 retry_after_seconds(response.headers.get("Retry-After")))
        if status >= 400:
            # The answer may echo what was sent (a token, the URL): never quote those.
            sent = [url, parts.path, parts.query, *headers.values(),
                    *(word for value in headers.values() for word in value.split())]
            answer = scrub(response.text[:200], [s for s in sent if len(s) >= 8])
            raise RecordError(Text("HTTP {status} from the endpoint: {answer}", status=status,
                                   answer=repr(answer)))
        return f"HTTP {request['method']} {status}"


def _failed(method: str, exc: Exception) -> RetriableError:
    return RetriableError(Text("HTTP {method} failed: {error}", method=method,
                               error=type(exc).__name__))


def _bad_url(reason: str) -> ConfigurationError:
    # Never the URL itself: it may carry a token.
    return ConfigurationError(Text("an HTTP action's URL cannot be used ({reason}): check the "
                                   "variable its url: names", reason=reason))
