"""Protocol abuse on a raw socket: bad upgrades, bad frames, oversize, stalled handshakes.

Frame-level violations *fail the connection* (RFC 6455, 7.1.7): the server
closes with the RFC's code (1002 protocol error, 1007 invalid payload data,
1009 too big), always with a close frame and never with anything else
(``test_close_codes.py`` checks every code and the end of TCP after it).
After every abuse the gateway must still serve, hold no connection, and have
logged no handler failure. The gateway runs without its journal (no order is
placed here), so the handshake timeout can run on ``idle_clock``.
"""

from __future__ import annotations

import json
import logging
import struct

import pytest
import trio
from wsclient import CLOSE, PING, TEXT, TIMEOUT, RawClient, close_code, wait_for_stats

from gateway import Gateway, JournalSettings
from gateway._frames import BINARY, CONTINUATION, PONG

PING_JSON = b'{"action": "ping", "id": 1}'


@pytest.fixture
async def small_gateway(start_gateway, caplog) -> Gateway:
    caplog.set_level(logging.INFO, logger="trade_engine.gateway")
    return await start_gateway(websocket={"max_message_size": 1000, "handshake_timeout": 0.5},
                               journal=JournalSettings(enabled=False))


@pytest.fixture
def still_serves(caplog, ws_frame):
    """``await still_serves(gateway)``: a fresh client gets a pong, every connection is
    gone, and no handler failure was logged."""
    return lambda gateway: _still_serves(gateway, caplog, ws_frame)


async def _still_serves(gateway: Gateway, caplog, frame) -> None:
    client = await RawClient.connect(gateway, "/ws")
    try:
        await client.stream.send_all(frame(TEXT, PING_JSON))
        with trio.fail_after(TIMEOUT):
            assert json.loads((await client.text_messages(1))[0]) == {"type": "pong", "id": 1}
    finally:
        await client.aclose()
    await wait_for_stats(gateway, lambda s: s["connections"] == 0)
    failures = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not failures, [r.getMessage() for r in failures]


def request_with(*lines: str) -> bytes:
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


KEY = "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ=="
INVALID_UPGRADES = {  # name: (the request, the status of the answer; None: closed unanswered)
    "plain_get": (request_with("GET /ws HTTP/1.1", "Host: x"), 400),
    "no_key": (request_with("GET /ws HTTP/1.1", "Host: x", "Upgrade: websocket",
                            "Connection: Upgrade", "Sec-WebSocket-Version: 13"), 400),
    "old_version": (request_with("GET /ws HTTP/1.1", "Host: x", "Upgrade: websocket",
                                 "Connection: Upgrade", KEY, "Sec-WebSocket-Version: 8"), 426),
    "post": (request_with("POST /ws HTTP/1.1", "Host: x", "Upgrade: websocket",
                          "Connection: Upgrade", KEY, "Sec-WebSocket-Version: 13",
                          "Content-Length: 0"), 400),
    "http_1_0": (request_with("GET /ws HTTP/1.0", "Upgrade: websocket", "Connection: Upgrade",
                              KEY, "Sec-WebSocket-Version: 13"), 400),
    "garbage": (b"\x00\xff\xfe\x16\x03\x01 not http at all\r\n\r\n", 400),
    # No end of head ever comes: closed at the handshake timeout.
    "tls_client_hello": (bytes.fromhex("160301020001") + b"\x00" * 512, None),
    "huge_header": (request_with("GET /ws HTTP/1.1", "Host: x", "X-Big: " + "a" * 70_000), 400),
    "bad_header_line": (b"GET /ws HTTP/1.1\r\nHost x\r\n\x80\x81: \xff\r\n\r\n", 400),
}


@pytest.mark.parametrize("name", sorted(INVALID_UPGRADES))
async def test_invalid_upgrade_gets_a_4xx_or_a_close(small_gateway, still_serves, raw_send,
                                                     name, idle_clock):
    request, status = INVALID_UPGRADES[name]
    answer = await raw_send(small_gateway, request)
    if status is None:
        assert answer == b""
    else:
        assert int(answer.split(b" ", 2)[1]) == status, answer[:200]
    await still_serves(small_gateway)


@pytest.mark.parametrize(("path", "status", "code"), [
    ("/ws/markets/%ZZ", 404, "unknown_symbol"),
    ("/ws/markets/%ff%fe%00", 404, "unknown_symbol"),
    ("/ws/markets/" + "A" * 8000, 404, "unknown_symbol"),
    ("/ws/trades?symbol=%ff&symbol=%00", 404, "unknown_symbol"),
    ("/ws/orders?token=%ff%fe", 401, "unauthorized"),
    ("/ws/orders?token=" + "a." * 3000, 401, "unauthorized"),
    ("/ws/%2e%2e/%2e%2e/etc/passwd", 404, "not_found"),
    ("/nowhere", 404, "not_found"),
])
async def test_odd_paths_are_refused_with_json(small_gateway, still_serves, upgrade, path, status,
                                               code):
    got, _, body = await upgrade(small_gateway, path)
    assert got == status
    assert json.loads(body)["error"]["code"] == code
    await still_serves(small_gateway)


async def frames_after(gateway: Gateway, *sent: bytes) -> list[tuple[int, bytes]] | None:
    """The server's frames up to its close frame; None when it dropped TCP without one."""
    client = await RawClient.connect(gateway, "/ws")
    try:
        for data in sent:
            await client.stream.send_all(data)
        frames = await client.frames()
    except trio.BrokenResourceError:  # a reset: the server dropped the connection
        return None
    finally:
        await client.aclose()
    return frames if any(opcode == CLOSE for opcode, _ in frames) else None


def bad_frames(frame) -> dict[str, tuple[list[bytes], int]]:
    return {
        "unmasked": ([frame(TEXT, PING_JSON, mask=False)], 1002),
        "reserved_bit": ([frame(TEXT, PING_JSON, rsv=4)], 1002),
        "reserved_opcode": ([frame(0x3, b"x")], 1002),
        "reserved_control_opcode": ([frame(0xB, b"x")], 1002),
        "continuation_first": ([frame(CONTINUATION, b"x")], 1002),
        "fragmented_ping": ([frame(PING, b"a", fin=False), frame(CONTINUATION, b"b")], 1002),
        "fragmented_close": ([frame(CLOSE, struct.pack("!H", 1000), fin=False)], 1002),
        "long_ping": ([frame(PING, b"p" * 126)], 1002),
        "new_message_inside_another": (
            [frame(TEXT, b'{"action":', fin=False), frame(TEXT, b'"ping"}')], 1002),
        "close_one_byte": ([frame(CLOSE, b"\x03")], 1002),
        "close_code_999": ([frame(CLOSE, struct.pack("!H", 999))], 1002),
        "close_code_1005": ([frame(CLOSE, struct.pack("!H", 1005))], 1002),
        "invalid_utf8": ([frame(TEXT, b'{"action": "\xff\xfe"}')], 1007),
        "overlong_utf8": ([frame(TEXT, b'"\xc0\xaf"')], 1007),
        "surrogate_utf8": ([frame(TEXT, b'"\xed\xa0\x80"')], 1007),
        "invalid_utf8_across_fragments": (
            [frame(TEXT, b'{"id": "\xe2\x82', fin=False), frame(CONTINUATION, b'x"}')], 1007),
        "invalid_utf8_close_reason": ([frame(CLOSE, struct.pack("!H", 1000) + b"\xff")], 1007),
    }


BAD_FRAME_NAMES = sorted(bad_frames(lambda *a, **k: b""))


@pytest.mark.parametrize("name", BAD_FRAME_NAMES)
async def test_bad_frame_closes_with_the_rfc_code(small_gateway, still_serves, ws_frame, name):
    sent, code = bad_frames(ws_frame)[name]
    frames = await frames_after(small_gateway, *sent)
    assert frames is not None, "no close frame"
    assert close_code(frames) == code
    assert [opcode for opcode, _ in frames] == [CLOSE], frames
    await still_serves(small_gateway)


async def test_fragmented_message_with_a_ping_in_between_is_whole(small_gateway, still_serves,
                                                                   ws_frame):
    client = await RawClient.connect(small_gateway, "/ws")
    try:
        await client.stream.send_all(
            ws_frame(TEXT, PING_JSON[:5], fin=False)
            + ws_frame(PING, b"hello")
            + ws_frame(CONTINUATION, PING_JSON[5:12], fin=False)
            + ws_frame(CONTINUATION, b"", fin=False)
            + ws_frame(CONTINUATION, PING_JSON[12:])
            + ws_frame(BINARY, PING_JSON[:3], fin=False)
            + ws_frame(CONTINUATION, PING_JSON[3:])
        )
        with trio.fail_after(TIMEOUT):
            texts = [json.loads(text) for text in await client.text_messages(2)]
        assert texts == [{"type": "pong", "id": 1}] * 2
        await client.stream.send_all(
            ws_frame(PING, b"again") + ws_frame(CLOSE, struct.pack("!H", 1000)))
        frames = await client.frames()
    finally:
        await client.aclose()
    assert (PONG, b"again") in frames
    assert close_code(frames) == 1000
    await still_serves(small_gateway)


async def test_frame_announcing_a_huge_length_is_closed_with_1009(small_gateway, still_serves,
                                                                   ws_frame):
    frames = await frames_after(small_gateway, ws_frame(TEXT, b" " * 5000, length=1 << 62))
    assert frames is not None
    assert close_code(frames) == 1009
    await still_serves(small_gateway)


async def test_reassembled_message_over_four_times_the_limit_is_1009(small_gateway, still_serves,
                                                                      ws_frame):
    fragments = (ws_frame(TEXT, b" " * 1500, fin=False)
                 + ws_frame(CONTINUATION, b" " * 1500, fin=False)
                 + ws_frame(CONTINUATION, b" " * 1500))
    frames = await frames_after(small_gateway, fragments)
    assert frames is not None
    assert close_code(frames) == 1009
    await still_serves(small_gateway)


async def test_reassembled_message_over_the_limit_is_an_error(small_gateway, still_serves,
                                                              ws_frame):
    client = await RawClient.connect(small_gateway, "/ws")
    try:
        await client.stream.send_all(
            ws_frame(TEXT, PING_JSON, fin=False)
            + ws_frame(CONTINUATION, b" " * 800, fin=False)
            + ws_frame(CONTINUATION, b" " * 800)
            + ws_frame(TEXT, PING_JSON))
        with trio.fail_after(TIMEOUT):
            first, second = [json.loads(t) for t in await client.text_messages(2)]
    finally:
        await client.aclose()
    assert (first["type"], first["code"]) == ("error", "message_too_large")
    assert second == {"type": "pong", "id": 1}
    await still_serves(small_gateway)


async def closed_after(gateway: Gateway, send) -> float:
    """Seconds until the server closes a connection that ``send`` feeds."""
    stream = await trio.open_tcp_stream(gateway.endpoints.host, gateway.endpoints.ws_port)
    started = trio.current_time()
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(send, stream)
            with trio.fail_after(TIMEOUT):
                try:
                    while await stream.receive_some(65536):
                        pass
                except trio.BrokenResourceError:
                    pass
            nursery.cancel_scope.cancel()
        return trio.current_time() - started
    finally:
        await stream.aclose()


async def test_a_client_that_never_completes_the_handshake_is_closed(small_gateway, still_serves,
                                                                    upgrade_bytes, idle_clock):
    """Silent, half a request, or one byte every 0.05 s: closed at handshake_timeout, 0.5 s.

    On ``idle_clock`` the 0.5 s are exact: time passes only while everyone waits.
    """
    request = upgrade_bytes(small_gateway)

    async def nothing(stream: trio.SocketStream) -> None:
        await trio.sleep_forever()

    async def half(stream: trio.SocketStream) -> None:
        await stream.send_all(request[:40])
        await trio.sleep_forever()

    async def one_byte_at_a_time(stream: trio.SocketStream) -> None:  # slowloris
        for byte in request[:-1]:
            await stream.send_all(bytes([byte]))
            await trio.sleep(0.05)
        await trio.sleep_forever()

    async def all_three() -> list[float]:
        durations: list[float] = []

        async def one(send) -> None:
            durations.append(await closed_after(small_gateway, send))

        async with trio.open_nursery() as nursery:
            for send in (nothing, half, one_byte_at_a_time):
                nursery.start_soon(one, send)
        return durations

    durations = await all_three()
    assert durations == pytest.approx([0.5] * 3), durations  # handshake_timeout
    await still_serves(small_gateway)
