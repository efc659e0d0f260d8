"""One dispatch cycle: fold new transitions into incidents and queue their notices (one transaction), then
send what is due, each delivery claimed by one process, then ping the dead-man heartbeat.

Delivery is at least once: claim, send, record. A crash between send and record re-sends after the claim's
lease; every message carries its stable key so a receiver can drop the duplicate. Transient failures are
retried with exponential backoff (``alerts.retry_backoff`` doubling, capped at 1 h) up to
``alerts.max_attempts``; invalid URLs, schemes Apprise does not know and exhausted retries are permanent.
Sends run on a small thread pool, so a slow or failing route never holds back the others.
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import httpx

from mailwarden.alerts import messages, routes
from mailwarden.alerts.policy import Change, CheckInfo, Notice, Policy, PolicyConfig
from mailwarden.alerts.windows import Maintenance
from mailwarden.checks import diagnoses
from mailwarden.monitor.config import Config
from mailwarden.monitor.db import Store
from mailwarden.monitor.db_alerts import AlertBatch
from mailwarden.monitor.models import AlertDelivery

log = logging.getLogger("mailwarden.alerts")
MAX_BACKOFF = timedelta(hours=1)


@dataclass
class CycleReport:
    queued: int = 0
    sent: int = 0
    failed: int = 0  # attempts that failed (transient or permanent)
    notices: list[str] = field(default_factory=list)  # keys


def policy_config(config: Config) -> PolicyConfig:
    a = config.alerts
    return PolicyConfig(reminder_interval=timedelta(seconds=a.reminder_interval),
                        flap_transitions=a.flapping.transitions, flap_window=timedelta(seconds=a.flapping.window),
                        correlation_window=timedelta(seconds=a.correlation.window),
                        correlation_min=a.correlation.min_integrations, maintenance=Maintenance(a.maintenance))


def configured_credential(config: Config, app_name: str) -> str | None:
    """Which credential of the app the config uses: its secret's hint (first three characters, as Graph shows) or
    its certificate's thumbprint; None when the reference does not resolve (the incident then names the app)."""
    from mailwarden.errors import SecretReferenceError
    from mailwarden.monitor.config import resolve_ref
    from mailwarden.monitor.tokens import certificate_thumbprint

    app = config.apps.get(app_name)
    if app is None:
        return None
    try:
        if app.secret:
            return "hint:" + resolve_ref(app.secret, config.base_dir, what=f"apps.{app_name}.secret")[:3]
        if app.certificate is not None:
            cert = resolve_ref(app.certificate.cert, config.base_dir, what=f"apps.{app_name}.certificate.cert")
            return "cert:" + certificate_thumbprint(cert)
    except (SecretReferenceError, ValueError):
        return None
    return None


def check_infos(config: Config) -> dict[tuple[str, str], CheckInfo]:
    out = {}
    credentials = {name: configured_credential(config, name) for name in config.apps}
    for integ in config.integrations:
        app = config.apps.get(integ.app)
        for kind in integ.checks:
            out[(integ.name, kind)] = CheckInfo(integ.name, kind, app.tenant if app else "",
                                                app.client_id if app else "", tuple(integ.tags), integ.paused,
                                                integ.flow, integ.account, credentials.get(integ.app))
    return out


class Dispatcher:
    def __init__(self, config: Config, store: Store, *, clock: Callable[[], datetime] = lambda: datetime.now(UTC),
                 reauth_urls: Callable[[], dict[str, str]] | None = None, worker: str | None = None):
        self.config = config
        self.store = store
        self.clock = clock
        self.reauth_urls = reauth_urls or dict
        self.worker = worker or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"

    # -- evaluation ------------------------------------------------------------------------------
    def evaluate(self, now: datetime | None = None) -> list[AlertDelivery]:
        now = now or self.clock()
        pcfg = policy_config(self.config)
        return self.store.evaluate_alerts(lambda batch: self._step(batch, pcfg, now), now=now,
                                          flap_window=pcfg.flap_window)

    def _step(self, batch: AlertBatch, pcfg: PolicyConfig, now: datetime) -> list[AlertDelivery]:
        changes = [Change(t.id or 0, t.integration, t.check, t.from_status, t.to_status, t.code, t.at, t.silent)
                   for t in batch.transitions]
        policy = Policy(pcfg, check_infos(self.config), now)
        touched, notices = policy.apply(batch.incidents, changes, batch.recent)
        for inc in touched:
            batch.add(inc)
        batch.flush()  # ids for the stable keys
        ctx = messages.Context(self.config, {
            pair: messages.CheckFacts(batch.summaries.get(pair), st.last_ok_at, batch.details.get(pair) or {})
            for pair, st in batch.states.items()},
            self.reauth_urls())
        out = []
        for notice in notices:
            out += self._deliveries(notice, ctx, now)
        return out

    def _deliveries(self, notice: Notice, ctx: messages.Context, now: datetime) -> list[AlertDelivery]:
        incs = notice.incidents if notice.kind == "maintenance_summary" else [notice.incident]
        names = {n for i in incs if i for n in (set(i.affected) | {m["integration"] for m in i.members})}
        kinds = {m["check"] for i in incs if i for m in i.members}
        severity = None if notice.kind == "maintenance_summary" else diagnoses.get(notice.incident.code).severity
        chosen = routes.choose(self.config, integrations=names, severity=severity, kinds=kinds)
        if not chosen:
            log.warning("no route takes this notice", extra={"key": notice.key})
            return []
        msg = messages.render(notice, ctx)
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
    def send_due(self, now: datetime | None = None) -> tuple[int, int]:
        now = now or self.clock()
        claimed = self.store.claim_deliveries(self.worker, now)
        if not claimed:
            return 0, 0
        with ThreadPoolExecutor(max_workers=min(8, len(claimed))) as pool:
            results = list(pool.map(lambda d: self._send_one(d, now), claimed))
        return sum(results), len(results) - sum(results)

    def _send_one(self, d: AlertDelivery, now: datetime) -> bool:
        try:
            targets = routes.services(self.config, d.route)
            if d.service >= len(targets):
                raise LookupError(f"route {d.route!r} has no service #{d.service} any more")
            target = targets[d.service]
            outcome = routes.send(target, title=d.title, text=d.body_text, markdown=d.body_markdown,
                                  notify_type=d.notify_type)
        except LookupError as exc:
            outcome = routes.SendOutcome(False, "", str(exc), permanent=True)
        except Exception as exc:  # noqa: BLE001 - one broken route must not stop the cycle
            log.exception("alert send failed", extra={"route": d.route})
            outcome = routes.SendOutcome(False, "", f"{type(exc).__name__}: {exc}")
        permanent = outcome.permanent
        next_at = None
        if not outcome.ok and not permanent:
            if d.attempts >= self.config.alerts.max_attempts:
                permanent = True
                outcome.error = f"{outcome.error} (retries exhausted after {d.attempts} attempts)"
            else:
                delay = timedelta(seconds=self.config.alerts.retry_backoff * 2 ** (d.attempts - 1))
                next_at = now + min(delay, MAX_BACKOFF)
        self.store.finish_delivery(d, self.worker, ok=outcome.ok, service=outcome.service, error=outcome.error,
                                   permanent=permanent, next_attempt_at=next_at, now=now)
        log.log(logging.INFO if outcome.ok else logging.WARNING, "alert sent" if outcome.ok else "alert not sent",
                extra={"key": d.key, "route": d.route, "service": outcome.service, "error": outcome.error,
                       "permanent": permanent})
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
                                       notify_type=msg.notify_type) for t in targets]
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
