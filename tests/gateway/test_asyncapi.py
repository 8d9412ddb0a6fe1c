"""docs/asyncapi.yaml tells the truth about the WebSocket protocol.

* It is a valid AsyncAPI 3.0 document (the official JSON Schema, kept in
  ``data/``), and every ``$ref`` in it resolves.
* Every message a live gateway sends (replies, errors, every stream message,
  the handshake refusals, ``shutdown``) validates against its schema, chosen by
  its ``type``, with unknown fields forbidden; the scenario produces every
  message type the document lists, and no other.
* Every message type the code writes, every error code (``gateway._protocol.
  ErrorCode`` and the order-entry codes of ``gateway._codes``), every handshake
  refusal and every close code is in it; the request fields are the ones the
  server takes, and the order object is the OpenAPI document's.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest
import referencing
import referencing.jsonschema
import trio
import yaml
from trio_websocket import ConnectionClosed, ConnectionRejected

from engine import DEFAULT_MARKETS, RejectReason
from gateway import _closing, _deflate
from gateway._codes import HANDSHAKE, HIDDEN_REASONS, order_entry_codes
from gateway._order_entry import _REPLY_TYPE
from gateway._protocol import _ORDER_FIELDS, ErrorCode, OrderAction
from gateway._rest._openapi import build
from gateway._schema import PlaceBody

ROOT = Path(__file__).parents[2]
DOCUMENT = ROOT / "docs" / "asyncapi.yaml"
META_SCHEMA = Path(__file__).parent / "data" / "asyncapi-3.0.0.schema.json"
TIMEOUT = 5.0
SCHEMA_OF_TYPE = {
    "subscribed": "Subscribed", "unsubscribed": "Unsubscribed", "pong": "Pong",
    "error": "Error", "placed": "Placed", "amended": "Amended", "cancelled": "Cancelled",
    "all_cancelled": "AllCancelled", "order_update": "OrderUpdate",
    "trade_executed": "TradeExecuted", "orderbook_snapshot": "OrderbookSnapshot",
    "orderbook_update": "OrderbookUpdate", "depth_snapshot": "DepthSnapshot",
    "depth_update": "DepthUpdate", "shutdown": "Shutdown",
}
"""The schema of each server message type (the document's messages name them too)."""


def load() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(DOCUMENT.read_text(encoding="utf-8"))
    return document


class Schemas:
    """Validators of the document's component schemas, its references resolved in it."""

    def __init__(self, document: dict[str, Any]) -> None:
        resource = referencing.Resource.from_contents(
            document, default_specification=referencing.jsonschema.DRAFT202012)
        self._registry = referencing.Registry().with_resource("urn:asyncapi", resource)
        self.seen: dict[str, int] = {}

    def validate(self, name: str, value: Any) -> None:
        jsonschema.Draft202012Validator(
            {"$ref": f"urn:asyncapi#/components/schemas/{name}"}, registry=self._registry,
        ).validate(value)

    def message(self, message: dict[str, Any]) -> None:
        kind = message.get("type")
        assert kind in SCHEMA_OF_TYPE, f"message type {kind!r} is not documented: {message}"
        self.validate(SCHEMA_OF_TYPE[kind], message)
        self.seen[kind] = self.seen.get(kind, 0) + 1


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        own = [node["$ref"]] if "$ref" in node else []
        return own + [ref for value in node.values() for ref in _refs(value)]
    if isinstance(node, list):
        return [r for v in node for r in _refs(v)]
    return []


def test_the_document_is_asyncapi_3_and_its_references_resolve():
    document = load()
    assert document["asyncapi"] == "3.0.0"
    meta = json.loads(META_SCHEMA.read_text(encoding="utf-8"))
    jsonschema.Draft7Validator(meta).validate(document)
    for ref in _refs(document):
        node: Any = document
        for part in ref.removeprefix("#/").split("/"):
            assert isinstance(node, dict), f"unresolved $ref {ref}"
            assert part in node, f"unresolved $ref {ref}"
            node = node[part]
    addresses = {channel["address"] for channel in document["channels"].values()}
    assert addresses == {"/ws", "/ws/orders", "/ws/trades", "/ws/markets/{symbol}"}


def test_every_message_type_of_the_code_is_documented():
    document = load()
    documented = {m["name"] for m in document["components"]["messages"].values()}
    server_types = {name for name in documented if name in SCHEMA_OF_TYPE}
    assert server_types == set(SCHEMA_OF_TYPE)
    written = re.compile(r'"type"\]?\s*[:=]\s*"(\w+)"|reply\("(\w+)"')
    found = set(_REPLY_TYPE.values())
    for path in (ROOT / "gateway").rglob("*.py"):
        if {"client", "web"} & set(path.parts) or path.name in ("_openapi.py", "_shapes.py"):
            continue  # the client reads messages; the OpenAPI modules write JSON Schema
        for match in written.finditer(path.read_text(encoding="utf-8")):
            found.add(match.group(1) or match.group(2))
    assert found <= server_types, found - server_types
    requests = {name for name in documented if name not in SCHEMA_OF_TYPE}
    assert requests == {"subscribe", "unsubscribe", "ping"} | {str(a) for a in OrderAction}


def test_every_error_code_is_documented():
    schemas = load()["components"]["schemas"]
    codes = {entry["const"] for entry in schemas["ErrorCode"]["oneOf"]}
    assert codes == {str(code) for code in ErrorCode} | order_entry_codes()
    for reason in RejectReason:
        assert (str(reason) in codes) != (reason in HIDDEN_REASONS), reason
    refusal = schemas["HandshakeRefusal"]["properties"]["error"]["properties"]["code"]
    assert {entry["const"] for entry in refusal["oneOf"]} == set(HANDSHAKE)


def test_every_close_code_is_documented():
    documented = {entry["const"] for entry in load()["components"]["schemas"]["CloseCode"]["oneOf"]}
    sent = {value for name, value in vars(_closing).items()
            if name.isupper() and isinstance(value, int) and 1000 <= value < 5000}
    sent |= {_deflate.INVALID_PAYLOAD, _deflate.MESSAGE_TOO_BIG, 1002}  # 1002: wsproto's
    assert documented == sent


def test_request_fields_are_the_servers():
    schemas = load()["components"]["schemas"]
    assert list(schemas["PlaceOrder"]["properties"]) == list(PlaceBody.__struct_fields__)
    for action, schema in (("amend", "Amend"), ("cancel", "Cancel"),
                           ("cancel_all", "CancelAll"), ("place", "Place")):
        assert set(schemas[schema]["properties"]) - {"action", "id"} == set(
            _ORDER_FIELDS[OrderAction(action)]), action


def test_the_order_object_is_the_openapi_documents():
    mine = load()["components"]["schemas"]
    theirs = build({m.symbol: m for m in DEFAULT_MARKETS}, version="0")["components"]["schemas"]
    for asyncapi, openapi in (("Order", "Order"), ("PlaceOrder", "PlaceBody")):
        assert list(mine[asyncapi]["properties"]) == list(theirs[openapi]["properties"])
        assert sorted(mine[asyncapi]["required"]) == sorted(theirs[openapi]["required"])


async def next_json(ws: Any) -> dict[str, Any]:
    with trio.fail_after(TIMEOUT):
        message: dict[str, Any] = json.loads(await ws.get_message())
    return message


class Recorder:
    """Every message of the scenario's connections, validated as it arrives and kept until
    the scenario asks for it (a reply may come after stream messages it was waiting on)."""

    def __init__(self, schemas: Schemas) -> None:
        self.schemas = schemas
        self._kept: dict[int, list[dict[str, Any]]] = {}

    async def until(self, ws: Any, kind: str, **fields: Any) -> dict[str, Any]:
        kept = self._kept.setdefault(id(ws), [])

        def wanted(message: dict[str, Any]) -> bool:
            return message["type"] == kind and all(
                message.get(k) == v for k, v in fields.items())

        for index, message in enumerate(kept):
            if wanted(message):
                return kept.pop(index)
        while True:
            message = await next_json(ws)
            self.schemas.message(message)
            if wanted(message):
                return message
            kept.append(message)

    def forget(self, ws: Any) -> None:
        """Drop the messages of ``ws`` kept so far (validated already)."""
        self._kept.pop(id(ws), None)

    async def request(self, ws: Any, request: dict[str, Any], kind: str) -> dict[str, Any]:
        await ws.send_message(json.dumps(request))
        return await self.until(ws, kind, id=request.get("id"))


@pytest.mark.parametrize("extras", [False, True], ids=["defaults", "user-ids-and-timestamps"])
async def test_live_messages_match_the_document(start_gateway, token, ws_connect, extras):
    gateway = await start_gateway(public_trade_user_ids=extras,
                                  websocket={"publish_timestamps": extras})
    schemas = Schemas(load())
    await _scenario(gateway, token, ws_connect, Recorder(schemas), schemas)
    assert set(schemas.seen) == set(SCHEMA_OF_TYPE), set(SCHEMA_OF_TYPE) - set(schemas.seen)


async def _scenario(gateway: Any, token: Callable[[str], str], ws_connect: Any,
                    record: Recorder, schemas: Schemas) -> None:
    url, rest = gateway.endpoints.ws_url, gateway.endpoints.rest_url
    alice, bob = token("alice"), token("bob")
    for path in ("/ws/nope", "/ws/markets/NOPE-USDT", "/ws/orders", "/ws?token=forged"):
        with pytest.raises(ConnectionRejected) as refused:
            async with ws_connect(f"{url}{path}"):
                pass
        schemas.validate("HandshakeRefusal", json.loads(refused.value.body))
    async with httpx.AsyncClient(timeout=TIMEOUT) as http:
        wrong_port = f"http://{gateway.endpoints.host}:{gateway.endpoints.ws_port}/api/v1"
        schemas.validate("HandshakeRefusal", (await http.get(wrong_port)).json())

    async with ws_connect(f"{url}/ws/orders?token={alice}") as orders, \
            ws_connect(f"{url}/ws/trades") as trades, \
            ws_connect(f"{url}/ws/markets/BTC-USDT") as top, \
            ws_connect(f"{url}/ws?token={alice}") as general, \
            ws_connect(f"{url}/ws?token={bob}") as trader:
        for ws in (orders, top):
            await record.until(ws, "subscribed")
        subscribed = await record.until(trades, "subscribed")
        await record.until(top, "orderbook_snapshot")
        for number, request in enumerate([
            {"action": "subscribe", "stream": "depth", "symbol": "btc-usdt"},
            {"action": "subscribe", "stream": "trades", "symbol": "BTC/USDT"},
            {"action": "subscribe", "stream": "orderbook", "symbol": "ETH/USDT"},
        ], 1):
            await record.request(general, {**request, "id": number}, "subscribed")
        for request in (
            {"action": "subscribe", "stream": "x", "id": "s-1"},
            {"action": "subscribe", "stream": "depth", "id": "s-2"},
            {"action": "subscribe", "stream": "depth", "symbol": "BTC/USDT", "id": "s-3"},
            {"action": "unsubscribe", "stream": "trades", "id": "s-4"},
            {"action": "subscribe", "stream": "trades", "id": "s-5", "extra": 1},
            {"action": "dance", "id": "s-6"},
            {"action": "place", "id": "o-1", "order": {"symbol": "BTC/USDT"}},
            {"action": "cancel", "id": "o-2", "order_id": 12345},
            {"action": "amend", "id": "o-3", "order_id": 1, "colour": "red"},
        ):
            await record.request(general, request, "error")
        await general.send_message("not json")
        await record.until(general, "error", id=None)

        placed = await record.request(trader, {"action": "place", "id": 1, "order": {
            "symbol": "BTC/USDT", "side": "sell", "price": "50000.00", "quantity": "0.02",
            "client_order_id": "b-1"}}, "placed")
        await record.request(general, {"action": "place", "id": 2, "order": {
            "symbol": "BTC/USDT", "side": "buy", "type": "market", "quantity": "0.005"}},
            "placed")
        await record.request(trader, {"action": "amend", "id": 3, "client_order_id": "b-1",
                                      "price": "50001.00"}, "amended")
        await record.request(general, {"action": "place", "id": 4, "order": {
            "symbol": "BTC/USDT", "side": "buy", "price": "50001.00", "quantity": "0.001",
            "post_only": True}}, "error")
        await record.request(trader, {"action": "place", "id": 5, "order": {
            "symbol": "BTC/USDT", "side": "sell", "price": "60000.00", "quantity": "0.01"}},
            "placed")
        await record.request(trader, {"action": "cancel", "id": 6,
                                      "order_id": placed["order"]["order_id"]}, "cancelled")
        await record.request(trader, {"action": "cancel_all", "id": 7, "symbol": "BTC-USDT"},
                             "all_cancelled")
        for action in ("created", "filled", "rejected"):
            await record.until(orders, "order_update", action=action)
        await record.until(trades, "trade_executed")
        await record.until(top, "orderbook_update")
        await record.until(general, "depth_update")
        await record.until(general, "trade_executed")

        async with httpx.AsyncClient(base_url=rest, timeout=TIMEOUT) as http:
            bearer = {"Authorization": f"Bearer {alice}"}
            resting = (await http.post("/api/v1/orders", headers=bearer, json={
                "symbol": "BTC/USDT", "side": "buy", "price": "100.00",
                "quantity": "0.1"})).json()
            await http.patch(f"/api/v1/orders/{resting['order_id']}", headers=bearer,
                             json={"price": "101.00"})
            await http.delete(f"/api/v1/orders/{resting['order_id']}", headers=bearer)
        for action in ("amended", "cancelled"):
            await record.until(orders, "order_update", action=action)

        await record.request(trades, {"action": "unsubscribe", "stream": "trades",
                                      "id": "r-0"}, "unsubscribed")
        record.forget(trades)
        resumed = await record.request(trades, {
            "action": "subscribe", "stream": "trades", "id": "r-1",
            "since": {"epoch": subscribed["epoch"], "seq": subscribed["seq"]}}, "subscribed")
        assert resumed["resumed"] is True
        replayed = await record.until(trades, "trade_executed")  # from history
        assert replayed["seq"] == subscribed["seq"] + 1
        for since in ({"epoch": "0" * 16, "seq": 0}, {"epoch": subscribed["epoch"], "seq": -1}):
            await record.request(trades, {"action": "subscribe", "stream": "depth",
                                          "symbol": "ETH/USDT", "id": "r-2", "since": since},
                                 "error")

        await record.request(general, {"action": "ping", "id": 9}, "pong")
        await record.request(general, {"action": "ping"}, "pong")
        await record.request(general, {"action": "unsubscribe", "stream": "trades",
                                       "symbol": "BTC/USDT", "id": 10}, "unsubscribed")
        await record.request(general, {"action": "subscribe", "stream": "orders", "id": 11},
                             "subscribed")
        await record.request(general, {"action": "unsubscribe", "stream": "orders", "id": 12},
                             "unsubscribed")

        gateway.shutdown()
        for ws in (orders, trades, top, general, trader):
            await record.until(ws, "shutdown")
            with trio.fail_after(TIMEOUT), pytest.raises(ConnectionClosed):
                await _drain(ws, record.schemas)


async def _drain(ws: Any, schemas: Schemas) -> None:
    """Validate what is left until the server closes the connection."""
    while True:
        schemas.message(json.loads(await ws.get_message()))
