"""The state machine, exhaustively: every state x every outcome x threshold positions."""

from datetime import UTC, datetime, timedelta

import pytest

from mailwarden.state import (
    BAD,
    GOOD,
    NEW,
    PAUSED,
    STATE_STATUSES,
    StateSnapshot,
    Thresholds,
    advance,
    pause,
)

T0 = datetime(2026, 11, 1, tzinfo=UTC)
OUTCOMES = ("ok", "warn", "fail", "error", "blocked")


def expected(state: StateSnapshot, outcome: str, th: Thresholds) -> str:
    """The rule in words, written independently of the implementation."""
    if outcome == "blocked":
        return "blocked"
    if outcome in GOOD:
        if state.status in BAD:
            return outcome if state.successes + 1 >= th.success_threshold else state.status
        return outcome
    if state.status in BAD:
        return outcome
    return outcome if state.failures + 1 >= th.failure_threshold else state.status


@pytest.mark.parametrize("status", STATE_STATUSES)
@pytest.mark.parametrize("outcome", OUTCOMES)
@pytest.mark.parametrize("failures,successes", [(0, 0), (1, 0), (0, 1), (2, 0), (0, 2)])
@pytest.mark.parametrize("fth,sth", [(1, 1), (2, 1), (3, 2)])
def test_every_state_and_outcome(status, outcome, failures, successes, fth, sth):
    th = Thresholds(fth, sth)
    state = StateSnapshot(status, failures, successes, T0)
    new, transition = advance(state, outcome, th, T0 + timedelta(minutes=5))
    want = expected(state, outcome, th)
    assert new.status == want
    if want == status:
        assert transition is None
        assert new.since == T0
    else:
        assert transition is not None
        assert (transition.from_status, transition.to_status) == (status, want)
        assert new.since == T0 + timedelta(minutes=5)
        assert transition.silent == (want == "ok" and status in (NEW, PAUSED))
    # streak counters: good outcomes reset failures and vice versa; blocked resets both
    if outcome in GOOD:
        assert new.failures == 0
    elif outcome in BAD:
        assert new.successes == 0
    else:
        assert (new.failures, new.successes) == (0, 0)


def run(outcomes, th=Thresholds(2, 1)):
    state, moves = StateSnapshot(), []
    for i, o in enumerate(outcomes):
        state, t = advance(state, o, th, T0 + timedelta(minutes=i))
        if t:
            moves.append((t.from_status, t.to_status, t.silent))
    return state, moves


def test_one_lost_probe_does_not_flip_a_healthy_check():
    state, moves = run(["ok", "fail", "ok", "fail", "ok"])
    assert state.status == "ok"
    assert moves == [("new", "ok", True)]


def test_second_failure_in_a_row_opens_the_failure_then_recovery():
    _, moves = run(["ok", "fail", "fail", "error", "ok"])
    assert moves == [("new", "ok", True), ("ok", "fail", False), ("fail", "error", False),
                     ("error", "ok", False)]


def test_success_threshold_needs_consecutive_successes():
    _, moves = run(["fail", "fail", "ok", "fail", "ok", "ok"], Thresholds(2, 2))
    assert moves == [("new", "fail", False), ("fail", "ok", False)]


def test_warn_and_ok_switch_at_once():
    _, moves = run(["ok", "warn", "ok"])
    assert moves == [("new", "ok", True), ("ok", "warn", False), ("warn", "ok", False)]


def test_pause_then_ok_is_silent():
    state, _ = run(["ok", "fail", "fail"])
    state, t = pause(state, T0)
    assert state.status == PAUSED and t.to_status == PAUSED
    state, t = advance(state, "ok", Thresholds(), T0)
    assert t.silent and state.status == "ok"


def test_thresholds_must_be_positive():
    with pytest.raises(ValueError):
        Thresholds(0, 1)
