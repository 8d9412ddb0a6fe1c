"""Determinism: the same stamped commands always produce the same events and state.

The engine has no clock, no randomness and no I/O, so replaying a journal of
stamped commands into a fresh engine reproduces every event and the final
``state_hash()``; so does restoring a snapshot and replaying the rest.
"""

from __future__ import annotations

import random
from typing import Any

import pytest
from engine_harness import BTC, BTC_SPEC, ETH, ETH_SPEC

from engine import (
    AmendOrder,
    CancelAllOrders,
    CancelOrder,
    Engine,
    OrderRejected,
    OrderType,
    PlaceOrder,
    SelfTradePrevention,
    Side,
    TimeInForce,
    TradeExecuted,
)

USERS = ["ann", "ben", "cid", "dee"]
Journal = list[tuple[Any, int, int]]  # (command, seq, ts)


def random_journal(seed: int, length: int) -> Journal:
    """A seeded mix of every command kind, mostly valid, crossing often, some invalid."""
    rng = random.Random(seed)
    journal: Journal = []
    seq, ts, next_id = 0, 1_700_000_000_000, 1
    ids: list[int] = []
    for _ in range(length):
        seq += rng.randint(1, 3)
        ts += rng.randint(0, 5)
        roll = rng.random()
        user = rng.choice(USERS)
        if roll < 0.6:
            symbol = rng.choice([BTC, ETH])
            base = 100 if symbol == BTC else 10_000
            is_market = rng.random() < 0.1
            side = rng.choice(list(Side))
            # Bids mostly below ``base`` and asks above, overlapping by a few ticks:
            # the book grows deep and crossing stays frequent.
            offset = rng.randint(0, 12) - 3
            price = base - offset if side is Side.BUY else base + offset
            tif = rng.choice([None, TimeInForce.GTC, TimeInForce.IOC, TimeInForce.FOK])
            command: Any = PlaceOrder(
                order_id=next_id, user_id=user, symbol=symbol, side=side,
                quantity=rng.randint(1, 15),
                price=None if is_market else price,
                order_type=OrderType.MARKET if is_market else OrderType.LIMIT,
                time_in_force=(None if is_market or tif is None else tif),
                post_only=rng.random() < 0.1,
                self_trade_prevention=rng.choice(list(SelfTradePrevention)),
                client_order_id=rng.choice([None, None, f"c{rng.randint(1, 20)}"]),
            )
            ids.append(next_id)
            next_id += rng.choice([1, 1, 1, 0])  # sometimes a duplicate id
        elif roll < 0.75 and ids:
            command = CancelOrder(order_id=rng.choice(ids), user_id=user)
        elif roll < 0.9 and ids:
            command = AmendOrder(order_id=rng.choice(ids), user_id=user,
                                 price=rng.choice([None, 95 + rng.randint(0, 10)]),
                                 quantity=rng.choice([None, rng.randint(0, 15)]))
        elif roll < 0.97:
            command = CancelAllOrders(user_id=user, symbol=rng.choice([None, BTC, ETH]))
        else:
            command = rng.choice([None, "garbage", PlaceOrder(order_id=-1, user_id="", symbol="?",
                                                              side="up", quantity=0)])
        journal.append((command, seq, ts))
    return journal


def replay(journal: Journal, engine: Engine | None = None) -> tuple[Engine, list[list[Any]]]:
    engine = engine or Engine([BTC_SPEC, ETH_SPEC])
    return engine, [engine.apply(command, seq=seq, ts=ts) for command, seq, ts in journal]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_replaying_a_journal_reproduces_every_event_and_the_state_hash(seed):
    journal = random_journal(seed, 3_000)

    first, first_events = replay(journal)
    second, second_events = replay(journal)

    assert first_events == second_events
    assert first.state_hash() == second.state_hash()
    assert first.export_state() == second.export_state()


def test_the_generated_journal_exercises_trades_and_rejections():
    _, events = replay(random_journal(1, 3_000))
    flat = [e for batch in events for e in batch]

    assert sum(type(e) is TradeExecuted for e in flat) > 150
    assert sum(type(e) is OrderRejected for e in flat) > 100


@pytest.mark.parametrize("cut", [1, 777, 1_500, 2_999])
def test_restoring_a_snapshot_and_replaying_the_rest_matches_a_full_replay(cut):
    journal = random_journal(7, 3_000)
    full, full_events = replay(journal)
    head, _ = replay(journal[:cut])

    resumed, tail_events = replay(journal[cut:], Engine.restore(head.export_state()))

    assert tail_events == full_events[cut:]
    assert resumed.state_hash() == full.state_hash()


def test_different_journals_give_different_hashes():
    first, _ = replay(random_journal(1, 500))
    second, _ = replay(random_journal(2, 500))

    assert first.state_hash() != second.state_hash()
