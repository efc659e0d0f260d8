"""The state machine of one (integration, check): pure, no I/O, no clock of its own.

A check's *state* changes only after ``failure_threshold`` bad outcomes in a row (fail, error) or
``success_threshold`` good ones (ok, warn), as Gatus does, so one lost packet does not page anyone.
Between two good statuses (ok <-> warn) and two bad ones (fail <-> error) the state follows the
outcome at once: the streak that matters is good versus bad. ``blocked`` (not run because the token
check failed) is taken at once and resets both streaks: it says nothing about the check itself.
After ``new``, ``blocked`` or ``paused`` a good outcome counts at once (nothing was known to be
broken); a bad one still needs its threshold.

A Transition is produced only when the state changes. ``new -> ok`` and ``paused -> ok`` are
marked silent: they tell nobody anything.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime

from mailwarden.outcome import Status

NEW = "new"
PAUSED = "paused"
GOOD = frozenset({Status.OK.value, Status.WARN.value})
BAD = frozenset({Status.FAIL.value, Status.ERROR.value})
STATE_STATUSES = (NEW, PAUSED, "ok", "warn", "fail", "error", "blocked")


@dataclass(frozen=True)
class Thresholds:
    failure_threshold: int = 2
    success_threshold: int = 1

    def __post_init__(self) -> None:
        if self.failure_threshold < 1 or self.success_threshold < 1:
            raise ValueError("thresholds must be at least 1")


@dataclass(frozen=True)
class StateSnapshot:
    status: str = NEW
    failures: int = 0  # bad outcomes in a row
    successes: int = 0  # good outcomes in a row
    since: datetime | None = None  # when `status` was entered


@dataclass(frozen=True)
class TransitionEvent:
    from_status: str
    to_status: str
    at: datetime
    silent: bool


def advance(
    state: StateSnapshot, outcome: Status | str, thresholds: Thresholds, now: datetime
) -> tuple[StateSnapshot, TransitionEvent | None]:
    """Fold one raw outcome into the state; return the new state and the transition, if any."""
    outcome = Status(outcome).value
    if outcome == Status.BLOCKED.value:
        return _move(state, outcome, 0, 0, now)
    if outcome in GOOD:
        successes, failures = state.successes + 1, 0
        if state.status in GOOD or state.status in (NEW, PAUSED, Status.BLOCKED.value):
            return _move(state, outcome, failures, successes, now)
        # currently bad: recover only after the success threshold
        if successes >= thresholds.success_threshold:
            return _move(state, outcome, failures, successes, now)
        return replace(state, failures=failures, successes=successes), None
    # bad outcome
    failures, successes = state.failures + 1, 0
    if state.status in BAD or failures >= thresholds.failure_threshold:
        return _move(state, outcome, failures, successes, now)
    return replace(state, failures=failures, successes=successes), None


def pause(state: StateSnapshot, now: datetime) -> tuple[StateSnapshot, TransitionEvent | None]:
    """An integration paused in the config: its checks stop and their state says so."""
    return _move(state, PAUSED, 0, 0, now)


def _move(
    state: StateSnapshot, to: str, failures: int, successes: int, now: datetime
) -> tuple[StateSnapshot, TransitionEvent | None]:
    if state.status == to:
        return replace(state, failures=failures, successes=successes), None
    silent = to == Status.OK.value and state.status in (NEW, PAUSED)
    new_state = StateSnapshot(status=to, failures=failures, successes=successes, since=now)
    return new_state, TransitionEvent(state.status, to, now, silent)
