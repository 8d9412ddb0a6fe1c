"""The journal's byte formats: framed, checksummed command records and snapshots.

Pure functions over bytes; the files, the fsyncs and the writer task live in
``gateway/_journal.py``. ``docs/durability.md`` explains the design.

Record layout (little-endian), one per stamped command::

    u32 length of payload | u32 CRC32 of payload | payload (msgpack)

The payload is ``{"seq", "ts", "command"}``. A segment file starts with the
8-byte magic ``TEJRNL01`` and holds records with consecutive ``seq``.

Reading rules (:func:`read_records`):

* A record that runs past the end of the data, or a bad record after which
  the data holds nothing but zero bytes, is a *torn tail*: what a crash in
  the middle of a write leaves. It is reported with its offset so the
  caller can truncate it.
* Any other bad record is *corruption*: :class:`CorruptJournal` names the
  offset, and nothing after it is read. Records are never skipped silently.

Snapshot layout::

    8-byte magic TESNAP01 | u32 CRC32 of payload | u64 length | payload (msgpack)

The payload is ``{"state_hash", "state"}``; :func:`decode_snapshot` checks the
CRC and that the restored engine has that exact state hash.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator
from typing import Final

import msgspec

from engine._commands import Command
from engine._engine import Engine
from engine._views import EngineState

SEGMENT_MAGIC: Final = b"TEJRNL01"
SNAPSHOT_MAGIC: Final = b"TESNAP01"
_HEADER: Final = struct.Struct("<II")
_SNAPSHOT_HEADER: Final = struct.Struct("<8sIQ")
MAX_RECORD: Final = 1 << 24  # no command encodes to 16 MiB; a larger length is garbage


class CorruptJournal(Exception):
    """A record or snapshot that is damaged where a crash cannot have damaged it."""

    def __init__(self, message: str, offset: int) -> None:
        super().__init__(f"{message} at offset {offset}")
        self.offset = offset


class Record(msgspec.Struct, frozen=True, array_like=True):
    """One stamped command, exactly as it was applied."""

    seq: int
    ts: int
    command: Command


class _Snapshot(msgspec.Struct, frozen=True):
    state_hash: str
    state: EngineState


_encode_record = msgspec.msgpack.Encoder().encode
_decode_record = msgspec.msgpack.Decoder(Record).decode
_encode_snapshot = msgspec.msgpack.Encoder().encode
_decode_snapshot = msgspec.msgpack.Decoder(_Snapshot).decode


def encode_record(seq: int, ts: int, command: Command) -> bytes:
    payload = _encode_record(Record(seq, ts, command))
    return _HEADER.pack(len(payload), zlib.crc32(payload)) + payload


class TornTail(msgspec.Struct, frozen=True):
    """Where the valid data ends; everything from ``offset`` on is a torn write."""

    offset: int
    reason: str


def read_records(data: bytes, start: int = len(SEGMENT_MAGIC)) -> Iterator[Record | TornTail]:
    """Decode the records of a segment's bytes (after the magic), in order.

    Yields each :class:`Record`, and at most one final :class:`TornTail`.

    Raises:
        CorruptJournal: a damaged record that is not the torn tail.
    """
    offset, end = start, len(data)
    while offset < end:
        if end - offset < _HEADER.size:
            yield TornTail(offset, "partial record header")
            return
        length, crc = _HEADER.unpack_from(data, offset)
        body = offset + _HEADER.size
        if body + length > end or length > MAX_RECORD:
            if _only_zeros(data, offset) or (body + length > end and length <= MAX_RECORD):
                yield TornTail(offset, "record runs past the end of the file")
                return
            raise CorruptJournal("impossible record length", offset)
        payload = data[body:body + length]
        if length == 0 or zlib.crc32(payload) != crc:
            # Torn: nothing but zeros from the bad record (or from its end) on.
            if _only_zeros(data, offset) or _only_zeros(data, body + length):
                yield TornTail(offset, "checksum mismatch in the last record")
                return
            raise CorruptJournal("checksum mismatch", offset)
        try:
            record = _decode_record(payload)
        except msgspec.DecodeError:
            raise CorruptJournal("undecodable record", offset) from None
        yield record
        offset = body + length


def _only_zeros(data: bytes, offset: int) -> bool:
    return not data[offset:].strip(b"\0")


def encode_snapshot(engine: Engine) -> bytes:
    """The engine's whole state, with its hash, framed and checksummed."""
    state = engine.export_state()
    payload = _encode_snapshot(_Snapshot(engine.state_hash(), state))
    return _SNAPSHOT_HEADER.pack(SNAPSHOT_MAGIC, zlib.crc32(payload), len(payload)) + payload


def decode_snapshot(data: bytes) -> Engine:
    """Rebuild the engine a snapshot holds.

    Raises:
        CorruptJournal: bad magic, length or checksum, or a restored state whose
            hash differs from the one recorded.
    """
    if len(data) < _SNAPSHOT_HEADER.size:
        raise CorruptJournal("snapshot too short", 0)
    magic, crc, length = _SNAPSHOT_HEADER.unpack_from(data)
    if magic != SNAPSHOT_MAGIC:
        raise CorruptJournal("not a snapshot (bad magic)", 0)
    payload = data[_SNAPSHOT_HEADER.size:]
    if len(payload) != length or zlib.crc32(payload) != crc:
        raise CorruptJournal("snapshot checksum mismatch", _SNAPSHOT_HEADER.size)
    try:
        snapshot = _decode_snapshot(payload)
    except msgspec.DecodeError:
        raise CorruptJournal("undecodable snapshot", _SNAPSHOT_HEADER.size) from None
    engine = Engine.restore(snapshot.state)
    if engine.state_hash() != snapshot.state_hash:
        raise CorruptJournal("restored state does not match the snapshot's hash", 0)
    return engine
