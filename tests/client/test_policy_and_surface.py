"""The client's pure policies (backoff, heartbeat), its purity, and its public surface.

* Backoff: exponential, capped, jittered between half and all of each step,
  never zero; ``max_attempts`` gives up; ``reset`` starts again.
* Liveness: ping after ``interval`` of silence, dead ``timeout`` after that.
* The pure modules import nothing that waits, reads the clock, draws random
  numbers or touches the network (read with ``ast``, never imported for it).
* ``gateway.client.__all__`` is exactly the public names, each documented.
* Order-entry bodies: amounts as exact strings, floats refused.
"""

from __future__ import annotations

import ast
from decimal import Decimal
from pathlib import Path

import pytest

import gateway.client
from gateway.client._policy import Backoff, Beat, Liveness, Reconnect, close_is_final
from gateway.client._requests import amend_fields, place_fields

CLIENT_DIR = Path(gateway.client.__file__).parent
PURE = ["_book", "_channel", "_errors", "_messages", "_policy", "_requests", "_session"]
FORBIDDEN = {"trio", "trio_websocket", "wsproto", "asyncio", "socket", "select", "selectors",
             "threading", "time", "os", "random", "ssl"}
# _messages imports datetime for the type of decoded timestamps, never to read the clock


def test_backoff_grows_to_its_cap_with_jitter_and_gives_up():
    draws: list[tuple[float, float]] = []

    def uniform(low: float, high: float) -> float:
        draws.append((low, high))
        return high

    backoff = Backoff(Reconnect(initial_delay=0.1, max_delay=1.0, max_attempts=6), uniform)
    delays = [backoff.next_delay() for _ in range(7)]
    assert delays == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0, None]
    assert all(low == high / 2 for low, high in draws)  # never below half a step
    backoff.reset()
    assert backoff.next_delay() == 0.1
    assert Backoff(Reconnect(enabled=False), uniform).next_delay() is None
    with pytest.raises(ValueError, match="initial_delay"):
        Reconnect(initial_delay=0)


def test_liveness_pings_after_silence_and_declares_death_after_the_timeout():
    live = Liveness(interval=10, timeout=5, now=100)
    assert live.check(105) == (Beat.WAIT, 110)
    assert live.check(110) == (Beat.PING, 115)
    assert live.check(112) == (Beat.WAIT, 115)
    live.heard(113)  # the pong (or anything)
    assert live.check(113) == (Beat.WAIT, 123)
    assert live.check(123) == (Beat.PING, 128)
    assert live.check(128) == (Beat.DEAD, 128)


def test_only_closes_a_reconnect_would_repeat_are_final():
    assert [code for code in (None, 1000, 1001, 1002, 1006, 1009, 4003, 4008, 4009, 4029)
            if close_is_final(code)] == [1002, 1009, 4003]


def test_order_bodies_carry_exact_amounts():
    body = place_fields("BTC/USDT", "buy", Decimal("0.01000"), "50000.00", order_type=None,
                        time_in_force="ioc", post_only=None, self_trade_prevention=None,
                        client_order_id="a")
    assert body == {"order": {"symbol": "BTC/USDT", "side": "buy", "quantity": "0.01000",
                              "price": "50000.00", "time_in_force": "ioc",
                              "client_order_id": "a"}}
    assert amend_fields(7, None, Decimal("1E+1"), 3) == {"order_id": 7, "price": "10",
                                                          "quantity": "3"}
    with pytest.raises(TypeError, match="a float cannot hold"):
        place_fields("BTC/USDT", "buy", 0.1, None, order_type="market",  # type: ignore[arg-type]
                     time_in_force=None, post_only=None, self_trade_prevention=None,
                     client_order_id=None)
    with pytest.raises(ValueError, match="finite"):
        amend_fields(7, None, Decimal("NaN"), None)


def imported(module: str) -> set[str]:
    tree = ast.parse((CLIENT_DIR / f"{module}.py").read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module if node.module.startswith("gateway") else
                      node.module.split(".")[0])
    return names


@pytest.mark.parametrize("module", PURE)
def test_the_protocol_logic_is_pure(module: str):
    names = imported(module)
    assert not names & FORBIDDEN, (module, names & FORBIDDEN)
    inside = {name.removeprefix("gateway.client.") for name in names
              if name.startswith("gateway.")}
    assert inside <= set(PURE), (module, inside - set(PURE))  # pure only on pure


def test_the_public_surface_is_exported_and_documented():
    exported = set(gateway.client.__all__)
    public = {name for name in vars(gateway.client) if not name.startswith("_")}
    assert exported == public - {"annotations"}
    for name in exported:
        obj = getattr(gateway.client, name)
        assert obj.__doc__, name
        assert obj.__module__.startswith("gateway.client._"), name
