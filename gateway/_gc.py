"""Keep CPython's cyclic garbage collector from stopping the server for seconds.

Why: a full collection walks every tracked object, and a gateway holding 10,000
connections holds millions of them. Measured with 10,000 idle connections on
CPython 3.11 (``bench/README.md``, "Fan-out load", hold): full collections of
1.0-1.5 s every few seconds, because every heartbeat leaves objects that live
a ping interval, long enough to reach the oldest generation. Every client
waits while one runs: the ``subscribe`` round trip p99 was 2.4 s.

Rules of this module:

* Every ``freeze_interval`` seconds, the objects made since the last freeze
  are collected (few, so it is quick; this reclaims the reference cycles of
  short-lived things such as a connection that came and went, and wsproto
  leaves one per connection), then :func:`gc.freeze` moves every object alive
  to the permanent generation, which later collections skip. Objects that are
  no longer referenced are still freed at once by reference counting, frozen
  or not; only reference cycles among frozen objects wait.
* Everything is unfrozen and collected once every ``full_collection_interval``
  seconds, which reclaims the cycles of long-lived objects that died frozen (a
  connection that closed after a while): a pause at a known, low rate instead
  of pauses at a rate set by the traffic. (Nothing here counts the frozen
  objects: ``gc.get_freeze_count()`` walks all of them, 33 ms for 4 million.)
* On the way out the objects are unfrozen, leaving the collector as it was.

This changes the whole process's collector, so an embedding program that
manages it itself sets ``gc.freeze_interval = 0``.
"""

from __future__ import annotations

import gc
import logging
import time

import trio

from gateway._config import GcSettings

log = logging.getLogger("trade_engine.gateway")


async def tame_cyclic_gc(
    settings: GcSettings, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    """Freeze the heap every ``freeze_interval``; collect it all every ``full_collection_interval``.

    Runs until cancelled; returns at once when ``freeze_interval`` is 0.
    """
    if not settings.freeze_interval:
        task_status.started()
        return
    last_full = trio.current_time()
    try:
        # The first pass covers everything made since the process started (imports, the
        # recovered engine): a pause of tens of ms, taken before the listeners open
        # rather than under the first requests.
        gc.collect()
        gc.freeze()
        task_status.started()
        while True:
            await trio.sleep(settings.freeze_interval)
            now, full = trio.current_time(), settings.full_collection_interval
            if full and now - last_full >= full:
                last_full = now
                gc.unfreeze()
                started = time.perf_counter()
                found = gc.collect()
                log.info("full garbage collection: %d unreachable objects in %.0f ms",
                         found, 1000 * (time.perf_counter() - started))
            else:
                gc.collect()  # only what is not frozen: the objects of the last interval
            gc.freeze()
    finally:
        gc.unfreeze()
