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

import msgspec
import trio

from engine import Engine, Event, Record, decode_snapshot, encode_exported
from gateway._broker._codec import Bootstrap, BootstrapMismatch, Keys, parse_broker_url
from gateway._broker._engine_role import EngineBroker
from gateway._broker._gateway_role import ReplicaRuntime, fetch_bootstrap
from gateway._broker._journal_tail import last_origin_entry
from gateway._config import Config
from gateway._history import History
from gateway._hub import Hub
from gateway._runtime import EngineRuntime
from gateway._server import Gateway, history_settings_of, make_hub, run_listeners
from gateway._stats import Stats
from gateway._streams import Numbered, StreamState, decode_export, encode_export

log = logging.getLogger("trade_engine.broker")


async def engine_broker(config: Config, runtime: EngineRuntime) -> EngineBroker:
    """The engine role's broker, wired into ``runtime`` (call before the engine task runs)."""
    assert config.broker.url is not None  # Config checks it for this role
    address = parse_broker_url(config.broker.url)
    directory = config.journal_directory
    engine = runtime.engine
    # The engine task does not run yet: both states are at one seq.
    state, streams = engine.export_state(), runtime.streams.export(engine.last_seq)
    data = await trio.to_thread.run_sync(encode_exported, state)
    epoch = runtime.streams.epoch
    resume_after = await trio.to_thread.run_sync(last_origin_entry, directory)
    broker = EngineBroker(
        address, Keys(config.broker.key_prefix), runtime=runtime,
        journal_directory=directory,
        bootstrap=Bootstrap(seq=engine.last_seq, epoch=epoch, engine=data,
                            streams=encode_export(streams)),
        resume_after=resume_after, liveness_ttl=config.broker.liveness_ttl,
        events_retention=config.broker.events_retention,
        stamp=config.websocket.publish_timestamps,
    )
    runtime.on_durable = broker.durable

    def snapshot(seq: int, data: bytes, streams_data: bytes) -> None:
        broker.snapshot(Bootstrap(seq=seq, epoch=epoch, engine=data, streams=streams_data))

    runtime.on_snapshot = snapshot
    log.info("engine role on %s: intake resumes after command entry %s, bootstrap at seq %d",
             address, resume_after, engine.last_seq)
    return broker


class _Replica:
    """The gateway's copy of the engine task: records in, numbered items to the hub.

    The same steps as ``EngineRuntime``'s engine task after the journal write:
    apply, number the command's events, and hand each batch to the hub.
    """

    def __init__(self, engine: Engine, streams: StreamState, hub: Hub, stats: Stats) -> None:
        self.engine = engine
        self.streams = streams
        self._hub = hub
        self._stats = stats
        self._numbered = Numbered()

    def apply(self, record: Record) -> list[Event]:
        events = self.engine.apply(record.command, seq=record.seq, ts=record.ts)
        self._stats.commands += 1
        self.streams.number(events, self._numbered)
        return events

    async def flush(self) -> None:
        if self._numbered:
            numbered, self._numbered = self._numbered, Numbered()
            await self._hub.publish(numbered)


def replica_of(bootstrap: Bootstrap, depth_levels: int) -> tuple[Engine, StreamState]:
    """The engine and stream state a bootstrap holds (blocking: a thread).

    Raises:
        CorruptJournal: the engine snapshot is damaged (its hash is checked).
        BootstrapMismatch: the stream state is missing, unreadable, or of
            another depth window than this gateway's ``websocket.depth_levels``.
    """
    engine = decode_snapshot(bootstrap.engine)
    if bootstrap.streams is None:
        raise BootstrapMismatch("the engine's bootstrap holds no stream state")
    try:
        export = decode_export(bootstrap.streams)
        streams = StreamState.restore(export, engine.markets, depth_levels)
    except msgspec.DecodeError as exc:
        raise BootstrapMismatch(f"the bootstrap's stream state is unreadable: {exc}") from None
    except ValueError as exc:
        raise BootstrapMismatch(
            f"{exc}: give every gateway the engine's websocket.depth_levels") from None
    return engine, streams


async def serve_gateway(config: Config, task_status: trio.TaskStatus[Gateway]) -> None:
    """Run a scale-out gateway until cancelled or shut down (see ``gateway.serve``)."""
    assert config.broker.url is not None  # Config checks it for this role
    address = parse_broker_url(config.broker.url)
    keys = Keys(config.broker.key_prefix)
    bootstrap = await fetch_bootstrap(address, keys)
    engine, streams = await trio.to_thread.run_sync(
        replica_of, bootstrap, config.websocket.depth_levels)
    log.info("gateway role on %s: replica bootstrapped at seq %d (epoch %s)",
             address, bootstrap.seq, bootstrap.epoch)
    stats = Stats()
    settings = history_settings_of(config)
    history = History(settings.messages, settings.seconds, streams.counters())
    hub = make_hub(config, engine, streams, history, stats)
    runtime = ReplicaRuntime(
        address, keys, applier=_Replica(engine, streams, hub, stats), position=bootstrap.seq,
        epoch=bootstrap.epoch,
        reply_timeout=config.broker.reply_timeout,
        max_waiting=config.engine.command_queue_size,
        liveness_poll=min(0.5, config.broker.liveness_ttl / 4), stats=stats,
    )
    await run_listeners(config, runtime, hub, stats, [hub.run, runtime.run], task_status)
