"""A real ``redis-server`` per test, on a free port, and helpers to run the roles as subprocesses.

``redis-server`` comes from Debian's ``redis-server`` package (``.ci/run``
installs it). A missing server fails the test with that name: these tests
are never skipped. Each server runs in the test's tmp dir without
persistence (``--save '' --appendonly no``: the journal is the truth), and
is killed at teardown. ``restart()`` SIGKILLs it and starts a fresh, empty
one on the same port: what a Redis restart without persistence looks like.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest


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
            pytest.fail("redis-server is not installed: the scale-out tests need it "
                        "(Debian package redis-server: apt-get install -y redis-server; "
                        ".ci/run installs it)")
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
                pytest.fail(f"redis-server on port {self.port} exited at start:\n{text}")
            if time.monotonic() > deadline:
                pytest.fail(f"redis-server on port {self.port} did not answer PING in 10 s")
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


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    directory = tmp_path / "redis"
    directory.mkdir()
    server = RedisServer(directory, free_port())
    server.start()
    try:
        yield server
    finally:
        server.kill()
