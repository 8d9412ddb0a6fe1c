"""The engine process's side of Redis: command intake, publishing, bootstrap, liveness.

Rules of this module (the formats are ``_codec.py``'s):

* **Intake.** One task XREADs the commands stream after the last command
  entry the journal holds (the origin of its newest record carrying one,
  found at start), and queues each command for the engine task with that
  origin. The engine task journals before it applies, so after a SIGKILL
  every command either is in the journal (and is never read again: intake
  resumes after it) or is still in the stream (and is read again): none is
  applied twice, none is lost. The commands stream is trimmed (MINID) only
  up to the newest journaled entry. Intake pauses while the engine's queue
  is full or more than ``max_unpublished`` records wait to be published.
* **Publishing.** The engine task hands each durable batch's records to
  :meth:`EngineBroker.durable` (never blocks: a bounded channel; on
  overflow the batch is dropped and the publisher reads the journal
  instead). One task XADDs each batch as one entry ``<last seq>-0``. On
  every (re)connection it first publishes what the journal holds past the
  stream's top entry, so what Redis missed while down (or lost in a restart)
  comes back from the journal, and an ``equal or smaller`` refusal means
  "already there". Records reach Redis in ``seq`` order, each at most once.
* **Epoch.** The key ``epoch`` names the numbering the events stream
  belongs to. An engine of another epoch (a new data directory) deletes the
  events stream and the bootstrap before it publishes, and gateways of the
  old epoch stop (``ReplicaLost``). When the journal names no command entry
  (a new journal, or one whose records up to a snapshot were deleted with
  their segments), intake starts after the commands already queued: none of
  them was acknowledged, and one of them might be journaled already.
* **Bootstrap.** The key ``bootstrap`` holds engine and stream state at one
  seq (:class:`~gateway._broker._codec.Bootstrap`): the state at start, then
  each journal snapshot's. It is written at every (re)connection and after
  every snapshot. The events stream is trimmed (MINID ~) to keep
  ``events_retention`` commands, and never an entry past the bootstrap's seq,
  so a replica can always start from the bootstrap and catch up.
* **Liveness.** The key ``engine`` is set with a time to live
  (``liveness_ttl``) every third of it while intake runs and the journal
  works; gateways refuse order entry while it is missing. A graceful stop
  deletes it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import trio
from coredis.exceptions import ResponseError
from coredis.tokens import PureToken

from engine import Command, Record
from gateway._broker._codec import (
    Bootstrap,
    BrokerAddress,
    Keys,
    chunks,
    decode_command,
    encode_bootstrap,
    encode_records,
    entry_id_key,
    entry_seq,
    make_origin,
    origin_entry_id,
    text,
)
from gateway._broker._journal_tail import records_after
from gateway._broker._redis import BLOCK_MS, REDIS_DOWN, Client, RedisTasks, open_client

log = logging.getLogger("trade_engine.broker")

_READ_COUNT = 1000  # command entries per XREAD
_ENTRY_RECORDS = 1000  # records per events entry when republishing from the journal
_PIPELINE_ENTRIES = 16  # entries per pipeline when republishing
_TRIM_EVERY = 1.0  # seconds between trims of the commands stream (one XTRIM each)
_CHANNEL_BATCHES = 4096  # durable batches waiting for the publisher (then: read the journal)

class Intake(Protocol):
    """What intake needs of the engine runtime (``gateway._runtime.EngineRuntime``)."""

    @property
    def failure(self) -> OSError | None: ...

    @property
    def queue_free(self) -> int: ...

    def submit_nowait(self, command: Command, done: Callable[..., None], *,
                      origin: str | None = None) -> None: ...


def _ignore(_events: object, _error: Exception | None) -> None:
    """Intake needs no answer: the published record is the answer, for the gateway."""


class EngineBroker:
    """Redis Streams for the engine role. Create it, wire :meth:`durable` and
    :meth:`snapshot` into the engine runtime, and run :meth:`run` in the server's nursery.

    Args:
        address: where Redis is.
        keys: the deployment's keys.
        runtime: the engine runtime commands are queued on.
        journal_directory: the journal, read to republish and to resume intake.
        bootstrap: the engine and stream state at start (after recovery).
        resume_after: the newest command entry id the journal holds ("0-0": none).
        liveness_ttl: seconds the liveness key lives without a refresh.
        events_retention: commands kept in the events stream behind its top.
        max_unpublished: records waiting for Redis past which intake pauses.
        stamp: put this machine's monotonic clock (ns) on every events entry, as
            ``m`` (``websocket.publish_timestamps``: gateways then measure the hop).
    """

    def __init__(
        self,
        address: BrokerAddress,
        keys: Keys,
        *,
        runtime: Intake,
        journal_directory: Path,
        bootstrap: Bootstrap,
        resume_after: str,
        liveness_ttl: float = 3.0,
        events_retention: int = 100_000,
        max_unpublished: int = 50_000,
        stamp: bool = False,
    ) -> None:
        self._address = address
        self._keys = keys
        self._runtime = runtime
        self._directory = journal_directory
        self._bootstrap = bootstrap
        self._bootstrap_written = -1  # the seq of the bootstrap Redis holds (as far as we know)
        self._resume_after = resume_after
        self._journaled_entry = resume_after  # the newest command entry made durable
        self._ttl_ms = max(int(liveness_ttl * 1000), 300)
        self._retention = events_retention
        self._max_unpublished = max_unpublished
        self._stamp = stamp
        self._durable_seq = bootstrap.seq  # the newest durable record
        self._published_seq = 0  # the stream's top, as the publisher last saw it
        self._dropped = False  # a batch overflowed the channel: read the journal
        self._send, self._receive = trio.open_memory_channel[list[Record]](_CHANNEL_BATCHES)
        self._room = trio.Event()  # intake may go on
        self._tasks = RedisTasks(address, "engine")
        self.identity = f"{os.getpid()}@{os.uname().nodename}"

    # ------------------------------------------------ engine task side (sync)

    def durable(self, records: list[Record]) -> None:
        """A batch is in the journal: publish it (called in the engine task, never blocks)."""
        if not records:
            return
        self._durable_seq = records[-1].seq
        for record in reversed(records):
            if record.origin is not None:
                self._journaled_entry = origin_entry_id(record.origin)
                break
        try:
            self._send.send_nowait(records)
        except trio.WouldBlock:
            self._dropped = True  # the publisher reads these from the journal

    def snapshot(self, bootstrap: Bootstrap) -> None:
        """A journal snapshot was written: gateways may start from it from now on."""
        self._bootstrap = bootstrap  # the publisher writes it within a second

    # ----------------------------------------------------------- health

    @property
    def problem(self) -> str | None:
        """Why the engine cannot serve gateways now, or None."""
        return self._tasks.problem

    # ------------------------------------------------------------- tasks

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Intake, publisher and liveness, each reconnecting on its own, until cancelled."""
        async with trio.open_nursery() as nursery:
            self._tasks.start(nursery, (("intake", self._intake), ("publisher", self._publish),
                                        ("liveness", self._liveness)))
            task_status.started()

    async def _intake(self, client: Client) -> None:
        runtime, stream = self._runtime, self._keys.commands
        if self._resume_after == "0-0":
            # The journal names no command entry: it is new (what the stream holds was
            # sent to an engine of another data directory), or a snapshot took the
            # segments that did. Either way nothing queued now was acknowledged, and
            # reading it could apply a journaled command twice: start after it.
            newest = await client.xrevrange(stream, count=1)
            if newest:
                self._resume_after = text(newest[0].identifier)
                log.warning("intake starts after command entry %s: the journal names no "
                            "command entry, so the commands queued before it were never "
                            "acknowledged", self._resume_after)
        last = self._resume_after
        trimmed = last
        next_trim = 0.0
        while True:
            while runtime.failure is not None:  # order entry stopped for good: read nothing
                await trio.sleep(1)
            await self._wait_for_room()
            found = await client.xread({stream: last}, count=_READ_COUNT, block=BLOCK_MS)
            for entry in (found or {}).get(stream.encode(), ()):
                entry_id = text(entry.identifier)
                try:
                    command, tag = decode_command(entry.field_values)
                except ValueError as exc:
                    log.error("command entry %s skipped: %s", entry_id, exc)
                    last = entry_id
                    continue
                origin = make_origin(entry_id, tag)
                while True:
                    if runtime.failure is not None:
                        break
                    if runtime.queue_free > 0:
                        runtime.submit_nowait(command, _ignore, origin=origin)
                        break
                    await trio.sleep(0.001)
                if runtime.failure is not None:
                    break  # not queued: it stays in the stream for the next start
                last = entry_id
            journaled = self._journaled_entry
            if entry_id_key(journaled) > entry_id_key(trimmed) \
                    and trio.current_time() >= next_trim:
                next_trim = trio.current_time() + _TRIM_EVERY
                # What the journal holds is never read again: drop it from Redis.
                await client.xtrim(stream, PureToken.MINID, journaled,  # type: ignore[arg-type]
                                   PureToken.APPROXIMATELY)
                trimmed = journaled

    async def _wait_for_room(self) -> None:
        while self._durable_seq - self._published_seq > self._max_unpublished:
            self._room = trio.Event()
            with trio.move_on_after(1):
                await self._room.wait()

    async def _publish(self, client: Client) -> None:
        top = await self._resync(client)
        while True:
            if self._bootstrap_written != self._bootstrap.seq:
                await self._write_bootstrap(client)
                await self._trim(client, top)
            batch: list[Record] | None = None
            with trio.move_on_after(1):
                batch = await self._receive.receive()
            if self._dropped:
                self._dropped = False
                top = await self._republish(client, top)
                continue
            if batch is None:  # idle: did Redis lose everything meanwhile (a restart)?
                if top and not await client.exists([self._keys.events]):
                    top = await self._resync(client)
                continue
            # Every batch queued meanwhile goes out in the same entry: one XADD per pass.
            while len(batch) < _ENTRY_RECORDS:
                try:
                    batch = batch + self._receive.receive_nowait()
                except trio.WouldBlock:
                    break
            fresh = [r for r in batch if r.seq > top]
            if not fresh:
                continue
            if fresh[0].seq != top + 1 or not await self._add(client, fresh):
                # Records missing in between (a dropped batch), or the stream is gone
                # (Redis restarted empty): the journal has everything.
                top = await self._resync(client)
                continue
            top = fresh[-1].seq
            self._published(top)
            if top % 1000 < len(fresh):
                await self._trim(client, top)

    async def _resync(self, client: Client) -> int:
        """Bootstrap key and stream as the journal says: after a (re)connection or a loss."""
        keys, epoch = self._keys, self._bootstrap.epoch
        held = await client.get(keys.epoch)
        if held is not None and text(held) != epoch:
            # Another numbering's records (a new data directory, a lost stream state):
            # they would block ours (ids by seq), and gateways must start over.
            log.warning("Redis holds the events of epoch %s, this engine numbers in epoch %s: "
                        "the events stream starts over; gateways restart", text(held), epoch)
            await client.delete([keys.events, keys.bootstrap])
        await client.set(keys.epoch, epoch.encode())
        top = await self._stream_top(client)
        await self._write_bootstrap(client)
        return await self._republish(client, top)

    def _published(self, top: int) -> None:
        self._published_seq = top
        self._room.set()

    async def _stream_top(self, client: Client) -> int:
        newest = await client.xrevrange(self._keys.events, count=1)
        return entry_seq(newest[0].identifier) if newest else 0

    async def _add(self, client: Client, records: list[Record]) -> bool:
        """XADD one entry; False when the stream does not exist (Redis lost it).

        Never creates the stream: only :meth:`_republish` does, from the
        journal, so a stream Redis lost cannot come back starting past seq 1
        with the records before it missing.
        """
        try:
            added = await client.xadd(self._keys.events, self._fields(records),
                                      identifier=f"{records[-1].seq}-0", nomkstream=True)
        except ResponseError as exc:
            if "equal or smaller" not in str(exc):
                raise
            return True  # already there: a republish held it too
        return added is not None

    def _fields(self, records: list[Record]) -> dict[str, bytes]:
        fields = {"r": encode_records(records)}
        if self._stamp:
            fields["m"] = str(time.monotonic_ns()).encode()
        return fields

    async def _republish(self, client: Client, top: int) -> int:
        """Publish what the journal holds past ``top``; returns the new top."""
        records = await trio.to_thread.run_sync(records_after, self._directory, top)
        if not records:
            self._published(top)
            return top
        if records[0].seq != top + 1 and top:
            log.warning(
                "the events stream ends at seq %d but the journal starts at %d: gateways "
                "behind %d start again from the bootstrap snapshot", top, records[0].seq,
                records[0].seq - 1)
        pending = list(chunks(records, _ENTRY_RECORDS))
        for start in range(0, len(pending), _PIPELINE_ENTRIES):
            async with client.pipeline(transaction=False, raise_on_error=False) as pipe:
                for chunk in pending[start:start + _PIPELINE_ENTRIES]:
                    pipe.xadd(self._keys.events, self._fields(chunk),
                              identifier=f"{chunk[-1].seq}-0")
            for result in pipe.results or ():
                if isinstance(result, ResponseError) and "equal or smaller" not in str(result):
                    raise result
                if isinstance(result, BaseException):
                    continue
        top = max(top, records[-1].seq)
        log.info("published %d journal records to Redis (stream top now seq %d)",
                 len(records), top)
        self._published(top)
        return top

    async def _write_bootstrap(self, client: Client) -> None:
        bootstrap = self._bootstrap
        data = await trio.to_thread.run_sync(encode_bootstrap, bootstrap)
        await client.set(self._keys.bootstrap, data)
        self._bootstrap_written = bootstrap.seq
        log.info("bootstrap snapshot at seq %d in Redis (%d bytes)", bootstrap.seq, len(data))

    async def _trim(self, client: Client, top: int) -> None:
        keep_from = min(self._bootstrap_written, top - self._retention) + 1
        if keep_from > 1:
            await client.xtrim(self._keys.events, PureToken.MINID,
                               f"{keep_from}-0",  # type: ignore[arg-type]
                               PureToken.APPROXIMATELY)

    async def _liveness(self, client: Client) -> None:
        key, ttl = self._keys.engine, self._ttl_ms
        try:
            while True:
                if self._runtime.failure is None and not self._tasks.is_down("intake"):
                    await client.set(key, self.identity.encode(), px=ttl)
                else:
                    await client.delete([key])
                await trio.sleep(ttl / 3000)
        finally:
            # A graceful stop: gateways know at once. A new client, because this one's
            # connections are torn down with the cancelled scope around it.
            with trio.move_on_after(0.5, shield=True), contextlib.suppress(*REDIS_DOWN):
                async with open_client(self._address, max_connections=1) as last:
                    await last.delete([key])
