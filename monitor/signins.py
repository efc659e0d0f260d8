"""Sign-in evidence: the consuming systems' own sign-ins, read from Entra ID's sign-in log, for the ``consumer``
check (``checks.base.SignInLog``).

Each poll, for every tenant whose sign-in log is read (a ``monitor_app`` with AuditLog.Read.All and
Directory.Read.All, Entra ID P1/P2, the global cloud), mailwarden asks Graph beta ``auditLogs/signIns`` once per
event type and app its integrations use (app-only: ``servicePrincipal``; delegated: ``interactiveUser`` and
``nonInteractiveUser``): one event type per request, as Microsoft refuses a mix, filtered by ``appId`` and by
``createdDateTime`` from the last read minus an overlap (logs arrive late: non-interactive ones up to half an hour).
Events are stored once by id and labelled when stored: ``own`` when the correlation id is one of mailwarden's own
token requests (recorded before they were sent: ``monitor.db_signins.OwnRequestRecorder``), ``unconfirmed`` inside
a reauthorisation window of that app and account, else ``consumer``. A refusal is about the tenant (licence,
permission, cloud) and becomes one note per tenant (``monitor.signin_replies``); a transient one keeps what was
read and waits as Microsoft asks (``monitor.backoff``).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from mailwarden.checks import graph_client
from mailwarden.checks.base import SignIn, SignInWindow, token_target
from mailwarden.checks.network import network_code
from mailwarden.errors import MailwardenError
from mailwarden.monitor import audits, service_health
from mailwarden.monitor import signin_replies as replies
from mailwarden.monitor.backoff import Backoff, Wait
from mailwarden.monitor.config import Config, IntegrationConfig
from mailwarden.monitor.db_signins import USER_EVENTS, overlapping
from mailwarden.monitor.signin_plan import (  # noqa: F401 - the event types and filter re-exported
    EVENT_TYPES,
    INTERACTIVE,
    NON_INTERACTIVE,
    SERVICE_PRINCIPAL,
    Target,
    beta_base,
    not_read,
    signin_filter,
    targets_of,
    when,
)
from mailwarden.redact import redact

if TYPE_CHECKING:  # pragma: no cover
    from mailwarden.monitor.db import Store
    from mailwarden.monitor.models import SignInPoll
    from mailwarden.monitor.tokens import TokenProvider

log = logging.getLogger("mailwarden.signins")

MAX_PAGES = 50  # per request chain: 50,000 events; past it the oldest are left out (a gap in the coverage)
MAX_WINDOW = 2000  # sign-ins a window hands a check (the newest)
REPLY_CAP = 64 * 1024 * 1024  # one page of 1,000 beta events is a few megabytes
REAUTH_WINDOW_TTL = timedelta(hours=1)  # a reauthorisation sign-in never finished stops counting after this
PRUNE_EVERY = timedelta(hours=1)
# tenants read at once: each request waits on Graph, and httpcore's pool costs CPU per connection per request
# (bench/signins.py: 10 at once spent about a third more CPU per request than 4)
POLL_CONCURRENCY = 4


@dataclass
class PollReport:
    """What one poll did: requests sent, events read and newly stored, each polled tenant's state."""

    requests: int = 0
    read: int = 0
    stored: int = 0
    states: dict[str, str] = field(default_factory=dict)
    # the directory audit log's part (monitor.audits), counted apart from the sign-in log's
    audit_requests: int = 0
    audits_read: int = 0
    audits_stored: int = 0


class SignInEvidence:
    """The sign-in poller and the ``SignInLog`` port the ``consumer`` check reads."""

    def __init__(self, config: Config, store: Store, tokens: TokenProvider, *, backoff: Backoff | None = None,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)):
        self.config, self.store, self.tokens = config, store, tokens
        self.settings = config.evidence.signins
        self.backoff = backoff or Backoff()
        self.clock = clock
        self._pruned_at: datetime | None = None
        self._locks: dict[Any, asyncio.Lock] = {}  # per event loop (the demo and `check` run several)
        self._recorded_from: datetime | None = None  # since when own token requests are recorded (the store's)

    # -- the port (checks.base.SignInLog) ---------------------------------------------------------------------
    def window(self, integration: IntegrationConfig) -> SignInWindow:
        """What the stored log says of the integration's consuming system. Blocking (a database read): a check
        calls it in a worker thread. Own sign-ins are never in it; unconfirmed ones are, labelled."""
        app = self.config.apps[integration.app]
        name = self.config.tenant_name_of(integration)  # where the consuming system signs in
        tenant = self.config.tenants[name]
        off = not_read(self.config, name)
        if off is not None:
            return SignInWindow(replies.UNSUPPORTED, replies.note(replies.UNSUPPORTED, name, off), None, None)
        tid, types = tenant.tenant_id.lower(), EVENT_TYPES[integration.flow]
        polls = self.store.signins.signin_polls(tid)
        found = [polls.get((tid, et, app.client_id)) for et in types]
        mine = [p for p in found if p is not None]
        if len(mine) < len(found):
            return SignInWindow(replies.PENDING, self._note(replies.PENDING, name, None), None, None)
        state = replies.worst([p.state for p in mine])
        said = next((p.note for p in mine if p.state == state and p.note), None)
        spans = [(p.covered_from, p.read_until) for p in mine
                 if p.covered_from is not None and p.read_until is not None]
        if len(spans) < len(mine):  # never read yet
            state = replies.PENDING if state == replies.OK else state
            return SignInWindow(state, said or self._note(state, name, None), None, None)
        since = max(covered_from for covered_from, _ in spans)
        read_until = min(until for _, until in spans)
        rows = self.store.signins.signins_of(tid, app.client_id, types,
                                             account=integration.account if integration.flow == "delegated" else None,
                                             since=since, origins=("consumer", "unconfirmed"), limit=MAX_WINDOW)
        if len(rows) >= MAX_WINDOW:
            since = rows[-1].created_at  # only the newest are handed over: they cover from here
        signins = tuple(SignIn(r.signin_id, r.created_at, r.event_type, r.error_code, r.failure_reason,
                               r.credential_key_id, r.user_principal_name, r.origin) for r in reversed(rows))
        return SignInWindow(state, said if state != replies.OK else None, since, read_until, signins)

    def tenant_notes(self) -> dict[str, str]:
        """One note per tenant whose consuming systems are unknown (tenant name -> note)."""
        out: dict[str, str] = {}
        polls = self.store.signins.signin_polls()
        for name, tenant in self.config.tenants.items():
            off = not_read(self.config, name)
            if off is not None:
                if tenant.monitor_app or self.settings.enabled is not False:
                    out[name] = replies.note(replies.UNSUPPORTED, name, off) or ""
                continue
            keys = [t.key for t in targets_of(self.config).get(name, [])]
            states = [polls[k] for k in keys if k in polls]
            state = replies.worst([p.state for p in states]) if len(states) == len(keys) else replies.PENDING
            if keys and state != replies.OK:
                said = next((p.note for p in states if p.state == state and p.note), None)
                out[name] = said or self._note(state, name, None) or ""
        return out

    def _note(self, state: str, tenant: str, detail: str | None, last: datetime | None = None) -> str | None:
        return replies.note(state, tenant, detail, monitor_app=self.config.tenants[tenant].monitor_app,
                            last_success=last, poll_every_s=float(self.settings.poll_every))

    # -- polling ----------------------------------------------------------------------------------------------
    def stale(self) -> bool:
        """Whether a target has never been read, or not within ``poll_every`` (``mailwarden check`` polls first)."""
        now = self.clock()
        polls = self.store.signins.signin_polls()
        every = timedelta(seconds=float(self.settings.poll_every))
        return any((p := polls.get(t.key)) is None or p.checked_at is None or now - p.checked_at >= every
                   for ts in targets_of(self.config).values() for t in ts)

    async def poll(self) -> PollReport:
        """Read every tenant's new sign-ins once (tenants at once, each tenant's requests one after another)."""
        loop = asyncio.get_running_loop()
        lock = self._locks.get(loop)
        if lock is None:
            self._locks = {loop: (lock := asyncio.Lock())}
        async with lock:  # two polls of one process never overlap
            return await self._poll()

    async def poll_if_stale(self) -> PollReport | None:
        """Poll when a target was not read within ``poll_every`` (``mailwarden check`` before a consumer check)."""
        return await self.poll() if await asyncio.to_thread(self.stale) else None

    async def _poll(self) -> PollReport:
        report = PollReport()
        plan = targets_of(self.config)
        if not plan:
            return report
        recorder = getattr(self.tokens, "own_requests", None)
        if recorder is not None:
            await asyncio.to_thread(recorder.flush)
        now = self.clock()
        self._recorded_from = await asyncio.to_thread(self.store.signins.recorded_from)
        polls = await asyncio.to_thread(self.store.signins.signin_polls)
        windows = await asyncio.to_thread(self.store.signins.reauth_windows, now - self._keep())
        limit = asyncio.Semaphore(POLL_CONCURRENCY)
        endpoints = self.tokens.endpoints
        async with graph_client.capped_client(verify=graph_client.verify_for(endpoints), timeout=self._timeout(),
                                              trust_env=not endpoints.ca_bundle, cap=REPLY_CAP) as http:
            async def one(tenant: str, targets: list[Target]) -> None:
                async with limit:
                    await self._poll_tenant(http, tenant, targets, polls, windows, report)

            await asyncio.gather(*(one(t, ts) for t, ts in plan.items()))
        await asyncio.to_thread(self._after, now, windows)
        return report

    def _after(self, now: datetime, windows: list) -> None:
        """Label again what changed since it was stored (an own request written late, a window closed late), and
        prune once an hour."""
        self.store.signins.relabel_signins(now - self._keep(),
                                           windows + self.store.signins.reauth_windows(now - self._overlap()))
        if self._pruned_at is None or now - self._pruned_at >= PRUNE_EVERY:
            removed = self.store.signins.prune_signin_evidence(now, self._keep())
            self._pruned_at = now
            log.info("sign-in evidence pruned", extra=removed)

    def _keep(self) -> timedelta:
        return timedelta(seconds=float(self.settings.keep))

    def _overlap(self) -> timedelta:
        return timedelta(seconds=float(self.settings.overlap))

    def _timeout(self) -> float:
        return float(self.config.defaults.timeout)

    async def _poll_tenant(self, http: Any, tenant: str, targets: list[Target], polls: dict[tuple, SignInPoll],
                           windows: list, report: PollReport) -> None:
        tid = targets[0].tenant_id
        monitor = self.config.apps[self.config.tenants[tenant].monitor_app or ""]
        waits = [f"signins:{tid}", token_target(tid, monitor.client_id)]
        now = self.clock()
        if self.backoff.waiting(waits, now) is not None:
            report.states[tenant] = "waiting"
            return
        token = await asyncio.to_thread(self._monitor_token, tenant)
        rows: list[dict[str, Any]] = []
        if isinstance(token, replies.Refusal):
            self._settle(tenant, targets, polls, token, waits[1], rows, now)
        else:
            for i, target in enumerate(targets):
                refused = await self._read(http, token, target, polls.get(target.key), windows, rows, report, now)
                if refused is not None:  # about the tenant: the rest would answer the same
                    self._settle(tenant, targets[i:], polls, refused, waits[0], rows, now)
                    break
            await self._service_health(http, token, tid, now)
            await self._directory_audits(http, token, tenant, tid, now, report)
        await asyncio.to_thread(self.store.signins.save_signin_polls, rows)
        self._say(tenant, polls, rows, report)

    async def _service_health(self, http: Any, token: str, tenant_id: str, now: datetime) -> None:
        """Microsoft's open incidents and advisories on the services mailwarden's checks use, as the tenant's service
        health lists them (one request per poll, not counted with the sign-in log's; ServiceHealth.Read.All), for the
        alerts (``service_health``)."""
        url = f"{self.tokens.endpoints.graph.rstrip('/')}/admin/serviceAnnouncement/issues"
        issues, refused, _complete = await self._pages(http, token, url, {"$filter": "isResolved eq false"},
                                                       PollReport())
        await asyncio.to_thread(service_health.save, self.store, tenant_id, issues, refused, now)

    async def _directory_audits(self, http: Any, token: str, tenant: str, tenant_id: str, now: datetime,
                                report: PollReport) -> None:
        """The tenant's directory changes to monitored apps since the last read minus the overlap (one request chain
        per poll, counted apart from the sign-in log's; AuditLog.Read.All, every edition), stored once by event id
        (``monitor.audits``). A refusal keeps what was read; the tenant's note stays the sign-in log's."""
        apps = audits.monitored_apps(self.config, tenant)
        if not apps:
            return
        mine = PollReport()
        ids = await self._audit_ids(http, token, tenant_id, apps, now, mine)
        prev = await asyncio.to_thread(audits.load_poll, self.store, tenant_id)
        oldest = now - self._keep()
        if prev is not None and prev.read_until is not None:
            since = max(prev.read_until - self._overlap(), oldest)
            continuous = prev.covered_from is not None and since <= prev.read_until
        else:
            since, continuous = max(now - timedelta(seconds=float(self.settings.backfill)), oldest), False
        since = since.replace(microsecond=0)
        url = f"{self.tokens.endpoints.graph.rstrip('/')}/auditLogs/directoryAudits"
        events, refused, complete = await self._pages(http, token, url, {"$filter": audits.audit_filter(since)},
                                                      mine)
        report.audit_requests += mine.requests
        if refused is not None:
            if prev is None or prev.state != refused.state:  # once per change of state, as the sign-in log's
                log.warning("directory audit log not readable", extra={"tenant": tenant, "state": refused.state,
                                                                       "detail": refused.detail})
            poll = audits.AuditPoll(refused.state, now, redact(refused.detail)[:300],
                                    prev.last_success_at if prev else None, prev.covered_from if prev else None,
                                    prev.read_until if prev else None)
        else:
            stored = await asyncio.to_thread(self._store_audits, tenant_id, events, ids, now)
            report.audits_read += len(events)
            report.audits_stored += stored
            covered = _covered(prev.covered_from if continuous and prev is not None else since, since, complete,
                               [when(e.get("activityDateTime")) or now for e in events])
            poll = audits.AuditPoll(replies.OK, now, None, now, covered, now)
        await asyncio.to_thread(audits.save_poll, self.store, tenant_id, poll)

    async def _audit_ids(self, http: Any, token: str, tenant_id: str, apps: list[str], now: datetime,
                         report: PollReport) -> list[audits.AppIds]:
        """The object ids of the monitored apps in the tenant, looked up once a day (two GETs per app: its
        service principal and its registration, each 404 where the tenant has none)."""
        doc = await asyncio.to_thread(audits.load_ids, self.store, tenant_id)
        due = audits.due_ids(doc, apps, now)
        graph = self.tokens.endpoints.graph.rstrip("/")
        for app_id in due:
            found: dict[str, Any] = {"at": now.isoformat()}
            for kind, path in ((audits.SERVICE_PRINCIPAL, "servicePrincipals"), (audits.APPLICATION, "applications")):
                report.requests += 1
                try:
                    resp = await http.get(f"{graph}/{path}(appId='{app_id}')", params={"$select": "id,appId"},
                                          headers={"Authorization": f"Bearer {token}"})
                except Exception:  # noqa: BLE001 - looked up again at the next poll
                    found = {}
                    break
                if resp.status_code == 200:
                    found[kind] = str(json.loads(resp.content).get("id") or "").lower() or None
                elif resp.status_code == 404:
                    found[kind] = None
                elif resp.status_code == 403:  # not readable: events are matched by the app id alone until then
                    found = {"at": now.isoformat()}
                    break
                else:  # a transient error: looked up again at the next poll
                    found = {}
                    break
            if found:
                doc[app_id] = found
        if due:
            await asyncio.to_thread(audits.save_ids, self.store, tenant_id, doc)
        return audits.app_ids(doc, apps)

    def _store_audits(self, tenant_id: str, events: list[dict[str, Any]], ids: list[audits.AppIds],
                      now: datetime) -> int:
        """Classify and insert the relevant events not stored yet; returns how many were new."""
        known = self.store.signins.stored_audit_ids(str(e.get("id")) for e in events) if events else set()
        rows = [r for e in events if str(e.get("id")) not in known
                and (r := audits.classify(e, ids, tenant_id, now)) is not None]
        return self.store.signins.save_directory_audits(rows)

    def _settle(self, tenant: str, targets: list[Target], polls: dict, refused: replies.Refusal, target: str,
                rows: list[dict[str, Any]], now: datetime) -> None:
        """The targets of a refused read keep what they had read; their state and note say why not."""
        if refused.wait_s:
            self.backoff.defer(target, Wait(now + timedelta(seconds=refused.wait_s), "error", "throttled",
                                            f"the sign-in log of tenant {tenant} asked to wait"))
        for t in targets:
            prev = polls.get(t.key)
            note = self._note(refused.state, tenant, refused.detail, prev.last_success_at if prev else None)
            rows.append(dict(tenant_id=t.tenant_id, event_type=t.event_type, app_id=t.app_id, state=refused.state,
                             note=note, checked_at=now))

    async def _read(self, http: Any, token: str, target: Target, prev: SignInPoll | None, windows: list,
                    rows: list[dict[str, Any]], report: PollReport, now: datetime) -> replies.Refusal | None:
        """One request chain: read, label and store the target's events since its last read minus the overlap."""
        # never before own requests were recorded: mailwarden's sign-ins from then could not be told apart
        oldest = max(now - self._keep(), self._recorded_from or now - self._keep())
        if prev is not None and prev.read_until is not None:
            since = max(prev.read_until - self._overlap(), oldest)
            continuous = prev.covered_from is not None and since <= prev.read_until
        else:  # the first read
            since, continuous = max(now - timedelta(seconds=float(self.settings.backfill)), oldest), False
        since = since.replace(microsecond=0)  # the filter's precision: what it covers, the window covers
        events, refused, complete = await self._fetch(http, token, target, since, report)
        if refused is not None:
            return refused
        stored = await asyncio.to_thread(self._store, target, events, windows, now)
        report.read += len(events)
        report.stored += stored
        covered = _covered(prev.covered_from if continuous and prev is not None else since, since, complete,
                           [when(e.get("createdDateTime")) or now for e in events])
        rows.append(dict(tenant_id=target.tenant_id, event_type=target.event_type, app_id=target.app_id,
                         state=replies.OK, note=None, checked_at=now, last_success_at=now, covered_from=covered,
                         read_until=now))
        return None

    async def _fetch(self, http: Any, token: str, target: Target, since: datetime,
                     report: PollReport) -> tuple[list[dict[str, Any]], replies.Refusal | None, bool]:
        """(events, refusal, complete): every page of the request, following @odata.nextLink."""
        url = f"{beta_base(self.tokens.endpoints.graph)}/auditLogs/signIns"
        events, refused, complete = await self._pages(
            http, token, url, {"$filter": signin_filter(target.event_type, target.app_id, since)}, report)
        if refused is None and not complete:
            log.warning("sign-in log read cut short", extra={"tenant": target.tenant, "app": target.app_id,
                                                             "event_type": target.event_type, "pages": MAX_PAGES})
        return events, refused, complete

    async def _pages(self, http: Any, token: str, url: str | None, params: dict[str, str] | None,
                     report: PollReport) -> tuple[list[dict[str, Any]], replies.Refusal | None, bool]:
        """(items, refusal, complete): the pages of one Graph read, following @odata.nextLink up to MAX_PAGES."""
        items: list[dict[str, Any]] = []
        pages = 0
        while url and pages < MAX_PAGES:
            report.requests += 1
            pages += 1
            try:
                resp = await http.get(url, params=params, headers={"Authorization": f"Bearer {token}"})
                if resp.status_code != 200:
                    return items, self._refused(resp), False
                body = await asyncio.to_thread(json.loads, resp.content)  # megabytes: off the event loop
            except Exception as exc:  # noqa: BLE001 - every failure is a state, none escapes
                return items, self._failure(exc), False
            items += [e for e in body.get("value") or [] if isinstance(e, dict)]
            url, params = body.get("@odata.nextLink"), None
        return items, None, not url

    async def read_report(self, tenant: str, path: str,
                          params: dict[str, str]) -> list[dict[str, Any]] | replies.Refusal:
        """One read of a Graph beta report (``path`` under /beta) with the tenant's monitor app, every page; or why
        not, as the sign-in log's refusals say it (licence, permission, cloud)."""
        off = not_read(self.config, tenant)
        if off is not None:
            return replies.Refusal(replies.UNSUPPORTED, off)
        token = await asyncio.to_thread(self._monitor_token, tenant)
        if isinstance(token, replies.Refusal):
            return token
        endpoints = self.tokens.endpoints
        async with graph_client.capped_client(verify=graph_client.verify_for(endpoints), timeout=self._timeout(),
                                              trust_env=not endpoints.ca_bundle, cap=REPLY_CAP) as http:
            items, refused, _complete = await self._pages(
                http, token, f"{beta_base(endpoints.graph)}/{path}", params, PollReport())
        return refused if refused is not None else items

    @staticmethod
    def _refused(resp: Any) -> replies.Refusal:
        code, message = graph_client.error_body(resp)  # a body that is not Graph's error JSON says nothing here
        return replies.refusal(resp.status_code, code, (message or None) if code else None,
                               resp.headers.get("retry-after"))

    def _failure(self, exc: BaseException) -> replies.Refusal:
        big = graph_client.too_large(exc)
        if big is not None:
            return replies.Refusal(replies.ERROR, str(big))
        code = network_code(exc, default="connection_refused")
        where = beta_base(self.tokens.endpoints.graph)
        if code is not None:
            return replies.Refusal(replies.ERROR, f"{where} could not be reached ({code}): {redact(exc)}")
        return replies.Refusal(replies.ERROR, f"reading {where} failed: {type(exc).__name__}: {redact(exc)}")

    def _store(self, target: Target, events: list[dict[str, Any]], windows: list, now: datetime) -> int:
        """Label and insert the events not stored yet; returns how many were new."""
        known = self.store.signins.stored_signin_ids(str(e.get("id")) for e in events) if events else set()
        events = [e for e in events if str(e.get("id")) not in known]
        if not events:  # the overlap re-read: nothing to write
            return 0
        ids = [cid for e in events if isinstance(cid := e.get("correlationId"), str) and cid]
        own = self.store.signins.own_correlation_ids(ids) if ids else set()
        recorder = getattr(self.tokens, "own_requests", None)
        if recorder is not None:
            own |= recorder.pending_ids()
        rows = [r for e in events if (r := self._row(target, e, own, windows, now)) is not None]
        return self.store.signins.save_signins(rows)

    @staticmethod
    def _row(target: Target, e: dict[str, Any], own: set[str], windows: list, now: datetime) -> dict[str, Any] | None:
        created = when(e.get("createdDateTime"))
        if not e.get("id") or created is None:
            return None
        status = st if isinstance(st := e.get("status"), dict) else {}
        upn = (e.get("userPrincipalName") or "").lower() or None
        cid = e.get("correlationId") or None
        event_type = target.event_type
        if cid in own:
            origin = "own"
        elif event_type in USER_EVENTS and overlapping(windows, target.app_id, upn, created):
            origin = "unconfirmed"
        else:
            origin = "consumer"
        return dict(signin_id=str(e["id"]), tenant_id=target.tenant_id, app_id=target.app_id, event_type=event_type,
                    created_at=created, user_principal_name=upn, error_code=int(status.get("errorCode") or 0),
                    failure_reason=status.get("failureReason"),
                    credential_key_id=e.get("servicePrincipalCredentialKeyId") or None, correlation_id=cid,
                    origin=origin, read_at=now)

    def _monitor_token(self, tenant: str) -> str | replies.Refusal:
        """The monitor app's app-only Graph token (MSAL's cache keeps it between polls), or why there is none."""
        from mailwarden.checks.replies import REPLIES
        from mailwarden.checks.token import refused_outcome, token_failure

        monitor_app = self.config.tenants[tenant].monitor_app or ""
        endpoints = self.tokens.endpoints
        what = f"the monitor app {monitor_app}'s Graph token"
        REPLIES.begin()
        try:
            result = self.tokens.app_token(monitor_app, endpoints.graph_resource)
        except MailwardenError as exc:  # its secret reference does not resolve
            return replies.Refusal(replies.FORBIDDEN, exc.message())
        except Exception as exc:  # noqa: BLE001 - classified as the token check does
            tid = self.config.tenants[tenant].tenant_id
            outcome = token_failure(exc, what, endpoints.authority, None, endpoints.token_endpoint(tid),
                                    self.config.apps[monitor_app].client_id)
            detail = outcome.summary if outcome is not None else f"{what}: {type(exc).__name__}: {redact(exc)}"
            return replies.Refusal(replies.ERROR, detail, outcome.retry_after_s if outcome is not None else None)
        if "access_token" in result:
            return str(result["access_token"])
        outcome = refused_outcome(result, what)
        state = replies.FORBIDDEN if outcome.status.value == "fail" else replies.ERROR
        return replies.Refusal(state, outcome.summary, outcome.retry_after_s)

    def _say(self, tenant: str, polls: dict, rows: list[dict[str, Any]], report: PollReport) -> None:
        """One log line per tenant when its state changes (never one per integration)."""
        state = replies.worst([r["state"] for r in rows])
        report.states[tenant] = state
        before = [polls[k] for r in rows if (k := (r["tenant_id"], r["event_type"], r["app_id"])) in polls]
        was = replies.worst([p.state for p in before]) if before else None
        if state == was or (state == replies.OK and was is None):
            return
        if state == replies.OK:
            log.info("sign-in log readable again", extra={"tenant": tenant})
            return
        note = next((r["note"] for r in rows if r["state"] == state and r["note"]), None)
        log.warning("sign-in log not readable", extra={"tenant": tenant, "state": state, "note": note})


def needs_poll(kinds: Iterable[str]) -> bool:
    """Whether a run of these check kinds reads sign-in evidence (``mailwarden check`` polls first if stale)."""
    return "consumer" in set(kinds)



def open_reauth_window(store: Store, config: Config, integ: IntegrationConfig, source: str, now: datetime,
                       attempt_id: int | None = None) -> int | None:
    """A person starts signing the integration's account in again (``source``: web | cli): until the window closes
    (``store.signins.close_reauth_window``) or ``REAUTH_WINDOW_TTL`` passes, an unmatched sign-in of that app and
    account is ``unconfirmed``. None for an app-only integration (nobody signs in)."""
    if integ.flow != "delegated" or not integ.account:
        return None
    app = config.apps[integ.app]
    return store.signins.open_reauth_window(integration=integ.name,
                                            tenant_id=config.integration_tenant(integ).tenant_id,
                                            client_id=app.client_id, account=integ.account, source=source, now=now,
                                            ttl=REAUTH_WINDOW_TTL, attempt_id=attempt_id)


def _covered(covered: datetime | None, since: datetime, complete: bool, read: list[datetime]) -> datetime | None:
    """From when a read log (sign-ins, directory audits) is stored without a gap: ``covered`` (the last poll's
    coverage when this read continues it, else ``since``), or, when pages were left unread, from the oldest event
    read (``read``: the events' times)."""
    if not complete and read:
        return max(covered or since, min(read))
    return covered
