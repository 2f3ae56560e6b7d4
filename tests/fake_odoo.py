"""A fake Odoo on 127.0.0.1, faithful to the documented external API, over records in memory.

- `GET /web/version`: `{"version", "version_info"}` (Odoo 18 and later; a 404 before);
- `POST /xmlrpc/2/common`: `version()`, `authenticate(db, login, key, {})` -> uid or False;
- `POST /xmlrpc/2/object`: `execute_kw(db, uid, key, model, method, args, kwargs)`; faults as
  Odoo's dispatcher makes them: 1 application error (a traceback), 2 UserError, 3 AccessDenied,
  4 AccessError;
- `POST /json/2/<model>/<method>` (Odoo 19 and later): `Authorization: bearer <key>`, the
  named arguments as the JSON body, the result as the JSON answer; errors as
  `{name, message, arguments, context, debug}` with 401, 403, 404, 422 or 500.

Models: `res.partner` (search_read, create), `product.product` (search_read), `ir.model.data`
(search_read), `sale.order` (search_read, `load`: the import, which makes the order, its lines
and its external id in one transaction, or nothing and an error message).
"""

from __future__ import annotations

import json
import threading
import traceback
import xmlrpc.client
from decimal import Decimal, InvalidOperation
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

API_KEY = "9f1c0d7e5a3b2c4d6e8f0a1b3c5d7e9f1a2b3c4d"
LOGIN = "sync@example.com"
DATABASE = "acme"
ORDER_FIELDS = {"name", "client_order_ref", "partner_id", "note", "origin", "date_order"}
LINE_FIELDS = {"name", "product_uom_qty", "price_unit", "product_id", "discount"}


class UserError(Exception):
    name = "odoo.exceptions.UserError"


class AccessDenied(Exception):
    name = "odoo.exceptions.AccessDenied"


class MissingModel(Exception):
    name = "builtins.KeyError"


# Odoo's XML-RPC fault codes, and the JSON-2 status and error name of the same exceptions.
JSON2_ERRORS = {1: (500, "builtins.Exception"), 2: (422, "odoo.exceptions.UserError"),
                3: (401, "odoo.exceptions.AccessDenied"), 4: (403, "odoo.exceptions.AccessError")}


class Refused(Exception):
    """A planted failure, by its fault code."""

    def __init__(self, code: int, text: str) -> None:
        super().__init__(text)
        self.code = code
        self.status, self.name = JSON2_ERRORS[code]


class FakeOdoo:
    """`FakeOdoo(version=19)` speaks JSON-2 (and XML-RPC, deprecated but there); 17 speaks
    XML-RPC only."""

    def __init__(self, version: int = 19) -> None:
        self.version = version
        self.lock = threading.Lock()
        self.partners: dict[int, dict[str, Any]] = {}
        self.products = {1: {"id": 1, "name": "Services", "default_code": "SRV"}}
        self.orders: dict[int, dict[str, Any]] = {}
        self.xmlids: dict[tuple[str, str], tuple[str, int]] = {}
        self.calls: list[str] = []  # "model.method", in order
        self.down = False
        # The next model call fails as Odoo's dispatcher reports (fault code, text): 1 an
        # application error, 2 a UserError, 3 AccessDenied, 4 AccessError.
        self.refuse: tuple[int, str] | None = None
        self._next = 100
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _id(self) -> int:
        self._next += 1
        return self._next

    # --- the models ---------------------------------------------------------------------------

    def execute(self, model: str, method: str, kwargs: dict[str, Any]) -> Any:
        self.calls.append(f"{model}.{method}")
        if self.refuse is not None:
            (code, text), self.refuse = self.refuse, None
            raise Refused(code, text)
        with self.lock:
            if method == "search_read":
                return self._search_read(model, kwargs.get("domain", []),
                                         kwargs.get("fields"), kwargs.get("limit"))
            if (model, method) == ("res.partner", "create"):
                ids = []
                for vals in kwargs["vals_list"]:
                    if not vals.get("name"):
                        raise UserError("Contacts require a name")
                    pid = self._id()
                    self.partners[pid] = {"id": pid, **vals}
                    ids.append(pid)
                return ids
            if (model, method) == ("sale.order", "load"):
                return self._load(kwargs["fields"], kwargs["data"])
        raise MissingModel(f"'{model}'")

    def _table(self, model: str) -> list[dict[str, Any]]:
        if model == "res.partner":
            return list(self.partners.values())
        if model == "product.product":
            return list(self.products.values())
        if model == "sale.order":
            return list(self.orders.values())
        if model == "ir.model.data":
            return [{"id": i, "module": m, "name": n, "model": mod, "res_id": rid}
                    for i, ((m, n), (mod, rid)) in enumerate(self.xmlids.items())]
        raise MissingModel(f"'{model}'")

    def _search_read(self, model: str, domain: list[Any], fields: list[str] | None,
                     limit: int | None) -> list[dict[str, Any]]:
        rows = [r for r in self._table(model)
                if all(op == "=" and r.get(f) == v for f, op, v in domain)]
        rows = rows[:limit] if limit else rows
        return [{k: r.get(k, False) for k in (fields or r)} | {"id": r["id"]} for r in rows]

    def _load(self, fields: list[str], data: list[list[str]]) -> dict[str, Any]:
        """Odoo's import of one order: the first row holds the order and its first line, each
        next row (order columns empty) one more line."""
        def error(message: str) -> dict[str, Any]:
            return {"ids": False, "messages": [{"type": "error", "message": message,
                                                "record": 0, "rows": {"from": 0, "to": 0}}]}

        order: dict[str, Any] = {"order_line": []}
        xmlid = None
        for row_number, row in enumerate(data):
            line: dict[str, Any] = {}
            for name, cell in zip(fields, row, strict=True):
                if name == "id":
                    xmlid = xmlid or cell
                elif name == "partner_id/.id":
                    if row_number == 0:
                        if int(cell) not in self.partners:
                            return error(f"No matching record found for database id '{cell}' "
                                         "in field 'Customer'")
                        order["partner_id"] = int(cell)
                elif name.startswith("order_line/"):
                    key = name.removeprefix("order_line/")
                    if key not in LINE_FIELDS:
                        return error(f"Unknown field '{key}' in 'Order Lines'")
                    line[key] = cell
                elif name not in ORDER_FIELDS:
                    return error(f"Unknown field '{name}' for Sales Order")
                elif row_number == 0:
                    order[name] = cell
            if line:
                order["order_line"].append(line)
        if not xmlid or "." not in xmlid:
            return error("the external id must read module.name")
        if "partner_id" not in order:
            return error("Missing required value for the field 'Customer' (partner_id)")
        lines = []
        for line in order["order_line"]:
            product = [p for p in self.products.values()
                       if line.get("product_id") in (p["name"], p["default_code"])]
            if not product:
                if "product_id" in line:
                    return error(f"No matching record found for name '{line['product_id']}' in "
                                 "field 'Product'")
                return error("Missing required fields on accountable sale order line.")
            try:
                quantity = Decimal(line.get("product_uom_qty") or "1")
                price = Decimal(line.get("price_unit") or "0")
            except InvalidOperation:
                return error(f"'{line.get('price_unit')}' does not seem to be a number for "
                             "field 'Unit Price'")
            lines.append({"name": line.get("name", ""), "product_id": product[0]["id"],
                          "product_uom_qty": quantity, "price_unit": price})
        module, name = xmlid.split(".", 1)
        oid = self._id()
        self.orders[oid] = {"id": oid, "name": f"S{oid:05d}",
                            "partner_id": order["partner_id"],
                            "client_order_ref": order.get("client_order_ref", ""),
                            "note": order.get("note", ""), "order_line": lines,
                            "amount_untaxed": sum((q["product_uom_qty"] * q["price_unit"]
                                                   for q in lines), Decimal(0))}
        self.xmlids[(module, name)] = ("sale.order", oid)
        return {"ids": [oid], "messages": [], "nextrow": 0}

    # --- HTTP ---------------------------------------------------------------------------------

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        odoo = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _reply(self, status: int, body: bytes, kind: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                if self.path == "/web/version" and odoo.version >= 18:
                    info = [odoo.version, 0, 0, "final", 0, ""]
                    self._reply(200, json.dumps({"version": f"{odoo.version}.0",
                                                 "version_info": info}).encode(),
                                "application/json")
                else:
                    self._not_found()

            def _not_found(self) -> None:
                self._reply(404, b"<!doctype html><title>404 Not Found</title>", "text/html")

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if odoo.down:
                    self._reply(503, b"Service Unavailable", "text/html")
                elif self.path.startswith("/xmlrpc/2/"):
                    self._xmlrpc(self.path.removeprefix("/xmlrpc/2/"), body)
                elif self.path.startswith("/json/2/") and odoo.version >= 19:
                    self._json2(self.path.removeprefix("/json/2/"), body)
                else:
                    self._not_found()

            def _xmlrpc(self, service: str, body: bytes) -> None:
                params, method = xmlrpc.client.loads(body, use_builtin_types=True)
                try:
                    result = odoo.xmlrpc(service, method, params)
                    answer = xmlrpc.client.dumps((result,), methodresponse=True, allow_none=True)
                except Refused as exc:
                    answer = xmlrpc.client.dumps(xmlrpc.client.Fault(exc.code, str(exc)))
                except UserError as exc:
                    answer = xmlrpc.client.dumps(xmlrpc.client.Fault(2, str(exc)))
                except AccessDenied:
                    answer = xmlrpc.client.dumps(xmlrpc.client.Fault(3, "Access Denied"))
                except Exception:
                    answer = xmlrpc.client.dumps(xmlrpc.client.Fault(1, traceback.format_exc()))
                self._reply(200, answer.encode(), "text/xml")

            def _json2(self, route: str, body: bytes) -> None:
                model, _, method = route.partition("/")
                try:
                    if self.headers.get("Authorization", "").lower() != f"bearer {API_KEY}":
                        raise AccessDenied("Access Denied")
                    if odoo.version >= 19 and self.headers.get("X-Odoo-Database") not in (
                            None, DATABASE):
                        raise AccessDenied("Access Denied")
                    result = odoo.execute(model, method, json.loads(body or b"{}"))
                    self._reply(200, json.dumps(result, default=str).encode(),
                                "application/json; charset=utf-8")
                except Exception as exc:
                    status = getattr(exc, "status", None) or {
                        UserError: 422, AccessDenied: 401, MissingModel: 404}.get(type(exc), 500)
                    name = getattr(exc, "name", f"builtins.{type(exc).__name__}")
                    error = {"name": name, "message": str(exc), "arguments": [str(exc)],
                             "context": {}, "debug": traceback.format_exc()}
                    self._reply(status, json.dumps(error).encode(), "application/json")

        return Handler

    def xmlrpc(self, service: str, method: str, params: tuple[Any, ...]) -> Any:
        if service == "common" and method == "version":
            return {"server_version": f"{self.version}.0",
                    "server_version_info": [self.version, 0, 0, "final", 0, ""],
                    "server_serie": f"{self.version}.0", "protocol_version": 1}
        if service == "common" and method == "authenticate":
            db, login, key, _ = params
            return 2 if (db, login, key) == (DATABASE, LOGIN, API_KEY) else False
        if service == "object" and method == "execute_kw":
            db, uid, key, model, name, args, kwargs = params
            if (db, uid, key) != (DATABASE, 2, API_KEY):
                raise AccessDenied()
            if args:
                raise TypeError("the connector passes named arguments only")
            return self.execute(model, name, kwargs)
        raise KeyError(f"{service}.{method}")
