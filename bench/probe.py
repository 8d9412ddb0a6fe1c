"""Probe clients: the ``subscribe`` round trip while the load is held.

Each probe (one thread, one blocking raw WebSocket on ``/ws``, bound to 127.0.0.1)
repeats: send ``subscribe`` (a second symbol, ETH/USDT trades, so no message of the
held channel gets in the way), time until its ``subscribed`` reply, send
``unsubscribe``, wait for ``unsubscribed``, sleep ``interval``. Two client messages
per cycle at the default 0.25 s interval stay under the gateway's 20 messages/s
per connection. Pings are answered while waiting. The round trips are returned
with their send time, so the parent keeps those inside its measurement window.

Runs in its own process (``probe_main``) so that the workers' parsing does not
delay the probes' reads; bounded by ``deadline`` (time.monotonic()).
"""

from __future__ import annotations

import base64
import json
import os
import socket
import threading
import time
from multiprocessing.connection import Connection
from typing import Any

from gateway._frames import CLOSE, PING_OPCODE, PONG, TEXT, client_frame, split_frames

TIMEOUT = 10.0


class Probe:
    def __init__(self, host: str, port: int, index: int) -> None:
        self.sock = socket.create_connection((host, port), timeout=TIMEOUT)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.index = index
        self.buffer = b""
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((
            f"GET /ws HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n").encode())
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed during the handshake")
            data += chunk
        head, _, self.buffer = data.partition(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 101"):
            raise ConnectionError(f"handshake refused: {head[:60]!r}")

    def wait_for(self, kind: bytes, request_id: int) -> None:
        """Read until the reply ``"type": kind`` with ``"id": request_id``."""
        marker = b'"id":%d,' % request_id
        while True:
            frames, self.buffer = split_frames(self.buffer)
            for opcode, _fin, payload in frames:
                if opcode == PING_OPCODE:
                    self.sock.sendall(client_frame(PONG, payload, key=os.urandom(4)))
                elif opcode == CLOSE:
                    raise ConnectionError(f"closed by the server: {payload[:2].hex()}")
                elif opcode == TEXT and kind in payload and marker in payload:
                    return
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed")
            self.buffer += chunk

    def cycle(self, request_id: int) -> int:
        request = {"action": "subscribe", "stream": "trades", "symbol": "ETH/USDT",
                   "id": request_id}
        start = time.monotonic_ns()
        self.sock.sendall(client_frame(TEXT, json.dumps(request).encode(), key=os.urandom(4)))
        self.wait_for(b'"subscribed"', request_id)
        rtt = time.monotonic_ns() - start
        request["action"], request["id"] = "unsubscribe", request_id + 1
        self.sock.sendall(client_frame(TEXT, json.dumps(request).encode(), key=os.urandom(4)))
        self.wait_for(b'"unsubscribed"', request_id + 1)
        return rtt


def probe_main(host: str, port: int, count: int, interval: float, deadline: float,
               control: Connection) -> None:
    """Run ``count`` probes until told to stop (or ``deadline``); send back the round trips."""
    samples: list[tuple[int, int]] = []  # (send time ns, round trip ns)
    errors: list[str] = []
    stop = threading.Event()
    lock = threading.Lock()

    def run(index: int) -> None:
        try:
            probe = Probe(host, port, index)
        except OSError as exc:
            with lock:
                errors.append(f"probe {index}: {exc}")
            return
        request_id = 1
        time.sleep(interval * index / max(1, count))
        try:
            while not stop.is_set() and time.monotonic() < deadline:
                sent = time.monotonic_ns()
                rtt = probe.cycle(request_id)
                with lock:
                    samples.append((sent, rtt))
                request_id += 2
                stop.wait(interval)
        except OSError as exc:
            with lock:
                errors.append(f"probe {index}: {exc}")
        finally:
            probe.sock.close()

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(count)]
    for thread in threads:
        thread.start()
    remaining = deadline - time.monotonic()
    if control.poll(max(0.0, remaining)):
        control.recv()
    stop.set()
    for thread in threads:
        thread.join(TIMEOUT + 1)
    result: dict[str, Any] = {"samples": samples, "errors": errors}
    control.send(result)
    control.close()
