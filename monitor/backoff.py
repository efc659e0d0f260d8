"""Back-off per target: where Microsoft asked mailwarden to wait, and until when.

A server's wait (the token endpoint's Retry-After, Graph's Retry-After, IMAP's "Suggested Backoff Time", EWS's
BackOffMilliseconds) is about a target (an app at the token endpoint, an app and mailbox in Graph, a mailbox in a
mail protocol; ``checks.base.targets``), not about the one check that heard it: every check on that target waits.
The runner keeps it; the scheduler's per-check wait (``CheckState.not_before``) carries it over a restart. Queue
mode shares the same state through the database (see the README's Production section).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import datetime


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
