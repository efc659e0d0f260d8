"""`/tenants` (issue 19): for an MSP with many tenants, each tenant with its open incidents, its integrations per
status and whether its sign-in log is read (the consuming systems' own sign-ins, the ``consumer`` check's evidence;
where it is not: why, and how to enable it), the worst tenant first, as the overview's grouping by tenant orders them
(``views.groups``: the worst status, then how many fail, error, are blocked, warn). Each links to the overview and
the incidents filtered to it.

Reads: the overview's bulk reads (``systems.integration_views``), the open incidents, and the sign-in poll states
of every tenant in one statement. Never a query per tenant or per integration.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from mailwarden.monitor import signin_replies as replies
from mailwarden.monitor.config import Config
from mailwarden.monitor.signin_plan import not_read
from mailwarden.monitor.web import incidents as incidents_page
from mailwarden.monitor.web import pages, views
from mailwarden.monitor.web.systems import integration_views, signin_counts


def signin_note(cfg: Config, tenant: str, polls: list[Any]) -> tuple[str, str]:
    """(state, sentence): whether the tenant's sign-in log is read. ``polls``: its ``SignInPoll`` rows."""
    if tenant not in cfg.tenants:
        return replies.UNSUPPORTED, "not read: the tenant is no longer in the configuration"
    off = not_read(cfg, tenant)
    if off is not None:
        return replies.UNSUPPORTED, f"not read: {off}"
    if not polls:
        return replies.PENDING, "not read yet: mailwarden has not polled this tenant's sign-in log"
    bad = [p for p in polls if p.state != replies.OK]
    if bad:
        worst = min((p.state for p in bad), key=lambda s: replies.ORDER.index(s) if s in replies.ORDER else 0)
        notes = sorted({p.note or f"the sign-in log cannot be read ({p.state})" for p in bad})
        return worst, f"not readable ({worst}): " + "; ".join(notes)
    newest = max((p.read_until for p in polls if p.read_until is not None), default=None)
    if newest is None:
        return replies.PENDING, "not read yet: the first poll of this tenant's sign-in log has not finished"
    if newest.tzinfo is None:
        newest = newest.replace(tzinfo=UTC)
    return replies.OK, f"read, up to {views.absolute(newest)}"


def tenants_context(cfg: Config, store: Any, now: datetime) -> dict[str, Any]:
    everything, open_incidents = integration_views(cfg, store, now)
    tenant_of = {v.name: v.tenant for v in everything}
    configured = set(tenant_of)
    by_tenant: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for inc in open_incidents:
        view = incidents_page.incident_view(inc, tenant_of, configured)
        for t in view["tenants"]:
            by_tenant[t].append(view)
    polls: dict[str, list[Any]] = defaultdict(list)
    for (tid, _, _), poll in store.signins.signin_polls().items():
        polls[tid].append(poll)
    ids = {name: t.tenant_id.lower() for name, t in cfg.tenants.items()}
    groups = views.groups(everything, "tenant")
    seen = {g.key for g in groups}
    # then the tenants with no integration (configured, or named only by an open incident), by name
    rest = sorted((set(cfg.tenants) | set(by_tenant)) - seen, key=str.casefold)
    rows = []
    for key, g in [*((g.key, g) for g in groups), *((t, None) for t in rest)]:
        state, note = signin_note(cfg, key, polls.get(ids.get(key, ""), []))
        members = g.rows if g is not None else []
        rows.append({"name": key, "group": g, "incidents": by_tenant.get(key, []), "signin_state": state,
                     "signin_note": note, "signins": signin_counts(members),
                     "overview": pages.overview_url({}, tenant=key)})
    return {"tenants": rows, "all_count": len(everything), "open_count": len(open_incidents)}


async def tenants_page(request: Request) -> Response:
    state = request.app.state.web
    ctx = await asyncio.to_thread(tenants_context, state.config(), state.store(), datetime.now(UTC))
    return pages.render(request, "tenants.html", **ctx)


ROUTES = [Route("/tenants", tenants_page, methods=["GET"])]
