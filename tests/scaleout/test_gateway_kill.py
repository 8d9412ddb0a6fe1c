"""A gateway is SIGKILLed: its clients reconnect to another gateway and resume, missing nothing.

1 engine and 2 gateways (real processes, real ``redis-server``). Four clients
on gateway A hold trades, depth and their own orders; a reference client on
gateway B holds the same channels for each user. Orders flow through
gateway B. Gateway A is SIGKILLed mid-flow; each of its clients reconnects to
B and subscribes with ``since`` (the epoch and the last ``seq`` it saw per
channel), which B answers with ``resumed: true``, then the missed messages,
then the live stream. At the end, every client's messages per channel are
contiguous and equal, message for message, to the reference's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import trio
from roles import Flow, Server, channel_of, check_contiguous, deployment, ws_client
from trio_websocket import ConnectionClosed, HandshakeError

from bench.redis_server import RedisServer

TEST_TIMEOUT = 120
USERS = ("alice", "bob")


def channels(user: str) -> list[tuple[str, str | None]]:
    del user  # the orders channel is the token's user's
    return [("trades", "BTC/USDT"), ("depth", "BTC/USDT"), ("orders", None)]


class Resumer:
    """A client that follows its channels across servers, resuming with ``since``."""

    def __init__(self, user: str, token: str) -> None:
        self.user = user
        self.token = token
        self.log: list[dict[str, Any]] = []
        self.last: dict[tuple[str, Any], int] = {}
        self.epoch: str | None = None
        self.resumed = 0
        self.subscribed = trio.Event()

    async def follow(self, servers: list[Server]) -> None:
        for server in servers:
            try:
                async with ws_client(server, self.token) as client:
                    await self._subscribe_all(client)
                    self.subscribed.set()
                    while True:  # until the test cancels it
                        self._take(await client.receive(timeout=60))
            except (ConnectionClosed, HandshakeError, OSError, trio.BrokenResourceError):
                continue  # the server went away: the next one

    async def _subscribe_all(self, client: Any) -> None:
        for number, (stream, symbol) in enumerate(channels(self.user), start=1):
            request: dict[str, Any] = {"action": "subscribe", "stream": stream, "id": number}
            if symbol is not None:
                request["symbol"] = symbol
            key = (stream, symbol)
            if key in self.last:
                request["since"] = {"epoch": self.epoch, "seq": self.last[key]}
            await client.send(request)
            while True:
                message = await client.receive()
                if message.get("id") == number:
                    break
                self._take(message)  # live messages of the channels subscribed already
            assert message["type"] == "subscribed", message
            if "since" in request:
                assert message.get("resumed") is True, message
                assert message["seq"] == self.last[key], message
                assert message["epoch"] == self.epoch, message
                self.resumed += 1
            self.epoch = message["epoch"]
            self._take(message)

    def _take(self, message: dict[str, Any]) -> None:
        self.log.append(message)
        if message.get("type") == "subscribed":
            self.last[(message["stream"], message.get("symbol"))] = message["seq"]
        elif "seq" in message and not message["type"].endswith("_snapshot"):
            self.last[channel_of(message)] = message["seq"]


def by_channel(log: list[dict[str, Any]]) -> dict[tuple[str, Any], dict[int, dict[str, Any]]]:
    found: dict[tuple[str, Any], dict[int, dict[str, Any]]] = {}
    for message in log:
        if "seq" in message and message.get("type") != "subscribed" \
                and not message["type"].endswith("_snapshot"):
            found.setdefault(channel_of(message), {})[message["seq"]] = message
    return found


async def test_gateway_sigkill_clients_resume_elsewhere(
        tmp_path: Path, redis_server: RedisServer) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with deployment(tmp_path, redis_server.url) as deploy:
            tokens = {user: deploy.token(user) for user in USERS}
            await deploy.start("engine")
            started: dict[str, Server] = {}
            async with trio.open_nursery() as nursery:
                async def start(name: str) -> None:
                    started[name] = await deploy.start("gateway", name)
                nursery.start_soon(start, "gateway-a")
                nursery.start_soon(start, "gateway-b")
            a, b = started["gateway-a"], started["gateway-b"]

            movers = [Resumer(USERS[i % 2], tokens[USERS[i % 2]]) for i in range(4)]
            references = {user: Resumer(user, tokens[user]) for user in USERS}
            flow = Flow([b], tokens)
            stop = trio.Event()
            async with trio.open_nursery() as nursery:
                for reference in references.values():
                    nursery.start_soon(reference.follow, [b])
                    await reference.subscribed.wait()
                for mover in movers:
                    nursery.start_soon(mover.follow, [a, b])
                    await mover.subscribed.wait()
                nursery.start_soon(flow.run, stop)
                await trio.sleep(1.5)
                await deploy.kill(a)
                await trio.sleep(1.5)
                stop.set()
                await trio.sleep(1.5)  # the last orders' messages arrive everywhere
                nursery.cancel_scope.cancel()

            assert len(flow.acked) > 10
            assert not flow.refused
            for mover in movers:
                assert mover.resumed == len(channels(mover.user)), "resumed on gateway B"
                check_contiguous(mover.log)
                got = by_channel(mover.log)
                want = by_channel(references[mover.user].log)
                for channel, messages in got.items():
                    assert messages, channel
                    for seq, message in messages.items():
                        assert message == want[channel][seq], (channel, seq)
                    # Nothing missed: through to the reference's last message.
                    assert max(messages) == max(want[channel]), channel
            trades = by_channel(movers[0].log)[("trades", "BTC/USDT")]
            first = min(trades)
            assert sorted(trades) == list(range(first, first + len(trades)))
