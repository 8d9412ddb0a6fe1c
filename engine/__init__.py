"""A deterministic, sans-I/O matching engine.

The package is pure: it never imports trio, never reads a clock, never does
I/O. The caller stamps every command with a sequence number and a timestamp
and hands it to :meth:`Engine.apply`, which returns the events it caused.
Everything public is re-exported here; the modules behind it are private.

* ``_commands``: what goes in (``PlaceOrder``, ``CancelOrder``, ...).
* ``_events``: what comes out (``OrderAccepted``, ``TradeExecuted``, ...).
* ``_markets``: market rules and exact decimal <-> integer conversion.
* ``_book``: the price-level / FIFO queue data structure, and a market's state.
* ``_orders``: the order index (by id, by user, by client order id).
* ``_validate``: which commands are refused, and why.
* ``_matching``: price-time matching, fees, and the book report of a command.
* ``_engine``: :class:`Engine`, which sequences each command, and its queries.
* ``_state``: state export, restore and hash, and the views queries answer with.
* ``_views``: immutable query results and exported state.
* ``_journal``: the journal's byte formats (records and snapshots), pure
  functions over bytes; the files themselves are the gateway's.
"""

from engine._commands import AmendOrder as AmendOrder
from engine._commands import CancelAllOrders as CancelAllOrders
from engine._commands import CancelOrder as CancelOrder
from engine._commands import Command as Command
from engine._commands import OrderType as OrderType
from engine._commands import PlaceOrder as PlaceOrder
from engine._commands import SelfTradePrevention as SelfTradePrevention
from engine._commands import Side as Side
from engine._commands import TimeInForce as TimeInForce
from engine._engine import Engine as Engine
from engine._engine import SequenceError as SequenceError
from engine._events import BookLevelChanged as BookLevelChanged
from engine._events import CancelReason as CancelReason
from engine._events import Event as Event
from engine._events import Liquidity as Liquidity
from engine._events import OrderAccepted as OrderAccepted
from engine._events import OrderAmended as OrderAmended
from engine._events import OrderCancelled as OrderCancelled
from engine._events import OrderFilled as OrderFilled
from engine._events import OrderRejected as OrderRejected
from engine._events import OrderStatus as OrderStatus
from engine._events import RejectReason as RejectReason
from engine._events import TopOfBookChanged as TopOfBookChanged
from engine._events import TradeExecuted as TradeExecuted
from engine._journal import SEGMENT_MAGIC as SEGMENT_MAGIC
from engine._journal import CorruptJournal as CorruptJournal
from engine._journal import Record as Record
from engine._journal import TornTail as TornTail
from engine._journal import decode_snapshot as decode_snapshot
from engine._journal import encode_exported as encode_exported
from engine._journal import encode_record as encode_record
from engine._journal import encode_snapshot as encode_snapshot
from engine._journal import read_records as read_records
from engine._markets import DEFAULT_MARKETS as DEFAULT_MARKETS
from engine._markets import MAX_UNITS as MAX_UNITS
from engine._markets import MarketSpec as MarketSpec
from engine._markets import UnitError as UnitError
from engine._views import BookQueue as BookQueue
from engine._views import Depth as Depth
from engine._views import DepthLevel as DepthLevel
from engine._views import EngineState as EngineState
from engine._views import MarketState as MarketState
from engine._views import Order as Order
from engine._views import TopOfBook as TopOfBook

__all__ = [
    "DEFAULT_MARKETS",
    "MAX_UNITS",
    "SEGMENT_MAGIC",
    "AmendOrder",
    "BookLevelChanged",
    "BookQueue",
    "CancelAllOrders",
    "CancelOrder",
    "CancelReason",
    "Command",
    "CorruptJournal",
    "Depth",
    "DepthLevel",
    "Engine",
    "EngineState",
    "Event",
    "Liquidity",
    "MarketSpec",
    "MarketState",
    "Order",
    "OrderAccepted",
    "OrderAmended",
    "OrderCancelled",
    "OrderFilled",
    "OrderRejected",
    "OrderStatus",
    "OrderType",
    "PlaceOrder",
    "Record",
    "RejectReason",
    "SelfTradePrevention",
    "SequenceError",
    "Side",
    "TimeInForce",
    "TopOfBook",
    "TopOfBookChanged",
    "TornTail",
    "TradeExecuted",
    "UnitError",
    "decode_snapshot",
    "encode_exported",
    "encode_record",
    "encode_snapshot",
    "read_records",
]
