"""Fake email-marketing APIs on `responses`, shaped like the documented ones, over members in
memory.

Mailchimp Marketing API v3 (https://us21.api.mailchimp.com/3.0, Basic auth, the key as the
password):
- `PUT /lists/{list_id}/members/{subscriber_hash}`: upsert; `status_if_new` for a new member;
- `POST /lists/{list_id}/members/{subscriber_hash}/tags`: `{"tags": [{"name", "status"}]}`,
  204;
- `POST /lists/{list_id}/members`: create; 400 "Member Exists" if there;
- `POST /lists/{list_id}`: batch of at most 500 `{"members": [...], "update_existing"}`,
  answering `new_members`, `updated_members`, `errors` [{email_address, error, error_code}];
- errors as application/problem+json `{type, title, status, detail, instance}`: 404 on an
  unknown list, 400 "Invalid Resource" (a bad address), 400 "Forgotten Email Not
  Subscribed", 400 "Member In Compliance State", 401 "API Key Invalid".

Brevo (https://api.brevo.com/v3, `api-key` header): `POST /contacts` with `email`,
`attributes`, `listIds`, `updateEnabled`: 201 `{"id"}`, 204 on an update, 400
`{code, message}`, 401.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import uuid
from collections.abc import Callable
from typing import Any

import responses

MAILCHIMP_KEY = "0123456789abcdef0123456789abcdef-us21"
MAILCHIMP = "https://us21.api.mailchimp.com/3.0"
BREVO_KEY = "xkeysib-0123456789abcdef-AbCdEf"
BREVO = "https://api.brevo.com/v3"
VALID = re.compile(r"[^@\s]+@[^@\s]+\.[a-z]{2,}")


def md5(email: str) -> str:
    return hashlib.md5(email.lower().encode()).hexdigest()


class FakeMailchimp:
    def __init__(self, rsps: responses.RequestsMock, lists: tuple[str, ...] = ("a1b2c3d4e5",)
                 ) -> None:
        self.lists: dict[str, dict[str, dict[str, Any]]] = {name: {} for name in lists}
        self.forgotten: set[str] = set()
        self.calls: list[str] = []
        self.changes = 0          # real changes to members: a rerun must add none
        self.faults: list[int] = []   # statuses to answer next, before anything is done
        self.after_batch: Callable[[], None] | None = None  # a hook, e.g. to crash there
        base = re.escape(MAILCHIMP)
        rsps.add_callback(responses.PUT, re.compile(base + r"/lists/\w+/members/\w+$"),
                          self._put)
        rsps.add_callback(responses.POST, re.compile(base + r"/lists/\w+/members/\w+/tags$"),
                          self._tags)
        rsps.add_callback(responses.POST, re.compile(base + r"/lists/\w+/members$"),
                          self._create)
        rsps.add_callback(responses.POST, re.compile(base + r"/lists/\w+$"), self._batch)

    def member(self, list_id: str, email: str) -> dict[str, Any] | None:
        return self.lists[list_id].get(md5(email))

    # --- the endpoints ------------------------------------------------------------------------

    def _open(self, request: Any) -> tuple[list[str], Any] | tuple[int, dict[str, str], str]:
        path = request.url.removeprefix(MAILCHIMP).split("?")[0]
        self.calls.append(f"{request.method} {path}")
        auth = request.headers.get("Authorization", "")
        user_key = base64.b64decode(auth.removeprefix("Basic ")).decode() if auth else ""
        if user_key.partition(":")[2] != MAILCHIMP_KEY:
            return _problem(401, "API Key Invalid", "Your API key may be invalid, or you've "
                            "attempted to access the wrong datacenter.")
        if self.faults:
            status = self.faults.pop(0)
            return _problem(status, "Too Many Requests" if status == 429 else
                            "Internal Server Error", "try again")
        parts = path.strip("/").split("/")
        if parts[1] not in self.lists:
            return _problem(404, "Resource Not Found",
                            "The requested resource could not be found.")
        return parts, json.loads(request.body or b"{}")

    def _upsert(self, list_id: str, data: dict[str, Any], status: str, existing: bool
                ) -> dict[str, Any] | str:
        """A member made or updated; the reason it is refused, as text, otherwise."""
        email = str(data.get("email_address", ""))
        if not VALID.fullmatch(email):
            return "Invalid Resource|Please provide a valid email address."
        if email.lower() in self.forgotten:
            return (f"Forgotten Email Not Subscribed|{email} was permanently deleted and "
                    "cannot be re-imported. The contact must re-subscribe to get back on "
                    "the list.")
        members = self.lists[list_id]
        member = members.get(md5(email))
        if member is None:
            member = {"email_address": email, "status": status, "merge_fields": {},
                      "tags": set()}
            members[md5(email)] = member
            self.changes += 1
        elif existing and member["status"] in ("unsubscribed", "cleaned") \
                and status == "subscribed":
            return (f"Member In Compliance State|{email} is in a compliance state due to "
                    "unsubscribe, bounce, or compliance review and cannot be subscribed.")
        elif existing and member["status"] != status:
            member["status"] = status
            self.changes += 1
        merged = {**member["merge_fields"], **data.get("merge_fields", {})}
        if merged != member["merge_fields"]:
            member["merge_fields"] = merged
            self.changes += 1
        new_tags = member["tags"] | {t if isinstance(t, str) else t["name"]
                                     for t in data.get("tags", [])}
        if new_tags != member["tags"]:
            member["tags"] = new_tags
            self.changes += 1
        return member

    def _put(self, request: Any) -> tuple[int, dict[str, str], str]:
        opened = self._open(request)
        if len(opened) == 3:
            return opened
        (_, list_id, _, subscriber), data = opened
        if md5(str(data.get("email_address", ""))) != subscriber:
            return _problem(400, "Invalid Resource", "The subscriber hash does not match the "
                            "email address.")
        status = data.get("status") or data.get("status_if_new")
        if not status:
            return _problem(400, "Invalid Resource", "The resource submitted could not be "
                            "validated. For field-specific details, see the 'errors' array.")
        result = self._upsert(list_id, data, status, existing="status" in data)
        if isinstance(result, str):
            return _problem(400, *result.split("|", 1))
        return 200, {}, json.dumps(_shown(result, list_id))

    def _create(self, request: Any) -> tuple[int, dict[str, str], str]:
        opened = self._open(request)
        if len(opened) == 3:
            return opened
        (_, list_id, _), data = opened
        if md5(str(data.get("email_address", ""))) in self.lists[list_id]:
            return _problem(400, "Member Exists", f"{data['email_address']} is already a list "
                            "member. Use PUT to insert or update list members.")
        return self._put_new(list_id, data)

    def _put_new(self, list_id: str, data: dict[str, Any]) -> tuple[int, dict[str, str], str]:
        result = self._upsert(list_id, data, data.get("status", "subscribed"), existing=False)
        if isinstance(result, str):
            return _problem(400, *result.split("|", 1))
        return 200, {}, json.dumps(_shown(result, list_id))

    def _tags(self, request: Any) -> tuple[int, dict[str, str], str]:
        opened = self._open(request)
        if len(opened) == 3:
            return opened
        (_, list_id, _, subscriber, _), data = opened
        member = self.lists[list_id].get(subscriber)
        if member is None:
            return _problem(404, "Resource Not Found",
                            "The requested resource could not be found.")
        tags = set(member["tags"])
        for tag in data["tags"]:
            (tags.add if tag["status"] == "active" else tags.discard)(tag["name"])
        if tags != member["tags"]:
            member["tags"] = tags
            self.changes += 1
        return 204, {}, ""

    def _batch(self, request: Any) -> tuple[int, dict[str, str], str]:
        opened = self._open(request)
        if len(opened) == 3:
            return opened
        (_, list_id), data = opened
        members = data.get("members", [])
        if len(members) > 500:
            return _problem(400, "Invalid Resource", "You can only add or update 500 members "
                            "at a time.")
        answer: dict[str, Any] = {"new_members": [], "updated_members": [], "errors": []}
        for item in members:
            email = str(item.get("email_address", ""))
            known = md5(email) in self.lists[list_id]
            if known and not data.get("update_existing"):
                answer["errors"].append({"email_address": email, "error_code":
                                         "ERROR_CONTACT_EXISTS", "error": f"{email} is already "
                                         "a list member, do you want to update? please provide "
                                         "update_existing:true in the request body"})
                continue
            result = self._upsert(list_id, item, item.get("status", ""), existing=True)
            if isinstance(result, str):
                answer["errors"].append({"email_address": email, "error_code": "ERROR_GENERIC",
                                         "error": result.split("|", 1)[1]})
            else:
                answer["updated_members" if known else "new_members"].append(
                    _shown(result, list_id))
        if self.after_batch is not None:
            self.after_batch()
        answer |= {"total_created": len(answer["new_members"]),
                   "total_updated": len(answer["updated_members"]),
                   "error_count": len(answer["errors"])}
        return 200, {}, json.dumps(answer)


def _shown(member: dict[str, Any], list_id: str) -> dict[str, Any]:
    return {"id": md5(member["email_address"]), "email_address": member["email_address"],
            "status": member["status"], "merge_fields": member["merge_fields"],
            "tags": [{"name": t} for t in sorted(member["tags"])], "list_id": list_id}


def _problem(status: int, title: str, detail: str) -> tuple[int, dict[str, str], str]:
    body = {"type": "https://mailchimp.com/developer/marketing/docs/errors/", "title": title,
            "status": status, "detail": detail, "instance": str(uuid.uuid4())}
    return status, {"Content-Type": "application/problem+json"}, json.dumps(body)


class FakeBrevo:
    def __init__(self, rsps: responses.RequestsMock, lists: tuple[int, ...] = (7,)) -> None:
        self.lists = set(lists)
        self.contacts: dict[str, dict[str, Any]] = {}
        self.calls = 0
        self.faults: list[int] = []
        rsps.add_callback(responses.POST, f"{BREVO}/contacts", self._contacts)

    def _contacts(self, request: Any) -> tuple[int, dict[str, str], str]:
        self.calls += 1
        if request.headers.get("api-key") != BREVO_KEY:
            return _brevo(401, "unauthorized", "Key not found")
        if self.faults:
            return _brevo(self.faults.pop(0), "too_many_requests", "try again")
        data = json.loads(request.body)
        email = str(data.get("email", ""))
        if not VALID.fullmatch(email):
            return _brevo(400, "invalid_parameter", "Invalid email address")
        unknown = set(data.get("listIds", [])) - self.lists
        if unknown:
            return _brevo(404, "document_not_found", "List ID does not exist")
        contact = self.contacts.get(email.lower())
        if contact is not None and not data.get("updateEnabled"):
            return _brevo(400, "duplicate_parameter", "Contact already exist")
        if contact is None:
            contact = self.contacts[email.lower()] = {"id": len(self.contacts) + 1,
                                                      "email": email, "attributes": {},
                                                      "listIds": set()}
            created = True
        else:
            created = False
        contact["attributes"] |= data.get("attributes", {})
        contact["listIds"] |= set(data.get("listIds", []))
        return (201, {}, json.dumps({"id": contact["id"]})) if created else (204, {}, "")


def _brevo(status: int, code: str, message: str) -> tuple[int, dict[str, str], str]:
    return status, {"Content-Type": "application/json"}, json.dumps({"code": code,
                                                                     "message": message})
