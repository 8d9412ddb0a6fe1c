"""Authentication: HS256 tokens from the data directory's secret, RS256 with a public key.

``TokenVerifier`` is checked directly for the claims rules, and through REST on a
real gateway for what a client sees (401 ``unauthorized``).
"""

from __future__ import annotations

import math
import stat
import time
from pathlib import Path

import httpx
import jwt
import pytest
import trio
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from gateway import AuthSettings, Config, TokenVerifier, issue_token, serve
from gateway._auth import AuthError, load_or_create_secret

TIMEOUT = 10
SECRET = "a-test-secret-that-is-long-enough-for-hs256-0123456789"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def list_orders(gateway, token: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=gateway.endpoints.rest_url, timeout=10) as http:
        with trio.fail_after(TIMEOUT):
            return await http.get("/api/v1/orders", headers=bearer(token))


def assert_unauthorized(response: httpx.Response) -> str:
    assert response.status_code == 401, response.text
    error = response.json()["error"]
    assert error["code"] == "unauthorized"
    assert error["field"] is None
    return error["message"]


@pytest.fixture(scope="module")
def rsa_keys() -> tuple[bytes, bytes]:
    """(private PEM, public PEM) of a fresh 2048-bit key pair."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption())
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return private, public


# ------------------------------------------------------------ the verifier


def test_issued_token_verifies():
    verifier = TokenVerifier(SECRET, "HS256")
    before = time.time()
    identity = verifier.verify(issue_token(SECRET, "alice", ttl=600))
    assert identity.user_id == "alice"
    assert before + 598 <= identity.expires_at <= time.time() + 601


def test_issue_token_claims():
    token = issue_token(SECRET, "alice", ttl=60, issuer="me", audience="you", now=1000.0)
    claims = jwt.decode(token, SECRET, algorithms=["HS256"], audience="you",
                        options={"verify_exp": False})
    assert claims == {"sub": "alice", "iat": 1000, "exp": 1060, "iss": "me", "aud": "you"}


@pytest.mark.parametrize(
    "claims",
    [
        {"exp": 2**40},  # no sub
        {"sub": "alice"},  # no exp
        {"sub": "", "exp": 2**40},
        {"sub": 42, "exp": 2**40},
        {"sub": "x" * 129, "exp": 2**40},
        {"sub": "alice", "exp": 2**40, "nbf": 2**39},  # not valid yet
        {"sub": "alice", "exp": 1},  # long expired
    ],
)
def test_verifier_refuses_bad_claims(claims):
    with pytest.raises(AuthError):
        TokenVerifier(SECRET, "HS256").verify(jwt.encode(claims, SECRET, algorithm="HS256"))


def test_verifier_checks_issuer_and_audience():
    verifier = TokenVerifier(SECRET, "HS256", issuer="me", audience="you")
    assert verifier.verify(issue_token(SECRET, "a", ttl=60, issuer="me", audience="you"))
    for token in (issue_token(SECRET, "a", ttl=60),
                  issue_token(SECRET, "a", ttl=60, issuer="other", audience="you"),
                  issue_token(SECRET, "a", ttl=60, issuer="me", audience="other")):
        with pytest.raises(AuthError):
            verifier.verify(token)


def test_token_issued_in_the_future_is_refused():
    with pytest.raises(AuthError):
        TokenVerifier(SECRET, "HS256").verify(
            issue_token(SECRET, "alice", ttl=60, now=time.time() + 30))


def test_unsigned_token_is_refused():
    token = jwt.encode({"sub": "alice", "exp": 2**40}, None, algorithm="none")
    with pytest.raises(AuthError):
        TokenVerifier(SECRET, "HS256").verify(token)


def test_secret_file_is_created_once_with_mode_0600(tmp_path):
    data = tmp_path / "fresh" / "dir"
    secret = load_or_create_secret(data)
    path = data / "jwt-secret"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(secret) >= 32
    assert load_or_create_secret(data) == secret
    assert not (data / "jwt-secret.tmp").exists()


# ----------------------------------------------------------- through REST


async def test_first_start_creates_the_secret_with_mode_0600(start_gateway, tmp_path):
    path = tmp_path / "data" / "jwt-secret"
    assert not path.exists()
    gateway = await start_gateway()
    assert path.exists()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    secret = path.read_text(encoding="ascii").strip()
    response = await list_orders(gateway, issue_token(secret, "alice", ttl=60))
    assert response.status_code == 200


async def test_a_restarted_gateway_keeps_its_secret(tmp_path):
    config = Config(rest_port=0, ws_port=0, data_dir=tmp_path / "data")
    tokens = []
    for _ in range(2):
        async with trio.open_nursery() as nursery:
            gateway = await nursery.start(serve, config)
            if not tokens:
                tokens.append(issue_token(load_or_create_secret(config.data_dir), "alice",
                                          ttl=60))
            assert (await list_orders(gateway, tokens[0])).status_code == 200
            gateway.shutdown()


async def test_valid_token_identifies_the_user(gateway, token):
    async with httpx.AsyncClient(base_url=gateway.endpoints.rest_url, timeout=10) as http:
        with trio.fail_after(TIMEOUT):
            placed = await http.post("/api/v1/orders", headers=bearer(token("carol")), json={
                "symbol": "BTC/USDT", "side": "BUY", "price": "50000", "quantity": "0.01"})
    assert placed.status_code == 201
    assert placed.json()["user_id"] == "carol"


async def test_expired_token_is_401(gateway, token):
    message = assert_unauthorized(await list_orders(gateway, token("alice", ttl=-60)))
    assert "expired" in message


async def test_token_expires_while_the_server_runs(gateway, tmp_path):
    secret = load_or_create_secret(tmp_path / "data")
    # exp is in whole seconds: aim it at a second boundary at least 0.3 s away
    # (and keep iat in the past: a future iat is refused too)
    expires = math.ceil(time.time() + 0.3)
    short = issue_token(secret, "alice", ttl=2, now=expires - 2)
    assert (await list_orders(gateway, short)).status_code == 200
    await trio.sleep(expires - time.time() + 0.05)
    assert "expired" in assert_unauthorized(await list_orders(gateway, short))


async def test_token_signed_with_another_secret_is_401(gateway):
    message = assert_unauthorized(
        await list_orders(gateway, issue_token(SECRET, "alice", ttl=60)))
    assert "invalid token" in message


async def test_configured_hs256_secret_is_used_and_no_file_is_written(start_gateway, tmp_path):
    gateway = await start_gateway(auth=AuthSettings(jwt_secret=SECRET))
    assert (await list_orders(gateway, issue_token(SECRET, "alice", ttl=60))).status_code == 200
    assert not (tmp_path / "data" / "jwt-secret").exists()
    other = load_or_create_secret(tmp_path / "other")
    assert_unauthorized(await list_orders(gateway, issue_token(other, "alice", ttl=60)))


async def test_issuer_and_audience_are_enforced_over_rest(start_gateway):
    gateway = await start_gateway(auth=AuthSettings(jwt_secret=SECRET, issuer="te",
                                                    audience="api"))
    good = issue_token(SECRET, "alice", ttl=60, issuer="te", audience="api")
    assert (await list_orders(gateway, good)).status_code == 200
    assert_unauthorized(await list_orders(gateway, issue_token(SECRET, "alice", ttl=60)))


async def test_rs256_public_key(start_gateway, tmp_path: Path, rsa_keys):
    private, public = rsa_keys
    key_file = tmp_path / "public.pem"
    key_file.write_bytes(public)
    gateway = await start_gateway(auth=AuthSettings(jwt_public_key_file=key_file))
    claims = {"sub": "alice", "exp": int(time.time()) + 60}

    rs256 = jwt.encode(claims, private, algorithm="RS256")
    response = await list_orders(gateway, rs256)
    assert response.status_code == 200, response.text

    # HS256 tokens are refused: with the data dir's secret, and with the public key as
    # an HMAC secret (the algorithm-confusion attack).
    data_secret = load_or_create_secret(tmp_path / "data")
    assert_unauthorized(await list_orders(gateway, issue_token(data_secret, "alice", ttl=60)))
    # a token signed by another RSA key
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    assert_unauthorized(await list_orders(gateway, jwt.encode(claims, other, algorithm="RS256")))
    expired = jwt.encode({"sub": "alice", "exp": int(time.time()) - 60}, private,
                         algorithm="RS256")
    assert "expired" in assert_unauthorized(await list_orders(gateway, expired))


async def test_rs256_key_signs_orders_end_to_end(start_gateway, tmp_path, rsa_keys):
    private, public = rsa_keys
    key_file = tmp_path / "public.pem"
    key_file.write_bytes(public)
    gateway = await start_gateway(auth=AuthSettings(jwt_public_key_file=key_file))
    token = jwt.encode({"sub": "dave", "exp": int(time.time()) + 60}, private, algorithm="RS256")
    async with httpx.AsyncClient(base_url=gateway.endpoints.rest_url, timeout=10) as http:
        with trio.fail_after(TIMEOUT):
            placed = await http.post("/api/v1/orders", headers=bearer(token), json={
                "symbol": "ETH/USDT", "side": "SELL", "price": "3000", "quantity": "0.1"})
    assert placed.status_code == 201, placed.text
    assert placed.json()["user_id"] == "dave"
