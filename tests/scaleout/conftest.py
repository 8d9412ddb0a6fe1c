"""A real ``redis-server`` per test, on a free port (``bench/redis_server.py``).

``redis-server`` comes from Debian's ``redis-server`` package (``.ci/run``
installs it). A missing server fails the test with that name: these tests
are never skipped. Each server runs in the test's tmp dir without
persistence (``--save '' --appendonly no``: the journal is the truth), and
is killed at teardown; ``redis_server.restart()`` SIGKILLs it and starts a
fresh, empty one on the same port, what a Redis restart without persistence
looks like.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.redis_server import RedisMissing, RedisServer, free_port


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    directory = tmp_path / "redis"
    directory.mkdir()
    server = RedisServer(directory, free_port())
    try:
        server.start()
    except RedisMissing as exc:
        pytest.fail(str(exc))
    try:
        yield server
    finally:
        server.kill()
