"""Fan-out load: many WebSocket clients on one trades channel, ours against a baseline.

Modes (one entry point, ``python -m bench.load``; see bench/README.md, "Fan-out load"):

* default: ``--clients 1000 --rate 50 --duration 20`` against our gateway
  (``--server ours``), the baseline (``baseline``) or both side by side (``both``);
* ``--sweep``: raise the rate by ``--sweep-factor`` until p99 > ``--p99-limit-ms``
  or a message is missed, for each server; report the highest sustainable
  deliveries/s and the ratio ours / baseline;
* ``--hold N``: hold N connections for ``--duration`` (pings every
  ``--ping-interval``), report RSS per connection and the ``subscribe`` round trip
  of ``--probes`` probe clients;
* ``--stall K``: K clients stop reading after subscribing; healthy p99 against a
  run without them in the same invocation, when and how the stalled ones were
  closed, and the gateway RSS over time.

Every run: a fresh server subprocess (``bench.servers``), ``--workers`` load
worker processes (``bench.loadgen``) that connect and subscribe every client,
then the order flow (``bench.orderflow``: one trade per REST call; the baseline
publishes by itself), ``--warmup`` seconds excluded, ``--duration`` seconds
measured (messages *published* in the window count), then a short drain. Every
wait has a deadline, and the server is stopped (SIGINT, then SIGKILL) in all
cases. One line of progress per second goes to stderr; the tables to stdout;
JSON to ``bench/results/`` and a latency CDF (log-x) next to it.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import math
import multiprocessing
import os
import platform
import subprocess
import sys
import threading
import time
from array import array
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import report
from bench.loadgen import CLOSED, FAILED, RECEIVED, ROW, SUBSCRIBED, WorkerSpec, worker_main
from bench.orderflow import OrderFlow
from bench.probe import probe_main
from bench.servers import (
    BaselineServer,
    OurServer,
    ServerProcess,
    cpu_seconds,
    processes_cpu,
    raise_nofile,
    rss_kib,
    spawn_worker,
)

RESULTS = Path(__file__).resolve().parent / "results"
SUBSCRIBE = b'{"action":"subscribe","stream":"trades","symbol":"BTC/USDT","id":1}'
SLOW_CONSUMER = 4008
_MP = multiprocessing.get_context("fork")


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def git_revision() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5,
                               check=False).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{head} + working tree" if dirty else head


class _Stats:
    """``GET /stats`` of our gateway once a second, in a thread (nothing for the baseline).

    A thread, so that a gateway slow to answer never delays the run's clock.
    """

    def __init__(self, port: int | None) -> None:
        self.latest: dict[str, Any] | None = None
        self._stop = threading.Event()
        self._thread = None
        if port is not None:
            self._thread = threading.Thread(target=self._run, args=(port,), daemon=True,
                                            name="stats")
            self._thread.start()

    def _run(self, port: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        while not self._stop.is_set():
            try:
                conn.request("GET", "/stats")
                self.latest = json.loads(conn.getresponse().read())
            except (OSError, http.client.HTTPException, ValueError):
                conn.close()
            self._stop.wait(1.0)
        conn.close()

    def get(self) -> dict[str, Any] | None:
        return self.latest

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=6)


def run_once(args: argparse.Namespace, kind: str, *, clients: int, rate: float,
             duration: float, stall: int = 0, probes: int = 0, label: str = ""
             ) -> tuple[dict[str, Any], list[int]]:
    """One measured run against a fresh server; returns the figures and sorted latencies (ns)."""
    label = label or kind
    server: ServerProcess
    if kind == "ours":
        server = OurServer(ping_interval=args.ping_interval, fsync=args.fsync)
    else:
        server = BaselineServer(rate=rate, ping_interval=args.ping_interval)
    started = time.monotonic()
    load_before = os.getloadavg()
    server.start()
    workers: list[Any] = []
    pipes: list[Any] = []
    probe_proc = probe_pipe = None
    flow: OrderFlow | None = None
    stats = _Stats(None)  # started after the last fork: no thread may run while forking
    try:
        port = server.ws_port if kind == "baseline" else server.ports[1]
        if kind == "ours":
            assert isinstance(server, OurServer)
            connections = args.driver_connections or max(4, math.ceil(rate / 5))
            flow = OrderFlow("127.0.0.1", server.rest_port, server.secret,
                             connections=connections)
            flow.place_resting()
        time.sleep(0.5)
        rss_before = rss_kib(server.pid)

        # ------------------------------------------------ connect and subscribe
        stalled = frozenset(range(clients // 2, clients // 2 + stall))
        connect_timeout = args.connect_timeout or 30.0 + clients * 0.01
        hard_deadline = (time.monotonic() + connect_timeout + 1.0 + args.warmup + duration
                         + args.grace + 30.0)
        counters = _MP.Array("q", args.workers * ROW, lock=False)
        subscribe = SUBSCRIBE if args.path == "/ws" else None
        for index in range(args.workers):
            ids = list(range(index, clients, args.workers))
            spec = WorkerSpec(index=index, client_ids=ids, host="127.0.0.1", port=port,
                              path=args.path, subscribe=subscribe, per_source=args.per_source,
                              stalled=stalled.intersection(ids), max_inflight=args.inflight,
                              hard_deadline=hard_deadline)
            process, pipe = spawn_worker(worker_main, spec, counters, f"loadgen-{index}")
            workers.append(process)
            pipes.append(pipe)

        def total(slot: int) -> int:
            return sum(counters[i * ROW + slot] for i in range(args.workers))

        deadline = time.monotonic() + connect_timeout
        last = 0.0
        while time.monotonic() < deadline:
            done = total(SUBSCRIBED) + total(FAILED)
            if done >= clients:
                break
            if time.monotonic() - last >= 1.0:
                last = time.monotonic()
                log(f"[{label} {last - started:6.1f}s] connecting  subscribed "
                    f"{total(SUBSCRIBED):,}/{clients:,}  failed {total(FAILED):,}  "
                    f"server rss {rss_kib(server.pid) / 1024:.1f} MiB")
            time.sleep(0.05)
        connect_s = time.monotonic() - started
        subscribed = total(SUBSCRIBED)
        if subscribed < clients:
            log(f"[{label}] only {subscribed:,} of {clients:,} clients subscribed "
                f"within {connect_timeout:.0f} s")
        time.sleep(1.0)
        rss_connected = rss_kib(server.pid)

        # ------------------------------------------------------ flow and window
        if probes:
            probe_pipe, child = _MP.Pipe()
            probe_proc = _MP.Process(
                target=probe_main,
                args=("127.0.0.1", port, probes, args.probe_interval, hard_deadline, child),
                name="probes", daemon=True)
            probe_proc.start()
            child.close()
        if kind == "ours":
            stats = _Stats(server.ports[0])
        flow_start = time.monotonic()
        t0 = flow_start + args.warmup
        t1 = t0 + duration
        t0_ns, t1_ns = int(t0 * 1e9), int(t1 * 1e9)
        for pipe in pipes:
            pipe.send(("window", t0_ns, t1_ns))
        if flow is not None:
            flow.start(rate, until=t1)

        samples: list[dict[str, Any]] = []
        cpu0 = cpu1 = 0.0
        at0, at1 = t0, t1  # when the CPU samples were really taken
        gen0 = gen1 = (0.0, 0.0, [0.0] * args.workers)
        stats0: dict[str, Any] | None = None
        prev_rx, prev_t, prev_cpu = total(RECEIVED), time.monotonic(), cpu_seconds(server.pid)
        marks = [("t0", t0), ("t1", t1), ("end", t1 + args.grace)]
        next_tick = flow_start + 1.0
        while marks:
            now = time.monotonic()
            wake = min(next_tick, marks[0][1])
            if wake > now:
                time.sleep(wake - now)
            now = time.monotonic()
            if now >= marks[0][1]:
                name, _ = marks.pop(0)
                if name == "t0":
                    cpu0, at0 = cpu_seconds(server.pid), time.monotonic()
                    gen0 = processes_cpu(workers)
                    stats0 = stats.get()
                elif name == "t1":
                    cpu1, at1 = cpu_seconds(server.pid), time.monotonic()
                    gen1 = processes_cpu(workers)
                    if flow is not None:
                        flow.stop()
                continue
            next_tick += 1.0
            rx, cpu = total(RECEIVED), cpu_seconds(server.pid)
            dt = now - prev_t
            rx_rate, cpu_pct = (rx - prev_rx) / dt, (cpu - prev_cpu) / dt * 100
            prev_rx, prev_t, prev_cpu = rx, now, cpu
            rss = rss_kib(server.pid)
            phase = "warm-up" if now < t0 else "measure" if now < t1 else "drain"
            current = stats.get()
            sample = {"t": round(now - flow_start, 2), "rss_kib": rss,
                      "deliveries_per_s": round(rx_rate), "cpu_pct": round(cpu_pct, 1),
                      "closed": total(CLOSED)}
            if current is not None:
                for key in ("slow_consumer_disconnects", "heartbeat_timeouts",
                            "messages_dropped", "connections"):
                    sample[key] = current.get(key)
            samples.append(sample)
            trades = f"  trades {flow.sent:,}" if flow is not None else ""
            log(f"[{label} {now - started:6.1f}s] {phase:8s} subs {subscribed:,}  "
                f"rx {rx_rate:,.0f}/s  server cpu {cpu_pct:.0f}%  rss {rss / 1024:.1f} MiB  "
                f"closed {total(CLOSED):,}{trades}")
        rss_end = rss_kib(server.pid)
        stats1 = stats.get()

        # --------------------------------------------------------- collect
        for pipe in pipes:
            with contextlib.suppress(OSError):
                pipe.send(("stop",))
        results = []
        collect_deadline = time.monotonic() + 30.0
        for pipe in pipes:
            if pipe.poll(max(0.1, collect_deadline - time.monotonic())):
                results.append(pipe.recv())
        probe_result: dict[str, Any] = {}
        if probe_pipe is not None:
            probe_pipe.send(("stop",))
            if probe_pipe.poll(45):
                probe_result = probe_pipe.recv()
        flow_summary = flow.summary() if flow is not None else None
    finally:
        if flow is not None:
            flow.stop()
        stats.close()
        for proc in [*workers, *([probe_proc] if probe_proc else [])]:
            proc.join(timeout=5)
            if proc.is_alive():
                proc.kill()
                proc.join(timeout=5)
        server_log = server.log_tail(10)
        exit_code = server.stop()

    result, latencies = _figures(
        results, kind=kind, clients=clients, rate=rate, duration=duration, stalled=stalled,
        t1_ns=t1_ns)
    window_cpu = cpu1 - cpu0
    window_s = max(at1 - at0, 1e-3)
    gen_cpu = (gen1[0] - gen0[0]) + (gen1[1] - gen0[1])
    busiest = max((b - a for a, b in zip(gen0[2], gen1[2], strict=True)), default=0.0)
    if busiest / window_s > 0.8:
        log(f"[{label}] warning: a load worker used {busiest / window_s:.0%} of a core; the "
            "generator may be the bottleneck (more --workers?)")
    deliveries = result["deliveries"]
    result.update({
        "label": label,
        "connect_s": round(connect_s, 2),
        "load_average": {"before": load_before, "after": os.getloadavg()},
        "server": {
            "pid_exit_code": exit_code,
            "cpu_pct": round(window_cpu / window_s * 100, 1),
            "cpu_us_per_delivery": round(window_cpu / deliveries * 1e6, 2) if deliveries else None,
            "rss_kib_before": rss_before, "rss_kib_connected": rss_connected,
            "rss_kib_end": rss_end, "rss_mib_end": round(rss_end / 1024, 1),
            "rss_per_connection_kib": round((rss_connected - rss_before) / subscribed, 2)
            if subscribed else None,
            "log_tail": server_log.splitlines()[-5:],
        },
        "generator": {
            "workers": args.workers,
            "cpu_pct": round(gen_cpu / window_s * 100, 1),
            "user_pct": round((gen1[0] - gen0[0]) / window_s * 100, 1),
            "system_pct": round((gen1[1] - gen0[1]) / window_s * 100, 1),
            "cpu_us_per_delivery": round(gen_cpu / deliveries * 1e6, 2) if deliveries else None,
            "busiest_worker_pct": round(busiest / window_s * 100, 1),
        },
        "samples": samples,
    })
    if kind == "ours":
        assert isinstance(server, OurServer)
        result["order_flow"] = flow_summary
        if stats0 is not None and stats1 is not None:
            result["server_stats_window"] = {
                key: stats1[key] - stats0[key] for key in
                ("slow_consumer_disconnects", "heartbeat_timeouts", "messages_dropped",
                 "messages_sent_total", "commands") if key in stats1 and key in stats0}
            result["server_stats_end"] = stats1
    if probes:
        rtts = sorted(rtt for sent, rtt in probe_result.get("samples", [])
                      if t0_ns <= sent < t1_ns)
        result["subscribe_rtt_ms"] = report.latency_summary(rtts) | {"samples": len(rtts)}
        result["probe_errors"] = probe_result.get("errors", ["no result from the probes"])
    if stall:
        result["stalled_clients"] = _stall_report(results, samples)
    return result, latencies


def _figures(results: list[dict[str, Any]], *, kind: str, clients: int, rate: float,
             duration: float, stalled: frozenset[int], t1_ns: int
             ) -> tuple[dict[str, Any], list[int]]:
    """Merge the workers' results into one run's figures."""
    latencies: list[int] = []
    for result in results:
        values = array("q")
        values.frombytes(result["latencies_ns"])
        latencies.extend(values)
    latencies.sort()
    closes: Counter[str] = Counter()
    failures: Counter[str] = Counter()
    for result in results:
        closes.update(result["closes"])
        failures.update(result["failures"])
    wseq = [entry for result in results for entry in result["wseq"]]
    first_seq = min((first for _, first, _, _, _ in wseq if first >= 0), default=0)
    last_seq = max((last for _, _, last, _, _ in wseq), default=-1)
    published = last_seq - first_seq + 1 if last_seq >= 0 else 0
    # Messages of the window a healthy client never got because it was closed first.
    missed_after_close = sum(
        (last_seq - last) if last >= 0 else published
        for _, _, last, closed, at in wseq if closed and at < t1_ns + 10**9)
    missed_gaps = sum(r["missed"] for r in results)
    subscribed = sum(r["subscribed"] for r in results)
    deliveries = len(latencies)
    rx_bytes = sum(r["rx_bytes"] for r in results)
    received = sum(r["received_total"] for r in results)
    return {
        "server_kind": kind,
        "clients": clients,
        "subscribed": subscribed,
        "stalled": len(stalled),
        "rate": rate,
        "duration_s": duration,
        "deliveries": deliveries,
        "published": published,
        "deliveries_per_s": round(deliveries / duration),
        "published_per_s": round(published / duration, 1),
        "latency_ms": report.latency_summary(latencies),
        "missed": missed_gaps + missed_after_close,
        "missed_gaps": missed_gaps,
        "missed_after_close": missed_after_close,
        "missed_outside_window": sum(r["missed_outside_window"] for r in results),
        "reordered": sum(r["reordered"] for r in results),
        "slow_consumer_disconnects": closes.get(str(SLOW_CONSUMER), 0),
        "closes": dict(closes),
        "connect_failures": dict(failures),
        "pings_answered": sum(r["pings_answered"] for r in results),
        "bytes_per_message": round(rx_bytes / received, 1) if received else None,
        "workers_reporting": len(results),
    }, latencies


def _stall_report(results: list[dict[str, Any]], samples: list[dict[str, Any]]
                  ) -> dict[str, Any]:
    drained = [entry for result in results for entry in result["stalled"]]
    first_slow = next((s["t"] for s in samples if s.get("slow_consumer_disconnects")), None)
    first_heartbeat = next((s["t"] for s in samples if s.get("heartbeat_timeouts")), None)
    rss = [s["rss_kib"] for s in samples]
    return {
        "drained": drained,
        "close_codes_seen": [entry["close_code"] for entry in drained],
        "server_slow_consumer_close_at_s": first_slow,
        "server_heartbeat_close_at_s": first_heartbeat,
        "rss_kib_min_max": [min(rss), max(rss)] if rss else None,
        "rss_kib_growth_first_to_last": rss[-1] - rss[0] if rss else None,
        "rss_kib_series": rss,
    }


# ---------------------------------------------------------------------- modes


def mode_load(args: argparse.Namespace) -> dict[str, Any]:
    kinds = ["ours", "baseline"] if args.server == "both" else [args.server]
    runs: dict[str, list[dict[str, Any]]] = {kind: [] for kind in kinds}
    curves: dict[str, list[int]] = {}
    for repeat in range(args.repeat):
        order = kinds if repeat % 2 == 0 else kinds[::-1]
        for kind in order:
            result, lat = run_once(args, kind, clients=args.clients, rate=args.rate,
                                   duration=args.duration, label=f"{kind} #{repeat + 1}")
            runs[kind].append(result)
            curves.setdefault(kind, report.downsample(lat))
    out: dict[str, Any] = {"mode": "load", "runs": runs,
                           "medians": {k: report.medians(v) for k, v in runs.items()}}
    columns = [(kind, _median_view(runs[kind])) for kind in kinds]
    if len(kinds) == 2:
        m = out["medians"]
        out["ratio_ours_over_baseline"] = {
            key: report.ratio(m["ours"].get(key), m["baseline"].get(key))
            for key in ("deliveries_per_s", "latency_ms.p50", "latency_ms.p99", "server.cpu_pct",
                        "server.rss_per_connection_kib")}
    print(f"\nFan-out load: {args.clients:,} clients, {args.rate:g} msg/s, "
          f"{args.duration:g} s measured, median of {args.repeat}")
    report.print_table(columns, ratio_of=(0, 1) if len(kinds) == 2 else None)
    _plot(args, [(f"{k} (run 1)", v) for k, v in curves.items()],
          f"{args.clients:,} clients, {args.rate:g} msg/s")
    return out


def _median_view(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """A run-shaped dict holding the medians, for the table (the run itself when only one)."""
    if len(runs) == 1:
        return runs[0]
    view: dict[str, Any] = {"subscribed": runs[0]["subscribed"]}
    for key, value in report.medians(runs).items():
        if "." in key:
            outer, inner = key.split(".", 1)
            view.setdefault(outer, {})[inner] = value
        else:
            view[key] = value
    server = view.setdefault("server", {})
    if server.get("rss_kib_end") is not None:
        server["rss_mib_end"] = round(server["rss_kib_end"] / 1024, 1)
    return view


def _step_ok(result: dict[str, Any], args: argparse.Namespace) -> tuple[bool, str]:
    p99 = result["latency_ms"]["p99"]
    if result["subscribed"] < result["clients"]:
        return False, "not every client subscribed"
    if p99 is None:
        return False, "no delivery"
    if p99 > args.p99_limit_ms:
        return False, f"p99 {p99} ms > {args.p99_limit_ms} ms"
    if result["missed"]:
        return False, f"{result['missed']} messages missed"
    if result["slow_consumer_disconnects"]:
        return False, f"{result['slow_consumer_disconnects']} slow-consumer disconnects"
    if result["published_per_s"] < 0.9 * result["rate"]:
        return False, (f"published only {result['published_per_s']} msg/s of "
                       f"{result['rate']:g}")
    return True, "ok"


def mode_sweep(args: argparse.Namespace) -> dict[str, Any]:
    """Rates rise step by step; at each rate every server still standing runs once.

    The servers take turns at each rate, so both see the same machine load. A
    failed step is run again ``--sweep-retries`` times (this machine is shared and
    noisy); the server stops at the first rate that fails every attempt.
    """
    kinds = ["ours", "baseline"] if args.server == "both" else [args.server]
    out: dict[str, Any] = {"mode": "sweep", "steps": {k: [] for k in kinds},
                           "best": dict.fromkeys(kinds)}
    curves = []
    budget_end = time.monotonic() + args.sweep_max_seconds
    rate, standing, step_s = args.rate, list(kinds), 0.0
    while standing:
        for kind in list(standing):
            for attempt in range(1 + args.sweep_retries):
                if time.monotonic() + step_s > budget_end:
                    out["steps"][kind].append({"rate": rate, "stopped": "time budget"})
                    standing.remove(kind)
                    break
                t = time.monotonic()
                result, lat = run_once(args, kind, clients=args.clients, rate=rate,
                                       duration=args.duration,
                                       label=f"{kind} @{rate:g}/s try {attempt + 1}")
                step_s = max(step_s, time.monotonic() - t)
                ok, why = _step_ok(result, args)
                result["sustainable"], result["verdict"] = ok, why
                out["steps"][kind].append(result)
                log(f"[sweep {kind}] rate {rate:g}/s try {attempt + 1}: "
                    f"{result['deliveries_per_s']:,} deliveries/s, p99 "
                    f"{result['latency_ms']['p99']} ms, missed {result['missed']}: {why}")
                if ok:
                    curves.append((f"{kind} {rate:g}/s", report.downsample(lat, 500)))
                    best = result
                    out["best"][kind] = {
                        "rate": best["rate"], "deliveries_per_s": best["deliveries_per_s"],
                        "latency_ms": best["latency_ms"],
                        "server_cpu_pct": best["server"]["cpu_pct"]}
                    break
            else:
                curves.append((f"{kind} {rate:g}/s (fails)", report.downsample(lat, 500)))
                standing.remove(kind)
        rate = round(rate * args.sweep_factor, 2)
    print(f"\nSweep: {args.clients:,} clients, x{args.sweep_factor} per step, "
          f"sustainable = p99 <= {args.p99_limit_ms} ms and nothing missed")
    for kind in kinds:
        best = out["best"][kind]
        print(f"  {kind:9s} highest sustainable: "
              + ("none" if best is None else
                 f"{best['deliveries_per_s']:,} deliveries/s at {best['rate']:g} msg/s "
                 f"(p99 {best['latency_ms']['p99']} ms)"))
    if len(kinds) == 2:
        ours, theirs = out["best"]["ours"], out["best"]["baseline"]
        out["ratio_ours_over_baseline"] = report.ratio(
            ours and ours["deliveries_per_s"], theirs and theirs["deliveries_per_s"])
        print(f"  ratio ours / baseline: {out['ratio_ours_over_baseline']}")
    _plot(args, curves, f"sweep, {args.clients:,} clients")
    return out


def mode_hold(args: argparse.Namespace) -> dict[str, Any]:
    runs = []
    for repeat in range(args.repeat):
        result, _ = run_once(args, "ours", clients=args.hold, rate=args.rate,
                             duration=args.duration, probes=args.probes,
                             label=f"hold #{repeat + 1}")
        runs.append(result)
    med = report.medians(runs)
    print(f"\nHold: {args.hold:,} connections for {args.duration:g} s, "
          f"ping every {args.ping_interval:g} s, {args.rate:g} msg/s, median of {args.repeat}")
    report.print_table([("ours", _median_view(runs))])
    for run in runs:
        print(f"  run {run['label']}: subscribed {run['subscribed']:,}, closes {run['closes']}, "
              f"pings answered {run['pings_answered']:,}, "
              f"probe samples {run['subscribe_rtt_ms']['samples']}, "
              f"probe errors {run['probe_errors']}")
    return {"mode": "hold", "runs": runs, "medians": med}


def mode_stall(args: argparse.Namespace) -> dict[str, Any]:
    control_runs, stall_runs, curves = [], [], []
    for repeat in range(args.repeat):
        order = ("control", "stall") if repeat % 2 == 0 else ("stall", "control")
        for which in order:
            result, lat = run_once(
                args, "ours", clients=args.clients, rate=args.rate, duration=args.duration,
                stall=args.stall if which == "stall" else 0, label=f"{which} #{repeat + 1}")
            (stall_runs if which == "stall" else control_runs).append(result)
            if repeat == 0:
                curves.append((f"{which} (healthy clients)", report.downsample(lat)))
    control_p99 = report.medians(control_runs).get("latency_ms.p99")
    stall_p99 = report.medians(stall_runs).get("latency_ms.p99")
    out = {
        "mode": "stall", "control_runs": control_runs, "stall_runs": stall_runs,
        "healthy_p99_ms": {"control": control_p99, "with_stalled": stall_p99},
        "healthy_p99_ratio": report.ratio(stall_p99, control_p99),
        "per_repeat_p99_ratio": [report.ratio(s["latency_ms"]["p99"], c["latency_ms"]["p99"])
                                 for s, c in zip(stall_runs, control_runs, strict=True)],
        "stalled": [run["stalled_clients"] for run in stall_runs],
    }
    print(f"\nStall: {args.stall} of {args.clients:,} clients stop reading; {args.rate:g} msg/s, "
          f"{args.duration:g} s, median of {args.repeat}")
    report.print_table([("no stalled", _median_view(control_runs)),
                        ("with stalled", _median_view(stall_runs))], ratio_of=(1, 0))
    for run in stall_runs:
        info = run["stalled_clients"]
        print(f"  {run['label']}: stalled closed with {info['close_codes_seen']}, server "
              f"slow-consumer close at {info['server_slow_consumer_close_at_s']} s, heartbeat "
              f"close at {info['server_heartbeat_close_at_s']} s after the flow started; RSS "
              f"{info['rss_kib_min_max']} KiB (min, max)")
    _plot(args, curves, f"stall: {args.stall} of {args.clients:,} clients stop reading")
    return out


def _plot(args: argparse.Namespace, series: list[tuple[str, list[int]]], title: str) -> None:
    if args.no_plot or not series:
        return
    from bench.plot import latency_cdf  # noqa: PLC0415 - matplotlib only when plotting

    path = args.plot or args.output.with_suffix(".png")
    latency_cdf(series, path, title)


# ------------------------------------------------------------------------ cli


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.load",
                                     description=__doc__.split("\n\n")[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--sweep", action="store_true", help="raise the rate until it breaks")
    mode.add_argument("--hold", type=int, metavar="N", help="hold N connections (ours)")
    mode.add_argument("--stall", type=int, metavar="K", help="K clients stop reading (ours)")
    parser.add_argument("--server", choices=("ours", "baseline", "both"),
                        help="server(s) to measure (default: ours; both for --sweep)")
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--rate", type=float,
                        help="messages published per second (default 50; 0 with --hold; "
                             "the first step, 20, with --sweep)")
    parser.add_argument("--duration", type=float,
                        help="measured seconds (default 20; 10 per sweep step; 60 with --hold; "
                             "40 with --stall)")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds excluded first")
    parser.add_argument("--grace", type=float, default=2.0,
                        help="seconds to keep reading after the window (late deliveries)")
    parser.add_argument("--repeat", type=int, default=1, help="runs per server; medians")
    parser.add_argument("--workers", type=int, default=2, help="load generator processes")
    parser.add_argument("--per-source", type=int, default=5000,
                        help="clients per source address (127.0.0.2, .3, ...)")
    parser.add_argument("--inflight", type=int, default=64,
                        help="handshakes in flight per worker")
    parser.add_argument("--path", default="/ws",
                        help="/ws (subscribe message) or /ws/trades?symbol=BTC-USDT")
    parser.add_argument("--ping-interval", type=float, default=5.0)
    parser.add_argument("--fsync", choices=("batch", "always", "off"), default="batch",
                        help="our journal's fsync policy")
    parser.add_argument("--driver-connections", type=int, default=None,
                        help="REST keep-alive connections of the order flow "
                             "(default: one per 5 msg/s, at least 4)")
    parser.add_argument("--connect-timeout", type=float, default=None)
    parser.add_argument("--probes", type=int, default=4, help="probe clients with --hold")
    parser.add_argument("--probe-interval", type=float, default=0.25)
    parser.add_argument("--sweep-factor", type=float, default=1.5)
    parser.add_argument("--sweep-max-seconds", type=float, default=1200.0,
                        help="time budget of the whole sweep")
    parser.add_argument("--sweep-retries", type=int, default=1,
                        help="runs again of a failed step before the server is out")
    parser.add_argument("--p99-limit-ms", type=float, default=50.0)
    parser.add_argument("--output", type=Path, help="JSON path (default bench/results/<mode>.json)")
    parser.add_argument("--plot", type=Path, help="PNG path (default: the JSON's, .png)")
    parser.add_argument("--no-plot", action="store_true")
    args = parser.parse_args(argv)
    if args.sweep:
        args.server = args.server or "both"
        args.duration = args.duration or 10.0
        args.rate = 20.0 if args.rate is None else args.rate
        name = "sweep"
    elif args.hold:
        args.server = "ours"
        args.duration = args.duration or 60.0
        args.rate = 0.0 if args.rate is None else args.rate
        name = "hold"
    elif args.stall:
        args.server = "ours"
        args.duration = args.duration or 40.0
        name = "stall"
    else:
        args.server = args.server or "ours"
        name = "load" if args.server == "ours" else "load_baseline"
    args.rate = 50.0 if args.rate is None else args.rate
    args.duration = args.duration or 20.0
    args.output = args.output or RESULTS / f"{name}.json"
    if args.server != "ours" and args.rate <= 0:
        parser.error("the baseline needs --rate > 0")
    return args


MODES: dict[str, Callable[[argparse.Namespace], dict[str, Any]]] = {
    "sweep": mode_sweep, "hold": mode_hold, "stall": mode_stall, "load": mode_load}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    soft, hard = raise_nofile()
    mode = "sweep" if args.sweep else "hold" if args.hold else "stall" if args.stall else "load"
    started = time.time()
    out = MODES[mode](args)
    out["command"] = "python -m bench.load " + " ".join(sys.argv[1:] if argv is None else argv)
    out["environment"] = {
        "git": git_revision(), "python": platform.python_version(),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "load_average_end": os.getloadavg(), "nofile": [soft, hard],
        "started_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(started)),
        "elapsed_s": round(time.time() - started, 1),
    }
    out["settings"] = {key: str(value) if isinstance(value, Path) else value
                       for key, value in vars(args).items()}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(out, indent=2) + "\n")
    print(f"results: {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
