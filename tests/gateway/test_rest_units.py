"""The REST listener's plain parts, without a network: the route table and the token cache."""

from __future__ import annotations

import time

import pytest

from gateway import issue_token
from gateway._auth import AuthError, TokenVerifier
from gateway._rest._routes import ROUTES, Endpoint, resolve, shape
from gateway._rest._tokens import Authenticator, TokenCache
from gateway._schema import RequestError
from gateway._stats import Stats

SECRET = "unit-secret-" + "u" * 40


# ------------------------------------------------------------------ routes


@pytest.mark.parametrize(("method", "path", "endpoint", "param"), [
    ("POST", "/api/v1/orders", Endpoint.PLACE, ""),
    ("GET", "/api/v1/orders", Endpoint.LIST_ORDERS, ""),
    ("DELETE", "/api/v1/orders", Endpoint.CANCEL_ALL, ""),
    ("GET", "/api/v1/orders/42", Endpoint.GET_ORDER, "42"),
    ("PATCH", "/api/v1/orders/42", Endpoint.AMEND, "42"),
    ("DELETE", "/api/v1/orders/abc", Endpoint.CANCEL, "abc"),
    ("GET", "/api/v1/markets", Endpoint.MARKETS, ""),
    ("HEAD", "/api/v1/markets", Endpoint.MARKETS, ""),
    ("GET", "/api/v1/markets/BTC/USDT/orderbook", Endpoint.ORDERBOOK, "BTC/USDT"),
    ("GET", "/api/v1/markets/BTC-USDT/trades", Endpoint.TRADES, "BTC-USDT"),
])
def test_every_route_resolves(method, path, endpoint, param):
    assert resolve(method, path) == (endpoint, param)


def test_the_table_names_every_endpoint_once():
    named = [endpoint for methods in ROUTES.values() for endpoint in methods.values()]
    assert sorted(named, key=str) == sorted(Endpoint, key=str)
    assert {e for e in Endpoint if e.private} == {
        Endpoint.PLACE, Endpoint.LIST_ORDERS, Endpoint.CANCEL_ALL, Endpoint.GET_ORDER,
        Endpoint.AMEND, Endpoint.CANCEL}


@pytest.mark.parametrize("path", [
    "/api/v1", "/api/v1/", "/api/v1/order", "/api/v1/orders/", "/api/v1/orders/1/2",
    "/api/v1/markets/", "/api/v1/markets/orderbook", "/api/v1/markets/BTC/USDT",
    "/api/v1/markets/BTC/USDT/depth", "/api/v2/orders", "/api/v1/ordersx",
])
def test_unknown_paths_are_404(path):
    assert shape(path) is None
    with pytest.raises(RequestError) as refused:
        resolve("GET", path)
    assert (refused.value.status, refused.value.code) == (404, "not_found")


def test_a_wrong_method_is_405_naming_the_right_ones():
    with pytest.raises(RequestError) as refused:
        resolve("PUT", "/api/v1/orders/7")
    error = refused.value
    assert (error.status, error.code) == (405, "method_not_allowed")
    assert "GET, PATCH, DELETE, HEAD, OPTIONS" in error.message


# ------------------------------------------------------------- token cache


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def cache(clock: Clock) -> TokenCache:
    return TokenCache(TokenVerifier(SECRET, "HS256"), size=2, clock=clock)


def test_a_verified_token_is_remembered_until_its_expiry(cache, clock):
    token = issue_token(SECRET, "alice", ttl=60)
    first = cache.verify(token)
    assert first.user_id == "alice"
    assert cache.verify(token) is first  # remembered: not verified again
    clock.now = first.expires_at - 0.001
    assert cache.verify(token) is first
    clock.now = first.expires_at  # at exp the entry is dropped and the token verified again
    again = cache.verify(token)
    assert again is not first
    assert again == first  # (the real clock says it is still valid)


def test_an_expired_token_is_refused_even_when_it_was_remembered(clock):
    issued = time.time() - 3600
    token = issue_token(SECRET, "alice", ttl=3000, now=issued)  # expired 10 minutes ago
    clock.now = issued  # the cache believes it is still fresh...
    cache = TokenCache(TokenVerifier(SECRET, "HS256"), clock=clock)
    with pytest.raises(AuthError, match="expired"):
        cache.verify(token)  # ...but never holds what did not verify
    assert len(cache) == 0


def test_forged_tokens_are_not_remembered(cache):
    forged = issue_token("another-secret-" + "x" * 40, "alice", ttl=60)
    for _ in range(3):
        with pytest.raises(AuthError):
            cache.verify(forged)
    assert len(cache) == 0


def test_the_cache_is_bounded_and_drops_the_least_recently_used(cache):
    a, b, c = (issue_token(SECRET, user, ttl=60) for user in ("a", "b", "c"))
    kept_a = cache.verify(a)
    cache.verify(b)
    assert cache.verify(a) is kept_a  # a is now the most recently used
    cache.verify(c)  # over size 2: b goes
    assert len(cache) == 2
    assert cache.verify(a) is kept_a
    assert cache.verify(b).user_id == "b"  # verified again; a was the older one now


# ----------------------------------------------------------- authenticator


def authenticator(rate: float = 1000, burst: int = 1000) -> tuple[Authenticator, Stats]:
    stats = Stats()
    tokens = TokenCache(TokenVerifier(SECRET, "HS256"))
    return Authenticator(tokens, rate=rate, burst=burst, stats=stats), stats


@pytest.mark.parametrize("header", [None, b"", b"Bearer", b"Bearer ", b"Basic abc", b"Token x"])
def test_without_a_bearer_token_401_says_how_to_get_one(header):
    auth, _ = authenticator()
    with pytest.raises(RequestError) as refused:
        auth.user_of(header, 0.0)
    assert (refused.value.status, refused.value.code) == (401, "unauthorized")
    assert "Authorization: Bearer" in refused.value.message
    assert "trade-engine token" in refused.value.message


def test_an_invalid_token_401_says_why_and_how_to_get_a_new_one():
    auth, _ = authenticator()
    expired = issue_token(SECRET, "alice", ttl=60, now=time.time() - 3600)
    with pytest.raises(RequestError) as refused:
        auth.user_of(b"Bearer " + expired.encode(), 0.0)
    assert refused.value.status == 401
    assert "expired" in refused.value.message
    assert "trade-engine token" in refused.value.message


def test_the_scheme_is_case_insensitive_and_the_rate_is_per_user():
    auth, stats = authenticator(rate=1, burst=2)
    alice = b"bearer " + issue_token(SECRET, "alice", ttl=60).encode()
    bob = b"Bearer " + issue_token(SECRET, "bob", ttl=60).encode()
    assert auth.user_of(alice, 0.0) == "alice"
    assert auth.user_of(alice, 0.0) == "alice"
    with pytest.raises(RequestError) as refused:
        auth.user_of(alice, 0.0)
    assert (refused.value.status, refused.value.code) == (429, "rate_limited")
    assert refused.value.retry_after == pytest.approx(1.0)
    assert "limits.rest_requests_per_second" in refused.value.message
    assert stats.rest_rate_limited == 1
    assert auth.user_of(bob, 0.0) == "bob"
    assert auth.user_of(alice, 1.0) == "alice"  # a token back after a second
