"""The journal's byte formats (``engine/_journal.py``): pure functions over bytes.

What is checked, with the reading rules of that module's docstring:

* records round-trip, fed whole and cut at every byte: any prefix of a valid
  segment reads as the records it holds in full plus, unless the cut falls on
  a record boundary, one :class:`TornTail` at the start of the cut record;
* the torn tails a crash can leave (a header or a payload cut short by the end
  of the file, or cut short and zero-filled to the end of the file, zeros after
  the last record) are reported with their offset, never raised;
* damage anywhere else raises :class:`CorruptJournal` with the offset of the
  damaged record, after yielding the good records before it and nothing after:
  a damaged header (length included) anywhere, and a damaged payload unless it
  ends in zeros that run to the end of the file; every one-byte change of a
  segment is caught, and only in the last record can it read as a torn tail
  (when it leaves that record ending in zeros, the shape of a torn write);
* snapshots round-trip, and a bad magic, length, checksum, payload or state
  hash raises :class:`CorruptJournal`.
"""

from __future__ import annotations

import random
import struct
import zlib

import msgspec
import pytest

from engine import (
    AmendOrder,
    CancelAllOrders,
    CancelOrder,
    Command,
    Engine,
    PlaceOrder,
    Side,
    TimeInForce,
)
from engine._journal import (
    MAX_RECORD,
    SEGMENT_MAGIC,
    SNAPSHOT_MAGIC,
    CorruptJournal,
    Record,
    TornTail,
    decode_snapshot,
    encode_exported,
    encode_record,
    encode_snapshot,
    read_records,
)

HEADER = 12  # u32 length | u32 crc of payload | u32 crc of the 8 bytes before
SNAPSHOT_HEADER = struct.Struct("<8sIQ")
TS0 = 1_700_000_000_000_000_000


def flow(count: int, seed: int = 7) -> list[Command]:
    """A seeded mix of every command kind on BTC/USDT; orders get ``order_id = seq``."""
    rng = random.Random(seed)
    commands: list[Command] = []
    open_ids: list[tuple[int, str]] = []
    for seq in range(1, count + 1):
        user = f"u{rng.randrange(4)}"
        roll = rng.random()
        if roll < 0.65 or not open_ids:
            side = rng.choice((Side.BUY, Side.SELL))
            # prices in ticks of 0.01 around 50 000.00; quantities in lots of 0.00001
            offset = rng.randrange(-20, 21) * 100
            commands.append(PlaceOrder(
                order_id=seq, user_id=user, symbol="BTC/USDT", side=side,
                price=5_000_000 + offset, quantity=rng.randrange(100, 2_000),
                time_in_force=TimeInForce.GTC if rng.random() < 0.9 else TimeInForce.IOC,
                client_order_id=f"c{seq}" if rng.random() < 0.3 else None,
            ))
            open_ids.append((seq, user))
        elif roll < 0.85:
            order_id, owner = open_ids.pop(rng.randrange(len(open_ids)))
            commands.append(CancelOrder(order_id=order_id, user_id=owner))
        elif roll < 0.95:
            order_id, owner = rng.choice(open_ids)
            commands.append(AmendOrder(order_id=order_id, user_id=owner,
                                       quantity=rng.randrange(100, 2_000)))
        else:
            commands.append(CancelAllOrders(user_id=user, symbol=None))
    return commands


def segment(commands: list[Command], first_seq: int = 1) -> tuple[bytes, list[int]]:
    """A segment's bytes and the offset of every record in it."""
    data = bytearray(SEGMENT_MAGIC)
    offsets = []
    for seq, command in enumerate(commands, start=first_seq):
        offsets.append(len(data))
        data += encode_record(seq, TS0 + seq, command)
    return bytes(data), offsets


def read_all(data: bytes) -> tuple[list[Record], TornTail | None]:
    records: list[Record] = []
    torn = None
    for item in read_records(data):
        assert torn is None, "nothing may follow a torn tail"
        if isinstance(item, TornTail):
            torn = item
        else:
            records.append(item)
    return records, torn


def read_until_corrupt(data: bytes) -> tuple[list[Record], CorruptJournal]:
    """The records read before the ``CorruptJournal``, and that exception."""
    records: list[Record] = []
    items = read_records(data)
    while True:
        try:
            item = next(items)
        except CorruptJournal as exc:
            return records, exc
        except StopIteration:
            raise AssertionError("no CorruptJournal raised") from None
        assert isinstance(item, Record), item
        records.append(item)


def flip(data: bytes, index: int, mask: int = 0x40) -> bytes:
    return data[:index] + bytes([data[index] ^ mask]) + data[index + 1:]


def frame(payload: bytes, length: int | None = None) -> bytes:
    """A record with good checksums around ``payload`` (and ``length``, if given)."""
    checked = struct.pack("<II", len(payload) if length is None else length,
                          zlib.crc32(payload))
    return checked + struct.pack("<I", zlib.crc32(checked)) + payload


def zero_from(data: bytes, index: int) -> bytes:
    """``data`` with every byte from ``index`` on read as zero: a zero-filled torn write."""
    return data[:index] + b"\0" * (len(data) - index)


COMMANDS = flow(40)
DATA, OFFSETS = segment(COMMANDS)
EXPECTED = [Record(seq, TS0 + seq, c) for seq, c in enumerate(COMMANDS, start=1)]


# ---------------------------------------------------------------- round trip


def test_the_flow_has_every_command_kind():
    assert {type(c) for c in COMMANDS} == {PlaceOrder, CancelOrder, AmendOrder, CancelAllOrders}


def test_records_round_trip():
    records, torn = read_all(DATA)
    assert records == EXPECTED
    assert torn is None


def test_record_layout_is_length_crc_header_crc_payload():
    record = encode_record(3, 99, COMMANDS[0])
    length, crc, header_crc = struct.unpack_from("<III", record)
    payload = record[HEADER:]
    assert length == len(payload)
    assert crc == zlib.crc32(payload)
    assert header_crc == zlib.crc32(record[:8])
    assert record == frame(payload)
    assert msgspec.msgpack.decode(payload, type=Record) == Record(3, 99, COMMANDS[0])


def test_a_record_without_origin_keeps_the_three_element_layout():
    """Journals written before ``origin`` existed decode, and new ones without it are alike."""
    payload = encode_record(3, 99, COMMANDS[0])[HEADER:]
    assert len(msgspec.msgpack.decode(payload)) == 3
    assert payload == msgspec.msgpack.encode([3, 99, msgspec.to_builtins(COMMANDS[0])])
    assert msgspec.msgpack.decode(payload, type=Record).origin is None


def test_a_record_carries_its_origin():
    payload = encode_record(3, 99, COMMANDS[0], "1700000000000-0 g1.7")[HEADER:]
    assert len(msgspec.msgpack.decode(payload)) == 4
    decoded = msgspec.msgpack.decode(payload, type=Record)
    assert decoded == Record(3, 99, COMMANDS[0], "1700000000000-0 g1.7")
    [record] = [r for r in read_records(SEGMENT_MAGIC + encode_record(
        3, 99, COMMANDS[0], "x")) if isinstance(r, Record)]
    assert record.origin == "x"


def test_the_segment_magic_names_the_format_with_a_header_checksum():
    assert SEGMENT_MAGIC == b"TEJRNL02"
    assert DATA.startswith(SEGMENT_MAGIC)


def test_a_zero_header_never_passes_its_checksum():
    """So zeros are never read as a record: the zero-filled torn write is recognised."""
    assert zlib.crc32(b"\0" * 8) != 0


def test_an_empty_segment_holds_no_records():
    assert read_all(SEGMENT_MAGIC) == ([], None)


def test_every_prefix_reads_as_its_whole_records_plus_a_torn_tail():
    """Cut anywhere, as a crash in the middle of a write would: never an exception."""
    boundaries = [*OFFSETS, len(DATA)]
    for cut in range(len(SEGMENT_MAGIC), len(DATA) + 1):
        records, torn = read_all(DATA[:cut])
        whole = sum(1 for end in boundaries[1:] if end <= cut)
        assert records == EXPECTED[:whole], cut
        if cut in boundaries:
            assert torn is None, cut
        else:
            assert torn is not None, cut
            assert torn.offset == boundaries[whole], cut
            expected = ("partial record header" if cut - torn.offset < HEADER
                        else "record runs past the end of the file")
            assert torn.reason == expected, cut


def test_reading_can_start_at_a_record_boundary():
    assert list(read_records(DATA, OFFSETS[10])) == EXPECTED[10:]


# ---------------------------------------------------------------- torn tails


@pytest.mark.parametrize("zeros", [1, 7, 8, 9, 100, 4096])
def test_a_zero_filled_tail_is_torn(zeros):
    """File systems that extend the size before the data leave zeros after a crash."""
    records, torn = read_all(DATA + b"\0" * zeros)
    assert records == EXPECTED
    assert torn is not None
    assert torn.offset == len(DATA)


def test_a_last_record_overwritten_with_zeros_is_torn():
    data = DATA[:OFFSETS[-1]] + b"\0" * (len(DATA) - OFFSETS[-1])
    records, torn = read_all(data)
    assert records == EXPECTED[:-1]
    assert torn is not None
    assert torn.offset == OFFSETS[-1]


@pytest.mark.parametrize("victim", [39, 38, 35])
def test_a_batch_whose_end_reads_as_zeros_is_torn(victim):
    """The documented torn write on a file system that extends the size before the data.

    One ``write`` holds a whole batch (here the records from ``victim`` on). After a
    power cut the file has the batch's full size, but the blocks from somewhere
    inside the victim record's payload on read as zeros: a bad record "after which
    the data holds nothing but zero bytes" (``engine/_journal.py``), so a torn tail.
    """
    cut = OFFSETS[victim] + HEADER + 3
    data = DATA[:cut] + b"\0" * (len(DATA) - cut)
    records, torn = read_all(data)
    assert records == EXPECTED[:victim]
    assert torn is not None
    assert torn.offset == OFFSETS[victim]


@pytest.mark.parametrize("cut", range(1, HEADER))
def test_a_header_cut_short_at_the_end_of_the_file_is_torn(cut):
    records, torn = read_all(DATA[:OFFSETS[-1] + cut])
    assert records == EXPECTED[:-1]
    assert torn == TornTail(OFFSETS[-1], "partial record header")


@pytest.mark.parametrize("cut", [0, 1, 5, -1])
def test_a_payload_cut_short_at_the_end_of_the_file_is_torn(cut):
    """The header is whole and good, so its length is trusted: the write stopped inside."""
    end = OFFSETS[-1] + HEADER + cut if cut >= 0 else len(DATA) + cut
    records, torn = read_all(DATA[:end])
    assert records == EXPECTED[:-1]
    assert torn == TornTail(OFFSETS[-1], "record runs past the end of the file")


@pytest.mark.parametrize("cut", range(HEADER))
@pytest.mark.parametrize("zeros", [0, 100, 4096])
def test_a_header_cut_short_then_zero_filled_is_torn(cut, zeros):
    """A header write cut short; the file's new size reached the disk, its data did not."""
    torn_write = encode_record(41, TS0 + 41, COMMANDS[0])
    data = DATA + zero_from(torn_write, cut) + b"\0" * zeros
    records, torn = read_all(data)
    assert records == EXPECTED
    assert torn == TornTail(len(DATA), "record header cut short, zeros to the end of the file")


@pytest.mark.parametrize("cut", [0, 1, 3, 20, -2, -1])
@pytest.mark.parametrize("zeros", [0, 1, 4096])
def test_a_payload_cut_short_then_zero_filled_is_torn(cut, zeros):
    body = OFFSETS[-1] + HEADER
    index = body + cut if cut >= 0 else len(DATA) + cut
    data = zero_from(DATA, index) + b"\0" * zeros
    records, torn = read_all(data)
    assert records == EXPECTED[:-1]
    assert torn == TornTail(OFFSETS[-1], "record cut short, zeros to the end of the file")


@pytest.mark.parametrize("cut", [1, 7, HEADER, HEADER + 4])
def test_zeros_after_a_record_cut_short_by_the_end_of_the_file_are_torn(cut):
    """A batch of two records torn inside the first; the second's blocks read as zeros."""
    first = encode_record(41, TS0 + 41, COMMANDS[1])
    second = encode_record(42, TS0 + 42, COMMANDS[2])
    data = DATA + zero_from(first + second, cut)
    records, torn = read_all(data)
    assert records == EXPECTED
    assert torn is not None
    assert torn.offset == len(DATA)


# ---------------------------------------------------------------- corruption


@pytest.mark.parametrize("victim", [0, 1, 17, 38])
def test_a_bad_checksum_before_the_last_record_is_corruption(victim):
    data = flip(DATA, OFFSETS[victim] + HEADER + 2)
    records, error = read_until_corrupt(data)
    assert records == EXPECTED[:victim]
    assert error.offset == OFFSETS[victim]
    assert str(error) == f"record checksum mismatch at offset {OFFSETS[victim]}"


def test_a_bad_crc_field_in_the_middle_is_corruption():
    data = flip(DATA, OFFSETS[20] + 5)
    records, error = read_until_corrupt(data)
    assert records == EXPECTED[:20]
    assert error.offset == OFFSETS[20]
    assert str(error) == f"record header checksum mismatch at offset {OFFSETS[20]}"


@pytest.mark.parametrize("victim", [0, 20, 38, 39])
@pytest.mark.parametrize("index", range(HEADER))
def test_any_damaged_header_byte_is_corruption(victim, index):
    """Even in the last record: its payload follows, so the header was written whole."""
    data = flip(DATA, OFFSETS[victim] + index, 0x01)
    records, error = read_until_corrupt(data)
    assert records == EXPECTED[:victim]
    assert str(error) == f"record header checksum mismatch at offset {OFFSETS[victim]}"


@pytest.mark.parametrize("where", ["payload-start", "payload-middle", "payload-end"])
def test_a_damaged_payload_in_the_last_record_is_corruption(where):
    """Damage that does not leave the record ending in zeros is not a torn write."""
    body = OFFSETS[-1] + HEADER
    index = {"payload-start": body, "payload-middle": (body + len(DATA)) // 2,
             "payload-end": len(DATA) - 1}[where]
    records, error = read_until_corrupt(flip(DATA, index))
    assert records == EXPECTED[:-1]
    assert str(error) == f"record checksum mismatch at offset {OFFSETS[-1]}"


@pytest.mark.parametrize("zeros", [0, 1, 4096])
def test_a_damaged_whole_header_followed_by_zeros_is_corruption(zeros):
    """A header whose last byte was written cannot have been cut short inside it."""
    last = DATA[OFFSETS[-1]:]
    assert last[HEADER - 1] != 0
    data = DATA[:OFFSETS[-1]] + flip(last[:HEADER], 0, 0x01) + b"\0" * (
        len(last) - HEADER + zeros)
    records, error = read_until_corrupt(data)
    assert records == EXPECTED[:-1]
    assert str(error) == f"record header checksum mismatch at offset {OFFSETS[-1]}"


def test_a_damaged_payload_followed_by_a_nonzero_byte_is_corruption():
    """Zeros inside the last record, then something else: not the shape of a torn write."""
    data = zero_from(DATA, OFFSETS[-1] + HEADER + 3) + b"\1"
    records, error = read_until_corrupt(data)
    assert records == EXPECTED[:-1]
    assert error.offset == OFFSETS[-1]


def test_a_zeroed_page_in_the_middle_is_corruption():
    """Zeros are only a torn tail when nothing but zeros follows them."""
    start = OFFSETS[10]
    data = DATA[:start] + b"\0" * (OFFSETS[12] - start) + DATA[OFFSETS[12]:]
    records, error = read_until_corrupt(data)
    assert records == EXPECTED[:10]
    assert error.offset == start


@pytest.mark.parametrize("length", [0, MAX_RECORD + 1, 2**32 - 1])
@pytest.mark.parametrize("last", [False, True])
def test_an_impossible_length_is_corruption(length, last):
    """Whether the header checksum catches it, or (a writer bug) vouches for it."""
    where = OFFSETS[-1] if last else OFFSETS[5]
    payload = DATA[where + HEADER:OFFSETS[6] if not last else len(DATA)]
    data = bytearray(DATA)
    struct.pack_into("<I", data, where, length)
    records, error = read_until_corrupt(bytes(data))
    assert records == EXPECTED[:OFFSETS.index(where)]
    assert str(error) == f"record header checksum mismatch at offset {where}"

    vouched = DATA[:where] + frame(payload, length) + DATA[where + HEADER + len(payload):]
    records, error = read_until_corrupt(vouched)
    assert records == EXPECTED[:OFFSETS.index(where)]
    assert str(error) == f"impossible record length at offset {where}"


@pytest.mark.parametrize("last", [False, True])
def test_an_undecodable_record_with_a_good_checksum_is_corruption(last):
    """A valid checksum means the bytes are what was written: never a torn write."""
    payload = b"\xc1garbage"  # 0xc1 is never valid MessagePack
    bad = frame(payload)
    data = DATA + bad if last else DATA[:OFFSETS[7]] + bad + DATA[OFFSETS[7]:]
    where = len(DATA) if last else OFFSETS[7]
    records, error = read_until_corrupt(data)
    assert records == (EXPECTED if last else EXPECTED[:7])
    assert error.offset == where
    assert "undecodable record" in str(error)


@pytest.mark.parametrize("bit", [13, 16, 20, 23])  # lengths from 8 KiB to < MAX_RECORD
@pytest.mark.parametrize("victim", [5, 38])
def test_a_damaged_length_in_the_middle_is_corruption(victim, bit):
    """One bit flip that makes a record run past the end of the file: not a torn tail.

    Before the header had its own checksum, this read as a torn tail, and recovery
    truncated it and every acknowledged record after it.
    """
    data = bytearray(DATA)
    length = struct.unpack_from("<I", data, OFFSETS[victim])[0]
    damaged = length ^ 1 << bit
    assert OFFSETS[victim] + HEADER + damaged > len(DATA)  # it would run past the end
    struct.pack_into("<I", data, OFFSETS[victim], damaged)
    records, error = read_until_corrupt(bytes(data))
    assert records == EXPECTED[:victim]
    assert error.offset == OFFSETS[victim]
    assert str(error) == f"record header checksum mismatch at offset {OFFSETS[victim]}"


def test_segment_damage_shape():
    """The data the exhaustive damage test below relies on: no record ends in a zero byte."""
    assert all(DATA[end - 1] != 0 for end in [*OFFSETS[1:], len(DATA)])


@pytest.mark.parametrize("mask", [0x01, 0x40, 0x80, 0xFF])
def test_any_one_byte_damage_never_passes_silently(mask):
    """Change any one byte after the magic: always a CorruptJournal at the damaged record.

    The one exception is the shape of a torn write: a change that leaves the last
    record ending in a zero byte, with nothing after it, is its torn tail. Every
    record before the last is always corruption, never a torn tail, and no damaged
    record is ever returned.
    """
    for index in range(len(SEGMENT_MAGIC), len(DATA)):
        data = flip(DATA, index, mask)
        victim = max(i for i, offset in enumerate(OFFSETS) if offset <= index)
        records: list[Record] = []
        torn: TornTail | None = None
        failure: CorruptJournal | None = None
        try:
            for item in read_records(data):
                if isinstance(item, TornTail):
                    torn = item
                else:
                    records.append(item)
        except CorruptJournal as exc:
            failure = exc
        assert records == EXPECTED[:victim], index
        if victim == len(OFFSETS) - 1 and index >= OFFSETS[victim] + HEADER and data[-1] == 0:
            assert torn == TornTail(OFFSETS[victim],
                                    "record cut short, zeros to the end of the file"), index
        else:
            assert torn is None, index
            assert failure is not None, index
            assert failure.offset == OFFSETS[victim], index


# ---------------------------------------------------------------- snapshots


def busy_engine() -> Engine:
    engine = Engine()
    for seq, command in enumerate(flow(300, seed=11), start=1):
        engine.apply(command, seq=seq, ts=TS0 + seq)
    return engine


def test_snapshot_round_trip():
    engine = busy_engine()
    data = encode_snapshot(engine)
    magic, crc, length = SNAPSHOT_HEADER.unpack_from(data)
    assert magic == SNAPSHOT_MAGIC
    assert length == len(data) - SNAPSHOT_HEADER.size
    assert crc == zlib.crc32(data[SNAPSHOT_HEADER.size:])
    restored = decode_snapshot(data)
    assert restored.state_hash() == engine.state_hash()
    assert restored.last_seq == engine.last_seq == 300
    assert restored.export_state() == engine.export_state()
    assert restored.depth("BTC/USDT") == engine.depth("BTC/USDT")


def test_a_restored_engine_reacts_like_the_original():
    engine = busy_engine()
    restored = decode_snapshot(encode_snapshot(engine))
    for seq, given in enumerate(flow(200, seed=12), start=301):
        command = given
        if isinstance(given, PlaceOrder):
            command = msgspec.structs.replace(given, order_id=seq)
        assert restored.apply(command, seq=seq, ts=seq) == engine.apply(command, seq=seq, ts=seq)
    assert restored.state_hash() == engine.state_hash()


def test_an_empty_engine_snapshot_round_trips():
    engine = Engine()
    assert decode_snapshot(encode_snapshot(engine)).state_hash() == engine.state_hash()


def reframe(payload: bytes) -> bytes:
    return SNAPSHOT_HEADER.pack(SNAPSHOT_MAGIC, zlib.crc32(payload), len(payload)) + payload


GOOD_SNAPSHOT = encode_snapshot(busy_engine())


@pytest.mark.parametrize(("damage", "message"), [
    (lambda d: b"", "snapshot too short at offset 0"),
    (lambda d: d[:19], "snapshot too short at offset 0"),
    (lambda d: b"TEJRNL01" + d[8:], "not a snapshot (bad magic) at offset 0"),
    (lambda d: flip(d, 8), "snapshot checksum mismatch at offset 20"),
    (lambda d: flip(d, len(d) // 2), "snapshot checksum mismatch at offset 20"),
    (lambda d: d[:-1], "snapshot checksum mismatch at offset 20"),
    (lambda d: d + b"\0", "snapshot checksum mismatch at offset 20"),
    (lambda d: reframe(b"\xc1"), "undecodable snapshot at offset 20"),
])
def test_a_damaged_snapshot_is_refused(damage, message):
    with pytest.raises(CorruptJournal) as caught:
        decode_snapshot(damage(GOOD_SNAPSHOT))
    assert str(caught.value) == message


def test_a_snapshot_whose_state_does_not_match_its_hash_is_refused():
    payload = msgspec.msgpack.decode(GOOD_SNAPSHOT[SNAPSHOT_HEADER.size:])
    payload["state"]["next_trade_id"] += 1  # a consistent, checksummed, but wrong state
    with pytest.raises(CorruptJournal) as caught:
        decode_snapshot(reframe(msgspec.msgpack.encode(payload)))
    assert str(caught.value) == "restored state does not match the snapshot's hash at offset 0"


def test_a_snapshot_with_a_wrong_hash_is_refused():
    payload = msgspec.msgpack.decode(GOOD_SNAPSHOT[SNAPSHOT_HEADER.size:])
    payload["state_hash"] = "0" * 64
    with pytest.raises(CorruptJournal, match="does not match the snapshot's hash"):
        decode_snapshot(reframe(msgspec.msgpack.encode(payload)))


def test_a_snapshot_of_an_exported_state_carries_the_engines_hash():
    """The runtime exports in the engine task and encodes elsewhere: same bytes, same hash."""
    engine = busy_engine()
    exported = encode_exported(engine.export_state())
    assert exported == encode_snapshot(engine)
    assert decode_snapshot(exported).state_hash() == engine.state_hash()
