"""Order entry load worker: closed-loop raw clients in one process, one epoll loop.

Rules of this module:

* One worker process per :class:`LoadSpec`; ``bench.order_entry`` starts several, each
  with its share of the connections, so that no single core parses every reply.
* Two kinds of client, neither with an HTTP, WebSocket or JSON library on the hot path:
  ``http`` (HTTP/1.1 keep-alive; each request is pre-built bytes; a response is
  complete at its ``Content-Length``) and ``ws`` (RFC 6455 opening handshake, then
  pre-built masked text frames ``{"action": "place", "id": N, ...}``; replies are
  matched in order against the ``id`` of the oldest request in flight).
* Closed loop: each connection keeps exactly ``pipeline`` requests in flight (always 1
  for HTTP); a reply sends the next request at once. Each connection cycles through
  its own pre-built requests (:func:`order_mix`), built before the clock starts.
* Latency = ``time.monotonic_ns()`` after the ``recv`` that completed the reply minus
  ``time.monotonic_ns()`` just before the request's ``send``. A reply counts when it
  completes inside the window ``[t0, t1)`` the parent sends with ``("go", ...)``;
  warm-up and drain are excluded.
* A reply is an *ack* only when it says the order was taken: HTTP status 201 (ours,
  bare ASGI) or 200 without ``"status":"rejected"`` (matching-engine), or a WebSocket
  ``placed`` reply echoing the expected ``id``. Everything else is an error, counted
  by status and code.
* Bounded: no new request after ``t1``; the worker returns when nothing is in flight,
  at ``t1 + grace``, on ``("stop",)``, or at ``hard_deadline``, whichever comes first.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import json
import os
import random
import select
import socket
import time
from array import array
from collections import Counter, deque
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

from gateway._frames import CLOSE, PING_OPCODE, PONG, TEXT, client_frame, close_code, split_frames

SYMBOL = "BTC/USDT"
BASE_CENTS = 5_000_000  # 50000.00
MAX_TICKS = 10  # buys at 50000.00 + k * 0.01, sells at 50000.00 - k * 0.01, k in 1..MAX_TICKS
QUANTITY = "0.01"

# Slots of a worker's row in the shared counter array (read by the parent).
CONNECTED, FAILED, ACKED, ERRORS, ROW = 0, 1, 2, 3, 4

_CONNECTING, _HANDSHAKE, _READY, _DONE = range(4)
_MAX_CONNECTING = 32  # connects in progress per worker: stays under hypercorn's backlog of 100
_NEVER = 1 << 62


# ------------------------------------------------------------ the order mix


def order_mix(connection: int, count: int, seed: int) -> list[tuple[str, str]]:
    """``count`` (side, price) pairs for one connection: alternating, about half crossing.

    Buys at 50000.00 + k ticks and sells at 50000.00 - k ticks, k drawn from
    1..``MAX_TICKS``: every buy is priced above every sell, so an order crosses
    whenever the other side has a resting order, and about half of them do. Even
    connections start with a buy, odd ones with a sell. Prices are built from
    integer cents: exact decimal strings.
    """
    rng = random.Random(seed * 1_000_003 + connection)
    out = []
    for i in range(count):
        k = rng.randint(1, MAX_TICKS)
        buy = (i + connection) % 2 == 0
        cents = BASE_CENTS + k if buy else BASE_CENTS - k
        out.append(("buy" if buy else "sell", f"{cents // 100}.{cents % 100:02d}"))
    return out


def our_order(side: str, price: str) -> dict[str, str]:
    """The body of our ``POST /api/v1/orders`` and the ``order`` of a WebSocket ``place``."""
    return {"symbol": SYMBOL, "side": side, "price": price, "quantity": QUANTITY}


def _compact(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def http_request(path: str, host: str, body: bytes, headers: tuple[str, ...] = ()) -> bytes:
    """One complete HTTP/1.1 keep-alive POST with a JSON body."""
    head = [f"POST {path} HTTP/1.1", f"Host: {host}", "Content-Type: application/json",
            f"Content-Length: {len(body)}", *headers]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def ws_place(request_id: int, side: str, price: str) -> bytes:
    """One masked text frame ``{"action":"place","id":N,"order":{...}}``."""
    return client_frame(TEXT, _compact({"action": "place", "id": request_id,
                                        "order": our_order(side, price)}), key=os.urandom(4))


def ws_handshake(host: str, path: str) -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    return (f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
            f"Sec-WebSocket-Key: {key}\r\n\r\n").encode()


# ----------------------------------------------------------- reply parsing


def parse_http(buf: bytes) -> tuple[list[tuple[int, bytes, bool]], bytes]:
    """Complete responses at the start of ``buf`` as (status, body, closing), and the rest.

    Only ``Content-Length`` framing is read (every server measured here sends it); a
    response without one raises ``ValueError`` rather than being miscounted.
    """
    out: list[tuple[int, bytes, bool]] = []
    pos = 0
    n = len(buf)
    while True:
        end = buf.find(b"\r\n\r\n", pos)
        if end < 0:
            break
        head = buf[pos:end].lower()
        at = head.find(b"\r\ncontent-length:")
        if at < 0:
            raise ValueError(f"response without Content-Length: {bytes(buf[pos:end])[:200]!r}")
        line_end = head.find(b"\r\n", at + 2)
        length = int(head[at + 17:line_end if line_end >= 0 else len(head)])
        stop = end + 4 + length
        if stop > n:
            break
        out.append((int(head[9:12]), buf[end + 4:stop], b"\r\nconnection: close" in head))
        pos = stop
    return out, buf[pos:]


def text_field(data: bytes, key: bytes) -> str | None:
    """The string value of the first ``key`` (e.g. ``b'"status":"'``), without JSON decoding."""
    at = data.find(key)
    if at < 0:
        return None
    at += len(key)
    return data[at:data.find(b'"', at)].decode("utf-8", "replace")


def classify_http(status: int, body: bytes, success: int) -> tuple[bool, str]:
    """(ack?, key): the order's status for an ack, ``"<http status> <code>"`` otherwise."""
    order_status = text_field(body, b'"status":"')
    if status == success and order_status != "rejected":
        return True, order_status or "-"
    code = text_field(body, b'"code":"') or ("rejected" if order_status == "rejected" else "")
    return False, f"{status} {code}".strip()


_PLACED = b'{"type":"placed","id":'


def classify_ws(payload: bytes, expected_id: int) -> tuple[str, str]:
    """('ack' | 'error' | 'other' | 'mismatch', key) for one text message.

    The compact form (``{"type":"placed","id":7,...``) is recognised by its prefix;
    any other layout is decoded as JSON (slower, and counted by the worker).
    'other' is a message that is no reply (no ``id`` of ours): it leaves the
    request in flight.
    """
    if payload.startswith(_PLACED):
        digits = payload[len(_PLACED):payload.find(b",", len(_PLACED))]
        if digits == str(expected_id).encode():
            return "ack", text_field(payload, b'"status":"') or "-"
    try:
        message = json.loads(payload)
    except ValueError:
        return "other", "not JSON"
    if not isinstance(message, dict):
        return "other", "not an object"
    kind = message.get("type")
    if kind not in ("placed", "error") or "id" not in message:
        return "other", str(kind)
    if message["id"] != expected_id:
        return "mismatch", f"id {message['id']!r}, expected {expected_id}"
    if kind == "error":
        return "error", f"error {message.get('code')}"
    order = message.get("order")
    return "ack", str(order.get("status")) if isinstance(order, dict) else "-"


# ------------------------------------------------------------------ worker


@dataclass
class LoadSpec:
    index: int
    kind: str  # "http" or "ws"
    host: str
    port: int
    connection_ids: list[int]
    requests: list[list[bytes]]  # per connection, the cycle of pre-built requests
    handshakes: list[bytes] = field(default_factory=list)  # ws: per connection
    success_status: int = 201  # http: the status of an accepted order
    pipeline: int = 1
    hard_deadline: float = 0.0  # time.monotonic() at which the worker returns regardless


class _Conn:
    __slots__ = ("buf", "fd", "gid", "handshake", "inflight", "next", "out", "requests", "sock",
                 "state")

    def __init__(self, gid: int, requests: list[bytes], handshake: bytes) -> None:
        self.gid = gid
        self.requests = requests
        self.handshake = handshake
        self.next = 0
        self.sock: socket.socket | None = None
        self.fd = -1
        self.state = _CONNECTING
        self.buf = b""
        self.out = b""
        self.inflight: deque[tuple[int, int]] = deque()  # (send ns, request index)


class Worker:
    def __init__(self, spec: LoadSpec, counters: Any, control: Connection | None) -> None:
        self.spec = spec
        self.counters = counters
        self.row = spec.index * ROW
        self.control = control
        self.epoll = select.epoll()
        self.by_fd: dict[int, _Conn] = {}
        handshakes = spec.handshakes or [b""] * len(spec.connection_ids)
        self.conns = [_Conn(gid, reqs, hs) for gid, reqs, hs in
                      zip(spec.connection_ids, spec.requests, handshakes, strict=True)]
        self.pending = list(reversed(range(len(self.conns))))
        self.connecting = 0
        self.t0 = self.t1 = self.t_end = _NEVER
        self.go_ns = 0
        self.running = False
        self.lat = array("q")
        self.acked = 0
        self.acked_total = 0
        self.errors: Counter[str] = Counter()
        self.errors_total = 0
        self.statuses: Counter[str] = Counter()
        self.failures: Counter[str] = Counter()
        self.other: Counter[str] = Counter()
        self.error_samples: list[str] = []
        self.slow_path = 0
        self.sent = 0
        self.timeline: list[int] = []  # acks per second since "go"
        self.timeline_errors: list[int] = []

    # ------------------------------------------------------------ connecting

    def _start(self, c: _Conn) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        err = sock.connect_ex((self.spec.host, self.spec.port))
        if err not in (0, errno.EINPROGRESS):
            sock.close()
            self._fail(c, f"connect: {errno.errorcode.get(err, err)}")
            return
        c.sock, c.fd, c.state = sock, sock.fileno(), _CONNECTING
        self.by_fd[c.fd] = c
        self.connecting += 1
        self.epoll.register(c.fd, select.EPOLLOUT)

    def _fail(self, c: _Conn, reason: str) -> None:
        self.failures[reason] += 1
        if c.state in (_CONNECTING, _HANDSHAKE):
            self.connecting -= 1
            self.counters[self.row + FAILED] += 1
        self._close(c)

    def _close(self, c: _Conn) -> None:
        if c.sock is not None:
            with contextlib.suppress(OSError, KeyError, ValueError):
                self.epoll.unregister(c.fd)
            self.by_fd.pop(c.fd, None)
            c.sock.close()
            c.sock = None
        c.state = _DONE

    def _on_connect(self, c: _Conn) -> None:
        assert c.sock is not None
        err = c.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            self._fail(c, f"connect: {errno.errorcode.get(err, err)}")
            return
        self.epoll.modify(c.fd, select.EPOLLIN)
        if self.spec.kind == "ws":
            c.sock.send(c.handshake)
            c.state = _HANDSHAKE
        else:
            self._ready(c)

    def _on_handshake(self, c: _Conn) -> None:
        assert c.sock is not None
        try:
            data = c.sock.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._fail(c, "handshake: closed")
            return
        c.buf += data
        head, sep, rest = c.buf.partition(b"\r\n\r\n")
        if not sep:
            return
        if head[9:12] != b"101":
            self._fail(c, f"handshake: HTTP {head[9:12].decode('latin-1')} "
                          f"{rest[:160].decode('utf-8', 'replace')}")
            return
        c.buf = rest
        self._ready(c)

    def _ready(self, c: _Conn) -> None:
        c.state = _READY
        self.connecting -= 1
        self.counters[self.row + CONNECTED] += 1
        if self.running:
            self._fill(c, time.monotonic_ns())

    # --------------------------------------------------------------- sending

    def _fill(self, c: _Conn, now: int) -> None:
        """Send until ``pipeline`` requests are in flight (nothing after t1)."""
        depth = self.spec.pipeline
        while len(c.inflight) < depth and now < self.t1 and c.sock is not None:
            index = c.next
            c.next = index + 1 if index + 1 < len(c.requests) else 0
            c.inflight.append((time.monotonic_ns(), index))
            self._send(c, c.requests[index])
            self.sent += 1

    def _send(self, c: _Conn, data: bytes) -> None:
        if c.sock is None:
            return
        if c.out:
            c.out += data
            return
        try:
            sent = c.sock.send(data)
        except BlockingIOError:
            sent = 0
        except OSError as exc:
            self._lost(c, f"send: {exc.__class__.__name__}")
            return
        if sent < len(data):
            c.out = data[sent:]
            self.epoll.modify(c.fd, select.EPOLLIN | select.EPOLLOUT)

    def _flush(self, c: _Conn) -> None:
        assert c.sock is not None
        try:
            sent = c.sock.send(c.out)
        except BlockingIOError:
            return
        except OSError as exc:
            self._lost(c, f"send: {exc.__class__.__name__}")
            return
        c.out = c.out[sent:]
        if not c.out:
            self.epoll.modify(c.fd, select.EPOLLIN)

    def _lost(self, c: _Conn, reason: str) -> None:
        """A running connection died: its requests in flight are errors; it is not replaced."""
        self.failures[reason] += 1
        lost = len(c.inflight)
        c.inflight.clear()
        if lost:
            self.errors_total += lost
            self.errors[f"lost: {reason}"] += lost
        self._close(c)

    # -------------------------------------------------------------- replies

    def _reply(self, c: _Conn, ok: bool, key: str, now: int) -> None:
        sent_ns, _ = c.inflight.popleft()
        second = (now - self.go_ns) // 1_000_000_000
        if ok:
            self.acked_total += 1
            if self.t0 <= now < self.t1:
                self.acked += 1
                self.lat.append(now - sent_ns)
                self.statuses[key] += 1
            if 0 <= second < len(self.timeline):
                self.timeline[second] += 1
        else:
            self.errors_total += 1
            if self.t0 <= now < self.t1:
                self.errors[key] += 1
            if 0 <= second < len(self.timeline_errors):
                self.timeline_errors[second] += 1

    def _feed_http(self, c: _Conn, data: bytes, now: int) -> None:
        try:
            responses, c.buf = parse_http(c.buf + data if c.buf else data)
        except ValueError as exc:
            self._lost(c, str(exc))
            return
        success = self.spec.success_status
        for status, body, closing in responses:
            if not c.inflight:
                self.other["response with no request in flight"] += 1
                continue
            ok, key = classify_http(status, body, success)
            if not ok and len(self.error_samples) < 5:
                self.error_samples.append(f"{status} {body[:300].decode('utf-8', 'replace')}")
            self._reply(c, ok, key, now)
            if closing:
                self._lost(c, f"server closed the connection after HTTP {status}")
                return
        self._fill(c, now)

    def _feed_ws(self, c: _Conn, data: bytes, now: int) -> None:
        frames, c.buf = split_frames(c.buf + data if c.buf else data)
        for opcode, fin, payload in frames:
            if opcode == TEXT and fin:
                if not c.inflight:
                    self.other["message with no request in flight"] += 1
                    continue
                verdict, key = classify_ws(payload, c.inflight[0][1])
                if not payload.startswith(_PLACED):
                    self.slow_path += 1
                if verdict == "other":
                    self.other[key] += 1
                    continue
                if verdict != "ack" and len(self.error_samples) < 5:
                    self.error_samples.append(payload[:300].decode("utf-8", "replace"))
                self._reply(c, verdict == "ack", key, now)
            elif opcode == PING_OPCODE:
                self._send(c, client_frame(PONG, payload, key=os.urandom(4)))
            elif opcode == CLOSE:
                self._lost(c, f"closed by the server: {close_code(payload)}")
                return
            elif opcode != PONG:
                self.other[f"opcode {opcode} fin {fin}"] += 1
        self._fill(c, now)

    # ----------------------------------------------------------------- loop

    def run(self) -> dict[str, Any]:
        spec = self.spec
        control_fd = -1
        if self.control is not None:
            control_fd = self.control.fileno()
            self.epoll.register(control_fd, select.EPOLLIN)
        feed = self._feed_ws if spec.kind == "ws" else self._feed_http
        acked_slot, errors_slot = self.row + ACKED, self.row + ERRORS
        counters = self.counters
        monotonic_ns = time.monotonic_ns
        while True:
            now_s = time.monotonic()
            if now_s >= spec.hard_deadline:
                self.failures["hard deadline reached"] += 1
                break
            now = monotonic_ns()
            if self.running and now >= self.t1 and (
                    now >= self.t_end or not any(c.inflight for c in self.conns)):
                break
            while self.pending and self.connecting < _MAX_CONNECTING:
                self._start(self.conns[self.pending.pop()])
            events = self.epoll.poll(0.05)
            got = False
            for fd, ev in events:
                if fd == control_fd:
                    if self._control():
                        return self._results()
                    continue
                c = self.by_fd.get(fd)
                if c is None:
                    continue
                if c.state == _READY:
                    if ev & select.EPOLLOUT and c.out:
                        self._flush(c)
                    if not ev & (select.EPOLLIN | select.EPOLLERR | select.EPOLLHUP):
                        continue
                    try:
                        data = c.sock.recv(262144)  # type: ignore[union-attr]
                    except BlockingIOError:
                        continue
                    except OSError:
                        data = b""
                    if not data:
                        self._lost(c, "closed by the server")
                        continue
                    feed(c, data, monotonic_ns())  # receipt: when the bytes are ours
                    got = True
                elif c.state == _CONNECTING:
                    self._on_connect(c)
                elif c.state == _HANDSHAKE:
                    self._on_handshake(c)
            if got:
                counters[acked_slot] = self.acked_total
                counters[errors_slot] = self.errors_total
        return self._results()

    def _control(self) -> bool:
        """Read the parent's messages; True on ``("stop",)``."""
        assert self.control is not None
        while self.control.poll():
            message = self.control.recv()
            if message[0] == "go":
                self.go(*message[1:])
            elif message[0] == "stop":
                return True
        return False

    def go(self, t0_ns: int, t1_ns: int, end_ns: int) -> None:
        """Start the closed loop on every connected client: the window is [t0, t1)."""
        self.go_ns = time.monotonic_ns()
        self.t0, self.t1, self.t_end = t0_ns, t1_ns, end_ns
        seconds = max(1, (end_ns - self.go_ns) // 1_000_000_000 + 2)
        self.timeline = [0] * seconds
        self.timeline_errors = [0] * seconds
        self.running = True
        now = time.monotonic_ns()
        for c in self.conns:
            if c.state == _READY:
                self._fill(c, now)

    def _results(self) -> dict[str, Any]:
        inflight = sum(len(c.inflight) for c in self.conns)
        for c in self.conns:
            self._close(c)
        return {
            "index": self.spec.index,
            "connections": len(self.conns),
            "connected": int(self.counters[self.row + CONNECTED]),
            "latencies_ns": self.lat.tobytes(),
            "acked": self.acked,
            "acked_total": self.acked_total,
            "errors": dict(self.errors),
            "errors_total": self.errors_total,
            "error_samples": self.error_samples,
            "statuses": dict(self.statuses),
            "failures": dict(self.failures),
            "other_messages": dict(self.other),
            "slow_path_replies": self.slow_path,
            "sent": self.sent,
            "inflight_at_end": inflight,
            "timeline": self.timeline,
            "timeline_errors": self.timeline_errors,
        }


def worker_main(spec: LoadSpec, counters: Any, control: Connection) -> None:
    """Entry point of a worker process; the results go back on ``control`` as one dict."""
    with contextlib.suppress(KeyboardInterrupt):
        results = Worker(spec, counters, control).run()
        control.send(results)
        control.close()
