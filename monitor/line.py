"""Where local mode's due checks wait for a slot: as entries in a line per tenant, not as running tasks.

Every scheduled run used to start a task at once that then waited inside the runner for its tenant's slot and a
global one (``Runner._execute``). When a whole cycle fell due together (a start, a takeover, a bench cycle), about
3,000 checks waited so, each a task holding a chain of six coroutines and about 35 objects the garbage collector
tracks: 100,000 objects that every full collection of those seconds walked, pauses of 55-94 ms on 2 cores against
6-16 ms once they had run (bench/RESULTS.md). Here a waiting check is one entry, and a check is started only when
its tenant and the whole have a free slot, tenants taking turns, as the runner's limits let them run
(``concurrency.per_tenant``, ``concurrency.total``; the runner still enforces them for everything it runs).

A check already waiting or running is not added again (APScheduler's ``max_instances=1`` held that while a job's
task waited; the job now returns as soon as its check is in line).
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict, deque
from collections.abc import Awaitable, Callable

log = logging.getLogger("mailwarden.scheduler")

Key = tuple[str, str]  # (integration, check)


class DueLine:
    def __init__(self, run: Callable[[str, str], Awaitable[None]], tenant_of: Callable[[str], str],
                 limits: Callable[[], tuple[int, int]]):
        """``run(integration, check)`` runs one check; ``tenant_of(integration)`` names its tenant; ``limits()`` gives
        (per tenant, total), read each time (a reload may change them)."""
        self._run, self._tenant_of, self._limits = run, tenant_of, limits
        self._lines: dict[str, deque[Key]] = {}  # per tenant, first in first out
        self._turn: deque[str] = deque()  # the tenants with checks in line, in the order they take turns
        self._held: set[Key] = set()  # in line or running
        self._running: defaultdict[str, int] = defaultdict(int)  # per tenant
        self._tasks: set[asyncio.Task[None]] = set()

    def __len__(self) -> int:
        """Checks in line (not those running)."""
        return sum(len(line) for line in self._lines.values())

    @property
    def running(self) -> int:
        return len(self._tasks)

    def add(self, integration: str, check: str) -> bool:
        """Put a due check in line, and start what may start. False: it is in line or running already."""
        key = (integration, check)
        if key in self._held:
            return False
        try:
            tenant = self._tenant_of(integration)
        except KeyError:  # removed from the config since it was scheduled: its own run says so
            tenant = ""
        self._held.add(key)
        line = self._lines.get(tenant)
        if line is None:
            line = self._lines[tenant] = deque()
            self._turn.append(tenant)
        line.append(key)
        self._start()
        return True

    def _start(self) -> None:
        per_tenant, total = self._limits()
        passed = 0  # tenants in a row that had no free slot
        while self._turn and len(self._tasks) < total and passed < len(self._turn):
            tenant = self._turn.popleft()
            if self._running[tenant] >= per_tenant:
                self._turn.append(tenant)
                passed += 1
                continue
            passed = 0
            line = self._lines[tenant]
            key = line.popleft()
            if line:
                self._turn.append(tenant)
            else:
                del self._lines[tenant]
            self._running[tenant] += 1
            task = asyncio.get_running_loop().create_task(self._one(tenant, key))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)  # also for a task cancelled before it ran (_one's finally)

    async def _one(self, tenant: str, key: Key) -> None:
        try:
            await self._run(*key)
        except Exception:  # noqa: BLE001 - the run logs its own failures; the line must keep going whatever happens
            log.exception("check run failed", extra={"integration": key[0], "check": key[1]})
        finally:
            self._running[tenant] -= 1
            if not self._running[tenant]:
                del self._running[tenant]
            self._held.discard(key)
            task = asyncio.current_task()
            if task is not None:
                self._tasks.discard(task)
            self._start()

    def clear(self) -> int:
        """Drop the checks in line (a stop, standing down as leader): they run when next due. Returns how many."""
        dropped = len(self)
        for line in self._lines.values():
            self._held.difference_update(line)
        self._lines.clear()
        self._turn.clear()
        return dropped

    def tasks(self) -> list[asyncio.Task[None]]:
        """The checks running, as tasks (a stop waits for them)."""
        return [t for t in self._tasks if not t.done()]

    def cancel(self) -> None:
        for task in list(self._tasks):
            task.cancel()
