"""The engine task: the one owner of the engine, fed commands through a memory channel.

Rules of this module:

* Only the engine task calls :meth:`engine.Engine.apply`. It takes every
  command waiting in its channel as one batch, stamps each with the next
  sequence number and the wall-clock time, appends the batch to the journal
  (write-ahead: one write and, per the fsync policy, one fsync for the whole
  batch), and only then applies the commands, telling each submitter right
  after its own command (so that an answer shows the order as that command
  left it), and hands the batch's events to the fan-out in one go. Nothing
  reaches a client or a stream before it is durable, and the engine never
  holds a command the journal lacks.
* Other tasks read the engine (queries are synchronous and never mutate).
* The command channel is bounded (``engine.command_queue_size``). When it is
  full, :meth:`EngineRuntime.submit` raises :class:`Busy` at once.
* When a journal write or fsync fails, the runtime stops accepting commands
  for good (:class:`Unavailable`, REST 503) and logs it loudly; queries and
  streams keep working. Only a restart, which recovers from the journal,
  resumes trading.
* Right after applying each command, the engine task numbers its events
  per stream channel (``gateway/_streams.py``), so the numbering is exact at
  every seq, and hands each batch's numbered items to the hub in one go.
* Every ``snapshot_every`` commands the engine task exports the engine's
  state and the stream state (immutable copies at one seq) and hands them to the snapshot task,
  which hashes, encodes and writes it in a thread (a channel of one: when the
  previous snapshot is still waiting, this one is skipped and retried after
  the next batch). Only the export stops the engine; the rest, most of the
  cost, does not.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Protocol

import msgspec
import trio

from engine import (
    Command,
    Engine,
    EngineState,
    Event,
    OrderRejected,
    PlaceOrder,
    Record,
    encode_exported,
    encode_record,
)
from gateway._codes import Code
from gateway._hub import Hub
from gateway._journal import Fsync, JournalWriter, write_snapshot
from gateway._stats import Stats
from gateway._stream_files import drop_older_streams, write_streams
from gateway._streams import Numbered, StreamExport, StreamState, encode_export

log = logging.getLogger("trade_engine.gateway")

_MAX_BATCH = 1024


class Busy(Exception):
    """The engine's command queue is full; try again shortly."""


class Unavailable(Exception):
    """The journal failed: no command can be made durable, so none is accepted."""

    code: Code = Code.JOURNAL_UNAVAILABLE
    """The error code clients get (REST 503, WebSocket error)."""


_Snapshot = tuple[int, EngineState, StreamExport]
"""What the engine task hands the snapshot task: the seq and both states at it."""

Done = Callable[[list[Event], Exception | None], None]
"""Told a command's events (or the error that kept it out of the engine) once it is durable.

Called in the engine task right after the command was applied, before the next
command of its batch: the engine's state is then exactly what this command left.
It must not block, and should be quick."""


async def submit_and_wait(
    submit_nowait: Callable[[Command, Done], None], command: Command
) -> list[Event]:
    """``submit_nowait`` as a coroutine: the command's events once it is durable, or its error."""
    finished = trio.Event()
    outcome: list[Event] = []
    failure: list[Exception] = []

    def done(events: list[Event], error: Exception | None) -> None:
        outcome.extend(events)
        if error is not None:
            failure.append(error)
        finished.set()

    submit_nowait(command, done)
    await finished.wait()
    if failure:
        raise failure[0]
    return outcome


class Runtime(Protocol):
    """What REST and WebSocket order entry need of an engine runtime.

    :class:`EngineRuntime` owns the engine; a scale-out gateway's
    ``gateway._broker._gateway_role.ReplicaRuntime`` follows one through Redis.
    """

    @property
    def engine(self) -> Engine:
        """The engine, for queries only."""

    @property
    def streams(self) -> StreamState:
        """The stream numbering (REST reads its depth books), for reading only."""

    @property
    def failure(self) -> Exception | None:
        """Why order entry is refused now, or None (``/healthz`` shows it)."""

    def submit_nowait(self, command: Command, done: Done) -> None: ...

    async def submit(self, command: Command) -> list[Event]: ...


class _Pending:
    __slots__ = ("command", "done", "error", "events", "origin")

    def __init__(self, command: Command, done: Done, origin: str | None = None) -> None:
        self.command = command
        self.done = done
        self.origin = origin
        self.events: list[Event] = []
        self.error: Exception | None = None

    def finish(self) -> None:
        try:
            self.done(self.events, self.error)
        except Exception:  # a submitter's bug must not stop the engine for everyone
            log.exception("a command's completion callback failed")


class EngineRuntime:
    """Owns an :class:`engine.Engine` and serialises every command through one task.

    Args:
        engine: the engine to own; nobody else may call its ``apply``.
        streams: the stream numbering at the engine's seq (``gateway/_streams.py``);
            owned by the engine task from now on.
        hub: where the numbered items go after each batch.
        queue_size: bound of the command channel.
        stats: counters to bump.
        journal: the write-ahead journal, or None to run in memory only.
        snapshot_every: commands between snapshots (0: never).
        clock: wall-clock nanoseconds for command timestamps.
    """

    def __init__(
        self,
        engine: Engine,
        streams: StreamState,
        hub: Hub,
        *,
        queue_size: int,
        stats: Stats,
        journal: JournalWriter | None = None,
        snapshot_every: int = 0,
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        self.engine = engine
        self.streams = streams
        """Read-only outside the engine task (REST reads the depth books)."""
        self._hub = hub
        self._stats = stats
        self._journal = journal
        self._snapshot_every = snapshot_every if journal is not None else 0
        self._last_snapshot = engine.last_seq
        self._clock = clock
        self._failure: OSError | None = None
        self._send, self._receive = trio.open_memory_channel[_Pending](queue_size)
        self.on_durable: Callable[[list[Record]], None] | None = None
        """Told each batch's records once they are durable (the engine role publishes them)."""
        self.on_snapshot: Callable[[int, bytes, bytes], None] | None = None
        """Told each journal snapshot's seq, engine snapshot and stream state (both as
        written, encoded) once they are written (the engine role publishes them)."""

    @property
    def queue_free(self) -> int:
        """Room left in the command channel."""
        statistics = self._send.statistics()
        return int(statistics.max_buffer_size) - statistics.current_buffer_used

    @property
    def failure(self) -> OSError | None:
        """The journal error that stopped order entry, if any."""
        return self._failure

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The engine task and the snapshot task. Runs until cancelled."""
        send_snapshot, receive_snapshot = trio.open_memory_channel[_Snapshot](1)
        try:
            async with trio.open_nursery() as nursery:
                if self._journal is not None:
                    nursery.start_soon(self._write_snapshots, receive_snapshot)
                task_status.started()
                await self._apply_commands(send_snapshot)
        finally:
            if self._journal is not None:
                self._journal.close()

    async def _apply_commands(
        self, snapshots: trio.MemorySendChannel[_Snapshot]
    ) -> None:
        engine, journal, stats = self.engine, self._journal, self._stats
        number = self.streams.number
        most = 1 if journal is not None and journal.fsync is Fsync.ALWAYS else _MAX_BATCH
        async with self._receive:
            async for first in self._receive:
                batch = [first]
                while len(batch) < most:
                    try:
                        batch.append(self._receive.receive_nowait())
                    except trio.WouldBlock:
                        break
                if self._failure is not None:
                    self._refuse(batch)
                    continue
                stamped, batch, records = self._stamp(batch)
                if not stamped:
                    continue
                if journal is not None:
                    data = b"".join(records)
                    try:
                        await trio.to_thread.run_sync(
                            journal.append_blocking, data, stamped[-1][0] + 1)
                    except OSError as exc:
                        self._failure = exc
                        log.critical("journal write failed, order entry stopped: %s", exc)
                        self._refuse(batch)
                        continue
                numbered = Numbered()
                for (seq, ts, command), pending in zip(stamped, batch, strict=True):
                    events = engine.apply(command, seq=seq, ts=ts)
                    stats.commands += 1
                    if len(events) == 1 and type(events[0]) is OrderRejected:
                        stats.commands_rejected += 1
                    number(events, numbered)
                    pending.events = events
                    # Told now, before the next command of the batch: a reply then shows
                    # the order exactly as its own command left it.
                    pending.finish()
                if self.on_durable is not None:
                    self.on_durable([Record(seq, ts, command, pending.origin) for
                                     (seq, ts, command), pending in zip(stamped, batch,
                                                                        strict=True)])
                # One hand-over per batch, not per command: under load that is one
                # task switch for hundreds of commands.
                await self._hub.publish(numbered)
                if self._snapshot_every and (
                    engine.last_seq - self._last_snapshot >= self._snapshot_every
                ) and not snapshots.statistics().current_buffer_used:
                    # Only the export runs here: hashing and encoding, most of the
                    # cost (a 100,000-order history took over a second), happen in the
                    # snapshot task's thread while the engine goes on.
                    seq = engine.last_seq
                    snapshots.send_nowait(
                        (seq, engine.export_state(), self.streams.export(seq)))
                    self._last_snapshot = engine.last_seq

    def _stamp(
        self, batch: list[_Pending]
    ) -> tuple[list[tuple[int, int, Command]], list[_Pending], list[bytes]]:
        """Number and encode each command; refuse (alone) any that cannot be journaled.

        Returns the stamped commands, their submitters and their journal records.
        """
        stamped: list[tuple[int, int, Command]] = []
        kept: list[_Pending] = []
        records: list[bytes] = []
        seq = self.engine.last_seq
        for pending in batch:
            command = pending.command
            if type(command) is PlaceOrder and command.order_id == 0:
                # The gateway names orders: an order's id is its command's seq.
                command = msgspec.structs.replace(command, order_id=seq + 1)
            ts = self._clock()
            try:
                record = encode_record(seq + 1, ts, command, pending.origin)
            except (msgspec.EncodeError, OverflowError, TypeError) as exc:
                pending.error = ValueError(f"the command cannot be journaled: {exc}")
                pending.finish()
                continue
            seq += 1
            stamped.append((seq, ts, command))
            kept.append(pending)
            records.append(record)
        return stamped, kept, records

    def _refuse(self, batch: list[_Pending]) -> None:
        for pending in batch:
            pending.error = Unavailable(f"the journal failed ({self._failure}); "
                                        "order entry is stopped until a restart")
            pending.finish()

    async def _write_snapshots(
        self, receive: trio.MemoryReceiveChannel[_Snapshot]
    ) -> None:
        assert self._journal is not None
        directory = self._journal.directory

        def encode_and_write(
            seq: int, state: EngineState, streams: StreamExport
        ) -> tuple[bytes, bytes]:
            data = encode_exported(state)
            streams_data = encode_export(streams)
            write_streams(directory, streams_data, seq)  # first: see _stream_files
            write_snapshot(directory, data, seq)
            drop_older_streams(directory, seq)
            return data, streams_data

        async for seq, state, streams in receive:
            try:
                data, streams_data = await trio.to_thread.run_sync(
                    encode_and_write, seq, state, streams)
            except OSError as exc:  # the journal still holds everything: log and go on
                log.error("snapshot at seq %d failed: %s", seq, exc)
            else:
                log.info("snapshot written at seq %d (%d bytes)", seq, len(data))
                if self.on_snapshot is not None:
                    self.on_snapshot(seq, data, streams_data)

    async def submit(self, command: Command) -> list[Event]:
        """Have the engine apply ``command`` once it is durable; return its events.

        A :class:`engine.PlaceOrder` with ``order_id=0`` gets the command's
        sequence number as its id.

        Raises:
            Busy: the command queue is full; nothing was applied.
            Unavailable: the journal failed; nothing was applied.
            ValueError: the command holds values no journal record can carry
                (an integer past 64 bits, a non-string id); nothing was applied.
        """
        return await submit_and_wait(self.submit_nowait, command)

    def submit_nowait(self, command: Command, done: Done, *, origin: str | None = None) -> None:
        """Queue ``command`` for the engine; ``done`` is called once it is durable and applied.

        ``origin`` is journaled with the command (the broker's intake names
        where a command came from: ``gateway/_broker``).

        Commands queued by one task are applied, and their ``done`` called, in
        the order they were queued: a pipelining client gets its replies in order.

        Raises:
            Busy: the command queue is full; nothing was queued.
            Unavailable: the journal failed; nothing was queued.
        """
        if self._failure is not None:
            raise Unavailable(f"the journal failed ({self._failure}); "
                              "order entry is stopped until a restart")
        try:
            self._send.send_nowait(_Pending(command, done, origin))
        except trio.WouldBlock:
            self._stats.busy_rejections += 1
            raise Busy("the engine is busy; retry shortly") from None
