"""`mailwarden worker` (queue mode): takes due checks from the job queue (``monitor.queue``) and runs them through the
same runner and result pipeline as local mode, on any number of machines.

Each job is one (integration, check) the leader found due at ``due_at``. Before it runs, a job:

1. takes its slots (``monitor.slots``, held across every worker): one connection per mailbox and protocol,
   ``execution.queue.limits.per_mailbox`` probes on one mailbox, and the per-app and per-tenant limits. A job that
   cannot get them within ``slot_wait`` seconds does not run (``slot_wait``) and is due again at its next interval;
   it is never retried through the queue, which would count as a lost worker;
2. reads, in one query, the stored states of the check and of the checks it depends on (the token check): read
   while the slots are held, so no other run of the same check can store a result after it;
3. skips when the check's state already holds a result taken at or after ``due_at`` (``fresh``): the leader ran it
   itself while the queue was down, or this is a job run again after its worker was lost and the first run had
   stored its result (or stores it while this one waits for the pair's slot), so a result is stored once per due
   time;
4. skips when Microsoft asked to wait (the state's ``not_before``, a Retry-After): the leader enqueues it again at
   the next interval;
5. runs the check, blocked while a dependency read in 2 is failing.

procrastinate's worker stops when PostgreSQL is unreachable while it is idle (docs/queue-mode-research.md E5): the
supervisor loop here starts it again once the database answers, with a back-off of 1 to 5 s.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import psycopg
from procrastinate import exceptions as proc_exc

from mailwarden.checks import REGISTRY, TOKEN_KIND, dependencies
from mailwarden.errors import StorageError
from mailwarden.monitor.due import QUEUE, TASK, TOKEN_PRIORITY, Due, pair_key
from mailwarden.monitor.queue import POLL_S, Enqueuer, make_app, queue_error
from mailwarden.monitor.slots import Need, SlotLease

if TYPE_CHECKING:  # pragma: no cover
    from mailwarden.monitor.config import Config, IntegrationConfig
    from mailwarden.monitor.runtime import Runtime

log = logging.getLogger("mailwarden.worker")

RAN, FRESH, DEFERRED, SLOT_WAIT, GONE = "ran", "fresh", "deferred", "slot_wait", "gone"
# what a lost database looks like from here: procrastinate's own error, a socket's, psycopg's (PoolTimeout included)
UNREACHABLE = (proc_exc.ConnectorException, OSError, psycopg.Error)
_BEAT = "UPDATE procrastinate_workers SET last_heartbeat = now() WHERE id = %(worker_id)s RETURNING id"


def needs_of(config: Config, integ: IntegrationConfig, kind: str) -> list[Need]:
    """The slots a check holds while it runs, across every worker: a check that talks to the mailbox with the token
    check's token holds its mailbox and protocol (one connection at a time, as ``Runner`` does in one process) and
    one of the mailbox's ``per_mailbox`` slots; any other check holds its own (integration, check) pair; every check
    holds one of its tenant's slots, and one of its app's when ``per_app`` is set."""
    limits = config.execution.queue.limits
    app = config.apps[integ.app]
    tenant = config.integration_tenant(integ)
    needs = []
    if TOKEN_KIND in REGISTRY[kind].depends_on and integ.mailbox:
        mailbox = integ.mailbox.lower()
        needs.append(Need("pair", f"{kind}:{mailbox}", 1))
        needs.append(Need("mailbox", mailbox, limits.per_mailbox))
    else:
        needs.append(Need("pair", pair_key(integ.name, kind), 1))
    needs.append(Need("tenant", tenant.tenant_id.lower(), limits.per_tenant or config.concurrency.per_tenant))
    if limits.per_app:
        needs.append(Need("app", app.client_id.lower(), limits.per_app))
    return needs


@dataclass
class JobCounts:
    ran: int = 0
    fresh: int = 0
    deferred: int = 0
    slot_wait: int = 0
    gone: int = 0

    def add(self, outcome: str) -> None:
        setattr(self, outcome, getattr(self, outcome) + 1)


class CheckJobs:
    """The body of a check job, bound to the runtime in use (a reload swaps it) and this process's slot lease."""

    def __init__(self, runtime_of: Callable[[], Runtime], slots: SlotLease, enqueuer: Enqueuer):
        self.runtime_of = runtime_of
        self.slots = slots
        self.enqueuer = enqueuer
        self.counts = JobCounts()

    async def run(self, integration: str, check: str, due_at: str, *, job_id: int | None = None) -> str:
        outcome = await self._run(integration, check, datetime.fromisoformat(due_at), job_id)
        self.counts.add(outcome)
        return outcome

    async def _run(self, integration: str, check: str, due: datetime, job_id: int | None) -> str:
        runtime = self.runtime_of()
        config = runtime.config
        try:
            integ = config.integration(integration)
        except KeyError:
            integ = None
        if integ is None or integ.paused or check not in integ.checks or check not in REGISTRY:
            log.info("check job skipped: no longer configured", extra={"integration": integration, "check": check})
            return GONE
        wait = float(config.execution.queue.slot_wait)
        held = await self.slots.acquire(needs_of(config, integ, check), timeout=wait)
        if held is None:
            log.warning("check not run: its mailbox, app or tenant stayed at its limit", extra={
                "integration": integration, "check": check, "waited_s": wait})
            return SLOT_WAIT
        try:
            # read once the slots are held (one query: the check's state and its dependencies'): a run of the same
            # check (the first run of a job run again after its worker was taken for dead) may have stored its
            # result while this one waited for the pair's slot, and a token check may have run meanwhile
            deps = [d for d in REGISTRY[check].depends_on if d in integ.checks]
            states = await asyncio.to_thread(runtime.store.checks.get_states, integration, [check, *deps])
            state = states.get(check)
            if state is not None and state.covers(due):
                log.info("check job skipped: a result for its due time is stored",
                         extra={"integration": integration, "check": check, "job": job_id})
                return FRESH
            if state is not None and state.not_before is not None and state.not_before > datetime.now(UTC):
                log.info("check deferred (Retry-After)", extra={"integration": integration, "check": check})
                return DEFERRED
            result = await runtime.runner.run_one(integration, check, known=states)
        finally:
            await self.slots.release(held)
        if result.outcome.recheck_s:  # e.g. a brand-new secret still replicating: look again in seconds
            at = datetime.now(UTC) + timedelta(seconds=result.outcome.recheck_s)
            prio = TOKEN_PRIORITY if check in dependencies(integ.checks) else 0
            try:
                await self.enqueuer.enqueue([Due(integration, check, at, prio, at)])
            except StorageError as exc:
                log.warning("re-check not queued", extra={"integration": integration, "check": check,
                                                          "error": exc.message()})
        return RAN


class WorkerService:
    """A worker process's body: procrastinate's worker for the ``checks`` queue, started again whenever it stops on a
    database outage, until ``stop`` is set. ``runtime_of`` gives the runtime in use (serve's Monitor swaps it on a
    reload)."""

    def __init__(self, runtime_of: Callable[[], Runtime], *, concurrency: int, name: str | None = None):
        self.runtime_of = runtime_of
        config = runtime_of().config
        self.url = config.database_url()
        self.settings = config.execution.queue
        self.concurrency = concurrency
        self.name = name or f"{socket.gethostname()}:{os.getpid()}"
        self.app = make_app(self.url, application_name="mailwarden-worker", max_size=min(4, concurrency + 1))
        self.slots = SlotLease(self.url, application_name="mailwarden-worker-slots")
        self.jobs = CheckJobs(runtime_of, self.slots, Enqueuer(self.app, self.url))
        self.app.task(name=TASK, queue=QUEUE, retry=False, pass_context=True)(self._task)
        self.running = 0
        self.down_since: float | None = None  # monotonic time the queue became unreachable; None while reachable

    async def _task(self, context: Any, integration: str, check: str, due_at: str) -> str:
        self.running += 1
        try:
            return await self.jobs.run(integration, check, due_at, job_id=context.job.id)
        finally:
            self.running -= 1

    async def run(self, stop: asyncio.Event) -> None:
        delay, down = 1.0, False
        try:
            while not stop.is_set():
                try:
                    async with self.app.open_async():
                        if down:
                            log.info("job queue reachable again: taking checks", extra={"worker": self.name})
                            down, delay = False, 1.0
                        self.down_since = None
                        await self._work(stop)
                    continue
                except UNREACHABLE as exc:  # psycopg_pool's PoolTimeout too, when the pool could not open
                    if not down:
                        log.warning("job queue unavailable; the worker waits for it", extra={
                            "worker": self.name, "error": queue_error(exc, self.url)})
                        self.down_since = self.down_since or time.monotonic()
                    down = True
                    with contextlib.suppress(Exception):  # a pool that failed to open stays closed: drop it
                        await self.app.close_async()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
                delay = min(delay * 2, 5.0)
        finally:
            await self.slots.close()

    async def _work(self, stop: asyncio.Event) -> None:
        config = self.runtime_of().config
        longest = max([float(config.threshold(i, "timeout")) for i in config.integrations]
                      + [float(config.defaults.timeout)])
        self.app.perform_import_paths()
        proc_worker = self.app._worker(  # noqa: SLF001 - run_worker_async's own construction, to read worker_id
            queues=[QUEUE], name=self.name, concurrency=self.concurrency, install_signal_handlers=False,
            update_heartbeat_interval=float(self.settings.heartbeat),
            stalled_worker_timeout=float(self.settings.stalled_after), delete_jobs="successful",
            fetch_job_polling_interval=POLL_S, shutdown_graceful_timeout=longest + 5.0)
        worker = asyncio.create_task(proc_worker.run())
        stopping = asyncio.create_task(stop.wait())
        watching = asyncio.create_task(self._heartbeat(proc_worker))
        try:
            await asyncio.wait({worker, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
            if not worker.done():  # stop: running jobs finish (up to a check's timeout), then the worker row goes
                worker.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await worker
            watching.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watching
        if worker.done() and not worker.cancelled():
            worker.result()  # a ConnectorException: the supervisor loop waits for the database

    async def _heartbeat(self, proc_worker: Any) -> None:
        """This worker's heartbeat, kept by mailwarden: procrastinate's own heartbeat task is watched only until its
        first side task ends (with no periodic task, at once), so one failed heartbeat query left a worker running
        checks with no heartbeat, and the leader ran its checks again while they still ran (found in review). Every
        ``heartbeat`` seconds, retried whatever fails: the queue's reachability for /healthz, and a worker whose row
        was pruned (taken for dead) stops taking checks and registers again."""
        every = float(self.settings.heartbeat)
        while True:
            await asyncio.sleep(every)
            if proc_worker.worker_id is None:
                continue
            try:
                rows = await self.app.connector.execute_query_all_async(_BEAT, worker_id=proc_worker.worker_id)
            except UNREACHABLE as exc:
                if self.down_since is None:
                    self.down_since = time.monotonic()
                    log.warning("job queue unavailable: heartbeat not sent", extra={
                        "worker": self.name, "error": queue_error(exc, self.url)})
                continue
            self.down_since = None
            if not rows:
                log.warning("this worker was taken for dead (its row was pruned): it stops taking checks and starts "
                            "again", extra={"worker": self.name})
                proc_worker.stop()
                return

    def health(self) -> tuple[int, dict[str, Any]]:
        """What the worker's ``/healthz`` answers: 200 ``ok`` while it takes checks from the queue, 200 ``degraded``
        while the queue has been unreachable for less than ``stalled_after`` (the leader has not taken its checks for
        dead yet), 503 ``unavailable`` past that."""
        down = None if self.down_since is None else time.monotonic() - self.down_since
        status, code = "ok", 200
        if down is not None:
            status, code = ("degraded", 200) if down < self.settings.stalled_after else ("unavailable", 503)
        return code, {"status": status, "worker": self.name, "queue_unreachable_s": None if down is None
                      else round(down, 1), "running": self.running, "jobs": dict(vars(self.jobs.counts)),
                      "slots_connected": self.slots.connected}


def health_app(service: WorkerService) -> Any:
    """A worker's own web endpoint (``mailwarden worker --listen``): ``/healthz`` (``WorkerService.health``, JSON) and
    ``/metrics`` (Prometheus: jobs by outcome since start, checks running now)."""
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
    from prometheus_client.registry import Collector
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    class Jobs(Collector):
        def collect(self) -> Any:
            jobs = CounterMetricFamily("mailwarden_worker_jobs", "check jobs this worker took, by what became of "
                                       "them (ran, fresh, deferred, slot_wait, gone)", labels=["outcome"])
            for outcome, n in vars(service.jobs.counts).items():
                jobs.add_metric([outcome], n)
            running = GaugeMetricFamily("mailwarden_worker_running", "checks this worker is running now")
            running.add_metric([], service.running)
            return [jobs, running]

    registry = CollectorRegistry(auto_describe=False)
    registry.register(Jobs())

    async def healthz(request: Any) -> Response:
        code, body = service.health()
        return JSONResponse(body, code)

    async def metrics(request: Any) -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return Starlette(routes=[Route("/healthz", healthz), Route("/metrics", metrics)])
