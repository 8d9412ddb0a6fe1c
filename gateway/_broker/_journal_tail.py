"""What the engine's journal holds past a point, read beside the running engine task.

Rules of this module: read only; the engine task appends to the newest
segment and a snapshot may delete older segments meanwhile, so a read that
raced a snapshot (a vanished file, a hole in the sequence) starts again, and a
torn tail is where the records written so far end (the rest is still being
written and reaches the publisher through ``EngineBroker.durable``). Blocking:
call it in a thread.
"""

from __future__ import annotations

from itertools import pairwise
from pathlib import Path

from engine import SEGMENT_MAGIC, Record, TornTail, read_records
from gateway._broker._codec import origin_entry_id
from gateway._journal import segments


def records_after(directory: Path, seq: int, *, attempts: int = 5) -> list[Record]:
    """The journal's records with a ``seq`` above ``seq``, in order.

    Raises:
        RuntimeError: the directory kept changing over ``attempts`` reads.
    """
    for _ in range(attempts):
        found: list[Record] = []
        try:
            for path in segments(directory):
                data = path.read_bytes()
                if not data.startswith(SEGMENT_MAGIC):
                    continue  # a segment just being created
                for item in read_records(data):
                    if isinstance(item, TornTail):
                        break
                    if item.seq > seq:
                        found.append(item)
        except FileNotFoundError:
            continue
        if all(b.seq == a.seq + 1 for a, b in pairwise(found)):
            return found
    raise RuntimeError(f"{directory}: the journal kept changing while it was read")


def last_origin_entry(directory: Path) -> str:
    """The newest command entry id the journal holds ("0-0" when none): where intake resumes."""
    newest = "0-0"
    for record in records_after(directory, 0):
        if record.origin is not None:
            newest = origin_entry_id(record.origin)
    return newest
