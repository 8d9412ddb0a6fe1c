"""The REST stack's ceiling: a bare ASGI handler on hypercorn's trio worker.

Rules of this module:

* The same server our gateway's REST listener runs (``hypercorn.trio.serve`` with
  ``hypercorn.config.Config()`` defaults, no access log, as ``gateway/_server.py``
  sets it up), with the least an order entry handler can do: read the whole
  request body, then answer ``201`` with a fixed small JSON body. No routing,
  no framework, no JSON decoding, no engine.
* ``python -m bench.bare_asgi --port 0`` prints
  ``bare-asgi: REST on http://127.0.0.1:PORT`` once it listens (``bench.servers``
  reads the port from it) and exits on SIGINT or SIGTERM.
"""

from __future__ import annotations

import argparse
import signal
from collections.abc import Awaitable, Callable
from typing import Any

import trio
from hypercorn.config import Config
from hypercorn.trio import serve

BODY = b'{"order_id":1,"status":"OPEN"}'
_HEADERS = [(b"content-type", b"application/json"),
            (b"content-length", str(len(BODY)).encode())]

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


async def app(scope: dict[str, Any], receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    more = True
    while more:  # read the whole body, as a handler that parses it must
        message = await receive()
        more = message.get("more_body", False)
    await send({"type": "http.response.start", "status": 201, "headers": _HEADERS})
    await send({"type": "http.response.body", "body": BODY})


async def _main(host: str, port: int) -> None:
    config = Config()
    config.bind = [f"{host}:{port}"]
    config.accesslog = None
    stopped = trio.Event()

    async def on_signal() -> None:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for _ in signals:
                stopped.set()
                return

    async with trio.open_nursery() as nursery:
        nursery.start_soon(on_signal)
        binds = await nursery.start(
            lambda task_status: serve(app, config,  # type: ignore[arg-type]
                                      shutdown_trigger=stopped.wait, task_status=task_status))
        bound = int(binds[0].rsplit(":", 1)[1])
        print(f"bare-asgi: REST on http://{host}:{bound}", flush=True)
        await stopped.wait()
        nursery.cancel_scope.deadline = trio.current_time() + 2.0


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.bare_asgi", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    trio.run(_main, args.host, args.port)


if __name__ == "__main__":
    main()
