"""The fan-out load harness (bench/load.py): its frame parser, and one tiny real run.

The real run starts our gateway as a subprocess and 20 raw clients in two worker
processes, so it checks the whole chain: handshake, subscribe, order flow over
REST, ``published_ns`` stamping, parsing, seq accounting and the JSON. The
baseline server (websockets + uvloop, not installed here) is never imported.
"""

from __future__ import annotations

import json
import subprocess
import sys
from array import array
from pathlib import Path

import pytest

from bench.loadgen import (
    PUBLISHED_KEY,
    SEQ_KEY,
    Worker,
    WorkerSpec,
    _Client,
    int_field,
    source_address,
)
from gateway._frames import (
    CLOSE,
    PONG,
    TEXT,
    client_frame,
    server_frame,
    split_frames,
    unmask,
)
from gateway._frames import PING_OPCODE as PING

ROOT = Path(__file__).resolve().parents[2]  # the checkout: bench.load runs from there


def trade(seq: int, published_ns: int = 1_000_000, pad: int = 0) -> bytes:
    return (b'{"type":"trade_executed","trade_id":7,"symbol":"BTC/USDT","price":"50000.00",'
            b'"executed_at":"2026-11-22T05:52:53.674Z","pad":"' + b"x" * pad + b'",'
            b'"seq":%d,"published_ns":%d}' % (seq, published_ns))


# ------------------------------- the frame codec (gateway/_frames.py), as the harness uses it


def test_masked_frame_round_trips_and_is_masked() -> None:
    payload = b'{"action":"subscribe","stream":"trades"}'
    frame = client_frame(TEXT, payload, key=b"\x01\x02\x03\x04")
    assert frame[0] == 0x81
    assert frame[1] == 0x80 | len(payload)
    assert frame[2:6] == b"\x01\x02\x03\x04"
    assert frame[6:] != payload
    assert unmask(frame[6:], frame[2:6]) == payload
    frames, rest = split_frames(frame)  # the reference parser unmasks too
    assert frames == [(TEXT, True, payload)]
    assert rest == b""


@pytest.mark.parametrize("size", [0, 125, 126, 300, 65535, 65536, 70000])
def test_lengths_7_16_and_64_bit(size: int) -> None:
    payload = bytes(range(256)) * (size // 256) + bytes(size % 256)
    frame = server_frame(TEXT, payload)
    header = 2 if size < 126 else 4 if size < 65536 else 10
    assert len(frame) == header + size
    frames, rest = split_frames(frame + b"\x81")
    assert frames == [(TEXT, True, payload)]
    assert rest == b"\x81"
    masked = client_frame(TEXT, payload, key=b"\xf0\x0f\xaa\x55")
    assert split_frames(masked)[0] == [(TEXT, True, payload)]


def test_split_across_chunks_at_every_byte() -> None:
    stream = server_frame(TEXT, trade(1, pad=200)) + server_frame(PING, b"abcd") \
        + server_frame(TEXT, trade(2))
    for cut in range(len(stream) + 1):
        first, rest = split_frames(stream[:cut])
        second, rest = split_frames(rest + stream[cut:])
        assert [f[0] for f in first + second] == [TEXT, PING, TEXT]
        assert rest == b""


def test_int_fields_without_json() -> None:
    message = trade(41, published_ns=123456789)
    assert int_field(message, SEQ_KEY) == 41
    assert int_field(message, PUBLISHED_KEY) == 123456789
    reordered = b'{"published_ns":5,"type":"x","seq":9}'
    assert int_field(reordered, SEQ_KEY) == 9
    assert int_field(reordered, PUBLISHED_KEY) == 5
    assert int_field(b'{"type":"subscribed","seq":0}', PUBLISHED_KEY) is None


# ------------------------------------------------------------ worker parsing


class _Sock:
    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def send(self, data: bytes) -> int:
        self.sent.append(data)
        return len(data)

    def close(self) -> None:
        pass

    def fileno(self) -> int:
        return -1


@pytest.fixture
def worker() -> tuple[Worker, _Client, _Sock]:
    spec = WorkerSpec(index=0, client_ids=[0], host="127.0.0.1", port=1, path="/ws",
                      subscribe=None, hard_deadline=0.0)
    w = Worker(spec, array("q", [0] * 8), control=None)  # type: ignore[arg-type]
    c = _Client(0)
    sock = _Sock()
    c.sock = sock  # type: ignore[assignment]
    c.state = 2  # subscribing
    w.t0, w.t1 = 0, 1 << 62
    w.clients = []
    w.inflight = 1
    return w, c, sock


def test_worker_counts_latency_and_gaps(worker: tuple[Worker, _Client, _Sock]) -> None:
    w, c, _ = worker
    subscribed = server_frame(TEXT, b'{"type":"subscribed","id":1,"stream":"trades",'
                                     b'"symbol":"BTC/USDT","seq":10}')
    stream = subscribed + b"".join(server_frame(TEXT, trade(s, published_ns=1_000))
                                   for s in (11, 12, 14, 15))
    w._feed(c, stream[:7], now=5_000)  # a split header and payload
    w._feed(c, stream[7:], now=5_000)  # several frames in one chunk
    assert c.expect == 16
    assert list(w.lat) == [4_000] * 4
    assert w.missed == 1  # 13 never came
    assert w.subscribed == 1
    assert c.wfirst == 11
    assert c.wseq == 15


def test_worker_window_excludes_warmup(worker: tuple[Worker, _Client, _Sock]) -> None:
    w, c, _ = worker
    c.expect = 1
    c.state = 3
    w.t0, w.t1 = 100, 200
    for seq, published in ((1, 50), (2, 150), (3, 199), (5, 250)):
        w._feed(c, server_frame(TEXT, trade(seq, published_ns=published)), now=300)
    assert list(w.lat) == [150, 101]
    assert w.missed == 0
    assert w.missed_outside == 1


def test_worker_answers_ping_with_masked_pong(worker: tuple[Worker, _Client, _Sock]) -> None:
    w, c, sock = worker
    c.state = 3
    w._feed(c, server_frame(PING, b"\x00\x01\x02\x03") + server_frame(TEXT, trade(1)), now=0)
    assert len(sock.sent) == 1
    pong = sock.sent[0]
    assert pong[0] == 0x80 | PONG
    assert pong[1] & 0x80  # masked
    frames, _ = split_frames(pong)
    assert frames == [(PONG, True, b"\x00\x01\x02\x03")]
    assert w.pings == 1
    assert len(w.lat) == 1


def test_worker_records_close_code(worker: tuple[Worker, _Client, _Sock]) -> None:
    w, c, sock = worker
    c.state = 3
    w.by_fd[-1] = c
    w._feed(c, server_frame(CLOSE, (4008).to_bytes(2, "big") + b"slow consumer"), now=42)
    assert c.code == 4008
    assert c.closed_at == 42
    assert split_frames(sock.sent[0])[0][0][0] == CLOSE  # answered with a masked close


def test_fragmented_message(worker: tuple[Worker, _Client, _Sock]) -> None:
    w, c, _ = worker
    c.state, c.expect = 3, 1
    message = trade(1, published_ns=10)
    stream = server_frame(TEXT, message[:20], fin=False) + server_frame(0x0, message[20:])
    w._feed(c, stream, now=30)
    assert list(w.lat) == [20]


def test_source_addresses() -> None:
    assert source_address(0, 5000) == "127.0.0.2"
    assert source_address(4999, 5000) == "127.0.0.2"
    assert source_address(5000, 5000) == "127.0.0.3"


# ------------------------------------------------------------- end to end


def test_tiny_real_run(tmp_path: Path) -> None:
    output = tmp_path / "load.json"
    subprocess.run(
        [sys.executable, "-m", "bench.load", "--clients", "20", "--rate", "20",
         "--duration", "3", "--warmup", "0.5", "--grace", "0.5", "--no-plot",
         "--output", str(output)],
        cwd=ROOT, check=True, timeout=60, capture_output=True)
    results = json.loads(output.read_text())
    run = results["runs"]["ours"][0]
    assert run["subscribed"] == 20
    assert run["deliveries"] > 0
    assert run["deliveries"] == run["published"] * 20 > 0
    assert run["missed"] == 0
    assert run["latency_ms"]["p50"] > 0
    assert run["latency_ms"]["max"] >= run["latency_ms"]["p99"] > 0
    assert run["server"]["cpu_pct"] > 0
    assert run["server"]["rss_per_connection_kib"] is not None
