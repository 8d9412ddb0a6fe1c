"""Pinned results: the events and state hash of seeded journals, as the engine gave them.

The determinism tests compare two runs of the same engine; these compare the
engine with itself across changes. They pin a digest of every event (type and
fields, in order) and the final ``state_hash()`` of the seeded journals of
``test_determinism``, as computed before the engine was split into modules.
A change to the engine's code that is meant to change no behaviour (a
refactor, a speed-up) must leave them as they are. A change that is meant to
change behaviour updates them, and says so.
"""

from __future__ import annotations

import hashlib

import msgspec
import pytest
from test_determinism import random_journal, replay

PINNED = {  # seed: (digest of every event, state hash after the journal)
    1: ("26a1d1691c6808bc8897792f1d500cb5",
        "138ed552df65844994f79b79e1fd205ba4b83e85645d32f92cb501eaf1e8b6b7"),
    2: ("bd4b021b9c93c6b3bce0eb456861adda",
        "1aca5656107b2f3e14d15b2a6b3c3fe99d789aeca29efdc7d711bf2b94cf1e90"),
    3: ("b37dd07c2c2731fd9c89980d0c8101bb",
        "203bdaf4bd5e1ea282655b42bf3a3c737616ce61c21c023f1e36237b7c8f4984"),
}


def digest(batches: list[list[object]]) -> str:
    h = hashlib.blake2b(digest_size=16)
    for batch in batches:
        h.update(b"|")
        for event in batch:
            h.update(type(event).__name__.encode())
            h.update(msgspec.msgpack.encode(event))
    return h.hexdigest()


@pytest.mark.parametrize("seed", sorted(PINNED))
def test_a_seeded_journal_gives_the_pinned_events_and_state_hash(seed):
    engine, batches = replay(random_journal(seed, 3_000))

    assert (digest(batches), engine.state_hash()) == PINNED[seed]
