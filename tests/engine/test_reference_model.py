"""The engine against a deliberately simple reference book, on random command sequences.

The reference below keeps every resting order in one plain list and finds
the best order by sorting that list on every step: no levels, no indexes, no
laziness. It states the rules once more in the most obvious way:

* price-time priority: best price first, then earliest arrival; a trade
  prints at the resting (maker) order's price;
* GTC remainders rest, IOC and market remainders are cancelled (unfilled),
  FOK fills completely or is rejected before anything happens;
* post-only never takes liquidity; self-trade prevention is the taker's;
* an amend that reduces the quantity at the same price keeps the arrival
  time, any other amend takes a new one and matches as a taker;
* fee = ceil(price * quantity * rate) in units of 10**-fee_precision.

After every command the machine checks that the engine agrees with the
reference (rejections, trades, cancellations, resting orders in priority
order, every order's fills) and that the engine's own invariants hold: the
book is never crossed, quantities are conserved, fees are exact, and the
book events describe exactly how depth and the top of book moved.
"""

from __future__ import annotations

import copy
import itertools
import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import attrs
from engine_harness import BTC, BTC_SPEC, ETH, ETH_SPEC, FOK, GTC, IOC, MARKET, STP, Exchange
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, precondition, rule

from engine import (
    AmendOrder,
    BookLevelChanged,
    CancelAllOrders,
    CancelOrder,
    CancelReason,
    Engine,
    Liquidity,
    MarketSpec,
    OrderAccepted,
    OrderAmended,
    OrderCancelled,
    OrderFilled,
    OrderRejected,
    OrderStatus,
    PlaceOrder,
    RejectReason,
    Side,
    TimeInForce,
    TopOfBookChanged,
    TradeExecuted,
)

BUY, SELL = Side.BUY, Side.SELL
USERS = ["ann", "ben", "cat"]
MODEL_ETH = attrs.evolve(ETH_SPEC, min_quantity="0.02", min_notional="0")  # at least 2 lots
SPECS = {BTC: BTC_SPEC, ETH: MODEL_ETH}
MID_PRICE = {BTC: 100, ETH: 1_000}
SYMBOLS = list(SPECS)


# --- the reference -------------------------------------------------------------------


@dataclass
class RefOrder:
    order_id: int
    user: str
    symbol: str
    side: Side
    price: int | None
    quantity: int
    tif: TimeInForce
    post_only: bool
    stp: STP
    arrival: int
    filled: int = 0
    remaining: int = 0
    cancelled: int = 0
    status: OrderStatus = OrderStatus.NEW


def fee(spec: MarketSpec, price: int, quantity: int, rate: object) -> int:
    amount = (Fraction(price) * Fraction(spec.tick_size) * quantity * Fraction(spec.lot_size)
              * Fraction(str(rate)) * 10 ** spec.fee_precision)
    return math.ceil(amount)


class Reference:
    """All orders in a dict, the resting ones in a plain list."""

    def __init__(self) -> None:
        self.orders: dict[int, RefOrder] = {}
        self.resting: list[RefOrder] = []
        self.clock = 0  # arrival counter: smaller is earlier

    # --- the book, computed from scratch every time ---

    def priority(self, symbol: str, side: Side) -> list[RefOrder]:
        mine = [o for o in self.resting if o.symbol == symbol and o.side == side]
        if side is BUY:
            return sorted(mine, key=lambda o: (-o.price, o.arrival))
        return sorted(mine, key=lambda o: (o.price, o.arrival))

    @staticmethod
    def crosses(taker_side: Side, limit: int | None, maker_price: int) -> bool:
        if limit is None:
            return True
        return maker_price <= limit if taker_side is BUY else maker_price >= limit

    def would_cross(self, symbol: str, side: Side, price: int) -> bool:
        opposite = self.priority(symbol, SELL if side is BUY else BUY)
        return bool(opposite) and self.crosses(side, price, opposite[0].price)

    # --- changes ---

    def tick(self) -> int:
        self.clock += 1
        return self.clock

    def cancel_order(self, order: RefOrder, reason: CancelReason, out: list[tuple]) -> None:
        out.append(("cancel", order.order_id, order.remaining, reason))
        order.cancelled += order.remaining
        order.remaining = 0
        order.status = OrderStatus.CANCELLED
        if order in self.resting:
            self.resting.remove(order)

    def match(self, taker: RefOrder, out: list[tuple]) -> bool:
        """Cross ``taker`` against the book; True if self-trade prevention stopped it."""
        spec = SPECS[taker.symbol]
        opposite = SELL if taker.side is BUY else BUY
        while taker.remaining:
            candidates = [o for o in self.priority(taker.symbol, opposite)
                          if self.crosses(taker.side, taker.price, o.price)]
            if not candidates:
                return False
            maker = candidates[0]
            if maker.user == taker.user and taker.stp is not STP.NONE:
                if taker.stp in (STP.CANCEL_MAKER, STP.CANCEL_BOTH):
                    self.cancel_order(maker, CancelReason.SELF_TRADE, out)
                if taker.stp in (STP.CANCEL_TAKER, STP.CANCEL_BOTH):
                    return True
                continue
            quantity = min(taker.remaining, maker.remaining)
            out.append((
                "trade", maker.price, quantity, maker.order_id, taker.order_id, maker.user,
                taker.user, taker.side,
                fee(spec, maker.price, quantity, spec.maker_fee_rate),
                fee(spec, maker.price, quantity, spec.taker_fee_rate),
            ))
            for order in (maker, taker):
                order.filled += quantity
                order.remaining -= quantity
                order.status = OrderStatus.PARTIALLY_FILLED if order.remaining else (
                    OrderStatus.FILLED)
            if not maker.remaining:
                self.resting.remove(maker)
        return False

    def finish(self, order: RefOrder, stopped: bool, out: list[tuple]) -> None:
        """Rest a GTC remainder, cancel any other."""
        if order.remaining and not stopped and order.tif is GTC:
            self.resting.append(order)
        elif order.remaining:
            reason = CancelReason.SELF_TRADE if stopped else CancelReason.UNFILLED
            self.cancel_order(order, reason, out)

    # --- commands: each returns (reject reason or None, lifecycle effects in order) ---

    def place(self, c: PlaceOrder) -> tuple[RejectReason | None, list[tuple]]:
        spec = SPECS[c.symbol]
        tif = c.time_in_force or (IOC if c.order_type is MARKET else GTC)
        if c.order_id in self.orders:
            return RejectReason.DUPLICATE_ORDER_ID, []
        if c.quantity < spec.min_lots:
            return RejectReason.BELOW_MIN_QUANTITY, []
        if c.post_only and (c.order_type is MARKET or tif is not GTC):
            return RejectReason.INVALID_POST_ONLY, []
        if c.post_only and self.would_cross(c.symbol, c.side, c.price):
            return RejectReason.POST_ONLY_WOULD_CROSS, []
        order = RefOrder(c.order_id, c.user_id, c.symbol, c.side, c.price, c.quantity, tif,
                         c.post_only, c.self_trade_prevention, 0, remaining=c.quantity)
        if tif is FOK:
            trial, trial_order = copy.deepcopy((self, order))
            trial.match(trial_order, [])
            if trial_order.remaining:
                return RejectReason.FOK_NOT_FILLABLE, []
        order.arrival = self.tick()
        self.orders[order.order_id] = order
        out: list[tuple] = []
        stopped = self.match(order, out)
        self.finish(order, stopped, out)
        return None, out

    def find_open(self, order_id: int, user: str) -> RefOrder | RejectReason:
        order = self.orders.get(order_id)
        if order is None:
            return RejectReason.UNKNOWN_ORDER
        if order.user != user:
            return RejectReason.NOT_OWNER
        if order not in self.resting:
            return RejectReason.ORDER_NOT_OPEN
        return order

    def cancel(self, c: CancelOrder) -> tuple[RejectReason | None, list[tuple]]:
        found = self.find_open(c.order_id, c.user_id)
        if isinstance(found, RejectReason):
            return found, []
        out: list[tuple] = []
        self.cancel_order(found, CancelReason.USER, out)
        return None, out

    def cancel_all(self, c: CancelAllOrders) -> tuple[RejectReason | None, list[tuple]]:
        out: list[tuple] = []
        for order in list(self.resting):
            if order.user == c.user_id and c.symbol in (None, order.symbol):
                self.cancel_order(order, CancelReason.USER, out)
        return None, out

    def amend(self, c: AmendOrder) -> tuple[RejectReason | None, list[tuple]]:
        found = self.find_open(c.order_id, c.user_id)
        if isinstance(found, RejectReason):
            return found, []
        order = found
        if c.price is None and c.quantity is None:
            return RejectReason.NOTHING_TO_AMEND, []
        price = order.price if c.price is None else c.price
        quantity = order.quantity if c.quantity is None else c.quantity
        if quantity <= order.filled:
            return RejectReason.INVALID_QUANTITY, []
        if quantity < SPECS[order.symbol].min_lots:
            return RejectReason.BELOW_MIN_QUANTITY, []
        if (order.post_only and price != order.price
                and self.would_cross(order.symbol, order.side, price)):
            return RejectReason.POST_ONLY_WOULD_CROSS, []
        keeps_priority = price == order.price and quantity <= order.quantity
        order.quantity, order.price = quantity, price
        order.remaining = quantity - order.filled
        out: list[tuple] = []
        if not keeps_priority:
            self.resting.remove(order)
            order.arrival = self.tick()
            stopped = self.match(order, out)
            self.finish(order, stopped, out)
        return None, out


# --- reading the engine's events -----------------------------------------------------


def lifecycle(events: list[Any]) -> list[tuple]:
    """Trades and cancellations in the engine's order, shaped like the reference's."""
    out: list[tuple] = []
    for e in events:
        if type(e) is TradeExecuted:
            out.append(("trade", e.price, e.quantity, e.maker_order_id, e.taker_order_id,
                        e.maker_user_id, e.taker_user_id, e.taker_side, e.maker_fee, e.taker_fee))
        elif type(e) is OrderCancelled:
            out.append(("cancel", e.order_id, e.cancelled, e.reason))
    return out


def check_event_structure(events: list[Any], seq: int) -> None:
    """Lifecycle first, each trade followed by its maker's then its taker's fill, book last."""
    assert all(e.seq == seq for e in events)
    lifecycle_types = (OrderAccepted, OrderAmended, TradeExecuted, OrderFilled, OrderCancelled)
    book_start = next((i for i, e in enumerate(events) if type(e) not in lifecycle_types),
                      len(events))
    head, book = events[:book_start], events[book_start:]
    assert all(type(e) in (BookLevelChanged, TopOfBookChanged) for e in book)
    for i, e in enumerate(head):
        if type(e) in (OrderAccepted, OrderAmended):
            assert i == 0
        if type(e) is TradeExecuted:
            maker, taker = head[i + 1], head[i + 2]
            assert (type(maker), type(taker)) == (OrderFilled, OrderFilled)
            assert (maker.liquidity, taker.liquidity) == (Liquidity.MAKER, Liquidity.TAKER)
            assert (maker.order_id, taker.order_id) == (e.maker_order_id, e.taker_order_id)
            assert (maker.user_id, taker.user_id) == (e.maker_user_id, e.taker_user_id)
            assert maker.trade_id == taker.trade_id == e.trade_id
            assert maker.quantity == taker.quantity == e.quantity
            assert maker.price == taker.price == e.price
            assert (maker.fee, taker.fee) == (e.maker_fee, e.taker_fee)
            assert taker.side is e.taker_side is not maker.side
            assert maker.symbol == taker.symbol == e.symbol
            assert maker.order_price == e.price, "a maker trades at its own limit price"
        if type(e) is OrderFilled:
            assert type(head[i - 1]) is TradeExecuted or type(head[i - 2]) is TradeExecuted
    tops = [e.symbol for e in book if type(e) is TopOfBookChanged]
    assert len(tops) == len(set(tops)), "at most one TopOfBookChanged per market"
    for i, e in enumerate(book):
        if type(e) is TopOfBookChanged:
            assert all(later.symbol != e.symbol for later in book[i + 1:]), (
                "a market's top of book comes after its level changes")
    levels = [(e.symbol, e.side, e.price) for e in book if type(e) is BookLevelChanged]
    assert len(levels) == len(set(levels)), "one BookLevelChanged per price"


# --- the machine ---------------------------------------------------------------------

users = st.sampled_from(USERS)
symbols = st.sampled_from(SYMBOLS)
sides = st.sampled_from([BUY, SELL])
offsets = st.integers(min_value=-3, max_value=3)
quantities = st.integers(min_value=1, max_value=8)
stps = st.sampled_from(list(STP))
limit_orders = st.tuples(
    users, symbols, sides, offsets, quantities, st.sampled_from([None, GTC, GTC, IOC, FOK]),
    st.sampled_from([False, False, False, True]), stps,
)
# Which order a cancel or amend targets: mostly an open one, else any known one or an unknown id.
picks = st.tuples(st.sampled_from(["open", "open", "open", "known", "unknown"]),
                  st.integers(min_value=0, max_value=40))


class EngineAgreesWithReference(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.exchange = Exchange(Engine(SPECS.values()))
        self.reference = Reference()
        self.next_id = 1
        self.filled_by_events: dict[int, int] = {}
        self.cancelled_by_events: dict[int, int] = {}

    # --- commands ---

    @initialize(orders=st.lists(st.tuples(users, symbols, sides, st.integers(1, 3), quantities),
                                max_size=8))
    def seed_the_books(self, orders):
        """Resting liquidity on both sides, a few ticks from the middle."""
        for user, symbol, side, distance, quantity in orders:
            price = MID_PRICE[symbol] - distance if side is BUY else MID_PRICE[symbol] + distance
            self.place(PlaceOrder(order_id=self.new_id(), user_id=user, symbol=symbol, side=side,
                                  quantity=quantity, price=price))

    @rule(orders=st.lists(limit_orders, min_size=1, max_size=3))
    def place_limits(self, orders):
        for user, symbol, side, offset, quantity, tif, post_only, stp in orders:
            self.place(PlaceOrder(
                order_id=self.new_id(), user_id=user, symbol=symbol, side=side,
                quantity=quantity, price=MID_PRICE[symbol] + offset, time_in_force=tif,
                post_only=post_only, self_trade_prevention=stp,
            ))

    @rule(user=users, symbol=symbols, side=sides, quantity=st.integers(1, 20),
          tif=st.sampled_from([None, IOC, FOK]), stp=stps)
    def place_market(self, user, symbol, side, quantity, tif, stp):
        self.place(PlaceOrder(
            order_id=self.new_id(), user_id=user, symbol=symbol, side=side, quantity=quantity,
            order_type=MARKET, time_in_force=tif, self_trade_prevention=stp,
        ))

    @precondition(lambda self: self.reference.orders)
    @rule(user=users, symbol=symbols, side=sides, offset=offsets, quantity=quantities,
          pick=picks)
    def place_with_a_used_order_id(self, user, symbol, side, offset, quantity, pick):
        self.place(PlaceOrder(
            order_id=self.known_id(pick), user_id=user, symbol=symbol, side=side,
            quantity=quantity, price=MID_PRICE[symbol] + offset,
        ))

    @rule(pick=picks, by_owner=st.sampled_from([True, True, True, False]), other=users)
    def cancel(self, pick, by_owner, other):
        order_id = self.known_id(pick)
        command = CancelOrder(order_id=order_id, user_id=self.owner(order_id, by_owner, other))
        self.run(command, self.reference.cancel(command))

    @rule(user=users, symbol=st.sampled_from([None, *SYMBOLS]))
    def cancel_all(self, user, symbol):
        command = CancelAllOrders(user_id=user, symbol=symbol)
        self.run(command, self.reference.cancel_all(command))

    @rule(pick=picks, by_owner=st.sampled_from([True, True, True, False]), other=users,
          offset=st.none() | offsets, quantity=st.none() | st.integers(0, 12))
    def amend(self, pick, by_owner, other, offset, quantity):
        order_id = self.known_id(pick)
        known = self.reference.orders.get(order_id)
        price = None if offset is None else MID_PRICE[known.symbol if known else BTC] + offset
        command = AmendOrder(order_id=order_id, user_id=self.owner(order_id, by_owner, other),
                             price=price, quantity=quantity)
        self.run(command, self.reference.amend(command))

    @rule()
    def snapshot_and_restore(self):
        before = self.exchange.engine.state_hash()
        self.exchange = Exchange(Engine.restore(self.exchange.engine.export_state()))
        assert self.exchange.engine.state_hash() == before
        self.check_books_and_orders()

    # --- helpers ---

    def new_id(self) -> int:
        self.next_id += 1
        return self.next_id - 1

    def known_id(self, pick: tuple[str, int]) -> int:
        where, index = pick
        ids = sorted(self.reference.orders, reverse=True)
        if where == "open" and self.reference.resting:
            ids = [o.order_id for o in self.reference.resting]
        if where == "unknown" or not ids:
            return 10_000 + index
        return ids[index % len(ids)]

    def owner(self, order_id: int, by_owner: bool, other: str) -> str:
        known = self.reference.orders.get(order_id)
        return known.user if known is not None and by_owner else other

    def place(self, command: PlaceOrder) -> None:
        self.run(command, self.reference.place(command))

    def run(self, command: Any, expected: tuple[RejectReason | None, list[tuple]]) -> None:
        reason, effects = expected
        engine = self.exchange.engine
        depth_before = {s: engine.depth(s) for s in SYMBOLS}
        top_before = {s: engine.top_of_book(s) for s in SYMBOLS}

        events = self.exchange.apply(command)

        if reason is not None:
            assert [(type(e), e.reason) for e in events] == [(OrderRejected, reason)]
            assert {s: engine.depth(s) for s in SYMBOLS} == depth_before
            return
        assert not any(type(e) is OrderRejected for e in events)
        check_event_structure(events, self.exchange.seq)
        if type(command) is PlaceOrder:
            accepted = events[0]
            assert type(accepted) is OrderAccepted
            assert (accepted.order_id, accepted.price, accepted.quantity, accepted.side) == (
                command.order_id, command.price, command.quantity, command.side)
        if type(command) is AmendOrder:
            assert type(events[0]) is OrderAmended
        if type(command) is CancelAllOrders:
            # Which of a user's orders is cancelled first is checked in test_cancel_amend.
            assert sorted(lifecycle(events)) == sorted(effects)
        else:
            assert lifecycle(events) == effects
        for e in events:
            if type(e) is OrderFilled and e.liquidity is Liquidity.TAKER:
                assert e.order_price == self.reference.orders[e.order_id].price
        self.account(events)
        self.check_book_events(events, depth_before, top_before)
        self.check_books_and_orders()

    def account(self, events: list[Any]) -> None:
        traded = sum(e.quantity for e in events if type(e) is TradeExecuted)
        for liquidity in Liquidity:
            assert traded == sum(e.quantity for e in events
                                 if type(e) is OrderFilled and e.liquidity is liquidity)
        for e in events:
            if type(e) is OrderFilled:
                self.filled_by_events[e.order_id] = (
                    self.filled_by_events.get(e.order_id, 0) + e.quantity)
                assert e.filled == self.filled_by_events[e.order_id]
            elif type(e) is OrderCancelled:
                self.cancelled_by_events[e.order_id] = (
                    self.cancelled_by_events.get(e.order_id, 0) + e.cancelled)
                assert e.cancelled > 0
                assert e.filled + e.cancelled <= e.quantity

    def check_book_events(self, events, depth_before, top_before) -> None:
        engine = self.exchange.engine
        reported = {(e.symbol, e.side, e.price): e.quantity
                    for e in events if type(e) is BookLevelChanged}
        for symbol in SYMBOLS:
            before = {(side, lvl.price): lvl.quantity for side, levels in
                      ((BUY, depth_before[symbol].bids), (SELL, depth_before[symbol].asks))
                      for lvl in levels}
            after_depth = engine.depth(symbol)
            after = {(side, lvl.price): lvl.quantity for side, levels in
                     ((BUY, after_depth.bids), (SELL, after_depth.asks)) for lvl in levels}
            for key in before.keys() | after.keys():
                if before.get(key, 0) != after.get(key, 0):
                    assert (symbol, *key) in reported, f"unreported level change {key}"
            for (s, side, price), quantity in reported.items():
                if s == symbol:
                    assert after.get((side, price), 0) == quantity
            top = engine.top_of_book(symbol)
            tops = [e for e in events if type(e) is TopOfBookChanged and e.symbol == symbol]
            if top == top_before[symbol]:
                assert tops == []
            else:
                [event] = tops
                assert (event.bid_price, event.bid_quantity, event.ask_price,
                        event.ask_quantity) == (top.bid_price, top.bid_quantity,
                                                top.ask_price, top.ask_quantity)

    def check_books_and_orders(self) -> None:
        engine, reference = self.exchange.engine, self.reference
        for symbol in SYMBOLS:
            queue = engine.queue(symbol)
            for side, resting in ((BUY, queue.bids), (SELL, queue.asks)):
                expected = reference.priority(symbol, side)
                assert [(o.order_id, o.price, o.remaining) for o in resting] == [
                    (o.order_id, o.price, o.remaining) for o in expected]
                for earlier, later in itertools.pairwise(expected):
                    if earlier.price == later.price:
                        assert earlier.arrival < later.arrival, "FIFO within a level"
            top = engine.top_of_book(symbol)
            if top.bid_price is not None and top.ask_price is not None:
                assert top.bid_price < top.ask_price, "the book is never crossed"
        for order_id, ref in reference.orders.items():
            view = engine.order(order_id)
            assert view is not None
            assert (view.filled, view.remaining, view.quantity, view.status, view.price) == (
                ref.filled, ref.remaining, ref.quantity, ref.status, ref.price)
            assert ref.filled + ref.remaining + ref.cancelled == ref.quantity
            assert view.filled == self.filled_by_events.get(order_id, 0)
            if view.status in (OrderStatus.FILLED, OrderStatus.CANCELLED):
                assert view.remaining == 0
                assert view.filled + self.cancelled_by_events.get(order_id, 0) == view.quantity
            else:
                assert view.filled + view.remaining == view.quantity
        for user in USERS:
            assert {o.order_id for o in engine.open_orders(user)} == {
                o.order_id for o in reference.resting if o.user == user}


EngineAgreesWithReference.TestCase.settings = settings(
    max_examples=150, stateful_step_count=40, deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_engine_agrees_with_the_reference_book = EngineAgreesWithReference.TestCase
