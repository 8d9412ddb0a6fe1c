"""Authentication: JWT bearer tokens (HS256 with a secret, or RS256 with a public key).

Rules of this module: a token must carry ``sub`` (the user id) and ``exp``;
``nbf``, issuer and audience are checked when present or configured. For a
newcomer, the HS256 secret is created on first start in the data directory
(mode 0600) so ``trade-engine token`` can sign tokens for the same server.
"""

from __future__ import annotations

import os
import secrets
import shlex
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import attrs
import jwt

from gateway._config import AuthSettings

SECRET_FILE = "jwt-secret"


class AuthError(Exception):
    """A missing, malformed, expired or forged token."""


def load_or_create_secret(data_dir: Path) -> str:
    """The HS256 secret in ``data_dir``, created (0600) if it does not exist yet."""
    path = data_dir / SECRET_FILE
    try:
        return path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        pass
    data_dir.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_urlsafe(48)
    temporary = path.with_suffix(".tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as file:
        file.write(secret + "\n")
        file.flush()
        os.fsync(file.fileno())
    os.replace(temporary, path)
    return secret


@attrs.frozen
class Identity:
    user_id: str
    expires_at: float


@attrs.frozen
class TokenVerifier:
    key: Any
    algorithm: str
    issuer: str | None = None
    audience: str | None = None

    @classmethod
    def from_settings(cls, settings: AuthSettings, data_dir: Path) -> TokenVerifier:
        if settings.jwt_public_key_file is not None:
            key = settings.jwt_public_key_file.read_text(encoding="ascii")
            return cls(key, "RS256", settings.issuer, settings.audience)
        secret = settings.jwt_secret or load_or_create_secret(data_dir)
        return cls(secret, "HS256", settings.issuer, settings.audience)

    def verify(self, token: str) -> Identity:
        """The identity a token proves.

        Raises:
            AuthError: the reason in words, safe to show to the client.
        """
        try:
            claims = jwt.decode(
                token, self.key, algorithms=[self.algorithm], issuer=self.issuer,
                audience=self.audience, options={"require": ["exp", "sub"]},
            )
        except jwt.ExpiredSignatureError:
            raise AuthError(self._expired(token)) from None
        except jwt.PyJWTError as exc:
            raise AuthError(f"invalid token: {exc}") from None
        user = claims["sub"]
        if not isinstance(user, str) or not user or len(user) > 128:
            raise AuthError("invalid token: sub must be a non-empty string")
        return Identity(user, float(claims["exp"]))

    def _expired(self, token: str) -> str:
        """Why an expired token is refused, and how to get a new one.

        The token is decoded again without the expiry check (the signature,
        issuer and audience still checked), so that only a genuine token's
        user and expiry are quoted back, and only to the client that sent it.
        """
        try:
            claims = jwt.decode(
                token, self.key, algorithms=[self.algorithm], issuer=self.issuer,
                audience=self.audience, options={"require": ["exp", "sub"], "verify_exp": False},
            )
        except jwt.PyJWTError as exc:
            return f"invalid token: {exc}"
        expired = datetime.fromtimestamp(float(claims["exp"]), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        user = claims["sub"]
        if not isinstance(user, str) or not user.isprintable() or not 0 < len(user) <= 128:
            user = "USER"
        if self.algorithm != "HS256":  # an RS256 key: someone else's issuer signs tokens
            return f"token expired at {expired}; get a new one from the token issuer"
        return (f"token expired at {expired}; get a new one with: "
                f"trade-engine token --user {shlex.quote(user)}")


def issue_token(
    secret: str, user_id: str, *, ttl: float, issuer: str | None = None,
    audience: str | None = None, now: float | None = None,
) -> str:
    """An HS256 token for ``user_id`` valid for ``ttl`` seconds."""
    issued = time.time() if now is None else now
    claims: dict[str, Any] = {"sub": user_id, "iat": int(issued), "exp": int(issued + ttl)}
    if issuer is not None:
        claims["iss"] = issuer
    if audience is not None:
        claims["aud"] = audience
    return jwt.encode(claims, secret, algorithm="HS256")
