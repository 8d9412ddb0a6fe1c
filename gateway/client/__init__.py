"""A trio client for the trade-engine server: streams, a local order book, order entry.

``async with connect("ws://127.0.0.1:8081", token) as client:`` opens one
WebSocket (``/ws``) and keeps it: heartbeats, reconnects with a jittered
backoff, and resumes every subscription from its last ``seq`` where the
server still holds the history (a :class:`Resynced` item says where it could
not). See docs/client.md.

How it is built (trio's layout: a private core, a thin shell, this surface):

* ``_session`` (pure): subscriptions, seq checks, resume, reply matching.
* ``_book`` (pure): the local depth book and its checksum.
* ``_policy`` (pure): backoff, heartbeat decisions, which closes are final.
* ``_messages``, ``_requests`` (pure): typed messages (msgspec), request bodies.
* ``_ws``: one WebSocket, wsproto over a trio stream it owns.
* ``_client``, ``_subscription``: the trio shell and what the application holds.
"""

from gateway.client._book import OrderBook as OrderBook
from gateway.client._book import checksum as checksum
from gateway.client._client import Client as Client
from gateway.client._client import connect as connect
from gateway.client._errors import ChecksumFailed as ChecksumFailed
from gateway.client._errors import ClientError as ClientError
from gateway.client._errors import ConnectFailed as ConnectFailed
from gateway.client._errors import ConnectionLost as ConnectionLost
from gateway.client._errors import HandshakeRejected as HandshakeRejected
from gateway.client._errors import NotConnected as NotConnected
from gateway.client._errors import OutcomeUnknown as OutcomeUnknown
from gateway.client._errors import RequestError as RequestError
from gateway.client._errors import SubscriptionError as SubscriptionError
from gateway.client._messages import AllCancelled as AllCancelled
from gateway.client._messages import Amended as Amended
from gateway.client._messages import Cancelled as Cancelled
from gateway.client._messages import DepthSnapshot as DepthSnapshot
from gateway.client._messages import DepthUpdate as DepthUpdate
from gateway.client._messages import Level as Level
from gateway.client._messages import Order as Order
from gateway.client._messages import OrderbookSnapshot as OrderbookSnapshot
from gateway.client._messages import OrderbookUpdate as OrderbookUpdate
from gateway.client._messages import OrderUpdate as OrderUpdate
from gateway.client._messages import Placed as Placed
from gateway.client._messages import Resynced as Resynced
from gateway.client._messages import TradeExecuted as TradeExecuted
from gateway.client._policy import Reconnect as Reconnect
from gateway.client._subscription import Book as Book
from gateway.client._subscription import BookChanged as BookChanged
from gateway.client._subscription import Subscription as Subscription

__all__ = [
    "AllCancelled",
    "Amended",
    "Book",
    "BookChanged",
    "Cancelled",
    "ChecksumFailed",
    "Client",
    "ClientError",
    "ConnectFailed",
    "ConnectionLost",
    "DepthSnapshot",
    "DepthUpdate",
    "HandshakeRejected",
    "Level",
    "NotConnected",
    "Order",
    "OrderBook",
    "OrderUpdate",
    "OrderbookSnapshot",
    "OrderbookUpdate",
    "OutcomeUnknown",
    "Placed",
    "Reconnect",
    "RequestError",
    "Resynced",
    "Subscription",
    "SubscriptionError",
    "TradeExecuted",
    "checksum",
    "connect",
]
