"""ASGI plumbing shared by the REST modules: message types and JSON answers.

Rules of this module:

* Every JSON answer, errors included, is encoded here and ends with a newline,
  so ``curl`` output does not run into the shell prompt.
* Every error body has one shape, ``{"error": {"code", "message", "field"}}``.
* Header names are lowercase bytes, as h11 hands them to us and as ASGI wants them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

import msgspec

# hypercorn and Quart spell these with TypedDicts; the loose spelling lets either fit.
Scope = Mapping[str, Any]
Message = Mapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Any], Awaitable[None]]
App = Callable[[Any, Any, Any], Awaitable[None]]
Headers = list[tuple[bytes, bytes]]

JSON_TYPE = (b"content-type", b"application/json")
_encode = msgspec.json.Encoder().encode


def json_bytes(body: Any) -> bytes:
    """``body`` as JSON, newline-terminated."""
    return _encode(body) + b"\n"


def error_bytes(code: str, message: str, field: str | None = None) -> bytes:
    """The one error envelope, newline-terminated."""
    return json_bytes({"error": {"code": code, "message": message, "field": field}})


def header(scope: Scope, name: bytes) -> bytes | None:
    """The first value of request header ``name`` (lowercase), or None."""
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value)
    return None


def start_message(status: int, body: bytes, headers: Iterable[tuple[bytes, bytes]] = (),
                  content_type: tuple[bytes, bytes] = JSON_TYPE) -> dict[str, Any]:
    """An ``http.response.start`` for a body of known length."""
    return {
        "type": "http.response.start", "status": status,
        "headers": [content_type, (b"content-length", b"%d" % len(body)), *headers],
    }


async def send_body(send: Send, status: int, body: bytes,
                    headers: Iterable[tuple[bytes, bytes]] = ()) -> None:
    """Answer with a complete JSON body (start, then the body as the last message)."""
    await send(start_message(status, body, headers))
    await send({"type": "http.response.body", "body": body, "more_body": False})
