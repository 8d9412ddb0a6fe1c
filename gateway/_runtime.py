"""The engine task: the one owner of the engine, fed commands through a memory channel.

Rules of this module:

* Only the engine task calls :meth:`engine.Engine.apply`. It stamps each
  command with the next sequence number and the wall-clock time, applies it,
  hands the events to the fan-out, and only then answers the submitter, so a
  client never sees its REST answer before the stream could have it.
* Other tasks read the engine (queries are synchronous and never mutate).
* The command channel is bounded (``engine.command_queue_size``). When it is
  full, :meth:`EngineRuntime.submit` raises :class:`Busy` at once instead of
  queueing without limit; REST answers 503.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import msgspec
import trio

from engine import Command, Engine, Event, OrderRejected, PlaceOrder
from gateway._hub import Hub
from gateway._stats import Stats


class Busy(Exception):
    """The engine's command queue is full; try again shortly."""


class _Pending:
    __slots__ = ("command", "done", "events")

    def __init__(self, command: Command) -> None:
        self.command = command
        self.done = trio.Event()
        self.events: list[Event] = []


class EngineRuntime:
    """Owns an :class:`engine.Engine` and serialises every command through one task.

    Args:
        engine: the engine to own; nobody else may call its ``apply``.
        hub: where events go after each command.
        queue_size: bound of the command channel.
        stats: counters to bump.
        clock: wall-clock nanoseconds for command timestamps.
    """

    def __init__(
        self,
        engine: Engine,
        hub: Hub,
        *,
        queue_size: int,
        stats: Stats,
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        self.engine = engine
        self._hub = hub
        self._stats = stats
        self._clock = clock
        self._send, self._receive = trio.open_memory_channel[_Pending](queue_size)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The engine task. Runs until cancelled."""
        engine, hub, stats = self.engine, self._hub, self._stats
        task_status.started()
        async with self._receive:
            async for pending in self._receive:
                seq = engine.last_seq + 1
                command = pending.command
                if type(command) is PlaceOrder and command.order_id == 0:
                    # The gateway names orders: an order's id is its command's seq.
                    command = msgspec.structs.replace(command, order_id=seq)
                events = engine.apply(command, seq=seq, ts=self._clock())
                stats.commands += 1
                if len(events) == 1 and type(events[0]) is OrderRejected:
                    stats.commands_rejected += 1
                await hub.publish(events)
                pending.events = events
                pending.done.set()

    async def submit(self, command: Command) -> list[Event]:
        """Have the engine apply ``command``; return its events.

        A :class:`engine.PlaceOrder` with ``order_id=0`` gets the command's
        sequence number as its id.

        Raises:
            Busy: the command queue is full; nothing was applied.
        """
        pending = _Pending(command)
        try:
            self._send.send_nowait(pending)
        except trio.WouldBlock:
            self._stats.busy_rejections += 1
            raise Busy("the engine is busy; retry shortly") from None
        await pending.done.wait()
        return pending.events
