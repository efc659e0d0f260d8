"""Running the web app inside `serve` and `demo`: uvicorn as a task in the scheduler's asyncio loop.

The socket is bound before the loop starts, so a busy port or a bad access rule stops the command at
once with a message (exit 3) instead of a half-started service. uvicorn's own signal handling and
access log are off: the command owns SIGINT/SIGTERM/SIGHUP, and ``monitor.web.app`` logs requests
without query strings. uvicorn's proxy headers are off too: ``monitor.web.app.ClientAddress`` reads
X-Forwarded-For from ``web.trusted_proxies`` only. At most ``MAX_CONNECTIONS`` connections and requests are
served at once (uvicorn answers 503 past it), so a flood of connections cannot grow the process without bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from dataclasses import dataclass
from typing import Any

import uvicorn

from mailwarden.errors import ConfigError, MailwardenError
from mailwarden.monitor.web.app import create_app
from mailwarden.monitor.web.auth import access_from, session_key

log = logging.getLogger("mailwarden.web")
MAX_CONNECTIONS = 256


class _Server(uvicorn.Server):
    def capture_signals(self):  # the serve loop handles signals itself
        return contextlib.nullcontext()


class Swappable:
    """The ASGI app uvicorn serves: the current web app, replaced whole on a reload (a request already under way
    finishes on the app it started on)."""

    def __init__(self, app: Any):
        self.current = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.current(scope, receive, send)


# What a reload cannot change while the process runs: the socket is bound at start, and a web app that did not start
# (off, or no access rule) cannot start later. Any other web.* setting is rebuilt at once.
FIXED = ("enabled", "listen")


def reload_problem(old: Any, new: Any) -> str | None:
    """Why ``new`` (a Config) cannot replace ``old`` in a running process because of its web settings, or None.
    Resolves what the new web app would need (password hash, session key references) so that a reload is refused
    before anything is swapped, never half-applied."""
    changed = [k for k in FIXED if getattr(old.web, k) != getattr(new.web, k)]
    if (old.web.auth_mode() is None) != (new.web.auth_mode() is None):
        changed.append("auth" if new.web.auth_mode() is None else "auth/password_hash (the web app did not start)")
    if changed:
        return (f"web.{', web.'.join(changed)} changed: a reload cannot apply that (restart mailwarden); the running "
                "config stays as it was")
    if new.web.enabled and new.web.auth_mode() is not None:
        try:
            access_from(new.web, new.base_dir)
            session_key(new.web, new.base_dir)
        except MailwardenError as exc:
            return f"{exc.message()}; the running config stays as it was"
    return None


@dataclass
class WebServer:
    app: Swappable
    sock: socket.socket
    url: str
    monitor: Any = None
    server: _Server | None = None
    task: asyncio.Task | None = None

    def rebuild(self) -> None:
        """A new web app from the monitor's current config (after a reload): access rule, password, allowed hosts,
        trusted proxies, session lifetime and the rest of web.*; metrics carry on. Raises on a bad setting (the
        caller keeps the old app)."""
        monitor = self.monitor
        self.app.current = create_app(lambda: monitor.runtime.config, lambda: monitor.runtime.store,
                                      monitor=monitor, previous=self.app.current)

    async def start(self) -> None:
        config = uvicorn.Config(self.app, log_config=None, access_log=False, lifespan="off", server_header=False,
                                proxy_headers=False, timeout_graceful_shutdown=5, limit_concurrency=MAX_CONNECTIONS)
        self.server = _Server(config)
        self.task = asyncio.create_task(self.server.serve(sockets=[self.sock]))
        while not self.server.started and not self.task.done():
            await asyncio.sleep(0.02)
        log.info("web app listening", extra={"url": self.url})

    async def stop(self) -> None:
        if self.server is not None and self.task is not None:
            self.server.should_exit = True
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.task, 10)
        self.sock.close()


def listening_socket(host: str, port: int, listen: str) -> socket.socket:
    """The web app's bound, listening socket. Raises ConfigError naming ``web.listen`` when it cannot bind."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP, not 0: asyncio turns Nagle off (TCP_NODELAY) only on accepted sockets whose proto is TCP.
    # With proto 0, a response written as headers then body waited ~40 ms for the client's delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(f"the web app cannot listen on {listen}: {exc.strerror}",
                          where="web.listen", hint="Stop what uses that port, or set web.listen") from None
    sock.listen(128)
    sock.setblocking(False)
    return sock


def prepare(monitor: Any) -> WebServer | None:
    """The app for a Monitor, its socket bound; None when the config turns the web app off or sets no
    access rule (then a warning says how to turn it on). Raises ConfigError when it cannot start."""
    cfg = monitor.runtime.config
    web = cfg.web
    if not web.enabled:
        return None
    if web.auth_mode() is None:
        log.warning("web app not started: set web.password_hash (from `mailwarden web hash-password`), "
                    "web.auth: proxy with web.proxy_header, or web.auth: none")
        return None
    app = create_app(lambda: monitor.runtime.config, lambda: monitor.runtime.store, monitor=monitor)
    metrics = app.state.web.metrics  # kept by every app a reload builds (create_app's ``previous``)
    previous = monitor.on_result

    def on_result(result: Any) -> None:
        metrics.observe(result)
        if previous is not None:
            previous(result)

    monitor.on_result = on_result
    host, port = web.host_port()
    sock = listening_socket(host, port, web.listen)
    bound = sock.getsockname()[1]
    url = web.base_url if port else f"http://{host}:{bound}"
    return WebServer(Swappable(app), sock, url, monitor)
