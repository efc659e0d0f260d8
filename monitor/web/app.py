"""The web app factory: pages, actions, /api, /metrics, /healthz, static files; sessions, access rules,
security headers and an access log that never records query strings or /reauth/ tokens.

The app only reads the store, except the people's actions (re-run a check through the running
Monitor's runner, acknowledge, snooze through the alerts layer's store methods).

The middleware, outermost first: ``Headers`` (security headers on every answer, errors included; one log line;
an unexpected exception becomes a plain 500, never a traceback), ``Compress`` (gzip, not for /reauth and /auth),
``ClientAddress`` (the client behind a trusted
proxy), ``HostGuard`` (the Host allow-list, DNS rebinding), ``BodyLimit`` (64 KiB, counted while reading),
Starlette's sessions, and ``Gate`` (who is signed in; sessions checked and ended on the server).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.gzip import GZipMiddleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from mailwarden.monitor.config import Config, WebConfig
from mailwarden.monitor.web import api, csrf, incidents, pages, reauth, secrets_view, systems, tenants
from mailwarden.monitor.web.auth import (
    CLIENT,
    PEER,
    Access,
    Sessions,
    Throttled,
    access_from,
    login_url,
    session_key,
)
from mailwarden.monitor.web.metrics import Metrics
from mailwarden.monitor.web.throttle import client_key

access_log = logging.getLogger("mailwarden.web.access")
log = logging.getLogger("mailwarden.web")
MAX_TARGET = 8192  # bytes of path and query string
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
        except Exception:
            # Never a traceback to the client, never a response without these headers: Starlette's own 500 is
            # sent outside this middleware.
            log.exception("request failed", extra={"method": scope["method"], "path": _REAUTH.sub(
                r"\1[redacted]", scope["path"])})
            if status[0]:
                raise  # the response is under way: the connection is dropped
            await _error(scope, 500, "internal error (see the service log)")(scope, receive, send_with_headers)
        finally:
            client = scope.get("client") or ("-", 0)
            # The path only: a query string may carry a code or a token, and /reauth/<token> is one.
            access_log.info("%s %s %s", scope["method"], _REAUTH.sub(r"\1[redacted]", scope["path"]), status[0],
                            extra={"client": client[0], "status": status[0],
                                   "ms": round((time.perf_counter() - started) * 1000, 1)})


def _error(scope: Scope, code: int, text: str, headers: Mapping[str, str] | None = None) -> Response:
    """A refusal in the shape of its path: JSON under /api and at /metrics, elsewhere a page in the app's layout
    (pages.error_page; plain text if that page cannot be rendered)."""
    if scope["path"].startswith("/api/") or scope["path"] == "/metrics":
        return JSONResponse({"error": text}, code, headers=headers)
    return pages.error_page(scope, code, text, headers)


class ClientAddress:
    """``scope["client"]`` becomes the client a trusted proxy names in X-Forwarded-For (uvicorn's middleware:
    the right-most address not of a trusted proxy); the TCP peer stays in ``scope[PEER]`` for ``auth: proxy``.
    From any other peer the header is ignored."""

    def __init__(self, app: ASGIApp, *, trusted: tuple[str, ...]):
        self.app = app
        self.proxied = ProxyHeadersMiddleware(app, trusted_hosts=list(trusted))  # type: ignore[arg-type]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        client = scope.get("client")
        scope[PEER] = client[0] if client else ""
        await self.proxied(scope, receive, send)  # type: ignore[arg-type]  # Starlette's Scope: uvicorn's, untyped


class Compress:
    """gzip for the pages, the API and /metrics (the overview of 1,000 integrations is about 1.4 MB of HTML, some
    60 KB compressed: bench/overview.py), with Starlette's GZipMiddleware for a client that accepts it. Never for
    /reauth and /auth, whose answers carry a link token or a sign-in code beside what the address asked for (the
    reflected text a compression attack needs); the pages' CSRF token is masked afresh in every answer
    (``csrf.token``)."""

    SKIP = ("/reauth", "/auth/")

    def __init__(self, app: ASGIApp, *, minimum_size: int = 1024):
        self.app = app
        self.gzip = GZipMiddleware(app, minimum_size=minimum_size)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith(self.SKIP):
            await self.app(scope, receive, send)
            return
        await self.gzip(scope, receive, send)


class HostGuard:
    """The Host allow-list (``csrf.allowed_hosts``) with Starlette's TrustedHostMiddleware: 400 for any other
    Host, so a DNS-rebinding page cannot read or act. ``/healthz`` answers any Host (health checks, balancers)."""

    def __init__(self, app: ASGIApp, *, allowed: list[str]):
        self.app, self.allowed = app, allowed
        self.checked = TrustedHostMiddleware(self._passed, allowed_hosts=allowed, www_redirect=False)
        self._warned = 0.0

    async def _passed(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope["mailwarden.host_ok"] = True
        await self.app(scope, receive, send)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] == "/healthz":
            await self.app(scope, receive, send)
            return
        await self.checked(scope, receive, send)
        if not scope.get("mailwarden.host_ok") and time.monotonic() - self._warned > 60:
            self._warned = time.monotonic()
            host = Request(scope).headers.get("host", "")
            log.warning("request refused: its Host is not one this app answers to (web.base_url, web.listen, "
                        "loopback, web.allowed_hosts)", extra={"host": host[:100]})


class BodyLimit:
    """At most ``limit`` bytes of request body, counted as they arrive: a larger Content-Length is refused (413)
    before anything is read, and a body that grows past the limit ends in 413 there. Also bounds the request
    target (414)."""

    def __init__(self, app: ASGIApp, *, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if len(scope.get("raw_path") or scope["path"].encode()) + len(scope.get("query_string", b"")) > MAX_TARGET:
            await _error(scope, 414, "request target too long")(scope, receive, send)
            return
        lengths = [v for k, v in scope["headers"] if k == b"content-length"]
        if lengths:
            if len(lengths) > 1 or not lengths[0].isdigit() or len(lengths[0]) > 18:
                await _error(scope, 400, "malformed Content-Length", {"connection": "close"})(scope, receive, send)
                return
            if int(lengths[0]) > self.limit:
                await _error(scope, 413, f"request body over {self.limit // 1024} KiB",
                             {"connection": "close"})(scope, receive, send)
                return
        received = 0

        async def bounded() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise HTTPException(413, f"request body over {self.limit // 1024} KiB",
                                        headers={"connection": "close"})
            return message

        await self.app(scope, bounded, send)


class Gate:
    """The access rule: pages redirect to /login, /api and /metrics answer 401. Signed-in sessions are checked
    against the server's rules (``auth.Sessions``): stamped at sign-in, ended at sign-out."""

    def __init__(self, app: ASGIApp, state: WebState, sessions: Sessions):
        self.app, self.state, self.sessions = app, state, sessions

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        access = self.state.access
        path = scope["path"]
        public = path.startswith(PUBLIC) or (path == "/metrics" and self.state.web.public_metrics)
        request = Request(scope)
        CLIENT.set(client_key(request.client.host if request.client else None))
        machine = path.startswith("/api/") or path == "/metrics"
        session = scope["session"]
        started: tuple[str, int] | None = None  # the session this request came with, when it is signed in
        verdict = "ok"
        if access.mode == "password" and session.get("user"):
            verdict = await self.sessions.check(session)
            if verdict == "ok":
                started = (session["sid"], session["iat"])
            elif verdict == "ended":
                session.clear()  # the cookie is deleted with this response
        try:
            user = await access.user_of(request, basic_ok=machine and scope["method"] in ("GET", "HEAD"),
                                        session_ok=verdict == "ok")
        except Throttled as exc:
            await _error(scope, 429, str(exc.detail), exc.headers)(scope, receive, send)
            return
        scope.setdefault("state", {})["user"] = user
        if user is None and not public:
            if machine or access.mode == "proxy":
                headers = {"www-authenticate": 'Basic realm="mailwarden"'} if access.mode == "password" else {}
                why = ("sign in through the reverse proxy" if access.mode == "proxy"
                       else "sign in (session or HTTP Basic)")
                response: Response = JSONResponse({"error": f"not signed in: {why}"}, 401, headers=headers)
            else:
                response = RedirectResponse(login_url(request), 303)
            await response(scope, receive, send)
            return
        if access.mode != "password":
            await self.app(scope, receive, send)
            return

        async def send_session(message: Message) -> None:
            if message["type"] == "http.response.start":
                if session.get("user") and not session.get("sid"):
                    self.sessions.stamp(session)  # a sign-in just now (the login handler starts a clean session)
                if started is not None and session.get("sid") != started[0]:
                    await self.sessions.end(*started)  # signed out (or signed in again): over on the server too
            await send(message)

        await self.app(scope, receive, send_session)


async def healthz(request: Request) -> JSONResponse:
    monitor = request.app.state.web.monitor
    if monitor is None or not hasattr(monitor, "leading"):
        return JSONResponse({"status": "ok"})
    # leader: this instance runs the scheduler (monitor.leader); buffered: results waiting for the database
    return JSONResponse({"status": "ok", "leader": monitor.leading, "buffered": len(monitor.buffer)})


async def metrics_endpoint(request: Request) -> Response:
    # the collector reads the store: off the event loop, which serves every other request and the scheduler
    body, ctype = await asyncio.to_thread(request.app.state.web.metrics.render)
    return Response(body, media_type=ctype)


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    headers = dict(exc.headers or {})
    if exc.status_code == 429 and request.url.path == "/login" and request.method == "POST":
        wait = int(headers.get("retry-after", "60"))
        words = f"{wait} seconds" if wait < 90 else f"{-(-wait // 60)} minutes"
        response = pages.render(request, "login.html", 429, next="/", error=None, throttled=words)
        response.headers.update(headers)
        return response
    return _error(request.scope, exc.status_code, str(exc.detail), headers or None)


def create_app(config: Callable[[], Config] | Config, store: Callable[[], Any] | Any, *, monitor: Any = None,
               access: Access | None = None, previous: Starlette | None = None) -> Starlette:
    """``config`` and ``store`` may be callables (a Monitor swaps its runtime on reload) or plain objects.
    ``previous``: the app this one replaces after a reload (``monitor.web.server``): its metrics carry on, and so does
    the process's random session key while no ``web.session_key`` is set: sessions survive a reload unless the
    password or the key changed, which ends them."""
    get_config = config if callable(config) else (lambda: config)
    get_store = store if callable(store) else (lambda: store)
    cfg = get_config()
    state = WebState(get_config, get_store, access or access_from(cfg.web, cfg.base_dir), cfg.web, monitor)
    if previous is not None:
        state.metrics = previous.state.web.metrics
    else:
        state.metrics = Metrics(get_config, get_store)
        if monitor is not None and hasattr(monitor, "leading"):
            from mailwarden.monitor.leader import LeaderCollector

            state.metrics.registry.register(LeaderCollector(monitor))
    https = cfg.web.base_url.startswith("https://")
    if previous is not None and cfg.web.session_key is None and previous.state.web.web.session_key is None:
        secret = previous.state.session_secret  # the random key of this process
    else:
        secret = session_key(cfg.web, cfg.base_dir)
    sessions = Sessions(secret=secret, password_hash=state.access.password_hash,
                        lifetime_s=float(cfg.web.session_max_age), store=get_store)
    hosts = csrf.allowed_hosts(cfg.web)
    routes = [*pages.ROUTES, *incidents.ROUTES, *systems.ROUTES, *tenants.ROUTES, *reauth.ROUTES, *api.ROUTES,
              *secrets_view.ROUTES,
              Route("/healthz", healthz),
              Route("/metrics", metrics_endpoint),
              Mount("/static", StaticFiles(directory=STATIC_DIR), name="static")]
    # Outermost first: every answer (refusals and errors included) gets the security headers and a log line.
    middleware = [Middleware(Headers, https=https),
                  Middleware(Compress),
                  Middleware(ClientAddress, trusted=state.access.proxies.entries),
                  Middleware(HostGuard, allowed=hosts),
                  Middleware(BodyLimit, limit=csrf.MAX_BODY),
                  Middleware(SessionMiddleware, secret_key=secret,
                             session_cookie="mailwarden_session", max_age=int(cfg.web.session_max_age),
                             same_site="lax", https_only=https),
                  Middleware(Gate, state=state, sessions=sessions)]
    app = Starlette(routes=routes, middleware=middleware, exception_handlers={HTTPException: http_error})
    app.state.web = state
    app.state.allowed_hosts = hosts
    app.state.sessions = sessions
    app.state.session_secret = secret
    return app
