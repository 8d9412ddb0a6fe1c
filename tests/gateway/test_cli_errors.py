"""The command line's errors name the fix: ``trade-engine token`` and ``watch`` as subprocesses.

``watch`` runs against a real gateway started in the test's nursery (port 0)
and must, for every failure, print one line on stderr that says what to do,
never a traceback and never the token, and exit with the documented status
(2: the stream never opened; 1: the server closed it). The REST answer to an
expired token says how to get a new one too.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import trio

from gateway import Gateway, issue_token
from gateway._auth import load_or_create_secret
from gateway._cli import main
from gateway._watch import WatchUsageError, stream_url

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX subprocesses")

TIMEOUT = 30


def environment(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRADE_ENGINE_")}
    env["XDG_DATA_HOME"] = str(tmp_path / "xdg")  # never the developer's real data dir
    return env


async def run_all(tmp_path: Path, commands: dict[str, list[str]]
                  ) -> dict[str, subprocess.CompletedProcess[bytes]]:
    """Run the CLI once per entry, concurrently (each is mostly interpreter start-up)."""
    results: dict[str, subprocess.CompletedProcess[bytes]] = {}

    async def run(name: str, args: list[str]) -> None:
        results[name] = await trio.run_process(
            [sys.executable, "-m", "gateway._cli", *args], capture_stdout=True,
            capture_stderr=True, check=False, env=environment(tmp_path))

    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            for name, args in commands.items():
                nursery.start_soon(run, name, args)
    return results


def one_line(result: subprocess.CompletedProcess[bytes]) -> str:
    """The single stderr line of a failed command (and nothing that looks like a crash)."""
    stderr = result.stderr.decode()
    assert stderr.startswith("trade-engine: "), stderr
    assert stderr.count("\n") == 1, stderr
    assert "Traceback" not in stderr, stderr
    assert "CloseReason" not in stderr, stderr
    return stderr.strip()


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def test_token_refuses_a_ttl_that_is_already_expired(tmp_path):
    results = await run_all(tmp_path, {
        ttl: ["token", "--user", "alice", "--ttl", ttl, "--data-dir", str(tmp_path / "data")]
        for ttl in ("0", "-5")
    })
    for ttl, result in results.items():
        assert result.returncode == 2, (ttl, result)
        assert result.stdout == b""  # no token printed
        assert one_line(result).startswith(
            "trade-engine: --ttl must be a number of seconds, 1 or more (e.g. --ttl 3600"), ttl


async def in_process(capsys: pytest.CaptureFixture[str], *args: str
                     ) -> subprocess.CompletedProcess[bytes]:
    """``trade-engine ARGS`` through the same ``main``, in a worker thread of this process.

    The interpreter start-up that dominates a subprocess is skipped; one case
    below runs as a real subprocess too.
    """
    with trio.fail_after(TIMEOUT):
        try:
            code = await trio.to_thread.run_sync(main, list(args))
        except SystemExit as exit_:  # --help
            code = int(exit_.code or 0)
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(args, code, out.encode(), err.encode())


async def interrupted_in_a_subprocess(
        tmp_path: Path, ws: str, results: dict[str, subprocess.CompletedProcess[bytes]]) -> None:
    """``watch`` until its first message, then SIGINT, as Ctrl-C in a terminal."""
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "gateway._cli", "watch", "trades", "--url", ws],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=environment(tmp_path))
    assert process.stdout is not None
    assert process.stderr is not None
    try:
        with trio.fail_after(TIMEOUT):
            first = await process.stdout.receive_some()
            assert b'"type":"subscribed"' in first
            process.send_signal(signal.SIGINT)
            await process.wait()
            stderr = b""
            while chunk := await process.stderr.receive_some():
                stderr += chunk
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        await process.stdout.aclose()
        await process.stderr.aclose()
    assert process.returncode is not None
    results["interrupted"] = subprocess.CompletedProcess(process.args, process.returncode,
                                                         first, stderr)


async def test_watch_errors_are_one_line_without_the_token(gateway: Gateway, tmp_path, capsys):
    secret = load_or_create_secret(tmp_path / "data")
    valid = issue_token(secret, "alice", ttl=600)
    expired = issue_token(secret, "alice", ttl=-10)
    ws = gateway.endpoints.ws_url
    down = f"ws://127.0.0.1:{closed_port()}"
    commands = {
        # the banner's URL (with /ws) and an endpoint without its leading slash
        "banner_url": ["watch", "ws/trades", "--url", f"{ws}/ws", "--count", "1"],
        "short_endpoint": ["watch", "trades", "--url", f"{ws}/", "--count", "1"],
        "whole_url": ["watch", f"{ws}/ws/markets/BTC-USDT", "--count", "1"],
        "refused": ["watch", "/ws/orders", "--url", down, "--token", valid],
        "not_found": ["watch", "/ws/nowhere", "--url", ws, "--token", valid],
        "not_ws": ["watch", "/ws/trades", "--url", gateway.endpoints.rest_url],
        "help": ["watch", "--help"],
    }
    async with trio.open_nursery() as nursery:
        # the one real subprocess: an expired token at the handshake
        subprocess_results: dict[str, subprocess.CompletedProcess[bytes]] = {}

        async def expired_in_a_subprocess() -> None:
            subprocess_results.update(await run_all(tmp_path, {"expired": [
                "watch", "/ws/orders", "--url", ws, "--token", expired]}))

        nursery.start_soon(expired_in_a_subprocess)
        nursery.start_soon(interrupted_in_a_subprocess, tmp_path, ws, subprocess_results)
        results = {name: await in_process(capsys, *args) for name, args in commands.items()}
        # a token that expires while the stream is open: 4003, said in words
        expiring = issue_token(secret, "alice", ttl=2)
        results["expiry_close"] = await in_process(
            capsys, "watch", "/ws/orders", "--url", ws, "--token", expiring)
    results.update(subprocess_results)

    for name in ("banner_url", "short_endpoint", "whole_url"):
        result = results[name]
        assert result.returncode == 0, (name, result.stderr)
        assert b'"type":"subscribed"' in result.stdout, name

    refused = one_line(results["refused"])
    assert results["refused"].returncode == 2
    assert refused == (
        f"trade-engine: cannot connect to {down}/ws/orders?token=***: connection refused; "
        "is the server running? Start it with: trade-engine serve (or pass --url with the "
        "WebSocket URL its banner prints)")

    line = one_line(results["expired"])
    assert results["expired"].returncode == 2
    assert line.startswith(f"trade-engine: {ws}/ws/orders?token=***: the server refused the "
                           "WebSocket handshake with HTTP 401: unauthorized: token expired at ")
    assert line.endswith("Z; get a new one with: trade-engine token --user alice"), line

    line = one_line(results["not_found"])
    assert results["not_found"].returncode == 2
    assert "HTTP 404: not_found: no WebSocket endpoint at /ws/nowhere" in line
    assert "/ws/trades" in line  # the endpoints that exist

    line = one_line(results["not_ws"])
    assert results["not_ws"].returncode == 2
    assert line.startswith(f"trade-engine: {gateway.endpoints.rest_url} is not a WebSocket URL")

    result = results["expiry_close"]
    assert result.returncode == 1, result.stderr
    assert b'"type":"subscribed"' in result.stdout
    assert one_line(result) == ("trade-engine: closed by the server: 4003 token expired (get a "
                                "new token with: trade-engine token --user alice)")

    for name, result in results.items():
        for token in (valid, expired, expiring):
            assert token.encode() not in result.stdout + result.stderr, name
            # nor its signature alone
            assert token.rsplit(".", 1)[1].encode() not in result.stderr, name

    interrupted = results["interrupted"]
    assert interrupted.returncode == 130, interrupted.stderr
    assert interrupted.stderr == b""  # Ctrl-C is no error: no traceback

    help_text = results["help"].stdout.decode()
    assert "exit status:" in help_text
    for status in ("0  --count", "1  the server closed", "2  the stream never opened"):
        assert status in help_text, status
    assert "ws://HOST:PORT/ws" in help_text


async def test_rest_says_when_a_token_expired_and_how_to_get_a_new_one(
        gateway: Gateway, tmp_path):
    secret = load_or_create_secret(tmp_path / "data")
    expired = issue_token(secret, "bob", ttl=3600, now=1_700_000_000)
    async with httpx.AsyncClient(base_url=gateway.endpoints.rest_url, timeout=10) as http:
        response = await http.get("/api/v1/orders",
                                  headers={"Authorization": f"Bearer {expired}"})
    assert response.status_code == 401
    error = response.json()["error"]
    assert error["code"] == "unauthorized"
    assert error["message"] == ("token expired at 2023-11-14T23:13:20Z; get a new one with: "
                                "trade-engine token --user bob")


@pytest.mark.parametrize(("url", "endpoint", "expected"), [
    ("ws://h:8081", "/ws/trades", "ws://h:8081/ws/trades"),
    ("ws://h:8081", "ws/trades", "ws://h:8081/ws/trades"),
    ("ws://h:8081", "trades", "ws://h:8081/ws/trades"),
    ("ws://h:8081/", "/ws", "ws://h:8081/ws"),
    ("ws://h:8081/ws", "/ws/trades", "ws://h:8081/ws/trades"),  # the banner's URL
    ("ws://h:8081/ws/", "markets/BTC-USDT", "ws://h:8081/ws/markets/BTC-USDT"),
    ("wss://example.com/exchange/ws", "/ws/orders", "wss://example.com/exchange/ws/orders"),
    ("ws://h:8081", "/ws/trades?symbol=BTC-USDT", "ws://h:8081/ws/trades?symbol=BTC-USDT&token=T"),
    ("ws://ignored:1", "ws://h:8081/ws/orders", "ws://h:8081/ws/orders?token=T"),
])
def test_the_watch_url_joins_any_written_form_once(url, endpoint, expected):
    token = "T" if expected.endswith("token=T") else None
    assert stream_url(url, endpoint, token) == expected


@pytest.mark.parametrize("url", ["http://127.0.0.1:8080", "127.0.0.1:8081", "ws://"])
def test_the_watch_url_must_be_a_websocket_url(url):
    with pytest.raises(WatchUsageError, match="is not a WebSocket URL: use ws://HOST:PORT"):
        stream_url(url, "/ws/trades")
