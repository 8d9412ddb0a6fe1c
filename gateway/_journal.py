"""The journal on disk: segment files, group commit, snapshots and recovery.

Rules of this module (the byte formats are in ``engine/_journal.py``, the
reasoning in ``docs/durability.md``):

* The directory holds segments ``journal-<first seq>.log`` and snapshots
  ``snapshot-<seq>.bin``. Only the newest segment is ever written; a new one
  is started at every start-up and when the current one passes
  ``segment_bytes``.
* :meth:`JournalWriter.append` writes a batch of records with one ``write``
  and, under ``fsync = "batch"`` or ``"always"``, one ``fsync``, in a worker
  thread so the trio loop keeps running. It returns only once the batch is as
  durable as the policy promises.
* Snapshots are written to a temporary file, fsynced, renamed into place and
  the directory fsynced; then older snapshots and the segments they cover are
  deleted.
* :func:`recover` = newest snapshot + replay of every later record through the
  same pure engine. A torn tail of the newest segment (what the reading rules
  of ``engine/_journal.py`` call one: the end of the file cut short inside a
  record, or zero-filled from inside it) is truncated with a warning; damage
  anywhere else, a torn tail in an older segment, or a segment of another
  format version stops start-up with :class:`JournalError` naming the file
  and the offset, leaving the files untouched. With ``repair=False`` (the
  read-only tools, which run beside a live server) it writes nothing at all.
* One writer per directory: :func:`gateway.serve` holds the ``LOCK`` file in it
  (``_datadir``) from before :func:`recover` until the writer is closed.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable
from enum import StrEnum
from itertools import pairwise
from pathlib import Path

import attrs

from engine import (
    SEGMENT_MAGIC,
    CorruptJournal,
    Engine,
    MarketSpec,
    Record,
    TornTail,
    decode_snapshot,
    read_records,
)

log = logging.getLogger("trade_engine.journal")

SEGMENT_GLOB = "journal-*.log"
SNAPSHOT_GLOB = "snapshot-*.bin"


class Fsync(StrEnum):
    ALWAYS = "always"  # one fsync per command
    BATCH = "batch"  # one fsync per group of commands (group commit)
    OFF = "off"  # no fsync: survives a process crash, not a power cut


class JournalError(Exception):
    """The journal cannot be trusted; the message names the file and offset."""


class UnsupportedJournalFormat(JournalError):
    """The journal is in a format this version does not read: another version wrote it."""


class JournalChanged(JournalError):
    """A running server changed the journal's files while :func:`read_journal` read them."""


def segment_path(directory: Path, first_seq: int) -> Path:
    return directory / f"journal-{first_seq:020d}.log"


def snapshot_path(directory: Path, seq: int) -> Path:
    return directory / f"snapshot-{seq:020d}.bin"


def _seq_of(path: Path) -> int:
    return int(path.name.split("-", 1)[1].split(".", 1)[0])


def segments(directory: Path) -> list[Path]:
    return sorted(directory.glob(SEGMENT_GLOB), key=_seq_of)


def snapshots(directory: Path) -> list[Path]:
    return sorted(directory.glob(SNAPSHOT_GLOB), key=_seq_of)


def fsync_directory(directory: Path) -> None:
    """Make a file creation, rename or deletion in ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@attrs.frozen
class Recovery:
    """What :func:`recover` found."""

    engine: Engine
    snapshot_seq: int  # 0 without a snapshot
    records: int  # valid records read, including those the snapshot covers
    replayed: int  # records applied after the snapshot
    truncated: tuple[str, ...]  # one line per torn tail removed


def recover(
    directory: Path,
    markets: Iterable[MarketSpec],
    *,
    order_history: int = 100_000,
    trade_history: int = 1_000,
    on_record: Callable[[Record, list[object]], None] | None = None,
    on_snapshot: Callable[[Engine], None] | None = None,
    repair: bool = True,
) -> Recovery:
    """Rebuild the engine from ``directory``: snapshot, then the journal tail.

    Args:
        directory: the journal directory (created when missing, unless ``repair``
            is False: then a missing directory reads as an empty journal).
        markets: the markets of a fresh engine (a snapshot brings its own).
        on_record: called with each replayed record and its events.
        on_snapshot: called with the engine the snapshot holds (or the fresh one),
            before any record is replayed into it.
        repair: truncate a torn tail (False: read only, never write, create or
            truncate anything, as the read-only tools beside a running server must).

    Raises:
        JournalError: corruption before the tail, a gap in the sequence, a bad
            snapshot; the message names the file and the offset.
    """
    if repair:
        directory.mkdir(parents=True, exist_ok=True)
    engine: Engine | None = None
    snapshot_seq = 0
    found = snapshots(directory)
    if found:
        newest = found[-1]
        try:
            engine = decode_snapshot(newest.read_bytes())
        except CorruptJournal as exc:
            raise JournalError(f"{newest}: {exc}") from None
        snapshot_seq = engine.last_seq
    if engine is None:
        engine = Engine(markets, order_history=order_history, trade_history=trade_history)
    if on_snapshot is not None:
        on_snapshot(engine)
    records = replayed = 0
    truncated: list[str] = []
    files = segments(directory)
    for index, path in enumerate(files):
        last = index == len(files) - 1
        data = path.read_bytes()
        if not data.startswith(SEGMENT_MAGIC):
            # Torn at creation: the magic cut short, or zero-filled, and nothing after it.
            if (last and SEGMENT_MAGIC.startswith(data[: len(SEGMENT_MAGIC)].rstrip(b"\0"))
                    and not data[len(SEGMENT_MAGIC):].strip(b"\0")):
                truncated.append(f"{path}: removed a segment torn at creation")
                if repair:
                    path.unlink()
                continue
            if data[:6] == SEGMENT_MAGIC[:6] and len(data) >= len(SEGMENT_MAGIC):
                raise UnsupportedJournalFormat(
                    f"{path}: unsupported journal format {data[:8].decode(errors='replace')} "
                    f"(this version reads {SEGMENT_MAGIC.decode()} only) at offset 0")
            raise JournalError(f"{path}: not a journal segment (bad magic) at offset 0")
        try:
            for item in read_records(data):
                if isinstance(item, TornTail):
                    if not last:
                        raise JournalError(
                            f"{path}: {item.reason} at offset {item.offset}, "
                            "but later segments exist")
                    truncated.append(
                        f"{path}: truncated a torn tail at offset {item.offset} "
                        f"({item.reason}, {len(data) - item.offset} bytes)")
                    if repair:
                        with path.open("r+b") as file:
                            file.truncate(item.offset)
                            os.fsync(file.fileno())
                    break
                records += 1
                if item.seq <= engine.last_seq:
                    continue  # covered by the snapshot
                if item.seq != engine.last_seq + 1:
                    raise JournalError(
                        f"{path}: sequence gap, expected {engine.last_seq + 1}, "
                        f"found {item.seq}")
                events = engine.apply(item.command, seq=item.seq, ts=item.ts)
                replayed += 1
                if on_record is not None:
                    on_record(item, list(events))
        except CorruptJournal as exc:
            raise JournalError(f"{path}: {exc}") from None
    for line in truncated:
        log.warning("journal recovery: %s", line)
    return Recovery(engine, snapshot_seq, records, replayed, tuple(truncated))


def journal_files(directory: Path) -> tuple[str, ...]:
    """The names of the snapshots and segments in ``directory``, in order."""
    return tuple(path.name for path in (*snapshots(directory), *segments(directory)))


def read_journal(
    directory: Path,
    markets: Iterable[MarketSpec],
    *,
    order_history: int = 100_000,
    trade_history: int = 1_000,
    on_record: Callable[[Record, list[object]], None] | None = None,
    attempts: int = 5,
) -> Recovery:
    """:func:`recover` read-only, and consistent while a server writes the journal.

    A running server may write a snapshot and delete the files it covers during
    the read: a file vanishes, or the snapshot and the segments read come from
    two moments (which looks like a sequence gap). File names carry sequence
    numbers and are never reused, so an unchanged list of names before and after
    a read proves it saw one state; when it changed, the read starts again, unless
    ``on_record`` has already seen records (then the error says to run it again).

    Raises:
        JournalError: as :func:`recover`, or the directory kept changing.
    """
    for attempt in range(attempts):
        before = journal_files(directory)
        seen = 0

        def counting(record: Record, events: list[object]) -> None:
            nonlocal seen
            seen += 1
            assert on_record is not None
            on_record(record, events)

        try:
            return recover(
                directory, markets, order_history=order_history, trade_history=trade_history,
                on_record=None if on_record is None else counting, repair=False,
            )
        except (JournalError, FileNotFoundError) as exc:
            if journal_files(directory) == before:
                if isinstance(exc, FileNotFoundError):
                    raise JournalError(f"{exc.filename}: vanished while being read") from None
                raise
            if seen or attempt == attempts - 1:
                raise JournalChanged(
                    f"{directory}: a running server wrote a snapshot and deleted the files it "
                    "covers while they were read; run the command again") from None
    raise AssertionError("unreachable")


class JournalWriter:
    """Appends record batches to the newest segment. Owned by the engine task.

    ``append`` runs the blocking ``write`` and ``fsync`` in a worker thread;
    only one append is ever in flight, because only the engine task calls it.
    """

    def __init__(
        self, directory: Path, *, next_seq: int, fsync: Fsync, segment_bytes: int
    ) -> None:
        self.directory = directory
        self.fsync = fsync
        self._segment_bytes = segment_bytes
        self._file = self._open_segment(next_seq)

    def _open_segment(self, first_seq: int) -> int:
        path = segment_path(self.directory, first_seq)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o644)
        os.write(fd, SEGMENT_MAGIC)
        if self.fsync is not Fsync.OFF:
            os.fsync(fd)
            fsync_directory(self.directory)
        self._size = len(SEGMENT_MAGIC)
        return fd

    def append_blocking(self, data: bytes, next_seq: int) -> None:
        """Write (and fsync per policy) ``data``; then rotate if the segment is full.

        Raises:
            OSError: the write or the fsync failed; nothing after this is durable.
        """
        try:
            view = memoryview(data)
            while view:
                written = os.write(self._file, view)
                view = view[written:]
            if self.fsync is not Fsync.OFF:
                _fsync(self._file)
        except OSError:
            self._cut_back()
            raise
        self._size += len(data)
        if self._size >= self._segment_bytes:
            old = self._file
            self._file = self._open_segment(next_seq)
            os.close(old)

    def _cut_back(self) -> None:
        """After a failed append, remove what it may have written (best effort).

        Its commands are refused, so they must not come back at the next start.
        If the disk refuses even this, the log says they may.
        """
        try:
            os.ftruncate(self._file, self._size)
            _fsync(self._file)
        except OSError as exc:
            log.critical("could not cut a refused batch from the journal (%s): its commands "
                         "may be replayed at the next start", exc)

    def close(self) -> None:
        try:
            if self.fsync is not Fsync.OFF:
                os.fsync(self._file)
        finally:
            os.close(self._file)


def _fsync(fd: int) -> None:
    """``os.fsync``; a seam for tests that inject disk errors."""
    os.fsync(fd)


def write_atomically(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that a crash leaves the old file or the new one, whole:
    a temporary file, fsynced, renamed into place, and the directory fsynced."""
    temporary = path.with_suffix(".tmp")
    with temporary.open("wb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())
    os.replace(temporary, path)
    fsync_directory(path.parent)


def write_snapshot(directory: Path, engine_snapshot: bytes, seq: int) -> None:
    """Atomically write a snapshot at ``seq``, then drop what it makes redundant."""
    write_atomically(snapshot_path(directory, seq), engine_snapshot)
    for older in snapshots(directory):
        if _seq_of(older) < seq:
            older.unlink()
    files = segments(directory)
    # A segment is redundant when the next one starts at or before seq + 1:
    # then all of its records are <= seq. The newest segment is never removed.
    for path, following in pairwise(files):
        if _seq_of(following) <= seq + 1:
            path.unlink()
    fsync_directory(directory)
