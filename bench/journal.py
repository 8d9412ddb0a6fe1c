"""Journal benchmark: commands/s through the engine task with each fsync policy.

Run it with ``nox -s bench_journal``, or ``python -m bench.journal`` from the
repository root in any Python >= 3.11 environment holding the project
(``--help`` for the options). ``bench/README.md``, section "Journal", says what
is measured and how to read it.

Rules of this module:

* In process, no HTTP: each run builds an :class:`gateway._runtime.EngineRuntime`
  with a :class:`gateway._hub.Hub` and :class:`gateway._stats.Stats` exactly as
  ``gateway/_server.py`` does (the default ``EngineSettings``,
  ``WebSocketSettings`` and ``JournalSettings``), with ``journal=None``
  (in-memory) or a :class:`gateway._journal.JournalWriter` (fsync ``off``,
  ``batch``, ``always``) on a fresh directory on the repository's disk.
* A saturating load: ``--clients`` concurrent submitter tasks, each submitting
  its own seeded flow of new orders (``order_id=0``: the seq names them) and
  cancels of its own earlier orders, back to back, until ``--count`` commands
  (``--always-count`` under ``always``, whose fsync per command makes it ~100x
  slower) have been acknowledged. Throughput is commands over the wall time
  from the first submit to the last acknowledgement; latency is submit to return
  of each ``submit``.
* Rounds interleave the policies, the order rotated each round; every run starts
  after ``gc.collect()`` and leaves gc enabled. Medians over rounds are reported.
* After every journaled run, ``recover()`` rebuilds the engine from the directory
  and its state hash must equal the runtime's: a fast journal that loses or
  garbles commands is not a result (exit status 1, no JSON).
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from statistics import median
from typing import Any

import attrs
import trio

from bench.report import nearest_rank
from engine import CancelOrder, Engine, OrderAccepted, PlaceOrder, Side
from gateway._config import EngineSettings, HistorySettings, JournalSettings, WebSocketSettings
from gateway._hub import Hub
from gateway._journal import Fsync, JournalWriter, recover
from gateway._runtime import EngineRuntime
from gateway._stats import Stats
from gateway._stream_files import in_memory

MEMORY = "memory"
POLICIES = (MEMORY, Fsync.OFF.value, Fsync.BATCH.value, Fsync.ALWAYS.value)
TARGET_RATIO = 0.5  # batch cmd/s over in-memory cmd/s
ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUTPUT = ROOT / "bench" / "results" / "journal.json"


class Counting(JournalWriter):
    """The real writer, counting its appends (one per batch), to report batch sizes."""

    appends = 0

    def append_blocking(self, data: bytes, next_seq: int) -> None:
        self.appends += 1
        super().append_blocking(data, next_seq)


@dataclass
class Run:
    policy: str
    clients: int
    commands: int
    seconds: float
    cmd_per_s: float
    p50_us: float
    p99_us: float
    p999_us: float
    max_us: float
    batches: int | None
    mean_batch: float | None
    journal_bytes: int | None


@dataclass
class Summary:
    policy: str
    clients: int
    commands: int
    cmd_per_s: float
    vs_memory: float
    vs_memory_per_round: list[float]
    p50_us: float
    p99_us: float
    p999_us: float
    mean_batch: float | None
    runs: list[Run] = field(default_factory=list)


async def _drive(runtime: EngineRuntime, count: int, clients: int, seed: int) -> list[int]:
    """``count`` commands from ``clients`` submitters; the latency of each, in ns."""
    latencies: list[int] = []
    remaining = count
    now = time.perf_counter_ns

    async def submitter(index: int) -> None:
        nonlocal remaining
        rng = random.Random(seed * 100_003 + index)
        user = f"u{index}"
        mine: list[int] = []
        while remaining > 0:
            remaining -= 1
            if mine and rng.random() < 0.25:
                command: PlaceOrder | CancelOrder = CancelOrder(
                    order_id=mine.pop(rng.randrange(len(mine))), user_id=user)
            else:
                # BTC/USDT: prices in ticks of 0.01 within 0.2% of 50 000, so about one
                # order in ten crosses; quantities in lots of 0.00001 (0.001-0.05 BTC).
                command = PlaceOrder(
                    order_id=0, user_id=user, symbol="BTC/USDT",
                    side=Side.BUY if rng.random() < 0.5 else Side.SELL,
                    price=5_000_000 + rng.randrange(-100, 101) * 100,
                    quantity=rng.randrange(100, 5_000),
                )
            start = now()
            events = await runtime.submit(command)
            latencies.append(now() - start)
            if isinstance(events[0], OrderAccepted):
                mine.append(events[0].order_id)

    async with trio.open_nursery() as nursery:
        for index in range(clients):
            nursery.start_soon(submitter, index)
    return latencies


async def _one_run(policy: str, count: int, clients: int, seed: int, workdir: Path) -> Run:
    engine_settings, ws_settings = EngineSettings(), WebSocketSettings()
    journal_settings = JournalSettings()
    engine = Engine(order_history=engine_settings.order_history,
                    trade_history=engine_settings.trade_history)
    stats = Stats()
    streams, history = in_memory(engine, ws_settings.depth_levels, HistorySettings())
    hub = Hub(engine.markets, streams=streams, history=history,
              public_trade_user_ids=False, queue_size=engine_settings.fanout_queue_size,
              stats=stats)
    journal: Counting | None = None
    directory = workdir / f"{policy}-{seed}"
    if policy != MEMORY:
        directory.mkdir()
        journal = Counting(directory, next_seq=1, fsync=Fsync(policy),
                           segment_bytes=journal_settings.segment_bytes)
    runtime = EngineRuntime(engine, streams, hub, queue_size=engine_settings.command_queue_size,
                            stats=stats, journal=journal,
                            snapshot_every=journal_settings.snapshot_every)
    gc.collect()
    async with trio.open_nursery() as nursery:
        await nursery.start(hub.run)
        await nursery.start(runtime.run)
        started = time.perf_counter()
        latencies = await _drive(runtime, count, clients, seed)
        seconds = time.perf_counter() - started
        nursery.cancel_scope.cancel()
    assert stats.commands == count, (stats.commands, count)
    latencies.sort()
    run = Run(
        policy=policy, clients=clients, commands=count, seconds=round(seconds, 4),
        cmd_per_s=round(count / seconds, 1),
        p50_us=round(nearest_rank(latencies, 0.50) / 1e3, 1),
        p99_us=round(nearest_rank(latencies, 0.99) / 1e3, 1),
        p999_us=round(nearest_rank(latencies, 0.999) / 1e3, 1),
        max_us=round(latencies[-1] / 1e3, 1),
        batches=None, mean_batch=None, journal_bytes=None,
    )
    if journal is not None:
        run.batches = journal.appends
        run.mean_batch = round(count / journal.appends, 1)
        run.journal_bytes = sum(p.stat().st_size for p in directory.iterdir())
        recovered = recover(directory, engine.markets.values())
        if recovered.engine.state_hash() != engine.state_hash():
            print(f"FAIL: {policy}: the journal does not replay to the runtime's state",
                  file=sys.stderr)
            sys.exit(1)
        shutil.rmtree(directory)
    return run


def fsync_probe(workdir: Path, samples: int = 30) -> float:
    """Median ms of a 150-byte append + fsync in ``workdir``: what one group commit costs."""
    path = workdir / "probe"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        costs = []
        for _ in range(samples):
            start = time.perf_counter()
            os.write(fd, b"x" * 150)
            os.fsync(fd)
            costs.append(time.perf_counter() - start)
    finally:
        os.close(fd)
        path.unlink()
    return round(median(costs) * 1e3, 3)


def filesystem(path: Path) -> dict[str, str]:
    """The mount holding ``path``, from /proc/mounts (Linux), to show it is not tmpfs."""
    best = ("", "?", "?")
    try:
        with open("/proc/mounts", encoding="utf-8") as mounts:
            for line in mounts:
                device, mountpoint, fstype = line.split()[:3]
                if str(path).startswith(mountpoint) and len(mountpoint) >= len(best[1]):
                    best = (device, mountpoint, fstype)
    except OSError:
        pass
    return {"device": best[0], "mountpoint": best[1], "type": best[2]}


def git_revision() -> str | None:
    """The commit benchmarked, with "+dirty" when engine/ or gateway/ has changes."""
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                             capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "engine", "gateway"],
                               cwd=ROOT, capture_output=True, text=True,
                               check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return rev + ("+dirty(engine/, gateway/)" if dirty else "")


def summarise(runs: list[Run], rounds: int, clients: int) -> list[Summary]:
    runs = [r for r in runs if r.clients == clients]
    by_policy = {p: [r for r in runs if r.policy == p] for p in POLICIES}
    memory = by_policy[MEMORY]
    memory_median = median(r.cmd_per_s for r in memory)
    summaries = []
    for policy, mine in by_policy.items():
        if not mine:
            continue
        batches = [r.mean_batch for r in mine if r.mean_batch is not None]
        summaries.append(Summary(
            policy=policy, clients=clients, commands=mine[0].commands,
            cmd_per_s=round(median(r.cmd_per_s for r in mine), 1),
            vs_memory=round(median(r.cmd_per_s for r in mine) / memory_median, 3),
            vs_memory_per_round=[round(m.cmd_per_s / b.cmd_per_s, 3)
                                 for m, b in zip(mine, memory, strict=True)][:rounds],
            p50_us=round(median(r.p50_us for r in mine), 1),
            p99_us=round(median(r.p99_us for r in mine), 1),
            p999_us=round(median(r.p999_us for r in mine), 1),
            mean_batch=round(median(batches), 1) if batches else None,
            runs=mine,
        ))
    return summaries


def table(summaries: list[Summary]) -> str:
    lines = [
        "| policy | clients | commands/run | cmd/s | vs in-memory | p50 ms | p99 ms | p99.9 ms "
        "| mean batch |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s in summaries:
        batch = "-" if s.mean_batch is None else f"{s.mean_batch:,.1f}"
        lines.append(
            f"| {s.policy} | {s.clients} | {s.commands:,} | {s.cmd_per_s:,.0f} "
            f"| {s.vs_memory:.2f}x "
            f"| {s.p50_us / 1e3:,.2f} | {s.p99_us / 1e3:,.2f} | {s.p999_us / 1e3:,.2f} "
            f"| {batch} |".replace(",", " "))
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.journal", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=50_000,
                        help="commands per run for memory, off and batch (default 50 000)")
    parser.add_argument("--always-count", type=int, default=1_500,
                        help="commands per run under fsync always (default 1 500)")
    parser.add_argument("--clients", type=int, default=256,
                        help="concurrent submitter tasks (default 256)")
    parser.add_argument("--light-count", type=int, default=2_000,
                        help="commands per run of the one-client latency pass (default 2 000; "
                             "a fifth of it under always; 0 skips the pass)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds (default 3)")
    parser.add_argument("--seed", type=int, default=42, help="flow seed (default 42)")
    parser.add_argument("--policies", default=",".join(POLICIES),
                        help=f"comma-separated subset of {','.join(POLICIES)}")
    parser.add_argument("--dir", type=Path, default=ROOT / "bench",
                        help="where the journals go (default: bench/, the repository's disk)")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT,
                        help="JSON results (default bench/results/journal.json)")
    args = parser.parse_args(argv)
    policies = [p for p in POLICIES if p in args.policies.split(",")]
    if MEMORY not in policies:
        parser.error("the in-memory run is the baseline: keep 'memory' in --policies")

    began = time.perf_counter()
    workdir = Path(tempfile.mkdtemp(prefix="journal-bench-", dir=args.dir))
    try:
        fs = filesystem(workdir.resolve())
        probe = fsync_probe(workdir)
        print(f"journals in {workdir} ({fs['type']} on {fs['device']}); "
              f"append + fsync: {probe} ms (median of 30)")
        runs: list[Run] = []
        passes = [(args.clients, args.count, args.always_count)]
        if args.light_count:
            passes.append((1, args.light_count, max(1, args.light_count // 5)))
        for round_, (clients, many, few) in (
                (r, p) for p in passes for r in range(args.rounds)):
            order = policies[round_ % len(policies):] + policies[:round_ % len(policies)]
            for policy in order:
                count = few if policy == Fsync.ALWAYS.value else many
                run = trio.run(_one_run, policy, count, clients, args.seed + round_, workdir)
                runs.append(run)
                print(f"{clients:>3} client(s) round {round_ + 1} {policy:>6}: "
                      f"{run.cmd_per_s:>10,.0f} cmd/s  "
                      f"p50 {run.p50_us / 1e3:7.2f} ms  p99 {run.p99_us / 1e3:8.2f} ms  "
                      f"batch {run.mean_batch or '-'}", flush=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    runs.sort(key=lambda r: (-r.clients, POLICIES.index(r.policy)))  # rounds stay in order
    summaries = summarise(runs, args.rounds, args.clients)
    light = summarise(runs, args.rounds, 1) if args.light_count else []
    print()
    print(table(summaries + light))
    batch = next((s for s in summaries if s.policy == Fsync.BATCH.value), None)
    met = None if batch is None else batch.vs_memory >= TARGET_RATIO
    if batch is not None:
        print(f"\ntarget: batch >= {TARGET_RATIO:.0%} of in-memory cmd/s: "
              f"{batch.vs_memory:.2f}x (per round {batch.vs_memory_per_round}): "
              f"{'met' if met else 'NOT met'}")

    result: dict[str, Any] = {
        "benchmark": "journal",
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "revision": git_revision(),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "loadavg_after": [round(x, 2) for x in os.getloadavg()]},
        "filesystem": fs,
        "fsync_probe_ms": probe,
        "workload": {
            "clients": args.clients, "count": args.count, "always_count": args.always_count,
            "rounds": args.rounds, "seed": args.seed,
            "flow": "per client: 75% new BTC/USDT limit orders (order_id=0) within 0.2% "
                    "of 50 000, 25% cancels of its own earlier orders",
        },
        "settings": {"journal": {k: str(v) for k, v in attrs.asdict(JournalSettings()).items()},
                     "command_queue_size": EngineSettings().command_queue_size},
        "target": {"batch_vs_memory_at_least": TARGET_RATIO, "met": met},
        "summary": [{k: v for k, v in asdict(s).items() if k != "runs"} for s in summaries],
        "summary_one_client": [{k: v for k, v in asdict(s).items() if k != "runs"}
                               for s in light],
        "runs": [asdict(r) for r in runs],
        "seconds": round(time.perf_counter() - began, 1),
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
