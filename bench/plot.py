"""The latency CDF plot (log-x) of one or more runs, as a PNG.

matplotlib is imported lazily: the nox sessions install it, the test environment
does not (``--no-plot``). ``bench/results/*.png`` is gitignored: it is regenerated.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path


def latency_cdf(series: Sequence[tuple[str, Sequence[int]]], path: Path, title: str) -> bool:
    """Plot each ``(label, sorted latencies in ns)``; False (and a note) without matplotlib."""
    try:
        import matplotlib  # noqa: PLC0415 - optional dependency

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # noqa: PLC0415
    except ImportError:
        print("plot: matplotlib is not installed; no PNG written")
        return False
    fig, ax = plt.subplots(figsize=(8, 5))
    for label, values in series:
        if not values:
            continue
        n = len(values)
        xs = [max(v, 1_000) / 1e6 for v in values]  # ms; floor at 1 us for the log axis
        ys = [(i + 1) / n for i in range(n)] if n > 1 else [1.0]
        ax.plot(xs, ys, label=label, linewidth=1.5)
    ax.set_xscale("log")
    ax.set_xlabel("latency, published to received (ms, log scale)")
    ax.set_ylabel("fraction of deliveries")
    ax.set_ylim(0, 1.0)
    for q in (0.5, 0.9, 0.99):
        ax.axhline(q, color="grey", linewidth=0.5, linestyle=":")
    ax.axvline(50, color="red", linewidth=0.7, linestyle="--", label="50 ms (p99 target)")
    ax.grid(True, which="both", linewidth=0.3)
    ax.set_title(title)
    ax.legend(loc="lower right")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(f"plot: {path}")
    return True
