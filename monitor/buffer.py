"""Results kept in memory while they cannot be written: the database is unreachable, or this instance has lost
its leadership lease and must re-take it before writing (``monitor.leader``).

Checks go on during a storage outage; their results wait here in the order they were taken and are folded
through ``store.checks.record_result`` in that same order when the database returns, before any notification is
sent, so the check states and transitions come out exactly as if nothing had happened. One
"storage unavailable" warning per outage, one "storage available again" line at its end.

The buffer is bounded (``CAPACITY`` results, about 2 kB each). When full, the oldest ``ok``/``warn``
result is dropped first (a success in a long run of successes changes nothing but a counter), then the
oldest of any status; each outage's drops are counted in the recovery line. Buffered results live in this
process only: a crash during an outage loses them.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from typing import TYPE_CHECKING, Any

from mailwarden.checks.base import Status
from mailwarden.errors import StorageError
from mailwarden.monitor.db import Pending

if TYPE_CHECKING:  # pragma: no cover
    from mailwarden.monitor.models import Transition

log = logging.getLogger("mailwarden.storage")
CAPACITY = 10_000
GOOD = (Status.OK.value, Status.WARN.value)


class ResultBuffer:
    def __init__(self, capacity: int = CAPACITY):
        self.capacity = capacity
        self._items: deque[Pending] = deque()
        self._lock = threading.Lock()  # add() runs on the loop, flush() in a worker thread
        self._flushing = threading.Lock()
        self.down_since: float | None = None  # monotonic start of the current outage
        self.dropped = 0
        self.buffered = 0  # results buffered during the current outage

    def __len__(self) -> int:
        return len(self._items)

    @property
    def outage(self) -> bool:
        return self.down_since is not None

    def unavailable(self, reason: str) -> None:
        """The database cannot be written: warn once for this outage."""
        with self._lock:
            if self.down_since is not None:
                return
            self.down_since = time.monotonic()
            self.dropped = self.buffered = 0
        log.warning("storage unavailable", extra={
            "error": reason, "action": "checks go on; results are kept in memory (up to "
                                      f"{self.capacity}) and written in order when the database returns"})

    def add(self, item: Pending) -> None:
        with self._lock:
            if len(self._items) >= self.capacity:
                self._drop_one()
            self._items.append(item)
            self.buffered += 1

    def _drop_one(self) -> None:
        for i, p in enumerate(self._items):
            if p.status in GOOD:
                del self._items[i]
                break
        else:
            self._items.popleft()
        self.dropped += 1
        if self.dropped == 1:
            log.warning("result buffer full: dropping the oldest ok results first",
                        extra={"capacity": self.capacity})

    def clear(self, reason: str) -> int:
        """Forget what is buffered (another instance leads now and has written its own results)."""
        with self._lock:
            n = len(self._items)
            self._items.clear()
            self.down_since = None
        if n:
            log.warning("buffered results discarded", extra={"results": n, "reason": reason})
        return n

    def flush(self, store: Any) -> tuple[int, list[Transition]] | None:
        """Write every buffered result in order (blocking; run it in a thread). Returns (written, transitions),
        or None when the database failed again (what is left stays, in order)."""
        written, transitions = 0, []
        with self._flushing:
            if not self._items and self.down_since is not None and not _reachable(store):
                return None
            while True:
                with self._lock:
                    if not self._items:
                        break
                    p = self._items[0]
                try:
                    _row, transition = store.record_result(
                        integration=p.integration, check=p.check, outcome=p.outcome, checked_at=p.checked_at,
                        thresholds=p.thresholds)
                except StorageError as exc:
                    if exc.kind != "refused":
                        self.unavailable(exc.message())
                        return None
                    # the database refuses this one row: written again it would fail every flush after it
                    log.error("result not stored", extra={"integration": p.integration, "check": p.check,
                                                          "error": exc.message()})
                    transition = None
                else:
                    written += 1
                with self._lock:
                    if self._items and self._items[0] is p:
                        self._items.popleft()
                if transition is not None:
                    transitions.append(transition)
            with self._lock:
                since, self.down_since = self.down_since, None
        if since is not None:
            log.info("storage available again", extra={
                "outage_s": round(time.monotonic() - since, 1), "written": written, "buffered": self.buffered,
                "dropped": self.dropped, "transitions": len(transitions)})
        return written, transitions


def _reachable(store: Any) -> bool:
    try:
        with store.engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
    except Exception:  # noqa: BLE001 - any failure means: still down
        return False
    return True
