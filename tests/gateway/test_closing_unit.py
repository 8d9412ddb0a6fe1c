"""A connection's close state machine: every transition of the table in ``gateway/_closing.py``."""

from __future__ import annotations

from gateway._closing import (
    CLOSED,
    CLOSING,
    GOING_AWAY,
    NORMAL_CLOSURE,
    OPEN,
    SLOW_CONSUMER,
    CloseState,
    Phase,
)


def closing(code: int = SLOW_CONSUMER, reason: str = "slow consumer") -> CloseState:
    state = CloseState()
    assert state.request(code, reason)
    return state


def test_a_new_connection_is_open():
    assert CloseState().phase is OPEN


def test_the_first_request_decides_the_close():
    state = CloseState()
    assert state.request(GOING_AWAY, "server shutting down", b"farewell")
    assert state.phase is CLOSING
    assert state.goodbye() == (GOING_AWAY, "server shutting down", b"farewell")


def test_a_later_request_changes_nothing_and_says_so():
    state = closing(SLOW_CONSUMER, "slow consumer")
    assert not state.request(GOING_AWAY, "server shutting down", b"farewell")
    assert state.phase is CLOSING
    assert state.goodbye() == (SLOW_CONSUMER, "slow consumer", None)


def test_tasks_that_end_without_a_request_close_normally():
    state = CloseState()
    assert state.goodbye() == (NORMAL_CLOSURE, "", None)
    assert state.phase is CLOSING
    assert not state.request(GOING_AWAY, "server shutting down")  # too late to change it
    assert state.goodbye() == (NORMAL_CLOSURE, "", None)


def test_goodbye_keeps_a_closing_connection_closing():
    state = closing()
    state.goodbye()
    assert state.phase is CLOSING


def test_closed_is_final():
    state = closing()
    state.closed()
    assert state.phase is CLOSED
    assert not state.request(GOING_AWAY, "server shutting down")
    assert state.goodbye() == (SLOW_CONSUMER, "slow consumer", None)
    assert state.phase is CLOSED


def test_an_open_connection_can_be_closed_directly():
    state = CloseState()
    state.closed()
    assert state.phase is CLOSED


def test_the_phases_are_open_closing_closed():
    assert list(Phase) == [OPEN, CLOSING, CLOSED]
