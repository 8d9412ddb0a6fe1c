"""REST limits: requests per user per second (429 + Retry-After) and the body size (413).

The rate limits run on ``idle_clock`` with the journal off: the per-user bucket
sees exactly the time the test sleeps, never the time the requests took.
"""

from __future__ import annotations

import json

import trio
from wsclient import BTC, open_rest, stats

from gateway import JournalSettings, LimitSettings


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


NO_JOURNAL = JournalSettings(enabled=False)  # no thread: idle_clock's jumps stay exact
ORDER = {"symbol": BTC, "side": "BUY", "price": "50000.00", "quantity": "0.01000"}


async def test_requests_per_user_429_with_retry_after(start_gateway, token, metric, idle_clock):
    gateway = await start_gateway(limits=LimitSettings(rest_requests_per_second=2, rest_burst=3),
                                  journal=NO_JOURNAL)
    alice, bob = token("alice"), token("bob")
    async with open_rest(gateway) as http:
        for _ in range(3):
            assert (await http.get("/api/v1/orders", headers=auth(alice))).status_code == 200
        limited = await http.post("/api/v1/orders", json=ORDER, headers=auth(alice))
        assert limited.status_code == 429
        assert limited.json()["error"]["code"] == "rate_limited"
        assert limited.headers["retry-after"] == "1"
        assert gateway.engine.open_orders("alice") == []  # the refused order was not placed
        # Another user, and requests without a user, are not affected.
        assert (await http.get("/api/v1/orders", headers=auth(bob))).status_code == 200
        assert (await http.get("/api/v1/markets")).status_code == 200
        await trio.sleep(float(limited.headers["retry-after"]))
        placed = await http.post("/api/v1/orders", json=ORDER, headers=auth(alice))
        assert placed.status_code == 201, placed.text
    report = await stats(gateway)
    assert report["rest_rate_limited"] == 1
    assert await metric(gateway, "trade_engine_rest_rate_limited_total") == 1


async def test_a_flood_is_held_to_burst_plus_rate(start_gateway, token, idle_clock):
    """40 requests back to back: the burst passes, the rest wait for tokens; then
    a quarter of a second later, the rate's worth passes again (5/s: one token)."""
    gateway = await start_gateway(limits=LimitSettings(rest_requests_per_second=5, rest_burst=5),
                                  journal=NO_JOURNAL)
    alice = token("alice")
    async with open_rest(gateway) as http:
        statuses = [(await http.get("/api/v1/orders", headers=auth(alice))).status_code
                    for _ in range(40)]
        assert statuses == [200] * 5 + [429] * 35
        await trio.sleep(0.25)  # 1.25 tokens
        later = [(await http.get("/api/v1/orders", headers=auth(alice))).status_code
                 for _ in range(3)]
        assert later == [200, 429, 429]
    assert (await stats(gateway))["rest_rate_limited"] == 35 + 2


async def test_body_over_max_request_body_is_413(start_gateway, token):
    gateway = await start_gateway(max_request_body=1024)
    alice = token("alice")
    before = gateway.engine.state_hash()
    fits = json.dumps(ORDER)
    fits += " " * (1024 - len(fits))
    too_big = fits + " "
    async with open_rest(gateway) as http:
        response = await http.post("/api/v1/orders", content=too_big, headers=auth(alice))
        assert response.status_code == 413
        assert response.json()["error"]["code"] == "body_too_large"
        # Without a content-length (chunked), the limit holds while reading.
        async def chunks():
            for _ in range(4):
                yield b" " * 512
        response = await http.post("/api/v1/orders", content=chunks(), headers=auth(alice))
        assert response.status_code == 413
        assert response.json()["error"]["code"] == "body_too_large"
        assert gateway.engine.state_hash() == before
        response = await http.post("/api/v1/orders", content=fits, headers=auth(alice))
        assert response.status_code == 201, response.text
        order_id = response.json()["order_id"]
        response = await http.patch(
            f"/api/v1/orders/{order_id}", content=b'{"price": "50001.00"}' + b" " * 2000,
            headers=auth(alice))
        assert response.status_code == 413
        assert gateway.engine.order(order_id).price == 5_000_000  # unchanged
