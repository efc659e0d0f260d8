"""Local mode's due checks wait in line for a slot as entries, not as tasks (monitor.line.DueLine). When a whole
cycle fell due at once, about 3,000 checks waited as tasks inside the runner, 100,000 objects that every full garbage
collection walked: pauses of 55-94 ms (bench/RESULTS.md). What a user relies on: the runner's limits are used as
before (each tenant's slots, the total, tenants in turn however the checks arrive), no check runs twice at once, a
stop or a stand-down starts none of those still waiting, and a run that fails does not stop the line."""

from __future__ import annotations

import asyncio
from collections import Counter

from mailwarden.monitor.line import DueLine


class Checks:
    """Runs that take ``seconds`` and record how many ran at once, in all and per tenant."""

    def __init__(self, seconds: float = 0.02, fail: set[str] | None = None):
        self.seconds, self.fail = seconds, fail or set()
        self.now: Counter[str] = Counter()
        self.most: Counter[str] = Counter()
        self.most_total = 0
        self.order: list[tuple[str, str]] = []
        self.tasks_seen = 0

    @staticmethod
    def tenant_of(name: str) -> str:
        return name.split("-")[0]

    async def run(self, name: str, kind: str) -> None:
        tenant = self.tenant_of(name)
        self.order.append((name, kind))
        self.now[tenant] += 1
        self.most[tenant] = max(self.most[tenant], self.now[tenant])
        self.most_total = max(self.most_total, sum(self.now.values()))
        self.tasks_seen = max(self.tasks_seen, len(asyncio.all_tasks()))
        try:
            await asyncio.sleep(self.seconds)
            if name in self.fail:
                raise RuntimeError("a check run that failed")
        finally:
            self.now[tenant] -= 1


async def settle(line: DueLine) -> None:
    while len(line) or line.running:
        await asyncio.sleep(0.005)


async def test_a_burst_runs_within_the_limits_with_a_task_only_per_running_check():
    checks = Checks()
    line = DueLine(checks.run, checks.tenant_of, lambda: (2, 5))
    # a cycle due at once, grouped by tenant as the jobs were made: 3 tenants x 40 checks
    for tenant in ("a", "b", "c"):
        for i in range(40):
            assert line.add(f"{tenant}-{i}", "imap")
    assert len(line) == 120 - line.running and line.running == 5
    await settle(line)
    assert len(checks.order) == 120
    assert checks.most_total == 5 and max(checks.most.values()) == 2
    # the tenants took turns: all three ran among the first five started, not tenant a's alone
    assert {checks.tenant_of(n) for n, _ in checks.order[:5]} == {"a", "b", "c"}
    # the test's own task and the five running: no task for a waiting check
    assert checks.tasks_seen <= 1 + 5


async def test_a_check_waiting_or_running_is_not_added_twice():
    checks = Checks(seconds=0.05)
    line = DueLine(checks.run, checks.tenant_of, lambda: (1, 1))
    assert line.add("a-0", "imap") and line.add("a-1", "imap")
    assert not line.add("a-0", "imap")  # running
    assert not line.add("a-1", "imap")  # waiting
    await settle(line)
    assert checks.order == [("a-0", "imap"), ("a-1", "imap")]
    assert line.add("a-0", "imap")  # done: due again
    await settle(line)


async def test_a_stop_starts_none_of_those_waiting_and_lets_the_running_end():
    checks = Checks(seconds=0.05)
    line = DueLine(checks.run, checks.tenant_of, lambda: (5, 2))
    for i in range(10):
        line.add(f"a-{i}", "pop")
    running = line.tasks()
    assert line.clear() == 8 and len(line) == 0
    await asyncio.wait(running)
    await asyncio.sleep(0.01)
    assert len(checks.order) == 2 and line.running == 0
    assert line.add("a-5", "pop")  # a dropped check can be due again (after a restart, a takeover)
    await settle(line)


async def test_limits_are_read_as_they_are_now_and_a_failed_run_does_not_stop_the_line(caplog):
    checks = Checks(fail={"a-0"})
    limits = [1, 1]
    line = DueLine(checks.run, checks.tenant_of, lambda: tuple(limits))
    for i in range(6):
        line.add(f"a-{i}", "smtp")
    limits[:] = [3, 3]  # a reload raised them: the next starts use them
    await settle(line)
    assert len(checks.order) == 6 and checks.most["a"] == 3
    assert "check run failed" in caplog.text


async def test_an_integration_removed_from_the_config_still_gets_its_run_to_say_so():
    ran: list[str] = []

    async def run(name: str, kind: str) -> None:
        ran.append(name)

    def tenant_of(name: str) -> str:
        raise KeyError(name)

    line = DueLine(run, tenant_of, lambda: (1, 1))
    assert line.add("gone", "imap")
    await settle(line)
    assert ran == ["gone"]
