"""Queue mode (``execution.mode: queue``): the job queue in PostgreSQL that `mailwarden worker` processes take checks
from. The only module that imports procrastinate (https://procrastinate.readthedocs.io), a PostgreSQL-backed job queue
for asyncio; its tables live in a schema of their own, ``procrastinate`` (Alembic revision 0013).

The leader (``monitor.scheduler``) keeps the schedule and enqueues one job per due (integration, check), batched
(``Enqueuer``): at most one job per pair waits (procrastinate's queueing lock, ``pair_key``), so a check that is
late never piles up a backlog of itself. Workers (``monitor.worker``) run the jobs through the same runner and
result pipeline as local mode. The leader also watches the workers (``Reaper``): a job whose worker stopped sending
heartbeats is run again once; a job whose worker was lost twice is recorded as an ``error`` (``worker_lost``) and not
run again in that interval.

What procrastinate does not do by itself, measured (docs/queue-mode-research.md): it never retries a stalled job (the
Reaper does), a worker exits when PostgreSQL is down while it is idle (``monitor.worker``'s supervisor loop starts it
again), and a retry is not announced by NOTIFY (workers poll every ``POLL_S``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import procrastinate
import psycopg
from procrastinate import exceptions as proc_exc
from procrastinate.jobs import Status as JobStatus

from mailwarden.errors import StorageError
from mailwarden.monitor.db import display_url
from mailwarden.monitor.due import LIVE_WORKERS, QUEUE, TASK, Due, pair_key
from mailwarden.monitor.leader import CLIENT_KEEPALIVE, SERVER_KEEPALIVE, connect_params
from mailwarden.redact import redact

if TYPE_CHECKING:  # pragma: no cover
    from procrastinate.jobs import Job

log = logging.getLogger("mailwarden.queue")

SCHEMA = "procrastinate"  # Alembic revision 0013 creates procrastinate's tables there
POLL_S = 2.0  # how often an idle worker looks for jobs that no NOTIFY announced (a retried job)

# One statement per batch: the due pairs that have no job waiting yet are inserted, the rest are skipped (the partial
# unique index on queueing_lock WHERE status = 'todo'). procrastinate's own triggers still fire (NOTIFY to the workers,
# the job's events): measured 0.03-0.04 ms of PostgreSQL CPU per job in batches of 500 (docs/queue-mode-research.md E7).
_ENQUEUE = """
INSERT INTO procrastinate_jobs (queue_name, task_name, priority, queueing_lock, args, scheduled_at)
SELECT %(queue)s, %(task)s, t.priority, t.pair, t.args::jsonb, t.at
  FROM unnest(%(priorities)s::int[], %(pairs)s::text[], %(args)s::text[], %(ats)s::timestamptz[])
       AS t(priority, pair, args, at)
ON CONFLICT (queueing_lock) WHERE status = 'todo' DO NOTHING
RETURNING queueing_lock
"""

_LIVE_WORKERS = f"SELECT {LIVE_WORKERS} AS live"

# The check jobs no worker took (ready now), taken off the queue at once (a worker fetching meanwhile skips the rows
# this locks, and this skips the ones a worker locked): the leader runs them itself while no worker is live.
_TAKE_WAITING = """
DELETE FROM procrastinate_jobs WHERE id IN (
    SELECT id FROM procrastinate_jobs
     WHERE queue_name = %(queue)s AND status = 'todo' AND (scheduled_at IS NULL OR scheduled_at <= now())
       FOR UPDATE SKIP LOCKED)
RETURNING args
"""


def make_app(url: str, *, application_name: str = "mailwarden-queue", max_size: int = 4) -> procrastinate.App:
    """A procrastinate App on ``url`` (a SQLAlchemy URL of PostgreSQL), its queries in schema ``procrastinate``, with
    the same TCP keepalives as the leadership lease (a dead server is noticed in 10-15 s). Open it with
    ``async with app.open_async():``."""
    kwargs = {**connect_params(url), **CLIENT_KEEPALIVE,
              "options": f"-c search_path={SCHEMA} {SERVER_KEEPALIVE}", "application_name": application_name}
    connector = procrastinate.PsycopgConnector(kwargs=kwargs, min_size=1, max_size=max_size, timeout=10)
    return procrastinate.App(connector=connector)


def queue_error(exc: BaseException, url: str) -> str:
    """What went wrong with the queue's database, for a log line or an error (no password: the URL as displayed)."""
    inner = exc.__cause__ or exc
    text = " ".join(str(inner).split()) or type(inner).__name__
    return redact(f"the job queue in {display_url(url)} is unavailable: {text}")


class Enqueuer:
    """Puts due checks on the queue: one statement for many, skipping the pairs whose job still waits."""

    def __init__(self, app: procrastinate.App, url: str):
        self.app = app
        self.url = url

    async def enqueue(self, due: Sequence[Due]) -> list[str]:
        """The pairs (``pair_key``) that got a new job; the others already had one waiting. Raises StorageError
        when the queue's database cannot be reached."""
        if not due:
            return []
        try:
            rows = await self.app.connector.execute_query_all_async(
                _ENQUEUE, queue=QUEUE, task=TASK, priorities=[d.priority for d in due],
                pairs=[pair_key(d.integration, d.check) for d in due], args=[d.args() for d in due],
                ats=[d.at for d in due])
        except (proc_exc.ConnectorException, OSError, psycopg.Error) as exc:
            raise StorageError(queue_error(exc, self.url)) from None
        return [row["queueing_lock"] for row in rows]

    async def live_workers(self, stalled_after: float) -> int:
        """How many workers sent a heartbeat in the last ``stalled_after`` seconds. Raises StorageError."""
        try:
            row = await self.app.connector.execute_query_one_async(_LIVE_WORKERS, stalled=float(stalled_after))
        except (proc_exc.ConnectorException, OSError, psycopg.Error) as exc:
            raise StorageError(queue_error(exc, self.url)) from None
        return int(row["live"])

    async def take_waiting(self) -> list[tuple[str, str]]:
        """The (integration, check) of every ready job no worker took, removed from the queue. Raises StorageError."""
        try:
            rows = await self.app.connector.execute_query_all_async(_TAKE_WAITING, queue=QUEUE)
        except (proc_exc.ConnectorException, OSError, psycopg.Error) as exc:
            raise StorageError(queue_error(exc, self.url)) from None
        out = []
        for row in rows:
            args = row["args"] if isinstance(row["args"], dict) else {}
            if isinstance(args.get("integration"), str) and isinstance(args.get("check"), str):
                out.append((args["integration"], args["check"]))
        return out

    async def reachable(self) -> bool:
        """Whether the queue's database answers (and has the queue's tables)."""
        try:
            return bool(await self.app.job_manager.check_connection_async())
        except (proc_exc.ConnectorException, OSError, psycopg.Error):
            return False


@dataclass
class Reaped:
    retried: list[int]
    superseded: list[int]  # a newer job of the same pair waits: the stalled one is closed, the newer one runs
    lost: list[Job]  # the worker was lost twice while running it: closed, recorded as worker_lost by the caller


class Reaper:
    """Finds the jobs whose worker stopped sending heartbeats (killed, out of memory, cut off from the database for
    longer than ``stalled_after``) and runs each again once (procrastinate never does by itself). The check's result is
    stored at most once: a job run again after its first run stored the result finds it fresh and skips
    (``monitor.worker``)."""

    def __init__(self, app: procrastinate.App, url: str, stalled_after: float,
                 on_lost: Callable[[Job], Any] | None = None):
        self.app = app
        self.url = url
        self.stalled_after = stalled_after
        self.on_lost = on_lost

    async def run_once(self) -> Reaped:
        manager = self.app.job_manager
        out = Reaped([], [], [])
        try:
            stalled = await manager.get_stalled_jobs(queue=QUEUE, task_name=TASK,
                                                     seconds_since_heartbeat=self.stalled_after)
            for job in stalled:
                assert job.id is not None  # noqa: S101 - a stored job has an id
                if job.attempts >= 1:  # lost twice: a poison job, or a worker that keeps dying
                    await manager.finish_job_by_id_async(job.id, JobStatus.FAILED, delete_job=False)
                    out.lost.append(job)
                    continue
                try:
                    await manager.retry_job(job, retry_at=datetime.now(UTC))
                    out.retried.append(job.id)
                except proc_exc.UniqueViolation:  # the leader enqueued the pair again meanwhile: that job runs
                    await manager.finish_job_by_id_async(job.id, JobStatus.FAILED, delete_job=False)
                    out.superseded.append(job.id)
            await manager.prune_stalled_workers(self.stalled_after)
        except (proc_exc.ConnectorException, OSError, psycopg.Error) as exc:
            raise StorageError(queue_error(exc, self.url)) from None
        for job_id in out.retried:
            log.warning("stalled check job run again: its worker stopped sending heartbeats", extra={"job": job_id})
        for job_id in out.superseded:
            log.warning("stalled check job closed: a newer job of its check waits", extra={"job": job_id})
        for lost in out.lost:
            log.error("check job lost twice with its worker: recorded as worker_lost, not run again",
                      extra={"job": lost.id, "integration": lost.task_kwargs.get("integration"),
                             "check": lost.task_kwargs.get("check")})
        return out

    async def delete_old(self, hours: float) -> None:
        """Delete the check jobs that ended (failed, aborted, cancelled: the successful ones are deleted by the worker
        at once) more than ``hours`` ago, with their events. Raises StorageError."""
        try:
            await self.app.job_manager.delete_old_jobs(
                nb_hours=int(hours), queue=QUEUE, include_failed=True, include_cancelled=True, include_aborted=True)
        except (proc_exc.ConnectorException, OSError, psycopg.Error) as exc:
            raise StorageError(queue_error(exc, self.url)) from None


class Feed:
    """The leader's side of the queue: due checks are gathered for ``window`` seconds and enqueued in one statement.
    While the queue's database cannot be reached the leader runs due checks itself (``run_local``: local mode, with
    its outage buffer), and hands them back to the workers once ``probe`` finds the database again. The same while no
    worker is live (``watch_workers``): a queue nobody takes from would stop every check without a word."""

    def __init__(self, app: procrastinate.App, url: str, run_local: Callable[[str, str], Any],
                 *, window: float = 0.15):
        self.app = app
        self.url = url
        self.enqueuer = Enqueuer(app, url)
        self.run_local = run_local
        self.window = window
        self.healthy = True
        self.enqueued = 0
        self._pending: list[Due] = []
        self._flushing: asyncio.Task | None = None
        self._opened = False
        self._local: set[asyncio.Task] = set()
        self._running_here: set[tuple[str, str]] = set()  # the pairs ``_run_here`` runs now
        self.workerless = False  # no worker live for workerless_after: the leader runs due checks itself
        self._none_live_since: float | None = None

    def forget_workers(self) -> None:
        """This instance stood down or leads again: what it saw of the workers is old (a re-elected leader must wait
        ``workerless_after`` again before it takes the checks, and hand them to live workers at once)."""
        self.workerless = False
        self._none_live_since = None

    def running_here(self, integration: str, check: str) -> bool:
        """Whether the leader runs this check now, taken from the queue: a due run of it now would run it twice."""
        return (integration, check) in self._running_here

    def submit(self, due: Due) -> bool:
        """Queue ``due`` (sent within ``window``); False when the queue is down or no worker is live, and the caller
        runs it itself."""
        if not self.healthy or self.workerless:
            return False
        self._pending.append(due)
        if self._flushing is None or self._flushing.done():
            self._flushing = asyncio.get_running_loop().create_task(self._flush_later())
        return True

    async def _flush_later(self) -> None:
        await asyncio.sleep(self.window)
        # until nothing waits: a check submitted while a batch was being written joined ``_pending`` with no flush
        # of its own (this task was still running), and waited for the next submit, an interval later or never
        # (python -m bench --scale: 4,500 due checks held back until the leader stopped)
        while self._pending:
            await self.flush()

    async def flush(self) -> None:
        batch, self._pending = self._pending, []
        if not batch:
            return
        try:
            await self.open()
            added = await self.enqueuer.enqueue(batch)
        except StorageError as exc:
            self._down(exc.message())
            for due in batch:  # run now, here: the checks go on while the queue is down
                self._run_here(due.integration, due.check)
            return
        self.enqueued += len(added)
        log.debug("checks queued", extra={"queued": len(added), "already_waiting": len(batch) - len(added)})

    def _run_here(self, integration: str, check: str) -> None:
        pair = (integration, check)
        if pair in self._running_here:  # taken again while its first run goes on: once is enough
            return
        task = asyncio.get_running_loop().create_task(self.run_local(integration, check))
        self._local.add(task)
        self._running_here.add(pair)

        def done(t: asyncio.Task) -> None:
            self._local.discard(t)
            self._running_here.discard(pair)

        task.add_done_callback(done)

    async def watch_workers(self, stalled_after: float, after: float, *,
                            clock: Callable[[], float] = time.monotonic) -> None:
        """At each heartbeat of the leader: when no worker has been live (sent a heartbeat within ``stalled_after``)
        for ``after`` seconds (they crashed, were never started, or cannot reach the database), the leader takes the
        jobs waiting in the queue and runs them itself, and so every due check after them, until a worker is live
        again; ``after`` 0: never. Called while the queue is reachable; an error reading it marks the queue down (the
        same local runs)."""
        if after <= 0:
            return
        try:
            await self.open()
            live = await self.enqueuer.live_workers(stalled_after)
        except StorageError as exc:
            self._down(exc.message())
            return
        now = clock()
        if live:
            self._none_live_since = None
            if self.workerless:
                self.workerless = False
                log.info("a worker is live again: due checks go to the workers", extra={"workers": live})
            return
        if self._none_live_since is None:
            self._none_live_since = now
        if not self.workerless and now - self._none_live_since < after:
            return
        # at every heartbeat while no worker is live, not only the first: a batch being written as the leader took
        # over, or a take that failed, leaves jobs that no worker would run
        try:
            waiting = await self.enqueuer.take_waiting()
        except StorageError as exc:
            self._down(exc.message())
            waiting = []
        if not self.workerless:
            self.workerless = True
            log.warning("no mailwarden worker is live: the leader runs due checks itself until one is (start "
                        "`mailwarden worker` processes, or `serve` without --no-worker)",
                        extra={"none_live_s": round(now - self._none_live_since), "taken_from_queue": len(waiting)})
        elif waiting:
            log.info("checks taken from the queue: no worker is live", extra={"taken_from_queue": len(waiting)})
        for integration, check in waiting:
            self._run_here(integration, check)

    async def probe(self) -> bool:
        """While down: whether the queue answers again (then due checks go to the workers again)."""
        if self.healthy:
            return True
        try:
            await self.open()
        except StorageError:
            return False
        if await self.enqueuer.reachable():
            self.healthy = True
            log.info("job queue reachable again: workers run the checks", extra={})
        return self.healthy

    def _down(self, why: str) -> None:
        if self.healthy:
            log.warning("job queue unavailable: the leader runs due checks itself until it returns",
                        extra={"error": why})
        self.healthy = False

    async def open(self) -> None:
        """Open the queue's connections, once (raises StorageError); the reaper needs them before any enqueue."""
        if self._opened:
            return
        try:
            await self.app.open_async()
        except (proc_exc.ConnectorException, OSError, psycopg.Error) as exc:  # PoolTimeout: the pool did not open
            with contextlib.suppress(Exception):  # a pool that failed to open stays closed: drop it, try anew later
                await self.app.close_async()
            raise StorageError(queue_error(exc, self.url)) from None
        self._opened = True

    async def close(self) -> None:
        if self._flushing is not None and not self._flushing.done():
            self._flushing.cancel()
        if self._opened:
            with contextlib.suppress(Exception):
                await self.app.close_async()
            self._opened = False
