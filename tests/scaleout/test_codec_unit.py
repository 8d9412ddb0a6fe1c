"""The broker's pure half (gateway/_broker/_codec.py): formats and bookkeeping, no Redis."""

from __future__ import annotations

import pytest

from engine import CancelOrder, PlaceOrder, Record, Side
from gateway._broker._codec import (
    Backoff,
    Bootstrap,
    BrokerUrlError,
    Follower,
    Gap,
    Keys,
    Waiting,
    decode_bootstrap,
    decode_command,
    decode_records,
    encode_bootstrap,
    encode_command,
    encode_records,
    entry_id_key,
    entry_seq,
    make_origin,
    origin_entry_id,
    origin_tag,
    parse_broker_url,
)

PLACE = PlaceOrder(order_id=0, user_id="alice", symbol="BTC/USDT", side=Side.BUY,
                   price=5_000_000, quantity=1_000, client_order_id="c-1")


def record(seq: int, origin: str | None = None) -> Record:
    return Record(seq, 1_000 + seq, CancelOrder(order_id=seq, user_id="u"), origin)


def test_broker_url_forms() -> None:
    address = parse_broker_url("redis://10.0.0.5:6380/2")
    assert (address.host, address.port, address.db) == ("10.0.0.5", 6380, 2)
    assert parse_broker_url("redis://localhost").port == 6379
    assert parse_broker_url("redis://localhost/").db == 0
    secret = parse_broker_url("redis://:s3cret@h:1/0")
    assert secret.password == "s3cret"
    assert "s3cret" not in repr(secret)
    assert str(secret) == "redis://h:1/0"


@pytest.mark.parametrize("url", [
    "http://h:1/0", "h:6379", "redis://:1/0", "redis://h:1/zero", "redis://h:99999/0",
    "redis://h:1/0?x=1",
])
def test_bad_broker_urls_name_the_form(url: str) -> None:
    with pytest.raises(BrokerUrlError, match=r"redis://HOST:PORT/DB"):
        parse_broker_url(url)


def test_keys_share_a_prefix() -> None:
    keys = Keys("app1:")
    assert [keys.commands, keys.events, keys.bootstrap, keys.engine, keys.epoch] == [
        "app1:commands", "app1:events", "app1:bootstrap", "app1:engine", "app1:epoch"]


def test_command_entry_round_trips_as_redis_returns_it() -> None:
    fields = encode_command(PLACE, "g1.7")
    as_read = {key.encode(): value for key, value in fields.items()}  # coredis: bytes keys
    assert decode_command(as_read) == (PLACE, "g1.7")
    with pytest.raises(ValueError, match="not a command entry"):
        decode_command({b"c": b"\x01"})
    with pytest.raises(ValueError, match="not a command entry"):
        decode_command({b"c": b"\xc1", b"t": b"x"})


def test_origin_holds_entry_id_and_tag() -> None:
    origin = make_origin(b"1700000000000-3", "ab12.9")
    assert origin == "1700000000000-3 ab12.9"
    assert origin_entry_id(origin) == "1700000000000-3"
    assert origin_tag(origin) == "ab12.9"
    assert origin_tag(None) is None


def test_entry_ids_compare_as_numbers() -> None:
    assert entry_seq(b"42-0") == 42
    assert entry_id_key("10-0") > entry_id_key("9-5")  # as strings, "10-0" < "9-5"
    assert entry_id_key(b"9-10") > entry_id_key("9-9")


def test_records_and_bootstrap_round_trip() -> None:
    records = [record(1, "5-0 g.1"), record(2)]
    assert decode_records(encode_records(records)) == records
    with pytest.raises(ValueError, match="not an events entry"):
        decode_records("text")
    bootstrap = Bootstrap(seq=7, epoch="00ff" * 4, engine=b"snap", streams=None)
    assert decode_bootstrap(encode_bootstrap(bootstrap)) == bootstrap
    with pytest.raises(ValueError, match="not a bootstrap"):
        decode_bootstrap(b"\x01")


def test_follower_skips_what_it_holds_and_refuses_gaps() -> None:
    follower = Follower(3)
    assert follower.accept([record(2), record(3)]) == []
    assert [r.seq for r in follower.accept([record(3), record(4), record(5)])] == [4, 5]
    assert follower.position == 5
    with pytest.raises(Gap) as gap:
        follower.accept([record(7), record(8)])
    assert (gap.value.expected, gap.value.found) == (6, 7)
    assert follower.position == 5  # nothing accepted
    with pytest.raises(Gap):
        follower.accept([record(6), record(8)])
    assert follower.position == 5


def test_waiting_requests_by_tag_and_deadline() -> None:
    waiting: Waiting[str] = Waiting(prefix="g", limit=2)
    first, second = waiting.new_tag(), waiting.new_tag()
    assert first != second
    assert first.startswith("g.")
    assert waiting.add(first, "a", deadline=1.0)
    assert waiting.add(second, "b", deadline=2.0)
    assert not waiting.add("g.x", "c", deadline=3.0)  # bounded
    assert waiting.take("someone-else.1") is None
    assert waiting.expired(1.5) == ["a"]
    assert waiting.take(first) is None  # expired once, never answered twice
    assert waiting.take(second) == "b"
    assert len(waiting) == 0
    waiting.add(waiting.new_tag(), "d", deadline=9.0)
    assert waiting.drain() == ["d"]


def test_backoff_doubles_to_its_ceiling_and_resets() -> None:
    backoff = Backoff(0.05, 0.3)
    assert [backoff.next() for _ in range(5)] == [0.05, 0.1, 0.2, 0.3, 0.3]
    backoff.reset()
    assert backoff.next() == 0.05
