"""A gateway process's side of Redis: a replica that follows the engine, and order entry.

Rules of this module:

* **The replica.** A gateway holds no journal. It starts from the engine's
  bootstrap snapshot (engine state and stream numbering at one seq, and the
  epoch) and applies every published record in ``seq`` order, once each
  (:class:`~gateway._broker._codec.Follower`), through the same pure engine
  and stream numbering as the all-in-one server, handing the numbered
  messages to its hub. So its streams, seqs, checksums and REST reads are
  those of the all-in-one server at the same seq. Only the follower task
  applies records; everyone else only reads the replica. The gateway opens
  its listeners only once the replica has applied everything the events
  stream held when it started, so no client sees a stale replica.
* **Order entry.** :meth:`ReplicaRuntime.submit_nowait` has the surface of
  ``EngineRuntime``'s: it registers the request under a fresh tag, queues it
  for the sender task (one pipeline of XADDs per pass) and returns. The
  request's ``done`` is called by the follower when the replica applies the
  record carrying its tag, i.e. after the engine made it durable, and the
  replica's state is then what that command left, as in all-in-one mode.
* **When the engine is away.** The engine refreshes a liveness key; while
  it is missing (or Redis is unreachable), :meth:`submit_nowait` raises
  :class:`EngineUnavailable` at once (503 / ``engine_unavailable``). A request
  already sent gets :class:`EngineUnavailable` after ``reply_timeout``
  seconds, saying the order may exist. Bounded: at most ``max_waiting``
  requests wait (then :class:`~gateway._runtime.Busy`).
* **A gap.** When the events stream no longer holds the record after the
  replica's (Redis lost it, and the journal had already been snapshotted
  past it), the replica cannot go on: :class:`ReplicaLost` stops the gateway,
  whose clients reconnect to another one and resume.
"""

from __future__ import annotations

import logging
import os
import time
from collections import deque
from typing import Protocol

import trio

from engine import Command, Engine, Event, Record
from gateway._broker._codec import (
    Bootstrap,
    BrokerAddress,
    Follower,
    Gap,
    Keys,
    ReplicaLost,
    Waiting,
    decode_bootstrap,
    decode_records,
    encode_command,
    entry_seq,
    origin_tag,
    text,
)
from gateway._broker._redis import BLOCK_MS, Client, RedisTasks, reconnecting
from gateway._codes import Code
from gateway._runtime import Busy, Done, Unavailable, submit_and_wait
from gateway._stats import Stats
from gateway._streams import StreamState

log = logging.getLogger("trade_engine.broker")

_READ_COUNT = 100  # events entries per XREAD (each up to a batch of records)
_SEND_MOST = 512  # command entries per pipeline
_LAG_SAMPLES = 65_536  # engine-to-replica lags kept for /stats (the newest)


class EngineUnavailable(Unavailable):
    """The engine (or Redis) is unreachable: order entry answers 503 ``engine_unavailable``."""

    code = Code.ENGINE_UNAVAILABLE


class Applier(Protocol):
    """Applies a published record to the replica (engine, stream numbering, hub)."""

    @property
    def engine(self) -> Engine: ...

    @property
    def streams(self) -> StreamState: ...

    def apply(self, record: Record) -> list[Event]: ...

    async def flush(self) -> None:
        """Hand what :meth:`apply` produced since the last flush to the fan-out."""


class ReplicaRuntime:
    """The gateway role's engine runtime: a replica fed from Redis, order entry to Redis.

    Args:
        address, keys: the broker.
        applier: the replica, built from the bootstrap by the caller.
        position: the seq the replica stands at (the bootstrap's).
        epoch: the bootstrap's epoch; when the engine's changes, the replica is lost.
        reply_timeout: seconds a sent request waits for its record.
        max_waiting: requests that may wait at once.
        liveness_poll: seconds between checks of the engine's liveness key.
        stats: where the engine-to-replica lag goes (``/stats`` ``broker``), measured
            on entries the engine stamped (``websocket.publish_timestamps``).
    """

    def __init__(
        self,
        address: BrokerAddress,
        keys: Keys,
        *,
        applier: Applier,
        position: int,
        epoch: str,
        reply_timeout: float = 5.0,
        max_waiting: int = 10_000,
        liveness_poll: float = 0.5,
        stats: Stats | None = None,
    ) -> None:
        self._keys = keys
        self._applier = applier
        self.engine = applier.engine
        self.streams = applier.streams
        self._epoch = epoch
        self._follower = Follower(position)
        self._timeout = reply_timeout
        self._poll = liveness_poll
        self._waiting: Waiting[Done] = Waiting(
            prefix=f"{os.getpid():x}{os.urandom(3).hex()}", limit=max_waiting)
        self._send, self._receive = trio.open_memory_channel[tuple[str, dict[str, bytes]]](
            max_waiting)
        self._engine_alive = False
        self._tasks = RedisTasks(address, "gateway")
        self.lost: ReplicaLost | None = None
        self._stats = stats
        self._lags: deque[int] = deque(maxlen=_LAG_SAMPLES)  # ns, engine XADD -> applied
        self._target: int | None = None  # the stream's top when this gateway started
        self._caught_up = trio.Event()

    # ------------------------------------------------------------ surface

    @property
    def position(self) -> int:
        return self._follower.position

    @property
    def failure(self) -> EngineUnavailable | None:
        """Why order entry is refused now (None: it is open); ``/healthz`` shows it."""
        problem = self._tasks.problem
        if problem is not None:
            return EngineUnavailable(problem)
        if not self._engine_alive:
            return EngineUnavailable(
                "the engine is unreachable (its liveness key in Redis is missing); "
                "nothing was sent: retry when /healthz says ok")
        return None

    def submit_nowait(self, command: Command, done: Done) -> None:
        """Send ``command`` to the engine; ``done`` hears its events once it is durable.

        Raises:
            EngineUnavailable: the engine or Redis is unreachable; nothing was sent.
            Busy: too many requests wait; nothing was sent.
        """
        failure = self.failure
        if failure is not None:
            raise failure
        tag = self._waiting.new_tag()
        try:
            fields = encode_command(command, tag)
        except (ValueError, OverflowError, TypeError) as exc:
            done([], ValueError(f"the command cannot be journaled: {exc}"))
            return
        if not self._waiting.add(tag, done, trio.current_time() + self._timeout):
            raise Busy("too many orders wait for the engine; retry shortly")
        self._send.send_nowait((tag, fields))  # never full: bounded like the waiting

    async def submit(self, command: Command) -> list[Event]:
        """As ``EngineRuntime.submit``."""
        return await submit_and_wait(self.submit_nowait, command)

    # -------------------------------------------------------------- tasks

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Follower, sender, liveness watch and reply deadlines, until cancelled."""
        async with trio.open_nursery() as nursery:
            self._tasks.start(nursery, (("follower", self._follow), ("sender", self._sender),
                                        ("liveness", self._watch_engine)))
            nursery.start_soon(self._expire)
            # Ready only once the replica has applied what the engine had published when
            # this gateway started: before that, its REST reads and seqs would be stale.
            await self._caught_up.wait()
            task_status.started()

    async def _follow(self, client: Client) -> None:
        stream = self._keys.events
        applier = self._applier
        if self._target is None:
            newest = await client.xrevrange(stream, count=1)
            self._target = entry_seq(newest[0].identifier) if newest else 0
        while True:
            if self._follower.position >= self._target:
                self._caught_up.set()
            found = await client.xread({stream: f"{self._follower.position}-0"},
                                       count=_READ_COUNT, block=BLOCK_MS)
            if not found:
                continue
            for entry in found.get(stream.encode(), ()):
                stamped = entry.field_values.get(b"m")
                try:
                    records = self._follower.accept(decode_records(
                        entry.field_values[b"r"]))
                except Gap as gap:
                    self.lost = ReplicaLost(
                        f"{gap}: this gateway cannot catch up (Redis lost records the engine's "
                        "journal no longer holds); restart it: it starts again from the "
                        "engine's bootstrap snapshot")
                    raise self.lost from None
                for record in records:
                    events = applier.apply(record)
                    done = self._waiting.take(origin_tag(record.origin))
                    if done is not None:
                        done(events, None)
                if stamped is not None:
                    self._lags.append(time.monotonic_ns() - int(stamped))
            await applier.flush()

    async def _sender(self, client: Client) -> None:
        stream = self._keys.commands
        while True:
            batch = [await self._receive.receive()]
            while len(batch) < _SEND_MOST:
                try:
                    batch.append(self._receive.receive_nowait())
                except trio.WouldBlock:
                    break
            try:
                async with client.pipeline(transaction=False, raise_on_error=False) as pipe:
                    for _, fields in batch:
                        pipe.xadd(stream, fields)
            except BaseException:
                # Written or not, nobody can tell: these requests hear so now.
                self._give_up([tag for tag, _ in batch],
                              "Redis failed while the order was sent to the engine")
                raise
            refused = [tag for (tag, _), result in zip(batch, pipe.results or (), strict=False)
                       if isinstance(result, BaseException)]
            if refused:
                self._give_up(refused, "Redis refused the order")

    def _give_up(self, tags: list[str], why: str) -> None:
        for tag in tags:
            done = self._waiting.take(tag)
            if done is not None:
                done([], EngineUnavailable(
                    f"{why}; the order may exist: look for its client_order_id in "
                    "GET /api/v1/orders or on the orders stream before sending it again"))

    async def _watch_engine(self, client: Client) -> None:
        key = self._keys.engine
        try:
            while True:
                async with client.pipeline(transaction=False) as pipe:
                    pipe.exists([key])
                    pipe.get(self._keys.epoch)
                found, epoch = pipe.results or (0, None)
                if epoch is not None and text(epoch) != self._epoch:
                    self.lost = ReplicaLost(
                        f"the engine now numbers the streams in epoch {text(epoch)}, this "
                        f"gateway's replica in {self._epoch} (a new data directory, or a lost "
                        "stream state): restart the gateway, it starts from the new epoch")
                    raise self.lost
                alive = bool(found)
                if alive != self._engine_alive:
                    log.warning("the engine is %s", "back" if alive else
                                "unreachable (liveness key missing): order entry refused")
                self._engine_alive = alive
                await trio.sleep(self._poll)
        finally:
            self._engine_alive = False

    async def _expire(self) -> None:
        ticks = 0
        while True:
            await trio.sleep(0.1)
            ticks += 1
            if ticks % 10 == 0 and self._lags and self._stats is not None:
                lags = sorted(self._lags)
                self._stats.broker["lag_ms"] = {
                    "p50": round(lags[len(lags) // 2] / 1e6, 3),
                    "p99": round(lags[min(len(lags) - 1, len(lags) * 99 // 100)] / 1e6, 3),
                    "max": round(lags[-1] / 1e6, 3), "samples": len(lags)}
            for done in self._waiting.expired(trio.current_time()):
                done([], EngineUnavailable(
                    f"the engine did not answer within {self._timeout:g} s (it may be "
                    "restarting); the order may exist: look for its client_order_id in "
                    "GET /api/v1/orders or on the orders stream before sending it again"))


async def fetch_bootstrap(address: BrokerAddress, keys: Keys) -> Bootstrap:
    """The engine's bootstrap snapshot; waits (logging) until Redis and the key are there."""
    result: list[Bootstrap] = []
    said = False

    async def body(client: Client) -> None:
        nonlocal said
        while True:
            data = await client.get(keys.bootstrap)
            if data is not None:
                result.append(decode_bootstrap(data))
                return
            if not said:
                log.warning("waiting for the engine's bootstrap snapshot in Redis "
                            "(%s%s); start the engine role", address, keys.bootstrap)
                said = True
            await trio.sleep(0.2)

    await reconnecting(address, body, name="gateway bootstrap", on_down=lambda _: None,
                       on_up=lambda: None)
    return result[0]
