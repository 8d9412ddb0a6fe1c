"""Recovery (``gateway._journal.recover``) on real journal directories in ``tmp_path``.

Each test writes a journal with the real :class:`JournalWriter` (and snapshots
with the real :func:`write_snapshot`) while applying the same stamped commands to
a reference engine, then damages the files the way the recovery table of
``docs/durability.md`` lists, and checks the documented outcome: the state hash
of the reference, a truncated torn tail with a WARNING, or a ``JournalError``
naming the file and the offset with the files left untouched. The last tests run
``trade-engine journal verify`` and ``replay`` as real subprocesses.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import random
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest

from engine import (
    DEFAULT_MARKETS,
    CancelOrder,
    Command,
    Engine,
    MarketSpec,
    PlaceOrder,
    Side,
)
from engine._journal import (
    HEADER_SIZE,
    SEGMENT_MAGIC,
    encode_record,
    encode_snapshot,
    read_records,
)
from gateway import JournalError, UnsupportedJournalFormat
from gateway._journal import (
    Fsync,
    JournalChanged,
    JournalWriter,
    read_journal,
    recover,
    segment_path,
    segments,
    snapshot_path,
    snapshots,
    write_snapshot,
)

TS0 = 1_700_000_000_000_000_000


def commands(count: int, seed: int) -> list[Command]:
    """Seeded orders (``order_id=0``: the seq names them) and cancels, on both markets."""
    rng = random.Random(seed)
    out: list[Command] = []
    for _ in range(count):
        user = f"u{rng.randrange(5)}"
        if rng.random() < 0.2:
            out.append(CancelOrder(order_id=rng.randrange(1, len(out) + 2), user_id=user))
            continue
        btc = rng.random() < 0.7
        out.append(PlaceOrder(
            order_id=0, user_id=user, symbol="BTC/USDT" if btc else "ETH/USDT",
            side=rng.choice((Side.BUY, Side.SELL)),
            price=(5_000_000 if btc else 300_000) + rng.randrange(-10, 11) * 100,
            quantity=rng.randrange(100, 1_000) if btc else rng.randrange(20, 200),
        ))
    return out


class Journal:
    """Writes a journal directory the way the engine task does, and keeps a reference engine."""

    def __init__(self, directory: Path, *, segment_bytes: int = 1 << 26) -> None:
        self.directory = directory
        self.segment_bytes = segment_bytes
        self.engine = Engine(DEFAULT_MARKETS)
        self.writer: JournalWriter | None = None
        directory.mkdir(parents=True, exist_ok=True)

    def open(self, next_seq: int | None = None) -> JournalWriter:
        """A new segment, as a (re)start opens one."""
        self.close()
        self.writer = JournalWriter(
            self.directory, next_seq=next_seq or self.engine.last_seq + 1, fsync=Fsync.OFF,
            segment_bytes=self.segment_bytes)
        return self.writer

    def write(self, batch: list[Command], *, apply: bool = True, seq: int | None = None) -> None:
        """Journal ``batch`` as one group commit (stamped from ``seq``), then apply it."""
        writer = self.writer or self.open()
        first = self.engine.last_seq + 1 if seq is None else seq
        stamped = []
        for seq_, command in enumerate(batch, start=first):
            named = command
            if isinstance(command, PlaceOrder):
                named = msgspec.structs.replace(command, order_id=seq_)
            stamped.append((seq_, TS0 + seq_, named))
        writer.append_blocking(
            b"".join(encode_record(*s) for s in stamped), stamped[-1][0] + 1)
        if apply:
            for seq_, ts, command in stamped:
                self.engine.apply(command, seq=seq_, ts=ts)

    def write_many(self, items: list[Command], batch: int = 7) -> None:
        for start in range(0, len(items), batch):
            self.write(items[start:start + batch])

    def snapshot(self) -> None:
        write_snapshot(self.directory, encode_snapshot(self.engine), self.engine.last_seq)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def listing(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


def record_offsets(path: Path) -> list[int]:
    """Offsets of every record in a (well-formed) segment file, from the length fields."""
    data = path.read_bytes()
    offsets, offset = [], len(SEGMENT_MAGIC)
    while offset < len(data):
        offsets.append(offset)
        offset += HEADER_SIZE + int.from_bytes(data[offset:offset + 4], "little")
    return offsets


@pytest.fixture
def journal(tmp_path: Path) -> Iterator[Journal]:
    j = Journal(tmp_path / "journal")
    yield j
    j.close()


def recovered(directory: Path, **kwargs):
    return recover(directory, DEFAULT_MARKETS, **kwargs)


# ---------------------------------------------------------------- the good cases


def test_a_missing_directory_is_created_and_gives_a_fresh_engine(tmp_path):
    directory = tmp_path / "absent" / "journal"
    result = recovered(directory)
    assert directory.is_dir()
    assert list(directory.iterdir()) == []
    assert result.engine.last_seq == 0
    assert result.engine.state_hash() == Engine(DEFAULT_MARKETS).state_hash()
    assert (result.snapshot_seq, result.records, result.replayed, result.truncated) == (
        0, 0, 0, ())


def test_an_empty_directory_gives_a_fresh_engine(tmp_path):
    (tmp_path / "journal").mkdir()
    result = recovered(tmp_path / "journal")
    assert result.engine.last_seq == 0
    assert result.engine.state_hash() == Engine(DEFAULT_MARKETS).state_hash()


def test_a_segment_with_only_its_magic_gives_a_fresh_engine(journal):
    journal.open()
    journal.close()
    result = recovered(journal.directory)
    assert result.engine.state_hash() == Engine(DEFAULT_MARKETS).state_hash()
    assert segments(journal.directory) == [segment_path(journal.directory, 1)]


def test_journal_only_replays_everything(journal):
    journal.write_many(commands(300, seed=1))
    journal.close()
    result = recovered(journal.directory)
    assert result.engine.last_seq == 300
    assert result.engine.state_hash() == journal.engine.state_hash()
    assert (result.snapshot_seq, result.records, result.replayed) == (0, 300, 300)
    assert result.truncated == ()


def test_replay_hands_each_record_and_its_events_to_on_record(journal):
    journal.write_many(commands(50, seed=2))
    journal.close()
    seen = []
    reference = Engine(DEFAULT_MARKETS)

    def on_record(record, events):
        assert events == reference.apply(record.command, seq=record.seq, ts=record.ts)
        seen.append(record.seq)

    recovered(journal.directory, on_record=on_record)
    assert seen == list(range(1, 51))


def test_journal_across_restarts_replays_every_segment(journal):
    for seed in range(4):  # each restart opens a new segment at the next seq
        journal.open()
        journal.write_many(commands(40, seed=seed))
    journal.close()
    assert [p.name for p in segments(journal.directory)] == [
        segment_path(journal.directory, s).name for s in (1, 41, 81, 121)]
    result = recovered(journal.directory)
    assert result.engine.last_seq == 160
    assert result.engine.state_hash() == journal.engine.state_hash()


def test_snapshot_plus_tail(journal):
    journal.write_many(commands(120, seed=3))
    journal.snapshot()
    journal.write_many(commands(80, seed=4))
    journal.close()
    assert [p.name for p in snapshots(journal.directory)] == [
        snapshot_path(journal.directory, 120).name]
    result = recovered(journal.directory)
    assert result.snapshot_seq == 120
    assert result.replayed == 80
    assert result.records == 200  # the segment still holds the records the snapshot covers
    assert result.engine.last_seq == 200
    assert result.engine.state_hash() == journal.engine.state_hash()


def test_a_snapshot_newer_than_the_journal_is_restored_and_nothing_replayed(journal):
    """A snapshot at 150 over a journal that ends at 100 (a lost tail under fsync off)."""
    journal.write_many(commands(100, seed=5))
    for seq, command in enumerate(commands(50, seed=6), start=101):  # never journaled
        named = command
        if isinstance(command, PlaceOrder):
            named = msgspec.structs.replace(command, order_id=seq)
        journal.engine.apply(named, seq=seq, ts=TS0 + seq)
    journal.snapshot()
    journal.close()
    result = recovered(journal.directory)
    assert (result.snapshot_seq, result.replayed, result.records) == (150, 0, 100)
    assert result.engine.last_seq == 150
    assert result.engine.state_hash() == journal.engine.state_hash()

    # a restart writes on from 151; the old segment's records stay covered
    journal.open()
    journal.write_many(commands(30, seed=7))
    journal.close()
    again = recovered(journal.directory)
    assert (again.snapshot_seq, again.replayed) == (150, 30)
    assert again.engine.state_hash() == journal.engine.state_hash()


def test_only_the_newest_snapshot_is_used_and_kept(journal):
    journal.write_many(commands(60, seed=8))
    journal.snapshot()
    first = snapshot_path(journal.directory, 60)
    kept = first.read_bytes()
    journal.write_many(commands(60, seed=9))
    journal.snapshot()
    assert snapshots(journal.directory) == [snapshot_path(journal.directory, 120)]
    first.write_bytes(kept)  # an older snapshot left behind is ignored
    journal.close()
    result = recovered(journal.directory)
    assert result.snapshot_seq == 120
    assert result.engine.state_hash() == journal.engine.state_hash()


# ---------------------------------------------------------------- rotation and pruning


def test_segments_rotate_past_segment_bytes_and_snapshots_prune_them(tmp_path):
    journal = Journal(tmp_path / "journal", segment_bytes=1_500)
    try:
        journal.write_many(commands(200, seed=10), batch=5)
        files = segments(journal.directory)
        assert len(files) > 5
        firsts = [int(p.name[8:28]) for p in files]
        assert firsts[0] == 1
        for path, first in zip(files, firsts, strict=True):
            data = path.read_bytes()
            assert data.startswith(SEGMENT_MAGIC)
            records = list(read_records(data))
            if records:
                assert records[0].seq == first  # named after its first record
        for path in files[:-1]:
            size = path.stat().st_size
            assert size >= 1_500  # rotated only once full ...
            assert size < 1_500 + 5 * 400  # ... by at most one batch
        assert recovered(journal.directory).engine.state_hash() == journal.engine.state_hash()

        journal.snapshot()  # at 200: every full segment is covered
        journal.write_many(commands(23, seed=11), batch=5)
        journal.snapshot()  # at 223
        left = segments(journal.directory)
        assert snapshots(journal.directory) == [snapshot_path(journal.directory, 223)]
        assert int(left[0].name[8:28]) > 1
        # each remaining segment but the newest still holds a record after the snapshot
        for path, following in itertools.pairwise(left):
            assert int(following.name[8:28]) > 223 + 1, (path, following)
        journal.write_many(commands(17, seed=12), batch=5)
        journal.close()
        result = recovered(journal.directory)
        assert result.snapshot_seq == 223
        assert result.replayed == 17
        assert result.engine.state_hash() == journal.engine.state_hash()
    finally:
        journal.close()


def test_write_snapshot_leaves_no_temporary_file(journal):
    journal.write_many(commands(20, seed=13))
    journal.snapshot()
    journal.close()
    assert sorted(p.name for p in journal.directory.iterdir()) == [
        segment_path(journal.directory, 1).name, snapshot_path(journal.directory, 20).name]


# ---------------------------------------------------------------- torn tails


def torn_cases(whole: bytes) -> dict[str, bytes]:
    """Ways a crash can leave the last record (``whole``) of a segment."""
    def zero_from(cut: int) -> bytes:
        return whole[:cut] + b"\0" * (len(whole) - cut)

    return {
        "partial-header": whole[:5],
        "partial-payload": whole[:len(whole) - 4],
        "zero-filled": b"\0" * len(whole),
        "zeros-after-end": b"\0" * 512,
        "header-then-zeros": zero_from(7),
        "payload-then-zeros": zero_from(HEADER_SIZE + 9) + b"\0" * 4096,
    }


@pytest.mark.parametrize("case", list(torn_cases(b"x" * 40)))
def test_a_torn_tail_is_truncated_with_a_warning(journal, caplog, case):
    journal.write_many(commands(50, seed=14))
    path = segment_path(journal.directory, 1)
    good = path.stat().st_size
    tail = encode_record(51, TS0, PlaceOrder(
        order_id=51, user_id="u1", symbol="BTC/USDT", side=Side.BUY, price=4_900_000,
        quantity=500))
    with path.open("ab") as file:
        file.write(torn_cases(tail)[case])
    journal.close()
    with caplog.at_level(logging.WARNING, logger="trade_engine.journal"):
        result = recovered(journal.directory)
    assert result.engine.last_seq == 50
    assert result.engine.state_hash() == journal.engine.state_hash()
    assert len(result.truncated) == 1
    assert path.stat().st_size == good
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    message = warnings[0].getMessage()
    assert str(path) in message
    assert f"at offset {good}" in message
    assert f"{len(torn_cases(tail)[case])} bytes" in message

    caplog.clear()  # the repaired journal recovers cleanly, to the same state
    again = recovered(journal.directory)
    assert again.truncated == ()
    assert again.engine.state_hash() == journal.engine.state_hash()
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_a_batch_torn_into_zeros_is_truncated(journal, caplog):
    """The zero-filled torn write of ``docs/durability.md`` across a multi-record batch.

    The last group commit (records 41-50, one ``write``) reached the disk with the
    file's new size but, from inside record 45 on, as zeros (a power cut on a file
    system that extends the size before the data). Nothing in it was acknowledged
    (its fsync never returned), so recovery must truncate at record 45.
    """
    journal.write_many(commands(40, seed=37))
    journal.write(commands(10, seed=38), apply=False)
    journal.close()
    path = segment_path(journal.directory, 1)
    offsets = record_offsets(path)
    data = path.read_bytes()
    cut = offsets[44] + HEADER_SIZE + 11
    path.write_bytes(data[:cut] + b"\0" * (len(data) - cut))
    reference = Engine(DEFAULT_MARKETS)
    for record in list(read_records(data))[:44]:
        reference.apply(record.command, seq=record.seq, ts=record.ts)
    with caplog.at_level(logging.WARNING, logger="trade_engine.journal"):
        result = recovered(journal.directory)
    assert result.engine.last_seq == 44
    assert result.engine.state_hash() == reference.state_hash()
    assert path.stat().st_size == offsets[44]


def test_a_torn_tail_is_left_alone_without_repair(journal):
    journal.write_many(commands(20, seed=15))
    path = segment_path(journal.directory, 1)
    with path.open("ab") as file:
        file.write(b"\x10\0\0")
    journal.close()
    before = listing(journal.directory)
    result = recovered(journal.directory, repair=False)
    assert len(result.truncated) == 1
    assert result.engine.state_hash() == journal.engine.state_hash()
    assert listing(journal.directory) == before


@pytest.mark.parametrize(("written", "zeros"), [(0, 0), (3, 0), (7, 0), (0, 8), (5, 3), (5, 600)])
def test_a_segment_torn_at_creation_is_removed(journal, caplog, written, zeros):
    journal.write_many(commands(30, seed=16))
    journal.close()
    torn = segment_path(journal.directory, 31)
    torn.write_bytes(SEGMENT_MAGIC[:written] + b"\0" * zeros)
    with caplog.at_level(logging.WARNING, logger="trade_engine.journal"):
        result = recovered(journal.directory)
    assert not torn.exists()
    assert result.engine.state_hash() == journal.engine.state_hash()
    assert any(str(torn) in r.getMessage() for r in caplog.records)


# ---------------------------------------------------------------- damage: start-up stops


def assert_refused(directory: Path, *fragments: str) -> str:
    before = listing(directory)
    with pytest.raises(JournalError) as caught:
        recovered(directory)
    message = str(caught.value)
    for fragment in fragments:
        assert fragment in message, message
    assert listing(directory) == before, "a refused recovery must not touch the files"
    return message


def test_a_corrupted_record_in_the_middle_stops_start_up(journal):
    journal.write_many(commands(60, seed=17))
    journal.close()
    path = segment_path(journal.directory, 1)
    offsets = record_offsets(path)
    data = bytearray(path.read_bytes())
    data[offsets[30] + 12] ^= 0xFF
    path.write_bytes(bytes(data))
    assert_refused(journal.directory, str(path), f"checksum mismatch at offset {offsets[30]}")


def test_a_damaged_length_in_the_middle_stops_start_up(journal, caplog):
    """One bit flip makes a record run past the end of the file; nothing is truncated.

    Before the header had its own checksum this read as a torn tail: recovery cut
    the file there, losing that record and every acknowledged one after it.
    """
    journal.write_many(commands(60, seed=39))
    journal.close()
    path = segment_path(journal.directory, 1)
    offsets = record_offsets(path)
    data = bytearray(path.read_bytes())
    data[offsets[25] + 2] ^= 0x01  # length += 64 KiB: past the end of this small file
    assert offsets[25] + HEADER_SIZE + int.from_bytes(data[offsets[25]:offsets[25] + 4],
                                                      "little") > len(data)
    path.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING, logger="trade_engine.journal"):
        message = assert_refused(journal.directory)
    assert message == (f"{path}: record header checksum mismatch at offset {offsets[25]}")
    assert not caplog.records  # refused, not truncated with a warning


@pytest.mark.parametrize("where", ["header", "payload"])
def test_a_damaged_last_record_stops_start_up(journal, where):
    """The whole record is there, so it may have been acknowledged: not a torn tail."""
    journal.write_many(commands(20, seed=40))
    journal.close()
    path = segment_path(journal.directory, 1)
    offsets = record_offsets(path)
    data = bytearray(path.read_bytes())
    data[offsets[-1] + (1 if where == "header" else HEADER_SIZE + 1)] ^= 0x10
    path.write_bytes(bytes(data))
    expected = "record header checksum" if where == "header" else "record checksum"
    assert_refused(journal.directory, str(path), f"{expected} mismatch at offset {offsets[-1]}")


def test_a_segment_of_the_old_format_stops_start_up(journal):
    journal.write_many(commands(10, seed=41))
    journal.close()
    path = segment_path(journal.directory, 1)
    path.write_bytes(b"TEJRNL01" + path.read_bytes()[8:])
    message = assert_refused(journal.directory)
    assert message == (f"{path}: unsupported journal format TEJRNL01 "
                       "(this version reads TEJRNL02 only) at offset 0")
    with pytest.raises(UnsupportedJournalFormat):
        recovered(journal.directory)


def test_corruption_in_an_older_segment_stops_start_up(journal):
    journal.write_many(commands(30, seed=18))
    journal.open()
    journal.write_many(commands(30, seed=19))
    journal.close()
    old = segment_path(journal.directory, 1)
    offsets = record_offsets(old)
    data = bytearray(old.read_bytes())
    data[offsets[-1] + 9] ^= 0x01  # the last record of a segment that is not the newest
    old.write_bytes(bytes(data))
    assert_refused(journal.directory, str(old), f"at offset {offsets[-1]}")


def test_a_torn_record_in_an_older_segment_stops_start_up(journal):
    journal.write_many(commands(30, seed=20))
    old = segment_path(journal.directory, 1)
    with old.open("ab") as file:
        file.write(b"\x30\0\0\0\1\2")
    journal.open()
    journal.write_many(commands(10, seed=21))
    journal.close()
    assert_refused(journal.directory, str(old), "but later segments exist")


def test_a_segment_with_a_bad_magic_stops_start_up(journal):
    journal.write_many(commands(10, seed=22))
    journal.close()
    path = segment_path(journal.directory, 1)
    path.write_bytes(b"XEJRNL01" + path.read_bytes()[8:])
    assert_refused(journal.directory, str(path), "bad magic", "at offset 0")


def test_a_missing_snapshot_with_a_journal_that_starts_late_stops_start_up(tmp_path):
    """Segments from seq 41 on and no snapshot: the beginning is missing."""
    late = Journal(tmp_path / "journal")
    late.open(next_seq=41)
    late.write(commands(10, seed=25), apply=False, seq=41)
    late.close()
    assert_refused(late.directory, str(segment_path(late.directory, 41)),
                   "sequence gap, expected 1, found 41")


def test_a_pruned_journal_without_its_snapshot_stops_start_up(tmp_path):
    journal = Journal(tmp_path / "journal", segment_bytes=1_000)
    try:
        journal.write_many(commands(100, seed=26), batch=4)
        journal.snapshot()
        journal.write_many(commands(10, seed=27), batch=4)
    finally:
        journal.close()
    first = segments(journal.directory)[0]
    assert first.name != segment_path(journal.directory, 1).name
    snapshots(journal.directory)[0].unlink()
    assert_refused(journal.directory, str(first), "sequence gap, expected 1")


def test_a_gap_in_the_sequence_stops_start_up(journal):
    journal.write_many(commands(20, seed=28))
    journal.write(commands(5, seed=29), apply=False, seq=22)  # 21 is missing
    journal.close()
    assert_refused(journal.directory, str(segment_path(journal.directory, 1)),
                   "sequence gap, expected 21, found 22")


def test_a_gap_between_segments_stops_start_up(journal):
    journal.write_many(commands(20, seed=30))
    journal.open(next_seq=25)
    journal.write(commands(5, seed=31), apply=False, seq=25)
    journal.close()
    assert_refused(journal.directory, str(segment_path(journal.directory, 25)),
                   "sequence gap, expected 21, found 25")


def test_a_damaged_snapshot_stops_start_up(journal):
    journal.write_many(commands(30, seed=32))
    journal.snapshot()
    journal.close()
    path = snapshot_path(journal.directory, 30)
    data = bytearray(path.read_bytes())
    data[40] ^= 0xFF
    path.write_bytes(bytes(data))
    assert_refused(journal.directory, str(path), "snapshot checksum mismatch at offset 20")


# ---------------------------------------------------------------- the CLI


def cli(*args: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRADE_ENGINE_")}
    env["XDG_DATA_HOME"] = str(tmp_path / "xdg")  # never the developer's real data dir
    return subprocess.run(
        [sys.executable, "-m", "gateway._cli", *args], capture_output=True, text=True,
        env=env, timeout=60, check=False)


def test_cli_verify_and_replay_print_counts_last_seq_and_hash(tmp_path):
    journal = Journal(tmp_path / "journal")
    journal.write_many(commands(90, seed=33))
    journal.snapshot()
    journal.write_many(commands(25, seed=34))
    journal.close()
    expected = journal.engine.state_hash()

    verify = cli("journal", "verify", str(journal.directory), tmp_path=tmp_path)
    assert verify.returncode == 0, verify.stderr
    assert verify.stdout.splitlines() == [
        f"journal: {journal.directory}", "snapshot seq: 90",
        "records: 115 (25 after the snapshot)", "last seq: 115", f"state hash: {expected}"]

    replay = cli("journal", "replay", str(journal.directory), tmp_path=tmp_path)
    assert replay.returncode == 0, replay.stderr
    assert replay.stdout.splitlines() == [
        f"journal: {journal.directory}", "last seq: 115", f"state hash: {expected}"]

    events = cli("journal", "replay", "--events", str(journal.directory), tmp_path=tmp_path)
    assert events.returncode == 0, events.stderr
    lines = [json.loads(line) for line in events.stdout.splitlines()]
    assert {line["seq"] for line in lines} <= set(range(91, 116))
    assert lines[0]["seq"] == 91
    assert f"state hash: {expected}" in events.stderr


def test_cli_reports_a_torn_tail_without_truncating_it(tmp_path):
    journal = Journal(tmp_path / "journal")
    journal.write_many(commands(30, seed=35))
    journal.close()
    path = segment_path(journal.directory, 1)
    with path.open("ab") as file:
        file.write(b"\x40\0\0\0garbage")
    before = listing(journal.directory)
    verify = cli("journal", "verify", str(journal.directory), tmp_path=tmp_path)
    assert verify.returncode == 0, verify.stderr
    assert re.search(r"^torn tail \(a write in progress if a server is running; else a restart "
                     r"truncates it\): .*journal-0+1\.log", verify.stdout,
                     re.MULTILINE), verify.stdout
    assert f"state hash: {journal.engine.state_hash()}" in verify.stdout
    assert listing(journal.directory) == before


def test_cli_verify_exits_1_on_a_damaged_length(tmp_path):
    """The damage that used to read as a torn tail: verify names the file and offset."""
    journal = Journal(tmp_path / "journal")
    journal.write_many(commands(30, seed=42))
    journal.close()
    path = segment_path(journal.directory, 1)
    offsets = record_offsets(path)
    data = bytearray(path.read_bytes())
    data[offsets[12] + 1] ^= 0x80  # length += 32 KiB: past the end of the file
    assert offsets[12] + HEADER_SIZE + int.from_bytes(data[offsets[12]:offsets[12] + 4],
                                                      "little") > len(data)
    path.write_bytes(bytes(data))
    before = listing(journal.directory)
    result = cli("journal", "verify", str(journal.directory), tmp_path=tmp_path)
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr == (f"trade-engine: journal is corrupt: {path}: record header "
                             f"checksum mismatch at offset {offsets[12]}\n")
    assert listing(journal.directory) == before


def test_cli_names_an_old_format_as_unsupported_not_corrupt(tmp_path):
    journal = Journal(tmp_path / "journal")
    journal.write_many(commands(10, seed=42))
    journal.close()
    path = segment_path(journal.directory, 1)
    path.write_bytes(b"TEJRNL01" + path.read_bytes()[8:])
    result = cli("journal", "verify", str(journal.directory), tmp_path=tmp_path)
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr == (f"trade-engine: journal format not supported: {path}: unsupported "
                             "journal format TEJRNL01 (this version reads TEJRNL02 only) "
                             "at offset 0\n")


@pytest.mark.parametrize("command", ["verify", "replay"])
def test_cli_exits_1_on_corruption(tmp_path, command):
    journal = Journal(tmp_path / "journal")
    journal.write_many(commands(30, seed=36))
    journal.close()
    path = segment_path(journal.directory, 1)
    offsets = record_offsets(path)
    data = bytearray(path.read_bytes())
    data[offsets[10] + 10] ^= 0xFF
    path.write_bytes(bytes(data))
    result = cli("journal", command, str(journal.directory), tmp_path=tmp_path)
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.startswith("trade-engine: journal is corrupt: ")
    assert str(path) in result.stderr
    assert f"at offset {offsets[10]}" in result.stderr


def test_cli_reads_the_journal_inside_a_data_directory_and_says_so(tmp_path):
    data_dir = tmp_path / "data"
    journal = Journal(data_dir / "journal")
    journal.write_many(commands(12, seed=43))
    journal.close()
    before = listing(data_dir / "journal")
    verify = cli("journal", "verify", str(data_dir), tmp_path=tmp_path)
    # without a directory: the configuration's (here the data directory's) journal
    replay = cli("journal", "replay", "--data-dir", str(data_dir), tmp_path=tmp_path)
    for result in (verify, replay):
        assert result.returncode == 0, result.stderr
        lines = result.stdout.splitlines()
        assert lines[0] == f"journal: {data_dir / 'journal'}"
        assert "last seq: 12" in lines
    assert listing(data_dir / "journal") == before
    assert sorted(p.name for p in data_dir.iterdir()) == ["journal"]  # no LOCK, no secret


def test_cli_refuses_a_directory_without_a_journal_and_creates_nothing(tmp_path):
    missing = tmp_path / "no" / "such" / "dir"
    result = cli("journal", "verify", str(missing), tmp_path=tmp_path)
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr == (
        f"trade-engine: {missing} does not exist; give the journal directory, by default "
        f"<data dir>/journal (here {tmp_path / 'xdg' / 'trade-engine' / 'journal'})\n")
    assert not (tmp_path / "no").exists()
    assert not (tmp_path / "xdg").exists()

    empty = tmp_path / "empty"
    empty.mkdir()
    result = cli("journal", "replay", str(empty), tmp_path=tmp_path)
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.startswith(f"trade-engine: {empty} holds no journal "), result.stderr
    assert list(empty.iterdir()) == []


def test_read_only_reading_starts_again_when_a_server_prunes_during_the_read(tmp_path):
    """A server beside the reader writes a snapshot and deletes the segment it covers
    between the reader's look for a snapshot (none yet) and its read of the segments:
    the reader sees a sequence gap, notices the files changed, and reads again."""
    journal = Journal(tmp_path / "journal", segment_bytes=2048)
    journal.write_many(commands(60, seed=44))
    assert len(segments(journal.directory)) > 2
    pruned = []

    def markets_while_a_snapshot_lands() -> Iterator[MarketSpec]:
        if not pruned:  # the server's snapshot lands during the first read only
            journal.snapshot()
            pruned.append(True)
        yield from DEFAULT_MARKETS

    class Markets:
        def __iter__(self) -> Iterator[MarketSpec]:
            return markets_while_a_snapshot_lands()

    recovery = read_journal(journal.directory, Markets())
    assert pruned
    assert recovery.snapshot_seq == 60
    assert recovery.engine.state_hash() == journal.engine.state_hash()

    # with events already handed out, it does not start again: it says to run again
    journal.write_many(commands(20, seed=45))
    seen = []

    def on_record(record: object, events: list[object]) -> None:
        if not seen:
            journal.write_many(commands(20, seed=46))
            journal.snapshot()
        seen.append(record)

    with pytest.raises(JournalChanged, match="run the command again"):
        read_journal(journal.directory, DEFAULT_MARKETS, on_record=on_record)
