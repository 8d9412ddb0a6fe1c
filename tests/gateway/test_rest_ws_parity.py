"""REST and WebSocket order entry give the same answer to the same input (issue 11).

Hypothesis draws a batch of order bodies: valid ones, and ones broken in any
field (missing, unknown, wrong type, bad value). Each batch goes, in the same
order and for the same user, to two fresh gateways: ``POST /api/v1/orders`` on
one, a WebSocket ``place`` on the other. The engines start equal and receive
the same commands, so every answer must match: both accept with the same
order (timestamps aside), or both refuse with the same code and field. A
``cancel_all`` on both ends each batch, and must cancel the same orders.

Each example is one ``trio.run`` with two gateways (journal off, secret
configured: nothing touches the disk), as ``tests/abuse/test_fuzz.py`` does.
"""

from __future__ import annotations

from typing import Any

import httpx
import trio
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from wsclient import open_client

from gateway import AuthSettings, Config, JournalSettings, LimitSettings, issue_token, serve

SECRET = "parity-secret-" + "p" * 40
TIMEOUT = 30
UNLIMITED = 10**6
PARITY = settings(
    max_examples=25, deadline=None, phases=[Phase.explicit, Phase.reuse, Phase.generate],
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
VALID = {"symbol": "BTC/USDT", "side": "buy", "price": "50000.00", "quantity": "0.01"}
ODD = st.sampled_from([None, True, 7, 1.5, -1, [], {}, "", "x", "BTC-USDT", "btc/usdt",
                       "ETH/USDT", "BTCUSDT", "buy", "SELL", "market", "ioc", "fok",
                       "50000.001", "49999.00", "-1", "0", "100.00", "0.000001", "1e5",
                       "cancel_both", "9" * 30])
FIELDS = {
    "symbol": st.sampled_from(["BTC/USDT", "BTC-USDT", "ETH/USDT"]) | ODD,
    "side": st.sampled_from(["buy", "sell", "BUY", "Sell"]) | ODD,
    "price": st.sampled_from(["50000.00", "49990.00", "50010.00", "2500.00"]) | ODD,
    "quantity": st.sampled_from(["0.01", "0.02000", "0.5"]) | ODD,
    "type": st.sampled_from(["limit", "market", "LIMIT"]) | ODD,
    "time_in_force": st.sampled_from(["gtc", "ioc", "fok"]) | ODD,
    "post_only": st.booleans() | ODD,
    "self_trade_prevention": st.sampled_from(["none", "cancel_taker", "cancel_maker"]) | ODD,
    "client_order_id": st.sampled_from(["a", "b", "c"]) | ODD,
    "leverage": ODD,  # never a field: unknown_field
}


@st.composite
def bodies(draw: st.DrawFn) -> dict[str, Any]:
    body = dict(VALID)
    for name in draw(st.lists(st.sampled_from(sorted(FIELDS)), max_size=3, unique=True)):
        if draw(st.booleans()) and name in body:
            del body[name]
        else:
            body[name] = draw(FIELDS[name])
    return body


def config(tmp_path) -> Config:
    return Config(
        rest_port=0, ws_port=0, data_dir=tmp_path / "unused",
        journal=JournalSettings(enabled=False), auth=AuthSettings(jwt_secret=SECRET),
        limits=LimitSettings(messages_per_second=UNLIMITED, message_burst=UNLIMITED,
                             rest_requests_per_second=UNLIMITED, rest_burst=UNLIMITED,
                             orders_per_second=UNLIMITED, order_burst=UNLIMITED),
    )


def outcome_of_rest(response: httpx.Response) -> tuple[Any, ...]:
    body = response.json()
    if response.status_code == 201:
        return ("ok", without_times(body))
    return ("error", body["error"]["code"], body["error"]["field"])


def outcome_of_ws(reply: dict[str, Any]) -> tuple[Any, ...]:
    if reply["type"] == "placed":
        return ("ok", without_times(reply["order"]))
    assert reply["type"] == "error", reply
    return ("error", reply["code"], reply["field"])


def without_times(order: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in order.items() if k not in ("created_at", "updated_at")}


@PARITY
@given(st.lists(bodies(), min_size=1, max_size=12))
def test_rest_and_websocket_answer_the_same_input_alike(tmp_path, batch):
    token = issue_token(SECRET, "alice", ttl=3600)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            by_rest = await nursery.start(serve, config(tmp_path))
            by_ws = await nursery.start(serve, config(tmp_path))
            with trio.fail_after(TIMEOUT):
                async with httpx.AsyncClient(base_url=by_rest.endpoints.rest_url) as http, \
                        open_client(by_ws, "/ws", token) as ws:
                    auth = {"Authorization": f"Bearer {token}"}
                    for number, body in enumerate(batch):
                        rest = outcome_of_rest(
                            await http.post("/api/v1/orders", json=body, headers=auth))
                        await ws.send({"action": "place", "id": number, "order": body})
                        [*_, reply] = await ws.receive_until(lambda m, n=number: m.get("id") == n)
                        assert rest == outcome_of_ws(reply), (number, body)
                    rest_all = (await http.delete("/api/v1/orders", headers=auth)).json()
                    await ws.send({"action": "cancel_all", "id": "all"})
                    [*_, ws_all] = await ws.receive_until(lambda m: m.get("id") == "all")
                    assert rest_all["cancelled"] == ws_all["cancelled"]
            nursery.cancel_scope.cancel()

    trio.run(main)
