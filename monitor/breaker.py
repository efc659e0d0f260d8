"""A circuit breaker per (host, port, tenant): one hung server must not cost a full timeout per integration.

It opens only after two *independent* timeouts (two different checks, within a window) on the same key, so one
hung socket on outlook.office365.com, which serves every tenant, fails nothing but its own check. While open,
checks on the key end at once with ``timeout`` and say why; after ``probe_after_s`` one check goes through as a
probe: a success closes the breaker, another timeout keeps it open.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import datetime, timedelta


@dataclass
class _Key:
    timeouts: dict[str, datetime] = field(default_factory=dict)  # check id -> when it timed out
    open_until: datetime | None = None
    probing: str | None = None  # the check let through as a probe


@dataclass(frozen=True)
class Open:
    until: datetime
    checks: tuple[str, ...]  # the checks whose timeouts opened it


class Breaker:
    def __init__(self, window_s: float = 600.0, probe_after_s: float = 60.0):
        self.window = timedelta(seconds=window_s)
        self.probe_after = timedelta(seconds=probe_after_s)
        self._keys: dict[tuple[str, int, str], _Key] = {}
        self._lock = threading.Lock()

    def allow(self, key: tuple[str, int, str], check: str, now: datetime) -> Open | None:
        """None: run the check. Otherwise the breaker is open and the check must not be tried."""
        with self._lock:
            state = self._keys.get(key)
            if state is None or state.open_until is None:
                return None
            if now >= state.open_until and state.probing in (None, check):
                state.probing = check  # half-open: this one check tries the server
                return None
            return Open(state.open_until, tuple(sorted(state.timeouts)))

    def record(self, key: tuple[str, int, str], check: str, timed_out: bool, now: datetime) -> None:
        with self._lock:
            state = self._keys.setdefault(key, _Key())
            if not timed_out:
                self._keys.pop(key, None)  # an answer: the server is back
                return
            state.timeouts = {c: t for c, t in state.timeouts.items() if now - t < self.window}
            state.timeouts[check] = now
            if state.probing == check or len(state.timeouts) >= 2:
                state.open_until = now + self.probe_after
                state.probing = None
