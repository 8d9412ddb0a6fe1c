"""Load generator worker: many raw WebSocket clients in one process, one epoll loop.

Rules of this module:

* One worker process per ``WorkerSpec``; ``bench.load`` starts several so that
  parsing never saturates one core. Each worker opens its clients with
  non-blocking sockets bound to its source addresses (127.0.0.2, 127.0.0.3, ...,
  ``per_source`` clients each, past the ephemeral-port limit of one address),
  performs the opening handshake (no extension offered: no compression),
  subscribes, and then only reads.
* No WebSocket or JSON library on the hot path: frames are located in place
  by the project's one frame codec (``gateway._frames.frame_at``, no copy),
  ``seq`` and ``published_ns`` found with ``bytes.rfind``. Latency = receipt time (a
  ``time.monotonic_ns()`` right after each ``recv``) minus ``published_ns`` (the server's
  ``time.monotonic_ns()``; CLOCK_MONOTONIC is system-wide on Linux).
* A message counts when its ``published_ns`` is inside the measurement window
  the parent sends (``("window", start_ns, end_ns)``): warm-up and drain are
  excluded by publication time, whatever the delivery time.
* ``seq`` must rise by exactly one per subscription: a jump is counted as missed
  messages. Server pings (0x9) are answered with a masked pong carrying the
  same payload; close frames and disconnects are recorded with their code and time.
* Stalled clients (``stalled``) stop reading right after their ``subscribed``
  reply; at the end their socket is drained to see how the server closed it.
* Bounded: the worker returns by itself at ``hard_deadline`` even without a
  ``("stop",)`` from the parent. Results go back on the pipe as one dict.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import os
import select
import socket
import time
from array import array
from collections import Counter
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

from gateway._frames import (
    CLOSE,
    PING_OPCODE,
    PONG,
    TEXT,
    client_frame,
    close_code,
    frame_at,
    frame_header,
    unmask,
)

IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)

# Slots of a worker's row in the shared counter array (read by the progress display).
SUBSCRIBED, RECEIVED, CLOSED, FAILED, ROW = 0, 1, 2, 3, 4

_CONNECTING, _HANDSHAKE, _SUBSCRIBING, _OPEN, _STALLED, _DONE = range(6)
_NEVER = 1 << 62
_RETRY_DELAY = 0.25
_MAX_ATTEMPTS = 20
_RETRY_STATUSES = (429, 503)

SEQ_KEY = b'"seq":'
PUBLISHED_KEY = b'"published_ns":'


def int_field(data: bytes, key: bytes, start: int = 0, end: int | None = None) -> int | None:
    """The integer value of the last top-level ``key`` (e.g. ``b'"seq":'``) in ``data[start:end]``.

    No JSON decoding: the value runs from the key to the next ``,`` or ``}``.
    None when the key is absent.
    """
    if end is None:
        end = len(data)
    i = data.rfind(key, start, end)
    if i < 0:
        return None
    i += len(key)
    j = data.find(b",", i, end)
    if j < 0:
        j = data.find(b"}", i, end)
        if j < 0:
            j = end
    return int(data[i:j])


def source_address(client_id: int, per_source: int) -> str:
    """127.0.0.2 for the first ``per_source`` clients, then 127.0.0.3, ..."""
    index = 2 + client_id // per_source
    if index > 254:
        raise ValueError(f"client {client_id}: past 127.0.0.254 at {per_source} per address")
    return f"127.0.0.{index}"


@dataclass
class WorkerSpec:
    index: int
    client_ids: list[int]
    host: str
    port: int
    path: str  # "/ws" (then ``subscribe`` is sent) or an auto-subscribing endpoint
    subscribe: bytes | None
    per_source: int = 5000
    stalled: frozenset[int] = frozenset()
    max_inflight: int = 64
    hard_deadline: float = 0.0  # time.monotonic() at which the worker returns regardless
    extra: dict[str, Any] = field(default_factory=dict)


class _Client:
    __slots__ = (
        "attempts", "buf", "closed_at", "code", "expect", "fd", "frag", "gid", "out",
        "rbuf", "retry_at", "sock", "state", "wfirst", "wseq",
    )

    def __init__(self, gid: int) -> None:
        self.gid = gid
        self.sock: socket.socket | None = None
        self.fd = -1
        self.state = _CONNECTING
        self.buf = b""
        self.rbuf = b""
        self.out = b""
        self.frag: list[bytes] | None = None
        self.expect: int | None = None
        self.wfirst = -1  # seq of the first message published inside the window
        self.wseq = -1  # seq of the last message published inside the window
        self.code: int | None = None
        self.closed_at = 0
        self.attempts = 0
        self.retry_at = 0.0


class Worker:
    def __init__(self, spec: WorkerSpec, counters: Any, control: Connection) -> None:
        self.spec = spec
        self.counters = counters
        self.row = spec.index * ROW
        self.control = control
        self.epoll = select.epoll()
        self.by_fd: dict[int, _Client] = {}
        self.pending = [_Client(gid) for gid in reversed(spec.client_ids)]
        self.retry: list[_Client] = []
        self.clients: list[_Client] = []
        self.inflight = 0
        self.t0 = _NEVER
        self.t1 = _NEVER
        self.lat = array("q")
        self.missed = 0
        self.missed_outside = 0
        self.reordered = 0
        self.received = 0
        self.rx_bytes = 0
        self.text_other = 0
        self.pings = 0
        self.masked_frames = 0
        self.subscribed = 0
        self.failures: Counter[str] = Counter()
        self.subscribe_frame = (client_frame(TEXT, spec.subscribe, key=os.urandom(4))
                                if spec.subscribe else b"")
        host = f"{spec.host}:{spec.port}"
        self.request_head = (f"GET {spec.path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n"
                             "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n").encode()

    # ------------------------------------------------------------ connecting

    def _start(self, c: _Client) -> None:
        c.attempts += 1
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
        try:
            sock.bind((source_address(c.gid, self.spec.per_source), 0))
            err = sock.connect_ex((self.spec.host, self.spec.port))
        except OSError as exc:
            sock.close()
            self._failed(c, f"connect: {errno.errorcode.get(exc.errno or 0, exc)}", retry=True)
            return
        if err not in (0, errno.EINPROGRESS):
            sock.close()
            self._failed(c, f"connect: {errno.errorcode.get(err, err)}", retry=True)
            return
        c.sock, c.fd, c.state = sock, sock.fileno(), _CONNECTING
        c.buf = c.rbuf = c.out = b""
        self.by_fd[c.fd] = c
        self.inflight += 1
        self.epoll.register(c.fd, select.EPOLLOUT)

    def _failed(self, c: _Client, reason: str, *, retry: bool) -> None:
        self.failures[reason] += 1
        if retry and c.attempts < _MAX_ATTEMPTS:
            c.retry_at = time.monotonic() + _RETRY_DELAY
            self.retry.append(c)
        else:
            c.state = _DONE
            self.counters[self.row + FAILED] += 1

    def _drop(self, c: _Client) -> None:
        """Forget the socket of a client that never got through its handshake."""
        if c.sock is not None:
            with contextlib.suppress(OSError, KeyError, ValueError):
                self.epoll.unregister(c.fd)
            self.by_fd.pop(c.fd, None)
            c.sock.close()
            c.sock = None
        self.inflight -= 1

    def _on_connect(self, c: _Client) -> None:
        assert c.sock is not None
        err = c.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            self._drop(c)
            self._failed(c, f"connect: {errno.errorcode.get(err, err)}", retry=True)
            return
        key = base64.b64encode(os.urandom(16))
        c.sock.send(self.request_head + b"Sec-WebSocket-Key: " + key + b"\r\n\r\n")
        c.state = _HANDSHAKE
        self.epoll.modify(c.fd, select.EPOLLIN)

    def _on_handshake(self, c: _Client, now: int) -> None:
        assert c.sock is not None
        try:
            data = c.sock.recv(65536)
        except BlockingIOError:
            return
        except OSError as exc:
            data = b""
            self.failures[f"handshake: {exc.__class__.__name__}"] += 1
        if not data:
            self._drop(c)
            self._failed(c, "handshake: closed", retry=True)
            return
        c.rbuf += data
        head, sep, rest = c.rbuf.partition(b"\r\n\r\n")
        if not sep:
            return
        status = head[9:12].decode("latin-1", "replace")
        if status != "101":
            self._drop(c)
            self._failed(c, f"handshake: HTTP {status}", retry=int(status) in _RETRY_STATUSES
                         if status.isdigit() else False)
            return
        c.rbuf = b""
        c.state = _SUBSCRIBING
        if self.subscribe_frame:
            self._send(c, self.subscribe_frame)
        if rest:
            self._feed(c, rest, now)

    # -------------------------------------------------------------- reading

    def _feed(self, c: _Client, data: bytes, now: int) -> None:
        """Cut frames out of ``data`` (plus what was left from the last recv) and account them."""
        buf = c.buf + data if c.buf else data
        n = len(buf)
        pos = 0
        t0, t1 = self.t0, self.t1
        lat_append = self.lat.append
        count = 0
        while (where := frame_at(buf, pos)) is not None:
            first, h, start, end = where
            if first == 0x81 and h == start:  # final, unmasked text frame: the hot path
                # Both servers end a stream message with ..."seq":N,"published_ns":M}
                seq_s, _, pub_s = buf[buf.rfind(b'"seq":', h, end) + 6:end - 1].partition(
                    b',"published_ns":')
                try:
                    seq, pub = int(seq_s), int(pub_s)
                except ValueError:  # another layout (or no stamp): look the keys up one by one
                    pub = int_field(buf, PUBLISHED_KEY, h, end)
                    seq = int_field(buf, SEQ_KEY, h, end)
                if pub is not None and seq is not None:
                    count += 1
                    e = c.expect
                    if seq != e and e is not None:
                        if seq > e:
                            if t0 <= pub < t1:
                                self.missed += seq - e
                            else:
                                self.missed_outside += seq - e
                        else:
                            self.reordered += 1
                    c.expect = seq + 1
                    if t0 <= pub < t1:
                        lat_append(now - pub)
                        if c.wseq < 0:
                            c.wfirst = seq
                        c.wseq = seq
                else:
                    self._on_text(c, buf[h:end])
            else:
                self._on_frame(c, first, buf[h:start], buf[start:end], now)
                if c.state == _DONE:
                    self.received += count
                    return
            pos = end
        c.buf = buf[pos:] if pos < n else b""
        self.received += count

    def _on_text(self, c: _Client, payload: bytes) -> None:
        """A complete text message without ``published_ns``: the ``subscribed`` reply, or other."""
        if b'"subscribed"' in payload and c.state == _SUBSCRIBING:
            i = payload.rfind(b'"seq":')
            if i >= 0:
                i += 6
                j = payload.find(b",", i)
                c.expect = int(payload[i:j if j >= 0 else len(payload) - 1]) + 1
            c.state = _OPEN
            self.inflight -= 1
            self.subscribed += 1
            self.counters[self.row + SUBSCRIBED] += 1
            self.clients.append(c)
            if c.gid in self.spec.stalled:
                c.state = _STALLED
                self.epoll.unregister(c.fd)  # never read again (until the final drain)
        elif b'"seq":' in payload and b'"type":"subscribed"' not in payload:
            # A stream message without published_ns: the server does not stamp them.
            self.failures["stream message without published_ns"] += 1
        else:
            self.text_other += 1

    def _on_frame(self, c: _Client, first: int, key: bytes, payload: bytes, now: int) -> None:
        """Everything but a final unmasked text frame: control frames and fragments."""
        if key:
            self.masked_frames += 1
            payload = unmask(payload, key)
        opcode, fin = first & 0x0F, first & 0x80
        if opcode == PING_OPCODE:
            self.pings += 1
            self._send(c, client_frame(PONG, payload, key=os.urandom(4)))
        elif opcode == PONG:
            pass
        elif opcode == CLOSE:
            self._closed(c, close_code(payload) or 1005, now, reply=True)
        elif opcode in (0x1, 0x2) and not fin:
            c.frag = [payload]
        elif opcode == 0x0 and c.frag is not None:
            c.frag.append(payload)
            if fin:
                message, c.frag = b"".join(c.frag), None
                self._feed_message(c, message, now)
        elif opcode in (0x1, 0x2):
            self._feed_message(c, payload, now)

    def _feed_message(self, c: _Client, message: bytes, now: int) -> None:
        """A reassembled (or masked) message: re-frame it and take the hot path."""
        saved, c.buf = c.buf, b""
        self._feed(c, frame_header(0x81, len(message)) + message, now)
        c.buf = saved

    def _send(self, c: _Client, frame: bytes) -> None:
        if c.sock is None:
            return
        if c.out:
            c.out += frame
            return
        try:
            sent = c.sock.send(frame)
        except BlockingIOError:
            sent = 0
        except OSError:
            return
        if sent < len(frame):
            c.out = frame[sent:]
            if c.state != _STALLED:
                self.epoll.modify(c.fd, select.EPOLLIN | select.EPOLLOUT)

    def _flush(self, c: _Client) -> None:
        assert c.sock is not None
        try:
            sent = c.sock.send(c.out)
        except BlockingIOError:
            return
        except OSError:
            c.out = b""
            return
        c.out = c.out[sent:]
        if not c.out:
            self.epoll.modify(c.fd, select.EPOLLIN)

    def _closed(self, c: _Client, code: int | None, now: int, *, reply: bool) -> None:
        if c.state == _DONE:
            return
        if c.state in (_HANDSHAKE, _SUBSCRIBING, _CONNECTING):
            self.failures[f"closed before subscribed: {code}"] += 1
            self.counters[self.row + FAILED] += 1
            self.inflight -= 1
        c.code, c.closed_at = code, now
        self.counters[self.row + CLOSED] += 1
        if c.sock is not None:
            if reply:
                with contextlib.suppress(OSError):
                    c.sock.send(client_frame(CLOSE, (code or 1000).to_bytes(2, "big"),
                                                 key=os.urandom(4)))
            with contextlib.suppress(OSError, KeyError, ValueError):
                self.epoll.unregister(c.fd)
            self.by_fd.pop(c.fd, None)
            c.sock.close()
            c.sock = None
        c.state = _DONE

    # ----------------------------------------------------------------- loop

    def run(self) -> dict[str, Any]:
        spec = self.spec
        control_fd = self.control.fileno()
        self.epoll.register(control_fd, select.EPOLLIN)
        received_slot = self.row + RECEIVED
        counters = self.counters
        monotonic_ns = time.monotonic_ns
        stopping = False
        while not stopping:
            now_s = time.monotonic()
            if now_s >= spec.hard_deadline:
                self.failures["hard deadline reached"] += 1
                break
            while self.pending and self.inflight < spec.max_inflight:
                self._start(self.pending.pop())
            if self.retry:
                due = [c for c in self.retry if c.retry_at <= now_s]
                if due:
                    self.retry = [c for c in self.retry if c.retry_at > now_s]
                    self.pending.extend(due)
            events = self.epoll.poll(0.05 if (self.retry or self.pending) else 0.5)
            now = time.monotonic_ns()
            got = 0
            for fd, ev in events:
                if fd == control_fd:
                    stopping = self._control()
                    continue
                c = self.by_fd.get(fd)
                if c is None:
                    continue
                state = c.state
                if _SUBSCRIBING <= state <= _OPEN:  # the hot path
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
                        self._closed(c, None, now, reply=False)
                        continue
                    self.rx_bytes += len(data)
                    got += 1
                    self._feed(c, data, monotonic_ns())  # receipt: when the bytes are ours
                elif state == _CONNECTING:
                    self._on_connect(c)
                elif state == _HANDSHAKE:
                    self._on_handshake(c, now)
            if got:
                counters[received_slot] = self.received
        return self._results()

    def _control(self) -> bool:
        while self.control.poll():
            message = self.control.recv()
            if message[0] == "window":
                self.t0, self.t1 = message[1], message[2]
            elif message[0] == "stop":
                return True
        return False

    def _drain_stalled(self) -> list[dict[str, Any]]:
        """Read what the stalled clients never read, to see how the server closed them."""
        report = []
        for c in self.clients:
            if c.state != _STALLED or c.sock is None:
                continue
            sock, data, frames_code, eof = c.sock, b"", None, False
            sock.setblocking(True)
            sock.settimeout(0.5)
            deadline = time.monotonic() + 5.0
            total = 0
            while time.monotonic() < deadline:
                try:
                    chunk = sock.recv(1 << 20)
                except TimeoutError:
                    break
                except OSError as exc:
                    frames_code = frames_code or f"reset: {exc.__class__.__name__}"
                    eof = True
                    break
                if not chunk:
                    eof = True
                    break
                total += len(chunk)
                data = (data + chunk)[-(1 << 16):]  # a close frame is at the very end
            at = data.rfind(b"\x88\x02")
            if at >= 0 and at + 4 <= len(data):
                frames_code = int.from_bytes(data[at + 2:at + 4], "big")
            else:
                at = data.rfind(b"\x88")
                if at >= 0 and at + 2 <= len(data) and 2 <= (data[at + 1] & 0x7F) < 126 \
                        and at + 4 <= len(data):
                    frames_code = int.from_bytes(data[at + 2:at + 4], "big")
            report.append({"client": c.gid, "bytes_unread": total, "eof": eof,
                           "close_code": frames_code})
        return report

    def _results(self) -> dict[str, Any]:
        stalled = self._drain_stalled()
        closes: Counter[str] = Counter()
        close_list = []
        for c in self.clients:
            if c.state == _DONE:
                closes[str(c.code) if c.code is not None else "abrupt"] += 1
                close_list.append((c.gid, c.code, c.closed_at))
        healthy = [c for c in self.clients if c.gid not in self.spec.stalled]
        result = {
            "index": self.spec.index,
            "subscribed": self.subscribed,
            "latencies_ns": self.lat.tobytes(),
            "missed": self.missed,
            "missed_outside_window": self.missed_outside,
            "reordered": self.reordered,
            "received_total": self.received,
            "rx_bytes": self.rx_bytes,
            "text_other": self.text_other,
            "pings_answered": self.pings,
            "masked_server_frames": self.masked_frames,
            "failures": dict(self.failures),
            "closes": dict(closes),
            "close_list": close_list,
            "wseq": [(c.gid, c.wfirst, c.wseq, c.state == _DONE, c.closed_at) for c in healthy],
            "stalled": stalled,
        }
        for c in self.clients:
            if c.sock is not None:
                c.sock.close()
        return result


def worker_main(spec: WorkerSpec, counters: Any, control: Connection) -> None:
    """Entry point of a worker process.

    With ``BENCH_LOADGEN_PROFILE=DIR`` in the environment, each worker runs under
    cProfile and writes ``DIR/loadgen-<index>.prof``.
    """
    with contextlib.suppress(KeyboardInterrupt):
        worker = Worker(spec, counters, control)
        profile_dir = os.environ.get("BENCH_LOADGEN_PROFILE")
        if profile_dir:
            import cProfile  # noqa: PLC0415 - only when asked

            profiler = cProfile.Profile()
            results = profiler.runcall(worker.run)
            profiler.dump_stats(os.path.join(profile_dir, f"loadgen-{spec.index}.prof"))
        else:
            results = worker.run()
        control.send(results)
        control.close()
