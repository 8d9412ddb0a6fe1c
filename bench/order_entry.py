"""Order entry: acked orders/s and ack latency through four front doors, one order mix.

``python -m bench.order_entry`` (the ``bench_order_entry`` nox session; see
bench/README.md, "Order entry") drives the same closed-loop order mix through:

* ``ours_rest``: our ``POST /api/v1/orders`` (hypercorn + quart-trio), durable
  (``journal.fsync = "batch"``);
* ``ours_ws``: our WebSocket order entry, ``place`` requests on ``/ws?token=...``;
* ``matching_engine``: matching-engine 0.1.1's ``POST /markets/BTC-USDT/orders``
  (uvicorn + httptools + FastAPI), durable with its default fsync;
* ``bare_asgi``: ``bench.bare_asgi``, a handler that reads the body and answers
  201 on hypercorn's trio worker: the ceiling of our REST stack.

Rules of this module:

* Every run starts its server fresh (``bench.servers``: loopback, port 0, a temporary
  data directory, the limits raised out of the way of the load) and stops it
  (SIGINT, then SIGKILL) whatever happens. Systems are interleaved: each round runs
  every system once, the order rotated from round to round, at each concurrency.
* The load is ``--workers`` processes of ``bench.order_load`` raw clients, one
  connection per user, each in a closed loop (``--pipeline`` requests in flight on
  the WebSocket, one on HTTP). A run is ``--warmup`` seconds, then ``--duration``
  seconds measured (replies completing inside the window count), then at most
  ``--grace`` seconds for the replies still in flight. Every wait has a deadline.
* The generator's own CPU (per worker, user and system) is measured over the
  window from /proc, next to the server's, so a reader can see whether the
  generator was saturated.
* Figures per run, then the median over rounds per system; ratios both as a ratio
  of medians and per round. Targets are printed and recorded, never enforced by the
  exit status. JSON to ``bench/results/order_entry.json``, a PNG chart next to it.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import multiprocessing
import os
import platform
import secrets
import statistics
import sys
import time
from array import array
from collections import Counter
from pathlib import Path
from typing import Any

from bench import report
from bench.load import git_revision, log
from bench.order_load import (
    ACKED,
    CONNECTED,
    ERRORS,
    FAILED,
    ROW,
    LoadSpec,
    http_request,
    order_mix,
    our_order,
    worker_main,
    ws_handshake,
    ws_place,
)
from bench.servers import (
    BareAsgiServer,
    MatchingEngineServer,
    OurServer,
    ServerProcess,
    cpu_seconds,
    processes_cpu,
    raise_nofile,
    spawn_worker,
)

RESULTS = Path(__file__).resolve().parent / "results"
SYSTEMS = ("ours_ws", "ours_rest", "matching_engine", "bare_asgi")
LABELS = {
    "ours_ws": "ours WebSocket",
    "ours_rest": "ours REST",
    "matching_engine": "matching-engine REST",
    "bare_asgi": "bare ASGI (hypercorn-trio)",
}
_MP = multiprocessing.get_context("fork")
_BIG = 1_000_000


# ------------------------------------------------------------------ servers


def order_rate_keys() -> list[str]:
    """The per-user order-rate limit keys this gateway knows (none before they existed)."""
    import attrs  # noqa: PLC0415 - only the gateway's config needs it

    from gateway import LimitSettings  # noqa: PLC0415

    known = attrs.fields_dict(LimitSettings)
    return [key for key in ("orders_per_second", "order_burst") if key in known]


def our_limits() -> dict[str, Any]:
    """Every per-connection and per-user limit of ours raised out of the load's way."""
    limits: dict[str, Any] = {
        "messages_per_second": float(_BIG), "message_burst": _BIG,
        "rest_requests_per_second": float(_BIG), "rest_burst": _BIG,
    }
    for key in order_rate_keys():
        limits[key] = float(_BIG) if key.endswith("per_second") else _BIG
    return limits


def start_server(system: str, fsync: str) -> ServerProcess:
    server: ServerProcess
    if system in ("ours_rest", "ours_ws"):
        server = OurServer(ping_interval=20.0, fsync=fsync, extra={"limits": our_limits()})
    elif system == "matching_engine":
        server = MatchingEngineServer()
    else:
        server = BareAsgiServer()
    server.start()
    return server


def build_requests(system: str, server: ServerProcess, connections: int, cycle: int,
                   seed: int) -> tuple[list[list[bytes]], list[bytes], int]:
    """Per connection, its cycle of pre-built requests; the WebSocket handshakes; the port."""
    from gateway import issue_token  # noqa: PLC0415 - the project is installed in every session

    if isinstance(server, OurServer):
        secret, port = server.secret, (server.ws_port if system == "ours_ws" else server.rest_port)
    else:
        assert isinstance(server, (BareAsgiServer, MatchingEngineServer))
        secret, port = secrets.token_hex(32), server.rest_port  # same bytes, token unused
    host = f"127.0.0.1:{port}"
    requests: list[list[bytes]] = []
    handshakes: list[bytes] = []
    for n in range(connections):
        mix = order_mix(n, cycle, seed)
        if system == "matching_engine":  # no auth: the account is trusted as sent
            requests.append([http_request(
                "/markets/BTC-USDT/orders", host,
                json.dumps({"account": n + 1, "side": side, "price": price,
                            "quantity": our_order(side, price)["quantity"]},
                           separators=(",", ":")).encode())
                for side, price in mix])
            continue
        token = issue_token(secret, f"u{n}", ttl=3600)
        if system == "ours_ws":
            requests.append([ws_place(i, side, price) for i, (side, price) in enumerate(mix)])
            handshakes.append(ws_handshake(host, f"/ws?token={token}"))
        else:
            requests.append([http_request(
                "/api/v1/orders", host,
                json.dumps(our_order(side, price), separators=(",", ":")).encode(),
                (f"Authorization: Bearer {token}",)) for side, price in mix])
    return requests, handshakes, port


def _our_stats(port: int) -> dict[str, Any] | None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", "/stats")
        return json.loads(conn.getresponse().read())  # type: ignore[no-any-return]
    except (OSError, http.client.HTTPException, ValueError):
        return None
    finally:
        conn.close()


# --------------------------------------------------------------------- runs


def run_once(args: argparse.Namespace, system: str, connections: int, round_index: int
             ) -> tuple[dict[str, Any], list[int]]:
    """One measured run against a fresh server: its figures and sorted latencies (ns)."""
    label = f"{system} c={connections} r={round_index + 1}"
    load_before = os.getloadavg()
    server = start_server(system, args.fsync)
    workers: list[Any] = []
    pipes: list[Any] = []
    results: list[dict[str, Any]] = []
    stats_end = None
    try:
        requests, handshakes, port = build_requests(system, server, connections, args.cycle,
                                                    args.seed)
        kind = "ws" if system == "ours_ws" else "http"
        nworkers = max(1, min(args.workers, connections))
        connect_timeout = 30.0 + connections * 0.05
        hard_deadline = (time.monotonic() + connect_timeout + args.warmup + args.duration
                         + args.grace + 30.0)
        counters = _MP.Array("q", nworkers * ROW, lock=False)
        for index in range(nworkers):
            ids = list(range(index, connections, nworkers))
            spec = LoadSpec(
                index=index, kind=kind, host="127.0.0.1", port=port, connection_ids=ids,
                requests=[requests[i] for i in ids],
                handshakes=[handshakes[i] for i in ids] if handshakes else [],
                success_status=200 if system == "matching_engine" else 201,
                pipeline=args.pipeline if kind == "ws" else 1, hard_deadline=hard_deadline)
            process, pipe = spawn_worker(worker_main, spec, counters, f"order-load-{index}")
            workers.append(process)
            pipes.append(pipe)

        def total(slot: int) -> int:
            return sum(counters[i * ROW + slot] for i in range(nworkers))

        deadline = time.monotonic() + connect_timeout
        while time.monotonic() < deadline and total(CONNECTED) + total(FAILED) < connections:
            time.sleep(0.02)
        connected = total(CONNECTED)
        if connected < connections:
            log(f"[{label}] only {connected} of {connections} connections opened")

        go = time.monotonic()
        t0, t1 = go + args.warmup, go + args.warmup + args.duration
        end = t1 + args.grace
        for pipe in pipes:
            pipe.send(("go", int(t0 * 1e9), int(t1 * 1e9), int(end * 1e9)))
        marks = [("t0", t0), ("t1", t1)]
        cpu0 = cpu1 = 0.0
        at0, at1 = t0, t1
        gen0 = gen1 = (0.0, 0.0, [0.0] * nworkers)
        prev_acked, prev_t = 0, go
        next_tick = go + 1.0
        while marks:
            wake = min(next_tick, marks[0][1])
            now = time.monotonic()
            if wake > now:
                time.sleep(wake - now)
            now = time.monotonic()
            if now >= marks[0][1]:
                name, _ = marks.pop(0)
                if name == "t0":
                    cpu0, at0, gen0 = cpu_seconds(server.pid), now, processes_cpu(workers)
                else:
                    cpu1, at1, gen1 = cpu_seconds(server.pid), now, processes_cpu(workers)
                continue
            next_tick += 1.0
            acked_now = total(ACKED)
            log(f"[{label} {now - go:5.1f}s] {'warm-up' if now < t0 else 'measure'}  "
                f"acked {(acked_now - prev_acked) / (now - prev_t):,.0f}/s  "
                f"errors {total(ERRORS):,}")
            prev_acked, prev_t = acked_now, now

        collect_by = end + 10.0
        for pipe in pipes:
            if pipe.poll(max(0.1, collect_by - time.monotonic())):
                results.append(pipe.recv())
            else:
                with contextlib.suppress(OSError):
                    pipe.send(("stop",))
                if pipe.poll(5.0):
                    results.append(pipe.recv())
        if isinstance(server, OurServer):
            stats_end = _our_stats(server.rest_port)
    finally:
        for proc in workers:
            proc.join(timeout=5)
            if proc.is_alive():
                proc.kill()
                proc.join(timeout=5)
        server_log = server.log_tail(10)
        exit_code = server.stop()

    window_s = max(at1 - at0, 1e-3)
    result, latencies = merge(results, system=system, connections=connections,
                              duration=window_s)
    busiest = max((b - a for a, b in zip(gen0[2], gen1[2], strict=True)), default=0.0)
    gen_cpu = (gen1[0] - gen0[0]) + (gen1[1] - gen0[1])
    acked = result["acked"]
    if busiest / window_s > 0.8:
        log(f"[{label}] warning: a load worker used {busiest / window_s:.0%} of a core; the "
            "generator may be the bottleneck (more --workers?)")
    if acked == 0:
        log(f"[{label}] warning: no order acknowledged; errors {result['errors']}, "
            f"samples {result['error_samples'][:2]}")
    result.update({
        "round": round_index + 1,
        "load_average": {"before": load_before, "after": os.getloadavg()},
        "server": {
            "cpu_pct": round((cpu1 - cpu0) / window_s * 100, 1),
            "cpu_us_per_ack": round((cpu1 - cpu0) / acked * 1e6, 1) if acked else None,
            "exit_code": exit_code,
            "log_tail": server_log.splitlines()[-5:],
        },
        "generator": {
            "workers": len(workers),
            "cpu_pct": round(gen_cpu / window_s * 100, 1),
            "user_pct": round((gen1[0] - gen0[0]) / window_s * 100, 1),
            "system_pct": round((gen1[1] - gen0[1]) / window_s * 100, 1),
            "busiest_worker_pct": round(busiest / window_s * 100, 1),
            "cpu_us_per_ack": round(gen_cpu / acked * 1e6, 1) if acked else None,
        },
    })
    if stats_end is not None:
        result["server_stats_end"] = stats_end
    return result, latencies


def merge(results: list[dict[str, Any]], *, system: str, connections: int, duration: float
          ) -> tuple[dict[str, Any], list[int]]:
    """The workers' results as one run's figures (pure: the test feeds it directly)."""
    latencies: list[int] = []
    for result in results:
        values = array("q")
        values.frombytes(result["latencies_ns"])
        latencies.extend(values)
    latencies.sort()
    counts: dict[str, Counter[str]] = {key: Counter() for key in
                                       ("errors", "statuses", "failures", "other_messages")}
    for result in results:
        for key, counter in counts.items():
            counter.update(result[key])
    acked = sum(r["acked"] for r in results)
    timeline = [sum(column) for column in zip(*(r["timeline"] for r in results), strict=False)]
    return {
        "system": system,
        "label": LABELS[system],
        "connections": connections,
        "connected": sum(r["connected"] for r in results),
        "window_s": round(duration, 3),
        "acked": acked,
        "acked_per_s": round(acked / duration, 1),
        "errors": dict(counts["errors"]),
        "error_count": sum(counts["errors"].values()),
        "error_samples": [s for r in results for s in r["error_samples"]][:5],
        "latency_ms": report.latency_summary(latencies),
        "statuses": dict(counts["statuses"]),
        "acked_total": sum(r["acked_total"] for r in results),
        "errors_total": sum(r["errors_total"] for r in results),
        "sent": sum(r["sent"] for r in results),
        "inflight_at_end": sum(r["inflight_at_end"] for r in results),
        "connect_failures": dict(counts["failures"]),
        "other_messages": dict(counts["other_messages"]),
        "slow_path_replies": sum(r["slow_path_replies"] for r in results),
        "acked_per_second_timeline": timeline,
        "workers_reporting": len(results),
    }, latencies


# ------------------------------------------------------------------ summary


def _median(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return round(statistics.median(present), 3) if present else None


def summarize(runs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per concurrency and system, the median of each figure over the rounds."""
    out: dict[str, dict[str, Any]] = {}
    for run in runs:
        out.setdefault(str(run["connections"]), {}).setdefault(run["system"], []).append(run)
    summary: dict[str, dict[str, Any]] = {}
    for conns, systems in out.items():
        summary[conns] = {}
        for system, group in systems.items():
            summary[conns][system] = {
                "rounds": len(group),
                "acked_per_s": _median([r["acked_per_s"] for r in group]),
                "acked_per_s_per_round": [r["acked_per_s"] for r in group],
                "p50_ms": _median([r["latency_ms"]["p50"] for r in group]),
                "p99_ms": _median([r["latency_ms"]["p99"] for r in group]),
                "p99_9_ms": _median([r["latency_ms"]["p99.9"] for r in group]),
                "max_ms": _median([r["latency_ms"]["max"] for r in group]),
                "errors": sum(r["error_count"] for r in group),
                "server_cpu_pct": _median([r["server"]["cpu_pct"] for r in group]),
                "server_cpu_us_per_ack": _median([r["server"]["cpu_us_per_ack"] for r in group]),
                "generator_cpu_pct": _median([r["generator"]["cpu_pct"] for r in group]),
                "generator_cpu_us_per_ack": _median(
                    [r["generator"]["cpu_us_per_ack"] for r in group]),
                "generator_busiest_worker_pct": max(
                    r["generator"]["busiest_worker_pct"] for r in group),
            }
    return summary


RATIOS = (("ws_vs_matching_engine", "ours_ws", "matching_engine"),
          ("rest_vs_bare_asgi", "ours_rest", "bare_asgi"))


def ratios(runs: list[dict[str, Any]], summary: dict[str, dict[str, Any]]
           ) -> dict[str, dict[str, Any]]:
    """acked/s ratios: of the medians, and within each round (steadier on a noisy host).

    ``per_server_cpu`` compares orders per second of the server's own CPU (the inverse
    ratio of the CPU per ack): on a machine where the servers do not get a whole core,
    it says which one would be faster given the same CPU.
    """
    out: dict[str, dict[str, Any]] = {}
    for conns, systems in summary.items():
        out[conns] = {}
        for name, a, b in RATIOS:
            if a not in systems or b not in systems:
                continue
            per_round = []
            for r in sorted({run["round"] for run in runs}):
                pick = {run["system"]: run["acked_per_s"] for run in runs
                        if run["round"] == r and str(run["connections"]) == conns}
                per_round.append(report.ratio(pick.get(a), pick.get(b)))
            out[conns][name] = {
                "of_medians": report.ratio(systems[a]["acked_per_s"], systems[b]["acked_per_s"]),
                "per_round": per_round,
                "per_server_cpu": report.ratio(systems[b]["server_cpu_us_per_ack"],
                                               systems[a]["server_cpu_us_per_ack"]),
            }
    return out


def targets(summary: dict[str, dict[str, Any]], ratio_table: dict[str, dict[str, Any]]
            ) -> list[dict[str, Any]]:
    """The issue's targets against these figures (reported, not enforced)."""
    out: list[dict[str, Any]] = []

    def add(name: str, value: float | None, wanted: str, met: bool | None) -> None:
        out.append({"target": name, "measured": value, "wanted": wanted,
                    "met": met if value is not None else None})

    s64 = summary.get("64", {})
    r64 = ratio_table.get("64", {})
    ws = r64.get("ws_vs_matching_engine", {}).get("of_medians")
    add("WebSocket acked/s vs matching-engine REST, 64 connections", ws, ">= 4.0x",
        ws is not None and ws >= 4.0)
    p99 = s64.get("ours_ws", {}).get("p99_ms")
    add("WebSocket p99 ms, 64 connections", p99, "<= 10 ms", p99 is not None and p99 <= 10.0)
    for conns, systems in summary.items():
        rest = ratio_table.get(conns, {}).get("rest_vs_bare_asgi", {}).get("of_medians")
        add(f"REST acked/s vs bare ASGI, {conns} connections", rest, ">= 0.75x",
            rest is not None and rest >= 0.75)
        ours = systems.get("ours_rest", {})
        spread = report.ratio(ours.get("p99_ms"), ours.get("p50_ms"))
        add(f"REST p99 / p50, {conns} connections", spread, "<= 3.0",
            spread is not None and spread <= 3.0)
    return out


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def print_tables(summary: dict[str, dict[str, Any]], ratio_table: dict[str, dict[str, Any]],
                 target_list: list[dict[str, Any]]) -> None:
    header = ["conns", "system", "acked/s", "p50 ms", "p99 ms", "p99.9 ms", "errors",
              "server CPU %", "server us/ack", "gen CPU %", "gen busiest %", "gen us/ack",
              "acked/s per round"]
    rows = [header]
    for conns, systems in summary.items():
        for system in SYSTEMS:
            if system not in systems:
                continue
            s = systems[system]
            rows.append([conns, LABELS[system], _fmt(s["acked_per_s"], 0), _fmt(s["p50_ms"], 2),
                         _fmt(s["p99_ms"], 2), _fmt(s["p99_9_ms"], 2), _fmt(s["errors"]),
                         _fmt(s["server_cpu_pct"]), _fmt(s["server_cpu_us_per_ack"], 0),
                         _fmt(s["generator_cpu_pct"]), _fmt(s["generator_busiest_worker_pct"]),
                         _fmt(s["generator_cpu_us_per_ack"], 0),
                         " ".join(_fmt(v, 0) for v in s["acked_per_s_per_round"])])
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    for index, row in enumerate(rows):
        print("  ".join(cell.ljust(widths[i]) if i < 2 else cell.rjust(widths[i])
                        for i, cell in enumerate(row)))
        if index == 0:
            print("  ".join("-" * w for w in widths))
    print()
    for conns, table in ratio_table.items():
        for name, value in table.items():
            rounds = ", ".join(_fmt(v, 2) for v in value["per_round"])
            print(f"{conns} connections: {name} = {_fmt(value['of_medians'], 2)}x "
                  f"(per round: {rounds}; per server CPU second: "
                  f"{_fmt(value['per_server_cpu'], 2)}x)")
    print()
    for target in target_list:
        verdict = {True: "met", False: "MISSED", None: "not measured"}[target["met"]]
        print(f"target: {target['target']}: {_fmt(target['measured'], 2)} "
              f"(wanted {target['wanted']}): {verdict}")


def plot(summary: dict[str, dict[str, Any]], path: Path, title: str) -> bool:
    """Bars of acked/s and of p50/p99 latency per system and concurrency.

    False (and a note) without matplotlib.
    """
    try:
        import matplotlib  # noqa: PLC0415 - optional dependency

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # noqa: PLC0415
    except ImportError:
        print("plot: matplotlib is not installed; no PNG written")
        return False
    concurrencies = list(summary)
    systems = [s for s in SYSTEMS if any(s in summary[c] for c in concurrencies)]
    fig, (bars, lat) = plt.subplots(1, 2, figsize=(13, 5))
    width = 0.8 / max(1, len(systems))
    for i, system in enumerate(systems):
        xs = [c + (i - (len(systems) - 1) / 2) * width for c in range(len(concurrencies))]
        vals = [summary[c].get(system, {}).get("acked_per_s") or 0 for c in concurrencies]
        bars.bar(xs, vals, width, label=LABELS[system])
        p50 = [summary[c].get(system, {}).get("p50_ms") or 0 for c in concurrencies]
        p99 = [summary[c].get(system, {}).get("p99_ms") or 0 for c in concurrencies]
        lat.bar(xs, p99, width, color=f"C{i}", alpha=0.35)
        lat.bar(xs, p50, width, color=f"C{i}")
    for ax in (bars, lat):
        ax.set_xticks(range(len(concurrencies)))
        ax.set_xticklabels([f"{c} connections" for c in concurrencies])
        ax.grid(True, axis="y", linewidth=0.3)
    bars.set_ylabel("acked orders/s (median over rounds)")
    bars.legend(fontsize=8)
    lat.set_yscale("log")
    lat.set_ylim(bottom=0.1)
    lat.set_ylabel("ack latency ms (log scale)")
    lat.set_title("p50 (solid) and p99 (light), median over rounds", fontsize=9)
    lat.axhline(10, color="red", linewidth=0.7, linestyle="--",
                label="10 ms (WebSocket p99 target)")
    lat.legend(fontsize=8, loc="lower right")
    fig.suptitle(title)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(f"plot: {path}")
    return True


def _mount_of(path: Path) -> str:
    """The filesystem a path lives on (``/proc/mounts``): fsync on tmpfs would be free."""
    best = ("", "?", "?")
    with contextlib.suppress(OSError):
        for line in Path("/proc/mounts").read_text().splitlines():
            device, point, fstype = line.split()[:3]
            if str(path).startswith(point) and len(point) > len(best[0]):
                best = (point, fstype, device)
    return f"{best[1]} on {best[2]} (mounted at {best[0]})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.order_entry", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--systems", default=",".join(SYSTEMS),
                        help=f"comma-separated, of {', '.join(SYSTEMS)} (default: all)")
    parser.add_argument("--connections", default="64,256",
                        help="comma-separated concurrencies (default 64,256)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds per run")
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--grace", type=float, default=2.0,
                        help="seconds after the window for replies in flight")
    parser.add_argument("--workers", type=int, default=2, help="load generator processes")
    parser.add_argument("--pipeline", type=int, default=1,
                        help="WebSocket requests in flight per connection (default 1)")
    parser.add_argument("--cycle", type=int, default=64,
                        help="pre-built requests per connection, sent in a cycle")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--fsync", default="batch", choices=("batch", "always", "off"),
                        help="our journal's fsync policy (default batch)")
    parser.add_argument("--output", type=Path, default=RESULTS / "order_entry.json")
    parser.add_argument("--no-plot", action="store_true")
    args = parser.parse_args(argv)

    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    unknown = sorted(set(systems) - set(SYSTEMS))
    if unknown:
        parser.error(f"unknown system(s) {', '.join(unknown)}; choose from {', '.join(SYSTEMS)}")
    if "matching_engine" in systems:
        try:
            import fastapi  # noqa: F401, PLC0415
            import matching_engine  # noqa: F401, PLC0415
            import uvicorn  # noqa: F401, PLC0415
        except ImportError:
            parser.error("matching_engine needs matching-engine[gateway]==0.1.1 (Python 3.12): "
                         "run `nox -s bench_order_entry`, or leave it out with --systems")
    concurrencies = [int(c) for c in args.connections.split(",") if c.strip()]
    if args.pipeline < 1 or args.pipeline >= args.cycle:
        parser.error("--pipeline must be at least 1 and less than --cycle")
    if "ours_ws" in systems and args.pipeline > 1:
        log(f"ours_ws: {args.pipeline} requests in flight per connection")
    raise_nofile()
    started = time.time()
    raised = order_rate_keys()
    if not raised:
        log("note: this gateway has no limits.orders_per_second / order_burst; not set")

    runs: list[dict[str, Any]] = []
    for connections in concurrencies:
        for round_index in range(args.rounds):
            shift = round_index % len(systems)
            for position, system in enumerate(systems[shift:] + systems[:shift]):
                result, _ = run_once(args, system, connections, round_index)
                result["position_in_round"] = position + 1
                runs.append(result)
                lat = result["latency_ms"]
                log(f"[{system} c={connections} r={round_index + 1}] acked "
                    f"{result['acked_per_s']:,.0f}/s  p50 {_fmt(lat['p50'], 2)} ms  "
                    f"p99 {_fmt(lat['p99'], 2)} ms  errors {result['error_count']}  "
                    f"gen CPU {result['generator']['cpu_pct']}%")

    summary = summarize(runs)
    ratio_table = ratios(runs, summary)
    target_list = targets(summary, ratio_table)
    print_tables(summary, ratio_table, target_list)
    output = {
        "benchmark": "order_entry",
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "elapsed_s": round(time.time() - started, 1),
        "git": git_revision(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "temp_filesystem": _mount_of(Path(os.environ.get("TMPDIR", "/tmp")).resolve()),
        "config": {
            "systems": systems, "connections": concurrencies, "rounds": args.rounds,
            "duration_s": args.duration, "warmup_s": args.warmup, "grace_s": args.grace,
            "workers": args.workers, "pipeline_ws": args.pipeline, "cycle": args.cycle,
            "seed": args.seed, "our_fsync": args.fsync,
            "matching_engine_fsync": "default (ME_FSYNC=1, group commit of up to 512)",
            "our_limits_raised": our_limits(),
            "order_rate_limit_keys_present": raised,
            "order_mix": "limit GTC, quantity 0.01, alternating buy/sell per connection; buy at "
                         "50000.00 + k*0.01, sell at 50000.00 - k*0.01, k uniform in 1..10",
        },
        "summary": summary,
        "ratios": ratio_table,
        "targets": target_list,
        "runs": runs,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(output, indent=1) + "\n")
    print(f"\nresults: {args.output}")
    if not args.no_plot:
        plot(summary, args.output.with_suffix(".png"),
             f"order entry, closed loop, {args.duration:g} s x {args.rounds} rounds "
             f"({output['started_at']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
