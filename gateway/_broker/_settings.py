"""The ``role`` and ``[broker]`` configuration (``gateway._config.Config`` holds them).

Rules of this module: pure values, validated when built, so that a bad
broker URL or a role without a broker stops ``trade-engine serve`` at start
with a message that names the key and the fix.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

import attrs

from gateway._broker._codec import parse_broker_url


class Role(StrEnum):
    """What one ``trade-engine serve`` process does."""

    ALL = "all"
    """Everything in one process, no external service (the default)."""
    ENGINE = "engine"
    """The one process owning the data directory and the journal; publishes to Redis."""
    GATEWAY = "gateway"
    """REST and WebSocket for clients; follows the engine through Redis (any number)."""


def _url(_instance: object, _attribute: attrs.Attribute[Any], value: str | None) -> None:
    if value is not None:
        parse_broker_url(value)  # raises BrokerUrlError (a ValueError) naming the form


def _positive(_instance: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if not value > 0:
        raise ValueError(f"{attribute.name} must be positive, got {value}")


@attrs.frozen(kw_only=True)
class BrokerSettings:
    url: str | None = attrs.field(default=None, validator=_url)
    """``redis://HOST:PORT/DB``: the Redis the engine and gateways meet on (roles
    ``engine`` and ``gateway`` only)."""
    key_prefix: str = "te:"
    """Prefix of every Redis key; one deployment's engine and gateways share it."""
    reply_timeout: float = attrs.field(default=5.0, validator=_positive)
    """Seconds a gateway waits for the engine to make an order durable before it
    answers ``engine_unavailable`` (the order may exist)."""
    liveness_ttl: float = attrs.field(default=3.0, validator=_positive)
    """Seconds the engine's liveness key lives without a refresh (refreshed every
    third of it): how soon gateways notice a dead engine."""
    events_retention: int = attrs.field(default=100_000, validator=_positive)
    """Commands the events stream keeps behind its newest (never fewer than the
    bootstrap snapshot needs): how far a gateway may lag and still catch up."""
