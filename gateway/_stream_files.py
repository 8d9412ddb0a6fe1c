"""The stream state's files beside the journal: the epoch, and one state per snapshot.

Rules of this module:

* ``EPOCH`` holds the numbering's identity (16 hex characters). It is made
  with the journal directory and kept across restarts; it is made anew
  whenever the numbering cannot be continued exactly: the newest snapshot
  has no readable ``streams-<seq>.bin`` beside it (a directory from an older
  version, a damaged file), or the depth window (``websocket.depth_levels``)
  changed. Clients holding the old epoch then get ``resume_unavailable``.
* ``streams-<seq>.bin`` is the :class:`StreamState` at the engine snapshot of
  the same seq. It is written (to a temporary file, fsynced, renamed) before
  that snapshot, so a crash between the two leaves the older pair in charge,
  and deleted with the older snapshots once the newer snapshot is in place.
* Without a journal there is nothing to continue from: every start gets a
  new epoch (:func:`fresh_epoch`).
"""

from __future__ import annotations

import logging
import secrets
from pathlib import Path

import msgspec

from engine import Engine, Record
from gateway._config import HistorySettings
from gateway._history import History
from gateway._journal import write_atomically
from gateway._streams import Numbered, StreamState, decode_export

log = logging.getLogger("trade_engine.journal")

EPOCH_FILE = "EPOCH"
STREAMS_GLOB = "streams-*.bin"


def fresh_epoch() -> str:
    return secrets.token_hex(8)


def streams_path(directory: Path, seq: int) -> Path:
    return directory / f"streams-{seq:020d}.bin"


def write_streams(directory: Path, data: bytes, seq: int) -> None:
    """Atomically write the stream state at ``seq`` (before the engine snapshot)."""
    write_atomically(streams_path(directory, seq), data)


def drop_older_streams(directory: Path, seq: int) -> None:
    """Delete the stream states of snapshots older than ``seq`` (after it was written)."""
    for path in directory.glob(STREAMS_GLOB):
        if int(path.name[len("streams-"):-len(".bin")]) < seq:
            path.unlink()


def _write_epoch(directory: Path, epoch: str) -> None:
    write_atomically(directory / EPOCH_FILE, f"{epoch}\n".encode())


class StreamRecovery:
    """Rebuilds the stream state and its history alongside the journal's recovery.

    Pass :meth:`on_snapshot` and :meth:`on_record` to :func:`gateway._journal.recover`;
    afterwards :attr:`state` is the stream state at the engine's last seq and
    :attr:`history` holds the items of the replayed records (within its bounds).
    """

    def __init__(self, directory: Path, depth_levels: int, history: HistorySettings) -> None:
        self._directory = directory
        self._depth_levels = depth_levels
        self._history_settings = history
        self._continued = False
        self.state: StreamState | None = None
        self.history: History | None = None

    def on_snapshot(self, engine: Engine) -> None:
        """The engine as the snapshot left it (or fresh): pick up the numbering there."""
        directory, markets, levels = self._directory, engine.markets, self._depth_levels
        directory.mkdir(parents=True, exist_ok=True)
        epoch_file = directory / EPOCH_FILE
        epoch = epoch_file.read_text().strip() if epoch_file.exists() else None
        seq = engine.last_seq
        reason = "no epoch recorded yet"
        state: StreamState | None = None
        if epoch is not None and seq == 0:
            state = StreamState(markets, levels, epoch)  # numbering from the first record on
        elif epoch is not None:
            sidecar = streams_path(directory, seq)
            try:
                export = decode_export(sidecar.read_bytes())
                if export.epoch != epoch or export.engine_seq != seq:
                    raise ValueError(f"it belongs to epoch {export.epoch} at seq "
                                     f"{export.engine_seq}")
                state = StreamState.restore(export, markets, levels)
            except FileNotFoundError:
                reason = f"{sidecar.name} is missing"
            except (OSError, ValueError, msgspec.DecodeError) as exc:
                reason = f"{sidecar.name} cannot be used ({exc})"
        if state is None:
            new = fresh_epoch()
            _write_epoch(directory, new)
            if epoch is not None:
                log.warning("stream numbering restarts in a new epoch %s: %s; clients cannot "
                            "resume from before this start", new, reason)
            if seq == 0:  # an empty journal: the new epoch numbers from the first record
                state = StreamState(markets, levels, new)
            else:  # books from the engine once recovered; replayed records not numbered
                self.state = StreamState(markets, levels, new)
                return
        self._continued = True
        self.state = state
        settings = self._history_settings
        self.history = History(settings.messages, settings.seconds, state.counters())

    def on_record(self, record: Record, events: list[object]) -> None:
        if self._continued:
            assert self.state is not None
            assert self.history is not None
            numbered = Numbered()
            self.state.number(events, numbered)  # type: ignore[arg-type]
            for items in (numbered.orders, numbered.trades, numbered.orderbook, numbered.depth):
                self.history.record_all(items)

    def finish(self, engine: Engine) -> tuple[StreamState, History]:
        """The state and history at the recovered engine's last seq."""
        assert self.state is not None
        if not self._continued:
            self.state.load_books({symbol: _levels(engine, symbol) for symbol in engine.markets})
            settings = self._history_settings
            self.history = History(settings.messages, settings.seconds, self.state.counters())
        assert self.history is not None
        return self.state, self.history


def _levels(engine: Engine, symbol: str) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    depth = engine.depth(symbol)
    return ([(lv.price, lv.quantity) for lv in depth.bids],
            [(lv.price, lv.quantity) for lv in depth.asks])


def in_memory(engine: Engine, depth_levels: int, history: HistorySettings
              ) -> tuple[StreamState, History]:
    """Without a journal: a new epoch, the books of ``engine``, an empty history."""
    state = StreamState(engine.markets, depth_levels, fresh_epoch())
    state.load_books({symbol: _levels(engine, symbol) for symbol in engine.markets})
    return state, History(history.messages, history.seconds, state.counters())
