"""The scale-out load benchmark (bench/load_scaleout.py) in a tiny configuration, so it cannot rot.

A real run: ``redis-server``, an all-in-one server, then Redis + engine + one
gateway, 20 raw clients, 10 trades/s for 2 s each, the kill-a-gateway
drill with 2 clients, and the capacity mode with 500 orders. It checks that
the JSON holds every figure the README table quotes and that nothing was
missed; never any speed.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_tiny_scale_out_run(tmp_path: Path) -> None:
    if shutil.which("redis-server") is None:
        pytest.fail("redis-server is not installed: the scale-out benchmark needs it (Debian "
                    "package redis-server: apt-get install -y redis-server; .ci/run installs it)")
    output = tmp_path / "load_scaleout.json"
    result = subprocess.run(
        [sys.executable, "-m", "bench.load_scaleout", "--clients", "20", "--rate", "10",
         "--duration", "2", "--warmup", "0.5", "--grace", "1", "--gateways", "1",
         "--drill-clients", "2", "--drill-before", "1", "--drill-after", "1.5",
         "--capacity", "500", "--fsync", "off", "--output", str(output)],
        cwd=ROOT, capture_output=True, text=True, timeout=240, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "gateway CPU us/delivery" in result.stdout
    report = json.loads(output.read_text())
    all_in_one, scale_out = report["runs"]
    assert all_in_one["label"] == "all-in-one"
    assert scale_out["label"] == "1 gateway"
    for run in (all_in_one, scale_out):
        assert run["subscribed"] == 20
        assert run["missed"] == 0
        assert run["deliveries"] > 0
        assert run["front_cpu_us_per_delivery_mean"] is not None
        assert run["latency_ms"]["p99"] is not None
    assert set(scale_out["cpu_pct"]) == {"engine", "gateway-1", "redis"}
    assert scale_out["broker_lag_ms"]["gateway-1"]["samples"] > 0
    drill = report["drill"]
    assert drill["missed"] == 0
    assert drill["resumed"] == drill["subscriptions"] == 6
    capacity = report["capacity"]
    assert capacity["commands"] == 500
    assert set(capacity["cpu_us_per_command"]) == {"engine", "gateway", "redis"}
