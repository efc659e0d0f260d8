"""Staged secret-expiry reminders and their rotation runbook: pure code taking ``now``, plus rendering.

A credential in use by integrations gets one reminder per stage of its app's ``reminder_days`` (default
60, 30, 14, 7, 3, 1 days before and 0 = on expiry). Only the most urgent stage due is sent: a monitor
started 10 days before expiry sends the 14-day reminder, not the 60- and 30-day ones too. Every stage is
claimed in the store (``store.rotation.claim_reminder``), so it is sent once, restarts included. One app used by
several integrations gets one reminder naming them all, with a runbook for each consuming system.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from mailwarden import days
from mailwarden.alerts.inert import Wording
from mailwarden.alerts.messages import Message, _env
from mailwarden.alerts.ports import AlertConfig, AppView, IntegrationView
from mailwarden.days import count_words, expiry_words
from mailwarden.redact import redact

PORTAL = "Entra admin center > App registrations > {app:config} ({client_id:code}) > Certificates & secrets"


def severity(stage: int) -> str:
    return "critical" if stage <= 3 else ("warning" if stage <= 14 else "info")


@dataclass(frozen=True)
class CredentialFacts:
    """The credential a reminder is about (metadata only)."""

    app: str
    client_id: str
    kind: str  # client_secret | certificate
    key_id: str
    display_name: str | None
    hint: str | None
    expires_at: datetime


def _when(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def runbook(config: AlertConfig, app_name: str, integrations: Sequence[IntegrationView],
            cred: CredentialFacts) -> list[Wording]:
    """The rotation steps for this app and the systems that consume it, in the order they must happen; each step
    mailwarden's own wording with the configuration's names and Entra ID's values made inert for every body format."""
    app: AppView = config.apps[app_name]
    portal = Wording(PORTAL, app=app.display_name or app_name, client_id=app.client_id)
    steps = []
    if cred.kind == "certificate":
        steps.append(Wording("In {portal} > Certificates > Upload certificate: upload the new certificate (keep the "
                             "old one).", portal=portal))
    else:
        steps.append(Wording("In {portal} > New client secret: add a secret (expiry 12 months or less, as Microsoft "
                             "recommends), then copy its **Value** at once - not the Secret ID; the Value is shown "
                             "only once.", portal=portal))
    by_system: dict[str, list[IntegrationView]] = {}
    for integ in integrations:
        by_system.setdefault(integ.system or integ.name, []).append(integ)
    for system, items in by_system.items():
        names = ", ".join(i.name for i in items)
        fields = sorted({i.secret_field for i in items if i.secret_field})
        where = " / ".join(f"'{f}'" for f in fields) if fields else "its client secret setting"
        steps.append(Wording("In {system:config} ({names:config}): paste the new Value into {where:config}, and "
                             "save.", system=system, names=names, where=where))
        reauth = [i for i in items if i.reauth_after_rotation]
        if reauth:
            steps.append(Wording("In {system:config}: authenticate each mailbox again ({boxes:config}): "
                                 "{system:config} requires a new sign-in after a new secret, or its mailboxes keep "
                                 "failing.", system=system, boxes=", ".join(i.mailbox for i in reauth)))
    first = integrations[0].name if integrations else app_name
    if app.observe_only:  # mailwarden holds no copy: the consuming systems' own sign-ins prove the move
        steps.append(Wording("Verify in mailwarden: {command:code} shows each consuming system signing in again; "
                             "app-only sign-ins name the key they used (`mailwarden secrets` shows which key is "
                             "in use).", command=f"mailwarden check --integration {first} --check consumer"))
    else:
        if app.certificate is not None:
            ref = f"apps.{app_name}.certificate ({app.certificate.cert})"
        else:
            ref = f"apps.{app_name}.secret ({app.secret})"
        steps.append(Wording("Update mailwarden's own copy, {ref:code}: write the new value there (file: references "
                             "are re-read on every run; for env: restart mailwarden).", ref=ref))
        steps.append(Wording("Verify in mailwarden: {command:code} passes and `mailwarden secrets` shows the rotation "
                             "as in_use (the new secret's hint is the one configured).",
                             command=f"mailwarden check --integration {first}"))
    days = app.rotation.remove_old_after_days
    if cred.kind == "client_secret":
        old = Wording("the old secret (Secret ID {key_id}, hint {hint}...)", key_id=cred.key_id, hint=cred.hint)
    else:
        old = Wording("the old certificate ({key_id})", key_id=cred.key_id)
    steps.append(Wording("After every consuming system above has worked with the new one for {days:config}: delete "
                         "{old} in {portal}. Never before: a system still on it breaks at once.",
                         days=count_words(days), old=old, portal=portal))
    return steps


def render_reminder(config: AlertConfig, cred: CredentialFacts, integrations: Sequence[IntegrationView], stage: int,
                    now: datetime, key: str) -> Message:
    names = [i.name for i in integrations]
    systems = sorted({i.system or i.name for i in integrations})
    app = config.apps[cred.app]
    left = days.days_left(cred.expires_at, now)
    word = "certificate" if cred.kind == "certificate" else "client secret"
    if cred.expires_at <= now:
        headline = f"The {word} of app {app.display_name or cred.app} EXPIRED on {_when(cred.expires_at)}"
    else:
        headline = (f"The {word} of app {app.display_name or cred.app} expires on {_when(cred.expires_at)} "
                    f"({expiry_words(cred.expires_at, now)})")
    values = {
        "headline": headline, "stage": stage, "left": left, "word": word, "cred": cred, "names": names,
        "systems": systems, "app_name": app.display_name or cred.app, "client_id": cred.client_id,
        "expires": _when(cred.expires_at), "steps": runbook(config, cred.app, integrations, cred), "key": key,
        "base_url": config.web.base_url.rstrip("/"),
        "integrations": [{"name": i.name, "system": i.system or "-", "mailbox": i.mailbox,
                          "secret_field": i.secret_field or "-", "reauth": i.reauth_after_rotation}
                         for i in integrations],
    }
    label = "EXPIRED" if stage == 0 else f"EXPIRES IN {count_words(left).upper()}"
    title = f"[mailwarden] {label}: {word} of {app.display_name or cred.app} - {', '.join(systems)} [{key}]"
    kind = "failure" if stage <= 3 else "warning"
    return _render("expiry", values, title, kind)


def _render(template: str, values: dict, title: str, notify_type: str) -> Message:
    env = _env()
    text = env.get_template(f"alerts/{template}.txt.j2").render(**values)
    md = env.get_template(f"alerts/{template}.md.j2").render(**values)
    return Message(redact(title), redact(text).strip() + "\n", redact(md).strip() + "\n", notify_type)


def render_rotation(config: AlertConfig, *, app_name: str, event: str, headline: str, detail: str, steps: list[Wording],
                    key: str, notify_type: str) -> Message:
    """A rotation notice: a step that needs a person (remove the old secret, a stuck rotation, a failure)."""
    app = config.apps.get(app_name)
    shown = (app.display_name or app_name) if app else app_name
    values = {"headline": headline, "detail": detail, "steps": steps, "key": key, "event": event,
              "app_name": shown, "base_url": config.web.base_url.rstrip("/")}
    return _render("rotation", values, f"[mailwarden] ROTATION {event.replace('_', ' ').upper()}: {shown} [{key}]",
                   notify_type)
