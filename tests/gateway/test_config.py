"""Configuration: defaults, TOML, environment and flag overrides, and errors that name the key."""

from __future__ import annotations

import textwrap
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
import trio

from engine import DEFAULT_MARKETS
from gateway import (
    AuthSettings,
    Config,
    ConfigError,
    EngineSettings,
    WebSocketSettings,
    load_config,
)

TIMEOUT = 10

CUSTOM_MARKET = """
[[markets]]
symbol = "SOL/USDC"
base = "SOL"
quote = "USDC"
tick_size = "0.001"
lot_size = "0.1"
min_quantity = "0.1"
min_notional = "1"
maker_fee_rate = "0.0002"
taker_fee_rate = "0.0004"
fee_precision = 6
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "trade-engine.toml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def config_error(tmp_path: Path, text: str | None = None, **kwargs) -> str:
    file = None if text is None else write(tmp_path, text)
    kwargs.setdefault("environ", {})
    with pytest.raises(ConfigError) as caught:
        load_config(file, **kwargs)
    return str(caught.value)


# ------------------------------------------------------------------ defaults


def test_defaults():
    config = load_config(environ={})
    assert config.host == "127.0.0.1"
    assert config.rest_port == 8080
    assert config.ws_port == 8081
    assert config.markets == DEFAULT_MARKETS
    assert config.public_trade_user_ids is False
    assert config.max_request_body == 64 * 1024
    assert config.shutdown_grace_period == 5.0
    assert config.websocket == WebSocketSettings()
    assert config.websocket.ping_interval == 20.0
    assert config.websocket.max_subscriptions == 64
    assert config.auth == AuthSettings()
    assert config.auth.jwt_secret is None
    assert config.auth.jwt_public_key_file is None
    assert config.engine == EngineSettings()
    assert config == Config(data_dir=config.data_dir)


def test_default_data_dir_follows_xdg_data_home(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    assert load_config(environ={}).data_dir == tmp_path / "trade-engine"


def test_config_is_frozen():
    config = load_config(environ={})
    with pytest.raises(AttributeError):
        config.rest_port = 1  # type: ignore[misc]


# ---------------------------------------------------------------------- TOML


def test_toml_file_with_every_table(tmp_path):
    key = tmp_path / "public.pem"
    path = write(tmp_path, f"""
        host = "0.0.0.0"
        rest_port = 9000
        ws_port = 9001
        data_dir = "{tmp_path / 'data'}"
        public_trade_user_ids = true
        max_request_body = 2048
        shutdown_grace_period = 1.5

        [websocket]
        ping_interval = 5
        pong_timeout = 2.5
        max_subscriptions = 3
        send_queue_size = 100

        [auth]
        jwt_public_key_file = "{key}"
        token_ttl = 60
        issuer = "me"
        audience = "them"

        [engine]
        command_queue_size = 10
        trade_history = 5

        [journal]
        enabled = false
        """ + CUSTOM_MARKET)
    config = load_config(path, environ={})
    assert config.host == "0.0.0.0"
    assert (config.rest_port, config.ws_port) == (9000, 9001)
    assert config.data_dir == tmp_path / "data"
    assert config.public_trade_user_ids is True
    assert config.max_request_body == 2048
    assert config.shutdown_grace_period == 1.5
    assert config.websocket.ping_interval == 5.0
    assert isinstance(config.websocket.ping_interval, float)
    assert config.websocket.pong_timeout == 2.5
    assert config.websocket.max_subscriptions == 3
    assert config.websocket.send_queue_size == 100
    assert config.websocket.read_timeout == 60.0  # untouched keys keep their defaults
    assert config.auth.jwt_public_key_file == key
    assert config.auth.token_ttl == 60.0
    assert (config.auth.issuer, config.auth.audience) == ("me", "them")
    assert config.engine.command_queue_size == 10
    assert config.engine.trade_history == 5
    assert config.engine.order_history == EngineSettings().order_history
    assert config.journal.enabled is False
    [market] = config.markets
    assert market.symbol == "SOL/USDC"
    assert market.tick_size == Decimal("0.001")
    assert market.lot_size == Decimal("0.1")
    assert market.taker_fee_rate == Decimal("0.0004")
    assert market.fee_precision == 6


def test_market_amounts_may_be_toml_numbers(tmp_path):
    config = load_config(write(tmp_path, """
        [[markets]]
        symbol = "X/Y"
        base = "X"
        quote = "Y"
        tick_size = 0.5
        lot_size = 1
        min_quantity = 1
        min_notional = 0
        maker_fee_rate = 0.001
        taker_fee_rate = 0.002
        """), environ={})
    [market] = config.markets
    assert market.tick_size == Decimal("0.5")
    assert market.maker_fee_rate == Decimal("0.001")


def test_missing_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "nope.toml", environ={})


def test_invalid_toml_is_a_config_error(tmp_path):
    assert "invalid TOML" in config_error(tmp_path, "rest_port = ")


# ---------------------------------------------------------- env and flags


def test_environment_overrides():
    config = load_config(environ={
        "TRADE_ENGINE_REST_PORT": "9100",
        "TRADE_ENGINE_WEBSOCKET__PING_INTERVAL": "2.5",
        "TRADE_ENGINE_PUBLIC_TRADE_USER_IDS": "true",
        "TRADE_ENGINE_AUTH__JWT_SECRET": "s3cret",
        "UNRELATED": "ignored",
        "TRADE_ENGINEX": "not ours either",
    })
    assert config.rest_port == 9100
    assert config.websocket.ping_interval == 2.5
    assert config.public_trade_user_ids is True
    assert config.auth.jwt_secret == "s3cret"


def test_precedence_flags_over_env_over_file(tmp_path):
    path = write(tmp_path, """
        rest_port = 9000
        ws_port = 9001
        host = "127.0.0.2"
        [websocket]
        ping_interval = 5
        pong_timeout = 7
        """)
    environ = {"TRADE_ENGINE_REST_PORT": "9100", "TRADE_ENGINE_WS_PORT": "9101",
               "TRADE_ENGINE_WEBSOCKET__PING_INTERVAL": "6"}
    from_file = load_config(path, environ={})
    from_env = load_config(path, environ=environ)
    from_flags = load_config(path, environ=environ, overrides={
        "rest_port": 9200, "websocket.ping_interval": 9.0, "ws_port": None, "host": None})
    assert (from_file.rest_port, from_file.ws_port, from_file.websocket.ping_interval) == (
        9000, 9001, 5.0)
    assert (from_env.rest_port, from_env.ws_port, from_env.websocket.ping_interval) == (
        9100, 9101, 6.0)
    assert from_env.websocket.pong_timeout == 7.0  # the file's other keys survive
    assert from_flags.rest_port == 9200
    assert from_flags.websocket.ping_interval == 9.0
    assert from_flags.ws_port == 9101  # None means "flag not given"
    assert from_flags.host == "127.0.0.2"


def test_data_dir_override_is_a_path(tmp_path):
    config = load_config(environ={}, overrides={"data_dir": str(tmp_path)})
    assert config.data_dir == tmp_path


# ------------------------------------------------------------ unknown keys


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("rest_prot = 1", "rest_prot"),
        ("[websocket]\nping_intervall = 1", "ping_intervall"),
        ("[auth]\nsecret = 'x'", "secret"),
        ("[engine]\nqueue = 1", "queue"),
        ("[journal]\nfsynk = 'always'", "fsynk"),
        ("[logging]\nlevel = 'INFO'", "logging"),
        (CUSTOM_MARKET + "tick = '0.01'\n", "tick"),
    ],
)
def test_unknown_key_in_file_is_named(tmp_path, text, key):
    assert key in config_error(tmp_path, text)


@pytest.mark.parametrize(
    ("name", "key"),
    [("TRADE_ENGINE_RESTPORT", "restport"),
     ("TRADE_ENGINE_WEBSOCKET__PINGINTERVAL", "pinginterval")],
)
def test_unknown_key_in_environment_is_named(tmp_path, name, key):
    assert key in config_error(tmp_path, environ={name: "1"})


def test_unknown_key_in_flags_is_named(tmp_path):
    assert "colour" in config_error(tmp_path, overrides={"websocket.colour": "red"})


# -------------------------------------------------------------- bad values


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("rest_port = 99999", "rest_port"),
        ("ws_port = -1", "ws_port"),
        ('rest_port = "abc"', "rest_port"),
        ("rest_port = 80.5", "rest_port"),
        ("rest_port = true", "rest_port"),
        ("[websocket]\nread_timeout = -1", "read_timeout"),
        ("[websocket]\nping_interval = 0", "ping_interval"),
        ('[websocket]\nwrite_timeout = "soon"', "write_timeout"),
        ("[websocket]\nmax_message_size = 0", "max_message_size"),
        ("[auth]\ntoken_ttl = -5", "token_ttl"),
        ("[engine]\ncommand_queue_size = 1.5", "command_queue_size"),
        ("shutdown_grace_period = -1", "shutdown_grace_period"),
        ("max_request_body = 0", "max_request_body"),
        ('public_trade_user_ids = "maybe"', "public_trade_user_ids"),
        ("websocket = 5", "websocket"),
    ],
)
def test_bad_value_in_file_is_named(tmp_path, text, key):
    assert key in config_error(tmp_path, text)


@pytest.mark.parametrize(
    ("name", "value", "key"),
    [("TRADE_ENGINE_REST_PORT", "abc", "rest_port"),
     ("TRADE_ENGINE_REST_PORT", "99999", "rest_port"),
     ("TRADE_ENGINE_WEBSOCKET__PING_INTERVAL", "-1", "ping_interval"),
     ("TRADE_ENGINE_WEBSOCKET__PING_INTERVAL", "abc", "ping_interval")],
)
def test_bad_value_in_environment_is_named(tmp_path, name, value, key):
    assert key in config_error(tmp_path, environ={name: value})


@pytest.mark.parametrize("value", ["nan", "-nan"])
def test_nan_duration_is_refused(tmp_path, value):
    # A NaN timeout passes "value <= 0" and later breaks trio.sleep in every connection.
    assert "ping_interval" in config_error(tmp_path, f"[websocket]\nping_interval = {value}")
    assert "read_timeout" in config_error(
        tmp_path, environ={"TRADE_ENGINE_WEBSOCKET__READ_TIMEOUT": value})


def test_bad_market_amount_is_named(tmp_path):
    assert "tick_size" in config_error(
        tmp_path, CUSTOM_MARKET.replace('tick_size = "0.001"', 'tick_size = "-1"'))
    assert "taker_fee_rate" in config_error(
        tmp_path, CUSTOM_MARKET.replace('taker_fee_rate = "0.0004"', 'taker_fee_rate = "2"'))


def test_non_decimal_market_amount_is_named(tmp_path):
    message = config_error(
        tmp_path, CUSTOM_MARKET.replace('tick_size = "0.001"', 'tick_size = "abc"'))
    assert "tick_size" in message


def test_missing_market_key_is_named(tmp_path):
    message = config_error(tmp_path, CUSTOM_MARKET.replace('lot_size = "0.1"\n', ""))
    assert "lot_size" in message


# ------------------------------------------------ a configured market trades


async def test_gateway_trades_a_market_from_toml(tmp_path, start_gateway, token):
    config = load_config(write(tmp_path, CUSTOM_MARKET), environ={})
    gateway = await start_gateway(markets=config.markets)
    headers = {"Authorization": f"Bearer {token('alice')}"}
    bob = {"Authorization": f"Bearer {token('bob')}"}
    async with httpx.AsyncClient(base_url=gateway.endpoints.rest_url, timeout=10) as http:
        with trio.fail_after(TIMEOUT):
            markets = (await http.get("/api/v1/markets")).json()["markets"]
            sell = await http.post("/api/v1/orders", headers=headers, json={
                "symbol": "SOL-USDC", "side": "SELL", "price": "150.125", "quantity": "2.5"})
            buy = await http.post("/api/v1/orders", headers=bob, json={
                "symbol": "SOL/USDC", "side": "BUY", "price": "150.125", "quantity": "1"})
            off_tick = await http.post("/api/v1/orders", headers=bob, json={
                "symbol": "SOL/USDC", "side": "BUY", "price": "150.0001", "quantity": "1"})
            btc = await http.post("/api/v1/orders", headers=bob, json={
                "symbol": "BTC/USDT", "side": "BUY", "price": "50000", "quantity": "1"})
            trades = (await http.get("/api/v1/markets/SOL-USDC/trades")).json()["trades"]
    assert [m["symbol"] for m in markets] == ["SOL/USDC"]
    assert sell.status_code == 201, sell.text
    assert sell.json()["price"] == "150.125"
    assert sell.json()["quantity"] == "2.5"
    assert buy.status_code == 201, buy.text
    assert buy.json()["status"] == "FILLED"
    assert off_tick.json()["error"]["code"] == "price_off_tick"
    assert btc.json()["error"]["code"] == "unknown_symbol"
    [trade] = trades
    assert trade["price"] == "150.125"
    assert trade["quantity"] == "1.0"
    assert trade["fee_asset"] == "USDC"
    assert trade["buyer_fee"] == "0.060050"  # 150.125 * 0.0004, 6 places
    assert trade["seller_fee"] == "0.030025"
