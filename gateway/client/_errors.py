"""The client's exceptions: one base, and a type per thing the application can act on.

Rules of this module:

* Everything the library raises on purpose is a :class:`ClientError`; the
  application never has to unwrap an exception group to find it.
* The type says whose move it is: :class:`RequestError` is the server's
  answer to a request (fix the input: ``code``, ``message`` and ``field`` are the
  server's own); :class:`OutcomeUnknown` means the request may or may not have
  been applied (check before retrying); :class:`ConnectFailed`,
  :class:`HandshakeRejected` and :class:`ConnectionLost` are about the link.
"""

from __future__ import annotations


class ClientError(Exception):
    """Base of every error the client library raises on purpose."""


class RequestError(ClientError):
    """The server answered a request with ``{"type": "error"}``.

    Attributes:
        code: the server's stable code (``price_off_tick``, ``unknown_symbol``,
            ``rate_limited``...; docs/protocol.md lists them all).
        message: the server's sentence, which names the fix.
        field: the offending input, when there is one.
    """

    def __init__(self, code: str, message: str, field: str | None = None) -> None:
        super().__init__(f"{code}: {message}" + (f" (field {field})" if field else ""))
        self.code = code
        self.message = message
        self.field = field


class SubscriptionError(RequestError):
    """The server refused a subscription (or a resubscription after a reconnect)."""


class ConnectFailed(ClientError):
    """No WebSocket could be opened: DNS, TCP, TLS, or no answer in time.

    Attributes:
        cause: the operating system's error (None: no answer in time, or a
            refused handshake).
    """

    def __init__(self, message: str, cause: BaseException | None = None) -> None:
        super().__init__(message)
        self.cause = cause


class HandshakeRejected(ConnectFailed):
    """The server answered the WebSocket handshake with an HTTP error.

    Attributes:
        status: the HTTP status (401 bad or expired token, 404 unknown path,
            429 too many connections, 503 shutting down...).
        body: the raw answer body (JSON ``{"error": {"code", "message"}}`` from
            this server).
        retry_after: seconds from ``Retry-After``, when the server sent it.
    """

    def __init__(self, status: int, body: bytes, retry_after: float | None,
                 message: str) -> None:
        super().__init__(message)
        self.status = status
        self.body = body
        self.retry_after = retry_after


class ConnectionLost(ClientError):
    """The connection is gone and the client will not (or may not) reconnect.

    Attributes:
        code: the close code the server sent (1001 shutdown, 4003 token expired,
            4008 slow consumer...), or None when the link broke without one.
        reason: the server's close reason, or what the client saw.
    """

    def __init__(self, message: str, code: int | None = None, reason: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason


class NotConnected(ConnectionLost):
    """A request was made while the client is between connections; nothing was sent."""


class OutcomeUnknown(ConnectionLost):
    """The connection was lost after an order request was sent and before its reply.

    The server may or may not have applied it: the client never sends it again
    by itself. Look at your open orders (``GET /api/v1/orders``, or the
    ``orders`` stream after the reconnect) before retrying; a ``client_order_id``
    makes that check easy and a retry safe (a duplicate is refused with
    ``duplicate_client_order_id``).

    Attributes:
        request: the request that was sent (as JSON-ready dict).
    """

    def __init__(self, request: dict[str, object], reason: str) -> None:
        super().__init__(
            f"the connection was lost ({reason}) before the reply to {request.get('action')} "
            f"id {request.get('id')}: it may or may not have been applied; check your "
            "orders before retrying", reason=reason)
        self.request = request


class ChecksumFailed(ClientError):
    """A depth book kept failing its checksum right after fresh snapshots (a bug)."""
