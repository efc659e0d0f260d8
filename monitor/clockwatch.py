"""Noticing a backward step of the wall clock (an NTP step, a VM restored from a snapshot).

APScheduler keeps each job's next run as a wall-clock time. After the clock steps back by an hour, every job waits
that hour (its next run is an hour "later" than it was), so checks, alert dispatch and the heartbeat all stop,
silently, even once the clock is right again: nothing runs to notice. A forward step needs nothing (the jobs due in
the skipped time run once, coalesced).

``ClockWatch`` compares the wall clock with the monotonic clock every few seconds; when the wall clock went back by
more than ``threshold`` seconds, it moves every job's next run back by the same amount (so each keeps its place in
its interval) and wakes the scheduler, and logs a warning with the size of the step.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import timedelta
from typing import Any

log = logging.getLogger("mailwarden.scheduler")


class ClockWatch:
    def __init__(self, scheduler: Any, *, every: float = 5.0, threshold: float = 30.0):
        # a threshold above ``every``: a wall clock that merely stands still between two samples is no step
        self.scheduler, self.every, self.threshold = scheduler, every, max(threshold, 2 * every)
        self.steps = 0

    async def run(self) -> None:
        wall, mono = time.time(), time.monotonic()
        while True:
            await asyncio.sleep(self.every)
            now_wall, now_mono = time.time(), time.monotonic()
            step = (now_wall - wall) - (now_mono - mono)
            wall, mono = now_wall, now_mono
            if step < -self.threshold:
                self.stepped_back(-step)

    def stepped_back(self, seconds: float) -> None:
        """Move every job's next run ``seconds`` earlier, and wake the scheduler."""
        self.steps += 1
        back = timedelta(seconds=seconds)
        moved = 0
        for job in self.scheduler.get_jobs():
            if job.next_run_time is not None:
                job.modify(next_run_time=job.next_run_time - back)
                moved += 1
        self.scheduler.wakeup()
        log.warning("the wall clock stepped back; every job's next run moved back by the same amount",
                    extra={"seconds": round(seconds, 1), "jobs": moved})
