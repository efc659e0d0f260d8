"""Runs checks: concurrency limits, a timeout per check, dependencies; every result goes to the result pipeline
(``monitor.pipeline``: stored, then followed up).

Nothing a check does can stop the others: an exception or a hang becomes an ``error`` result.
Limits: a global one, one per tenant (Microsoft throttles per tenant), and at most one connection per
mailbox and protocol at a time (Exchange limits concurrent sessions per mailbox).
"""

from __future__ import annotations

import asyncio
import logging
import time
import traceback
import weakref
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from mailwarden.checks import REGISTRY, TOKEN_KIND, dependencies
from mailwarden.checks.base import CheckContext, Outcome, SignInLog, Status, targets
from mailwarden.checks.graph_client import SharedHttp
from mailwarden.errors import MailwardenError, StorageError
from mailwarden.monitor.backoff import Backoff, Wait
from mailwarden.monitor.breaker import Breaker
from mailwarden.monitor.canaries import StoredCanaries
from mailwarden.monitor.config import Config, IntegrationConfig
from mailwarden.monitor.pipeline import ResultPipeline
from mailwarden.redact import redact
from mailwarden.state import Thresholds

if TYPE_CHECKING:  # pragma: no cover
    from mailwarden.monitor.credentials import CredentialReader
    from mailwarden.monitor.db import Store
    from mailwarden.monitor.models import CheckResult, CheckState, Transition
    from mailwarden.monitor.tokens import TokenProvider

log = logging.getLogger("mailwarden.runner")
TOKEN = TOKEN_KIND  # the token check: the mailbox checks depend on it (their `depends_on`)
RUN_GRACE_S = 2.0


@dataclass
class RunResult:
    integration: str
    check: str
    outcome: Outcome
    checked_at: datetime
    result: CheckResult | None
    transition: Transition | None

    def as_json(self, config: Config) -> dict:
        """The result's JSON (``monitor.output.result_json``): the stored row, or for a result that could not be
        stored the row it would have been."""
        from mailwarden.monitor.db import result_row
        from mailwarden.monitor.models import CheckResult
        from mailwarden.monitor.output import result_json

        row = self.result or CheckResult(**result_row(self.integration, self.check, self.outcome, self.checked_at))
        return result_json(config, row)


_WORKERS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, tuple[int, ThreadPoolExecutor]] = \
    weakref.WeakKeyDictionary()


def ensure_workers(n: int) -> None:
    """Give the running loop at least ``n`` worker threads. The blocking checks (imaplib, poplib, smtplib,
    MSAL) hold a thread for their whole conversation, and asyncio's default pool has only cpu_count + 4:
    on two cores six checks at a time ran instead of the configured limit (measured by bench/)."""
    loop = asyncio.get_running_loop()
    have = _WORKERS.get(loop)
    if have is not None and have[0] >= n:
        return
    executor = ThreadPoolExecutor(max_workers=n, thread_name_prefix="mailwarden-worker")
    loop.set_default_executor(executor)
    _WORKERS[loop] = (n, executor)
    if have is not None:
        have[1].shutdown(wait=False)


class Runner:
    def __init__(self, config: Config, store: Store, tokens: TokenProvider, credentials: CredentialReader,
                 *, clock: Callable[[], datetime] = lambda: datetime.now(UTC)):
        self.config = config
        self.store = store
        self.tokens = tokens
        self.credentials = credentials
        self.clock = clock
        self._loop: asyncio.AbstractEventLoop | None = None
        self._bind_limits()
        # every result goes through it: stored (or buffered in a storage outage), then its subscribers
        self.pipeline = ResultPipeline(store)
        # latest (status, code) of each check, for _blocked: as this runner stored it, or as read at start
        self._last: dict[tuple[str, str], tuple[str | None, str | None]] = {}
        # until when each check waits (a Retry-After), as this runner last stored it: the scheduler asks
        # before every run, and a store read per run cost a thread hop and a query (bench/)
        self._not_before: dict[tuple[str, str], datetime | None] = {}
        self.backoff: Backoff = Backoff()  # queue mode: a SharedBackoff (every worker sees every wait)
        # False in queue mode: another worker may have run the token check since this one did, so a dependency's
        # state is read from the store before each check (``_last_of``)
        self.remembers = True
        self.breaker = Breaker()
        # the consuming systems' sign-ins (checks.base.SignInLog; monitor.signins), set by the runtime
        self.signins: SignInLog | None = None
        # the canaries sent and seen (checks.base.CanaryLog), read from the stored results
        self.canaries = StoredCanaries(store)

    def targets_of(self, integ: IntegrationConfig, kind: str) -> list[str]:
        app = self.config.apps[integ.app]
        tenant = self.config.integration_tenant(integ)
        home = self.config.tenants[app.tenant]  # the app's credentials are read there, with its monitor app
        monitor = self.config.apps.get(home.monitor_app or "")
        return targets(kind, integ, app, tenant, monitor.client_id if monitor else None, home)

    def _waiting(self, integ: IntegrationConfig, kind: str) -> Outcome | None:
        """A check whose target Microsoft asked to wait is not run: it repeats the status of the reply that asked
        (throttled, or a service-side error), and runs again once the wait is over."""
        now = self.clock()
        held = self.backoff.waiting(self.targets_of(integ, kind), now)
        if held is None:
            return None
        _, wait = held
        remaining = max(1.0, (wait.until - now).total_seconds())
        return Outcome(Status(wait.status), wait.code,
                       f"not run: {wait.why}; mailwarden waits until {wait.until.strftime('%H:%M:%S')} UTC as asked "
                       f"({remaining:.0f} s)", retry_after_s=remaining,
                       metrics={"waiting_until": wait.until.isoformat()})

    def _bind_limits(self) -> None:
        """Semaphores and locks belong to one event loop: (re)create them for the loop running now, so a
        runner can serve several asyncio.run() calls (the demo's and check's one-shot cycles)."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        if loop is self._loop and hasattr(self, "_total"):
            return
        self._loop = loop
        self._total = asyncio.Semaphore(self.config.concurrency.total)
        self._tenant: dict[str, asyncio.Semaphore] = defaultdict(
            lambda: asyncio.Semaphore(self.config.concurrency.per_tenant))
        self._mailbox: dict[tuple[str, str], asyncio.Lock] = defaultdict(asyncio.Lock)
        old: SharedHttp | None = getattr(self, "http", None)
        if old is not None:
            old.close()
        # kept-alive HTTP connections of the Graph and EWS checks, on this loop (checks.graph_client.SharedHttp)
        self.http: SharedHttp = SharedHttp()

    def close(self) -> None:
        """The runtime closes: its kept-alive connections with it, once the checks under way may have ended (a
        reload closes the old runtime while its last checks run: their timeout and its grace)."""
        self.http.close(grace=self.config.longest("timeout") + RUN_GRACE_S)

    async def run_one(self, name: str, kind: str, *, known: Mapping[str, CheckState] | None = None) -> RunResult:
        """Run the integration's ``kind`` check and record its result. ``known``: the stored states of its checks, read
        by the caller just before (a queue job reads its own and its dependencies' in one query); a dependency missing
        from it has never run. Without it, a dependency's state is what this runner last recorded, else the store's."""
        # every running check may hold a thread, and its store calls need a few more
        ensure_workers(self.config.concurrency.total + 8)
        integ = self.config.integration(name)
        check = REGISTRY[kind]
        outcome = await self._blocked(integ, check.depends_on, known)
        if outcome is None:
            await self.backoff.sync(self.targets_of(integ, kind), self.clock())
            outcome = self._waiting(integ, kind)
        if outcome is None:
            try:
                outcome = await self._execute(integ, kind)
            except StorageError as exc:
                return self._deferred(name, kind, exc)
            if outcome.retry_after_s and outcome.backoff_target:
                await self.backoff.publish(outcome.backoff_target, Wait(
                    self.clock() + timedelta(seconds=outcome.retry_after_s), outcome.status.value, outcome.code,
                    f"{outcome.backoff_target.split(':', 1)[0]} asked to wait ({integ.name} / {kind})"))
        return await self.record(integ, kind, outcome)

    async def record(self, integ: IntegrationConfig, kind: str, outcome: Outcome) -> RunResult:
        """Record ``outcome`` as the result of the integration's ``kind`` check, taken now: through the result
        pipeline (stored or buffered, then followed up), with the integration's thresholds."""
        name = integ.name
        checked_at = self.clock()
        thresholds = Thresholds(self.config.threshold(integ, "failure_threshold"),
                                self.config.threshold(integ, "success_threshold"))
        self._last[(name, kind)] = (Status(outcome.status).value, outcome.code)
        self._not_before[(name, kind)] = (checked_at + timedelta(seconds=outcome.retry_after_s)
                                          if outcome.retry_after_s else None)
        result = await self.pipeline.record(RunResult(name, kind, outcome, checked_at, None, None), thresholds)
        transition = result.transition
        log.info("check finished", extra={
            "integration": name, "check": kind, "status": outcome.status.value, "code": outcome.code,
            "latency_ms": round(outcome.latency_ms or 0, 1), "summary": redact(outcome.summary),
            "transition": f"{transition.from_status}->{transition.to_status}" if transition else None})
        return result

    def _deferred(self, name: str, kind: str, exc: StorageError) -> RunResult:
        """A check that needed the database (a delegated token check reading its token cache) while it was down:
        nothing is recorded, nothing is known, no state changes (a result here would read `config_error`, block
        the mailbox checks and page once the database returned); the check runs again at its next interval."""
        log.warning("check deferred: the database is unavailable", extra={
            "integration": name, "check": kind, "error": redact(exc.message())})
        outcome = Outcome(Status.BLOCKED, "storage_unavailable",
                          f"not run: mailwarden's database is unavailable ({redact(exc.message())})")
        return RunResult(name, kind, outcome, self.clock(), None, None)

    def remember_latest(self, latest: Mapping[tuple[str, str], Any], scheduled: Iterable[tuple[str, str]]) -> None:
        """Take the stored latest status, code and Retry-After of the ``scheduled`` checks (``store.checks.latest()``,
        read once when the scheduler starts or takes over; a check missing there has never run) as what this
        runner knows, instead of a state read before each check's first run: 4,000 of them queued for the worker
        threads ahead of the checks themselves (bench/)."""
        for key in scheduled:
            run = latest.get(key)
            self._last.setdefault(key, (run.status, run.code) if run is not None else (None, None))
            self._not_before.setdefault(key, run.not_before if run is not None else None)

    def forget_latest(self) -> None:
        """Read the latest states from the store again (taking over from another instance)."""
        self._last.clear()
        self._not_before.clear()

    def deferred_until(self, name: str, kind: str) -> tuple[bool, datetime | None]:
        """(known, not before): when this runner stored the check's latest result, until when its next run
        waits (None: not at all). Unknown (first run here): the caller reads the stored state."""
        key = (name, kind)
        return (True, self._not_before[key]) if key in self._not_before else (False, None)

    async def _blocked(self, integ: IntegrationConfig, depends_on: Iterable[str],
                       known: Mapping[str, CheckState] | None) -> Outcome | None:
        """``blocked_by_<kind>`` while a check this one depends on (``Check.depends_on``) fails."""
        for dep in depends_on:
            if dep not in integ.checks:
                continue
            if known is not None:
                state = known.get(dep)
                last, code = (state.last_status, state.last_code) if state is not None else (None, None)
            else:
                last, code = await self._last_of(integ, dep)
            if last in (Status.FAIL.value, Status.ERROR.value):
                return Outcome(Status.BLOCKED, f"blocked_by_{dep}",
                               f"not run: the {dep} check is failing ({code or last})")
        return None

    async def _last_of(self, integ: IntegrationConfig, kind: str) -> tuple[str | None, str | None]:
        """The latest (status, code) of the integration's ``kind`` check; (None, None) when nothing is known."""
        known = self._last.get((integ.name, kind)) if self.remembers else None
        if known is not None:
            # this runner ran the check last: no store read (a thread hop and a query per mailbox check; bench/).
            # A token check run by another process meanwhile (`mailwarden check`, a re-run on a follower) counts
            # from this runner's next token run, at most one interval later.
            return known
        try:
            if self.pipeline.buffer is not None and self.pipeline.buffer.outage:
                raise StorageError("storage outage")  # do not wait for a connect timeout per check
            state = await asyncio.to_thread(self.store.checks.get_state, integ.name, kind)
            return (state.last_status, state.last_code) if state is not None else (None, None)
        except StorageError:  # storage outage: what this runner last saw of it (queue mode reads the store first)
            return self._last.get((integ.name, kind), (None, None))

    def _server(self, integ: IntegrationConfig, endpoint: str | None) -> tuple[str, int, str] | None:
        """(host, port, tenant) of the server a check talks to (its ``Check.endpoint``): the breaker's key."""
        if endpoint is None:
            return None
        where = getattr(self.tokens.endpoints, endpoint)  # host and port (the mail protocols), or a URL
        tenant = self.config.integration_tenant(integ).tenant_id
        if not isinstance(where, str):
            return where.host.lower(), where.port, tenant
        from urllib.parse import urlsplit

        parts = urlsplit(where)
        return (parts.hostname or "").lower(), parts.port or 443, tenant

    def _breaker_says(self, server: tuple[str, int, str] | None, check_id: str) -> Outcome | None:
        if server is None:
            return None
        held = self.breaker.allow(server, check_id, self.clock())
        if held is None:
            return None
        return Outcome(Status.ERROR, "timeout", f"not tried: {server[0]}:{server[1]} did not answer "
                       f"{' and '.join(held.checks)} in time (tenant {server[2]}); mailwarden tries it again "
                       f"after {held.until.strftime('%H:%M:%S')} UTC", metrics={"breaker_open": True})

    def _breaker_hears(self, server: tuple[str, int, str] | None, check_id: str, outcome: Outcome) -> None:
        if server is None:
            return
        answered = outcome.status in (Status.OK, Status.WARN) or any(
            k in outcome.metrics for k in ("reply", "http_status", "response_code"))
        if outcome.code == "timeout" or answered:  # a token failure says nothing about the mail server
            self.breaker.record(server, check_id, outcome.code == "timeout", self.clock())

    async def _execute(self, integ: IntegrationConfig, kind: str) -> Outcome:
        check = REGISTRY[kind]
        app = self.config.apps[integ.app]
        timeout = float(self.config.threshold(integ, "timeout"))
        self._bind_limits()
        ctx = CheckContext(
            config=self.config, integration=integ, app=app, tenant=self.config.integration_tenant(integ),
            options=integ.options(kind), tokens=self.tokens,
            credentials=self.credentials, endpoints=self.tokens.endpoints, timeout_s=timeout, clock=self.clock,
            loop=asyncio.get_running_loop(), signins=self.signins, canaries=self.canaries,
            http=self.http)
        # a check run with the token check's token talks to the mailbox: one connection per mailbox and protocol
        lock = self._mailbox[(integ.mailbox, kind)] if TOKEN in check.depends_on else None
        server = self._server(integ, check.endpoint)
        check_id = f"{integ.name}/{kind}"
        # The tenant's slot first: a check holding a global slot while it waits for its tenant's would
        # leave the other tenants idle (jobs come grouped by tenant: 5 at a time ran instead of 20; bench/).
        async with self._tenant[self.config.tenant_name_of(integ)], self._total:
            if lock is not None:
                await lock.acquire()
            # asked once the check has its slot: checks queued behind two timeouts must see the breaker open
            refused = self._breaker_says(server, check_id)
            if refused is not None:
                if lock is not None:
                    lock.release()
                return refused
            started = time.perf_counter()
            try:
                # a little longer than the check's own timeout: the check ends itself at ``timeout`` (its sockets
                # hung up, its HTTP client timed out) and says where; this deadline only catches a check that hangs
                outcome = await asyncio.wait_for(check.run(ctx), timeout + RUN_GRACE_S)
            except TimeoutError:
                outcome = Outcome(Status.ERROR, "timeout", f"the {kind} check did not finish within {timeout:g} s")
            except StorageError:
                raise  # not the check's result: run_one defers it
            except MailwardenError as exc:
                outcome = Outcome(Status.ERROR, "config_error", exc.message())
            except Exception as exc:  # noqa: BLE001 - a broken check must not stop the others
                log.exception("check raised", extra={"integration": integ.name, "check": kind})
                outcome = Outcome(Status.ERROR, "unclassified",
                                  f"the {kind} check failed unexpectedly: {type(exc).__name__}: {redact(exc)}",
                                  raw=redact("".join(traceback.format_exception(exc))[-4000:]))
            finally:
                if lock is not None:
                    lock.release()
            if outcome.latency_ms is None:
                outcome.latency_ms = (time.perf_counter() - started) * 1000
        if (outcome.code == "app_not_found" and check.uses_app_token
                and self.config.tenant_name_of(integ) != app.tenant):
            # its token was asked in the integration's tenant, and the app exists (its credentials are read in its
            # home tenant): this tenant lacks its service principal
            outcome.code = "app_not_in_tenant"
        self._breaker_hears(server, check_id, outcome)
        return outcome

    async def run_many(self, selection: Iterable[tuple[str, list[str]]],
                       on_result: Callable[[RunResult], None] | None = None) -> list[RunResult]:
        """Run the selected checks once: per integration the checks others depend on first (the token check), then
        the rest at once."""

        async def run(name: str, kind: str) -> RunResult:
            result = await self.run_one(name, kind)
            if on_result is not None:
                on_result(result)
            return result

        async def one_integration(name: str, kinds: list[str]) -> list[RunResult]:
            results = []
            first = [k for k in kinds if k in dependencies(kinds)]
            for kind in first:
                results.append(await run(name, kind))
            rest = [k for k in kinds if k not in first]
            results += await asyncio.gather(*(run(name, k) for k in rest))
            return results

        groups = await asyncio.gather(*(one_integration(n, k) for n, k in selection))
        return [r for g in groups for r in g]


def select(config: Config, integration: str | None = None, check: str | None = None,
           *, include_paused: bool = False) -> list[tuple[str, list[str]]]:
    """(integration, kinds) pairs matching the filters, in config order.

    A mailbox check selected without its integration's token check brings that token check along, first: the
    token check proves the token with a real round trip (a forced refresh), and `run_many` runs it before the
    others, so the mailbox check is blocked by its failure as under the scheduler. Alone, the mailbox check
    would present an access token cached before a revocation and report ok."""
    out = []
    for integ in config.integrations:
        if integration and integ.name != integration:
            continue
        if integ.paused and not (include_paused or integration):
            continue
        kinds = [k for k in integ.checks if check is None or k == check]
        wanted = [dep for k in kinds if k in REGISTRY for dep in REGISTRY[k].depends_on]
        kinds[:0] = [dep for dep in dict.fromkeys(wanted) if dep in integ.checks and dep not in kinds]
        if kinds:
            out.append((integ.name, kinds))
    return out
