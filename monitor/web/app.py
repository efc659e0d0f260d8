"""The web app factory: pages, actions, /api, /metrics, /healthz, static files; sessions, access rules,
security headers and an access log that never records query strings or /reauth/ tokens.

The app only reads the store, except the people's actions (re-run a check through the running
Monitor's runner, acknowledge, snooze through the alerts layer's store methods).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mailwarden.monitor.config import Config, WebConfig
from mailwarden.monitor.web import api, incidents, pages, reauth, secrets_view
from mailwarden.monitor.web.auth import Access, access_from, login_url, session_key
from mailwarden.monitor.web.metrics import Metrics

access_log = logging.getLogger("mailwarden.web.access")
STATIC_DIR = Path(str(resources.files("mailwarden.dashboards") / "static"))
# /reauth/ and the callback: the signed single-use link is the credential (monitor.web.reauth)
PUBLIC = ("/login", "/healthz", "/static/", "/reauth/", "/auth/callback")
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
_REAUTH = re.compile(r"(/reauth/)[^/?#]+")


def templates() -> Environment:
    env = Environment(loader=PackageLoader("mailwarden.dashboards", "templates"),
                      autoescape=select_autoescape(["html"]), trim_blocks=True, lstrip_blocks=True)
    from mailwarden.monitor.web import svg, views

    env.globals.update(svg=svg, views=views, LABEL=views.LABEL)
    return env


@dataclass
class WebState:
    """What the routes reach: the current config and store (the Monitor swaps its runtime on reload)."""

    config: Callable[[], Config]
    store: Callable[[], Any]
    access: Access
    web: WebConfig
    monitor: Any = None  # monitor.scheduler.Monitor when serving; None for a bare app
    env: Environment = field(default_factory=templates)
    metrics: Metrics | None = None

    @property
    def base_url(self) -> str:
        return self.web.base_url


class Headers:
    """Security headers on every response, and one access-log line per request (path only)."""

    def __init__(self, app: ASGIApp, *, https: bool):
        self.app, self.https = app, https

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started, status = time.perf_counter(), [0]

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"server"]
                if not any(k.lower() == b"content-security-policy" for k, _ in headers):  # a page may narrow it
                    headers.append((b"content-security-policy", CSP.encode()))
                headers += [(b"x-frame-options", b"DENY"),
                            (b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"same-origin"),
                            (b"cross-origin-opener-policy", b"same-origin")]
                if not scope["path"].startswith("/static/"):
                    headers.append((b"cache-control", b"no-store"))
                if self.https:
                    headers.append((b"strict-transport-security", b"max-age=31536000"))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        finally:
            client = scope.get("client") or ("-", 0)
            # The path only: a query string may carry a code or a token, and /reauth/<token> is one.
            access_log.info("%s %s %s", scope["method"], _REAUTH.sub(r"\1[redacted]", scope["path"]), status[0],
                            extra={"client": client[0], "status": status[0],
                                   "ms": round((time.perf_counter() - started) * 1000, 1)})


class Gate:
    """The access rule: pages redirect to /login, /api and /metrics answer 401."""

    def __init__(self, app: ASGIApp, state: WebState):
        self.app, self.state = app, state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        public = path.startswith(PUBLIC) or (path == "/metrics" and self.state.web.public_metrics)
        request = Request(scope)
        machine = path.startswith("/api/") or path == "/metrics"
        user = self.state.access.user_of(request, basic_ok=machine and scope["method"] in ("GET", "HEAD"))
        scope.setdefault("state", {})["user"] = user
        if user is None and not public:
            if machine or self.state.access.mode == "proxy":
                headers = {"www-authenticate": 'Basic realm="mailwarden"'} if self.state.access.mode == "password" \
                    else {}
                why = ("sign in through the reverse proxy" if self.state.access.mode == "proxy"
                       else "sign in (session or HTTP Basic)")
                response: Response = JSONResponse({"error": f"not signed in: {why}"}, 401, headers=headers)
            else:
                response = RedirectResponse(login_url(request), 303)
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


async def healthz(request: Request) -> JSONResponse:
    monitor = request.app.state.web.monitor
    if monitor is None or not hasattr(monitor, "leading"):
        return JSONResponse({"status": "ok"})
    # leader: this instance runs the scheduler (monitor.leader); buffered: results waiting for the database
    return JSONResponse({"status": "ok", "leader": monitor.leading, "buffered": len(monitor.buffer)})


async def metrics_endpoint(request: Request) -> Response:
    body, ctype = request.app.state.web.metrics.render()
    return Response(body, media_type=ctype)


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if request.url.path.startswith("/api/"):
        return JSONResponse({"error": exc.detail}, exc.status_code)
    return PlainTextResponse(f"{exc.status_code}: {exc.detail}", exc.status_code)


def create_app(config: Callable[[], Config] | Config, store: Callable[[], Any] | Any, *, monitor: Any = None,
               access: Access | None = None) -> Starlette:
    """``config`` and ``store`` may be callables (a Monitor swaps its runtime on reload) or plain objects."""
    get_config = config if callable(config) else (lambda: config)
    get_store = store if callable(store) else (lambda: store)
    cfg = get_config()
    state = WebState(get_config, get_store, access or access_from(cfg.web, cfg.base_dir), cfg.web, monitor)
    state.metrics = Metrics(get_config, get_store)
    if monitor is not None and hasattr(monitor, "leading"):
        from mailwarden.monitor.leader import LeaderCollector

        state.metrics.registry.register(LeaderCollector(monitor))
    https = cfg.web.base_url.startswith("https://")
    routes = [*pages.ROUTES, *incidents.ROUTES, *reauth.ROUTES, *api.ROUTES, *secrets_view.ROUTES,
              Route("/healthz", healthz),
              Route("/metrics", metrics_endpoint),
              Mount("/static", StaticFiles(directory=STATIC_DIR), name="static")]
    middleware = [Middleware(Headers, https=https),
                  Middleware(SessionMiddleware, secret_key=session_key(cfg.web, cfg.base_dir),
                             session_cookie="mailwarden_session", max_age=int(cfg.web.session_max_age),
                             same_site="lax", https_only=https),
                  Middleware(Gate, state=state)]
    app = Starlette(routes=routes, middleware=middleware, exception_handlers={HTTPException: http_error})
    app.state.web = state
    return app
