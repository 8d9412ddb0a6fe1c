"""Wiring: the engine task, the fan-out tasks and both listeners in one nursery.

Rules of this module: :func:`serve` is the whole server as one trio task
tree. It takes the journal's lock (``_datadir``: held until the journal is
closed), recovers the engine from the journal, then starts, in order, the
garbage-collector policy task, the fan-out tasks, the engine task, the REST
listener (hypercorn) and the WebSocket listener (trio-websocket), then reports
a :class:`Gateway` handle through ``task_status``. It returns when cancelled,
or after :meth:`Gateway.shutdown` has closed the connections gracefully (at
most ``shutdown_grace_period`` seconds later). The scale-out roles
(``config.role``) reuse :func:`run_listeners` and :func:`make_hub`: the engine
role adds the broker's tasks (``gateway/_broker/_engine_role.py``), the gateway
role replaces recovery and the engine task with a replica
(``gateway/_broker/_serve.py``).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from functools import partial

import attrs
import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve as serve_http

from engine import Command, Engine, Event
from gateway._auth import TokenVerifier
from gateway._broker._settings import Role
from gateway._config import Config, HistorySettings
from gateway._datadir import lock_for
from gateway._gc import tame_cyclic_gc
from gateway._history import History
from gateway._hub import Hub
from gateway._journal import JournalWriter, recover
from gateway._limits import OrderRate
from gateway._rest import create_app
from gateway._runtime import EngineRuntime, Runtime
from gateway._stats import Stats
from gateway._stream_files import StreamRecovery, in_memory
from gateway._streams import StreamState
from gateway._ws import WebSocketGateway

log = logging.getLogger("trade_engine.gateway")


@attrs.frozen
class Endpoints:
    """Where the gateway listens (ports are the bound ones, also when 0 was asked)."""

    host: str
    rest_port: int
    ws_port: int

    @property
    def rest_url(self) -> str:
        return f"http://{self._host_in_url}:{self.rest_port}"

    @property
    def ws_url(self) -> str:
        return f"ws://{self._host_in_url}:{self.ws_port}"

    @property
    def _host_in_url(self) -> str:
        return f"[{self.host}]" if ":" in self.host else self.host


class Gateway:
    """A running gateway, as handed out by ``await nursery.start(serve, config)``."""

    def __init__(
        self, runtime: Runtime, ws: WebSocketGateway, stats: Stats, endpoints: Endpoints
    ) -> None:
        self._runtime = runtime
        self._ws = ws
        self.stats = stats
        self.endpoints = endpoints
        self._stop = trio.Event()

    @property
    def engine(self) -> Engine:
        """The engine, for queries only: commands go through :meth:`submit`."""
        return self._runtime.engine

    @property
    def epoch(self) -> str:
        """The stream numbering's epoch, as every ``subscribed`` reply names it."""
        return self._runtime.streams.epoch

    async def submit(self, command: Command) -> list[Event]:
        """Apply a command through the engine task, exactly as REST does.

        Raises:
            Busy: the command queue is full.
        """
        return await self._runtime.submit(command)

    def shutdown(self) -> None:
        """Begin a graceful shutdown: refuse new connections, close open ones with 1001."""
        self._stop.set()


def _bound_port(binds: list[str]) -> int:
    return int(binds[0].rsplit(":", 1)[1])


async def serve(
    config: Config, *, task_status: trio.TaskStatus[Gateway] = trio.TASK_STATUS_IGNORED
) -> None:
    """Run the trading gateway until cancelled or shut down.

    Use it from any trio program::

        async with trio.open_nursery() as nursery:
            gateway = await nursery.start(serve, Config(rest_port=0, ws_port=0))
            print(gateway.endpoints.rest_url)

    ``config.role`` chooses what this process is (``docs/scaling.md``): the
    whole server (``all``, the default), the engine of a scale-out deployment
    (``engine``: this, plus publishing to Redis) or one of its gateways
    (``gateway``: a replica of the engine fed from Redis, no data directory).

    Args:
        config: the configuration; ``load_config`` builds one from a file.
        task_status: receives the :class:`Gateway` once both listeners accept.

    Raises:
        DataDirectoryLocked: another server owns the journal (see ``_datadir``).
        gateway.ReplicaLost: (role ``gateway``) the events stream lost records this
            gateway needs; start it again.
    """
    if config.role is Role.GATEWAY:
        from gateway._broker._serve import serve_gateway  # noqa: PLC0415 - Redis only here

        await serve_gateway(config, task_status)
        return
    with lock_for(config):  # before the journal is read, until it is closed
        await _serve(config, task_status)


async def _serve(config: Config, task_status: trio.TaskStatus[Gateway]) -> None:
    stats = Stats()
    journal: JournalWriter | None = None
    depth_levels = config.websocket.depth_levels
    history_settings = history_settings_of(config)
    if config.journal.enabled:
        directory = config.journal_directory
        renumbering = StreamRecovery(directory, depth_levels, history_settings)
        recovery = await trio.to_thread.run_sync(lambda: recover(
            directory, config.markets, order_history=config.engine.order_history,
            trade_history=config.engine.trade_history,
            on_snapshot=renumbering.on_snapshot, on_record=renumbering.on_record,
        ))
        engine = recovery.engine
        streams, history = renumbering.finish(engine)
        journal = JournalWriter(
            directory, next_seq=engine.last_seq + 1, fsync=config.journal.fsync,
            segment_bytes=config.journal.segment_bytes,
        )
        log.info(
            "recovered from %s: snapshot at seq %d, %d commands replayed, last seq %d, "
            "state hash %s", directory, recovery.snapshot_seq, recovery.replayed,
            engine.last_seq, engine.state_hash(),
        )
        log.info("stream epoch %s, %d messages of history to resume from",
                 streams.epoch, len(history))
    else:
        engine = Engine(
            config.markets,
            order_history=config.engine.order_history,
            trade_history=config.engine.trade_history,
        )
        streams, history = in_memory(engine, depth_levels, history_settings)
    hub = make_hub(config, engine, streams, history, stats)
    runtime = EngineRuntime(
        engine, streams, hub, queue_size=config.engine.command_queue_size, stats=stats,
        journal=journal, snapshot_every=config.journal.snapshot_every,
    )
    tasks: list[Callable[..., Awaitable[None]]] = [hub.run, runtime.run]
    degraded: Callable[[], str | None] | None = None
    if config.role is Role.ENGINE:
        from gateway._broker._serve import engine_broker  # noqa: PLC0415 - Redis only here

        broker = await engine_broker(config, runtime)
        tasks.append(broker.run)
        degraded = lambda: broker.problem  # noqa: E731
    await run_listeners(config, runtime, hub, stats, tasks, task_status, degraded=degraded)


def history_settings_of(config: Config) -> HistorySettings:
    """``[history]``, its message count at most ``websocket.send_queue_size``."""
    return attrs.evolve(config.history, messages=min(
        config.history.messages, config.websocket.send_queue_size))


def make_hub(
    config: Config, engine: Engine, streams: StreamState, history: History, stats: Stats
) -> Hub:
    """The fan-out over ``streams`` (recovered or bootstrapped) and ``history``."""
    return Hub(
        engine.markets,
        streams=streams,
        history=history,
        public_trade_user_ids=config.public_trade_user_ids,
        queue_size=config.engine.fanout_queue_size,
        stats=stats,
        publish_timestamps=config.websocket.publish_timestamps,
    )


async def run_listeners(
    config: Config,
    runtime: Runtime,
    hub: Hub,
    stats: Stats,
    tasks: list[Callable[..., Awaitable[None]]],
    task_status: trio.TaskStatus[Gateway],
    *,
    degraded: Callable[[], str | None] | None = None,
) -> None:
    """Start ``tasks`` (each ``nursery.start``-able, in order), then REST and WebSocket.

    Shared by every role: what differs is the runtime behind order entry and
    the tasks that feed the hub.
    """
    engine = runtime.engine
    verifier = TokenVerifier.from_settings(config.auth, config.data_dir)
    order_rate = OrderRate(config.limits.orders_per_second, config.limits.order_burst)
    ws = WebSocketGateway(
        hub, runtime=runtime, order_rate=order_rate, settings=config.websocket,
        limits=config.limits, verifier=verifier, stats=stats, symbols=engine.markets,
    )
    if config.limits.allowed_origins:
        log.info("browser Origin allowed: %s (WebSocket handshakes and REST CORS)",
                 ", ".join(config.limits.allowed_origins))
    else:
        log.info("browser origins: any origin is accepted by WebSocket and REST CORS "
                 "(set limits.allowed_origins to restrict browsers)")
    ws_port = 0  # bound below, after REST; the REST app reads it when asked
    app = create_app(
        runtime, hub, verifier=verifier, stats=stats, order_rate=order_rate,
        max_request_body=config.max_request_body, limits=config.limits,
        public_trade_user_ids=config.public_trade_user_ids,
        connection_count=lambda: ws.connection_count,
        websocket_port=lambda: ws_port, depth_levels=config.websocket.depth_levels,
        degraded=degraded,
    )
    http_config = HypercornConfig()
    http_config.bind = [f"{config.host}:{config.rest_port}"]
    http_config.accesslog = None
    http_config.graceful_timeout = config.shutdown_grace_period
    http_stopped = trio.Event()

    async with trio.open_nursery() as nursery:
        await nursery.start(tame_cyclic_gc, config.gc)
        for task in tasks:
            await nursery.start(task)
        binds = await nursery.start(
            lambda task_status: serve_http(
                app, http_config, shutdown_trigger=http_stopped.wait,
                task_status=task_status,
            )
        )
        rest_port = _bound_port(binds)  # named to plain HTTP requests on the WebSocket port
        ws_port = await nursery.start(
            partial(ws.serve, rest_port=rest_port), config.host, config.ws_port)
        gateway = Gateway(runtime, ws, stats, Endpoints(config.host, rest_port, ws_port))
        log.info("REST on %s, WebSocket on %s", gateway.endpoints.rest_url,
                 gateway.endpoints.ws_url)
        task_status.started(gateway)

        await gateway._stop.wait()
        log.info("shutting down (grace period %.1f s)", config.shutdown_grace_period)
        nursery.cancel_scope.deadline = trio.current_time() + config.shutdown_grace_period
        ws.shutdown()
        http_stopped.set()
        await ws.wait_drained()
        nursery.cancel_scope.cancel()
