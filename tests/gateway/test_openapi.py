"""The OpenAPI document served at /api/v1/openapi.json tells the truth about the REST listener.

* It is valid OpenAPI 3.1 (``openapi-spec-validator``), served without a token.
* Every route of the route table and of the operations application is in it,
  and nothing else; every request-body field of the code's Structs is in it;
  every error code of ``gateway._codes`` (and every engine refusal a client can
  get) is in it; no refusal in ``gateway/`` names its code with a string literal.
* Live answers of a real server, successes and errors, validate against it
  (``jsonschema``), with unknown fields forbidden: a field the code sends that
  the document lacks fails here, as does an undocumented status.
"""

from __future__ import annotations

import json
import re
import types
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import msgspec
import pytest
import referencing
import referencing.jsonschema
from openapi_spec_validator import validate as validate_openapi

from engine import (
    DEFAULT_MARKETS,
    MarketSpec,
    OrderType,
    RejectReason,
    SelfTradePrevention,
    Side,
    TimeInForce,
)
from engine._markets import _DECIMAL
from engine._validate import MAX_CLIENT_ORDER_ID
from gateway import LimitSettings
from gateway._codes import HIDDEN_REASONS, REST, Code, rest_codes
from gateway._rest._openapi import DECIMAL_PATTERN, OPERATIONS, OPS, build
from gateway._rest._openapi import MAX_CLIENT_ORDER_ID as DOCUMENTED_MAX_CLIENT_ORDER_ID
from gateway._rest._ops import create_ops_app
from gateway._rest._routes import PREFIX, ROUTES, Endpoint
from gateway._schema import AmendBody, PlaceBody, RequestError, _choice, market

GATEWAY = Path(__file__).parents[2] / "gateway"
MARKETS = {m.symbol: m for m in DEFAULT_MARKETS}
SATS = MarketSpec(symbol="SAT/BTC", base="SAT", quote="BTC", tick_size="0.00000001",
                  lot_size="1", min_quantity="1", min_notional="0.00000001",
                  maker_fee_rate="0", taker_fee_rate="0.00000005")


class Document:
    """A served OpenAPI document, and the checks of answers against it."""

    def __init__(self, document: dict[str, Any]) -> None:
        self.document = document
        resource = referencing.Resource.from_contents(
            document, default_specification=referencing.jsonschema.DRAFT202012)
        self._registry = referencing.Registry().with_resource("urn:openapi", resource)
        self.seen: set[tuple[str, str, int]] = set()

    def validator(self, schema: dict[str, Any]) -> jsonschema.Draft202012Validator:
        """A validator of ``schema``, whose references point into the document."""
        if "$ref" in schema:
            schema = {"$ref": "urn:openapi" + schema["$ref"]}
        return jsonschema.Draft202012Validator(
            schema, registry=self._registry, format_checker=jsonschema.FormatChecker())

    def resolve(self, node: dict[str, Any]) -> dict[str, Any]:
        while "$ref" in node:
            target: Any = self.document
            for part in node["$ref"].removeprefix("#/").split("/"):
                target = target[part]
            node = target
        return node

    def check(self, response: httpx.Response, method: str, path: str) -> Any:
        """Validate an answer against the operation's documented answer for its status."""
        operation = self.document["paths"][path][method.lower()]
        status = response.status_code
        documented = operation["responses"].get(str(status))
        assert documented is not None, (method, path, status, response.text)
        documented = self.resolve(documented)
        [(kind, media)] = documented["content"].items()
        assert response.headers["content-type"].split(";")[0] == kind, response.headers
        for header in documented.get("headers", {}):
            assert header.lower() in response.headers, (header, method, path)
        self.seen.add((method.lower(), path, status))
        if kind != "application/json":
            return response.text
        body = response.json()
        self.validator(media["schema"]).validate(body)
        return body


def test_the_document_is_openapi_3_1_and_complete():
    document = build(MARKETS, version="0")
    validate_openapi(document)  # raises OpenAPIValidationError on a malformed document
    assert document["openapi"].startswith("3.1")
    documented = {(path, method) for path, item in document["paths"].items() for method in item}
    expected = {(f"{PREFIX}/{route}", method.lower())
                for route, methods in ROUTES.items() for method in methods}
    expected |= {(path, "get") for path in OPS}
    assert documented == expected
    assert set(OPERATIONS) == set(Endpoint)
    for route, methods in ROUTES.items():
        for method, endpoint in methods.items():
            operation = document["paths"][f"{PREFIX}/{route}"][method.lower()]
            assert (operation["security"] == [{"bearer": []}]) == endpoint.private


def test_the_operations_application_has_exactly_the_documented_paths():
    app = create_ops_app(types.SimpleNamespace(engine=None), None, stats=None,  # type: ignore[arg-type]
                         connection_count=lambda: 0)
    rules = {rule.rule for rule in app.url_map.iter_rules() if rule.endpoint != "static"}
    assert rules == set(OPS)


@pytest.mark.parametrize("body", [PlaceBody, AmendBody])
def test_every_body_field_is_documented(body):
    schema = build(MARKETS, version="0")["components"]["schemas"][body.__name__]
    assert list(schema["properties"]) == list(body.__struct_fields__)
    assert schema["additionalProperties"] is False  # the Structs forbid unknown fields


def test_the_value_rules_are_the_engines():
    assert "^" + _DECIMAL.pattern.replace("(?:", "(") + "$" == DECIMAL_PATTERN
    assert DOCUMENTED_MAX_CLIENT_ORDER_ID == MAX_CLIENT_ORDER_ID


def test_every_error_code_is_documented_with_its_statuses():
    document = build(MARKETS, version="0")
    documented: dict[str, set[int]] = {}
    for name, response in document["components"]["responses"].items():
        status = int(name.removeprefix("Error"))
        error = response["content"]["application/json"]["schema"]["properties"]["error"]
        for code in error["properties"]["code"]["oneOf"]:
            documented.setdefault(code["const"], set()).add(status)
    for code, (statuses, _) in REST.items():
        assert documented.get(code, set()) >= set(statuses), code
    for reason in RejectReason:
        if reason not in HIDDEN_REASONS:
            assert 400 in documented[str(reason)], reason
    assert set(documented) == set(rest_codes())


def test_no_refusal_names_its_code_with_a_string_literal():
    literal = re.compile(
        r"(?<![\w.])(RequestError|fail|Refusal|error_bytes)\(\s*(\d{3}[^,]*,)?\s*f?\"")
    offenders = []
    for path in GATEWAY.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        for match in literal.finditer(text):
            line = text.count("\n", 0, match.start()) + 1
            offenders.append(f"{path.relative_to(GATEWAY)}:{line}: {match.group(0)}")
    assert not offenders, "use a gateway._codes.Code member:\n" + "\n".join(offenders)
    assert Code("invalid_json") is Code.INVALID_JSON


async def test_the_document_is_served_without_a_token(gateway, http):
    response = await http.get("/api/v1/openapi.json")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    document = response.json()
    validate_openapi(document)
    assert document == json.loads(msgspec.json.encode(build(
        gateway.engine.markets, version=document["info"]["version"])))
    assert (await http.head("/api/v1/openapi.json")).status_code == 200


async def test_a_405_outside_the_api_says_allow(http):
    for path in ("/healthz", "/stats", "/metrics"):
        refused = await http.post(path)
        assert refused.status_code == 405
        assert refused.json()["error"]["code"] == "method_not_allowed"
        assert set(refused.headers["allow"].split(", ")) >= {"GET", "HEAD"}


async def test_live_answers_match_the_document(start_gateway, token):
    gateway = await start_gateway(
        markets=(*DEFAULT_MARKETS, SATS), public_trade_user_ids=True, max_request_body=4096,
        limits=LimitSettings(orders_per_second=0.001, order_burst=30))
    async with httpx.AsyncClient(base_url=gateway.endpoints.rest_url, timeout=10) as http:
        doc = Document((await http.get("/api/v1/openapi.json")).json())
        await _exercise(http, doc, token)
    operations = {(method, path) for path, item in doc.document["paths"].items()
                  for method in item}
    answered = {(method, path) for method, path, _ in doc.seen}
    assert answered == operations, operations - answered
    statuses = {status for _, _, status in doc.seen}
    assert statuses >= {200, 201, 400, 401, 404, 413, 429}


async def _exercise(http: httpx.AsyncClient, doc: Document, token: Any) -> None:
    alice = {"Authorization": f"Bearer {token('alice')}"}
    bob = {"Authorization": f"Bearer {token('bob')}"}
    orders, order = f"{PREFIX}/orders", f"{PREFIX}/orders/{{id}}"
    book, trades = f"{PREFIX}/markets/{{symbol}}/orderbook", f"{PREFIX}/markets/{{symbol}}/trades"
    check = doc.check

    check(await http.get(f"{PREFIX}/openapi.json"), "GET", f"{PREFIX}/openapi.json")
    listing = check(await http.get(f"{PREFIX}/markets"), "GET", f"{PREFIX}/markets")
    assert {m["symbol"]: m["tick_size"] for m in listing["markets"]}["SAT/BTC"] == "0.00000001"

    placed = check(await http.post(orders, headers=alice, json={
        "symbol": "BTC/USDT", "side": "buy", "price": "50000.00", "quantity": "0.01",
        "client_order_id": "a-1", "post_only": True}), "POST", orders)
    check(await http.post(orders, headers=bob, json={
        "symbol": "btc-usdt", "side": "SELL", "type": "market", "quantity": "0.004",
        "price": None}), "POST", orders)
    for body in ({"symbol": "BTC/USDT", "side": "buy", "price": "50000.001", "quantity": "1"},
                 {"symbol": "BTC/USDT", "side": "buy", "quantity": "1"},
                 {"symbol": "XRP/USDT", "side": "buy", "price": "1", "quantity": "1"},
                 {"symbol": "BTC/USDT", "side": "buy", "price": 1, "quantity": "1"},
                 {"symbol": "BTC/USDT", "side": "buy", "price": "1", "quantity": "1", "x": 1},
                 {"symbol": "BTC/USDT", "side": "buy", "price": "1.00", "quantity": "0.001"}):
        check(await http.post(orders, headers=alice, json=body), "POST", orders)
    check(await http.post(orders, headers=alice, content=b"{not json"), "POST", orders)
    check(await http.post(orders, json={"symbol": "BTC/USDT"}), "POST", orders)
    check(await http.post(orders, headers={"Authorization": "Bearer nope"}, json={}),
          "POST", orders)
    check(await http.post(orders, headers=alice, content=b" " * 5000), "POST", orders)

    check(await http.get(orders, headers=alice), "GET", orders)
    check(await http.get(orders, headers=alice, params={"symbol": "BTC-USDT",
                                                         "status": "partially_filled"}),
          "GET", orders)
    for status in ("FILLED", "part\u0131ally_f\u0131lled"):  # a dotless i upper-cases to "I"
        refused = await http.get(orders, headers=alice, params={"status": status})
        assert check(refused, "GET", orders)["error"]["code"] == "invalid_status"
    check(await http.get(orders, headers=alice, params={"symbol": "nope"}), "GET", orders)

    path = f"{orders}/{placed['order_id']}"
    check(await http.get(path, headers=alice), "GET", order)
    check(await http.get(path, headers=bob), "GET", order)
    check(await http.get(f"{orders}/abc", headers=alice), "GET", order)
    check(await http.patch(path, headers=alice, json={"price": "49999.00"}), "PATCH", order)
    check(await http.patch(path, headers=alice, json={}), "PATCH", order)
    check(await http.patch(f"{orders}/999", headers=alice, json={"quantity": "1"}),
          "PATCH", order)
    check(await http.delete(path, headers=alice), "DELETE", order)
    check(await http.delete(path, headers=alice), "DELETE", order)
    check(await http.delete(orders, headers=alice, params={"symbol": "BTC/USDT"}),
          "DELETE", orders)
    check(await http.delete(orders, headers=alice, params={"symbol": "DOGE"}), "DELETE", orders)

    for symbol in ("BTC-USDT", "BTC%2FUSDT", "NOPE"):
        check(await http.get(f"{PREFIX}/markets/{symbol}/orderbook"), "GET", book)
        check(await http.get(f"{PREFIX}/markets/{symbol}/trades"), "GET", trades)
    check(await http.get(f"{PREFIX}/markets/BTC-USDT/orderbook?depth=0"), "GET", book)
    check(await http.get(f"{PREFIX}/markets/BTC-USDT/trades?limit=1001"), "GET", trades)
    for ops in OPS:
        check(await http.get(ops), "GET", ops)

    carol = {"Authorization": f"Bearer {token('carol')}"}
    for _ in range(31):  # over order_burst: 429 with Retry-After
        answer = await http.delete(orders, headers=carol)
    check(answer, "DELETE", orders)
    assert answer.status_code == 429


def _case_confusables() -> dict[str, str]:
    """Non-ASCII characters that Python's case mapping turns into ASCII letters (Kelvin
    sign -> "k", long s -> "S", "ß" -> "SS"...)."""
    found = {}
    for point in range(0x80, 0x110000):
        char = chr(point)
        for mapped in (char.lower(), char.upper()):
            if mapped.isascii() and mapped.isalpha():
                found[char] = mapped
    return found


def _spellings(word: str) -> set[str]:
    """``word`` in a few letter cases, and with each confusable put in for its letters."""
    spellings = {word, word.upper(), word.lower(), word.title()}
    for char, mapped in _case_confusables().items():
        for index in range(len(word)):
            if word[index:index + len(mapped)].lower() == mapped.lower():
                spellings.add(word[:index] + char + word[index + len(mapped):])
    return spellings


def _matches(pattern: str, value: str) -> bool:
    """ECMA-262 ``^...$`` (what JSON Schema means): the whole value, no final newline."""
    return re.fullmatch(pattern.removeprefix("^").removesuffix("$"), value) is not None


@pytest.mark.parametrize("name", ["side", "type", "time_in_force", "self_trade_prevention"])
def test_documented_choices_are_exactly_what_the_server_accepts(name):
    schema = build(MARKETS, version="0")["components"]["schemas"]["PlaceBody"]
    choice = schema["properties"][name]
    rule = choice["anyOf"][0] if "anyOf" in choice else choice
    kind = {"side": Side, "type": OrderType, "time_in_force": TimeInForce,
            "self_trade_prevention": SelfTradePrevention}[name]
    for word in kind:
        for spelling in _spellings(str(word)) | {f"{word}\n", f" {word}"}:
            try:
                _choice(spelling, name, kind, None)
                accepted = True
            except RequestError:
                accepted = False
            assert accepted == _matches(rule["pattern"], spelling), repr(spelling)


def test_documented_symbols_are_exactly_what_the_server_accepts():
    rule = build(MARKETS, version="0")["components"]["schemas"]["PlaceBody"]["properties"][
        "symbol"]
    for symbol in MARKETS:
        for written in (symbol, symbol.replace("/", "-")):
            for spelling in _spellings(written) | {f"{written}\n", symbol.replace("/", "")}:
                try:
                    market(MARKETS, spelling)
                    accepted = True
                except RequestError:
                    accepted = False
                assert accepted == _matches(rule["pattern"], spelling), repr(spelling)
