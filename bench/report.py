"""Figures from raw run data: percentiles, medians over repeats, the printed tables.

Pure functions, no I/O besides ``print``: ``bench.load`` hands in what the workers,
the order flow and /proc produced, and gets back JSON-ready dicts.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from typing import Any

PERCENTILES = (("p50", 0.50), ("p90", 0.90), ("p99", 0.99), ("p99.9", 0.999))


def nearest_rank(sorted_values: Sequence[float], q: float) -> float:
    """The nearest-rank ``q`` quantile of an already sorted sequence (non-empty)."""
    index = max(0, math.ceil(q * len(sorted_values)) - 1)
    return sorted_values[min(index, len(sorted_values) - 1)]


def latency_summary(sorted_ns: Sequence[int]) -> dict[str, float | None]:
    """p50/p90/p99/p99.9/max and mean, in milliseconds (None when there is no sample)."""
    if not sorted_ns:
        return {name: None for name, _ in PERCENTILES} | {"max": None, "mean": None}
    summary: dict[str, float | None] = {
        name: round(nearest_rank(sorted_ns, q) / 1e6, 3) for name, q in PERCENTILES}
    summary["max"] = round(sorted_ns[-1] / 1e6, 3)
    summary["mean"] = round(sum(sorted_ns) / len(sorted_ns) / 1e6, 3)
    return summary


def _get(run: dict[str, Any], path: str) -> Any:
    value: Any = run
    for key in path.split(".", 1):  # one level of nesting; "latency_ms.p99.9" keeps its dot
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return value


MEDIAN_KEYS = (
    "deliveries_per_s", "latency_ms.p50", "latency_ms.p90", "latency_ms.p99",
    "latency_ms.p99.9", "latency_ms.max", "missed", "slow_consumer_disconnects",
    "server.cpu_pct", "server.rss_per_connection_kib", "server.rss_kib_end",
    "generator.cpu_pct", "generator.cpu_us_per_delivery", "published_per_s",
    "subscribe_rtt_ms.p99",
)


def medians(runs: Sequence[dict[str, Any]]) -> dict[str, float | None]:
    """The median of each figure of ``MEDIAN_KEYS`` over ``runs`` (dotted names)."""
    out: dict[str, float | None] = {}
    for key in MEDIAN_KEYS:
        values = [v for run in runs if isinstance(v := _get(run, key), (int, float))]
        if values:
            out[key] = round(statistics.median(values), 3)
    return out


def ratio(ours: float | None, theirs: float | None) -> float | None:
    if ours is None or theirs is None or theirs == 0:
        return None
    return round(ours / theirs, 3)


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


ROWS = (
    ("clients subscribed", "subscribed", 0),
    ("published msg/s", "published_per_s", 1),
    ("deliveries/s", "deliveries_per_s", 0),
    ("latency p50 ms", "latency_ms.p50", 2),
    ("latency p90 ms", "latency_ms.p90", 2),
    ("latency p99 ms", "latency_ms.p99", 2),
    ("latency p99.9 ms", "latency_ms.p99.9", 2),
    ("latency max ms", "latency_ms.max", 2),
    ("missed (seq)", "missed", 0),
    ("slow-consumer closes", "slow_consumer_disconnects", 0),
    ("server CPU % of a core", "server.cpu_pct", 1),
    ("server RSS MiB (end)", "server.rss_mib_end", 1),
    ("RSS per connection KiB", "server.rss_per_connection_kib", 2),
    ("subscribe RTT p99 ms", "subscribe_rtt_ms.p99", 2),
    ("generator CPU % (all)", "generator.cpu_pct", 1),
    ("generator us/delivery", "generator.cpu_us_per_delivery", 2),
)


def print_table(columns: Sequence[tuple[str, dict[str, Any]]], *,
                ratio_of: tuple[int, int] | None = None) -> None:
    """One row per figure, one column per run; a ratio column (a / b) if asked."""
    header = ["figure", *[name for name, _ in columns]]
    if ratio_of:
        header.append(f"{columns[ratio_of[0]][0]} / {columns[ratio_of[1]][0]}")
    rows = [header]
    for label, key, digits in ROWS:
        values = [_get(run, key) for _, run in columns]
        if all(v is None for v in values):
            continue
        row = [label, *[_fmt(v, digits) for v in values]]
        if ratio_of:
            r = ratio(values[ratio_of[0]], values[ratio_of[1]])
            row.append("-" if r is None else f"{r:.2f}x")
        rows.append(row)
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    for index, row in enumerate(rows):
        print("  ".join(cell.ljust(widths[0]) if i == 0 else cell.rjust(widths[i])
                        for i, cell in enumerate(row)))
        if index == 0:
            print("  ".join("-" * w for w in widths))


def downsample(sorted_values: Sequence[int], points: int = 2000) -> list[int]:
    """At most ``points`` values of a sorted sequence, evenly by rank, keeping both ends."""
    n = len(sorted_values)
    if n <= points:
        return list(sorted_values)
    step = (n - 1) / (points - 1)
    return [sorted_values[round(i * step)] for i in range(points)]
