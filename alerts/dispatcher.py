"""One dispatch cycle: evaluate (two steps), send what is due, each delivery claimed by one process, then ping the
dead-man heartbeat.

Evaluation first asks the store whether anything is new (one cheap read: a transition not yet folded, a notice not
yet routed, or the policy's next due time reached, see ``next_due``); an idle cycle reads nothing else and takes no
lock. Otherwise:
1. fold: the unprocessed transitions into incidents (``alerts.policy``), committed with the notices they decide,
   under the write lock; it reads only the checks that changed, and the config's credentials are resolved before;
2. route: after the commit, outside the lock, each notice is rendered (Jinja2) and routed (routes, Apprise config
   files) into the outbox.
A dispatcher's first evaluation always folds: its config may differ from the one the stored due time was computed
with (a reload, a paused or removed integration, other windows or intervals).

Delivery is at least once: claim, send, record. A crash between send and record re-sends after the claim's
lease, or at once when a process of the same instance starts (its first send releases the claims of this host's
mailwarden processes that are gone, ``release_claims``); every message carries its stable key so a receiver can drop
the duplicate. Transient failures are retried with exponential backoff (``alerts.retry_backoff`` doubling, capped at
1 h) up to ``alerts.max_attempts``; invalid URLs, schemes Apprise does not know and exhausted retries are permanent.
A send whose request went out and whose answer did not come in the route's timeout is *unconfirmed* and not retried
(``alerts.routes``). Sends run on a small thread pool, so a slow or failing route never holds back the others.

The outbox never holds a reauthorisation link: a notice is queued with link slots (``messages.render(...,
link_slots=True)``) and each send fills them with the links of the requests open at that moment (``reauth_urls``),
or with the wording for no link when its request has closed since.
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from mailwarden.alerts import messages, routes
from mailwarden.alerts.inert import MARKDOWN, TEXT
from mailwarden.alerts.policy import CAUSED, Change, CheckInfo, Notice, Policy, PolicyConfig, cause_of
from mailwarden.alerts.ports import AlertConfig, AlertRepository, FoldBatch, Sources
from mailwarden.alerts.records import AlertDelivery, Incident, notice_params, notice_row
from mailwarden.alerts.windows import Maintenance
from mailwarden.checks import diagnoses

log = logging.getLogger("mailwarden.alerts")
MAX_BACKOFF = timedelta(hours=1)
LEASE = timedelta(minutes=5)  # a claim's lease, at least: longer when a route's timeouts allow a longer send


def _instance() -> str:
    """This host as the claims name it: its host name and, on Linux, its PID namespace (two containers that share a
    host name do not share process ids)."""
    host = socket.gethostname().replace(":", "_")
    try:
        namespace = os.readlink("/proc/self/ns/pid")  # "pid:[4026531836]"
    except OSError:
        return host
    return f"{host}/{''.join(ch for ch in namespace if ch.isdigit())}"


INSTANCE = _instance()
PROCESS = uuid.uuid4().hex[:8]  # this process among those that had its pid (a container restarted keeps pid 1)


def worker_id() -> str:
    """A dispatcher's claim owner: ``<instance>:<pid>:<process>.<dispatcher>``."""
    return f"{INSTANCE}:{os.getpid()}:{PROCESS}.{uuid.uuid4().hex[:6]}"


def gone(owner: str) -> bool:
    """Whether the process that claimed as ``owner`` is gone: one of this instance, whose pid runs no process any more,
    or is this process's while the claim names another process (the pid was reused). Any other owner (another host,
    a live process, a name not made by ``worker_id``) is not: its claim waits for its lease."""
    parts = owner.rsplit(":", 2)
    if len(parts) != 3 or parts[0] != INSTANCE or not parts[1].isascii() or not parts[1].isdigit():
        return False
    pid, process = int(parts[1]), parts[2].split(".", 1)[0]
    if pid == os.getpid():
        return process != PROCESS
    if pid <= 0 or pid > 2**22:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # alive, someone else's (EPERM)
        return False
    return False


@dataclass
class CycleReport:
    queued: int = 0
    sent: int = 0
    failed: int = 0  # attempts that failed (transient or permanent)
    notices: list[str] = field(default_factory=list)  # keys


def policy_config(config: AlertConfig) -> PolicyConfig:
    a = config.alerts
    return PolicyConfig(reminder_interval=timedelta(seconds=a.reminder_interval),
                        flap_transitions=a.flapping.transitions, flap_window=timedelta(seconds=a.flapping.window),
                        correlation_window=timedelta(seconds=a.correlation.window),
                        correlation_min=a.correlation.min_integrations, maintenance=Maintenance(a.maintenance))


def check_infos(config: AlertConfig, sources: Sources) -> dict[tuple[str, str], CheckInfo]:
    out = {}
    credentials = {name: sources.configured_credential(name) for name in config.apps}
    for integ in config.integrations:
        app = config.apps.get(integ.app)
        for kind in integ.checks:
            out[(integ.name, kind)] = CheckInfo(integ.name, kind, config.tenant_name_of(integ) if app else "",
                                                app.client_id if app else "", tuple(integ.tags), integ.paused,
                                                integ.flow, integ.account, credentials.get(integ.app))
    return out


def next_due(incidents: Iterable[Incident], pcfg: PolicyConfig, now: datetime) -> datetime | None:
    """When the policy's time-driven rules (``Policy._tick`` and ``_summaries``) next act on ``incidents`` (the open
    ones, and the resolved ones a maintenance window still holds), given no new transition and the same config; None
    when nothing will happen until something changes. A maintenance summary at ``held_until``; a flapping check's
    verdict ``flap_window`` after its last change; a held-back opening notice at ``notify_after``; a reminder
    ``reminder_interval`` after the last notice, not before a snooze ends, never once acknowledged or while a window
    holds the incident. A person's ack or snooze clears the stored time (``store.alerts.ack_incident``,
    ``snooze_incident``: a new snooze may end before the last). Earlier than needed costs one evaluation that finds
    nothing; later would delay a notice (tests/alerts/test_idle_skip.py holds this against the policy itself)."""
    due: list[datetime] = []
    for inc in incidents:
        if inc.held_window is not None and inc.held_until is not None:
            due.append(inc.held_until)
        if inc.status != "open":
            continue
        announced = inc.notified_at is not None or inc.held_window is not None
        if inc.kind == "flapping":
            changed = [datetime.fromisoformat(m["changed"]) for m in inc.members or [] if m.get("changed")]
            due += [max(changed) + pcfg.flap_window] if changed else []
            due += [] if announced else [now]
        elif not announced:  # its opening notice waits (the correlation window)
            due.append(inc.notify_after or now)
        elif inc.notified_at is not None and inc.ack_at is None and inc.held_window is None:
            at = inc.last_notice_at + pcfg.reminder_interval if inc.last_notice_at is not None else now
            due.append(max(at, inc.snoozed_until) if inc.snoozed_until is not None else at)
    return min(due) if due else None


class Dispatcher:
    def __init__(self, config: AlertConfig, store: AlertRepository, *, sources: Sources,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC),
                 reauth_urls: Callable[[], dict[str, str]] | None = None, worker: str | None = None):
        self.config = config
        self.store = store
        self.sources = sources
        self.clock = clock
        self.reauth_urls = reauth_urls or dict
        self.worker = worker or worker_id()
        self._folded = False  # see the module's docstring: a dispatcher's first evaluation always folds
        self._released = False  # a dispatcher's first send releases the claims of its instance's gone processes

    def service_health(self) -> dict[str, dict]:
        """Tenant name -> the latest read of its Microsoft 365 service health (read with the sign-in log)."""
        out = {}
        for name, tenant in self.config.tenants.items():
            doc = self.sources.service_health(tenant.tenant_id)
            if doc is not None:
                out[name] = doc
        return out

    def directory_audits(self, incidents: Iterable[Incident]) -> dict[int, list]:
        """Incident id -> the stored directory changes that explain its failures (read with the sign-in log)."""
        return self.sources.directory_audits(incidents)

    # -- evaluation ------------------------------------------------------------------------------
    def evaluate(self, now: datetime | None = None) -> list[AlertDelivery]:
        """Fold and route what is new; the deliveries queued."""
        now = now or self.clock()
        if self._folded and not self.store.alerts_pending(now):
            return []
        self.fold(now)
        return self.route(now)

    def fold(self, now: datetime) -> None:
        """Step 1: transitions into incidents and notices, one transaction under the write lock."""
        pcfg = policy_config(self.config)
        infos = check_infos(self.config, self.sources)  # before the lock: it reads each app's secret reference
        self.store.fold_alerts(lambda batch: self._fold(batch, pcfg, infos, now), now=now,
                               flap_window=pcfg.flap_window)
        self._folded = True

    def _fold(self, batch: FoldBatch, pcfg: PolicyConfig, infos: dict[tuple[str, str], CheckInfo],
              now: datetime) -> tuple[list[AlertDelivery], datetime | None]:
        # a failure of the consuming system itself is grouped by its cause, read from its result (alerts.policy)
        details = batch.result_details([t.result_id for t in batch.transitions if t.code in CAUSED and t.result_id])
        changes = [Change(t.id or 0, t.integration, t.check, t.from_status, t.to_status, t.code, t.at, t.silent,
                          cause_of(t.code, details.get(t.result_id) if t.result_id is not None else None))
                   for t in batch.transitions]
        touched, notices = Policy(pcfg, infos, now).apply(batch.incidents, changes, batch.recent)
        for inc in touched:
            batch.add(inc)
        batch.flush()  # ids for the stable keys
        rows = []
        for n in notices:
            params: dict[str, Any] = {"sequence": n.sequence}
            if n.kind == "maintenance_summary":
                params.update(window=n.window, window_end=n.window_end.isoformat() if n.window_end else None,
                              incidents=[i.id for i in n.incidents])
            rows.append(notice_row(n.key, n.kind, n.incident.id if n.incident else None, params, now))
        known = {id(i): i for i in [*batch.incidents, *touched]}
        return rows, next_due(known.values(), pcfg, now)

    def route(self, now: datetime) -> list[AlertDelivery]:
        """Step 2, after the fold's commit and outside the lock: render and route each folded notice into the outbox.
        A notice that cannot be rendered is logged and stays for the next cycle; the others go on."""
        rows = self.store.notices_to_route()
        if not rows:
            return []
        params = {r.id: notice_params(r) for r in rows}
        named = [i for p in params.values() for i in p.get("incidents", [])]
        incidents = self.store.incidents_by_id([r.incident_id for r in rows if r.incident_id] + named)
        notices = {r.id: self._notice(r, params[r.id], incidents) for r in rows}
        pairs = {(m["integration"], m["check"]) for n in notices.values() if n is not None and n.incident is not None
                 for m in n.incident.members or []}
        # the links decide which slots a body gets (an open request's); only the slots are stored (``fill``)
        ctx = messages.Context(self.config, {pair: messages.CheckFacts(*known)
                                             for pair, known in self.store.check_facts(pairs).items()},
                               self.reauth_urls(), self.service_health(),
                               self.directory_audits({id(n.incident): n.incident for n in notices.values()
                                                      if n is not None and n.incident is not None}.values()))
        out: list[AlertDelivery] = []
        done: list[int] = []
        for r in rows:
            assert r.id is not None  # read from the database: it has its id
            notice = notices[r.id]
            try:
                out += self._deliveries(notice, ctx, now) if notice is not None else []
            except Exception:  # noqa: BLE001 - one notice that cannot be rendered must not hold back the others
                log.exception("alert notice not rendered; tried again next cycle", extra={"key": r.key})
                continue
            done.append(r.id)
        self.store.route_notices(done, out)
        return out

    @staticmethod
    def _notice(row: AlertDelivery, params: dict, incidents: dict[int, Incident]) -> Notice | None:
        if row.kind == "maintenance_summary":
            return Notice(row.kind, None, params.get("sequence", 1), window=params.get("window"),
                          window_end=datetime.fromisoformat(params["window_end"]) if params.get("window_end") else None,
                          incidents=[incidents[i] for i in params.get("incidents", []) if i in incidents])
        inc = incidents.get(row.incident_id or 0)
        if inc is None:  # gone from the database: nothing left to say
            log.warning("alert notice dropped: its incident is gone", extra={"key": row.key})
            return None
        return Notice(row.kind, inc, params.get("sequence", 1))

    def _deliveries(self, notice: Notice, ctx: messages.Context, now: datetime) -> list[AlertDelivery]:
        incs = notice.incidents if notice.kind == "maintenance_summary" else [notice.incident]
        names = {n for i in incs if i for n in (set(i.affected) | {m["integration"] for m in i.members})}
        kinds = {m["check"] for i in incs if i for m in i.members}
        severity = None
        if notice.kind != "maintenance_summary":
            assert notice.incident is not None  # every other notice is of an incident (``_notice``)
            severity = diagnoses.get(notice.incident.code).severity
        chosen = routes.choose(self.config, integrations=names, severity=severity, kinds=kinds)
        if not chosen:
            log.warning("no route takes this notice", extra={"key": notice.key})
            return []
        msg = messages.render(notice, ctx, link_slots=True)
        out = []
        for name in chosen:
            try:
                count = len(routes.services(self.config, name))
            except LookupError as exc:
                log.error("route unusable", extra={"route": name, "error": str(exc)})
                count = 1  # the send fails permanently and says why, in a Notification row
            for index in range(count):
                out.append(AlertDelivery(key=notice.key, incident_id=notice.incident.id if notice.incident else None,
                                         kind=notice.kind, route=name, service=index, title=msg.title,
                                         body_text=msg.text, body_markdown=msg.markdown, notify_type=msg.notify_type,
                                         next_attempt_at=now, created_at=now))
        return out

    # -- sending ---------------------------------------------------------------------------------
    def release_claims(self) -> int:
        """Release the claims that processes of this instance, gone now (a crash mid-send), still hold: their
        deliveries are due at once, not after the lease."""
        released = self.store.release_claims(gone)
        if released:
            log.warning("alert deliveries released: claimed by a process of this host that is gone",
                        extra={"deliveries": released})
        return released

    def lease(self) -> timedelta:
        """How long a claim holds: 5 minutes, or longer when a route's timeouts let one send take longer."""
        return max(LEASE, timedelta(seconds=2 * routes.longest_send(self.config) + 60))

    def send_due(self, now: datetime | None = None) -> tuple[int, int]:
        now = now or self.clock()
        if not self._released:
            self.release_claims()
            self._released = True
        claimed = self.store.claim_deliveries(self.worker, now, lease=self.lease())
        if not claimed:
            return 0, 0
        urls = self._links() if any(messages.has_slots(d.body_text + d.body_markdown) for d in claimed) else {}
        with ThreadPoolExecutor(max_workers=min(8, len(claimed))) as pool:
            results = list(pool.map(lambda d: self._send_one(d, now, urls), claimed))
        return sum(results), len(results) - sum(results)

    def _links(self) -> dict[str, str]:
        """The reauthorisation links of the requests open now, for the link slots; none when they cannot be read (the
        bodies then say how to re-authorise without one)."""
        try:
            return self.reauth_urls()
        except Exception:  # noqa: BLE001 - a notice without its link beats no notice
            log.exception("reauthorisation links not read; alerts go out without them")
            return {}

    def _send_one(self, d: AlertDelivery, now: datetime, urls: dict[str, str] | None = None) -> bool:
        try:
            targets = routes.services(self.config, d.route)
            if d.service >= len(targets):
                raise LookupError(f"route {d.route!r} has no service #{d.service} any more")
            target = targets[d.service]
            outcome = routes.send(target, title=d.title, text=messages.fill(d.body_text, TEXT, urls or {}),
                                  markdown=messages.fill(d.body_markdown, MARKDOWN, urls or {}),
                                  notify_type=d.notify_type, timeout=routes.timeout_of(self.config, d.route),
                                  key=d.key)
        except LookupError as exc:
            outcome = routes.SendOutcome(False, "", str(exc), permanent=True)
        except Exception as exc:  # noqa: BLE001 - one broken route must not stop the cycle
            log.exception("alert send failed", extra={"route": d.route})
            outcome = routes.SendOutcome(False, "", f"{type(exc).__name__}: {exc}")
        permanent = outcome.permanent
        next_at = None
        if not outcome.ok and not permanent and not outcome.unconfirmed:
            if d.attempts >= self.config.alerts.max_attempts:
                permanent = True
                outcome.error = f"{outcome.error} (retries exhausted after {d.attempts} attempts)"
            else:
                delay = timedelta(seconds=self.config.alerts.retry_backoff * 2 ** (d.attempts - 1))
                next_at = now + min(delay, MAX_BACKOFF)
        self.store.finish_delivery(d, self.worker, ok=outcome.ok, service=outcome.service, error=outcome.error,
                                   permanent=permanent, next_attempt_at=next_at, now=now,
                                   unconfirmed=outcome.unconfirmed)
        said = "alert sent" if outcome.ok else "alert sent, unconfirmed" if outcome.unconfirmed else "alert not sent"
        log.log(logging.INFO if outcome.ok else logging.WARNING, said,
                extra={"key": d.key, "route": d.route, "service": outcome.service, "error": outcome.error,
                       "permanent": permanent, "unconfirmed": outcome.unconfirmed})
        return outcome.ok

    def test(self, names: list[str]) -> list[tuple[str, routes.SendOutcome]]:
        """Send a test notice through each service of the named routes, now; one Notification row each."""
        now = self.clock()
        out = []
        for name in names:
            notice = Notice("test", None, 1, window=name, window_end=now)
            msg = messages.render(notice, messages.Context(self.config), route=name)
            try:
                targets = routes.services(self.config, name)
                results = [routes.send(t, title=msg.title, text=msg.text, markdown=msg.markdown,
                                       notify_type=msg.notify_type, timeout=routes.timeout_of(self.config, name),
                                       key=notice.key)
                           for t in targets]
            except LookupError as exc:
                results = [routes.SendOutcome(False, "", str(exc), permanent=True)]
            for o in results:
                self.store.add_notification(key=notice.key, kind="test", route=name, service=o.service, ok=o.ok,
                                            error=o.error, permanent=o.permanent, at=now)
                out.append((name, o))
        return out

    def heartbeat(self) -> None:
        url = self.config.alerts.heartbeat_url
        if not url:
            return
        try:
            httpx.get(url, timeout=10.0).raise_for_status()
        except httpx.HTTPError as exc:
            log.warning("heartbeat ping failed", extra={"error": routes.redact(str(exc))})

    def run_once(self, now: datetime | None = None) -> CycleReport:
        """One cycle; never raises for a delivery problem (they are recorded), only for the database."""
        now = now or self.clock()
        queued = self.evaluate(now)
        sent, failed = self.send_due(now)
        self.heartbeat()
        return CycleReport(len(queued), sent, failed, sorted({d.key for d in queued}))
