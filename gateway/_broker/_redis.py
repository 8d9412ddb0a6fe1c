"""The Redis client (coredis 6, pinned exactly in pyproject.toml) and the reconnect loop.

Rules of this module (see /work/shared/notes/redis-streams-under-trio.md for
the measurements behind them):

* coredis runs on anyio, so it runs under trio as it is; exceptions that
  leave ``async with Redis()`` arrive wrapped in an exception group, which
  :func:`reconnecting` unwraps.
* :class:`SlotSafePool`: coredis never gives back the pool slot of a
  connection that died under a cancelled or failed command; after
  ``max_connections`` such events every command would hang. The fix puts a
  placeholder back (the pool then opens a new connection). It touches a
  private attribute, which is why coredis is pinned to one version.
* No automatic retries (``NoRetryPolicy``): a retried XADD whose first reply
  was lost writes the command twice. A failed call is reported; the caller
  decides (a gateway answers ``engine_unavailable``, a publisher republishes
  by ``seq``, which Redis deduplicates).
* Each blocking reader gets its own client; BLOCK is at most 1 s, and the
  socket timeout is well above it.
* :func:`reconnecting` runs a body with a fresh client (once it answered a
  PING: then the task counts as connected) until it returns,
  and after a connection failure waits (:class:`~gateway._broker._codec.Backoff`:
  50 ms doubling to 2 s) and runs it again; ``on_down`` hears each failure.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable
from functools import partial
from typing import Any

import coredis
import coredis.exceptions
import trio
from coredis.retry import NoRetryPolicy

from gateway._broker._codec import Backoff, BrokerAddress

log = logging.getLogger("trade_engine.broker")

BLOCK_MS = 1000
"""Longest blocking read: BLOCK timeouts fire at Redis's ticks, and never 0 (forever)."""

_STREAM_TIMEOUT = 10.0  # seconds a reply may take: well above BLOCK_MS
_CONNECT_TIMEOUT = 2.0

REDIS_DOWN: tuple[type[BaseException], ...] = (
    coredis.exceptions.ConnectionError, TimeoutError,
    coredis.exceptions.BusyLoadingError, OSError,
)
"""What a lost, refused or loading Redis raises: wait and reconnect."""

Client = coredis.Redis[bytes]


class SlotSafePool(coredis.ConnectionPool):  # type: ignore[type-arg]
    """A pool that gets its slot back when a connection dies (see the module docstring)."""

    def release(self, connection: Any) -> None:
        super().release(connection)
        if not connection.usable:
            self._available_connections.append_nowait(None)


def open_client(address: BrokerAddress, *, max_connections: int = 4) -> Client:
    """A client (use it as ``async with``); it connects at its first command."""
    return coredis.Redis(
        host=address.host, port=address.port, db=address.db,
        username=address.username, password=address.password,
        max_connections=max_connections, pool_timeout=_STREAM_TIMEOUT,
        stream_timeout=_STREAM_TIMEOUT, connect_timeout=_CONNECT_TIMEOUT,
        connection_pool_cls=SlotSafePool, retry_policy=NoRetryPolicy(),
        verify_version=False,
    )


_PASSING_REFUSALS = ("OOM", "LOADING", "READONLY", "MASTERDOWN", "BUSY", "TRYAGAIN")
"""Error replies of a Redis that cannot serve now (full, loading, a replica after a
failover): waited out like a lost connection."""


def is_down(exc: BaseException) -> bool:
    """Whether ``exc`` (or every leaf of a group) says Redis cannot serve us now."""
    if isinstance(exc, BaseExceptionGroup):
        return all(is_down(e) for e in exc.exceptions)
    if isinstance(exc, coredis.exceptions.ResponseError):
        return str(exc).startswith(_PASSING_REFUSALS)
    return isinstance(exc, REDIS_DOWN)


async def reconnecting(
    address: BrokerAddress,
    body: Callable[[Client], Awaitable[None]],
    *,
    name: str,
    on_down: Callable[[BaseException], None],
    on_up: Callable[[], None],
    max_connections: int = 4,
) -> None:
    """Run ``body(client)`` until it returns; reconnect with backoff when Redis fails.

    ``on_up`` is called once a new client answered a PING, before ``body``
    runs; ``on_down`` at each failure. The backoff starts over when the body
    ran for a while. Errors other than a lost Redis propagate.
    """
    backoff = Backoff()
    while True:
        started = trio.current_time()
        try:
            async with open_client(address, max_connections=max_connections) as client:
                await client.ping()
                on_up()
                await body(client)
                return
        except BaseException as exc:  # re-raised unless Redis is down
            if not is_down(exc):
                raise
            failure = _leaf(exc)
        if trio.current_time() - started > 5.0:
            backoff.reset()  # it ran a while: this is a new outage
        delay = backoff.next()
        log.warning("%s: Redis at %s unreachable (%s); retrying in %.2f s",
                    name, address, failure, delay)
        on_down(failure)
        await trio.sleep(delay)


class RedisTasks:
    """Tasks that each run on their own reconnecting client, and which of them are down.

    Both roles run a few such tasks; their health is the same question: which
    task cannot reach Redis now, and why.
    """

    def __init__(self, address: BrokerAddress, role: str) -> None:
        self._address = address
        self._role = role
        self._errors: dict[str, str] = {}  # task -> why Redis is unreachable for it

    @property
    def problem(self) -> str | None:
        """``Redis unreachable: task: why; ...``, or None while every task is connected."""
        if not self._errors:
            return None
        return "Redis unreachable: " + "; ".join(
            f"{task}: {error}" for task, error in sorted(self._errors.items()))

    def is_down(self, task: str) -> bool:
        return task in self._errors

    def start(
        self, nursery: trio.Nursery,
        tasks: Iterable[tuple[str, Callable[[Client], Awaitable[None]]]],
    ) -> None:
        """Start each ``(name, body)`` under :func:`reconnecting` in ``nursery``."""
        for name, body in tasks:
            nursery.start_soon(partial(
                reconnecting, self._address, body, name=f"{self._role} {name}",
                on_down=partial(self._down, name), on_up=partial(self._up, name),
                max_connections=2))

    def _down(self, task: str, error: BaseException) -> None:
        self._errors[task] = str(error) or type(error).__name__

    def _up(self, task: str) -> None:
        self._errors.pop(task, None)


def _leaf(exc: BaseException) -> BaseException:
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return exc
