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
