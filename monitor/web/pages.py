"""The HTML pages and the people's actions (every POST goes through ``csrf.protected``)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any, TypedDict
from urllib.parse import quote, urlencode

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from mailwarden.monitor.web import csrf, params, views  # params registers the {id:id} route type
from mailwarden.monitor.web.auth import safe_next


def page_context(request: Request | None, state: Any, now: datetime, **extra: Any) -> dict[str, Any]:
    """What every template gets; ``request`` is None for the static report."""
    cfg = state.config()
    ctx = {"now": now, "static": request is None, "refresh": int(cfg.web.refresh), "base_url": cfg.web.base_url,
           "user": None, "csrf": "", "flash": None, "auth_mode": state.access.mode,
           "can_rerun": state.monitor is not None and request is not None}
    if request is not None:
        ctx["user"] = request.scope.get("state", {}).get("user")
        ctx["csrf"] = csrf.token(request)
        ctx["flash"] = request.session.pop("flash", None)
    ctx.update(extra)
    return ctx


# the overview's form, in the order its address writes them
FILTER_KEYS = ("q", "tenant", "system", "app", "tag", "status", "group")
MAX_SEARCH = 200  # characters of a search: more than any name, address or client id it can match
MAX_FILTER = 200  # characters of a filter's value (a tenant, system, app or tag name)
# ok and paused integrations per page of the overview (``?page=N``, ``?page=all``): every other one (failing,
# warning, pending, stale) is on every page. 1,000 integrations on one page were 1.4 MB of HTML (bench/overview.py).
PAGE_ROWS = 100
MAX_PAGE = 10**6


def overview_url(filters: dict[str, str], **changes: str) -> str:
    """The overview's address with ``filters`` (those set) and ``changes`` (a value, or "" to drop it); the page
    (``page``) only where ``changes`` names it: a link to other filters starts at the first page."""
    merged = {**filters, **changes}
    query = urlencode([(k, merged[k]) for k in (*FILTER_KEYS, "page") if merged.get(k)])
    return "/?" + query if query else "/"


def paginate(shown: list[views.IntegrationView], page: int | None) -> tuple[set[int], dict[str, Any] | None]:
    """Which of ``shown`` (in the table's order: worst first, or group after group) the overview's page ``page``
    leaves out: ok and paused rows (``views.quiet``) beyond the page's ``PAGE_ROWS``, ``page`` None for none.
    Returns (the ``id()`` of the rows left out, the pager: None when every quiet row fits one page)."""
    quiet = [v for v in shown if views.quiet(v)]
    pages = max(1, -(-len(quiet) // PAGE_ROWS))
    if pages == 1:
        return set(), None
    if page is None:
        return set(), {"page": None, "pages": pages, "quiet": len(quiet), "first": 1, "last": len(quiet),
                       "size": PAGE_ROWS}
    page = min(page, pages)
    first = (page - 1) * PAGE_ROWS
    kept = quiet[first:first + PAGE_ROWS]
    left_out = {id(v) for v in quiet} - {id(v) for v in kept}
    return left_out, {"page": page, "pages": pages, "quiet": len(quiet), "first": first + 1,
                      "last": first + len(kept), "size": PAGE_ROWS}


def overview_context(state: Any, now: datetime, *, tenant: str | None = None, tag: str | None = None,
                     status: str | None = None, hourly: bool = True, system: str | None = None,
                     app: str | None = None, q: str | None = None, group: str | None = None,
                     notices: list[str] | None = None, page: int | None = None) -> dict[str, Any]:
    """``hourly=False``: no hourly availability cells, the 24 h figure only (the report). ``q``: the search;
    ``group``: one of ``views.GROUPS``; ``notices``: what the page says about its address (a value ignored);
    ``page``: which ``PAGE_ROWS`` of the ok and paused rows the table lists (``paginate``), None for all."""
    cfg, store = state.config(), state.store()
    incidents = store.alerts.incidents("open")
    everything = views.integrations(cfg, store, now, incidents=incidents, hourly=hourly, fix=False)
    shown = views.select_views(everything, tenant=tenant, tag=tag, status=status, system=system, app=app, q=q)
    creds = views.credentials(cfg, store, now, views.EXPIRY_WINDOW_DAYS)
    counts: dict[str, int] = {}
    for v in everything:
        counts[v.status] = counts.get(v.status, 0) + 1
    apps: dict[str, str] = {}
    for v in everything:
        apps.setdefault(v.app, views.group_key(v, "app")[1])
    filters = {"q": q or "", "tenant": tenant or "", "system": system or "", "app": app or "", "tag": tag or "",
               "status": status or "", "group": group or ""}
    grouped = views.groups(shown, group) if group else None
    left_out, pager = paginate([v for g in grouped for v in g.rows] if grouped else shown, page)
    listed = [v for v in shown if id(v) not in left_out] if left_out else shown
    if grouped and left_out:
        for g in grouped:
            kept = [v for v in g.rows if id(v) not in left_out]
            g.hidden, g.rows = len(g.rows) - len(kept), kept
    return {"integrations": shown, "listed": listed, "pager": pager, "all_count": len(everything), "counts": counts,
            "stale_count": sum(1 for v in everything if v.stale),
            "fresh": views.freshness(cfg, store, now, everything), "incidents": incidents,
            "expiring": creds, "tenants": sorted({v.tenant for v in everything}),
            "tags": sorted({t for v in everything for t in v.tags}), "statuses": views.STATUS_FILTERS,
            "systems": sorted({v.system for v in everything if v.system}, key=str.casefold),
            "apps": sorted(apps.items(), key=lambda a: (a[1].casefold(), a[0])), "grouping": views.GROUPS,
            "groups": grouped, "filters": filters,
            "filtered": any(filters[k] for k in FILTER_KEYS if k != "group"), "notices": notices or [],
            "overview_url": overview_url, "max_search": MAX_SEARCH, **queue_notes(cfg, store)}


def queue_notes(cfg: Any, store: Any) -> dict[str, Any]:
    """Queue mode, for the footer: ``queue_lag``, how long the oldest ready check has waited for a worker when that
    is more than a check interval (``defaults.interval``: the checks are falling behind), and ``queue_no_worker``,
    whether no worker sent a heartbeat within ``stalled_after``. Nothing in local mode, or when unreadable."""
    none = {"queue_lag": None, "queue_no_worker": False}
    if cfg.execution.mode != "queue":
        return none
    from sqlalchemy.exc import SQLAlchemyError

    from mailwarden.monitor.due import read_stats

    try:
        stats = read_stats(store.engine, float(cfg.execution.queue.stalled_after))
    except SQLAlchemyError:
        return none
    oldest = stats.oldest_ready_s
    settings = cfg.execution.queue
    return {"queue_lag": oldest if oldest is not None and oldest > float(cfg.defaults.interval) else None,
            "queue_no_worker": stats.workers_live == 0, "stalled_after": settings.stalled_after,
            "workerless_after": settings.workerless_after}


def render(request: Request, template: str, status_code: int = 200, **ctx: Any) -> HTMLResponse:
    state = request.app.state.web
    html = state.env.get_template(template).render(**page_context(request, state, datetime.now(UTC), **ctx))
    return HTMLResponse(html, status_code)


ERROR_HEADINGS = {400: "Bad request", 403: "Refused", 404: "Not found", 405: "Method not allowed",
                  409: "Not possible here", 410: "Gone", 413: "Too large", 414: "Address too long",
                  429: "Too many requests", 500: "Something went wrong", 503: "Not available"}
ERROR_HINTS = {404: "The address may be mistyped, or the integration was renamed or removed from the configuration.",
               410: "This link was used already or has expired; the newest alert has a fresh one.",
               500: "The error is in the service log. Reload the page to try again."}


def error_page(scope: Any, code: int, text: str, headers: Mapping[str, str] | None = None) -> Response:
    """A refusal or an error (404, 410, 500, ...) as a page in the app's layout, for the app's error helper
    (``app._error``) on every path that is not the API's. It reads nothing from the store, so it renders when the
    store does not; if it cannot be rendered at all the answer is the plain text line it replaces. The header
    names the user and offers "Sign out" only where the request came with a signed-in session."""
    try:
        state = scope["app"].state.web
        user = scope.get("state", {}).get("user")
        # the sign-out form needs the session's CSRF token; before the session middleware there is none
        token = csrf.token(Request(scope)) if user and "session" in scope else ""
        reason = HTTPStatus(code).phrase if code in {s.value for s in HTTPStatus} else "Error"
        ctx = {"now": datetime.now(UTC), "static": False, "refresh": 0, "base_url": state.web.base_url,
               "user": user, "csrf": token, "flash": None,
               "auth_mode": state.access.mode, "can_rerun": False, "code": code, "reason": reason,
               "heading": ERROR_HEADINGS.get(code, reason), "text": text, "hint": ERROR_HINTS.get(code)}
        html = state.env.get_template("error.html").render(**ctx)
    except Exception:  # noqa: BLE001 - the error's own page must never fail: its text line instead
        return PlainTextResponse(f"{code}: {text}", code, headers=headers)
    return HTMLResponse(html, code, headers=headers)


class Filters(TypedDict):
    """The search and the filters of the overview (``filter_values``): keyword arguments of ``views.select_views``
    and ``overview_context``."""

    q: str | None
    status: str | None
    tenant: str | None
    system: str | None
    app: str | None
    tag: str | None


def filter_values(q: Any) -> tuple[Filters, list[str]]:
    """The search and the filters of a query (the overview's address, /api/integrations): keyword arguments of
    ``views.select_views`` (None where not set), and what is said about a value ignored (an unknown status). A
    search or a value out of shape (too long, a control character) raises ``params.BadParameter`` (a 400)."""
    status, said = params.choice(q.get("status"), views.STATUS_FILTERS, what="status")
    search = params.text(q.get("q"), max_len=MAX_SEARCH, what="the search (q)") or None

    def text(k: str) -> str | None:
        return params.text(q.get(k), max_len=MAX_FILTER, what=k) or None

    values: Filters = {"q": search, "status": status, "tenant": text("tenant"), "system": text("system"),
                       "app": text("app"), "tag": text("tag")}
    return values, [said] if said else []


async def overview(request: Request) -> Response:
    """The overview; its address carries the search, the filters and the grouping (a GET form, so it works without
    script and every view can be bookmarked). A search or a value out of shape (too long, a control character) is
    a 400 saying why; an unknown status or grouping is ignored, and the page says so. ``page``: which
    ``PAGE_ROWS`` of the ok and paused rows are listed (``all``: every one; past the last: the last, said so)."""
    state, q = request.app.state.web, request.query_params
    values, notices = filter_values(q)
    group, said = params.choice(q.get("group"), views.GROUPS, what="grouping")
    notices += [said] if said else []
    raw_page = (q.get("page") or "").strip()
    page = None if raw_page == "all" else params.integer(raw_page or "1", lo=1, hi=MAX_PAGE, what="page (or all)")
    ctx = await asyncio.to_thread(overview_context, state, datetime.now(UTC), group=group, notices=notices,
                                  page=page, **values)
    if ctx["pager"] and page is not None and page > ctx["pager"]["pages"]:
        ctx["notices"].append(f"page {page} is past the last ({ctx['pager']['pages']}): the last is shown")
    return render(request, "overview.html", **ctx)


async def integration(request: Request) -> Response:
    state, name = request.app.state.web, request.path_params["name"]
    data = await asyncio.to_thread(views.detail, state.config(), state.store(), name, datetime.now(UTC))
    if data is None:
        raise HTTPException(404, f"no integration named {name!r}")
    from mailwarden.monitor.web.reauth import link_of

    data["reauth"]["link"] = await asyncio.to_thread(link_of, request, name) if data["reauth"]["delegated"] else None
    return render(request, "integration.html", d=data)


async def login_form(request: Request) -> Response:
    state = request.app.state.web
    nxt = safe_next(request.query_params.get("next"))
    if state.access.mode != "password" or request.session.get("user"):
        return RedirectResponse(nxt, 303)
    return render(request, "login.html", next=nxt, error=None)


@csrf.protected
async def login(request: Request, form: dict[str, str]) -> Response:
    state = request.app.state.web
    nxt = safe_next(form.get("next"))
    if state.access.mode != "password":
        return RedirectResponse(nxt, 303)
    ok = await asyncio.to_thread(state.access.check, form.get("username", ""), form.get("password", ""))
    if not ok:
        await asyncio.sleep(0.5)  # slows guessing; scrypt already costs tens of ms
        return render(request, "login.html", 401, next=nxt, error="Wrong user name or password.")
    request.session.clear()  # a new session (and CSRF token) at sign-in: no fixation
    request.session["user"] = state.access.user
    return RedirectResponse(nxt, 303)


@csrf.protected
async def logout(request: Request, form: dict[str, str]) -> Response:
    request.session.clear()
    return RedirectResponse("/login" if request.app.state.web.access.mode == "password" else "/", 303)


def _back(request: Request, name: str | None, message: str) -> RedirectResponse:
    request.session["flash"] = message
    if name and name.startswith("/"):  # an incident's page or the incidents page (``safe_name``)
        return RedirectResponse(name, 303)
    return RedirectResponse(f"/integrations/{quote(name)}" if name else "/", 303)


@csrf.protected
async def rerun(request: Request, form: dict[str, str]) -> Response:
    """Run one check now through the running Monitor's runner (its limits and locks apply)."""
    state = request.app.state.web
    name, kind = request.path_params["name"], request.path_params["check"]
    monitor = state.monitor
    if monitor is None:
        raise HTTPException(409, "checks run only in `mailwarden serve` (this app has no scheduler)")
    try:
        integ = monitor.runtime.config.integration(name)
    except KeyError:
        raise HTTPException(404, f"no integration named {name!r}") from None
    if kind not in integ.checks:
        raise HTTPException(404, f"{name} has no {kind!r} check")
    # stored, then alerts and metrics as after a scheduled run: the runner's ResultPipeline, whose subscribers the
    # Monitor set
    result = await monitor.runtime.runner.run_one(name, kind)
    status = result.outcome.status.value
    return _back(request, name, f"{kind} re-run: {status}" + (f" ({result.outcome.code})" if result.outcome.code
                                                               else ""))


def _open_incident(store: Any, incident_id: int) -> Any:
    inc = store.alerts.get_incident(incident_id)
    if inc is None or inc.status != "open":
        raise HTTPException(404, f"no open incident #{incident_id}")
    return inc


@csrf.protected
async def ack(request: Request, form: dict[str, str]) -> Response:
    state = request.app.state.web
    store, incident_id = state.store(), request.path_params["id"]
    await asyncio.to_thread(_open_incident, store, incident_id)
    who = request.scope.get("state", {}).get("user") or "web"
    await asyncio.to_thread(store.alerts.ack_incident, incident_id, who, datetime.now(UTC))
    return _back(request, safe_name(form), f"incident #{incident_id} acknowledged by {who}: reminders stop")


@csrf.protected
async def snooze(request: Request, form: dict[str, str]) -> Response:
    from mailwarden.alerts.incidents import parse_until

    state = request.app.state.web
    store, incident_id = state.store(), request.path_params["id"]
    await asyncio.to_thread(_open_incident, store, incident_id)
    try:
        until = parse_until(None, form.get("for") or "4h", datetime.now(UTC))
    except ValueError as exc:
        raise HTTPException(400, str(exc)) from None
    await asyncio.to_thread(store.alerts.snooze_incident, incident_id, until)
    return _back(request, safe_name(form), f"incident #{incident_id} snoozed until {views.iso(until)}")


def safe_name(form: dict[str, str]) -> str | None:
    """Where an action returns: an integration's name, or the incidents page or one incident's page it was taken on."""
    name = form.get("back") or ""
    if _INCIDENT_PAGE.fullmatch(name):
        return name
    return name if name and all(c.isalnum() or c in "_.-" for c in name) else None


_INCIDENT_PAGE = re.compile(r"/incidents(?:/[0-9]{1,18})?", re.ASCII)


ROUTES = [
    Route("/", overview), Route("/integrations/{name}", integration),
    Route("/login", login_form, methods=["GET"]), Route("/login", login, methods=["POST"]),
    Route("/logout", logout, methods=["POST"]),
    Route("/integrations/{name}/checks/{check}/run", rerun, methods=["POST"]),
    Route("/incidents/{id:id}/ack", ack, methods=["POST"]),
    Route("/incidents/{id:id}/snooze", snooze, methods=["POST"]),
]
