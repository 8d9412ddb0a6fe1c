"""TokenBucket, KeyedBuckets and Counts on an injected clock: no sleeping, no I/O.

Times and rates are chosen so that every refill is exact in binary floating point.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway._limits import Counts, KeyedBuckets, TokenBucket


def test_bucket_starts_full_and_refuses_past_its_burst():
    bucket = TokenBucket(rate=2.0, burst=3, now=100.0)
    assert [bucket.take(100.0) for _ in range(4)] == [True, True, True, False]


def test_bucket_refills_at_its_rate():
    bucket = TokenBucket(rate=2.0, burst=3, now=0.0)
    for _ in range(3):
        assert bucket.take(0.0)
    assert not bucket.take(0.25)  # half a token
    assert bucket.take(0.5)  # one token after 0.5 s at 2/s
    assert not bucket.take(0.5)
    assert bucket.take(1.0)


def test_bucket_never_holds_more_than_its_burst():
    bucket = TokenBucket(rate=2.0, burst=3, now=0.0)
    assert bucket.full(1000.0)
    assert [bucket.take(1000.0) for _ in range(4)] == [True, True, True, False]


def test_retry_after_is_the_time_to_the_next_token():
    bucket = TokenBucket(rate=4.0, burst=1, now=0.0)
    assert bucket.retry_after(0.0) == 0.0  # a token is there
    assert bucket.take(0.0)
    assert bucket.retry_after(0.0) == 0.25
    assert bucket.retry_after(0.125) == 0.125
    assert bucket.take(0.25)


def test_a_clock_going_backwards_gives_no_tokens():
    bucket = TokenBucket(rate=1.0, burst=1, now=10.0)
    assert bucket.take(10.0)
    assert not bucket.take(5.0)
    assert not bucket.take(10.5)
    assert bucket.take(11.0)


def test_full_only_once_completely_refilled():
    bucket = TokenBucket(rate=1.0, burst=2, now=0.0)
    bucket.take(0.0)
    assert not bucket.full(0.5)
    assert bucket.full(1.0)


@given(
    rate=st.sampled_from([0.5, 1.0, 2.0, 8.0]),
    burst=st.integers(1, 20),
    steps=st.lists(st.integers(0, 8), max_size=200),
)
def test_bucket_never_grants_more_than_burst_plus_rate_times_elapsed(rate, burst, steps):
    """Over any run, tokens taken <= burst + rate * elapsed; and an empty bucket says when."""
    bucket = TokenBucket(rate, burst, now=0.0)
    now, taken = 0.0, 0
    for step in steps:
        now += step / 8  # multiples of 1/8 s: exact
        if bucket.take(now):
            taken += 1
        else:
            wait = bucket.retry_after(now)
            assert 0 < wait <= 1 / rate
            assert bucket.take(now + wait)
            now += wait
            taken += 1
        assert taken <= burst + rate * now


def test_keyed_buckets_are_independent_per_key():
    buckets = KeyedBuckets(rate=1.0, burst=2)
    assert buckets.take("10.0.0.1", 0.0)
    assert buckets.take("10.0.0.1", 0.0)
    assert not buckets.take("10.0.0.1", 0.0)
    assert buckets.take("10.0.0.2", 0.0)
    assert buckets.retry_after("10.0.0.1", 0.0) == 1.0
    assert buckets.retry_after("10.0.0.2", 0.0) == 0.0
    assert buckets.retry_after("never-seen", 0.0) == 0.0


def test_prune_forgets_only_completely_refilled_buckets():
    buckets = KeyedBuckets(rate=1.0, burst=2)
    buckets.take("a", 0.0)
    buckets.take("b", 0.0)
    buckets.take("b", 0.0)
    assert len(buckets) == 2
    buckets.prune(1.0)  # a is full again, b holds one token of two
    assert len(buckets) == 1
    assert buckets.take("b", 1.0)  # b kept its state: one token, not a fresh two
    assert not buckets.take("b", 1.0)
    buckets.prune(10.0)
    assert len(buckets) == 0


def test_keyed_buckets_stay_within_max_keys_under_a_spray_of_keys():
    buckets = KeyedBuckets(rate=1.0, burst=1, max_keys=100)
    for i in range(10_000):
        buckets.take(f"198.51.100.{i}", 0.0)
        assert len(buckets) <= 100
    assert len(buckets) == 100


def test_full_buckets_are_pruned_before_any_live_one_is_evicted():
    buckets = KeyedBuckets(rate=1.0, burst=1, max_keys=3)
    buckets.take("attacker", 0.0)  # empty until t=1
    buckets.take("old-1", -10.0)
    buckets.take("old-2", -10.0)
    # At t=0.5 old-1 and old-2 are full again; the newcomer evicts them, not attacker.
    assert buckets.take("new", 0.5)
    assert len(buckets) == 2
    assert not buckets.take("attacker", 0.5)


def test_eviction_past_max_keys_drops_the_least_recently_used_key():
    buckets = KeyedBuckets(rate=1.0, burst=1, max_keys=2)
    buckets.take("a", 0.0)
    buckets.take("b", 0.0)
    assert not buckets.take("a", 0.0)  # a is now the most recently used
    assert buckets.take("c", 0.0)  # nothing is full: b, the oldest, is evicted
    assert len(buckets) == 2
    assert not buckets.take("a", 0.0)  # a was kept, still empty
    # b was forgotten: the limit became more lenient for it, never stricter.
    assert buckets.take("b", 0.0)


@given(
    keys=st.lists(st.text(max_size=3), max_size=300),
    max_keys=st.integers(1, 20),
)
def test_keyed_buckets_never_exceed_max_keys(keys, max_keys):
    buckets = KeyedBuckets(rate=1.0, burst=2, max_keys=max_keys)
    for i, key in enumerate(keys):
        buckets.take(key, i / 4)
        assert len(buckets) <= max_keys


def test_counts_per_key_and_forgets_zero():
    counts = Counts()
    assert counts.get("alice") == 0
    counts.add("alice")
    counts.add("alice")
    counts.add("bob")
    assert (counts.get("alice"), counts.get("bob"), len(counts)) == (2, 1, 2)
    counts.remove("alice")
    counts.remove("bob")
    assert (counts.get("alice"), counts.get("bob"), len(counts)) == (1, 0, 1)
    counts.remove("alice")
    assert len(counts) == 0


def test_removing_an_absent_key_is_a_bug_and_raises():
    counts = Counts()
    with pytest.raises(KeyError):
        counts.remove("nobody")


@given(st.lists(st.tuples(st.booleans(), st.sampled_from("abcd")), max_size=200))
def test_counts_match_a_model_and_hold_no_zero_keys(operations):
    counts, model = Counts(), dict.fromkeys("abcd", 0)
    for add, key in operations:
        if add:
            counts.add(key)
            model[key] += 1
        elif model[key]:
            counts.remove(key)
            model[key] -= 1
        assert all(counts.get(k) == v for k, v in model.items())
        assert len(counts) == sum(1 for v in model.values() if v)
