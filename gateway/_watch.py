"""``trade-engine watch``: print what a WebSocket endpoint sends, one JSON message a line.

Rules of this module:

* Every failure is one line on stderr, ``trade-engine: ...``, that says what
  happened and what to do; never a traceback, never a Python repr.
* The token never reaches the terminal: every URL shown has ``token=...``
  masked, and so has whatever the server said back.
* The URL is built by :func:`stream_url` (pure, tested without a network): the
  endpoint may be written ``/ws/trades``, ``ws/trades`` or ``trades``, or be a
  whole ``ws://`` URL; ``--url`` is the server's WebSocket base URL, and a
  trailing ``/ws`` there (as the ``serve`` banner prints it) is not doubled.
* Exit status: see :data:`EXIT_STATUS`, which ``--help`` prints.
* The WebSocket is the client library's (``gateway/client/_ws.py``), the
  raw layer under ``gateway.client.connect``: watch prints what the server
  sends, as sent, so it uses the connection without the library's
  subscription bookkeeping.
"""

from __future__ import annotations

import re
import shlex
import socket
import sys
from collections.abc import Sequence
from urllib.parse import quote, urlsplit

import jwt
import trio

from gateway.client._errors import ConnectFailed, ConnectionLost, HandshakeRejected
from gateway.client._ws import WebSocket, describe_rejection, open_websocket

DEFAULT_URL = "ws://127.0.0.1:8081"
CONNECT_TIMEOUT = 10.0  # seconds for TCP connect plus the WebSocket handshake
HEARTBEAT_INTERVAL = 20.0  # seconds of silence before watch pings the server
HEARTBEAT_TIMEOUT = 20.0  # seconds more without an answer: the connection is lost

EXIT_STATUS = """\
exit status:
  0  --count messages printed, or the server closed the stream normally (1000)
  1  the server closed the stream (shutdown 1001, token expired 4003, slow
     consumer 4008, ...) or the connection was lost
  2  the stream never opened: a bad URL, nothing listening (is trade-engine
     serve running?), or the server refused the handshake (HTTP 401, 404, ...)
  130  interrupted (Ctrl-C)"""

# Close codes whose reason may come empty; the server's reason wins when it sends one.
_CLOSE_NAMES = {
    1000: "normal closure", 1001: "server shutting down", 1002: "protocol error",
    1003: "unsupported data", 1007: "invalid data", 1008: "policy violation",
    1009: "message too big", 1011: "internal error", 4003: "token expired",
    4008: "slow consumer", 4009: "heartbeat timeout", 4029: "message rate limit",
}
_TOKEN_IN_URL = re.compile(r"(token=)[^&#\s]*")


class WatchUsageError(ValueError):
    """The endpoint or ``--url`` cannot make a WebSocket URL; the message says why."""


def stream_url(base: str, endpoint: str, token: str | None = None) -> str:
    """The URL to open for ``endpoint`` on the server at ``base``.

    Raises:
        WatchUsageError: ``base`` (or a whole-URL ``endpoint``) is not ws:// or wss://.
    """
    if "://" in endpoint:
        base, endpoint = endpoint, ""
    parts = urlsplit(base)
    if parts.scheme not in ("ws", "wss") or not parts.netloc:
        raise WatchUsageError(
            f"{mask(base)} is not a WebSocket URL: use ws://HOST:PORT (or wss://), the "
            f"WebSocket address the serve banner prints, e.g. {DEFAULT_URL}")
    prefix = parts.path.rstrip("/")
    queries = [parts.query]
    path = ""
    if endpoint:
        prefix = prefix.removesuffix("/ws")  # the banner prints ws://HOST:PORT/ws
        path, _, query = endpoint.strip().partition("?")
        path = "/" + path.lstrip("/")
        if not (path == "/ws" or path.startswith("/ws/")):
            path = "/ws" + path  # every endpoint is under /ws: "trades" is /ws/trades
        queries.append(query)
    if token:
        queries.append("token=" + quote(token, safe=""))
    query = "&".join(q for q in queries if q)
    url = f"{parts.scheme}://{parts.netloc}{prefix}{path}"
    return f"{url}?{query}" if query else url


def mask(text: str, token: str | None = None) -> str:
    """``text`` with every ``token=...`` (and the token itself) replaced by ``***``."""
    if token:
        text = text.replace(token, "***")
    return _TOKEN_IN_URL.sub(r"\1***", text)


def describe_close(code: int | None, reason: str | None, token: str | None) -> str:
    """One line for a close the server sent (or the lack of one)."""
    if code is None or code == 1006:
        return "the connection was lost (no close frame from the server)"
    words = _one_line(reason or "") or _CLOSE_NAMES.get(code, "no reason given")
    line = f"closed by the server: {code} {words}"
    if code == 4003:
        line += f" (get a new token with: trade-engine token --user {_user_of(token)})"
    return line


def _user_of(token: str | None) -> str:
    """The token's user, to suggest the right command (the token is not verified here)."""
    try:
        user = jwt.decode(token or "", options={"verify_signature": False}).get("sub")
    except jwt.PyJWTError:
        user = None
    if isinstance(user, str) and user.isprintable() and 0 < len(user) <= 128:
        return shlex.quote(user)
    return "USER"


def _one_line(text: str) -> str:
    """Whatever the server said, on one line."""
    return " ".join(text.split())


def describe_connect_error(url: str, exc: ConnectFailed) -> str:
    """One line for a connection that could not be made at all (``--url`` named as the fix)."""
    where = urlsplit(url)
    if exc.cause is None:
        return (f"cannot connect to {mask(url)}: no answer within {CONNECT_TIMEOUT:g} s; "
                "check the host and port (the serve banner prints the WebSocket URL)")
    if isinstance(exc.cause, socket.gaierror):
        return (f"cannot connect to {mask(url)}: unknown host {where.hostname!r}; "
                "check --url (the serve banner prints the WebSocket URL)")
    if isinstance(exc.cause, ConnectionRefusedError):
        return (f"cannot connect to {mask(url)}: connection refused; is the server "
                f"running? Start it with: trade-engine serve (or pass --url with the "
                f"WebSocket URL its banner prints)")
    return str(exc)


def run_watch(url: str, token: str | None, requests: Sequence[str], limit: int | None) -> int:
    """:func:`watch` in a new trio run; Ctrl-C is exit status 130, not a traceback."""
    status = 130
    try:
        status = trio.run(watch, url, token, requests, limit)
    except* KeyboardInterrupt:  # delivered to whichever task was running, maybe in a group
        pass
    return status


async def watch(url: str, token: str | None, requests: Sequence[str], limit: int | None) -> int:
    """Print messages from ``url`` until ``limit``; the exit status of ``EXIT_STATUS``.

    The connection is the client library's (``gateway.client``): its WebSocket
    owns and always closes its TCP stream, answers the server's pings and
    pings a silent server itself, so a dead server is reported instead of
    waited for forever.
    """
    shown = mask(url, token)
    try:
        ws = await open_websocket(url, shown_url=shown, connect_timeout=CONNECT_TIMEOUT)
    except HandshakeRejected as exc:
        return _fail(f"{shown}: " + mask(describe_rejection(exc.status, exc.body), token))
    except ConnectFailed as exc:
        return _fail(describe_connect_error(url, exc))
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(ws.keep_alive, HEARTBEAT_INTERVAL, HEARTBEAT_TIMEOUT)
            status = await _print_messages(ws, token, requests, limit)
            nursery.cancel_scope.cancel()
    finally:
        with trio.CancelScope(shield=True):
            await ws.abort()
    return status


async def _print_messages(ws: WebSocket, token: str | None, requests: Sequence[str],
                          limit: int | None) -> int:
    try:
        for message in requests:
            await ws.send(message)
        seen = 0
        while limit is None or seen < limit:
            print(await ws.receive(), flush=True)
            seen += 1
    except ConnectionLost as exc:
        if exc.code == 1000:
            return 0
        if exc.code is None:
            return _fail(mask(str(exc), token), status=1)
        return _fail(mask(describe_close(exc.code, exc.reason, token), token), status=1)
    await ws.aclose()  # --count reached: say goodbye, briefly
    return 0


def _fail(line: str, *, status: int = 2) -> int:
    print(f"trade-engine: {line}", file=sys.stderr, flush=True)
    return status
