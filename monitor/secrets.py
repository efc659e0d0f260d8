"""The secrets cycle (reminders, rotation tracking, automated rotation) and the inventory.

Run by the scheduler every hour (and by `mailwarden secrets run`): for each app used by integrations, read
its credentials from Graph (once per cycle, shared with the checks), find the one mailwarden's configured
secret matches, queue the reminder stage due, advance the rotation rows, run the automated step due. Notices
go to the alert outbox (``alert_deliveries``) and are sent by the dispatcher like every other notice: owner
routes of the integrations using the app plus the routes whose filters match (check kind ``secret_expiry``).

``inventory`` / ``api_secrets`` give the dashboard and the CLI the same rows, read from the store only.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from mailwarden import days
from mailwarden.alerts import expiry, routes
from mailwarden.alerts.inert import Wording
from mailwarden.alerts.messages import Message
from mailwarden.alerts.records import AlertDelivery
from mailwarden.checks import TOKEN_KIND, diagnoses
from mailwarden.errors import MailwardenError
from mailwarden.monitor.autorotate import AutoRotator
from mailwarden.monitor.config import Config, IntegrationConfig
from mailwarden.monitor.credentials import AppCredential, CredentialReader, match
from mailwarden.monitor.db import Store
from mailwarden.monitor.models import ExpiryReminder, Rotation, RotationEvent
from mailwarden.monitor.rotation import Observation, Step, advance, current_stage, should_open
from mailwarden.monitor.tokens import TokenProvider

log = logging.getLogger("mailwarden.secrets")
LONG_LIVED = timedelta(days=365)
NOTICE_TEXT = {
    "remove_old": ("Remove the old secret of {app}", "info"),
    "stuck": ("A new secret exists, but {app} still uses the old one", "failure"),
    "removed_in_use": ("The old secret of {app} was removed while still in use", "failure"),
    "auto_failed": ("Automated rotation of {app}: a step failed", "failure"),
    "auto_refused": ("Automated rotation of {app}: removal of the old secret refused", "warning"),
}


@dataclass
class CycleReport:
    reminders: list[str] = field(default_factory=list)  # keys queued
    steps: list[str] = field(default_factory=list)  # "<app>: <step>"
    errors: list[str] = field(default_factory=list)


def users_by_app(config: Config) -> dict[str, list[IntegrationConfig]]:
    """The integrations (not paused) of each app, in one pass: the secrets cycle asks for every app's, and a scan of
    every integration per app held the leader's event loop for seconds at 10,000 integrations of 1,000 apps (bench/)."""
    out: dict[str, list[IntegrationConfig]] = {}
    for integ in config.integrations:
        if not integ.paused:
            out.setdefault(integ.app, []).append(integ)
    return out


def deliveries(config: Config, *, key: str, kind: str, names: list[str], severity: str, msg: Message,
               now: datetime) -> list[AlertDelivery]:
    out = []
    for name in routes.choose(config, integrations=set(names), severity=severity, kinds={"secret_expiry"}):
        try:
            count = len(routes.services(config, name))
        except LookupError:
            count = 1  # the send fails permanently and says why
        out += [AlertDelivery(key=key, kind=kind, route=name, service=i, title=msg.title, body_text=msg.text,
                              body_markdown=msg.markdown, notify_type=msg.notify_type, next_attempt_at=now,
                              created_at=now) for i in range(count)]
    return out


class SecretsCycle:
    def __init__(self, config: Config, store: Store, tokens: TokenProvider, reader: CredentialReader,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC), *, use: Any = None):
        """``use``: the consuming system's use of a credential (``Runtime.credential_use``), or None when unknown."""
        self.config, self.store, self.tokens, self.reader, self.clock = config, store, tokens, reader, clock
        self.auto = AutoRotator(config, tokens, reader, clock, use=use)
        self._users: dict[str, list[IntegrationConfig]] | None = None  # users_by_app, once per run

    def users_of(self, app_name: str) -> list[IntegrationConfig]:
        if self._users is None:
            self._users = users_by_app(self.config)
        return self._users.get(app_name, [])

    @classmethod
    def of(cls, runtime: Any, clock: Callable[[], datetime] | None = None) -> SecretsCycle:
        """The cycle of a ``monitor.runtime.Runtime``."""
        return cls(runtime.config, runtime.store, runtime.tokens, runtime.credentials,
                   clock or (lambda: datetime.now(UTC)), use=runtime.credential_use)

    async def run(self) -> CycleReport:
        report = CycleReport()
        self._users = users_by_app(self.config)  # as the config is now
        # mailwarden's own monitor apps too: when their secret expires, mailwarden goes blind
        monitors = {t.monitor_app for t in self.config.tenants.values() if t.monitor_app}
        for name in self.config.apps:
            if not self.users_of(name) and name not in monitors:
                continue
            try:
                await self.app(name, report)
            except MailwardenError as exc:
                report.errors.append(f"{name}: {exc.message()}")
            except Exception as exc:  # noqa: BLE001 - one app must not stop the others
                log.exception("secrets cycle failed for an app", extra={"app": name})
                report.errors.append(f"{name}: {type(exc).__name__}")
        return report

    async def app(self, name: str, report: CycleReport) -> None:
        app = self.config.apps[name]
        read = await self.reader.read(name)
        if not read.ok:
            report.errors.append(f"{name}: {read.reason}")
            return
        if app.observe_only:  # no copy of mailwarden's: reminders for the credential in use, as far as it is known
            in_use = observed_in_use(self.config, self.store, name, read.credentials, self.clock())
            if in_use is not None:
                self._remind(name, in_use, self.users_of(name), self.clock(), report)
            return  # rotation tracking follows mailwarden's own copy (its hint), which an observe_only app lacks
        try:
            configured = self.tokens.client_credential(name)
        except MailwardenError as exc:
            report.errors.append(f"{name}: {exc.message()}")
            return
        found = match(read.credentials, configured)
        in_use = found[0] if found else None
        now = self.clock()
        integrations = self.users_of(name)
        if in_use is not None:
            self._remind(name, in_use, integrations, now, report)
            if self.store.rotation.rotation(app.client_id, in_use.key_id) is None and \
                    should_open(in_use, read.credentials, now, max(app.reminder_days, default=60)):
                row = Rotation(client_id=app.client_id, key_id=in_use.key_id, app=name, tenant=app.tenant,
                               hint=in_use.hint, old_expires_at=in_use.end_at, reference=app.secret,
                               automated=app.rotation.automated, started_at=now, updated_at=now)
                ev = RotationEvent(client_id=app.client_id, app=name, key_id=in_use.key_id, step="expiring",
                                   detail=f"tracking the rotation of {in_use.kind} {in_use.key_id} (ends "
                                          f"{in_use.end_at:%Y-%m-%d})", at=now)
                self.store.rotation.save_rotation(row, [ev])
        healthy_since, last_ok = self._health(integrations)
        obs = Observation(read.credentials, in_use, app.secret, healthy_since, last_ok)
        for row in self.store.rotation.rotations(app.client_id, open_only=True):
            steps = advance(row, obs, now, app.rotation.remove_old_after_days,
                            in_use.kind if in_use else "client_secret").steps
            left = days.days_left(row.old_expires_at, now) if row.old_expires_at else None
            action = self.auto.due(row, left, now)
            if action == "start":
                steps += await self.auto.start(name, row)
            elif action == "verify":
                steps += await self.auto.verify(name, row)
            elif action == "remove_old":
                steps += await self.auto.remove_old(name, row, obs)
            if steps:
                self._save(name, row, steps, integrations, now)
                report.steps += [f"{name}: {s.step}" for s in steps]

    def _remind(self, name: str, cred: AppCredential, integrations: list[IntegrationConfig], now: datetime,
                report: CycleReport) -> None:
        app = self.config.apps[name]
        stage = current_stage(cred.end_at, now, app.reminder_days)
        if stage is None or cred.end_at is None:
            return
        facts = expiry.CredentialFacts(name, app.client_id, cred.kind, cred.key_id, cred.display_name, cred.hint,
                                       cred.end_at)
        key = f"expiry/{app.client_id}/{cred.key_id}/{stage}"
        msg = expiry.render_reminder(self.config, facts, integrations, stage, now, key)
        names = [i.name for i in integrations]
        queued = deliveries(self.config, key=key, kind="expiry", names=names, severity=expiry.severity(stage),
                            msg=msg, now=now)
        reminder = ExpiryReminder(client_id=app.client_id, key_id=cred.key_id, app=name, stage=stage,
                                  expires_at=cred.end_at, integrations=names, sent_at=now)
        if self.store.rotation.claim_reminder(reminder, queued):
            report.reminders.append(key)
            log.info("expiry reminder queued", extra={"app": name, "stage": stage, "routes": len(queued)})

    def _health(self, integrations: list[IntegrationConfig]) -> tuple[datetime | None, datetime | None]:
        states = [self.store.checks.get_state(i.name, TOKEN_KIND) for i in integrations if TOKEN_KIND in i.checks]
        if not states or any(s is None or s.status not in ("ok", "warn") or s.last_ok_at is None for s in states):
            return None, None
        since = [s.since for s in states if s is not None and s.since is not None]
        oks = [s.last_ok_at for s in states if s is not None and s.last_ok_at is not None]
        return (max(since) if since else min(oks)), min(oks)

    def _save(self, name: str, row: Rotation, steps: list[Step], integrations: list[IntegrationConfig],
              now: datetime) -> None:
        events = [RotationEvent(client_id=row.client_id, app=name, key_id=row.key_id, new_key_id=row.new_key_id,
                                step=s.step, ok=s.ok, detail=s.detail, at=now) for s in steps]
        queued: list[AlertDelivery] = []
        for s in steps:
            log.log(logging.INFO if s.ok else logging.WARNING, "rotation step",
                    extra={"app": name, "step": s.step, "ok": s.ok, "detail": s.detail})
            if not s.notice:
                continue
            title, notify_type = NOTICE_TEXT[s.notice]
            headline = title.format(app=self.config.apps[name].display_name or name)
            key = f"rotation/{row.client_id}/{row.key_id}/{s.notice}" + (
                f"/{s.step}/{now:%Y%m%d}" if s.notice.startswith("auto_") else "")
            msg = expiry.render_rotation(self.config, app_name=name, event=s.notice, headline=headline,
                                         detail=s.detail, steps=self._steps_for(s.notice, name, row, integrations),
                                         key=key, notify_type=notify_type)
            queued += deliveries(self.config, key=key, kind="rotation", names=[i.name for i in integrations],
                                 severity="critical" if notify_type == "failure" else "warning", msg=msg, now=now)
        self.store.rotation.save_rotation(row, events, queued)

    def _steps_for(self, notice: str, name: str, row: Rotation, integrations: list[IntegrationConfig]) -> list[Wording]:
        if notice in ("stuck", "removed_in_use"):
            facts = expiry.CredentialFacts(name, row.client_id, "client_secret", row.key_id, None, row.hint,
                                           row.old_expires_at or self.clock())
            return expiry.runbook(self.config, name, integrations, facts)[1:]
        if notice == "remove_old":
            app = self.config.apps[name]
            portal = Wording(expiry.PORTAL, app=app.display_name or name, client_id=app.client_id)
            return [Wording("Confirm every consuming system ({systems:config}) runs on the new secret.",
                            systems=", ".join(sorted({i.system or i.name for i in integrations}))),
                    Wording("{portal}: delete the secret with Secret ID {key_id} (hint {hint}...). Or run "
                            "{command:code} (refused while mailwarden still uses it).", portal=portal,
                            key_id=row.key_id, hint=row.hint, command=f"mailwarden secrets remove-old {name}")]
        return [Wording("See {command:code}; fix the cause and the next cycle retries.",
                        command=f"mailwarden secrets history --app {name}")]


def observed_in_use(config: Config, store: Store, name: str, creds: list[AppCredential],
                    now: datetime) -> AppCredential | None:
    """The credential an observe_only app's consuming system uses: the key its app-only sign-ins named last (the
    stored sign-in log), else the app's only valid credential; None when that is not known (several valid ones, and
    no sign-in names a key: delegated sign-ins never do)."""
    from mailwarden.monitor import credential_use  # the stored sign-in log: which key the consuming system used

    log, _why = credential_use.from_log(config, store, name, now - timedelta(seconds=config.evidence.signins.keep))
    by_key = {c.key_id.lower(): c for c in creds}
    used = [u for u in (log.keys.values() if log else ()) if u.key_id in by_key]
    if used:
        return by_key[max(used, key=lambda u: u.last_at).key_id]
    valid = [c for c in creds if c.end_at is None or c.end_at > now]
    return valid[0] if len(valid) == 1 else None


# -- inventory (CLI and API) ----------------------------------------------------------------------------------
def inventory(config: Config, store: Store, now: datetime) -> list[dict[str, Any]]:
    """Every credential of every configured app: expiry, the integrations using it, rotation state."""
    rotations = {(r.client_id, r.key_id): r for r in store.rotation.rotations()}
    reminders: dict[tuple[str, str], list[int]] = {}
    for rem in store.rotation.reminders():
        reminders.setdefault((rem.client_id, rem.key_id), []).append(rem.stage)
    apps = {a.client_id: (name, a) for name, a in config.apps.items()}
    creds = store.inventory.credentials()
    matched = {c.client_id for c in creds if c.reference is not None}
    from mailwarden.monitor import credential_use  # the stored sign-in log: which key the consuming system used

    seen = {name for name, _app in apps.values() if name in config.apps}
    # the window `secrets remove-old` judges by: a use within it keeps the old credential
    evidence = {name: credential_use.summary(config, store, name, now, config.apps[name].rotation.remove_old_after_days)
                for name in seen}
    rows = []
    for cred in creds:
        name, app = apps.get(cred.client_id, (cred.app, None))
        used = [i.name for i in config.integrations if i.app == name] if cred.reference else []
        monitor = any(t.monitor_app == name for t in config.tenants.values()) and cred.reference is not None
        rot = rotations.get((cred.client_id, cred.key_id or ""))
        usage = usage_of(config, name, app, cred, by_mailwarden=bool(used) or monitor, monitor=monitor,
                         app_matched=cred.client_id in matched, rotated=rot is not None,
                         evidence=evidence.get(name))
        lifetime = (cred.expires_at - cred.start_at).days if cred.expires_at and cred.start_at else None
        rows.append({
            "app": name, "display_name": (app.display_name if app else None) or name, "client_id": cred.client_id,
            "kind": cred.kind, "key_id": cred.key_id, "name": cred.display_name, "hint": cred.hint,
            "starts": _iso(cred.start_at), "expires": _iso(cred.expires_at),
            "days_left": days.days_left(cred.expires_at, now) if cred.expires_at else None,
            "lifetime_days": lifetime, "long_lived": lifetime is not None and lifetime > LONG_LIVED.days,
            "integrations": used, "used_by_mailwarden": monitor, "unused": usage.pop("unused"), "usage": usage,
            "rotation": rot.state if rot else None, "auto_step": rot.auto_step if rot else None,
            "reminders_sent": sorted(reminders.get((cred.client_id, cred.key_id or ""), []), reverse=True),
            "source": cred.source,
        })
    rows.sort(key=lambda r: (r["days_left"] if r["days_left"] is not None else 10**6, r["app"]))
    return rows


SIGNIN_LOGS = "Entra admin center > Identity > Monitoring & health > Sign-in logs"


def _seed_secret_field(system: str) -> str:
    """Where the guide of this consuming system (the seeds) says its client secret goes, or a neutral phrase."""
    return diagnoses.system_of(system).secret_field


def usage_of(config: Config, name: str, app: Any, cred: Any, *, by_mailwarden: bool, monitor: bool,
             app_matched: bool, rotated: bool, evidence: dict[str, Any] | None = None) -> dict[str, Any]:
    """Who uses the credential, as far as mailwarden knows. mailwarden sees its own configured secret (by hint) or
    certificate (by thumbprint) only: a consuming system holds its own copy, which may still be the old one after
    mailwarden's moved on. "Nothing uses it" (``unused``) needs evidence about those systems: their app-only sign-ins
    by credential keyId in the stored sign-in log (``evidence``: ``monitor.credential_use.summary``). Where that
    evidence covers every integration of the app, it replaces ``unknown``; ``unused`` only when the systems signed in
    within it, never with this credential."""
    if by_mailwarden:
        known = "mailwarden uses it as its monitor app" if monitor else "mailwarden's own configuration uses it"
        return {"mailwarden": "uses", "known": known, "unknown": None, "systems": [], "evidence": None,
                "unused": False}
    word = "certificate" if cred.kind == "certificate" else "secret"
    if app is not None and app.observe_only:
        mine, known = "does_not_use", "mailwarden holds no copy of this app's credentials (observe_only)"
    elif app is not None and not app_matched:
        mine, known = "unknown", (f"mailwarden's configured {word} matched none of this app's credentials at the last "
                                  f"read (a wrong or unreadable {word}: see the app's token check), so whether it "
                                  "uses this one is not known")
    else:
        mine = "does_not_use"
        known = f"mailwarden's own configuration {'no longer uses' if rotated else 'does not use'} it"
    verb = "still uses" if rotated else "uses"
    key = f"credential key ID {cred.key_id}" if cred.key_id else "the credential's key ID"
    service_signins = (f"{SIGNIN_LOGS} > Service principal sign-ins for the app ({cred.client_id}), filtered by "
                       f"{key}")
    by_system: dict[str, list[IntegrationConfig]] = {}
    for integ in config.integrations:
        if integ.app == name:
            by_system.setdefault(integ.system or integ.name, []).append(integ)
    systems, unknown = [], []
    for system, items in by_system.items():
        if word == "certificate":
            fields = ["its certificate setting"]
        else:  # the configured secret_field, else where the seeds say this system takes it
            fields = sorted({i.secret_field for i in items if i.secret_field}) or [_seed_secret_field(system)]
        where = " / ".join(fields)
        names = ", ".join(i.name for i in items)
        flows = sorted({i.flow for i in items})
        accounts = sorted({i.account for i in items if i.account})
        systems.append({"system": system, "integrations": [i.name for i in items], "flows": flows,
                        "secret_field": where, "accounts": accounts})
        text = f"whether {system} ({names}) {verb} it is not known: check {system}'s configuration ({where})"
        if "app" in flows:
            text += f" or {service_signins}, before deleting it"
        else:
            text += " before deleting it"
        if "delegated" in flows:
            text += (f"; it signs in as {', '.join(accounts)}: {SIGNIN_LOGS} > User sign-ins (non-interactive) for "
                     f"the app show whether it still signs in, not necessarily with which {word}")
        unknown.append(text)
    if not unknown:
        unknown.append(f"whether anything outside mailwarden {verb} it is not known: check {service_signins}, "
                       "before deleting it")
    said = _evidence(evidence, cred, by_system)
    if said is not None and said["state"] == "unknown":
        unknown.append(said["text"])
    elif said is not None:
        known = f"{known}; {said['text']}"
        if said["covers_all"]:
            unknown = []
    return {"mailwarden": mine, "known": known, "unknown": "; ".join(unknown) or None, "systems": systems,
            "evidence": said, "unused": bool(said and said["state"] == "unused" and said["covers_all"])}


def _evidence(evidence: dict[str, Any] | None, cred: Any, by_system: dict[str, list[IntegrationConfig]]
              ) -> dict[str, Any] | None:
    """What the stored sign-in log says of the consuming systems' use of ``cred`` (None: it says nothing)."""
    if not evidence or not evidence.get("known") or not cred.key_id:
        return None
    systems = " / ".join(by_system) or "the consuming system"
    since = evidence["since"]
    use = evidence["keys"].get(cred.key_id.lower())
    at = "%Y-%m-%d %H:%M UTC"
    covers_all = not evidence.get("note") and all(i.flow == "app" for items in by_system.values() for i in items)
    if use is not None:
        failed = f", {use['failures']} of them failed" if use["failures"] else ""
        return {"state": "used", "source": "Entra ID sign-in log", "last_used_at": _iso(use["last_at"]),
                "attempts": use["attempts"], "since": _iso(since), "covers_all": covers_all,
                "text": f"{systems} signed in with it {use['attempts']} time(s) since {since:{at}}{failed}, last at "
                        f"{use['last_at']:{at}} (Entra ID sign-in log)"}
    total = sum(u["attempts"] for u in evidence["keys"].values())
    if not total:
        return {"state": "unknown", "source": "Entra ID sign-in log", "last_used_at": None, "attempts": 0,
                "since": _iso(since), "covers_all": False,
                "text": f"{systems} has not signed in since {since:{at}} (Entra ID sign-in log), so which credential "
                        "it uses is not known"}
    others = ", ".join(sorted(evidence["keys"]))
    return {"state": "unused", "source": "Entra ID sign-in log", "last_used_at": None, "attempts": 0,
            "since": _iso(since), "covers_all": covers_all,
            "text": f"none of {systems}'s {total} sign-in(s) since {since:{at}} used it (they used {others}; Entra "
                    "ID sign-in log)"}


def rotation_rows(store: Store) -> list[dict[str, Any]]:
    return [{"app": r.app, "client_id": r.client_id, "old_key_id": r.key_id, "state": r.state,
             "new_key_id": r.new_key_id, "old_expires": _iso(r.old_expires_at), "automated": r.automated,
             "auto_step": r.auto_step, "auto_error": r.auto_error, "remove_after": _iso(r.remove_after),
             "started": _iso(r.started_at), "new_seen": _iso(r.new_seen_at), "in_use": _iso(r.in_use_at),
             "removed": _iso(r.removed_at)} for r in store.rotation.rotations()]


def api_secrets(config: Config, store: Store, now: datetime | None = None) -> dict[str, Any]:
    """The JSON the dashboard's inventory/rotation view (and `GET /api/secrets`) serves: store reads only."""
    now = now or datetime.now(UTC)
    events = [{"app": e.app, "client_id": e.client_id, "key_id": e.key_id, "new_key_id": e.new_key_id,
               "step": e.step, "ok": e.ok, "detail": e.detail, "at": _iso(e.at)}
              for e in store.rotation.rotation_events(limit=100)]
    return {"generated_at": _iso(now), "credentials": inventory(config, store, now),
            "rotations": rotation_rows(store), "events": events}


def _iso(value: datetime | None) -> str | None:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z") if value else None
