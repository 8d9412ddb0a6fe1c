"""What the application holds: a :class:`Subscription` to iterate, a :class:`Book` to read.

Rules of this module:

* A subscription's buffer holds at most ``buffer_size`` messages. When a
  message finds it full, the client pauses the subscription (unsubscribes)
  instead of growing or blocking the connection's reader, which also carries
  every other subscription and every order reply; once the application has
  read the buffer empty, the subscription resumes ``since`` the last message
  it was given, so nothing is lost while the server's history covers the
  pause. A :class:`Resynced` item may exceed the bound by one: it is never
  dropped.
* A :class:`Book` is read at any time; it is updated by the connection's
  reader before the message is queued, so it may be ahead of what the
  iterator has yielded. Waiting for changes keeps no backlog: a waiter wakes
  once for any number of changes (latest-value semantics, bounded by
  construction), and learns of the latest resync.
* When the client gives up (or a subscription is refused after a
  reconnect), iterating raises the error; after the application closed the
  client or the subscription, iteration simply ends.
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from decimal import Decimal

import attrs
import trio

from gateway.client._book import OrderBook
from gateway.client._errors import ClientError
from gateway.client._messages import Delivered, Level, Resynced


class _Queue:
    """A bounded FIFO with one kind of wake-up: items, an error, or the end."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._items: deque[Delivered] = deque()
        self._lot = trio.lowlevel.ParkingLot()
        self._end: ClientError | None = None
        self._ended = False

    def __len__(self) -> int:
        return len(self._items)

    def has_room(self) -> bool:
        return len(self._items) < self.capacity

    def put(self, item: Delivered) -> None:
        self._items.append(item)
        self._lot.unpark_all()

    def end(self, error: ClientError | None = None) -> None:
        if not self._ended:
            self._ended, self._end = True, error
            self._lot.unpark_all()

    async def get(self) -> Delivered:
        while not self._items:
            if self._ended:
                if self._end is not None:
                    raise self._end
                raise StopAsyncIteration
            await self._lot.park()
        return self._items.popleft()


class Subscription:
    """One subscription: ``async for message in subscription`` yields typed messages.

    Items are the stream's messages (:class:`~gateway.client.TradeExecuted`,
    :class:`~gateway.client.OrderUpdate`, :class:`~gateway.client.DepthUpdate`...)
    and, where messages may have been missed, a :class:`~gateway.client.Resynced`.
    ``book`` is the local book of a ``depth`` subscription (None otherwise).
    """

    def __init__(self, stream: str, symbol: str | None, buffer_size: int | None, *,
                 paused: Callable[[], bool], resume: Callable[[], Awaitable[None]],
                 book: Book | None = None) -> None:
        self.stream = stream
        self.symbol = symbol
        self.book = book
        self._paused = paused
        self._resume = resume
        self._keep = buffer_size is not None  # None: only the book is kept, no messages
        self._queue = _Queue(buffer_size or 0)

    def __repr__(self) -> str:
        return f"<Subscription {self.stream} {self.symbol or ''}>".replace(" >", ">")

    def __aiter__(self) -> AsyncIterator[Delivered]:
        return self

    async def __anext__(self) -> Delivered:
        item = await self._queue.get()
        if not len(self._queue) and self._paused():
            await self._resume()  # read empty: resubscribe since the last item
        return item

    @property
    def buffered(self) -> int:
        """Messages received and not yet read."""
        return len(self._queue)

    # ------------------------------------------------- the client's side

    def _has_room(self) -> bool:
        return not self._keep or self._queue.has_room()

    def _deliver(self, item: Delivered) -> None:
        if self._keep:
            self._queue.put(item)
        if self.book is not None:
            self.book._changed(item if isinstance(item, Resynced) else None)

    def _end(self, error: ClientError | None = None) -> None:
        self._queue.end(error)
        if self.book is not None:
            self.book._end(error)


class _Changes:
    def __init__(self, book: Book) -> None:
        self._book = book
        self._version = book._version

    def __aiter__(self) -> _Changes:
        return self

    async def __anext__(self) -> BookChanged:
        book = self._book
        while book._version == self._version or not book._book.synced:
            if book._ended:
                if book._error is not None:
                    raise book._error
                raise StopAsyncIteration
            await book._event.wait()
        resync = book._resync
        fresh = resync[1] if resync is not None and resync[0] > self._version else None
        self._version = book._version
        return BookChanged(book._book.seq, fresh)


@attrs.frozen
class BookChanged:
    """A wake-up from :meth:`Book.changes`: the book's seq now, and the latest resync
    since the previous wake-up, if any (the book then restarted from a snapshot)."""

    seq: int | None
    resynced: Resynced | None = None


class Book:
    """The local order book of one market, kept exact by the client.

    Read it at any time: ``best_bid`` and ``best_ask`` are ``(price,
    quantity)`` or None, ``spread`` a :class:`~decimal.Decimal` or None, ``bids``
    and ``asks`` every level best first. ``synced`` is False while the book
    waits for a fresh snapshot (after a checksum mismatch or a reconnect that
    could not resume); ``seq`` is the depth stream's seq the book is at, the
    same as ``GET /api/v1/markets/{symbol}/orderbook`` reports.
    """

    def __init__(self, book: OrderBook) -> None:
        self._book = book
        self._version = 0
        self._resync: tuple[int, Resynced] | None = None
        self._event = trio.Event()
        self._ended = False
        self._error: ClientError | None = None

    symbol = property(lambda self: self._book.symbol)

    @property
    def seq(self) -> int | None:
        return self._book.seq

    @property
    def synced(self) -> bool:
        return self._book.synced

    @property
    def bids(self) -> list[Level]:
        return self._book.bids

    @property
    def asks(self) -> list[Level]:
        return self._book.asks

    @property
    def best_bid(self) -> Level | None:
        return self._book.best_bid

    @property
    def best_ask(self) -> Level | None:
        return self._book.best_ask

    @property
    def spread(self) -> Decimal | None:
        return self._book.spread

    def __repr__(self) -> str:
        return (f"<Book {self.symbol} seq={self.seq} bid={self.best_bid} ask={self.best_ask} "
                f"synced={self.synced}>")

    async def wait_changed(self, seq: int | None = None) -> None:
        """Return once the book differs from ``seq`` (default: its seq now) and is synced.

        Raises:
            ClientError: the subscription ended with an error (the client gave up).
        """
        seen = self.seq if seq is None else seq
        while self._book.seq == seen or not self._book.synced:
            self._raise_if_ended()
            await self._event.wait()
        self._raise_if_ended()

    def changes(self) -> AsyncIterator[BookChanged]:
        """``async for change in book.changes():`` wakes once per change (or per burst
        of changes) while the book is synced; each carries the latest resync since the
        previous wake-up, if any.

        Ends when the subscription ends; raises the error that ended it, if any.
        (An iterator object, not an async generator: nothing to close when
        the loop is left early.)
        """
        return _Changes(self)

    def _raise_if_ended(self) -> None:
        if self._ended:
            raise self._error or ClientError(f"the {self.symbol} book is closed")

    def _changed(self, resynced: Resynced | None = None) -> None:
        self._version += 1
        if resynced is not None:
            self._resync = (self._version, resynced)
        self._event.set()
        self._event = trio.Event()

    def _end(self, error: ClientError | None) -> None:
        self._ended, self._error = True, error
        self._changed()
