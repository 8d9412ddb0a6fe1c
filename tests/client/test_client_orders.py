"""Order entry through the client library against a live gateway (port 0, in this process).

Replies are typed (:class:`Order`, ids for cancel-all), refusals raise
:class:`RequestError` with the server's own code, message and field, requests
are pipelined, and a request whose reply never came (the connection was cut
in between, by a proxy in the test) raises :class:`OutcomeUnknown` and is not
sent again: the order it placed is found over REST afterwards.
"""

from __future__ import annotations

from decimal import Decimal

import pytest
import trio
from proxy import Proxy

from gateway import Gateway
from gateway.client import (
    NotConnected,
    Order,
    OutcomeUnknown,
    Reconnect,
    RequestError,
    connect,
)

TIMEOUT = 10


async def test_place_amend_cancel_and_cancel_all_reply_typed(gateway: Gateway, token):
    with trio.fail_after(TIMEOUT):
        async with connect(gateway.endpoints.ws_url, token("alice")) as client:
            placed = await client.place("BTC-USDT", "buy", "0.01", "50000.00",
                                        client_order_id="c-1")
            assert isinstance(placed, Order)
            assert (placed.symbol, placed.side, placed.status) == ("BTC/USDT", "BUY", "OPEN")
            assert placed.price == Decimal("50000.00")
            assert placed.quantity == Decimal("0.01000")
            amended = await client.amend(client_order_id="c-1", price=Decimal("49999.50"))
            assert (amended.order_id, amended.price) == (placed.order_id, Decimal("49999.50"))
            other = await client.place("BTC/USDT", "sell", 1, "60000.00", post_only=True)
            cancelled = await client.cancel(placed.order_id)
            assert cancelled.status == "CANCELLED"
            assert await client.cancel_all("BTC/USDT") == [other.order_id]
            assert await client.cancel_all() == []
            assert await client.ping() >= 0


async def test_refusals_raise_the_servers_code_message_and_field(gateway: Gateway, token):
    with trio.fail_after(TIMEOUT):
        async with connect(gateway.endpoints.ws_url, token("alice")) as client, \
                connect(gateway.endpoints.ws_url) as anonymous:
            with pytest.raises(RequestError) as off_tick:
                await client.place("BTC/USDT", "buy", "1", "50000.001")
            assert (off_tick.value.code, off_tick.value.field) == ("price_off_tick", "price")
            assert off_tick.value.message == "price 50000.001 is not a multiple of 0.01"
            with pytest.raises(RequestError) as not_found:
                await client.cancel(client_order_id="never-placed")
            assert not_found.value.code == "order_not_found"
            with pytest.raises(RequestError) as unknown:
                await client.place("DOGE/USDT", "buy", "1", "1")
            assert (unknown.value.code, unknown.value.field) == ("unknown_symbol", "symbol")
            with pytest.raises(RequestError) as unauthorized:
                await anonymous.place("BTC/USDT", "buy", "0.01", "50000.00")
            assert unauthorized.value.code == "unauthorized"
            assert "trade-engine token" in unauthorized.value.message
            with pytest.raises(TypeError, match="a float cannot hold"):
                await client.place("BTC/USDT", "buy", 0.01, "50000.00")  # type: ignore[arg-type]
            with pytest.raises(ValueError, match="exactly one"):
                await client.cancel(1, client_order_id="x")
            # the connection is still fine after every refusal
            assert (await client.place("BTC/USDT", "buy", "1", "10.00")).status == "OPEN"


async def test_pipelined_requests_each_get_their_own_reply(gateway: Gateway, token):
    results: dict[int, Order | RequestError] = {}
    with trio.fail_after(TIMEOUT):
        async with connect(gateway.endpoints.ws_url, token("bob"), max_in_flight=8) as client:

            async def place(index: int) -> None:
                try:
                    # every 5th has a price off the tick, to mix errors into the stream
                    price = "100.001" if index % 5 == 0 else f"{100 + index}.00"
                    results[index] = await client.place(
                        "BTC/USDT", "buy", "1", price, client_order_id=f"p-{index}")
                except RequestError as exc:
                    results[index] = exc

            async with trio.open_nursery() as nursery:
                for index in range(40):
                    nursery.start_soon(place, index)
    for index, result in results.items():
        if index % 5 == 0:
            assert isinstance(result, RequestError), result
            assert result.code == "price_off_tick"
        else:
            assert isinstance(result, Order), result
            assert result.client_order_id == f"p-{index}"
            assert result.price == Decimal(f"{100 + index}.00")
    assert len({r.order_id for r in results.values() if isinstance(r, Order)}) == 32


async def test_a_request_cut_off_from_its_reply_is_outcome_unknown_and_not_resent(
        gateway: Gateway, token, nursery: trio.Nursery, http):
    proxy = Proxy(gateway.endpoints.ws_port)
    await nursery.start(proxy.serve)
    alice = token("alice")
    with trio.fail_after(TIMEOUT):
        async with connect(proxy.url, alice,
                           reconnect=Reconnect(initial_delay=1, max_delay=1)) as client:
            proxy.freeze()  # the request still reaches the server; its reply does not come back
            async with trio.open_nursery() as inner:
                outcome: list[BaseException] = []

                async def place() -> None:
                    try:
                        await client.place("BTC/USDT", "buy", "0.01", "42000.00",
                                           client_order_id="maybe")
                    except OutcomeUnknown as exc:
                        outcome.append(exc)

                inner.start_soon(place)
                while True:  # until the server has applied it
                    response = await http.get("/api/v1/orders",
                                              headers={"Authorization": f"Bearer {alice}"})
                    if response.json()["orders"]:
                        break
                    await trio.sleep(0.01)
                await proxy.cut()
            [unknown] = outcome
            assert isinstance(unknown, OutcomeUnknown)
            assert unknown.request["action"] == "place"
            assert "check your orders before retrying" in str(unknown)
            # between connections nothing is sent, and the caller is told so at once
            while client.connected:
                await trio.sleep(0.01)
            with pytest.raises(NotConnected, match="was not sent"):
                await client.cancel_all()
            await client.wait_connected()
            assert client.reconnects == 1
            # the order was applied once and never sent again
            await client.ping()  # a round trip on the new connection: anything sent is in
            response = await http.get("/api/v1/orders",
                                      headers={"Authorization": f"Bearer {alice}"})
            assert [o["client_order_id"] for o in response.json()["orders"]] == ["maybe"]
