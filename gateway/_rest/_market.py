"""The public market-data endpoints of ``/api/v1``: markets, order books, recent trades.

Rules of this module: no token and no command; reads only (the engine's
queries never mutate, the order book is the depth stream's, so its ``seq``
matches the WebSocket's). A symbol in a path is 404 ``unknown_symbol`` when
no market has it; the message lists the markets.
"""

from __future__ import annotations

from engine import Engine
from gateway import _messages as messages
from gateway._codes import Code
from gateway._rest._api import Answer, Call
from gateway._schema import RequestError, market
from gateway._streams import StreamState


class MarketData:
    """The market-data handlers of one gateway."""

    def __init__(
        self, engine: Engine, streams: StreamState, *, public_trade_user_ids: bool
    ) -> None:
        self._engine = engine
        self._streams = streams
        self._markets = engine.markets
        self._with_user_ids = public_trade_user_ids
        # f"{d:f}": never an exponent, as str() would give for 0.00000001 ("1E-8").
        self._listing = {"markets": [
            {"symbol": s.symbol, "base": s.base, "quote": s.quote,
             "tick_size": f"{s.tick_size:f}", "lot_size": f"{s.lot_size:f}",
             "min_quantity": f"{s.min_quantity:f}", "min_notional": f"{s.min_notional:f}",
             "maker_fee_rate": f"{s.maker_fee_rate:f}",
             "taker_fee_rate": f"{s.taker_fee_rate:f}", "fee_precision": s.fee_precision}
            for s in engine.markets.values()
        ]}

    async def markets(self, call: Call) -> Answer:
        return 200, self._listing

    async def orderbook(self, call: Call) -> Answer:
        spec = market(self._markets, call.param, None)
        return 200, self._streams.depth_view(spec.symbol, _query_int(call, "depth", 20, 1000))

    async def trades(self, call: Call) -> Answer:
        spec = market(self._markets, call.param, None)
        limit = _query_int(call, "limit", 100, 1000)
        return 200, {"trades": [
            messages.trade_executed(t, spec, with_user_ids=self._with_user_ids)
            for t in self._engine.recent_trades(spec.symbol, limit)
        ]}


def _query_int(call: Call, name: str, default: int, maximum: int) -> int:
    raw = call.query(name)
    if raw is None:
        return default
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 6) or not 0 < int(raw) <= maximum:
        raise RequestError(400, Code(f"invalid_{name}"),
                           f"{name} must be an integer in 1..{maximum}, got {raw!r}", name)
    return int(raw)
