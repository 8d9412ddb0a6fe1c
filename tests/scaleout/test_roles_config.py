"""The roles' configuration: what ``role`` and ``[broker]`` accept, and what they refuse."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from gateway import BrokerSettings, Config, ConfigError, JournalSettings, Role, load_config


def test_the_default_is_all_in_one_without_a_broker() -> None:
    config = Config()
    assert config.role is Role.ALL
    assert config.broker.url is None


def test_roles_and_broker_from_toml_environment_and_flags(tmp_path: Path) -> None:
    file = tmp_path / "c.toml"
    file.write_text('role = "gateway"\n[broker]\nurl = "redis://10.0.0.5:6380/2"\n'
                    "reply_timeout = 2.5\n")
    config = load_config(file, environ={})
    assert config.role is Role.GATEWAY
    assert config.broker == BrokerSettings(url="redis://10.0.0.5:6380/2", reply_timeout=2.5)
    config = load_config(None, environ={"TRADE_ENGINE_ROLE": "engine",
                                        "TRADE_ENGINE_BROKER__URL": "redis://h:1/0"})
    assert (config.role, config.broker.url) == (Role.ENGINE, "redis://h:1/0")
    config = load_config(None, environ={}, overrides={"role": "engine",
                                                      "broker.url": "redis://h/"})
    assert config.role is Role.ENGINE


@pytest.mark.parametrize(("tree", "says"), [
    ({"role": "gateway"}, "needs broker.url"),
    ({"role": "engine"}, "needs broker.url"),
    ({"role": "replica", "broker.url": "redis://h/"}, "role"),
    ({"role": "gateway", "broker.url": "http://h:1/0"}, "redis://HOST:PORT/DB"),
    ({"role": "engine", "broker.url": "redis://h/", "journal.enabled": "false"},
     "needs the journal"),
    ({"broker.reply_timeout": "0"}, "reply_timeout must be positive"),
])
def test_refusals_name_the_key_and_the_fix(tree: dict[str, str], says: str) -> None:
    with pytest.raises(ConfigError, match=says):
        load_config(None, environ={}, overrides=tree)


def test_an_engine_without_a_journal_is_refused_in_python_too() -> None:
    with pytest.raises(ValueError, match="needs the journal"):
        Config(role=Role.ENGINE, broker=BrokerSettings(url="redis://h/"),
               journal=JournalSettings(enabled=False))


def test_serve_exits_2_naming_the_missing_broker(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "gateway._cli", "serve", "--role", "gateway",
         "--data-dir", str(tmp_path), "--rest-port", "0", "--ws-port", "0"],
        capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 2
    assert "needs broker.url (--broker redis://HOST:PORT/DB)" in result.stderr
