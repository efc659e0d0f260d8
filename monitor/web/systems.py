"""The consuming systems' pages (issue 19): `/systems`, every consuming system with its counts, worst first;
`/systems/{system}`, every integration of one system (``?app=`` narrows it to one of its apps); `/apps/{app}`, every
integration of one app of the configuration. Each integration with its status, diagnosis, checks, and the consuming
system's own sign-in state: the ``consumer`` check's latest result, or "no sign-in evidence" and why.

The rows are the overview's (``views.integrations``, ``views.select_views``, ``views.groups``): the same bulk reads
(check states, the open incidents, the 24 h availability sums), without the hourly cells; the sign-in state adds one
read of the latest results of the integrations shown that have a ``consumer`` check. Never a query per integration.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from mailwarden.monitor.config import Config
from mailwarden.monitor.signin_plan import not_read
from mailwarden.monitor.web import pages, params, views

CONSUMER = "consumer"


def integration_views(cfg: Config, store: Any, now: datetime) -> tuple[list[views.IntegrationView], list[Any]]:
    """Every integration as the overview reads it (worst first), without the hourly cells, and the open incidents."""
    incidents = store.alerts.incidents("open")
    return views.integrations(cfg, store, now, incidents=incidents, hourly=False, fix=False), incidents


@dataclass(frozen=True)
class SignInState:
    """What is known of the consuming system's own sign-ins for one integration. ``status``: the consumer check's
    state (None: no evidence at all); ``text``: its latest result's summary, or why there is no evidence."""

    status: str | None
    text: str
    checked_at: datetime | None = None


def sign_in_states(cfg: Config, store: Any, items: list[views.IntegrationView]) -> dict[str, SignInState]:
    """Per integration of ``items``: the consumer check's latest result (one read for all of them), or why there is
    none (no consumer check, paused, not run yet; and whether the tenant's sign-in log is read at all)."""
    with_check = [v.name for v in items if any(c.check == CONSUMER for c in v.checks)]
    latest = {r.integration: r for r in store.history.latest_results_of(with_check)
              if r.check == CONSUMER} if with_check else {}
    off = {t: not_read(cfg, t) for t in {v.tenant for v in items} if t in cfg.tenants}
    out = {}
    for v in items:
        check = next((c for c in v.checks if c.check == CONSUMER), None)
        system = v.system or "the consuming system"
        if check is None:
            why = f"this integration has no {CONSUMER} check (add it to its checks to read {system}'s own sign-ins " \
                  "from Entra ID's sign-in log)"
            if off.get(v.tenant):
                why += f"; the tenant's sign-in log is not read either: {off[v.tenant]}"
            out[v.name] = SignInState(None, f"no sign-in evidence: {why}")
        elif check.status == "paused":
            out[v.name] = SignInState("paused", "paused in the config: its consumer check does not run")
        elif (r := latest.get(v.name)) is None:
            out[v.name] = SignInState(None, "no sign-in evidence yet: the consumer check has not run")
        else:
            out[v.name] = SignInState(check.status, r.summary, r.checked_at)
    return out


def signin_counts(items: list[views.IntegrationView]) -> dict[str, int]:
    """How many of ``items`` have a consumer check, per its state, and how many have none ("none")."""
    counts: dict[str, int] = {}
    for v in items:
        check = next((c for c in v.checks if c.check == CONSUMER), None)
        key = check.status if check is not None else "none"
        counts[key] = counts.get(key, 0) + 1
    return {k: counts[k] for k in (*views.COUNT_ORDER, "none") if k in counts}


def _incidents_of(incidents: list[Any], names: set[str]) -> list[dict[str, Any]]:
    out = []
    for inc in incidents:
        touched = sorted(names & (set(inc.affected) | {m["integration"] for m in inc.members}))
        if touched:
            d = views.incident_json(inc)
            out.append({"id": inc.id, "title": d["title"], "code": inc.code, "integrations": touched,
                        "ack_by": inc.ack_by})
    return out


def systems_context(cfg: Config, store: Any, now: datetime) -> dict[str, Any]:
    everything, incidents = integration_views(cfg, store, now)
    rows = []
    for g in views.groups(everything, "system"):
        names = {v.name for v in g.rows}
        apps = sorted({v.app: views.group_key(v, "app")[1] for v in g.rows}.items(),
                      key=lambda a: (a[1].casefold(), a[0]))
        rows.append({"group": g, "apps": apps, "tenants": sorted({v.tenant for v in g.rows}),
                     "incidents": _incidents_of(incidents, names), "signins": signin_counts(g.rows)})
    return {"systems": rows, "all_count": len(everything)}


def members_context(cfg: Config, store: Any, now: datetime, *, system: str | None = None,
                    app: str | None = None) -> dict[str, Any] | None:
    """One system's integrations (``app``: only that app's among them), or one app's (``system`` None); None when
    nothing is configured under that name."""
    everything, incidents = integration_views(cfg, store, now)
    if system is not None:
        mine = views.select_views(everything, system=system)
        if not mine:
            return None
        apps = sorted({v.app: views.group_key(v, "app")[1] for v in mine}.items(),
                      key=lambda a: (a[1].casefold(), a[0]))
        shown = views.select_views(mine, app=app) if app else mine
        heading, what = system, "consuming system"
    else:
        mine = shown = views.select_views(everything, app=app)
        if not mine:
            return None
        apps = []
        heading, what = views.group_key(mine[0], "app")[1], "app"
    states = sign_in_states(cfg, store, shown)
    counts = views.groups(shown, "status") if shown else []
    first = mine[0]
    return {"heading": heading, "what": what, "system": system, "app": app or "", "apps": apps,
            "rows": [(v, states[v.name]) for v in shown], "all_count": len(mine),
            "counts": {g.key: len(g.rows) for g in counts}, "stale": sum(1 for v in shown if v.stale),
            "signins": signin_counts(shown), "tenants": sorted({v.tenant for v in shown}),
            "client_id": first.client_id if system is None else None,
            "systems": sorted({v.system for v in mine if v.system}, key=str.casefold) if system is None else [],
            "incidents": _incidents_of(incidents, {v.name for v in shown}),
            "overview": pages.overview_url({}, **({"system": system, "app": app or ""} if system is not None
                                                  else {"app": app or ""}))}


def _name(request: Request, key: str, what: str) -> str:
    return params.text(request.path_params[key], max_len=pages.MAX_FILTER, what=what) or ""


async def systems_page(request: Request) -> Response:
    state = request.app.state.web
    ctx = await asyncio.to_thread(systems_context, state.config(), state.store(), datetime.now(UTC))
    return pages.render(request, "systems.html", **ctx)


async def system_page(request: Request) -> Response:
    state = request.app.state.web
    system = _name(request, "system", "the system's name")
    app = params.text(request.query_params.get("app"), max_len=pages.MAX_FILTER, what="app") or None
    ctx = await asyncio.to_thread(members_context, state.config(), state.store(), datetime.now(UTC), system=system,
                                  app=app)
    if ctx is None:
        raise HTTPException(404, f"no integration names the consuming system {system!r}")
    return pages.render(request, "system.html", **ctx)


async def app_page(request: Request) -> Response:
    state = request.app.state.web
    app = _name(request, "app", "the app's name")
    ctx = await asyncio.to_thread(members_context, state.config(), state.store(), datetime.now(UTC), app=app)
    if ctx is None:
        raise HTTPException(404, f"no integration uses an app named {app!r}")
    return pages.render(request, "system.html", **ctx)


ROUTES = [Route("/systems", systems_page, methods=["GET"]),
          Route("/systems/{system:path}", system_page, methods=["GET"]),
          Route("/apps/{app:path}", app_page, methods=["GET"])]
