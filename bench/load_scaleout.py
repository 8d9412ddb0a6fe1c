"""Scale-out load: Redis + 1 engine + 1, 2 and 3 gateways against an all-in-one server.

``python -m bench.load_scaleout`` (``nox -s load_scaleout``; see bench/README.md,
"Scale-out load"). Rules of this module:

* Every configuration runs in this one invocation, on the same machine, with
  the same clients, rate and order flow (``bench/orderflow.py``: one trade per
  REST call, sent to the first gateway, or to the all-in-one server): first
  the all-in-one server (``trade-engine serve``), then for each gateway
  count a fresh ``redis-server`` (no persistence), an engine
  (``--role engine``) and the gateways (``--role gateway``), all subprocesses
  on ports 0 with ``publish_timestamps``.
* Clients are raw WebSocket clients in load worker processes
  (``bench/loadgen.py``), each worker on one gateway (``max(2, gateways)``
  workers; gateway ``i % gateways``), subscribed to BTC/USDT trades.
* Latency = receipt - ``published_ns`` (the gateway's monotonic clock when it
  encoded the message, as in ``bench/load.py``). In scale-out mode the hop
  before that (engine publishes -> gateway applies) is measured by the
  gateways on entries the engine stamped (``/stats`` ``broker.lag_ms``, the
  newest 65,536 samples); ``e2e_p99_bound_ms`` adds the two p99s (an upper
  bound of the end-to-end p99).
* CPU = utime + stime from ``/proc`` over the measured window, per process
  (engine, each gateway, redis, all-in-one); a gateway's CPU per delivery is
  its CPU over the deliveries of its own clients.
* The drill: Redis + engine + 3 gateways, ``--drill-clients`` trio clients on
  gateway 1 (trades, depth, orders), orders through gateway 2; gateway 1 is
  SIGKILLed; each client resumes on gateway 2 or 3 with ``since`` and must
  miss nothing (``missed`` counts gaps and messages short of a reference
  client on gateway 2 that never moved).
* The capacity (``--capacity N``): Redis + engine + one gateway without
  clients; N crossing orders XADDed straight into ``te:commands`` in
  pipelines; the time until the gateway's replica applied the last, and each
  process's CPU per command: the engine role's ceiling and a replica's cost.
* Bounded: every server is stopped (SIGINT, then SIGKILL) in ``finally``; the
  workers stop by themselves at a hard deadline; loopback only.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import math
import secrets
import sys
import tempfile
import time
from array import array
from pathlib import Path
from typing import Any

import trio

from bench.load import _MP, RESULTS, SUBSCRIBE, _figures, git_revision, log
from bench.loadgen import FAILED, ROW, SUBSCRIBED, WorkerSpec, worker_main
from bench.orderflow import OrderFlow
from bench.redis_server import RedisServer, free_port
from bench.servers import ServerProcess, cpu_seconds, our_config, raise_nofile, spawn_worker
from engine import PlaceOrder, Side
from gateway._broker._codec import encode_command, parse_broker_url
from gateway._broker._redis import open_client

_READY = r"REST on http://[^:]+:(\d+)/api/v1, WebSocket on ws://[^:]+:(\d+)/ws"


class RoleServer(ServerProcess):
    """``trade-engine serve`` in one role, with the load configuration and a shared secret."""

    def __init__(self, role: str, *, secret: str, broker: str | None, fsync: str) -> None:
        import re  # noqa: PLC0415 - only for the pattern

        super().__init__(re.compile(_READY), prefix=f"scaleout-{role}-", kill_after=15.0)
        self.role = role
        big = 1_000_000
        extra: dict[str, dict[str, Any]] = {
            "limits": {"orders_per_second": float(big), "order_burst": big}}
        (self.workdir / "server.toml").write_text(our_config(
            self.workdir / "data", secret=secret, ping_interval=5.0, fsync=fsync, extra=extra))
        self.argv = [sys.executable, "-m", "gateway._cli", "--log-level", "WARNING", "serve",
                     "--config", str(self.workdir / "server.toml")]
        if role != "all":
            assert broker is not None
            self.argv += ["--role", role, "--broker", broker]

    @property
    def rest_port(self) -> int:
        return self.ports[0]

    @property
    def ws_port(self) -> int:
        return self.ports[1]


def get_stats(port: int) -> dict[str, Any] | None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", "/stats")
        body: dict[str, Any] = json.loads(conn.getresponse().read())
        return body
    except (OSError, http.client.HTTPException, ValueError):
        return None
    finally:
        conn.close()


def run_config(args: argparse.Namespace, gateways: int) -> dict[str, Any]:
    """One measured run: ``gateways`` = 0 is the all-in-one server."""
    label = "all-in-one" if gateways == 0 else f"{gateways} gateway{'s' * (gateways > 1)}"
    secret = secrets.token_hex(32)
    redis: RedisServer | None = None
    servers: list[RoleServer] = []
    workers: list[Any] = []
    pipes: list[Any] = []
    flow: OrderFlow | None = None
    redis_dir = tempfile.TemporaryDirectory(prefix="scaleout-redis-")
    try:
        if gateways:
            redis = RedisServer(Path(redis_dir.name), free_port())
            redis.start()
            engine = RoleServer("engine", secret=secret, broker=redis.url, fsync=args.fsync)
            servers.append(engine)
            engine.start()
            fronts = [RoleServer("gateway", secret=secret, broker=redis.url, fsync=args.fsync)
                      for _ in range(gateways)]
            servers += fronts
            for front in fronts:
                front.start()
        else:
            fronts = [RoleServer("all", secret=secret, broker=None, fsync=args.fsync)]
            servers += fronts
            fronts[0].start()
        flow = OrderFlow("127.0.0.1", fronts[0].rest_port, secret,
                         connections=max(4, math.ceil(args.rate / 5)))
        flow.place_resting()
        time.sleep(0.5)

        count = max(2, gateways)
        hard_deadline = time.monotonic() + 60 + args.clients * 0.01 + args.warmup \
            + args.duration + args.grace + 30
        counters = _MP.Array("q", count * ROW, lock=False)
        for index in range(count):
            ids = list(range(index, args.clients, count))
            spec = WorkerSpec(index=index, client_ids=ids, host="127.0.0.1",
                              port=fronts[index % len(fronts)].ws_port, path="/ws",
                              subscribe=SUBSCRIBE, per_source=5000,
                              hard_deadline=hard_deadline)
            process, pipe = spawn_worker(worker_main, spec, counters, f"loadgen-{index}")
            workers.append(process)
            pipes.append(pipe)

        def total(slot: int) -> int:
            return sum(counters[i * ROW + slot] for i in range(count))

        deadline = time.monotonic() + 60 + args.clients * 0.01
        while total(SUBSCRIBED) + total(FAILED) < args.clients and time.monotonic() < deadline:
            time.sleep(0.05)
        subscribed = total(SUBSCRIBED)
        log(f"[{label}] {subscribed:,}/{args.clients:,} clients subscribed")
        time.sleep(1.0)

        t0 = time.monotonic() + args.warmup
        t1 = t0 + args.duration
        for pipe in pipes:
            pipe.send(("window", int(t0 * 1e9), int(t1 * 1e9)))
        flow.start(args.rate, until=t1)
        processes = {f"{s.role}-{i}" if s.role == "gateway" else s.role: s.pid
                     for i, s in enumerate(servers)}
        if redis is not None and redis.process is not None:
            processes["redis"] = redis.process.pid
        time.sleep(max(0.0, t0 - time.monotonic()))
        cpu0 = {name: cpu_seconds(pid) for name, pid in processes.items()}
        at0 = time.monotonic()
        time.sleep(max(0.0, t1 - time.monotonic()))
        cpu1 = {name: cpu_seconds(pid) for name, pid in processes.items()}
        window = time.monotonic() - at0
        flow.stop()
        lags = {f"gateway-{i}": (get_stats(s.rest_port) or {}).get("broker", {}).get("lag_ms")
                for i, s in enumerate(servers) if s.role == "gateway"}
        time.sleep(args.grace)
        for pipe in pipes:
            with contextlib.suppress(OSError):
                pipe.send(("stop",))
        results = []
        for pipe in pipes:
            if pipe.poll(30):
                results.append(pipe.recv())
        flow_summary = flow.summary()
    finally:
        if flow is not None:
            flow.stop()
        for proc in workers:
            proc.join(timeout=5)
            if proc.is_alive():
                proc.kill()
                proc.join(timeout=5)
        for server in servers:
            server.stop()
        if redis is not None:
            redis.kill()
        redis_dir.cleanup()

    result, _ = _figures(results, kind=label, clients=args.clients, rate=args.rate,
                         duration=args.duration, stalled=frozenset(), t1_ns=int(t1 * 1e9))
    per_front: dict[int, int] = {}
    for worker in results:
        values = array("q")
        values.frombytes(worker["latencies_ns"])
        front = worker["index"] % len(fronts)
        per_front[front] = per_front.get(front, 0) + len(values)
    cpu = {name: cpu1[name] - cpu0[name] for name in cpu0}
    result["cpu_pct"] = {name: round(used / window * 100, 1) for name, used in cpu.items()}
    front_names = ["all"] if gateways == 0 else [f"gateway-{i + 1}" for i in range(gateways)]
    us_per_delivery = {
        name: round(cpu[name] / per_front[i] * 1e6, 2) if per_front.get(i) else None
        for i, name in enumerate(front_names)}
    result["front_cpu_us_per_delivery"] = us_per_delivery
    valid = [v for v in us_per_delivery.values() if v is not None]
    result["front_cpu_us_per_delivery_mean"] = round(sum(valid) / len(valid), 2) if valid \
        else None
    deliveries = result["deliveries"]
    result["total_cpu_us_per_delivery"] = round(sum(cpu.values()) / deliveries * 1e6, 2) \
        if deliveries else None
    if gateways:
        result["engine_cpu_us_per_command"] = round(
            cpu["engine"] / max(1, result["published"]) * 1e6, 1)
        result["redis_cpu_us_per_command"] = round(
            cpu["redis"] / max(1, result["published"]) * 1e6, 1)
        result["broker_lag_ms"] = lags
        p99s = [lag["p99"] for lag in lags.values() if lag]
        fanout_p99 = result["latency_ms"]["p99"]
        result["e2e_p99_bound_ms"] = round(fanout_p99 + max(p99s), 3) \
            if p99s and fanout_p99 is not None else None
    else:
        result["e2e_p99_bound_ms"] = result["latency_ms"]["p99"]
    result["label"] = label
    result["order_flow"] = flow_summary
    log(f"[{label}] {result['deliveries_per_s']:,} deliveries/s, p99 "
        f"{result['latency_ms']['p99']} ms, missed {result['missed']}, front CPU/delivery "
        f"{result['front_cpu_us_per_delivery_mean']} us")
    return result


def run_capacity(commands: int, fsync: str) -> dict[str, Any]:
    """The engine role's and one replica's ceiling: ``commands`` orders XADDed at once.

    Redis + engine + one gateway without clients; the orders (crossing limit
    orders of 50 users) go straight into ``te:commands`` in pipelines of 1,000,
    and the clock stops when the gateway's replica has applied the last one.
    """
    secret = secrets.token_hex(32)
    with tempfile.TemporaryDirectory(prefix="scaleout-capacity-") as tmp:
        redis = RedisServer(Path(tmp), free_port())
        servers: list[RoleServer] = []
        try:
            redis.start()
            engine = RoleServer("engine", secret=secret, broker=redis.url, fsync=fsync)
            front = RoleServer("gateway", secret=secret, broker=redis.url, fsync=fsync)
            servers += [engine, front]
            engine.start()
            front.start()
            assert redis.process is not None
            pids = {"engine": engine.pid, "gateway": front.pid, "redis": redis.process.pid}
            fields = [encode_command(PlaceOrder(
                order_id=0, user_id=f"u{i % 50}", symbol="BTC/USDT",
                side=Side.BUY if i % 2 else Side.SELL, price=5_000_000 + i % 7 - 3,
                quantity=100), f"capacity.{i}") for i in range(commands)]

            async def drive() -> float:
                async with open_client(parse_broker_url(redis.url)) as client:
                    started = time.monotonic()
                    for start in range(0, commands, 1000):
                        async with client.pipeline(transaction=False) as pipe:
                            for entry in fields[start:start + 1000]:
                                pipe.xadd("te:commands", entry)
                    while ((get_stats(front.rest_port) or {}).get("commands", 0)
                           < commands):
                        await trio.sleep(0.01)
                    return time.monotonic() - started

            before = {name: cpu_seconds(pid) for name, pid in pids.items()}
            seconds = trio.run(drive)
            used = {name: cpu_seconds(pid) - before[name] for name, pid in pids.items()}
        finally:
            for server in servers:
                server.stop()
            redis.kill()
    result = {"commands": commands, "seconds": round(seconds, 2),
              "commands_per_s": round(commands / seconds),
              "cpu_us_per_command": {name: round(cpu / commands * 1e6, 1)
                                     for name, cpu in used.items()},
              "cpu_pct": {name: round(cpu / seconds * 100, 1) for name, cpu in used.items()}}
    log(f"[capacity] {result}")
    return result


def print_summary(runs: list[dict[str, Any]], drill: dict[str, Any] | None) -> None:
    header = ["figure", *[run["label"] for run in runs]]
    rows = [header]

    def row(name: str, values: list[Any]) -> None:
        rows.append([name, *["-" if v is None else f"{v:,}" if isinstance(v, int)
                             else str(v) for v in values]])

    row("clients", [r["clients"] for r in runs])
    row("deliveries/s", [r["deliveries_per_s"] for r in runs])
    row("missed", [r["missed"] for r in runs])
    row("latency p50 ms", [r["latency_ms"]["p50"] for r in runs])
    row("latency p99 ms", [r["latency_ms"]["p99"] for r in runs])
    row("engine->gateway p99 ms", [
        max((v["p99"] for v in r.get("broker_lag_ms", {}).values() if v), default=None)
        for r in runs])
    row("end-to-end p99 bound ms", [r["e2e_p99_bound_ms"] for r in runs])
    row("gateway CPU us/delivery", [r["front_cpu_us_per_delivery_mean"] for r in runs])
    base = runs[0]["front_cpu_us_per_delivery_mean"]
    row("  vs all-in-one", [round(r["front_cpu_us_per_delivery_mean"] / base, 2)
                            if base and r["front_cpu_us_per_delivery_mean"] else None
                            for r in runs])
    row("engine CPU us/command", [r.get("engine_cpu_us_per_command") for r in runs])
    row("redis CPU us/command", [r.get("redis_cpu_us_per_command") for r in runs])
    row("all processes us/delivery", [r["total_cpu_us_per_delivery"] for r in runs])
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    for index, line in enumerate(rows):
        print("  ".join(c.ljust(widths[0]) if i == 0 else c.rjust(widths[i])
                        for i, c in enumerate(line)))
        if index == 0:
            print("  ".join("-" * w for w in widths))
    if drill is not None:
        print(f"\ndrill: {drill['clients']} clients on the killed gateway, "
              f"{drill['resumed']} resumed subscriptions, {drill['missed']} messages missed, "
              f"{drill['messages']} messages checked, resumed in {drill['resume_s']} s (max)")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.load_scaleout",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=600, help="WebSocket clients (600)")
    parser.add_argument("--rate", type=float, default=50.0, help="trades/s published (50)")
    parser.add_argument("--duration", type=float, default=15.0, help="measured seconds (15)")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds excluded (3)")
    parser.add_argument("--grace", type=float, default=2.0, help="seconds of drain (2)")
    parser.add_argument("--gateways", default="1,2,3", help="gateway counts to run (1,2,3)")
    parser.add_argument("--fsync", default="batch", help="the journal's fsync (batch)")
    parser.add_argument("--drill-clients", type=int, default=30,
                        help="clients in the kill-a-gateway drill (30; 0: no drill)")
    parser.add_argument("--drill-before", type=float, default=3.0,
                        help="seconds of flow before the kill (3)")
    parser.add_argument("--drill-after", type=float, default=4.0,
                        help="seconds of flow after the kill (4)")
    parser.add_argument("--capacity", type=int, default=20_000,
                        help="orders for the engine's ceiling (20000; 0: skip)")
    parser.add_argument("--output", type=Path, default=RESULTS / "load_scaleout.json")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    raise_nofile()
    counts = [int(n) for n in args.gateways.split(",") if n.strip()]
    started = time.time()
    runs = [run_config(args, 0)] + [run_config(args, n) for n in counts]
    drill = None
    if args.drill_clients:
        from bench.scaleout_drill import run_drill  # noqa: PLC0415 - trio only here

        drill = run_drill(clients=args.drill_clients, fsync=args.fsync,
                          before=args.drill_before, after=args.drill_after)
    capacity = run_capacity(args.capacity, args.fsync) if args.capacity else None
    print_summary(runs, drill)
    if capacity is not None:
        per = capacity["cpu_us_per_command"]
        print(f"capacity: {capacity['commands_per_s']:,} commands/s through the engine into one "
              f"replica; CPU per command: engine {per['engine']} us, gateway replica "
              f"{per['gateway']} us, redis {per['redis']} us")
    output = {
        "benchmark": "load_scaleout", "revision": git_revision(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "argv": sys.argv[1:], "args": {k: str(v) for k, v in vars(args).items()},
        "runs": runs, "drill": drill, "capacity": capacity,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(output, indent=1) + "\n")
    log(f"wrote {args.output}")
    failed = any(run["missed"] for run in runs) or (drill is not None and drill["missed"])
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
