"""Admission on plain values: the order of the checks, the limits, the endpoints.

No network and no clock: ``now`` is a number, and tokens are checked by a
real :class:`TokenVerifier` over tokens issued for a fixed future expiry.
"""

from __future__ import annotations

import json

import pytest

from gateway._admission import Admission, Admitted, Refusal
from gateway._auth import Identity, TokenVerifier, issue_token
from gateway._config import LimitSettings
from gateway._protocol import Stream

SECRET = "a test secret that is long enough for HS256"
VERIFIER = TokenVerifier(SECRET, "HS256")
ALICE = issue_token(SECRET, "alice", ttl=3600)
BOB = issue_token(SECRET, "bob", ttl=3600)
EXPIRED = issue_token(SECRET, "alice", ttl=60, now=1_700_000_000)
SYMBOLS = ("BTC/USDT", "ETH/USDT")
NO_HEADERS: list[tuple[bytes, bytes]] = []


def admission(**limits: object) -> Admission:
    return Admission(LimitSettings(**limits), symbols=SYMBOLS, verify=VERIFIER.verify)


def admit(gate: Admission, target: str = "/ws", *, ip: str = "10.0.0.1", now: float = 0.0,
          headers: list[tuple[bytes, bytes]] = NO_HEADERS) -> Admitted | Refusal:
    return gate.admit(ip=ip, target=target, headers=headers, now=now)


def refused(result: Admitted | Refusal) -> tuple[int, str]:
    assert isinstance(result, Refusal), result
    return result.status, result.code


def admitted(result: Admitted | Refusal) -> Admitted:
    assert isinstance(result, Admitted), result
    return result


# ------------------------------------------------------------------ endpoints


@pytest.mark.parametrize(("target", "subscribe"), [
    ("/ws", []),
    ("/ws/", []),
    ("/ws/trades", [(Stream.TRADES, None)]),
    ("/ws/trades?symbol=BTC-USDT", [(Stream.TRADES, "BTC/USDT")]),
    ("/ws/markets/BTC-USDT", [(Stream.ORDERBOOK, "BTC/USDT")]),
    ("/ws/markets/eth%2Fusdt", [(Stream.ORDERBOOK, "ETH/USDT")]),
    (f"/ws/orders?token={ALICE}", [(Stream.ORDERS, None)]),
])
def test_each_endpoint_says_what_to_subscribe_to(target, subscribe):
    assert admitted(admit(admission(), target)).subscribe == subscribe


@pytest.mark.parametrize(("target", "status", "code"), [
    ("/ws/orders", 401, "unauthorized"),
    ("/ws/trades?symbol=DOGE-USDT", 404, "unknown_symbol"),
    ("/ws/markets/DOGE-USDT", 404, "unknown_symbol"),
    ("/api/v1/orders", 404, "not_found"),
    ("/ws?token=not-a-jwt", 401, "unauthorized"),
    (f"/ws?token={EXPIRED}", 401, "unauthorized"),
])
def test_a_bad_endpoint_or_token_is_refused(target, status, code):
    assert refused(admit(admission(), target)) == (status, code)


def test_the_refusals_say_what_to_do():
    gate = admission()
    orders = admit(gate, "/ws/orders")
    assert isinstance(orders, Refusal)
    assert orders.message == "a token is required: /ws/orders?token=..."
    expired = admit(gate, f"/ws?token={EXPIRED}")
    assert isinstance(expired, Refusal)
    assert expired.message.startswith("token expired at 2023-11-14T22:")
    assert "trade-engine token --user alice" in expired.message


def test_a_token_names_the_user_on_any_endpoint():
    result = admitted(admit(admission(), f"/ws/trades?token={ALICE}"))
    assert result.user_id == "alice"
    assert result.identity is not None
    assert admitted(admit(admission(), "/ws")).user_id is None


# -------------------------------------------------------------------- limits


def test_shutting_down_refuses_everything_first():
    gate = admission(allowed_origins=("https://ok.example",))
    gate.accepting = False
    assert refused(admit(gate, "/nowhere")) == (503, "shutting_down")


def test_only_listed_origins_are_admitted():
    gate = admission(allowed_origins=("https://ok.example",))
    assert refused(admit(gate)) == (403, "origin_not_allowed")
    assert refused(admit(gate, headers=[(b"origin", b"https://evil.example")])) == (
        403, "origin_not_allowed")
    admitted(admit(gate, headers=[(b"origin", b"https://ok.example")]))


def test_without_an_origin_list_any_origin_is_admitted():
    admitted(admit(admission(), headers=[(b"origin", b"https://anything.example")]))


def test_new_connections_per_ip_are_rate_limited_with_a_retry_after():
    gate = admission(connections_per_second_per_ip=2.0, connection_burst_per_ip=2)
    admitted(admit(gate, now=0.0))
    admitted(admit(gate, now=0.0))
    refusal = admit(gate, now=0.0)
    assert refused(refusal) == (429, "rate_limited")
    assert isinstance(refusal, Refusal)
    assert refusal.retry_after == 0.5
    assert (b"retry-after", b"1") in refusal.headers()
    admitted(admit(gate, ip="10.0.0.2", now=0.0))  # another address has its own budget
    admitted(admit(gate, now=0.5))  # one token back after 0.5 s


def test_connections_per_ip_are_counted_until_released():
    gate = admission(max_connections_per_ip=2)
    first = admitted(admit(gate))
    admitted(admit(gate))
    assert refused(admit(gate)) == (429, "too_many_connections")
    admitted(admit(gate, ip="10.0.0.2"))
    gate.release(first)
    admitted(admit(gate))


def test_connections_per_user_are_counted_across_addresses():
    gate = admission(max_connections_per_user=1)
    alice = admitted(admit(gate, f"/ws?token={ALICE}", ip="10.0.0.1"))
    refusal = admit(gate, f"/ws/orders?token={ALICE}", ip="10.0.0.2")
    assert refused(refusal) == (429, "too_many_connections")
    assert isinstance(refusal, Refusal)
    assert refusal.message == "too many connections for this user"
    admitted(admit(gate, f"/ws?token={BOB}", ip="10.0.0.2"))
    gate.release(alice)
    admitted(admit(gate, f"/ws?token={ALICE}", ip="10.0.0.2"))


def test_a_refused_handshake_is_not_counted():
    gate = admission(max_connections_per_ip=1)
    assert refused(admit(gate, "/nowhere")) == (404, "not_found")
    admitted(admit(gate))  # the refusal did not take the address's one slot


def test_the_per_ip_checks_come_before_the_token():
    # A rate-limited client with a bad token hears about the rate, and no
    # signature is checked for it.
    checked: list[str] = []

    def verify(token: str) -> Identity:
        checked.append(token)
        return VERIFIER.verify(token)

    gate = Admission(LimitSettings(connection_burst_per_ip=1), symbols=SYMBOLS, verify=verify)
    assert refused(admit(gate, "/ws?token=bad")) == (401, "unauthorized")
    assert refused(admit(gate, "/ws?token=bad")) == (429, "rate_limited")
    assert checked == ["bad"]


def test_the_token_comes_before_the_endpoint():
    assert refused(admit(admission(), "/nowhere?token=bad")) == (401, "unauthorized")


# ---------------------------------------------------------------- responses


def test_a_refusal_is_a_json_error_without_retry_after_unless_rate_limited():
    refusal = Refusal(404, "not_found", "no WebSocket endpoint at /x")
    assert refusal.headers() == [(b"content-type", b"application/json")]
    assert json.loads(refusal.body()) == {
        "error": {"code": "not_found", "message": "no WebSocket endpoint at /x"}}


@pytest.mark.parametrize(("retry_after", "header"), [(0.01, b"1"), (1.4, b"1"), (2.6, b"3")])
def test_retry_after_is_whole_seconds_and_at_least_one(retry_after, header):
    refusal = Refusal(429, "rate_limited", "slow down", retry_after)
    assert (b"retry-after", header) in refusal.headers()
