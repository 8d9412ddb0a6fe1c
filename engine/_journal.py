"""The journal's byte formats: framed, checksummed command records and snapshots.

Pure functions over bytes; the files, the fsyncs and the writer task live in
``gateway/_journal.py``. ``docs/durability.md`` explains the design.

Record layout (little-endian), one per stamped command::

    u32 length of payload | u32 CRC32 of payload | u32 CRC32 of the 8 bytes before | payload

The first 12 bytes are the *header*; its own checksum (the third field, over
the length and the payload CRC) means a damaged length is recognised as
damage, never mistaken for a record that runs past the end of the file. The
payload is MessagePack of ``[seq, ts, command]`` or ``[seq, ts, command, origin]``
(``origin``: where a command came from when a broker delivered it, see
``gateway/_broker``; a record without one is written without the fourth
element, byte for byte as before it existed), never empty and never more
than :data:`MAX_RECORD` bytes. A segment file starts with the 8-byte magic
``TEJRNL02`` and holds records with consecutive ``seq``. (``TEJRNL01``, the
format without a header checksum, was never shipped and is not read.)

What a torn write leaves: records are only ever appended, one ``write`` per
batch, so a crash in the middle of a write can damage only the end of the
file, and only in two ways (Linux ext4 and xfs in their default modes):

* a *prefix* of the write is present and the file ends there (the process
  died, or the disk filled up, part way through the write; or a power cut
  after the file system had committed only part of the new size);
* a prefix is present and the file goes on, to the new size, with zero bytes
  (a power cut after the file system had committed the new size but not all
  of the data blocks: unwritten extents and holes read as zeros).

So a torn record is one whose bytes end, at the end of the file, or in zeros
that run to the end of the file. Every record holds a nonzero byte (its
length is at least 1), so zeros never hide a whole record.

Reading rules (:func:`read_records`), at the offset ``o`` of each record in
turn, with ``end`` the length of the data:

1. Fewer than 12 bytes left: a *torn tail* (the header was cut short).
2. The header checksum fails: a torn tail when the header's last byte and
   every byte after it to ``end`` are zero (a header write cut short, the
   rest zero-filled); otherwise *corruption*. A damaged header followed by
   anything nonzero is always corruption: its length cannot be trusted, so
   there is no telling what comes after it.
3. The header is good but the length is 0 or above :data:`MAX_RECORD`:
   corruption (the checksum says it was written so).
4. The header is good and the payload runs past ``end``: a torn tail (the
   length is trusted, so the write of this record was cut short, and nothing
   can follow it).
5. The payload checksum fails: a torn tail when the payload's last byte and
   every byte after it to ``end`` are zero (a payload write cut short, the
   rest zero-filled); otherwise corruption.
6. The payload does not decode: corruption (its checksum says it is what
   was written).

A torn tail is yielded as :class:`TornTail` with the offset of the torn
record, so the caller can truncate there; it is always the last item.
Corruption raises :class:`CorruptJournal` with the offset of the damaged
record, after the good records before it; nothing after it is read, and no
record is ever skipped. Both checksums catch every burst of up to 32 bits,
so a damaged byte is always corruption unless it leaves the last record
ending in zeros to the end of the file, which is what a torn write looks like.

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
from engine._state import state_hash
from engine._views import EngineState

SEGMENT_MAGIC: Final = b"TEJRNL02"
SNAPSHOT_MAGIC: Final = b"TESNAP01"
_CHECKED: Final = struct.Struct("<II")  # length, payload CRC: what the header CRC covers
_HEADER: Final = struct.Struct("<III")  # ... and the header CRC
HEADER_SIZE: Final = _HEADER.size  # 12
_SNAPSHOT_HEADER: Final = struct.Struct("<8sIQ")
MAX_RECORD: Final = 1 << 24  # no command encodes to 16 MiB; a larger length is garbage


class CorruptJournal(Exception):
    """A record or snapshot that is damaged where a crash cannot have damaged it."""

    def __init__(self, message: str, offset: int) -> None:
        super().__init__(f"{message} at offset {offset}")
        self.offset = offset


class Record(msgspec.Struct, frozen=True, array_like=True):
    """One stamped command, exactly as it was applied.

    ``origin`` is an opaque string the broker gave the command (None for one
    submitted in the process). A record without one is encoded as the
    three-element array it always was (:func:`encode_record`), and a
    three-element array decodes with ``origin=None``: old journals stay readable.
    """

    seq: int
    ts: int
    command: Command
    origin: str | None = None


class _Snapshot(msgspec.Struct, frozen=True):
    state_hash: str
    state: EngineState


_encode_record = msgspec.msgpack.Encoder().encode
_decode_record = msgspec.msgpack.Decoder(Record).decode
_encode_snapshot = msgspec.msgpack.Encoder().encode
_decode_snapshot = msgspec.msgpack.Decoder(_Snapshot).decode


def encode_record(seq: int, ts: int, command: Command, origin: str | None = None) -> bytes:
    payload = _encode_record(
        (seq, ts, command) if origin is None else (seq, ts, command, origin))
    checked = _CHECKED.pack(len(payload), zlib.crc32(payload))
    return checked + zlib.crc32(checked).to_bytes(4, "little") + payload


class TornTail(msgspec.Struct, frozen=True):
    """Where the valid data ends; everything from ``offset`` on is a torn write."""

    offset: int
    reason: str


def read_records(data: bytes, start: int = len(SEGMENT_MAGIC)) -> Iterator[Record | TornTail]:
    """Decode the records of a segment's bytes (after the magic), in order.

    Yields each :class:`Record`, and at most one final :class:`TornTail`. The
    rules are those of the module docstring, numbered the same way here.

    Raises:
        CorruptJournal: a damaged record that is not the torn tail.
    """
    offset, end = start, len(data)
    while offset < end:
        if end - offset < HEADER_SIZE:  # 1
            yield TornTail(offset, "partial record header")
            return
        length, crc, header_crc = _HEADER.unpack_from(data, offset)
        body = offset + HEADER_SIZE
        if zlib.crc32(data[offset:offset + _CHECKED.size]) != header_crc:  # 2
            if _zeros_from(data, body - 1):
                yield TornTail(offset, "record header cut short, zeros to the end of the file")
                return
            raise CorruptJournal("record header checksum mismatch", offset)
        if length == 0 or length > MAX_RECORD:  # 3
            raise CorruptJournal("impossible record length", offset)
        if body + length > end:  # 4
            yield TornTail(offset, "record runs past the end of the file")
            return
        payload = data[body:body + length]
        if zlib.crc32(payload) != crc:  # 5
            if _zeros_from(data, body + length - 1):
                yield TornTail(offset, "record cut short, zeros to the end of the file")
                return
            raise CorruptJournal("record checksum mismatch", offset)
        try:  # 6
            record = _decode_record(payload)
        except msgspec.DecodeError:
            raise CorruptJournal("undecodable record", offset) from None
        yield record
        offset = body + length


def _zeros_from(data: bytes, offset: int) -> bool:
    """Whether ``data`` holds nothing but zero bytes from ``offset`` to its end."""
    return not data[offset:].strip(b"\0")


def encode_snapshot(engine: Engine) -> bytes:
    """The engine's whole state, with its hash, framed and checksummed."""
    return encode_exported(engine.export_state())


def encode_exported(state: EngineState) -> bytes:
    """:func:`encode_snapshot` of a state that :meth:`Engine.export_state` returned.

    An exported state is immutable and shares nothing mutable with its engine,
    so the engine's owner exports it (a consistent copy at one seq) and another
    thread may hash and encode it, the dear part, while the engine goes on.
    """
    payload = _encode_snapshot(_Snapshot(state_hash(state), state))
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
