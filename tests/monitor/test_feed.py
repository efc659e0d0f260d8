"""The leader's side of the queue (monitor.queue.Feed) batches due checks: every check submitted is enqueued, also one
submitted while a batch is being written (python -m bench --scale, 3,000 integrations: about 4,500 due checks were held
back until the leader stopped, because nothing flushed what arrived during a write)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from mailwarden.monitor.due import Due
from mailwarden.monitor.queue import Feed


class OpenApp:
    """The queue's app as the Feed uses it: opened once."""

    async def open_async(self):
        return self

    async def close_async(self):
        return None


def test_a_check_submitted_while_a_batch_is_written_is_enqueued():
    written: list[list[str]] = []

    async def slow_enqueue(due):
        await asyncio.sleep(0.3)  # a batch written to a busy database
        written.append([d.integration for d in due])
        return [f"{d.integration}::{d.check}" for d in due]

    async def run_local(name, kind):
        raise AssertionError("the queue is up: nothing runs locally")

    async def go():
        feed = Feed(OpenApp(), "postgresql+psycopg://u@h/db", run_local, window=0.05)  # type: ignore[arg-type]
        feed.enqueuer.enqueue = slow_enqueue  # type: ignore[method-assign]
        now = datetime.now(UTC)
        feed.submit(Due("a", "token", now))
        await asyncio.sleep(0.15)  # the first batch is being written
        feed.submit(Due("b", "token", now))
        feed.submit(Due("c", "token", now))
        await asyncio.sleep(1.0)
        return feed.enqueued

    enqueued = asyncio.run(go())
    assert written == [["a"], ["b", "c"]]
    assert enqueued == 3


class Workers:
    """The queue's worker count and waiting jobs, as ``Feed.watch_workers`` reads them."""

    def __init__(self, waiting):
        self.live = 0
        self.waiting = list(waiting)
        self.taken = 0

    async def live_workers(self, stalled_after):
        return self.live

    async def take_waiting(self):
        self.taken += 1
        out, self.waiting = self.waiting, []
        return out


def test_no_live_worker_for_stalled_after_the_leader_runs_the_checks_itself(caplog):
    """`serve --no-worker` with every worker crashed (or never started): the queue fills and no check runs, silently.
    After workerless_after seconds without a live worker the leader takes the waiting jobs and runs them, then every
    due check, until a worker is live again; a short gap (a worker restarting) changes nothing; 0 turns it off."""
    ran: list[tuple[str, str]] = []
    enqueued: list[list[str]] = []

    async def run_local(name, kind):
        ran.append((name, kind))

    async def enqueue(due):
        enqueued.append([d.integration for d in due])
        return [f"{d.integration}::{d.check}" for d in due]

    async def go():
        t = [1000.0]
        feed = Feed(OpenApp(), "postgresql+psycopg://u@h/db", run_local, window=0.01)  # type: ignore[arg-type]
        workers = Workers([("a", "token"), ("b", "imap")])
        feed.enqueuer.live_workers = workers.live_workers  # type: ignore[method-assign]
        feed.enqueuer.take_waiting = workers.take_waiting  # type: ignore[method-assign]
        feed.enqueuer.enqueue = enqueue  # type: ignore[method-assign]
        clock = lambda: t[0]  # noqa: E731
        steps = []
        await feed.watch_workers(20, 20, clock=clock)  # none live: counted from here
        t[0] += 19
        await feed.watch_workers(20, 20, clock=clock)
        steps.append((feed.workerless, feed.submit(Due("c", "imap", datetime.now(UTC)))))  # still queued
        await asyncio.sleep(0.05)
        t[0] += 1
        await feed.watch_workers(20, 20, clock=clock)  # 20 s without a live worker
        await asyncio.sleep(0.05)
        steps.append((feed.workerless, feed.submit(Due("d", "imap", datetime.now(UTC)))))  # refused: run it here
        workers.waiting = [("f", "imap")]  # a batch written as the leader took over: taken at the next heartbeat
        await feed.watch_workers(20, 20, clock=clock)
        await asyncio.sleep(0.05)
        workers.live = 1
        await feed.watch_workers(20, 20, clock=clock)
        steps.append((feed.workerless, feed.submit(Due("e", "imap", datetime.now(UTC)))))
        await asyncio.sleep(0.05)
        workers.live = 0  # a worker restarting: counted again from zero
        await feed.watch_workers(20, 20, clock=clock)
        t[0] += 10
        await feed.watch_workers(20, 20, clock=clock)
        steps.append((feed.workerless, None))
        off = Feed(OpenApp(), "postgresql+psycopg://u@h/db", run_local, window=0.01)  # type: ignore[arg-type]
        off.enqueuer.live_workers = workers.live_workers  # type: ignore[method-assign]
        for _ in range(3):
            await off.watch_workers(20, 0, clock=clock)
            t[0] += 100
        steps.append((off.workerless, None))
        return steps, workers.taken

    with caplog.at_level("INFO", logger="mailwarden.queue"):
        steps, taken = asyncio.run(go())
    assert steps == [(False, True), (True, False), (False, True), (False, None), (False, None)]
    # the waiting jobs, and the one queued as the leader took over; "d" is run by the caller (submit said False)
    assert ran == [("a", "token"), ("b", "imap"), ("f", "imap")]
    assert taken == 2  # at each heartbeat while no worker is live
    assert enqueued == [["c"], ["e"]]
    said = [r.getMessage() for r in caplog.records]
    assert sum(m.startswith("no mailwarden worker is live: the leader runs due checks itself") for m in said) == 1
    assert said.count("a worker is live again: due checks go to the workers") == 1


def test_a_check_taken_from_the_queue_is_not_run_again_while_it_runs():
    """The leader runs a taken job; the pair's own due time coming meanwhile must not run it a second time (a second
    canary sent, two results for one interval), and a pair taken twice runs once. Leading again starts the count of
    workerless_after afresh."""
    release = asyncio.Event()
    ran: list[tuple[str, str]] = []

    async def run_local(name, kind):
        ran.append((name, kind))
        await release.wait()

    async def go():
        t = [0.0]
        feed = Feed(OpenApp(), "postgresql+psycopg://u@h/db", run_local, window=0.01)  # type: ignore[arg-type]
        workers = Workers([("a", "imap")])
        feed.enqueuer.live_workers = workers.live_workers  # type: ignore[method-assign]
        feed.enqueuer.take_waiting = workers.take_waiting  # type: ignore[method-assign]
        await feed.watch_workers(20, 5, clock=lambda: t[0])
        t[0] = 10
        await feed.watch_workers(20, 5, clock=lambda: t[0])
        await asyncio.sleep(0.01)
        running = feed.running_here("a", "imap"), feed.running_here("b", "imap")
        workers.waiting = [("a", "imap")]  # queued again (a takeover's batch) while it runs
        await feed.watch_workers(20, 5, clock=lambda: t[0])
        release.set()
        await asyncio.sleep(0.01)
        after = feed.running_here("a", "imap")
        feed.forget_workers()
        await feed.watch_workers(20, 5, clock=lambda: t[0])
        return running, after, feed.workerless

    running, after, workerless_after_lead = asyncio.run(go())
    assert running == (True, False)
    assert ran == [("a", "imap")]
    assert after is False
    assert workerless_after_lead is False  # counted afresh from the first zero reading


def test_the_scheduler_does_not_run_a_check_the_leader_runs_from_the_queue(monkeypatch):
    """monitor.scheduler.Monitor._run: a pair the Feed runs now is neither queued nor run locally again."""
    from types import SimpleNamespace

    from mailwarden.monitor.scheduler import Monitor

    class Busy:
        submitted: list = []

        def running_here(self, name, kind):
            return (name, kind) == ("a", "imap")

        def submit(self, due):
            self.submitted.append((due.integration, due.check))
            return True

    local: list = []
    monitor = SimpleNamespace(feed=Busy(), _priority=lambda n, k: 0,
                              line=SimpleNamespace(add=lambda n, k: local.append((n, k)) or True))
    monitor._handed_over = lambda n, k: Monitor._handed_over(monitor, n, k)  # type: ignore[arg-type]

    async def run_local(name, kind):
        local.append((name, kind))

    monitor._run_local = run_local
    asyncio.run(Monitor._due(monitor, "a", "imap"))  # type: ignore[arg-type]  # the scheduled job
    asyncio.run(Monitor._due(monitor, "b", "imap"))  # type: ignore[arg-type]
    assert Busy.submitted == [("b", "imap")] and local == []
