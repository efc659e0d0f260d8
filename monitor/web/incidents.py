"""`/incidents`: the open incidents and those resolved within the last ``RECENT_DAYS`` days, the page that alerts
(the maintenance summary) link to. Filters by status, tenant, integration and diagnosis code stay in the URL, so
a filtered view can be shared. Each incident shows its members (the failing checks, while it is open), the
integrations it names with a link to each one still configured, and its times: opened, acknowledged, snoozed
until, resolved. Store reads only; acknowledging and snoozing post to the existing actions (``pages.ack`` and
``pages.snooze``, with the session's CSRF token).
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from mailwarden.checks import diagnoses
from mailwarden.monitor.config import Config
from mailwarden.monitor.web import pages

RECENT_DAYS = 7
STATUSES = ("all", "open", "resolved")
REASONS = {"recovered": "recovered", "removed": "closed: the integration left the configuration",
           "paused": "closed: the integration was paused", "superseded": "its check failed with another diagnosis",
           "merged": "merged into a grouped incident", "flapping": "its check started flapping",
           "stable": "stable again after flapping", "stable-bad": "settled failing after flapping (a new incident)"}


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
    recent = [i for i in store.incidents("resolved") if i.resolved_at is not None and _when(i.resolved_at) >= since]
    in_scope = store.incidents("open") + sorted(recent, key=lambda i: _when(i.resolved_at), reverse=True)
    configured = {row.name for row in store.integration_rows()}
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


async def incidents_page(request: Request) -> Response:
    state = request.app.state.web
    filters = clean_filters(request.query_params)
    ctx = await asyncio.to_thread(incidents_context, state.config(), state.store(), datetime.now(UTC), filters)
    return pages.render(request, "incidents.html", **ctx)


ROUTES = [Route("/incidents", incidents_page, methods=["GET"])]
