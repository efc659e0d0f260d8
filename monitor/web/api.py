"""JSON under /api (read-only) and its OpenAPI 3.1 document at /api/openapi.json.

The schemas below are the contract: the tests validate every response against them.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from mailwarden.monitor.output import result_json  # the one JSON of a result (`mailwarden check --format json` too)
from mailwarden.monitor.web import params, views

_S = {"type": "string"}
_NS = {"type": ["string", "null"]}
_NT = {"type": ["string", "null"], "format": "date-time"}
_T = {"type": "string", "format": "date-time"}
_STATUS = {"type": "string", "enum": list(views.RANK)}
_AVAILABILITY = ("Availability over the last {window}, in percent: the share of the time in which all of the "
                 "integration's checks were good (ok or warn), read from their states after the failure and success "
                 "thresholds and weighted by time. Time paused, in a maintenance window or before a check's first "
                 "state is left out; a check that never worked makes it 0. The window ends with the current hour "
                 "({cells}); null when no time in it is known. One decimal, more where rounding would say 0 or 100 "
                 "of a partial figure.")
_WINDOW_WORDS = {"24h": ("24 hours", "24 hourly cells"), "7d": ("7 days", "168 hours"), "30d": ("30 days", "720 hours")}

MAX_LIMIT = 500  # results per /api/results request
MAX_WITHIN_DAYS = 36500  # /api/credentials?within_days: a century


def _obj(props: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    return {"type": "object", "properties": props, "required": required if required is not None else list(props)}


SCHEMAS: dict[str, Any] = {
    "Status": _obj({
        "generated_at": _T, "stale": {"type": "boolean"}, "newest_result_at": _NT,
        "interval_s": {"type": "number"},
        "counts": {"type": "object", "additionalProperties": {"type": "integer"}},
        "integrations": {"type": "integer"}, "open_incidents": {"type": "integer"},
        "expiring_credentials": {"type": "integer"}, "worst": {"type": ["string", "null"]}}),
    "CheckStatus": _obj({"check": _S, "status": _STATUS, "code": _NS, "title": _NS, "since": _NT,
                         "last_checked_at": _NT, "last_ok_at": _NT}),
    "Integration": _obj({
        "name": _S, "tenant": _S, "app": _S, "system": _NS, "flow": {"type": "string", "enum": ["app", "delegated"]},
        "mailbox": _S, "tags": {"type": "array", "items": _S}, "paused": {"type": "boolean"}, "status": _STATUS,
        "stale": {"type": "boolean", "description": "a check has had no new result for twice its interval"},
        "code": _NS, "title": _NS, "since": _NT, "last_ok_at": _NT, "fix_first": _NS,
        **{f"availability_{key}": {"type": ["number", "null"], "minimum": 0, "maximum": 100,
                                   "description": _AVAILABILITY.format(window=words, cells=cells)}
           for key, (words, cells) in _WINDOW_WORDS.items()},
        "uptime_24h": {"type": ["number", "null"], "deprecated": True,
                       "description": "Deprecated, removed in the next release: use availability_24h. The share of "
                                      "the last 24 hours' check results that were ok or warn, every check's results "
                                      "pooled: not the integration's availability (a check that never worked still "
                                      "counts the others' results as up)."},
        "open_incidents": {"type": "array", "items": {"type": "integer"}},
        "checks": {"type": "array", "items": {"$ref": "#/components/schemas/CheckStatus"}}}),
    "Result": _obj({
        "id": {"type": "integer"}, "integration": _S, "check": _S,
        "status": {"type": "string", "enum": ["ok", "warn", "fail", "error", "blocked"]}, "code": _NS,
        "summary": _S, "fix": {"type": "array", "items": _S}, "latency_ms": {"type": ["number", "null"]},
        "checked_at": _T,
        "details": {"type": "object", "description": "the check's metrics, and the integration's tenant, flow and "
                    "mailbox (null once it has left the configuration)",
                    "properties": {"tenant": _NS, "flow": _NS, "mailbox": _NS},
                    "required": ["tenant", "flow", "mailbox"]}}),
    "IntegrationDetail": _obj({
        "integration": {"$ref": "#/components/schemas/Integration"},
        "results": {"type": "array", "items": {"$ref": "#/components/schemas/Result"}}}),
    "Incident": _obj({
        "id": {"type": "integer"}, "kind": _S, "code": _S, "title": _S, "integrations": {"type": "array", "items": _S},
        "checks": {"type": "array", "items": _S}, "opened_at": _T, "notified_at": _NT,
        "reminders": {"type": "integer"}, "ack_by": _NS, "ack_at": _NT, "snoozed_until": _NT,
        "status": {"type": "string", "enum": ["open", "resolved"]}}),
    "Credential": _obj({
        "tenant": _S, "app": _S, "client_id": _S,
        "kind": {"type": "string", "enum": ["client_secret", "certificate", "refresh_token"]},
        "key_id": _NS, "display_name": _NS, "hint": _NS, "expires_at": _NT, "days_left": {"type": ["integer", "null"]},
        "expired": {"type": "boolean"}, "source": _S, "last_verified_at": _NT,
        "integrations": {"type": "array", "items": _S}}),
    "SecretsInventory": _obj({
        "generated_at": _T,
        "credentials": {"type": "array", "items": {"type": "object", "required": [
            "app", "client_id", "kind", "key_id", "expires", "days_left", "integrations", "unused", "long_lived",
            "rotation", "reminders_sent"]}},
        "rotations": {"type": "array", "items": {"type": "object", "required": ["app", "old_key_id", "state"]}},
        "events": {"type": "array", "items": {"type": "object", "required": ["app", "step", "ok", "at"]}}}),
    "Error": _obj({"error": _S}),
}


def _param(name: str, desc: str, schema: dict | None = None, where: str = "query", required: bool = False) -> dict:
    return {"name": name, "in": where, "required": required, "description": desc, "schema": schema or _S}


def _get(summary: str, ref: str, params: list[dict] | None = None, many: bool = False,
         not_found: bool = False, bad_request: bool = False) -> dict:
    schema = {"$ref": f"#/components/schemas/{ref}"}
    body = {"type": "array", "items": schema} if many else schema
    responses = {"200": {"description": "OK", "content": {"application/json": {"schema": body}}},
                 "401": {"description": "not signed in", "content": {"application/json": {
                     "schema": {"$ref": "#/components/schemas/Error"}}}}}
    if bad_request:
        responses["400"] = {"description": "a parameter out of shape", "content": {"application/json": {
            "schema": {"$ref": "#/components/schemas/Error"}}}}
    if not_found:
        responses["404"] = {"description": "no such integration", "content": {"application/json": {
            "schema": {"$ref": "#/components/schemas/Error"}}}}
    return {"get": {"summary": summary, "parameters": params or [], "responses": responses}}


_TEXT = {"type": "string", "maxLength": 200}  # pages.MAX_SEARCH and MAX_FILTER; no control character
FILTERS = [_param("q", "the overview's search: a part of the name, mailbox, signing-in account, app (name, name "
                       "in Entra ID, client id), consuming system or a check's diagnosis (code or title), any case",
                  _TEXT),
           _param("tenant", "only this tenant", _TEXT), _param("system", "only this consuming system", _TEXT),
           _param("app", "only this app (its name in the configuration)", _TEXT),
           _param("tag", "only integrations with this tag", _TEXT),
           _param("status", "worst status, `stale`, or `problem` for anything but ok and paused",
                  {"type": "string", "enum": list(views.STATUS_FILTERS)})]
PATHS = {
    "/api/status": _get("Overall status: counts per status, staleness, open incidents", "Status"),
    "/api/integrations": _get("Integrations worst first, with a status per check; the overview's search and filters "
                              "(a 400 for a value over 200 characters, a control character or an unknown status)",
                              "Integration", FILTERS, True, bad_request=True),
    "/api/integrations/{name}": _get("One integration with the latest result of each check", "IntegrationDetail",
                                     [_param("name", "integration name", where="path", required=True)],
                                     not_found=True),
    "/api/results": _get("Stored results, newest first (the `mailwarden check --format json` shape)", "Result", [
        _param("integration", "integration name", required=True), _param("check", "check kind"),
        _param("limit", f"at most this many (1-{MAX_LIMIT}, default 50)",
               {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT})],
        True, not_found=True),
    "/api/incidents": _get("Incidents (the `mailwarden incidents --format json` shape)", "Incident", [
        _param("status", "open (default), resolved or all", {"type": "string", "enum": ["open", "resolved", "all"]})],
        True),
    "/api/credentials": _get("Credential metadata (never a secret), soonest expiry first", "Credential", [
        _param("within_days", "only those expiring within this many days (and expired ones)",
               {"type": "integer", "minimum": 0, "maximum": MAX_WITHIN_DAYS})],
        True),
    "/api/secrets": _get("Credentials inventory (who uses what, lifetimes, unused ones) and rotation progress",
                         "SecretsInventory"),
}


def openapi() -> dict[str, Any]:
    return {"openapi": "3.1.0",
            "info": {"title": "mailwarden API", "version": "1",
                     "description": "Read-only status of Microsoft 365 mailbox integrations. Sign in with the "
                                    "dashboard session, or HTTP Basic with the admin credentials (GET only). "
                                    "Integration.uptime_24h is deprecated and goes in the next release: read "
                                    "availability_24h (and availability_7d, availability_30d) instead."},
            "paths": PATHS, "components": {"schemas": SCHEMAS, "securitySchemes": {
                "basic": {"type": "http", "scheme": "basic"},
                "session": {"type": "apiKey", "in": "cookie", "name": "mailwarden_session"}}},
            "security": [{"basic": []}, {"session": []}]}


# what an Integration object carries: the three availability windows and, for one release, uptime_24h
FIGURES: dict[str, Any] = {"hourly": False, "windows": ("24h", "7d", "30d"), "deprecated_uptime": True}


def _ctx(request: Request):
    web = request.app.state.web
    return web.config(), web.store(), datetime.now(UTC)


async def status(request: Request) -> JSONResponse:
    cfg, store, now = _ctx(request)

    def build():
        items = views.integrations(cfg, store, now, hourly=False, windows=())
        fresh = views.freshness(cfg, store, now, items)
        counts: dict[str, int] = {}
        for v in items:
            counts[v.status] = counts.get(v.status, 0) + 1
        return {"generated_at": views.iso(now), "stale": fresh["stale"], "newest_result_at": views.iso(fresh["newest"]),
                "interval_s": fresh["interval_s"], "counts": counts, "integrations": len(items),
                "open_incidents": len(store.alerts.incidents("open")),
                "expiring_credentials": len(views.credentials(cfg, store, now, views.EXPIRY_WINDOW_DAYS)),
                "worst": items[0].status if items else None}

    return JSONResponse(await asyncio.to_thread(build))


async def integrations(request: Request) -> JSONResponse:
    """The overview's rows as JSON, with its search and filters (``pages.filter_values``): the same rows as the
    overview's address with the same query. An unknown status is a 400 here (the overview says it ignored it)."""
    from mailwarden.monitor.web.pages import filter_values

    cfg, store, now = _ctx(request)
    try:
        values, ignored = filter_values(request.query_params)
    except params.BadParameter as e:
        return JSONResponse({"error": e.detail}, 400)
    if ignored:
        return JSONResponse({"error": ignored[0].replace("was ignored", "is refused")}, 400)

    def build():
        return views.select_views(views.integrations(cfg, store, now, **FIGURES), **values)

    return JSONResponse([v.as_json() for v in await asyncio.to_thread(build)])


async def integration(request: Request) -> JSONResponse:
    cfg, store, now = _ctx(request)
    name = request.path_params["name"]

    def build():
        found = views.integrations(cfg, store, now, name=name, **FIGURES)
        if not found:
            return None
        return {"integration": found[0].as_json(),
                "results": [result_json(cfg, r) for r in store.checks.latest_results(name)]}

    doc = await asyncio.to_thread(build)
    return JSONResponse(doc) if doc else JSONResponse({"error": f"no integration named {name!r}"}, 404)


async def results(request: Request) -> JSONResponse:
    cfg, store, _ = _ctx(request)
    q = request.query_params
    name = q.get("integration") or ""
    try:
        limit = params.integer(q.get("limit") or "50", lo=1, hi=MAX_LIMIT, what="limit")
    except params.BadParameter as e:
        return JSONResponse({"error": e.detail}, 400)

    def read():
        if name not in {i.name for i in store.inventory.integrations()}:
            return None
        return store.checks.results(name, q.get("check") or None, None, limit)

    rows = await asyncio.to_thread(read)
    if rows is None:
        return JSONResponse({"error": f"no integration named {name!r} (pass ?integration=NAME)"}, 404)
    return JSONResponse([result_json(cfg, r) for r in rows])


async def incidents(request: Request) -> JSONResponse:
    _, store, _ = _ctx(request)
    which = request.query_params.get("status") or "open"
    if which not in ("open", "resolved", "all"):
        return JSONResponse({"error": "status is open, resolved or all"}, 400)
    rows = await asyncio.to_thread(store.alerts.incidents, None if which == "all" else which)
    return JSONResponse([views.incident_json(i) for i in rows])


async def credentials(request: Request) -> JSONResponse:
    cfg, store, now = _ctx(request)
    raw = request.query_params.get("within_days")
    try:
        within = params.integer(raw, lo=0, hi=MAX_WITHIN_DAYS, what="within_days") if raw else None
    except params.BadParameter as e:
        return JSONResponse({"error": e.detail}, 400)
    return JSONResponse(await asyncio.to_thread(views.credentials, cfg, store, now, within))


async def openapi_doc(request: Request) -> JSONResponse:
    return JSONResponse(openapi())


ROUTES = [Route("/api/openapi.json", openapi_doc), Route("/api/status", status),
          Route("/api/integrations", integrations), Route("/api/integrations/{name}", integration),
          Route("/api/results", results), Route("/api/incidents", incidents), Route("/api/credentials", credentials)]
