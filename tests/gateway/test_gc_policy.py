"""The garbage-collector policy: freeze the heap now and then, collect it all rarely.

Why it exists is in ``gateway/_gc.py``: full collections over millions of
objects stopped a 10,000-connection gateway for over a second at a time.
"""

from __future__ import annotations

import gc
import weakref

import trio

from gateway import GcSettings
from gateway._gc import tame_cyclic_gc


class Cycle:
    def __init__(self) -> None:
        self.me = self


async def test_freezes_the_heap_and_unfreezes_it_when_cancelled(autojump_clock):
    assert gc.get_freeze_count() == 0
    async with trio.open_nursery() as nursery:
        await nursery.start(tame_cyclic_gc, GcSettings(freeze_interval=1.0,
                                                       full_collection_interval=0))
        await trio.sleep(1.5)
        assert gc.get_freeze_count() > 0
        nursery.cancel_scope.cancel()
    assert gc.get_freeze_count() == 0


async def test_a_full_collection_reclaims_cycles_among_frozen_objects(autojump_clock):
    cycle = Cycle()
    gone = weakref.ref(cycle)
    async with trio.open_nursery() as nursery:
        await nursery.start(tame_cyclic_gc, GcSettings(freeze_interval=1.0,
                                                       full_collection_interval=10.0))
        await trio.sleep(1.5)  # frozen
        del cycle
        gc.collect()
        assert gone() is not None  # frozen: an ordinary collection skips it
        await trio.sleep(10)  # the full collection
        assert gone() is None
        nursery.cancel_scope.cancel()


async def test_cycles_dropped_between_freezes_are_reclaimed_before_freezing(autojump_clock):
    """A connection that came and went leaves a cycle (wsproto's parser): it must not stay."""
    async with trio.open_nursery() as nursery:
        await nursery.start(tame_cyclic_gc, GcSettings(freeze_interval=1.0,
                                                       full_collection_interval=0))
        await trio.sleep(1.5)
        cycle = Cycle()
        gone = weakref.ref(cycle)
        del cycle
        await trio.sleep(1.0)  # the next freeze collects the young objects first
        assert gone() is None
        nursery.cancel_scope.cancel()


async def test_zero_leaves_the_collector_alone():
    async with trio.open_nursery() as nursery:
        await nursery.start(tame_cyclic_gc, GcSettings(freeze_interval=0))
        assert gc.get_freeze_count() == 0
        assert not nursery.child_tasks  # it returned at once


async def test_the_first_freeze_happens_before_the_task_reports_started(autojump_clock):
    """The first pass (everything since start-up) is paid before the listeners open."""
    async with trio.open_nursery() as nursery:
        await nursery.start(tame_cyclic_gc, GcSettings(freeze_interval=1.0,
                                                       full_collection_interval=0))
        assert gc.get_freeze_count() > 0
        nursery.cancel_scope.cancel()
    assert gc.get_freeze_count() == 0
