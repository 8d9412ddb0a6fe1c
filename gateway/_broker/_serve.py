"""Wiring of the two scale-out roles, on top of ``gateway._server``'s listeners.

Rules of this module:

* Role ``engine`` is the all-in-one server (lock, recovery, journal, engine
  task, and its own REST and WebSocket listeners) plus an
  :class:`~gateway._broker._engine_role.EngineBroker`: the engine runtime
  hands it every durable batch and every journal snapshot. Its bootstrap at
  start is exported before the engine task runs, so it is exactly the
  recovered state.
* Role ``gateway`` has no data directory of its own for the journal (no lock,
  no recovery): it waits for the engine's bootstrap snapshot, decodes it (the
  snapshot's state hash is checked), and runs a
  :class:`~gateway._broker._gateway_role.ReplicaRuntime` in place of the
  engine task. Its JWT secret comes from ``auth`` or the data directory, as
  for every role: all processes of one deployment must share it.
"""

from __future__ import annotations

import logging

import trio

from engine import Engine, Event, Record, decode_snapshot, encode_exported
from gateway._broker._codec import Bootstrap, Keys, parse_broker_url
from gateway._broker._engine_role import EngineBroker, last_origin_entry
from gateway._broker._gateway_role import ReplicaRuntime, fetch_bootstrap
from gateway._config import Config
from gateway._hub import Hub
from gateway._runtime import EngineRuntime
from gateway._server import Gateway, make_hub, run_listeners
from gateway._stats import Stats

log = logging.getLogger("trade_engine.broker")

EPOCH_PLACEHOLDER = "0" * 16


async def engine_broker(config: Config, runtime: EngineRuntime) -> EngineBroker:
    """The engine role's broker, wired into ``runtime`` (call before the engine task runs)."""
    assert config.broker.url is not None  # Config checks it for this role
    address = parse_broker_url(config.broker.url)
    directory = config.journal_directory
    engine = runtime.engine
    state = engine.export_state()  # the engine task does not run yet: this is one seq
    data = await trio.to_thread.run_sync(encode_exported, state)
    epoch = EPOCH_PLACEHOLDER
    resume_after = await trio.to_thread.run_sync(last_origin_entry, directory)
    broker = EngineBroker(
        address, Keys(config.broker.key_prefix), runtime=runtime,
        journal_directory=directory,
        bootstrap=Bootstrap(seq=engine.last_seq, epoch=epoch, engine=data),
        resume_after=resume_after, liveness_ttl=config.broker.liveness_ttl,
        events_retention=config.broker.events_retention,
    )
    runtime.on_durable = broker.durable

    def snapshot(seq: int, data: bytes) -> None:
        broker.snapshot(Bootstrap(seq=seq, epoch=epoch, engine=data))

    runtime.on_snapshot = snapshot
    log.info("engine role on %s: intake resumes after command entry %s, bootstrap at seq %d",
             address, resume_after, engine.last_seq)
    return broker


class _Replica:
    """The gateway's copy of the engine: records in, events to the hub."""

    def __init__(self, engine: Engine, hub: Hub, stats: Stats) -> None:
        self.engine = engine
        self._hub = hub
        self._stats = stats
        self._events: list[Event] = []

    def apply(self, record: Record) -> list[Event]:
        events = self.engine.apply(record.command, seq=record.seq, ts=record.ts)
        self._stats.commands += 1
        self._events += events
        return events

    async def flush(self) -> None:
        if self._events:
            events, self._events = self._events, []
            await self._hub.publish(events)


async def serve_gateway(config: Config, task_status: trio.TaskStatus[Gateway]) -> None:
    """Run a scale-out gateway until cancelled or shut down (see ``gateway.serve``)."""
    assert config.broker.url is not None  # Config checks it for this role
    address = parse_broker_url(config.broker.url)
    keys = Keys(config.broker.key_prefix)
    bootstrap = await fetch_bootstrap(address, keys)
    engine = await trio.to_thread.run_sync(decode_snapshot, bootstrap.engine)
    log.info("gateway role on %s: replica bootstrapped at seq %d (epoch %s)",
             address, bootstrap.seq, bootstrap.epoch)
    stats = Stats()
    hub = make_hub(config, engine, stats)
    runtime = ReplicaRuntime(
        address, keys, applier=_Replica(engine, hub, stats), position=bootstrap.seq,
        reply_timeout=config.broker.reply_timeout,
        max_waiting=config.engine.command_queue_size,
        liveness_poll=min(0.5, config.broker.liveness_ttl / 4),
    )
    await run_listeners(config, runtime, hub, stats, [hub.run, runtime.run], task_status)
