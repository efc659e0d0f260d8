"""Back-off per target: where Microsoft asked mailwarden to wait, and until when.

A server's wait (the token endpoint's Retry-After, Graph's Retry-After, IMAP's "Suggested Backoff Time", EWS's
BackOffMilliseconds) is about a target (an app at the token endpoint, an app and mailbox in Graph, a mailbox in a
mail protocol; ``checks.base.targets``), not about the one check that heard it: every check on that target waits.
The runner keeps it; the scheduler's per-check wait (``CheckState.not_before``) carries it over a restart. Queue
mode shares the waits through the database: ``SharedBackoff`` writes each one to the backoff_waits table
(``store.backoff``) and reads the waits of a check's targets before it runs, so a wait one worker heard holds on
every worker.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from mailwarden.errors import StorageError
from mailwarden.redact import redact

if TYPE_CHECKING:  # pragma: no cover
    from mailwarden.monitor.db import Store

log = logging.getLogger("mailwarden.runner")


@dataclass(frozen=True)
class Wait:
    until: datetime
    status: str  # the status and code of the reply that asked for the wait, repeated by a check not run
    code: str | None
    why: str  # e.g. "IMAP answered 'Request is throttled' for support@contoso.com"


class Backoff:
    """Thread-safe: checks record waits from worker threads and the event loop reads them."""

    def __init__(self) -> None:
        self._waits: dict[str, Wait] = {}
        self._lock = threading.Lock()

    def defer(self, target: str, wait: Wait) -> None:
        """Wait on ``target`` until ``wait.until``; an earlier end never shortens a longer wait already set."""
        with self._lock:
            held = self._waits.get(target)
            if held is None or held.until < wait.until:
                self._waits[target] = wait

    def waiting(self, targets: list[str], now: datetime) -> tuple[str, Wait] | None:
        """The first of ``targets`` still in its wait at ``now``, with it; expired waits are dropped."""
        with self._lock:
            for target in targets:
                held = self._waits.get(target)
                if held is None:
                    continue
                if held.until <= now:
                    del self._waits[target]
                    continue
                return target, held
        return None

    def clear(self) -> None:
        with self._lock:
            self._waits.clear()

    async def sync(self, targets: list[str], now: datetime) -> None:
        """Bring in the waits others heard on ``targets`` before ``waiting`` is asked: in memory, there are none."""

    async def publish(self, target: str, wait: Wait) -> None:
        """Record a wait heard on ``target`` (``defer``), for every runner that shares this back-off."""
        self.defer(target, wait)


class SharedBackoff(Backoff):
    """Queue mode: every worker sees every wait. The waits live in memory as in ``Backoff``, and in the backoff_waits
    table (``store.backoff``): ``publish`` writes through, ``sync`` reads the stored waits of the targets not read
    within ``refresh_s`` (a store read per target at most every ``refresh_s``, off the event loop). A database that
    cannot be read or written is warned of once (until it answers again) and the check goes on: the wait heard here
    still holds here, the other workers learn of it late or not at all."""

    def __init__(self, store: Store, refresh_s: float = 2.0) -> None:
        super().__init__()
        self.store = store
        self.refresh_s = refresh_s
        self._read: dict[str, float] = {}  # target -> monotonic time of its last read (or failed read)
        self._failing = False

    async def sync(self, targets: list[str], now: datetime) -> None:
        at = time.monotonic()
        stale = [t for t in dict.fromkeys(targets) if at - self._read.get(t, float("-inf")) >= self.refresh_s]
        if not stale:
            return
        for target in stale:  # a failed read too: a database that is down is asked again after refresh_s, not per check
            self._read[target] = at
        try:
            waits = await asyncio.to_thread(self.store.backoff.waits, stale, now)
        except StorageError as exc:
            self._failed("shared back-off: cannot read the waits other workers heard", exc)
            return
        self._failing = False
        for target, wait in waits.items():
            self.defer(target, wait)

    async def publish(self, target: str, wait: Wait) -> None:
        self.defer(target, wait)
        try:
            await asyncio.to_thread(self.store.backoff.defer, target, wait)
        except StorageError as exc:
            self._failed("shared back-off: cannot share a wait with the other workers", exc, target)
            return
        self._failing = False

    def _failed(self, message: str, exc: StorageError, target: str | None = None) -> None:
        """Warn once until the database answers again: a warning per check would flood the log of an outage."""
        if self._failing:
            return
        self._failing = True
        log.warning(message + "; the waits heard here still hold", extra={"target": target,
                                                                       "error": redact(exc.message())})
