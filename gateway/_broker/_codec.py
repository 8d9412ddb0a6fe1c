"""What goes through Redis, byte for byte, and the pure bookkeeping around it.

Rules of this module (pure: no trio, no socket, no clock read; the trio
shells are ``_engine_role.py`` and ``_gateway_role.py``):

* Keys live under one prefix (default ``te:``): ``commands`` (a stream the
  gateways append to), ``events`` (the stream the engine publishes to),
  ``bootstrap`` (a string: where a replica starts), ``epoch`` (the epoch the
  events stream belongs to) and ``engine`` (a string with a time to live: the
  engine is alive while it exists).
* A command entry is ``{"c": <msgpack command>, "t": <tag>}``, appended with
  an id Redis chooses. The *tag* is the gateway's name for the request
  (``<gateway id>.<counter>``), chosen and registered before the append, so
  a reply can never arrive before its request is known.
* The engine journals each command with ``origin = "<entry id> <tag>"``: the
  entry id says where intake resumes after a restart (everything up to the
  last journaled id is in the journal; everything after it is still in the
  stream), the tag says which request waits for the reply. Both in one
  string because a journal record has one optional ``origin`` field.
* An events entry is ``{"r": <msgpack list of records>}`` with the id
  ``<last seq>-0``: one entry per durable batch, records with consecutive
  ``seq``. Ids derive from ``seq``, so publishing again what Redis already
  holds is refused by Redis (``equal or smaller``), never duplicated.
* A replica applies record ``seq`` only right after ``seq - 1``
  (:class:`Follower`): a record it holds is skipped, a gap is an error that
  makes it start again from the bootstrap.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Generic, TypeVar
from urllib.parse import unquote, urlsplit

import attrs
import msgspec

from engine import Command, Record

_encode = msgspec.msgpack.Encoder().encode
_decode_command = msgspec.msgpack.Decoder(Command).decode
_decode_records = msgspec.msgpack.Decoder(list[Record]).decode


class BrokerUrlError(ValueError):
    """The broker URL cannot be used; the message shows the accepted form."""


@attrs.frozen
class BrokerAddress:
    """Where Redis is: from ``redis://[[USER]:PASSWORD@]HOST[:PORT][/DB]``."""

    host: str
    port: int = 6379
    db: int = 0
    username: str | None = None
    password: str | None = attrs.field(default=None, repr=False)

    def __str__(self) -> str:
        return f"redis://{self.host}:{self.port}/{self.db}"


def parse_broker_url(url: str) -> BrokerAddress:
    """Read a broker URL.

    Raises:
        BrokerUrlError: not ``redis://HOST:PORT/DB``; the message says so.
    """
    form = "redis://HOST:PORT/DB (e.g. redis://127.0.0.1:6379/0)"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise BrokerUrlError(f"broker URL {url!r}: {exc}; expected {form}") from None
    if parts.scheme != "redis":
        raise BrokerUrlError(f"broker URL {url!r}: the scheme must be redis://; expected {form}")
    if not parts.hostname:
        raise BrokerUrlError(f"broker URL {url!r} names no host; expected {form}")
    path = parts.path.strip("/")
    if path and not (path.isascii() and path.isdigit()):
        raise BrokerUrlError(f"broker URL {url!r}: the database must be a number; "
                             f"expected {form}")
    if parts.query or parts.fragment:
        raise BrokerUrlError(f"broker URL {url!r}: no query or fragment; expected {form}")
    return BrokerAddress(
        host=parts.hostname, port=port if port is not None else 6379,
        db=int(path) if path else 0,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password is not None else None)


@attrs.frozen
class Keys:
    """The Redis keys of one deployment (engine and gateways must share the prefix)."""

    prefix: str = "te:"

    @property
    def commands(self) -> str:
        return self.prefix + "commands"

    @property
    def events(self) -> str:
        return self.prefix + "events"

    @property
    def bootstrap(self) -> str:
        return self.prefix + "bootstrap"

    @property
    def engine(self) -> str:
        return self.prefix + "engine"

    @property
    def epoch(self) -> str:
        return self.prefix + "epoch"


# ------------------------------------------------------------------ entries


def text(value: bytes | str) -> str:
    """A Redis reply item as text (coredis gives bytes without ``decode_responses``)."""
    return value.decode() if isinstance(value, bytes) else value


def entry_seq(entry_id: bytes | str) -> int:
    """The ``seq`` an events entry id names (``"42-0"`` -> 42)."""
    return int(text(entry_id).split("-", 1)[0])


def entry_id_key(entry_id: bytes | str) -> tuple[int, int]:
    """An entry id as a pair of integers, for comparing (never compare id strings)."""
    ms, _, sub = text(entry_id).partition("-")
    return int(ms), int(sub or 0)


def encode_command(command: Command, tag: str) -> dict[str, bytes]:
    """The fields of a command entry.

    Raises:
        msgspec.EncodeError, OverflowError, TypeError: the command holds values
            no record can carry (the journal would refuse it too).
    """
    return {"c": _encode(command), "t": tag.encode()}


def decode_command(fields: Mapping[Any, Any]) -> tuple[Command, str]:
    """The command and tag of a command entry (fields as coredis gives them: bytes).

    Raises:
        ValueError: not a command entry this version wrote.
    """
    try:
        return _decode_command(fields[b"c"]), text(fields[b"t"])
    except (KeyError, TypeError, msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"not a command entry: {exc}") from None


def make_origin(entry_id: bytes | str, tag: str) -> str:
    return f"{text(entry_id)} {tag}"


def origin_entry_id(origin: str) -> str:
    """The command entry id of an origin (where intake resumes after it)."""
    return origin.split(" ", 1)[0]


def origin_tag(origin: str | None) -> str | None:
    """The requester's tag of an origin, None for a command submitted in-process."""
    if origin is None:
        return None
    _, _, tag = origin.partition(" ")
    return tag or None


def encode_records(records: Iterable[Record]) -> bytes:
    return _encode(list(records))


def decode_records(data: bytes | str) -> list[Record]:
    """The records of an events entry.

    Raises:
        ValueError: not an events entry this version wrote.
    """
    if isinstance(data, str):
        raise ValueError("not an events entry: text where msgpack bytes were expected")
    try:
        return _decode_records(data)
    except msgspec.DecodeError as exc:
        raise ValueError(f"not an events entry: {exc}") from None


def chunks(records: list[Record], size: int) -> Iterator[list[Record]]:
    """``records`` cut into entries of at most ``size`` (republishing from the journal)."""
    for start in range(0, len(records), size):
        yield records[start:start + size]


class Bootstrap(msgspec.Struct, frozen=True, kw_only=True):
    """Where a replica starts: engine and stream state at one ``seq``, and the epoch.

    ``engine`` is an engine snapshot (``engine.encode_exported``: checksummed,
    its hash checked on decode); ``streams`` is the stream numbering's export
    at the same seq, or None for a fresh one (seq 0).
    """

    seq: int
    epoch: str
    engine: bytes
    streams: bytes | None = None


_decode_bootstrap = msgspec.msgpack.Decoder(Bootstrap).decode


def encode_bootstrap(bootstrap: Bootstrap) -> bytes:
    return _encode(bootstrap)


def decode_bootstrap(data: bytes) -> Bootstrap:
    """Raises: ValueError: not a bootstrap this version wrote."""
    try:
        return _decode_bootstrap(data)
    except msgspec.DecodeError as exc:
        raise ValueError(f"not a bootstrap snapshot: {exc}") from None


# ------------------------------------------------------------ bookkeeping


class Gap(Exception):
    """A record is missing between what a replica applied and what it was given."""

    def __init__(self, expected: int, found: int) -> None:
        super().__init__(f"the events stream skips from seq {expected - 1} to {found}")
        self.expected = expected
        self.found = found


class BootstrapMismatch(ValueError):
    """The engine's bootstrap cannot be used with this gateway's configuration."""


class ReplicaLost(Exception):
    """A gateway's replica cannot follow the events stream any more; restart the gateway."""


class Follower:
    """Which published records a replica applies next, in ``seq`` order, once each."""

    __slots__ = ("position",)

    def __init__(self, position: int) -> None:
        self.position = position
        """The last ``seq`` applied."""

    def accept(self, records: list[Record]) -> list[Record]:
        """The records to apply now; the position moves past them.

        Raises:
            Gap: a record after the position is missing (nothing accepted).
        """
        expected = self.position + 1
        start = 0
        for start, record in enumerate(records):  # noqa: B007 - the index is the result
            if record.seq >= expected:
                break
        else:
            return []
        fresh = records[start:]
        for offset, record in enumerate(fresh):
            if record.seq != expected + offset:
                raise Gap(expected + offset, record.seq)
        self.position = fresh[-1].seq
        return fresh


T = TypeVar("T")


class Waiting(Generic[T]):
    """Requests a gateway sent to the engine, by tag, until their reply or deadline.

    Deadlines are handed in by the caller (no clock here). Bounded by ``limit``:
    :meth:`add` refuses past it and the caller answers ``busy``.
    """

    def __init__(self, *, prefix: str, limit: int) -> None:
        self._prefix = prefix
        self._limit = limit
        self._next = itertools.count(1)
        self._by_tag: dict[str, tuple[float, T]] = {}

    def __len__(self) -> int:
        return len(self._by_tag)

    def new_tag(self) -> str:
        return f"{self._prefix}.{next(self._next)}"

    def add(self, tag: str, done: T, deadline: float) -> bool:
        """Register a request; False when ``limit`` requests already wait."""
        if len(self._by_tag) >= self._limit:
            return False
        self._by_tag[tag] = (deadline, done)
        return True

    def take(self, tag: str | None) -> T | None:
        """The waiting ``done`` of ``tag`` (removed), None when not ours or expired."""
        if tag is None:
            return None
        found = self._by_tag.pop(tag, None)
        return None if found is None else found[1]

    def expired(self, now: float) -> list[T]:
        """Remove and return every ``done`` whose deadline passed (insertion order)."""
        # Deadlines grow with insertion (one timeout for all), so the expired are a prefix.
        gone: list[T] = []
        for tag, (deadline, done) in list(self._by_tag.items()):
            if deadline > now:
                break
            del self._by_tag[tag]
            gone.append(done)
        return gone

    def drain(self) -> list[T]:
        """Remove and return every waiting ``done`` (the engine is known to be gone)."""
        gone = [done for _, done in self._by_tag.values()]
        self._by_tag.clear()
        return gone


class Backoff:
    """Reconnect delays: ``first``, doubling, at most ``most`` seconds; reset on success."""

    __slots__ = ("_delay", "_first", "_most")

    def __init__(self, first: float = 0.05, most: float = 2.0) -> None:
        self._first = first
        self._most = most
        self._delay = first

    def next(self) -> float:
        delay = self._delay
        self._delay = min(self._delay * 2, self._most)
        return delay

    def reset(self) -> None:
        self._delay = self._first
