"""``trade-engine watch`` on the client library: a server gone silent is reported, not waited on.

Before this round, ``watch`` waited forever on a connection whose server had
vanished without closing it (a pulled cable, a frozen host). Now it pings after
20 s of silence and gives up 20 s later: one line on stderr, exit status 1 (the
documented "the connection was lost"). A proxy freezes the server's side of
the connection after the first message; the test runs on ``idle_clock``, so
the 40 seconds pass in virtual time.
"""

from __future__ import annotations

import trio
from proxy import Proxy

from gateway import JournalSettings
from gateway._watch import HEARTBEAT_INTERVAL, HEARTBEAT_TIMEOUT, watch


async def test_watch_reports_a_silent_server_and_exits_1(start_gateway, nursery, capsys,
                                                        idle_clock):
    # the server's own heartbeat is slower, so that only watch's can end the connection
    gateway = await start_gateway(journal=JournalSettings(enabled=False),
                                  websocket={"ping_interval": 600, "read_timeout": 1200})
    proxy = Proxy(gateway.endpoints.ws_port)
    await nursery.start(proxy.serve)

    def freeze_after_first(text: str) -> None:
        proxy.freeze()

    proxy.alter = freeze_after_first
    start = trio.current_time()
    with trio.fail_after(HEARTBEAT_INTERVAL + HEARTBEAT_TIMEOUT + 10):
        status = await watch(f"{proxy.url}/ws/trades", None, [], None)
    waited = trio.current_time() - start
    out, err = capsys.readouterr()
    assert status == 1
    assert '"type":"subscribed"' in out
    # (the gateway's own start-up lines share this process's stderr)
    assert err.splitlines()[-1] == ("trade-engine: the connection was lost: no answer from "
                                    "the server for 40 s (heartbeat)")
    assert waited >= HEARTBEAT_INTERVAL + HEARTBEAT_TIMEOUT
