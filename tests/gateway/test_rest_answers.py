"""A REST answer shows the order as its own command left it, as a WebSocket reply does.

Commands are applied in journal batches; a later command of the same batch can
change an earlier one's order (a sell filling the buy just placed). The answer
to the buy must show it as placed (OPEN), not as the sell left it (FILLED).
"""

from __future__ import annotations

import os
import threading

import httpx
import trio

from gateway import Fsync, JournalSettings

TIMEOUT = 10
BUY = {"symbol": "BTC/USDT", "side": "buy", "price": "50000.00", "quantity": "0.01"}
SELL = {**BUY, "side": "sell"}
ELSEWHERE = {"symbol": "ETH/USDT", "side": "buy", "price": "2500.00", "quantity": "0.01"}


async def test_each_answer_shows_its_order_as_its_own_command_left_it(
        start_gateway, token, monkeypatch):
    gateway = await start_gateway(journal=JournalSettings(fsync=Fsync.BATCH))
    entered, release = threading.Event(), threading.Event()
    fsync = os.fsync

    def held_fsync(fd: int) -> None:
        entered.set()
        release.wait(TIMEOUT)
        fsync(fd)

    monkeypatch.setattr(os, "fsync", held_fsync)
    answers: dict[str, httpx.Response] = {}
    queue = gateway._runtime._send  # the engine task's command channel (for its length only)

    async with httpx.AsyncClient(base_url=gateway.endpoints.rest_url, timeout=TIMEOUT) as http:

        async def post(name: str, user: str, order: dict) -> None:
            answers[name] = await http.post(
                "/api/v1/orders", json=order, headers={"Authorization": f"Bearer {token(user)}"})

        with trio.fail_after(TIMEOUT):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(post, "first", "carol", ELSEWHERE)
                await trio.to_thread.run_sync(entered.wait, TIMEOUT)  # its fsync is held...
                nursery.start_soon(post, "buy", "alice", BUY)  # ...so these two queue up
                nursery.start_soon(post, "sell", "bob", SELL)  # and make the next batch
                while queue.statistics().current_buffer_used < 2:
                    await trio.sleep(0.01)
                release.set()
    assert {name: answer.status_code for name, answer in answers.items()} == {
        "first": 201, "buy": 201, "sell": 201}
    statuses = sorted(answers[name].json()["status"] for name in ("buy", "sell"))
    assert statuses == ["FILLED", "OPEN"]  # the one applied first rests, the other fills it
    buy = gateway.engine.order(answers["buy"].json()["order_id"])
    assert buy is not None
    assert buy.remaining == 0  # and both did trade
