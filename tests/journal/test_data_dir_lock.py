"""One owner per data directory: real ``trade-engine serve`` processes and ``gateway.serve``.

A first server runs as a subprocess. A second ``serve`` on the same data
directory exits 2 at once with one line naming the directory and the first
one's pid, and an embedded ``gateway.serve`` in this process raises
``DataDirectoryLocked`` with the same pid; the first keeps taking orders, and
the read-only ``journal verify`` and ``replay`` work beside it without changing
a byte. After the first exits, a new server starts; after that one is
SIGKILLed (the kernel drops its lock), the next one starts too. Every
subprocess is killed in ``finally``.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import attrs
import httpx
import pytest
import trio

import gateway
from gateway import Config, DataDirectoryLocked, Fsync, JournalSettings, issue_token
from gateway._auth import load_or_create_secret

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX flock and signals")

STARTUP_TIMEOUT = 30
TIMEOUT = 10
BANNER = re.compile(r"trade-engine: REST on (http://127\.0\.0\.1:\d+)/api/v1, WebSocket on .*")


def environment(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRADE_ENGINE_")}
    env["XDG_DATA_HOME"] = str(tmp_path / "xdg")  # never the developer's real data dir
    env["PYTHONUNBUFFERED"] = "1"
    return env


def serve_command(data_dir: Path) -> list[str]:
    return [sys.executable, "-m", "gateway._cli", "serve", "--data-dir", str(data_dir),
            "--rest-port", "0", "--ws-port", "0"]


@attrs.define
class Server:
    process: trio.Process
    rest_url: str


@asynccontextmanager
async def running_server(tmp_path: Path, data_dir: Path) -> AsyncIterator[Server]:
    stderr_path = tmp_path / f"serve-{len(list(tmp_path.glob('serve-*')))}.stderr"
    with stderr_path.open("wb") as stderr:
        process = await trio.lowlevel.open_process(
            serve_command(data_dir), stdout=subprocess.PIPE, stderr=stderr,
            env=environment(tmp_path))
    try:
        assert process.stdout is not None
        buffer = b""
        with trio.fail_after(STARTUP_TIMEOUT):
            while (match := BANNER.search(buffer.decode())) is None:
                chunk = await process.stdout.receive_some()
                assert chunk, f"serve exited early: {buffer!r} {stderr_path.read_text()}"
                buffer += chunk
        yield Server(process, match.group(1))
    finally:
        if process.returncode is None:
            process.kill()
        with trio.CancelScope(shield=True), trio.move_on_after(TIMEOUT):
            await process.wait()
        if process.stdout is not None:
            await process.stdout.aclose()


async def run_cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    with trio.fail_after(STARTUP_TIMEOUT):
        return await trio.run_process(
            [sys.executable, "-m", "gateway._cli", *args], capture_stdout=True,
            capture_stderr=True, check=False, env=environment(tmp_path))


def contents(directory: Path) -> dict[str, bytes]:
    return {str(path.relative_to(directory)): path.read_bytes()
            for path in sorted(directory.rglob("*")) if path.is_file()}


async def place_order(server: Server, token: str) -> int:
    async with httpx.AsyncClient(base_url=server.rest_url, timeout=TIMEOUT) as http:
        response = await http.post(
            "/api/v1/orders", headers={"Authorization": f"Bearer {token}"},
            json={"symbol": "BTC/USDT", "side": "buy", "price": "50000.00",
                  "quantity": "0.01"})
    assert response.status_code == 201, response.text
    order_id: int = response.json()["order_id"]
    return order_id


async def last_seq(server: Server) -> int:
    async with httpx.AsyncClient(base_url=server.rest_url, timeout=TIMEOUT) as http:
        seq: int = (await http.get("/healthz")).json()["last_seq"]
    return seq


async def test_a_second_server_on_the_same_data_directory_is_refused(tmp_path):
    data_dir = tmp_path / "data"
    async with running_server(tmp_path, data_dir) as first:
        token = issue_token(load_or_create_secret(data_dir), "alice", ttl=600)
        for _ in range(2):
            await place_order(first, token)
        before = contents(data_dir)  # the server is idle from here on

        # Concurrently: a second trade-engine serve, and the read-only tools on the
        # data directory and on the journal directory.
        results: dict[str, subprocess.CompletedProcess[bytes]] = {}

        async def run(name: str, *args: str) -> None:
            results[name] = await run_cli(tmp_path, *args)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(run, "serve", *serve_command(data_dir)[3:])
            nursery.start_soon(run, "verify", "journal", "verify", str(data_dir))
            nursery.start_soon(run, "replay", "journal", "replay", str(data_dir / "journal"))
            # an embedded gateway.serve on the same directory: the typed exception
            config = Config(rest_port=0, ws_port=0, data_dir=data_dir)
            with trio.fail_after(TIMEOUT), pytest.raises(DataDirectoryLocked) as refused:
                await nursery.start(gateway.serve, config)
        assert refused.value.pid == first.process.pid
        assert refused.value.directory == data_dir
        assert str(data_dir) in str(refused.value)

        second = results["serve"]  # exit 2 at once, one line: the directory and the pid
        stderr = second.stderr.decode()
        assert second.returncode == 2, stderr
        assert second.stdout == b""
        assert stderr.count("\n") == 1, stderr
        assert stderr.startswith(f"trade-engine: cannot start: {data_dir} is in use: "
                                 f"another trade-engine (pid {first.process.pid})"), stderr
        assert "--data-dir" in stderr
        for name in ("verify", "replay"):
            result = results[name]
            assert result.returncode == 0, result.stderr.decode()
            lines = result.stdout.decode().splitlines()
            assert lines[0] == f"journal: {data_dir / 'journal'}"
            assert "last seq: 2" in lines
        # neither the refused servers nor the tools wrote a byte
        assert contents(data_dir) == before

        # the first server noticed nothing
        assert await place_order(first, token) == 3
        first.process.send_signal(signal.SIGTERM)
        with trio.fail_after(TIMEOUT):
            assert await first.process.wait() == 0

    # the owner is gone: the next server starts, with every order
    async with running_server(tmp_path, data_dir) as restarted:
        assert await last_seq(restarted) == 3
        restarted.process.kill()  # SIGKILL: no clean-up at all
        with trio.fail_after(TIMEOUT):
            await restarted.process.wait()
    # the kernel released the dead server's lock: no stale lock, the next one starts
    async with running_server(tmp_path, data_dir) as after_kill:
        assert await last_seq(after_kill) == 3
        assert (data_dir / "journal" / "LOCK").read_text() == f"{after_kill.process.pid}\n"


async def test_two_embedded_gateways_on_one_directory_exclude_each_other(tmp_path, caplog):
    """flock locks belong to an open file description: one process cannot own a
    directory twice either. Without a journal nothing is locked (both run)."""
    config = Config(rest_port=0, ws_port=0, data_dir=tmp_path / "data",
                    journal=JournalSettings(fsync=Fsync.OFF))
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            owner = await nursery.start(gateway.serve, config)
            with pytest.raises(DataDirectoryLocked) as refused:
                await nursery.start(gateway.serve, config)
            assert refused.value.pid == os.getpid()
            assert refused.value.lock_file == tmp_path / "data" / "journal" / "LOCK"
            memory_only = attrs.evolve(config, journal=JournalSettings(enabled=False))
            second = await nursery.start(gateway.serve, memory_only)
            third = await nursery.start(gateway.serve, memory_only)
            for running in (second, third):
                running.shutdown()
            owner.shutdown()
        # the owner returned: its lock is released, the directory can be owned again
        async with trio.open_nursery() as nursery:
            again = await nursery.start(gateway.serve, config)
            again.shutdown()


async def test_a_journal_directory_outside_the_data_directory_is_locked_too(tmp_path):
    journal = JournalSettings(fsync=Fsync.OFF, directory=tmp_path / "shared-journal")
    first = Config(rest_port=0, ws_port=0, data_dir=tmp_path / "a", journal=journal)
    second = attrs.evolve(first, data_dir=tmp_path / "b")
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            owner = await nursery.start(gateway.serve, first)
            with pytest.raises(DataDirectoryLocked) as refused:
                await nursery.start(gateway.serve, second)
            owner.shutdown()
    assert refused.value.directory == tmp_path / "shared-journal"
    assert "journal.directory" in str(refused.value)


async def test_the_readme_embedding_example_runs_in_its_own_data_directory(tmp_path):
    """The README's example must never share ``trade-engine serve``'s default directory."""
    readme = (Path(__file__).parents[2] / "README.md").read_text(encoding="utf-8")
    section = readme.split("\n## Embedding\n", 1)[1]
    example = section.split("```python\n", 1)[1].split("```", 1)[0]
    with trio.fail_after(STARTUP_TIMEOUT):
        result = await trio.run_process(
            [sys.executable, "-c", example], cwd=tmp_path, capture_stdout=True,
            capture_stderr=True, check=False, env=environment(tmp_path))
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout.decode().startswith("REST http://127.0.0.1:")
    assert (tmp_path / "embedded-data" / "journal" / "LOCK").exists()
    assert not (tmp_path / "xdg").exists()  # the default data directory was not touched
