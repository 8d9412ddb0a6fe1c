"""Fixtures for the engine's specification tests; the helpers live in ``engine_harness``."""

from __future__ import annotations

import pytest
from engine_harness import BTC_SPEC, ETH_SPEC, Exchange

from engine import Engine


@pytest.fixture
def exchange() -> Exchange:
    """An engine trading the simple BTC/USDT market and the ETH/USDT market with minimums."""
    return Exchange(Engine([BTC_SPEC, ETH_SPEC]))
