"""Full cycles through the real scheduler, runner and store, and what each one cost."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from bench.instrument import IdpCounter
from bench.sandbox_proc import SandboxProcess
from mailwarden.monitor import freeze_heap
from mailwarden.monitor.runner import TOKEN, RunResult
from mailwarden.monitor.runtime import Runtime
from mailwarden.monitor.scheduler import Monitor

MAILBOX_KINDS = ("pop", "imap", "smtp", "graph_mail", "ews")
OFFSET_S = 3.0  # the scheduler starts mailbox and expiry checks this long after the token checks (jitter 0)


@dataclass
class Measured:
    """What one stretch of work cost: wall, mailwarden CPU, sandbox CPU, identity-provider requests."""

    wall_s: float = 0.0
    cpu_s: float = 0.0
    sandbox_cpu_s: float = 0.0
    checks: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    idp_token: dict[str, int] = field(default_factory=dict)  # token-endpoint POSTs by check kind (in-process)
    idp_discovery: dict[str, int] = field(default_factory=dict)
    sandbox_token_total: int = 0
    sandbox_requests: int = 0
    sandbox_mail_replies: int = 0
    problems: list[str] = field(default_factory=list)

    def as_json(self) -> dict:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in self.__dict__.items()}


def cpu_ms(m: Measured) -> float:
    """A phase's mailwarden CPU per check, in ms."""
    return m.cpu_s * 1000 / max(m.checks, 1)


def median_cpu_ms(rounds: list[Measured]) -> float:
    """The median of the rounds' CPU per check (the lower middle of an even count: never a figure no round had)."""
    ordered = sorted(cpu_ms(m) for m in rounds)
    return ordered[(len(ordered) - 1) // 2]


class Tally:
    """What results said, without keeping them: a kept RunResult holds its outcome, transcript and stored rows, and a
    cycle's 3,400 of them were most of the heap a full garbage collection walked during the cycles (about 60,000
    objects not frozen), which `serve` never holds."""

    def __init__(self, results: list[RunResult] | None = None):
        self.count = 0
        self.statuses: Counter[str] = Counter()
        self.problems: list[str] = []
        for r in results or ():
            self.add(r)

    def add(self, r: RunResult) -> None:
        self.count += 1
        status = r.outcome.status.value
        self.statuses[status] += 1
        if status != "ok" and len(self.problems) < 5:
            self.problems.append(f"{r.integration}/{r.check}: {status} {r.outcome.code}: {r.outcome.summary}")


class Meter:
    def __init__(self, sandbox: SandboxProcess, counter: IdpCounter):
        self.sandbox, self.counter = sandbox, counter

    def begin(self) -> tuple[float, float, float]:
        self.sandbox.control.reset_stats()
        self.counter.reset()
        return time.perf_counter(), time.process_time(), self.sandbox.cpu_s()

    def end(self, started: tuple[float, float, float], results: list[RunResult] | Tally,
            wall_end: float | None = None) -> Measured:
        wall = (wall_end or time.perf_counter()) - started[0]
        cpu = time.process_time() - started[1]
        sb_cpu = self.sandbox.cpu_s() - started[2]
        stats = self.sandbox.stats()
        tally = results if isinstance(results, Tally) else Tally(results)
        statuses, problems = tally.statuses, list(tally.problems)
        mail = stats.get("mail", {})
        replies = sum(p.get("connections", 0) + sum(sum(c.values()) for c in p.get("commands", {}).values())
                      for name, p in mail.items() if name in ("imap", "pop", "smtp"))
        return Measured(wall, cpu, sb_cpu, tally.count, dict(statuses), self.counter.by("token"),
                        self.counter.by("discovery"), stats.get("token_total", 0),
                        sum(stats.get("requests", {}).values()), replies, problems)


class CycleDriver:
    """Starts cycles of the real scheduler (every job due at once, token checks first) and waits for them."""

    def __init__(self, runtime: Runtime, meter: Meter):
        self.runtime, self.meter = runtime, meter
        self.monitor = Monitor(runtime, on_result=self._on_result)
        self.jobs = sum(len(i.checks) for i in runtime.config.integrations if not i.paused)
        self._results = Tally()
        self._last = 0.0
        self._done: asyncio.Event | None = None

    def _on_result(self, result: RunResult) -> None:
        self._results.add(result)
        self._last = time.perf_counter()
        if self._results.count >= self.jobs and self._done is not None:
            self._done.set()

    async def cycle(self, first: bool, timeout_s: float = 900) -> Measured:
        self._results = Tally()
        self._done = asyncio.Event()
        if first:
            self.monitor.start()  # schedules every job: token checks now, the rest OFFSET_S later
            freeze_heap()  # as `mailwarden serve` does once its scheduler has started
        started = self.meter.begin()
        if not first:
            now = datetime.now(UTC)
            for job in self.monitor.scheduler.get_jobs():
                kind = job.id.rsplit("::", 1)[-1]
                job.modify(next_run_time=now + timedelta(seconds=0 if kind == TOKEN else OFFSET_S))
            self.monitor.scheduler.wakeup()
        try:
            await asyncio.wait_for(self._done.wait(), timeout_s)
        except TimeoutError:
            pass
        measured = self.meter.end(started, self._results, wall_end=self._last or None)
        if self._results.count < self.jobs:
            measured.problems.insert(0, f"only {self._results.count} of {self.jobs} checks finished in {timeout_s} s")
        return measured

    def shutdown(self) -> None:
        if self.monitor.scheduler.running:
            self.monitor.scheduler.shutdown(wait=False)
