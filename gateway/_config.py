"""Configuration: one frozen, typed object, loaded from TOML, environment and flags.

Rules of this module:

* Precedence, lowest first: built-in defaults, the TOML file, environment
  variables (``TRADE_ENGINE_REST_PORT``, ``TRADE_ENGINE_WEBSOCKET__PING_INTERVAL``:
  a double underscore steps into a table), then command-line flags.
* Unknown keys are errors, and every error names the offending key, so a typo
  fails at start-up instead of being silently ignored.
* Durations are seconds (floats), sizes are bytes or counts; the unit is in
  each field's docstring and in ``docs/configuration.md``.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import attrs
import cattrs

from engine import DEFAULT_MARKETS, MarketSpec
from gateway._broker._settings import BrokerSettings, Role
from gateway._journal import Fsync

ENV_PREFIX = "TRADE_ENGINE_"


class ConfigError(ValueError):
    """The configuration is invalid; the message names the key."""


def default_data_dir() -> Path:
    """``$XDG_DATA_HOME/trade-engine``, else ``~/.local/share/trade-engine``."""
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base) / "trade-engine"


def _positive(_instance: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if not value > 0:  # also refuses NaN
        raise ValueError(f"{attribute.name} must be positive, got {value}")


def _non_negative(_instance: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if not value >= 0:  # also refuses NaN
        raise ValueError(f"{attribute.name} must be zero or positive, got {value}")


def _port(_instance: object, attribute: attrs.Attribute[int], value: int) -> None:
    if not 0 <= value <= 65535:
        raise ValueError(f"{attribute.name} must be a TCP port (0-65535), got {value}")


@attrs.frozen(kw_only=True)
class WebSocketSettings:
    read_timeout: float = attrs.field(default=60.0, validator=_positive)
    """Seconds without any frame from the client before the connection is closed."""
    write_timeout: float = attrs.field(default=10.0, validator=_positive)
    """Seconds one send may take before the client counts as stalled and is closed."""
    ping_interval: float = attrs.field(default=20.0, validator=_positive)
    """Seconds between server pings."""
    pong_timeout: float = attrs.field(default=20.0, validator=_positive)
    """Seconds to wait for the pong before closing with code 4009."""
    handshake_timeout: float = attrs.field(default=10.0, validator=_positive)
    """Seconds a client may take to complete the opening handshake."""
    max_message_size: int = attrs.field(default=64 * 1024, validator=_positive)
    """Largest client message, in bytes (after reassembly); larger closes with 1009."""
    send_queue_size: int = attrs.field(default=4096, validator=_positive)
    """Messages queued for one client; when full, the client is closed with 4008."""
    max_subscriptions: int = attrs.field(default=64, validator=_positive)
    """Subscriptions one connection may hold."""
    depth_levels: int = attrs.field(default=10, validator=_positive)
    """Levels per side in the depth stream's snapshot and checksum."""
    compression: bool = True
    """Agree to permessage-deflate (RFC 7692) when a client offers it, as browsers do;
    each stream message is then compressed once for all such clients."""
    max_orders_in_flight: int = attrs.field(default=256, validator=_positive)
    """Order-entry requests of one connection waiting for their reply; past it the
    server stops reading that connection until replies go out (back-pressure)."""
    publish_timestamps: bool = False
    """Add ``published_ns`` (the server's monotonic clock, in ns, when the message was
    encoded) to every stream message; for latency measurements on the same machine."""


@attrs.frozen(kw_only=True)
class AuthSettings:
    jwt_secret: str | None = None
    """HS256 secret. When unset (and no public key), the secret lives in
    ``<data_dir>/jwt-secret``, created on first start."""
    jwt_public_key_file: Path | None = attrs.field(
        default=None, converter=attrs.converters.optional(Path))
    """PEM public key: tokens are then verified with RS256 instead of HS256."""
    token_ttl: float = attrs.field(default=24 * 3600.0, validator=_positive)
    """Seconds a token from ``trade-engine token`` stays valid."""
    issuer: str | None = None
    audience: str | None = None


@attrs.frozen(kw_only=True)
class EngineSettings:
    command_queue_size: int = attrs.field(default=10_000, validator=_positive)
    """Commands waiting for the engine; when full, REST answers 503 ``busy``."""
    order_history: int = attrs.field(default=100_000, validator=_positive)
    trade_history: int = attrs.field(default=1_000, validator=_positive)
    fanout_queue_size: int = attrs.field(default=10_000, validator=_positive)
    """Event batches waiting for each fan-out task; when full, the engine waits."""


@attrs.frozen(kw_only=True)
class JournalSettings:
    enabled: bool = True
    """Journal every command before it is acknowledged (off: memory only, lost on exit)."""
    fsync: Fsync = Fsync.BATCH
    """``always`` (an fsync per command), ``batch`` (one per group) or ``off``."""
    directory: Path | None = attrs.field(default=None, converter=attrs.converters.optional(Path))
    """Where segments and snapshots live; default ``<data_dir>/journal``."""
    segment_bytes: int = attrs.field(default=64 * 1024 * 1024, validator=_positive)
    """Start a new segment file past this size."""
    snapshot_every: int = attrs.field(default=100_000, validator=_positive)
    """Commands between snapshots (which let old segments be deleted)."""


@attrs.frozen(kw_only=True)
class LimitSettings:
    max_connections_per_ip: int = attrs.field(default=1000, validator=_positive)
    """Open WebSocket connections from one IP address; more get HTTP 429."""
    max_connections_per_user: int = attrs.field(default=50, validator=_positive)
    """Open WebSocket connections with one user's token; more get HTTP 429."""
    connections_per_second_per_ip: float = attrs.field(default=100.0, validator=_positive)
    """New WebSocket connections per second from one IP (token bucket rate)."""
    connection_burst_per_ip: int = attrs.field(default=200, validator=_positive)
    messages_per_second: float = attrs.field(default=20.0, validator=_positive)
    """Client messages per second on one connection (token bucket rate)."""
    message_burst: int = attrs.field(default=50, validator=_positive)
    """Messages a connection may send at once; past it, ``rate_limited`` errors,
    and this many refused in a row close the connection with 4029."""
    rest_requests_per_second: float = attrs.field(default=50.0, validator=_positive)
    """Authenticated REST requests per second per user; more get 429 + Retry-After."""
    rest_burst: int = attrs.field(default=100, validator=_positive)
    orders_per_second: float = attrs.field(default=100.0, validator=_positive)
    """Order-entry commands per second per user, REST and WebSocket together (token
    bucket rate); more get ``rate_limited`` (REST 429 + Retry-After)."""
    order_burst: int = attrs.field(default=200, validator=_positive)
    allowed_origins: tuple[str, ...] = ()
    """Web page origins allowed to use this server from a browser: the WebSocket
    ``Origin`` check and REST CORS. Empty allows any (logged at start)."""


@attrs.frozen(kw_only=True)
class HistorySettings:
    """What a reconnecting client can resume from (``since`` on subscribe)."""

    messages: int = attrs.field(default=1000, validator=_non_negative)
    """Messages kept per channel (0: no history). A resume queues its whole backlog at
    once, so a value above ``websocket.send_queue_size`` is lowered to it."""
    seconds: float = attrs.field(default=300.0, validator=_positive)
    """Age limit, by the messages' own timestamps: a channel whose newest message is
    older than this (relative to the newest message of any channel) is forgotten."""


@attrs.frozen(kw_only=True)
class GcSettings:
    """The cyclic garbage collector, which affects the whole process (see docs/configuration.md)."""

    freeze_interval: float = attrs.field(default=1.0, validator=_non_negative)
    """Seconds between ``gc.freeze()`` calls, which take every object alive then out of
    the collector's scans (0: leave the collector alone)."""
    full_collection_interval: float = attrs.field(default=900.0, validator=_non_negative)
    """Seconds between full collections of everything, frozen objects included, which
    reclaim the reference cycles they left (0: never)."""


@attrs.frozen(kw_only=True)
class Config:
    host: str = "127.0.0.1"
    rest_port: int = attrs.field(default=8080, validator=_port)
    ws_port: int = attrs.field(default=8081, validator=_port)
    data_dir: Path = attrs.field(factory=default_data_dir, converter=Path)
    markets: tuple[MarketSpec, ...] = DEFAULT_MARKETS
    public_trade_user_ids: bool = False
    """Publish ``buyer_id``/``seller_id`` on the public trades stream (off: exchanges never do)."""
    max_request_body: int = attrs.field(default=64 * 1024, validator=_positive)
    """Largest REST request body in bytes; larger gets 413."""
    shutdown_grace_period: float = attrs.field(default=5.0, validator=_positive)
    """Seconds between the shutdown signal and the hard cancel of everything."""
    websocket: WebSocketSettings = attrs.field(factory=WebSocketSettings)
    auth: AuthSettings = attrs.field(factory=AuthSettings)
    engine: EngineSettings = attrs.field(factory=EngineSettings)
    journal: JournalSettings = attrs.field(factory=JournalSettings)
    limits: LimitSettings = attrs.field(factory=LimitSettings)
    gc: GcSettings = attrs.field(factory=GcSettings)
    history: HistorySettings = attrs.field(factory=HistorySettings)
    role: Role = Role.ALL
    """``all`` (one process), or ``engine`` / ``gateway`` of a scale-out deployment
    over ``broker.url`` (see docs/scaling.md)."""
    broker: BrokerSettings = attrs.field(factory=BrokerSettings)

    def __attrs_post_init__(self) -> None:
        if self.role is not Role.ALL and self.broker.url is None:
            raise ValueError(f"role {self.role.value} needs broker.url (--broker "
                             "redis://HOST:PORT/DB), the Redis its engine and gateways share")
        if self.role is Role.ENGINE and not self.journal.enabled:
            raise ValueError("role engine needs the journal (journal.enabled = true): "
                             "gateways are rebuilt from it after a failure")

    @property
    def journal_directory(self) -> Path:
        return self.journal.directory or self.data_dir / "journal"


def _converter() -> cattrs.Converter:
    converter = cattrs.Converter(forbid_extra_keys=True)

    def structure_market(value: Any, _type: type) -> MarketSpec:
        if not isinstance(value, Mapping):
            raise ValueError("a market must be a table")
        fields = {a.name: a for a in attrs.fields(MarketSpec)}
        extra = set(value) - set(fields)
        if extra:
            raise ValueError(f"unknown market keys: {sorted(extra)}")
        missing = [name for name, a in fields.items()
                   if a.default is attrs.NOTHING and name not in value]
        if missing:
            raise ValueError(f"missing market keys: {missing}")
        given: dict[str, Any] = {}
        for key, raw in value.items():
            if key in ("symbol", "base", "quote"):
                if not isinstance(raw, str) or not raw:
                    raise ValueError(f"market {key} must be a non-empty string")
                given[key] = raw
            elif key == "fee_precision":
                given[key] = structure_int(raw, int)
            else:
                try:
                    given[key] = Decimal(str(raw))
                except InvalidOperation:
                    raise ValueError(f"market {key} must be a decimal, got {raw!r}") from None
        return MarketSpec(**given)

    def structure_float(value: Any, _type: type) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise ValueError(f"expected a number, got {value!r}")
        return float(value)

    def structure_int(value: Any, _type: type) -> int:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ValueError(f"expected an integer, got {value!r}")
        return int(value)

    def structure_bool(value: Any, _type: type) -> bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "1", "yes", "false", "0", "no"):
            return value.lower() in ("true", "1", "yes")
        raise ValueError(f"expected true or false, got {value!r}")

    converter.register_structure_hook(MarketSpec, structure_market)
    converter.register_structure_hook(float, structure_float)
    converter.register_structure_hook(int, structure_int)
    converter.register_structure_hook(bool, structure_bool)
    converter.register_structure_hook(Path, lambda value, _: Path(value).expanduser())
    return converter


_CONVERTER = _converter()


def _describe(exc: BaseException, type_: type | None) -> str:
    if isinstance(exc, ValueError) and not isinstance(exc, cattrs.BaseValidationError):
        return str(exc)
    return cattrs.v.format_exception(exc, type_)


def _set_path(tree: dict[str, Any], path: list[str], value: Any) -> None:
    for key in path[:-1]:
        node = tree.setdefault(key, {})
        if not isinstance(node, dict):
            raise ConfigError(f"{'.'.join(path)}: {key} is not a table")
        tree = node
    tree[path[-1]] = value


def load_config(
    file: Path | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Config:
    """Build the configuration from a TOML file, the environment and overrides.

    Args:
        file: a TOML file; None for defaults only.
        environ: where to look for ``TRADE_ENGINE_*`` variables (``os.environ``).
        overrides: dotted keys (``"websocket.ping_interval"``) from flags; None
            values are ignored.

    Raises:
        ConfigError: unreadable file, invalid TOML, unknown key or bad value;
            the message names the key.
    """
    tree: dict[str, Any] = {}
    if file is not None:
        try:
            tree = tomllib.loads(file.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"cannot read config file {file}: {exc.strerror}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"invalid TOML in {file}: {exc}") from exc
    env = os.environ if environ is None else environ
    for name, value in sorted(env.items()):
        if name.startswith(ENV_PREFIX):
            path = name[len(ENV_PREFIX):].lower().split("__")
            _set_path(tree, path, value)
    for dotted, value in (overrides or {}).items():
        if value is not None:
            _set_path(tree, dotted.split("."), value)
    try:
        return _CONVERTER.structure(tree, Config)
    except Exception as exc:  # cattrs wraps every field error; flatten them to key paths
        messages = cattrs.transform_error(exc, path="config", format_exception=_describe) \
            if isinstance(exc, cattrs.BaseValidationError) else [str(exc)]
        raise ConfigError("invalid configuration: " + "; ".join(messages)) from None
