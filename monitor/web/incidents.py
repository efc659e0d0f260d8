"""`/incidents`: the open incidents and those resolved within the last ``RECENT_DAYS`` days, the page that alerts
(the maintenance summary) link to. Filters by status, tenant, integration and diagnosis code stay in the URL, so
a filtered view can be shared. Each incident shows its members (the failing checks, while it is open), the
integrations it names with a link to each one still configured, and its times: opened, acknowledged, snoozed
until, resolved. Store reads only; acknowledging and snoozing post to the existing actions (``pages.ack`` and
``pages.snooze``, with the session's CSRF token).

`/incidents/{id}`: one incident, its members and its timeline, built only from what is stored: when it opened,
when its opening notice was held (the correlation window, a maintenance window) and queued, every send attempt
(``Notification``: kind, route, the masked service URL, sent or the error), the last acknowledgement and the last
snooze (only the latest of each is stored, and the page says so), when and why it was resolved.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from mailwarden.checks import diagnoses
from mailwarden.monitor import audits
from mailwarden.monitor.config import Config
from mailwarden.monitor.db_alerts import attempt_outcome
from mailwarden.monitor.web import pages

RECENT_DAYS = 7
STATUSES = ("all", "open", "resolved")
REASONS = {"recovered": "recovered", "removed": "closed: the integration left the configuration",
           "paused": "closed: the integration was paused", "superseded": "its check failed with another diagnosis",
           "merged": "merged into a grouped incident", "flapping": "its check started flapping",
           "stable": "stable again after flapping", "stable-bad": "settled failing after flapping (a new incident)"}


# a notice's kind (``Notification.kind``) as the timeline names it
NOTICES = {"opened": "opening notice", "grouped": "opening notice (grouped)", "flapping": "flapping notice",
           "reminder": "reminder", "resolved": "resolved notice", "maintenance_summary": "maintenance summary"}


def _title(inc: Any) -> str:
    if inc.kind == "flapping":
        return f"{inc.members[0]['check'] if inc.members else 'a check'} is flapping"
    return diagnoses.get(inc.code).title


def _when(value: Any) -> datetime | None:
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if value is not None and value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value


def _at(value: datetime | str) -> datetime:
    """``_when`` of a time that is set: a NOT NULL column, or one checked for None before."""
    return cast(datetime, _when(value))


def _tenants_of(cfg: Config) -> dict[str, str]:
    """Integration name -> tenant, from the current configuration."""
    return {i.name: cfg.tenant_name_of(i) for i in cfg.integrations if i.app in cfg.apps}


def incident_view(inc: Any, tenant_of: dict[str, str], configured: set[str]) -> dict[str, Any]:
    names = sorted(set(inc.affected) | {m["integration"] for m in inc.members})
    members = [{"integration": m["integration"], "check": m["check"], "status": m["status"],
                "since": _when(m.get("since"))} for m in sorted(inc.members, key=lambda m: (m["integration"],
                                                                                             m["check"]))]
    tenants = sorted(({inc.tenant} - {None}) | {tenant_of[n] for n in names if n in tenant_of})
    return {"id": inc.id, "kind": inc.kind, "code": inc.code, "title": _title(inc), "status": inc.status,
            "tenants": tenants, "members": members,
            "integrations": [{"name": n, "configured": n in configured} for n in names],
            "opened_at": _when(inc.opened_at), "notified_at": _when(inc.notified_at), "reminders": inc.reminders,
            "ack_by": inc.ack_by, "ack_at": _when(inc.ack_at), "snoozed_until": _when(inc.snoozed_until),
            "resolved_at": _when(inc.resolved_at),
            "resolve_reason": REASONS.get(inc.resolve_reason or "", inc.resolve_reason),
            "held_window": inc.held_window}


def clean_filters(query: Any) -> dict[str, str]:
    status = query.get("status") or "all"
    return {"status": status if status in STATUSES else "all", "tenant": query.get("tenant") or "",
            "integration": query.get("integration") or "", "code": query.get("code") or ""}


def incidents_context(cfg: Config, store: Any, now: datetime, filters: dict[str, str]) -> dict[str, Any]:
    since = now - timedelta(days=RECENT_DAYS)
    recent = [i for i in store.alerts.incidents("resolved")
              if i.resolved_at is not None and _at(i.resolved_at) >= since]
    in_scope = store.alerts.incidents("open") + sorted(recent, key=lambda i: _at(i.resolved_at), reverse=True)
    configured = {row.name for row in store.history.integration_rows()}
    tenant_of = _tenants_of(cfg)
    views = [incident_view(i, tenant_of, configured) for i in in_scope]
    shown = [v for v in views
             if (filters["status"] == "all" or v["status"] == filters["status"])
             and (not filters["tenant"] or filters["tenant"] in v["tenants"])
             and (not filters["integration"] or filters["integration"] in {n["name"] for n in v["integrations"]})
             and (not filters["code"] or filters["code"] == v["code"])]
    # The choices: what is configured or in scope, plus the value asked for (a link may name one that left).
    tenants = set(cfg.tenants) | {t for v in views for t in v["tenants"]}
    names = {i.name for i in cfg.integrations} | {n["name"] for v in views for n in v["integrations"]}
    codes = {v["code"] for v in views}
    for key, pool in (("tenant", tenants), ("integration", names), ("code", codes)):
        if filters[key]:
            pool.add(filters[key])
    return {"incidents": shown, "in_scope": len(views), "filters": filters, "recent_days": RECENT_DAYS,
            "statuses": STATUSES, "tenants": sorted(tenants), "names": sorted(names), "codes": sorted(codes),
            "filtered": any(filters[k] for k in ("tenant", "integration", "code")) or filters["status"] != "all"}


@dataclass(frozen=True)
class Event:
    """One line of an incident's timeline. ``tone``: how it reads (bad, ok, note, info)."""

    at: datetime
    what: str
    detail: str | None = None
    tone: str = "info"
    order: int = 0  # among events at the same time: the order they happen in


def _attempt(n: Any) -> Event:
    """A send attempt: its notice (kind and sequence from its stable key), where it went, and how it ended."""
    sequence = n.key.rsplit("/", 1)[-1] if n.key.count("/") == 2 else None
    notice = NOTICES.get(n.kind, f"{n.kind} notice") + (f" #{sequence}" if sequence and n.kind == "reminder" else "")
    where = f"route {n.route}" + (f" ({n.service})" if n.service else "")
    outcome = attempt_outcome(n)
    if outcome == "ok":
        return Event(_at(n.at), f"{notice} sent", f"{where}; key {n.key}", "ok", 3)
    if outcome == "unconfirmed":
        return Event(_at(n.at), f"{notice}: sent, unconfirmed", f"{where}: {n.error} (not sent again)", "note", 3)
    retry = "permanent, not retried" if outcome == "permanent" else "retried"
    return Event(_at(n.at), f"{notice} failed ({retry})", f"{where}: {n.error}", "bad", 3)


def timeline(inc: Any, notes: list[Any], now: datetime,
             changes: Sequence[tuple[str, Any]] = ()) -> tuple[list[Event], list[str]]:
    """The incident's events, oldest first, and what the stored record cannot say (notes for the page). ``changes``:
    (integration, ``monitor.audits.Evidence``) for the directory changes that explain a member's failure."""
    opened = _at(inc.opened_at)
    events = [Event(opened, "opened", f"{_title(inc)} ({inc.code}), {inc.kind} incident", "bad", 1)]
    for name, change in changes:
        events.append(Event(_at(change.at), f"{change.what()} by {change.who()}",
                            f"directory audit, tenant {change.tenant}: \"{change.activity}\" on the app of {name}",
                            "note", 0))
    for m in inc.members:
        since = _when(m.get("since"))
        if since is not None:
            events.append(Event(since, f"{m['integration']} / {m['check']} failing",
                                f"now {m['status']}" + (f" ({m['code']})" if m.get("code") else ""), "bad", 0))
    notified, held_for = _when(inc.notified_at), _when(inc.notify_after)
    if held_for is not None and held_for > opened + timedelta(seconds=1):
        done = notified is not None or held_for <= now
        events.append(Event(held_for, "opening notice held until here" if done else "opening notice held until then",
                            "a failure of the network or of Entra ID waits the correlation window, so that an outage "
                            "of several integrations is one notice", "note", 2))
    if inc.held_window:
        until = _when(inc.held_until)
        events.append(Event(until or now, f"maintenance window {inc.held_window} holds the notices",
                            "one summary of what it held goes out at the window's end", "note", 2))
    if notified is not None:
        events.append(Event(notified, "opening notice queued for the alert routes",
                            "each route's send attempts follow" if notes else
                            "no send attempt is recorded for this incident (no route matched, or it went out in a "
                            "maintenance summary, which is recorded without an incident)", "info", 2))
    events += [_attempt(n) for n in notes]
    if inc.ack_at is not None:
        events.append(Event(_at(inc.ack_at), f"last acknowledged by {inc.ack_by}",
                            "reminders stop; only the latest acknowledgement is stored", "ok", 4))
    snoozed = _when(inc.snoozed_until)
    if snoozed is not None:
        ended = snoozed <= now or (inc.resolved_at is not None and snoozed <= _at(inc.resolved_at))
        events.append(Event(snoozed, "snooze ended" if ended else "snooze ends",
                            "the latest snooze: no reminder before this; when it was set, and by whom, is not stored",
                            "note", 4))
    resolved = _when(inc.resolved_at)
    if resolved is not None:
        events.append(Event(resolved, "resolved", REASONS.get(inc.resolve_reason or "", inc.resolve_reason), "ok", 5))
    sent = {n.key for n in notes if n.kind == "reminder"}
    said = []
    if inc.reminders > len(sent):
        said.append(f"{inc.reminders} reminder(s) queued, {len(sent)} with a recorded send attempt: the others are "
                    "waiting in the outbox or matched no route")
    return sorted(events, key=lambda e: (e.at, e.order)), said


def incident_context(cfg: Config, store: Any, incident_id: int, now: datetime) -> dict[str, Any] | None:
    inc = store.alerts.get_incident(incident_id)
    if inc is None:
        return None
    configured = {row.name for row in store.history.integration_rows()}
    changes = audits.incident_evidence(store, cfg, [inc]).get(inc.id, [])
    events, said = timeline(inc, store.alerts.notifications(incident_id), now, changes)
    return {"inc": incident_view(inc, _tenants_of(cfg), configured), "events": events, "said": said,
            "configured": configured}


async def incident_page(request: Request) -> Response:
    state = request.app.state.web
    incident_id = request.path_params["id"]
    ctx = await asyncio.to_thread(incident_context, state.config(), state.store(), incident_id, datetime.now(UTC))
    if ctx is None:
        raise HTTPException(404, f"no incident #{incident_id}")
    return pages.render(request, "incident.html", **ctx)


async def incidents_page(request: Request) -> Response:
    state = request.app.state.web
    filters = clean_filters(request.query_params)
    ctx = await asyncio.to_thread(incidents_context, state.config(), state.store(), datetime.now(UTC), filters)
    return pages.render(request, "incidents.html", **ctx)


ROUTES = [Route("/incidents", incidents_page, methods=["GET"]),
          Route("/incidents/{id:id}", incident_page, methods=["GET"])]
