"""The heartbeat policy on plain numbers: pings, late pongs, read timeout, token expiry.

No trio, no sleeping: time is an argument. Intervals are chosen so that every
sum is exact in binary floating point.
"""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway._closing import HEARTBEAT_TIMEOUT, SLOW_CONSUMER, TOKEN_EXPIRED
from gateway._heartbeat import Beat, Heartbeat


def heartbeat(now: float = 0.0, **overrides: float) -> Heartbeat:
    settings = {"ping_interval": 4.0, "pong_timeout": 2.0, "read_timeout": 16.0}
    settings.update(overrides)
    return Heartbeat(now, **settings)


def never_backlogged() -> bool:
    return False


def always_backlogged() -> bool:
    return True


def must_not_ask() -> bool:
    raise AssertionError("backlogged() is asked only when a pong is late")


def test_the_first_ping_is_due_one_interval_after_the_connection_opened():
    beat = heartbeat(now=100.0)
    assert beat.deadline == 104.0
    assert beat.due(103.5, heard=100.0, backlogged=must_not_ask) is Beat.WAIT
    assert beat.due(104.0, heard=100.0, backlogged=must_not_ask) is Beat.PING


def test_after_a_ping_the_next_deadline_is_the_pong_deadline():
    beat = heartbeat()
    assert beat.due(4.0, heard=0.0, backlogged=must_not_ask) is Beat.PING
    assert beat.deadline == 6.0  # pong_timeout before the next ping interval


def test_an_answered_ping_clears_the_pong_deadline():
    beat = heartbeat()
    beat.due(4.0, heard=0.0, backlogged=must_not_ask)
    assert beat.due(6.0, heard=5.0, backlogged=must_not_ask) is Beat.WAIT
    assert beat.deadline == 8.0  # the next ping
    assert beat.due(8.0, heard=5.0, backlogged=must_not_ask) is Beat.PING


def test_bytes_heard_at_the_ping_instant_count_as_the_answer():
    beat = heartbeat()
    beat.due(4.0, heard=0.0, backlogged=must_not_ask)
    assert beat.due(6.0, heard=4.0, backlogged=must_not_ask) is Beat.WAIT


def test_a_late_pong_from_a_client_that_does_not_read_is_a_slow_consumer():
    beat = heartbeat()
    beat.due(4.0, heard=0.0, backlogged=must_not_ask)
    verdict = beat.due(6.0, heard=3.0, backlogged=always_backlogged)
    assert verdict is Beat.SLOW_CONSUMER
    assert (verdict.close_code, verdict.value) == (SLOW_CONSUMER, "slow consumer: not reading")


def test_a_late_pong_with_nothing_on_its_way_means_the_client_is_gone():
    beat = heartbeat()
    beat.due(4.0, heard=0.0, backlogged=must_not_ask)
    verdict = beat.due(6.0, heard=3.0, backlogged=never_backlogged)
    assert verdict is Beat.NO_PONG
    assert (verdict.close_code, verdict.value) == (HEARTBEAT_TIMEOUT, "no pong")


def test_a_ping_sent_while_one_waits_keeps_the_first_deadline():
    # A pong timeout longer than the interval: two pings go out before the first is due.
    beat = heartbeat(ping_interval=2.0, pong_timeout=3.0)
    assert beat.due(2.0, heard=0.0, backlogged=must_not_ask) is Beat.PING
    assert beat.due(4.0, heard=0.0, backlogged=must_not_ask) is Beat.PING
    assert beat.deadline == 5.0  # the first ping's, not 7.0
    # Bytes heard after the second ping but before the first's deadline answer both.
    assert beat.due(5.0, heard=4.5, backlogged=must_not_ask) is Beat.WAIT
    assert beat.deadline == 6.0


def test_bytes_heard_between_the_two_pings_answer_the_first():
    beat = heartbeat(ping_interval=2.0, pong_timeout=3.0)
    beat.due(2.0, heard=0.0, backlogged=must_not_ask)
    beat.due(4.0, heard=0.0, backlogged=must_not_ask)
    assert beat.due(5.0, heard=3.0, backlogged=must_not_ask) is Beat.WAIT


def test_silence_past_the_read_timeout_closes_at_the_next_ping():
    beat = heartbeat(ping_interval=4.0, pong_timeout=2.0, read_timeout=6.0)
    assert beat.due(4.0, heard=0.0, backlogged=must_not_ask) is Beat.PING
    assert beat.due(6.0, heard=5.0, backlogged=must_not_ask) is Beat.WAIT  # the pong
    assert beat.due(8.0, heard=5.0, backlogged=must_not_ask) is Beat.PING  # 3 s of silence
    assert beat.due(10.0, heard=9.0, backlogged=must_not_ask) is Beat.WAIT
    verdict = beat.due(16.0, heard=9.0, backlogged=must_not_ask)  # 7 s > 6 s
    assert verdict is Beat.READ_TIMEOUT
    assert (verdict.close_code, verdict.value) == (HEARTBEAT_TIMEOUT, "read timeout")


def test_silence_of_exactly_the_read_timeout_is_still_allowed():
    beat = heartbeat(ping_interval=4.0, read_timeout=4.0)
    assert beat.due(4.0, heard=0.0, backlogged=must_not_ask) is Beat.PING


def test_a_late_wake_up_sees_the_pong_before_the_ping():
    # The timer fired late: both the pong deadline and the next ping are past.
    beat = heartbeat()
    beat.due(4.0, heard=0.0, backlogged=must_not_ask)
    assert beat.due(9.0, heard=0.0, backlogged=never_backlogged) is Beat.NO_PONG


def test_without_a_token_nothing_expires():
    beat = heartbeat()
    assert beat.deadline < math.inf
    for now in (4.0, 8.0, 12.0):
        assert beat.due(now, heard=now - 1, backlogged=must_not_ask) is Beat.PING


def test_the_token_expiry_is_one_more_deadline():
    beat = heartbeat(expires_at=2.5)
    assert beat.deadline == 2.5
    assert beat.due(2.0, heard=0.0, backlogged=must_not_ask) is Beat.WAIT
    verdict = beat.due(2.5, heard=0.0, backlogged=must_not_ask)
    assert verdict is Beat.TOKEN_EXPIRED
    assert (verdict.close_code, verdict.value) == (TOKEN_EXPIRED, "token expired")


def test_an_expired_token_is_named_even_when_a_pong_is_late_too():
    beat = heartbeat(expires_at=6.0)
    beat.due(4.0, heard=0.0, backlogged=must_not_ask)
    assert beat.due(6.0, heard=0.0, backlogged=never_backlogged) is Beat.TOKEN_EXPIRED


def test_a_token_already_expired_at_open_is_due_at_once():
    beat = heartbeat(now=10.0, expires_at=10.0)
    assert beat.deadline == 10.0
    assert beat.due(10.0, heard=10.0, backlogged=must_not_ask) is Beat.TOKEN_EXPIRED


@pytest.mark.parametrize("beat", [Beat.WAIT, Beat.PING])
def test_only_closing_beats_have_a_close_code(beat):
    with pytest.raises(KeyError):
        beat.close_code  # noqa: B018


@given(
    interval=st.integers(1, 8), timeout=st.integers(1, 8),
    answers=st.lists(st.booleans(), min_size=1, max_size=30),
)
def test_a_client_that_always_answers_is_never_closed(interval, timeout, answers):
    """Wake at every deadline; a responsive client answers right after each ping."""
    beat = Heartbeat(0.0, ping_interval=float(interval), pong_timeout=float(timeout),
                     read_timeout=float(interval + timeout))
    heard = 0.0
    for chatty in answers:
        now = beat.deadline
        verdict = beat.due(now, heard=heard, backlogged=never_backlogged)
        assert verdict in (Beat.WAIT, Beat.PING)
        if verdict is Beat.PING or chatty:
            heard = now  # the pong (or any message) comes back at once
        assert beat.deadline > now  # the timer always moves on


@given(interval=st.integers(1, 8), timeout=st.integers(1, 8))
def test_a_silent_client_is_closed_one_pong_timeout_after_the_first_ping(interval, timeout):
    beat = Heartbeat(0.0, ping_interval=float(interval), pong_timeout=float(timeout),
                     read_timeout=1000.0)
    verdicts = []
    while not verdicts or verdicts[-1][1] in (Beat.WAIT, Beat.PING):
        now = beat.deadline
        verdicts.append((now, beat.due(now, heard=0.0, backlogged=never_backlogged)))
    assert verdicts[0] == (interval, Beat.PING)
    assert verdicts[-1] == (interval + timeout, Beat.NO_PONG)
