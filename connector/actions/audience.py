"""Audience actions: the opportunity's contact put in an email-marketing list, with merge
fields and tags (lost deals into a nurture list tagged by product; won deals out of it).

Every call is an upsert keyed by the email address, so a retry or a rerun after a crash
changes nothing the first call did not:

- Mailchimp (Marketing API v3, `MAILCHIMP_API_KEY`; the data centre is the key's suffix,
  `...-us21`): `PUT /lists/{list}/members/{md5 of the lower-case email}` with `status_if_new`
  and `merge_fields`, then `POST .../tags` (active / inactive). Many members at once go in
  `POST /lists/{list}` batches of 500 (`update_existing`), their tags with them; a member with
  tags to remove goes alone, as the batch call can only add tags.
- Brevo (`BREVO_API_KEY`): `POST /v3/contacts` with `updateEnabled`, `listIds`, `attributes`,
  one contact a call (its import is asynchronous: a process to poll, not an answer).

429 and 5xx are retried with the one retry policy; a 400 (an invalid address, a contact in a
compliance state, a forgotten one) fails that record alone, with the provider's reason.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Mapping, Sequence
from typing import Any

import requests

from connector.core.schema import AudienceSpec
from connector.crm import json_value
from connector.errors import (
    ConfigurationError,
    ConnectorError,
    RecordError,
    RetriableError,
    Text,
)
from connector.retry import RetryPolicy, retry_after_seconds
from connector.templates import render_structure, render_value, resolve

MAILCHIMP_BATCH = 500  # members per POST /lists/{list_id}, Mailchimp's limit
BREVO_URL = "https://api.brevo.com/v3"


def subscriber_hash(email: str) -> str:
    """Mailchimp's member id: the MD5 of the lower-case address."""
    return hashlib.md5(email.lower().encode(), usedforsecurity=False).hexdigest()


def render_member(spec: AudienceSpec, values: Mapping[str, Any],
                  environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """What the action sends for one opportunity. The list id, the address, the merge fields
    and the tags may read the environment (`${NAME}`, resolved only in what the admin wrote);
    without `environ` (a preview) it stays `${NAME}`."""
    email = str(render_value(spec.email, values, environ) or "").strip()
    if "@" not in email:
        if email:
            raise RecordError(Text("the contact email {template} is {value}, not an address, "
                                   "for this opportunity", template=repr(spec.email),
                                   value=repr(email)))
        raise RecordError(Text("the contact email {template} is empty for this opportunity",
                               template=repr(spec.email)))
    tags = _names(spec.tags, values, environ)
    remove = _names(spec.remove_tags, values, environ)
    both = sorted(set(tags) & set(remove))
    if both:
        raise RecordError(Text("tag {tag} is both in 'tags' (add it) and 'remove_tags' (remove "
                               "it) for this opportunity: which one is meant?", tag=repr(both[0])))
    merge = {key: json_value(value)
             for key, value in render_structure(spec.merge_fields, values, environ).items()}
    return {"provider": spec.provider, "list": resolve(str(spec.list_id), environ),
            "email": email, "status": spec.status, "merge_fields": merge,
            "tags": tags, "remove_tags": remove}


def _names(templates: Sequence[str], values: Mapping[str, Any],
           environ: Mapping[str, str] | None) -> list[str]:
    """Rendered tag names, blanks left out (a deal without a product gets no product tag)."""
    names = (" ".join(str(render_value(t, values, environ) or "").split()) for t in templates)
    return list(dict.fromkeys(n for n in names if n))


class AudienceSender:
    """Sends rendered members to their provider; each client is made on first use, so a rule
    set with Brevo actions only needs no Mailchimp key."""

    def __init__(self, mailchimp_key: str | None, brevo_key: str | None,
                 session: requests.Session | None = None, retry: RetryPolicy | None = None,
                 timeout: float = 30.0) -> None:
        self._keys = {"mailchimp": mailchimp_key, "brevo": brevo_key}
        self._session = session
        self._retry = retry or RetryPolicy()
        self._timeout = timeout
        self._clients: dict[str, _Api] = {}

    def send(self, member: Mapping[str, Any], key: str) -> str:
        return str(self._client(member["provider"]).upsert(member))

    def send_many(self, members: Mapping[str, Mapping[str, Any]]
                  ) -> dict[str, str | ConnectorError]:
        """Many Mailchimp members by idempotency key; the outcome of each, by the same key."""
        try:
            client = self._client("mailchimp")
        except ConnectorError as exc:  # no key: every one of them waits
            return dict.fromkeys(members, exc)
        assert isinstance(client, Mailchimp)
        return client.upsert_many(members)

    def _client(self, provider: str) -> _Api:
        if provider not in self._clients:
            key = self._keys.get(provider)
            variable = f"{provider.upper()}_API_KEY"
            if not key:
                raise ConfigurationError(Text("{provider} audience actions need {variable}",
                                              provider=provider, variable=variable))
            http = self._session or requests.Session()
            client = Mailchimp if provider == "mailchimp" else Brevo
            self._clients[provider] = client(key, http, self._retry, self._timeout)
        return self._clients[provider]


class _Api:
    """One provider's HTTP API: calls tried again on 429 and 5xx by the retry policy, answers
    sorted into our errors."""

    name = ""
    key_variable = ""

    def __init__(self, base: str, http: requests.Session, retry: RetryPolicy,
                 timeout: float) -> None:
        self.base = base
        self._http = http
        self._retry = retry
        self._timeout = timeout

    def __repr__(self) -> str:  # never the key
        return f"{type(self).__name__}({self.base!r})"

    def call(self, method: str, path: str, body: Any, headers: Mapping[str, str],
             list_id: str) -> Any:
        return self._retry.call(lambda: self._once(method, path, body, headers, list_id))

    def _once(self, method: str, path: str, body: Any, headers: Mapping[str, str],
              list_id: str) -> Any:
        try:
            response = self._http.request(method, self.base + path, json=body,
                                          headers=dict(headers), timeout=self._timeout)
        except (requests.ConnectionError, requests.Timeout) as exc:
            raise RetriableError(Text("cannot reach {service} ({error}): will retry",
                                      service=self.name, error=type(exc).__name__)) from None
        status = response.status_code
        if status == 429 or status >= 500:
            raise RetriableError(Text("{service} answered {status}: will retry",
                                      service=self.name, status=status),
                             retry_after_seconds(response.headers.get("Retry-After")))
        try:
            data = response.json() if response.content else {}
        except ValueError:
            data = {"detail": response.text[:200]}
        if status in (401, 403):
            raise ConfigurationError(Text("{service} refused {variable} ({status}): check the "
                                          "key and its permissions", service=self.name,
                                          variable=self.key_variable, status=status))
        if status >= 400:
            raise self.refused(status, data if isinstance(data, dict) else {}, path, list_id)
        return data

    def upsert(self, member: Mapping[str, Any]) -> str:
        raise NotImplementedError

    def refused(self, status: int, data: dict[str, Any], path: str, list_id: str
                ) -> ConnectorError:
        raise NotImplementedError


class Mailchimp(_Api):
    name = "Mailchimp"
    key_variable = "MAILCHIMP_API_KEY"

    def __init__(self, api_key: str, http: requests.Session, retry: RetryPolicy,
                 timeout: float) -> None:
        dc = api_key.rpartition("-")[2]
        if "-" not in api_key or not re.fullmatch(r"[a-z]+[0-9]+", dc):
            raise ConfigurationError(Text("MAILCHIMP_API_KEY ends in its data centre, such as "
                                          "'-us21': copy the whole key"))
        super().__init__(f"https://{dc}.api.mailchimp.com/3.0", http, retry, timeout)
        # Basic auth: any user name, the key as the password.
        self._auth = {"Authorization": "Basic " + base64.b64encode(
            f"crm-automation:{api_key}".encode()).decode()}

    def upsert(self, member: Mapping[str, Any]) -> str:
        path = f"/lists/{member['list']}/members/{subscriber_hash(member['email'])}"
        body: dict[str, Any] = {"email_address": member["email"],
                                "status_if_new": member["status"]}
        if member["merge_fields"]:
            body["merge_fields"] = member["merge_fields"]
        self.call("PUT", path, body, self._auth, member["list"])
        tags = [{"name": t, "status": "active"} for t in member["tags"]]
        tags += [{"name": t, "status": "inactive"} for t in member["remove_tags"]]
        if tags:
            self.call("POST", path + "/tags", {"tags": tags}, self._auth, member["list"])
        return f"Mailchimp list {member['list']}: member upserted" + _tagged(member)

    def upsert_many(self, members: Mapping[str, Mapping[str, Any]]
                    ) -> dict[str, str | ConnectorError]:
        """Batches of 500 per list, one address once per batch; members with tags to
        remove, and a second edge of an address already in the batch, go one by one."""
        outcomes: dict[str, str | ConnectorError] = {}
        batches: dict[str, list[dict[str, tuple[str, Mapping[str, Any]]]]] = {}
        alone = []
        for key, member in members.items():
            chunks = batches.setdefault(member["list"], [{}])
            address = member["email"].lower()
            if member["remove_tags"] or address in chunks[-1]:
                alone.append((key, member))
                continue
            if len(chunks[-1]) == MAILCHIMP_BATCH:
                chunks.append({})
            chunks[-1][address] = (key, member)
        for list_id, chunks in batches.items():
            for chunk in filter(None, chunks):
                try:
                    outcomes.update(self._batch(list_id, chunk))
                except ConnectorError as exc:
                    outcomes.update({key: exc for key, _ in chunk.values()})
        for key, member in alone:
            try:
                outcomes[key] = self.upsert(member)
            except ConnectorError as exc:
                outcomes[key] = exc
        return outcomes

    def _batch(self, list_id: str, chunk: Mapping[str, tuple[str, Mapping[str, Any]]]
               ) -> dict[str, str | ConnectorError]:
        body = {"update_existing": True, "members": [
            {"email_address": m["email"], "status": m["status"],
             **({"merge_fields": m["merge_fields"]} if m["merge_fields"] else {}),
             **({"tags": m["tags"]} if m["tags"] else {})} for _, m in chunk.values()]}
        answer = self.call("POST", f"/lists/{list_id}", body, self._auth, list_id)
        refused = {str(e.get("email_address", "")).lower(): e for e in answer.get("errors", [])}
        outcomes: dict[str, str | ConnectorError] = {}
        for address, (key, member) in chunk.items():
            error = refused.get(address)
            outcomes[key] = RecordError(Text(
                "Mailchimp refused the member: {reason} ({code})", reason=error.get("error"),
                code=error.get("error_code") or Text("no code"))) if error else (
                f"Mailchimp list {list_id}: member upserted in a batch of {len(chunk)}"
                + _tagged(member))
        return outcomes

    def refused(self, status: int, data: dict[str, Any], path: str, list_id: str
                ) -> ConnectorError:
        # Errors are application/problem+json: {type, title, status, detail, instance}.
        title, detail = data.get("title", ""), data.get("detail", "")
        if status == 404 and not path.endswith("/tags"):  # a PUT makes the member: the list
            return ConfigurationError(Text("Mailchimp has no list {list}: check the action's "
                                           "'list' (Audience > Settings > Audience name and "
                                           "defaults > Audience ID)", list=repr(list_id)))
        reason = f"{title}: {detail}".rstrip(": ")
        if not reason:
            return RecordError(Text("Mailchimp refused the member"))
        return RecordError(Text("Mailchimp refused the member: {reason}", reason=reason))


class Brevo(_Api):
    name = "Brevo"
    key_variable = "BREVO_API_KEY"

    def __init__(self, api_key: str, http: requests.Session, retry: RetryPolicy,
                 timeout: float) -> None:
        super().__init__(BREVO_URL, http, retry, timeout)
        self._headers = {"api-key": api_key, "accept": "application/json"}

    def upsert(self, member: Mapping[str, Any]) -> str:
        try:
            list_id = int(member["list"])
        except ValueError:
            raise ConfigurationError(Text("Brevo list ids are numbers, not {list}: check the "
                                          "action's 'list'", list=repr(member["list"]))
                                     ) from None
        body = {"email": member["email"], "listIds": [list_id], "updateEnabled": True}
        if member["merge_fields"]:
            body["attributes"] = member["merge_fields"]
        answer = self.call("POST", "/contacts", body, self._headers, str(list_id))
        made = "created" if answer.get("id") is not None else "updated"
        return f"Brevo list {list_id}: contact {made}"

    def refused(self, status: int, data: dict[str, Any], path: str, list_id: str
                ) -> ConnectorError:
        # Errors read {code, message}.
        if status == 404:
            return ConfigurationError(Text("Brevo has no list {list}: check the action's 'list' "
                                           "({reason})", list=list_id,
                                           reason=data.get("message", "")))
        return RecordError(Text("Brevo refused the contact: {reason} ({code})",
                                reason=data.get("message", ""), code=data.get("code", status)))


def _tagged(member: Mapping[str, Any]) -> str:
    parts = [f"+{t}" for t in member["tags"]] + [f"-{t}" for t in member["remove_tags"]]
    return f" ({', '.join(parts)})" if parts else ""
