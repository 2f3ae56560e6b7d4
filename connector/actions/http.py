"""HTTP actions: a JSON push to another platform (email marketing, a data warehouse, ...).

The URL comes from the environment (`url: "${MARKETING_WEBHOOK_URL}"`), never from the rule
file, so a rule set can be shared without its endpoints and tokens. Each request carries an
`Idempotency-Key` derived from the opportunity, the action and the rising edge.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

import requests

from connector.actions import opaque
from connector.core.schema import HttpSpec
from connector.crm import json_value
from connector.errors import ConfigurationError, RecordError, RetriableError
from connector.retry import retry_after_seconds
from connector.templates import render_structure, render_value

_VARIABLE = re.compile(r"\$\{([A-Z_][A-Z0-9_]*)\}")


def resolve(text: str, environ: Mapping[str, str]) -> str:
    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        if not environ.get(name):
            raise ConfigurationError(f"set {name}: an HTTP action's URL refers to it")
        return environ[name]

    return _VARIABLE.sub(value, text)


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_jsonable(v) for v in obj]
    return json_value(obj)


def render_request(spec: HttpSpec, values: Mapping[str, Any], environ: Mapping[str, str],
                   resolve_url: bool = True) -> dict[str, Any]:
    """Method, URL, headers and JSON body. In a preview the URL stays `${NAME}`: the real one
    may hold a token."""
    url = resolve(spec.url, environ) if resolve_url else spec.url
    headers = {k: resolve(str(render_value(v, values)), environ) for k, v in spec.headers.items()}
    body = _jsonable(render_structure(spec.json_body, values)) if spec.json_body is not None \
        else None
    return {"method": spec.method, "url": url, "headers": headers, "json": body}


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
            body = json.dumps(request["json"])
        try:
            response = self.session.request(request["method"], request["url"], headers=headers,
                                            data=body, timeout=self.timeout)
        except (requests.ConnectionError, requests.Timeout) as exc:
            raise RetriableError(f"HTTP {request['method']} failed: {type(exc).__name__}") \
                from None
        status = response.status_code
        if status == 429 or status >= 500:
            raise RetriableError(f"HTTP {status} from the endpoint; will retry",
                                 retry_after_seconds(response.headers.get("Retry-After")))
        if status >= 400:
            raise RecordError(f"HTTP {status} from the endpoint: {response.text[:200]!r}")
        return f"HTTP {request['method']} {status}"
