"""Property-based test of the REST listener against its own OpenAPI document (schemathesis).

schemathesis reads ``/api/v1/openapi.json`` from a real ``trade-engine serve``
subprocess (free ports, its own data directory, a token from ``trade-engine
token``) and sends each operation requests generated from the document, valid
and invalid, checking every answer: no 5xx, a documented status, content type,
headers and body schema, invalid input refused with 4xx, a missing or bad token
refused with 401, an undocumented method answered 405 with ``Allow``. The test
is synchronous (schemathesis drives ``requests``), so the server runs in its own
process; its examples are bounded (:data:`EXAMPLES` per operation) to keep the
run short. The server must log no error meanwhile.

The one check relaxed: ``positive_data_acceptance`` also accepts 400, because an
order that fits the document can still be refused by the market's rules
(a price off the tick, below the minimum notional, a post-only order that would
cross): those depend on the market and the book, not on the request's shape.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import attrs
import msgspec
import pytest
import schemathesis

from engine import DEFAULT_MARKETS
from gateway import issue_token
from gateway._rest._openapi import build

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")

EXAMPLES = 30
"""Examples per operation and phase (schemathesis's own default is 100)."""
STARTUP_TIMEOUT = 20.0
BANNER = re.compile(r"REST on (http://127\.0\.0\.1:\d+)/api/v1")
SECRET = secrets.token_hex(32)
"""The server's HS256 secret, so that the token exists when the module is imported."""
TOKEN = issue_token(SECRET, "fuzzer", ttl=3600.0)
SETTINGS = f"""\
[auth]
jwt_secret = "{SECRET}"

[journal]
fsync = "off"

[limits]
rest_requests_per_second = 1000000.0
rest_burst = 1000000
orders_per_second = 1000000.0
order_burst = 1000000
"""


def cli() -> list[str]:
    script = Path(sys.executable).with_name("trade-engine")
    return [str(script)] if script.exists() else [sys.executable, "-m", "gateway._cli"]


@attrs.frozen
class Server:
    rest_url: str
    stderr: Path


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("schemathesis")
    data_dir, settings, stderr_path = root / "data", root / "serve.toml", root / "serve.stderr"
    settings.write_text(SETTINGS, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRADE_ENGINE_")}
    env.update(XDG_DATA_HOME=str(root / "xdg"), PYTHONUNBUFFERED="1")
    with stderr_path.open("wb") as stderr:
        process = subprocess.Popen(
            [*cli(), "serve", "--config", str(settings), "--data-dir", str(data_dir),
             "--rest-port", "0", "--ws-port", "0"],
            stdout=subprocess.PIPE, stderr=stderr, env=env)
    try:
        rest_url = _banner(process)
        yield Server(rest_url, stderr_path)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        assert process.stdout is not None
        process.stdout.close()
    assert "Traceback" not in stderr_path.read_text(errors="replace"), stderr_path.read_text()


def _banner(process: subprocess.Popen[bytes]) -> str:
    """The REST URL from the line ``serve`` prints once it listens."""
    assert process.stdout is not None
    deadline = time.monotonic() + STARTUP_TIMEOUT
    seen = []
    while (left := deadline - time.monotonic()) > 0:
        ready, _, _ = select.select([process.stdout], [], [], left)
        if not ready:
            break
        line = process.stdout.readline().decode()
        if not line:
            break
        seen.append(line)
        if match := BANNER.search(line):
            return match.group(1)
    raise AssertionError(f"serve did not print its banner: {seen}")


CONFIG = schemathesis.Config.from_dict({
    "auth": {"openapi": {"bearer": {"bearer": TOKEN}}},
    "generation": {"max-examples": EXAMPLES, "database": "none", "deterministic": True},
    "checks": {"positive_data_acceptance": {
        "expected-statuses": ["2xx", "400", "401", "403", "404", "409", "429", "5xx"]}},
    "phases": {"stateful": {"enabled": False}},
})
# The document the server serves (tests/gateway/test_openapi.py holds them equal). It is
# built here, at import, because schemathesis's lazy loader (from_fixture) does not run
# under pytest 9 (it sets the private ``Function._nodeid``, which pytest 9 removed).
schema = schemathesis.openapi.from_dict(
    json.loads(msgspec.json.encode(build({m.symbol: m for m in DEFAULT_MARKETS}, version="0"))),
    config=CONFIG)


@schema.parametrize()
def test_rest_api_conforms_to_its_document(case: schemathesis.Case, server: Server) -> None:
    case.call_and_validate(base_url=server.rest_url)
