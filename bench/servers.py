"""Start and stop the server under test as a subprocess; read its CPU and RSS from /proc.

Rules of this module:

* Our gateway runs as ``python -m gateway._cli serve --config <tmp toml>`` on
  ports 0; the ports are read from the line it prints once it listens. The
  config raises the per-IP connection limits and the REST rate limit out of the
  way (every client is on loopback), sets the ping interval, and asks for
  ``published_ns`` with ``[websocket] publish_timestamps = true``.
* The baseline runs as ``python -m bench.baseline_server``.
* For the order entry benchmark (``bench.order_entry``): the bare ASGI ceiling runs
  as ``python -m bench.bare_asgi``, and matching-engine 0.1.1 as its own
  ``matching-engine serve`` (uvicorn + httptools) with ``ME_DATA_DIR`` in the
  temporary directory and every other setting at its default (fsync on).
* Both get the parent's RLIMIT_NOFILE, raised to the hard limit by
  :func:`raise_nofile` before anything is spawned.
* :meth:`ServerProcess.stop` sends SIGINT, then SIGKILL after ``kill_after``
  seconds: every run ends with its server gone.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import re
import resource
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

CLK_TCK = os.sysconf("SC_CLK_TCK")
_OURS_READY = re.compile(r"REST on http://[^:]+:(\d+)/api/v1, WebSocket on ws://[^:]+:(\d+)/ws")
_BASELINE_READY = re.compile(r"baseline: WebSocket on ws://[^:]+:(\d+)/ws")
_BARE_ASGI_READY = re.compile(r"bare-asgi: REST on http://[^:]+:(\d+)")
_UVICORN_READY = re.compile(r"Uvicorn running on http://[^:]+:(\d+)")


def raise_nofile() -> tuple[int, int]:
    """Raise this process's soft RLIMIT_NOFILE to the hard limit (children inherit it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def cpu_split(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of a process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK


def spawn_worker(
    target: Callable[[Any, Any, Connection], None], spec: Any, counters: Any, name: str
) -> tuple[BaseProcess, Connection]:
    """Fork a load worker ``target(spec, counters, pipe)``; the process and our end of its pipe."""
    fork = multiprocessing.get_context("fork")
    parent, child = fork.Pipe()
    process = fork.Process(target=target, args=(spec, counters, child), name=name, daemon=True)
    process.start()
    child.close()
    return process, parent


def processes_cpu(processes: list[Any]) -> tuple[float, float, list[float]]:
    """(user, system) CPU seconds of processes (anything with a ``pid``), summed, and each
    one's total; a process that has already gone counts as 0."""
    user = system = 0.0
    each = []
    for proc in processes:
        u = s = 0.0
        with contextlib.suppress(OSError):
            u, s = cpu_split(proc.pid)
        user, system = user + u, system + s
        each.append(u + s)
    return user, system, each


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


class ServerProcess:
    """A server subprocess with its output in a log file, in a temporary directory it owns.

    Subclasses set :attr:`argv` (they may write files into :attr:`workdir` first).
    """

    def __init__(self, ready: re.Pattern[str], *, prefix: str, kill_after: float = 15.0) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix=prefix)
        self.workdir = Path(self._tmp.name)
        self.argv: list[str] = []
        self.ready = ready
        self.kill_after = kill_after
        self.log_path = self.workdir / "server.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.ports: tuple[int, ...] = ()
        self.env: dict[str, str] | None = None  # None: the parent's environment

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, timeout: float = 30.0) -> None:
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, env=self.env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            match = self.ready.search(self.log_path.read_text(errors="replace"))
            if match:
                self.ports = tuple(int(g) for g in match.groups())
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        tail = self.log_tail()
        self.stop()
        raise RuntimeError(f"server did not start ({' '.join(self.argv)}):\n{tail}")

    def log_tail(self, lines: int = 30) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def stop(self) -> int | None:
        """SIGINT, then SIGKILL after ``kill_after``; the exit status. Removes the directory."""
        try:
            return self._stop_process()
        finally:
            self._tmp.cleanup()

    def _stop_process(self) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGINT)
        try:
            return self.proc.wait(self.kill_after)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(5)


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return repr(value)


def our_config(data_dir: Path, *, secret: str, ping_interval: float, fsync: str,
               extra: dict[str, dict[str, Any]] | None = None) -> str:
    big = 1_000_000
    tables: dict[str, dict[str, Any]] = {
        "websocket": {"ping_interval": ping_interval, "publish_timestamps": True},
        "auth": {"jwt_secret": secret},
        "journal": {"fsync": fsync},
        "limits": {
            "max_connections_per_ip": big, "connections_per_second_per_ip": float(big),
            "connection_burst_per_ip": big, "rest_requests_per_second": float(big),
            "rest_burst": big,
        },
    }
    for table, values in (extra or {}).items():
        tables.setdefault(table, {}).update(values)
    lines = ['host = "127.0.0.1"', "rest_port = 0", "ws_port = 0",
             f"data_dir = {_toml(str(data_dir))}"]
    for table, values in tables.items():
        lines.append(f"\n[{table}]")
        lines.extend(f"{key} = {_toml(value)}" for key, value in values.items())
    return "\n".join(lines) + "\n"


class OurServer(ServerProcess):
    """``trade-engine serve`` on ports 0 with the load configuration, in a temporary directory."""

    def __init__(self, *, ping_interval: float = 5.0, fsync: str = "batch",
                 log_level: str = "WARNING", extra: dict[str, dict[str, Any]] | None = None
                 ) -> None:
        super().__init__(_OURS_READY, prefix="load-gateway-")
        workdir = self.workdir
        self.secret = secrets.token_hex(32)
        (workdir / "gateway.toml").write_text(our_config(
            workdir / "data", secret=self.secret, ping_interval=ping_interval, fsync=fsync,
            extra=extra))
        self.argv = [sys.executable, "-m", "gateway._cli", "--log-level", log_level, "serve",
                     "--config", str(workdir / "gateway.toml")]

    @property
    def rest_port(self) -> int:
        return self.ports[0]

    @property
    def ws_port(self) -> int:
        return self.ports[1]


class BaselineServer(ServerProcess):
    def __init__(self, *, rate: float, ping_interval: float = 5.0) -> None:
        super().__init__(_BASELINE_READY, prefix="load-baseline-")
        self.argv = [sys.executable, "-m", "bench.baseline_server", "--port", "0",
                     "--rate", str(rate), "--ping-interval", str(ping_interval)]

    @property
    def ws_port(self) -> int:
        return self.ports[0]


class BareAsgiServer(ServerProcess):
    """``python -m bench.bare_asgi``: hypercorn's trio worker answering every request."""

    def __init__(self) -> None:
        super().__init__(_BARE_ASGI_READY, prefix="bench-bare-asgi-")
        self.argv = [sys.executable, "-m", "bench.bare_asgi", "--port", "0"]

    @property
    def rest_port(self) -> int:
        return self.ports[0]


class MatchingEngineServer(ServerProcess):
    """``matching-engine serve`` (PyPI ``matching-engine[gateway]``) on port 0, defaults kept.

    Its settings come from ``ME_*`` variables; only ``ME_DATA_DIR`` is set (to the
    temporary directory), so ``ME_FSYNC`` keeps its default ``1`` (group commit, one
    fsync per batch) and ``ME_BATCH_MAX`` its 512.
    """

    def __init__(self) -> None:
        super().__init__(_UVICORN_READY, prefix="bench-matching-engine-")
        script = Path(sys.executable).with_name("matching-engine")
        command = [str(script)] if script.exists() else [sys.executable, "-m", "matching_engine"]
        self.argv = [*command, "serve", "--host", "127.0.0.1", "--port", "0"]
        self.env = {key: value for key, value in os.environ.items()
                    if not key.startswith("ME_")} | {"ME_DATA_DIR": str(self.workdir / "data")}

    @property
    def rest_port(self) -> int:
        return self.ports[0]
