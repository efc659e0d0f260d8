"""The schedule: one APScheduler job per (integration, check), jittered, coalesced, one instance at a time. In local
mode a job puts its check in line for a slot (``monitor.line``) rather than waiting as a task.

Reloading the config (SIGHUP) rebuilds the runtime and the job set: new integrations start, changed
ones get their new interval, removed ones stop and are marked removed in the store. A config that
fails to load is logged and the running schedule is kept.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.date import DateTrigger
from apscheduler.triggers.interval import IntervalTrigger

from mailwarden.checks import dependencies
from mailwarden.errors import MailwardenError, StorageError
from mailwarden.monitor import config as config_mod
from mailwarden.monitor import trim_heap
from mailwarden.monitor.buffer import ResultBuffer
from mailwarden.monitor.clockwatch import ClockWatch
from mailwarden.monitor.due import TOKEN_PRIORITY, Due, refresh_planner_stats
from mailwarden.monitor.line import DueLine
from mailwarden.monitor.runner import RunResult
from mailwarden.monitor.runtime import Runtime, open_runtime

if TYPE_CHECKING:  # pragma: no cover - typing only
    from mailwarden.alerts.dispatcher import Dispatcher
    from mailwarden.monitor.leader import Leadership
    from mailwarden.monitor.queue import Feed, Reaped, Reaper

log = logging.getLogger("mailwarden.scheduler")
T = TypeVar("T")


DISPATCH_JOB = "alerts::dispatch"
DISPATCH_EVERY = 15.0  # seconds; also run right after each result
HISTORY_JOB = "history::rollup"  # hourly rollups every minute, pruning of raw results every hour
HISTORY_EVERY = 60.0
SECRETS_JOB = "secrets::cycle"  # expiry reminders, rotation tracking, automated rotation
SECRETS_EVERY = 3600.0
SIGNINS_JOB = "evidence::signins"  # the consuming systems' sign-ins, read from Entra ID's sign-in log
QUEUE_JOB = "queue::watch"  # queue mode: stalled jobs run again, and a queue that was down is probed
HOUSEKEEPING = (DISPATCH_JOB, HISTORY_JOB, SECRETS_JOB, SIGNINS_JOB, QUEUE_JOB)
PRUNE_EVERY = timedelta(hours=1)
AHEAD = 2  # checks started from the line per runner slot (Monitor._limits)


def job_id(integration: str, kind: str) -> str:
    return f"{integration}::{kind}"


def preload() -> None:
    """Before a long-running command freezes its heap (``monitor.freeze_heap``): import what the scheduler's
    housekeeping jobs import at their first run - the secrets cycle (jinja2, the alert messages, apprise, which
    loads its 275 plugin modules), the alert dispatch, the history rollup - so that it is frozen with the rest.
    Imported lazily in the jobs (one-shot commands never pay for them), they were the bulk of the 507 modules a
    first interval imported, walked by each of its full collections (bench/)."""
    import apscheduler.triggers.cron  # noqa: F401 - the import is the point (the rollup's maintenance windows)

    from mailwarden.alerts import windows  # noqa: F401
    from mailwarden.monitor import alerting, reauth_links, secrets, signins  # noqa: F401


class Monitor:
    def __init__(self, runtime: Runtime, config_path: Path | None = None,
                 on_result: Callable[[RunResult], None] | None = None):
        self.runtime = runtime
        self.config_path = config_path
        self.on_result = on_result
        self.scheduler = AsyncIOScheduler(timezone=UTC)
        self._dispatcher: tuple[Runtime, Dispatcher] | None = None
        self._pruned_at: datetime | None = None
        # High availability (monitor.leader): only the leader runs jobs; results wait in the buffer while
        # the database cannot be written (monitor.buffer).
        self.buffer = ResultBuffer()
        self.leadership: Leadership | None = None  # from start()
        self._watch: asyncio.Task | None = None
        self._stopping = False  # set by drain() when jobs still run at its timeout: their cancellation is expected
        self._analyze_refused = False
        self.clockwatch = ClockWatch(self.scheduler)
        self._clock: asyncio.Task | None = None
        # queue mode (execution.mode: queue; monitor.queue): due checks go to the workers; None in local mode
        self.feed: Feed | None = None
        self._reaper: Reaper | None = None
        # local mode's due checks wait here for a slot, as entries rather than tasks (monitor.line)
        self.line = DueLine(self._run_local, self._tenant_of, self._limits)
        self._subscribe(runtime)

    # -- jobs --------------------------------------------------------------------------------
    def wanted_jobs(self) -> dict[str, tuple[str, str, float]]:
        cfg = self.runtime.config
        jobs = {}
        for integ in cfg.integrations:
            if integ.paused:
                continue
            interval = float(cfg.threshold(integ, "interval"))
            for kind in integ.checks:
                jobs[job_id(integ.name, kind)] = (integ.name, kind, interval)
        return jobs

    def sync_jobs(self, *, first: bool = False) -> None:
        wanted = self.wanted_jobs()
        for job in self.scheduler.get_jobs():
            if job.id not in wanted and job.id not in HOUSEKEEPING:
                job.remove()
                log.info("check unscheduled", extra={"job": job.id})
        now = datetime.now(UTC)
        last_run = self._last_runs([(name, kind) for name, kind, _ in wanted.values()]) if first else {}
        cfg = self.runtime.config
        for jid, (name, kind, interval) in wanted.items():
            existing = self.scheduler.get_job(jid)
            trigger = IntervalTrigger(seconds=interval, jitter=min(interval * 0.1, 30.0), timezone=UTC)
            if existing is not None and existing.trigger.interval.total_seconds() == interval:
                continue
            # The checks others depend on (the token check) first, the rest a little later, spread over a few seconds.
            leads = kind in dependencies(cfg.integration(name).checks)
            delay = random.uniform(0, 2) if leads else random.uniform(3, 6)  # noqa: S311
            if not first and existing is not None:
                delay = interval
            elif (last := last_run.get((name, kind))) is not None:
                # after a restart or a takeover: when the check is next due, not at once (once per interval)
                due = (last - now).total_seconds() + interval
                delay = min(max(delay, due), interval + delay)
            self.scheduler.add_job(
                self._due, trigger, args=[name, kind], id=jid, replace_existing=True,
                coalesce=True, max_instances=1, misfire_grace_time=max(int(interval), 1),
                next_run_time=now + timedelta(seconds=delay))
        self._pause_paused()
        self._sync_dispatch(now)
        if self.scheduler.get_job(SECRETS_JOB) is None:
            self.scheduler.add_job(self._secrets, IntervalTrigger(seconds=SECRETS_EVERY, timezone=UTC),
                                   id=SECRETS_JOB, coalesce=True, max_instances=1, misfire_grace_time=600,
                                   next_run_time=now + timedelta(seconds=20))
        if self.scheduler.get_job(HISTORY_JOB) is None:
            self.scheduler.add_job(self._history, IntervalTrigger(seconds=HISTORY_EVERY, timezone=UTC),
                                   id=HISTORY_JOB, coalesce=True, max_instances=1, misfire_grace_time=300,
                                   next_run_time=now + timedelta(seconds=10))
        self._sync_signins(now)
        if self.feed is not None and self.scheduler.get_job(QUEUE_JOB) is None:
            every = float(self.runtime.config.execution.queue.heartbeat)
            self.scheduler.add_job(self._watch_queue, IntervalTrigger(seconds=every, timezone=UTC), id=QUEUE_JOB,
                                   coalesce=True, max_instances=1, misfire_grace_time=60,
                                   next_run_time=now + timedelta(seconds=every))

    async def _watch_queue(self) -> None:
        """Queue mode, every heartbeat: probe a queue that was down; else run the checks here while no worker is
        live (``Feed.watch_workers``), run again the jobs whose worker was lost (``monitor.queue.Reaper``), and record
        those lost twice as ``worker_lost``."""
        feed, reaper = self.feed, self._reaper
        if feed is None or reaper is None:
            return
        if not feed.healthy:
            await feed.probe()
            return

        async def reap() -> Reaped:
            await feed.open()  # the queue's pool opens with the first enqueue, which may not have happened yet
            return await reaper.run_once()

        settings = self.runtime.config.execution.queue
        await self._guarded("live worker count", functools.partial(
            feed.watch_workers, float(settings.stalled_after), float(settings.workerless_after)))
        reaped = await self._guarded("stalled job check", reap)
        for job in reaped.lost if reaped is not None else ():
            args = job.task_kwargs
            await self._guarded("worker_lost record", functools.partial(
                self._lost, args.get("integration"), args.get("check"), args.get("due_at")))
        await self._guarded("queue statistics", self._refresh_planner_stats)

    async def _refresh_planner_stats(self) -> None:
        """The jobs table's planner statistics, refreshed when a burst of due checks made them stale
        (``monitor.due.refresh_planner_stats``). A failure is a warning, not a database outage: the results go on
        being stored, and the fetches are only slower."""
        from sqlalchemy.exc import SQLAlchemyError

        from mailwarden.redact import redact

        try:
            analyzed = await asyncio.to_thread(refresh_planner_stats, self.runtime.store.engine)
        except SQLAlchemyError as exc:
            log.warning("queue statistics not refreshed", extra={
                "error": redact(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)})
            return
        if analyzed is None:
            return
        before, rows, after = analyzed
        if after != before:
            log.info("queue statistics refreshed", extra={"rows_believed": before, "rows": rows})
        elif not self._analyze_refused:
            self._analyze_refused = True  # said once: it would be tried, and refused, at every heartbeat
            log.warning("queue statistics not refreshed: ANALYZE changed nothing (the database user must own "
                        "procrastinate.procrastinate_jobs); workers fetch jobs slowly while the queue is long",
                        extra={"rows_believed": before, "rows": rows})

    async def _lost(self, name: object, kind: object, due_at: object) -> None:
        """A check whose worker was lost twice: recorded as error/worker_lost, unless a result for its due time is
        stored (the second run stored it before its worker died)."""
        from mailwarden.checks.base import Outcome, Status

        runtime = self.runtime
        try:
            integ = runtime.config.integration(str(name))
        except KeyError:
            return
        if kind not in integ.checks:
            return
        state = await asyncio.to_thread(runtime.store.checks.get_state, integ.name, str(kind))
        if state is not None and due_at and state.covers(datetime.fromisoformat(str(due_at))):
            return
        outcome = Outcome(Status.ERROR, "worker_lost", f"the {kind} check's worker stopped twice while running it "
                          "(killed, out of memory, or cut off from mailwarden's database); it is not run again "
                          "until its next interval")
        await runtime.runner.record(integ, str(kind), outcome)

    def _sync_signins(self, now: datetime) -> None:
        """The sign-in poll runs every ``evidence.signins.poll_every`` while a tenant's log is read."""
        from mailwarden.monitor.signins import targets_of

        job = self.scheduler.get_job(SIGNINS_JOB)
        every = float(self.runtime.config.evidence.signins.poll_every)
        if not targets_of(self.runtime.config):
            if job is not None:
                job.remove()
            return
        if job is not None and job.trigger.interval.total_seconds() == every:
            return
        self.scheduler.add_job(self._signins, IntervalTrigger(seconds=every, timezone=UTC), id=SIGNINS_JOB,
                               replace_existing=True, coalesce=True, max_instances=1,
                               misfire_grace_time=max(int(every), 60), next_run_time=now + timedelta(seconds=15))

    async def _guarded(self, what: str, work: Callable[[], Awaitable[T]]) -> T | None:
        """One housekeeping step: a database outage goes to the buffer's one warning, anything else is logged with
        its traceback; None then, and the scheduler goes on whatever happens."""
        try:
            return await work()
        except StorageError as exc:
            self.buffer.unavailable(exc.message())
        except Exception:  # noqa: BLE001 - the scheduler must keep going whatever happens
            log.exception(f"{what} failed")
        except asyncio.CancelledError:
            if not self._stopping:
                raise
            # the stop cancels what did not end within drain()'s timeout: said once, without a traceback
            log.info(f"{what} cut short by the stop; it runs again after the next start")
        return None

    async def _signins(self) -> None:
        """One poll of the sign-in logs; its database writes run in worker threads (monitor.signins)."""
        signins = self.runtime.signins
        if signins is None or not await self._ready():
            return
        report = await self._guarded("sign-in poll", signins.poll)
        if report is None:
            return
        log.info("sign-in logs read", extra={"requests": report.requests, "read": report.read,
                                             "stored": report.stored})

    def _last_runs(self, scheduled: Iterable[tuple[str, str]]) -> dict[tuple[str, str], datetime]:
        """When each check last ran, as stored; the runner learns each scheduled check's latest status and
        Retry-After from the same read."""
        try:
            latest = self.runtime.store.checks.latest()
        except StorageError as exc:  # the database is down at start: every check starts at once, as on day one
            log.warning("last runs unreadable; checks start at once", extra={"error": exc.message()})
            return {}
        self.runtime.runner.remember_latest(latest, scheduled)
        return {key: run.checked_at for key, run in latest.items() if run.checked_at is not None}

    async def _history(self) -> None:
        """Roll raw results up into hours (what the dashboard reads); prune beyond the retention hourly."""
        store, retention = self.runtime.store, self.runtime.config.web.retention
        now = datetime.now(UTC)
        await asyncio.to_thread(trim_heap)  # the minute's freed memory back to the system (monitor/__init__)
        if not await self._ready():
            return

        async def rollup() -> None:
            await asyncio.to_thread(store.history.rollup_history, now,
                                    maintenance=self.runtime.config.alerts.maintenance)
            if self._pruned_at is None or now - self._pruned_at >= PRUNE_EVERY:
                removed = await asyncio.to_thread(store.history.prune_history, now, **retention.model_dump())
                removed["backoff_waits"] = await asyncio.to_thread(store.backoff.prune, now)  # the waits now over
                if self._reaper is not None:  # queue mode: jobs that failed or were aborted, kept 7 days to look at
                    await self._reaper.delete_old(hours=7 * 24)
                self._pruned_at = now
                log.info("history pruned", extra=removed)

        await self._guarded("history rollup", rollup)

    async def _secrets(self) -> None:
        from mailwarden.monitor.secrets import SecretsCycle

        rt = self.runtime
        if not await self._ready():
            return
        report = await self._guarded("secrets cycle", SecretsCycle.of(rt).run)
        if report is not None and (report.reminders or report.steps):
            self._dispatch_soon()

    def _sync_dispatch(self, now: datetime) -> None:
        job = self.scheduler.get_job(DISPATCH_JOB)
        if not self.runtime.config.alerts.active():
            if job is not None:
                job.remove()
            return
        if job is None:
            self.scheduler.add_job(self._dispatch, IntervalTrigger(seconds=DISPATCH_EVERY, timezone=UTC),
                                   id=DISPATCH_JOB, coalesce=True, max_instances=1, misfire_grace_time=60,
                                   next_run_time=now)

    async def _dispatch(self) -> None:
        from mailwarden.monitor.alerting import make_dispatcher
        from mailwarden.monitor.reauth_links import for_runtime

        runtime = self.runtime
        if self._dispatcher is None or self._dispatcher[0] is not runtime:
            dispatcher = make_dispatcher(runtime.config, runtime.store, reauth_urls=for_runtime(runtime))
            self._dispatcher = (runtime, dispatcher)
        if not await self._ready():  # buffered results (and their transitions) first
            return
        held = self._dispatcher
        if held is None:  # stood down while the buffer flushed: another instance dispatches now
            return
        try:
            await asyncio.to_thread(held[1].run_once)
        except StorageError as exc:
            self.buffer.unavailable(exc.message())
        except Exception:  # noqa: BLE001 - the scheduler must keep going whatever happens
            log.exception("alert dispatch failed")

    def _dispatch_soon(self) -> None:
        job = self.scheduler.get_job(DISPATCH_JOB)
        if job is not None:
            job.modify(next_run_time=datetime.now(UTC))

    def _pause_paused(self) -> None:
        now = datetime.now(UTC)
        for integ in self.runtime.config.integrations:
            if integ.paused:
                for kind in integ.checks:
                    self.runtime.store.checks.pause(integ.name, kind, now)

    async def _due(self, name: str, kind: str) -> None:
        """A check is due (its APScheduler job): queue mode hands it to the workers (while the queue answers), local
        mode puts it in line for a slot (``self.line``) and returns."""
        if self._handed_over(name, kind):
            return
        if not self.line.add(name, kind):
            log.info("check not run: its last run is still waiting or running", extra={
                "integration": name, "check": kind})

    def _handed_over(self, name: str, kind: str) -> bool:
        """Queue mode: True when the queue took the check, or it is running here already."""
        feed = self.feed
        if feed is None:
            return False
        if feed.running_here(name, kind):  # taken from the queue and running here now (Feed.watch_workers)
            log.info("check not run: it is running now", extra={"integration": name, "check": kind})
            return True
        return feed.submit(Due(name, kind, datetime.now(UTC), self._priority(name, kind)))

    def _tenant_of(self, name: str) -> str:
        cfg = self.runtime.config
        return cfg.tenant_name_of(cfg.integration(name))

    def _limits(self) -> tuple[int, int]:
        """The line starts up to ``AHEAD`` times the runner's slots: a started check spends part of its time outside
        its slot (its state read before, its result stored after: up to GroupWriter.SPACING_S and a write), and with
        exactly the slots started those moments went unused (one A/B on an unsteady machine: cycle / ideal 1.665
        against 1.546 before the line; with AHEAD 2, 1.459 and 1.546). The runner's semaphores still hold the
        limits."""
        limits = self.runtime.config.concurrency
        return AHEAD * limits.per_tenant, AHEAD * limits.total

    def _priority(self, name: str, kind: str) -> int:
        """A check others depend on (the token check) is fetched from the queue before them."""
        try:
            kinds = self.runtime.config.integration(name).checks
        except KeyError:
            return 0
        return TOKEN_PRIORITY if kind in dependencies(kinds) else 0

    async def _run_local(self, name: str, kind: str) -> None:
        runtime = self.runtime
        try:
            known, not_before = runtime.runner.deferred_until(name, kind)
            if not known:
                try:  # in a storage outage: run anyway, the result waits in the buffer
                    state = None if self.buffer.outage else await asyncio.to_thread(runtime.store.checks.get_state,
                                                                                    name, kind)
                except StorageError:
                    state = None
                not_before = state.not_before if state is not None else None
            if not_before is not None:
                not_before = not_before if not_before.tzinfo else not_before.replace(tzinfo=UTC)
                if not_before > datetime.now(UTC):
                    log.info("check deferred (Retry-After)", extra={"integration": name, "check": kind})
                    return
            # stored (or buffered) and followed up by the runner's ResultPipeline: see _attach
            result = await runtime.runner.run_one(name, kind)
        except KeyError:  # removed from the config between scheduling and running
            return
        except Exception:  # noqa: BLE001 - the scheduler must keep going whatever happens
            log.exception("check job failed", extra={"integration": name, "check": kind})
            return
        if result.outcome.recheck_s:  # e.g. a brand-new secret still replicating: look again in seconds
            at = datetime.now(UTC) + timedelta(seconds=result.outcome.recheck_s)
            self.scheduler.add_job(self._run_local, DateTrigger(at, timezone=UTC),
                                   args=[name, kind], id=f"recheck::{name}::{kind}", replace_existing=True,
                                   misfire_grace_time=60)

    # -- after each result (the runtime's ResultPipeline calls these, whoever ran the check) --------------------
    def _dispatch_after(self, result: RunResult) -> None:
        if result.transition is not None:
            self._dispatch_soon()

    def _observe(self, result: RunResult) -> None:
        if self.on_result is not None:  # read per call: the web app wraps it with its metrics (web.server)
            self.on_result(result)

    # -- leadership and the buffer (monitor.leader, monitor.buffer) ------------------------------
    @property
    def leading(self) -> bool:
        return self.leadership is None or self.leadership.leading

    def _attach(self, runtime: Runtime) -> None:
        pipeline = runtime.runner.pipeline
        # Only the leader buffers: a follower's result (a re-run from the dashboard) is written or not at all.
        pipeline.buffer = self.buffer if self.leading else None
        pipeline.writable = lambda: self.leadership is None or self.leadership.writable
        self._subscribe(runtime)

    def _subscribe(self, runtime: Runtime) -> None:
        """After every result of this runtime's runner (scheduled, re-run from the dashboard, after a sign-in)."""
        runtime.runner.pipeline.subscribe(self._dispatch_after)  # alerts follow a state change at once
        runtime.runner.pipeline.subscribe(self._observe)  # then the metrics (and whoever else set on_result)

    async def _ready(self) -> bool:
        """May housekeeping write and send now: lease held, every buffered result written first."""
        if self.leadership is not None and not self.leadership.writable:
            return False
        if len(self.buffer) or self.buffer.outage:
            await self.flush()
        return not len(self.buffer) and not self.buffer.outage

    async def flush(self) -> None:
        # through the pipeline's transaction: a buffered result opens or closes its reauthorisation request too
        out = await asyncio.to_thread(self.buffer.flush, self.runtime.runner.pipeline)
        if out is not None and out[1]:
            self._dispatch_soon()

    def lead(self) -> None:
        self.buffer.clear("stale: taken before this instance stood down")
        if self.feed is not None:
            self.feed.forget_workers()
        self.runtime.runner.forget_latest()  # the last leader's token results are in the store, not here
        self._attach(self.runtime)
        self.sync_jobs(first=True)
        log.info("scheduler jobs started", extra={"jobs": len(self.scheduler.get_jobs())})

    def stand_down(self) -> None:
        self.scheduler.remove_all_jobs()
        self.line.clear()  # another instance runs them now; those running end
        if self.feed is not None:
            self.feed.forget_workers()
        self.runtime.runner.pipeline.buffer = None
        self.buffer.clear("another instance leads now")
        self._dispatcher = None

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        from mailwarden.monitor.leader import Leadership, lease_for

        self.leadership = Leadership(lease_for(self.runtime.config.database_url()), self)
        cfg = self.runtime.config
        if cfg.execution.mode == "queue":
            from mailwarden.monitor.queue import Feed, Reaper, make_app

            app = make_app(cfg.database_url(), application_name="mailwarden-leader")
            self.feed = Feed(app, cfg.database_url(), self._run_local)
            self._reaper = Reaper(app, cfg.database_url(), float(cfg.execution.queue.stalled_after))
        self._attach(self.runtime)
        if self.leading:  # SQLite: always; PostgreSQL: once the lease is taken
            self.sync_jobs(first=True)
        self.scheduler.start()
        with contextlib.suppress(RuntimeError):  # no running loop: nothing to watch
            self._watch = asyncio.get_running_loop().create_task(self.leadership.run())
            self._clock = asyncio.get_running_loop().create_task(self.clockwatch.run())  # monitor.clockwatch
        log.info("scheduler started", extra={"jobs": len(self.scheduler.get_jobs()), "leader": self.leading})

    def reload(self) -> bool:
        """Re-read the config; keep the old schedule when the new config is unusable."""
        try:
            cfg = config_mod.load(config_mod.config_path(self.config_path))
            runtime = open_runtime(cfg)
        except MailwardenError as exc:
            log.error("config reload failed; keeping the running schedule", extra={"error": exc.message()})
            return False
        if cfg.execution != self.runtime.config.execution:
            log.error("config reload refused; keeping the running config", extra={
                "error": "execution (local or queue mode, the queue's limits) changes at a restart, not a reload"})
            runtime.close()
            return False
        old = self.runtime
        self._attach(runtime)
        self.runtime = runtime
        if self.leading:
            self.sync_jobs()
        old.close()
        log.info("config reloaded", extra={"integrations": len(cfg.integrations),
                                           "jobs": len(self.scheduler.get_jobs())})
        return True

    async def drain(self, timeout: float = 15.0) -> None:
        """Before ``shutdown``: start no more jobs, and let the ones running end (up to ``timeout`` s). APScheduler's
        shutdown cancels a coroutine job in flight, and the job then logs a CancelledError traceback as "raised an
        exception" (seen in tests/ha when SIGTERM met an alert dispatch under way)."""
        if not self.scheduler.running:
            return
        self.scheduler.pause()
        dropped = self.line.clear()  # they run when next due after the restart (their last run is stored)
        if dropped:
            log.info("checks waiting for a slot not started: the stop", extra={"checks": dropped})
        running = [f for executor in self.scheduler._executors.values()  # noqa: SLF001 - APScheduler 3.11's own
                   for f in getattr(executor, "_pending_futures", ()) if not f.done()]
        running += self.line.tasks()
        if running:
            _, pending = await asyncio.wait(running, timeout=timeout)
            self._stopping = bool(pending)  # shutdown() cancels them: _guarded says so in one line

    async def close_queue(self) -> None:
        """Queue mode: due checks still gathered go to the queue, then its connections close."""
        if self.feed is not None:
            with contextlib.suppress(StorageError):
                await self.feed.flush()
            await self.feed.close()

    def shutdown(self) -> None:
        if self.scheduler.running:
            self.scheduler.shutdown(wait=False)
        self.line.clear()
        self.line.cancel()
        if self._watch is not None:
            self._watch.cancel()
        if self._clock is not None:
            self._clock.cancel()
        if self.leadership is not None:
            if len(self.buffer) and self.leadership.writable and \
                    self.buffer.flush(self.runtime.runner.pipeline) is None:
                log.warning("buffered results lost at shutdown", extra={"results": len(self.buffer)})
            self.leadership.close()  # releases the lease: a follower takes over at once
        self.runtime.close()
