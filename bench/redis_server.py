"""A ``redis-server`` process of our own, on a free loopback port, without persistence.

Used by the scale-out tests (``tests/scaleout``) and ``bench/load_scaleout.py``.
The server runs in a directory the caller gives, with ``--save ''
--appendonly no`` (the engine's journal is the truth; Redis is rebuilt from
it), bound to 127.0.0.1. :meth:`RedisServer.restart` SIGKILLs it and starts a
fresh, empty one on the same port: a Redis restart without persistence.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import attrs


class RedisMissing(RuntimeError):
    """No ``redis-server`` on PATH; the message names the Debian package."""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@attrs.define
class RedisServer:
    """One ``redis-server`` process the test owns."""

    directory: Path
    port: int
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        executable = shutil.which("redis-server")
        if executable is None:
            raise RedisMissing(
                "redis-server is not installed: scale-out needs it (Debian package "
                "redis-server: apt-get install -y redis-server; .ci/run installs it)")
        self.starts += 1
        log = (self.directory / f"redis-{self.starts}.log").open("wb")
        self.process = subprocess.Popen(
            [executable, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.directory), "--protected-mode", "no"],
            stdout=log, stderr=subprocess.STDOUT, cwd=self.directory)
        log.close()
        deadline = time.monotonic() + 10
        while not self.answers():
            if self.process.poll() is not None:
                text = (self.directory / f"redis-{self.starts}.log").read_text(errors="replace")
                raise RuntimeError(f"redis-server on port {self.port} exited at start:\n{text}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"redis-server on port {self.port} did not answer PING in 10 s")
            time.sleep(0.02)

    def answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as conn:
                conn.sendall(b"PING\r\n")
                return conn.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)
        self.process = None

    def restart(self) -> None:
        """SIGKILL, then a fresh empty server on the same port."""
        self.kill()
        self.start()
