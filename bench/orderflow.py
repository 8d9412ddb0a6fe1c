"""Order flow for our gateway: one trade per REST call, at a target rate.

Rules of this module:

* User ``maker`` keeps one large resting limit sell (BTC/USDT, 1 000 BTC at
  50000.00); user ``taker`` sends market buys of one lot (0.00001 BTC), each
  of which executes exactly one trade, so one ``trade_executed`` per call on
  the ``trades`` BTC/USDT channel. When a buy comes back unfilled the resting
  sell is replenished.
* Persistent HTTP/1.1 keep-alive connections (``http.client``), one per thread,
  ``connections`` threads in all, each paced on its own share of the schedule.
  A thread that falls more than a second behind drops the backlog (counted in
  ``lag_resets``): the schedule never bursts to catch up.
* Tokens are HS256, signed here with the secret the server was configured with.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections import Counter
from typing import Any

from gateway import issue_token

SYMBOL = "BTC/USDT"
PRICE = "50000.00"
RESTING = "1000"
LOT = "0.00001"


class OrderFlow:
    def __init__(self, host: str, port: int, secret: str, *, connections: int = 2) -> None:
        self.host, self.port = host, port
        self.maker = issue_token(secret, "maker", ttl=24 * 3600)
        self.taker = issue_token(secret, "taker", ttl=24 * 3600)
        self.connections = connections
        self.sent = 0
        self.filled = 0
        self.errors: Counter[str] = Counter()
        self.lag_resets = 0
        self.replenished = 0
        self.latencies_ns: list[int] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def _post(self, conn: http.client.HTTPConnection, token: str, body: dict[str, Any]
              ) -> tuple[int, dict[str, Any]]:
        payload = json.dumps(body)
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        for attempt in range(2):
            try:
                conn.request("POST", "/api/v1/orders", payload, headers)
                response = conn.getresponse()
                data = response.read()
                return response.status, json.loads(data) if data else {}
            except (http.client.HTTPException, ConnectionError):
                conn.close()  # reconnects on the next request
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def place_resting(self, conn: http.client.HTTPConnection | None = None) -> None:
        own = conn is None
        conn = conn or http.client.HTTPConnection(self.host, self.port, timeout=10)
        try:
            status, body = self._post(conn, self.maker, {
                "symbol": SYMBOL, "side": "sell", "type": "limit", "price": PRICE,
                "quantity": RESTING})
            if status != 201:
                raise RuntimeError(f"resting sell refused: {status} {body}")
            with self._lock:
                self.replenished += 1
        finally:
            if own:
                conn.close()

    def start(self, rate: float, *, until: float | None = None) -> None:
        """Start the threads: ``rate`` trades/s in all, until :meth:`stop` or ``until``."""
        if rate <= 0:
            return
        self._stop.clear()
        start = time.monotonic() + 0.05
        for index in range(self.connections):
            offset = index / rate
            thread = threading.Thread(
                target=self._run, args=(rate / self.connections, start + offset, until),
                name=f"orderflow-{index}", daemon=True)
            self._threads.append(thread)
            thread.start()

    def _run(self, rate: float, due: float, until: float | None) -> None:
        interval = 1.0 / rate
        body = {"symbol": SYMBOL, "side": "buy", "type": "market", "quantity": LOT}
        conn = http.client.HTTPConnection(self.host, self.port, timeout=10)
        try:
            while not self._stop.is_set():
                now = time.monotonic()
                if until is not None and now >= until:
                    return
                if due > now:
                    if self._stop.wait(due - now):
                        return
                elif now - due > 1.0:
                    with self._lock:
                        self.lag_resets += 1
                    due = now
                due += interval
                t0 = time.monotonic_ns()
                try:
                    status, answer = self._post(conn, self.taker, body)
                except (OSError, http.client.HTTPException) as exc:
                    with self._lock:
                        self.errors[type(exc).__name__] += 1
                    time.sleep(0.05)
                    continue
                elapsed = time.monotonic_ns() - t0
                with self._lock:
                    self.sent += 1
                    self.latencies_ns.append(elapsed)
                    if status != 201:
                        self.errors[f"HTTP {status}"] += 1
                    elif answer.get("status") == "FILLED":
                        self.filled += 1
                    else:
                        self.errors["unfilled"] += 1
                if status == 201 and answer.get("status") != "FILLED":
                    self.place_resting(conn)
        finally:
            conn.close()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=15)
        self._threads.clear()

    def summary(self) -> dict[str, Any]:
        with self._lock:
            lat = sorted(self.latencies_ns)
        pick = (lambda q: round(lat[min(len(lat) - 1, int(q * len(lat)))] / 1e6, 3)) \
            if lat else (lambda q: None)
        return {
            "requests": self.sent, "trades": self.filled, "errors": dict(self.errors),
            "lag_resets": self.lag_resets, "resting_orders_placed": self.replenished,
            "connections": self.connections,
            "rest_latency_ms": {"p50": pick(0.5), "p99": pick(0.99)},
        }
