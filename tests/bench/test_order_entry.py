"""The order entry benchmark (bench/order_entry.py): its parsers, and one short real run.

The real run starts our gateway and the bare ASGI server as subprocesses and drives
both with two raw-socket worker processes for about a second each, so it checks the
whole chain: tokens, pre-built requests, the closed loop, the window, the merge of
the workers' results and the JSON. matching-engine (a PyPI peer on Python 3.12) and
our WebSocket order entry are left to the nox session.
"""

from __future__ import annotations

import json
import subprocess
import sys
from array import array
from decimal import Decimal
from pathlib import Path

import pytest

from bench.order_load import (
    ROW,
    LoadSpec,
    Worker,
    _Conn,
    classify_http,
    classify_ws,
    order_mix,
    parse_http,
)
from gateway._frames import PING_OPCODE as PING
from gateway._frames import PONG, TEXT, server_frame, split_frames

ROOT = Path(__file__).resolve().parents[2]  # the checkout: bench.order_entry runs from there


def response(status: int, body: bytes, extra: bytes = b"") -> bytes:
    return (b"HTTP/1.1 %d X\r\ncontent-type: application/json\r\nContent-Length: %d\r\n%s\r\n"
            % (status, len(body), extra)) + body


def test_order_mix_alternates_around_50000_with_exact_prices() -> None:
    mix = order_mix(3, 200, seed=1)
    assert [side for side, _ in mix[:4]] == ["sell", "buy", "sell", "buy"]  # odd: sell first
    assert order_mix(0, 1, seed=1)[0][0] == "buy"
    for side, price in mix:
        offset = Decimal(price) - Decimal("50000.00")
        assert Decimal("0.01") <= abs(offset) <= Decimal("0.10")
        assert (offset > 0) == (side == "buy")  # every buy above every sell: about half cross
        assert Decimal(price).as_tuple().exponent == -2
    assert order_mix(3, 200, seed=1) == mix
    assert order_mix(4, 200, seed=1) != mix


def test_parse_http_whole_pipelined_and_byte_by_byte() -> None:
    stream = response(201, b'{"status":"OPEN"}') + response(
        429, b'{"error":{"code":"rate_limited"}}', b"Connection: close\r\n")
    responses, rest = parse_http(stream + b"HTTP/1.1 2")
    assert responses == [(201, b'{"status":"OPEN"}', False),
                         (429, b'{"error":{"code":"rate_limited"}}', True)]
    assert rest == b"HTTP/1.1 2"
    got, buf = [], b""
    for i in range(len(stream)):
        done, buf = parse_http(buf + stream[i:i + 1])
        got.extend(done)
    assert got == responses
    assert buf == b""
    with pytest.raises(ValueError, match="Content-Length"):
        parse_http(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")


def test_classify_http() -> None:
    assert classify_http(201, b'{"order_id":1,"status":"FILLED"}', 201) == (True, "FILLED")
    assert classify_http(200, b'{"order_id":1,"status":"resting"}', 200) == (True, "resting")
    assert classify_http(200, b'{"order_id":1,"status":"rejected"}', 200) == (
        False, "200 rejected")
    assert classify_http(429, b'{"error":{"code":"rate_limited"}}', 201) == (
        False, "429 rate_limited")
    assert classify_http(422, b'{"detail":"off grid"}', 200) == (False, "422")


def test_classify_ws() -> None:
    placed = b'{"type":"placed","id":7,"order":{"order_id":3,"status":"OPEN"}}'
    assert classify_ws(placed, 7) == ("ack", "OPEN")
    spaced = b'{"type": "placed", "id": 7, "order": {"order_id": 3, "status": "FILLED"}}'
    assert classify_ws(spaced, 7) == ("ack", "FILLED")
    assert classify_ws(placed, 8)[0] == "mismatch"
    assert classify_ws(b'{"type":"error","id":7,"code":"rate_limited","message":"x"}', 7) == (
        "error", "error rate_limited")
    assert classify_ws(b'{"type":"shutdown","reason":"bye"}', 7) == ("other", "shutdown")


class _Sock:
    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def send(self, data: bytes) -> int:
        self.sent.append(data)
        return len(data)


def test_ws_worker_matches_replies_in_order_and_refills() -> None:
    requests = [b"req%d" % i for i in range(4)]
    spec = LoadSpec(index=0, kind="ws", host="127.0.0.1", port=1, connection_ids=[0],
                    requests=[requests], pipeline=2)
    w = Worker(spec, array("q", [0] * ROW), None)
    c = w.conns[0]
    assert isinstance(c, _Conn)
    sock = _Sock()
    c.sock, c.state = sock, 2  # type: ignore[assignment]
    w.t0, w.t1, w.go_ns, w.timeline, w.timeline_errors = 0, 1 << 62, 0, [0], [0]
    w._fill(c, now=1)
    assert sock.sent == [b"req0", b"req1"]  # two in flight
    stream = (server_frame(TEXT, b'{"type":"placed","id":0,"order":{"status":"OPEN"}}')
              + server_frame(PING, b"hb")
              + server_frame(TEXT, b'{"type":"error","id":1,"code":"busy","message":"x"}'))
    w._feed_ws(c, stream[:9], now=10)  # a split frame first
    w._feed_ws(c, stream[9:], now=10)
    assert w.acked == 1
    assert w.errors == {"error busy": 1}
    assert len(w.lat) == 1
    assert split_frames(sock.sent[2])[0] == [(PONG, True, b"hb")]
    assert sock.sent[3:] == [b"req2", b"req3"]  # the loop refilled to two in flight
    assert [index for _, index in c.inflight] == [2, 3]


def test_short_real_run(tmp_path: Path) -> None:
    output = tmp_path / "order_entry.json"
    subprocess.run(
        [sys.executable, "-m", "bench.order_entry", "--systems", "ours_rest,bare_asgi",
         "--connections", "4", "--rounds", "1", "--duration", "1.0", "--warmup", "0.3",
         "--grace", "1", "--workers", "2", "--no-plot", "--output", str(output)],
        cwd=ROOT, check=True, timeout=120, capture_output=True)
    results = json.loads(output.read_text())
    assert set(results) >= {"config", "summary", "ratios", "targets", "runs"}
    assert sorted(run["system"] for run in results["runs"]) == ["bare_asgi", "ours_rest"]
    for run in results["runs"]:
        assert run["connected"] == 4
        assert run["acked"] > 0
        assert run["errors"] == {}  # every reply in the window was an ack
        assert run["errors_total"] == 0
        assert run["acked_per_s"] > 0
        assert run["latency_ms"]["max"] >= run["latency_ms"]["p99"] >= run["latency_ms"]["p50"] > 0
        assert run["generator"]["workers"] == 2
        assert run["generator"]["cpu_us_per_ack"] is not None
        assert run["server"]["cpu_us_per_ack"] is not None
        assert run["server"]["exit_code"] == 0
    ours = next(run for run in results["runs"] if run["system"] == "ours_rest")
    assert set(ours["statuses"]) <= {"OPEN", "PARTIALLY_FILLED", "FILLED"}
    assert ours["server_stats_end"]["rest_rate_limited"] == 0
    summary = results["summary"]["4"]
    assert summary["ours_rest"]["acked_per_s"] > 0
    assert summary["bare_asgi"]["acked_per_s"] > 0
    assert results["ratios"]["4"]["rest_vs_bare_asgi"]["of_medians"] > 0
