"""What the WebSocket port answers to a request that is not a WebSocket handshake.

Rules of this module: pure functions, no trio, no sockets. The listener reads a
request's head before trio-websocket sees it; a well-formed HTTP request without
``Upgrade: websocket`` (someone's REST client on the wrong port, a browser tab,
``curl``) gets a JSON error that names the REST URL, in the same shape as every
other handshake refusal. Everything else, malformed requests included, goes on
to trio-websocket, which accepts or refuses it.
"""

from __future__ import annotations

import json
import re

from gateway._codes import Code

MAX_HEAD = 16 * 1024
"""Bytes of request head read before giving up looking for its end (h11's own limit)."""

_REQUEST_LINE = re.compile(rb"[A-Z]+ (\S+) HTTP/1\.[01]\r\n")
_HOST = re.compile(r"[A-Za-z0-9.-]{1,253}|\[[0-9A-Fa-f:.]{2,45}\]")
STATUS = 400
CODE = Code.WEBSOCKET_ONLY


def head_end(data: bytes | bytearray) -> int:
    """The length of the request head in ``data``, blank line included; -1 if incomplete."""
    end = data.find(b"\r\n\r\n")
    return -1 if end < 0 else end + 4


def request_headers(head: bytes) -> list[tuple[bytes, bytes]]:
    """The header fields of a request head, names in lower case, in order.

    trio-websocket's ``request.headers`` leaves out ``Sec-WebSocket-Extensions``
    (wsproto keeps the offers to itself): the listener reads them here.
    """
    headers = []
    for line in head.split(b"\r\n")[1:]:
        name, colon, value = line.partition(b":")
        if colon:
            headers.append((name.strip().lower(), value.strip()))
    return headers


def refusal(
    head: bytes, *, ws_port: int, rest_port: int | None, local_host: str
) -> bytes | None:
    """The whole HTTP response for a plain HTTP request; None for anything else.

    Args:
        head: the request head, up to and including its blank line.
        ws_port: the port this request came to.
        rest_port: where REST listens; None if unknown.
        local_host: the address the client connected to, used when the request's
            ``Host`` header does not hold a plain host name.
    """
    line = _REQUEST_LINE.match(head)
    if line is None:
        return None
    headers = dict(request_headers(head))
    upgrade = headers.get(b"upgrade", b"").decode("latin-1").lower()
    if "websocket" in (token.strip() for token in upgrade.split(",")):
        return None
    host = headers.get(b"host", b"").decode("latin-1").strip()
    host = host.partition("]")[0] + "]" if host.startswith("[") else host.partition(":")[0]
    if not _HOST.fullmatch(host):
        host = f"[{local_host}]" if ":" in local_host else local_host
    path = line.group(1).decode("latin-1")
    message = f"port {ws_port} serves WebSocket streams only (ws://{host}:{ws_port}/ws"
    message += " with a WebSocket client)"
    if rest_port is not None:
        rest = f"http://{host}:{rest_port}"
        message += f"; the REST API is at {rest}/api/v1"
        if path.startswith("/") and not path.startswith("/ws") and len(path) <= 200:
            message += f": try {rest}{path}"
    body = json.dumps({"error": {"code": CODE, "message": message}}).encode() + b"\n"
    return (
        f"HTTP/1.1 {STATUS} Bad Request\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    ).encode("ascii") + body
