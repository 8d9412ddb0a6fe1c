"""Helpers for the engine's specification tests (imported by the test modules).

Everything here goes through the public surface (``import engine``). The
``Exchange`` harness stamps each command with the next sequence number and a
timestamp, so a test reads as the list of orders it sends and the events it
gets back.
"""

from __future__ import annotations

from typing import Any, TypeVar

import msgspec

import engine
from engine import (
    AmendOrder,
    CancelAllOrders,
    CancelOrder,
    Engine,
    MarketSpec,
    OrderType,
    PlaceOrder,
    SelfTradePrevention,
    Side,
    TimeInForce,
)

BTC = "BTC/USDT"
ETH = "ETH/USDT"

BTC_SPEC = MarketSpec(
    symbol=BTC, base="BTC", quote="USDT",
    tick_size="0.01", lot_size="0.001", min_quantity="0", min_notional="0",
    maker_fee_rate="0.001", taker_fee_rate="0.002", fee_precision=8,
)
"""The simple market most tests trade: no minimums, maker 0.1 %, taker 0.2 %."""

ETH_SPEC = MarketSpec(
    symbol=ETH, base="ETH", quote="USDT",
    tick_size="0.01", lot_size="0.01", min_quantity="0.05", min_notional="10",
    maker_fee_rate="-0.0001", taker_fee_rate="0.0005", fee_precision=6,
)
"""A market with minimums (5 lots, 100_000 tick*lots) and a maker rebate."""

E = TypeVar("E")


class Exchange:
    """An engine plus a clock: every command gets ``seq`` = previous + 1 and ``ts`` = 1000 * seq."""

    def __init__(self, engine_: Engine) -> None:
        self.engine = engine_
        self.seq = engine_.last_seq

    # --- sending commands ---------------------------------------------------

    def apply(self, command: object) -> list[engine.Event]:
        self.seq += 1
        return self.engine.apply(command, seq=self.seq, ts=self.ts)  # type: ignore[arg-type]

    @property
    def ts(self) -> int:
        return 1000 * self.seq

    def place(
        self,
        order_id: int,
        side: Side,
        quantity: int,
        price: int | None = None,
        *,
        user: str = "alice",
        symbol: str = BTC,
        **fields: Any,
    ) -> list[engine.Event]:
        if price is None and "order_type" not in fields:
            fields["order_type"] = OrderType.MARKET
        return self.apply(
            PlaceOrder(order_id=order_id, user_id=user, symbol=symbol, side=side,
                       quantity=quantity, price=price, **fields)
        )

    def buy(self, order_id: int, quantity: int, price: int | None = None, **kw: Any) -> list[Any]:
        return self.place(order_id, Side.BUY, quantity, price, **kw)

    def sell(self, order_id: int, quantity: int, price: int | None = None, **kw: Any) -> list[Any]:
        return self.place(order_id, Side.SELL, quantity, price, **kw)

    def cancel(self, order_id: int, *, user: str = "alice") -> list[engine.Event]:
        return self.apply(CancelOrder(order_id=order_id, user_id=user))

    def cancel_all(self, user: str = "alice", symbol: str | None = None) -> list[engine.Event]:
        return self.apply(CancelAllOrders(user_id=user, symbol=symbol))

    def amend(
        self, order_id: int, *, price: int | None = None, quantity: int | None = None,
        user: str = "alice",
    ) -> list[engine.Event]:
        return self.apply(AmendOrder(order_id=order_id, user_id=user, price=price,
                                     quantity=quantity))

    # --- looking at the result ----------------------------------------------

    def bids(self, symbol: str = BTC) -> list[tuple[int, int, int]]:
        """Resting bids as ``(order_id, price, remaining)``, in priority order."""
        return [(o.order_id, o.price, o.remaining) for o in self.engine.queue(symbol).bids]

    def asks(self, symbol: str = BTC) -> list[tuple[int, int, int]]:
        """Resting asks as ``(order_id, price, remaining)``, in priority order."""
        return [(o.order_id, o.price, o.remaining) for o in self.engine.queue(symbol).asks]

    def snapshot(self) -> engine.EngineState:
        """The exported state with ``last_seq`` blanked out.

        ``state_hash()`` hashes ``export_state()``, and ``export_state()``
        includes ``last_seq``, which every applied command advances, rejected
        or not (the sequence is the journal's, not the book's). Comparing the
        exported state with only that one counter neutralised is therefore
        exactly "nothing else changed".
        """
        return msgspec.structs.replace(self.engine.export_state(), last_seq=0)


def only(events: list[Any], kind: type[E]) -> list[E]:
    """The events of one type, in order."""
    return [e for e in events if type(e) is kind]


def kinds(events: list[Any]) -> list[str]:
    return [type(e).__name__ for e in events]


# Short names for the enums that almost every test uses.
BUY, SELL = Side.BUY, Side.SELL
GTC, IOC, FOK = TimeInForce.GTC, TimeInForce.IOC, TimeInForce.FOK
LIMIT, MARKET = OrderType.LIMIT, OrderType.MARKET
STP = SelfTradePrevention
