"""`Sandbox`: builds the state, the TLS material and the ASGI app, and serves it in a thread."""

from __future__ import annotations

import asyncio
import json
import socket
import tempfile
import threading
import time
from pathlib import Path

import uvicorn
from starlette.applications import Starlette
from starlette.responses import JSONResponse, Response

from . import control, scenario
from .actors import ActorRunner
from .entra import Entra
from .errors import graph_error
from .grants import Issuer
from .graph import Graph
from .mail.base import MailServers
from .mail.ews import Ews
from .tls import make_server_tls
from .tokens import Signer


class FaultsAndStats:
    """ASGI middleware: counts requests and applies the faults (latency, 429/5xx) set on path prefixes."""

    def __init__(self, app, state):
        self.app = app
        self.state = state

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"].startswith("/_sandbox"):
            return await self.app(scope, receive, send)
        path, method = scope["path"], scope["method"]
        self.state.count_request(f"{method} {path}")
        latency, fault = self.state.take_fault(path, method)
        if latency:
            await asyncio.sleep(latency / 1000)
        if fault is None:
            return await self.app(scope, receive, send)
        headers = {"Retry-After": str(fault.retry_after)}
        if path.startswith(("/v1.0", "/beta")):
            code = "TooManyRequests" if fault.status == 429 else "ServiceUnavailable"
            msg = "Too many requests." if fault.status == 429 else "The service is temporarily unavailable."
            response = graph_error(fault.status, code, msg, None, headers)
        elif path.startswith("/EWS"):
            response = Response(b"", status_code=fault.status, headers=headers)
        else:
            response = JSONResponse({"error": "temporarily_unavailable",
                                     "error_description": "The server is temporarily unable to handle the "
                                     f"request. Retry after {fault.retry_after} seconds."},
                                    status_code=fault.status, headers=headers)
        return await response(scope, receive, send)


class _Server(uvicorn.Server):
    """Remembers its loop so that stop() can drop idle keep-alive connections at once."""

    loop: asyncio.AbstractEventLoop | None = None

    async def serve(self, sockets=None):
        self.loop = asyncio.get_running_loop()
        await super().serve(sockets=sockets)

    def drop_connections(self) -> None:
        for conn in list(self.server_state.connections):
            transport = getattr(conn, "transport", None)
            if transport is not None:
                transport.abort()


class Sandbox:
    """A local Entra ID + Graph over HTTPS. See sandbox/README.md."""

    def __init__(self, scenario_source: dict | str | Path, workdir: Path | str | None = None,
                 host: str = "127.0.0.1", port: int = 0, imap_port: int = 0, pop_port: int = 0,
                 smtp_port: int = 0):
        self.workdir = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="mailwarden-sandbox-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.host = host
        self.state = scenario.build_state(scenario_source, self.workdir)
        self.tls = make_server_tls(self.workdir / "tls", host)
        self.ca_path = self.tls.ca_path
        self.signer = Signer(self.workdir)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        # IPPROTO_TCP: asyncio sets TCP_NODELAY on accepted sockets only when their proto is TCP. With proto 0,
        # Nagle held every response body until the client's delayed ACK (~40 ms per request; bench/RESULTS.md)
        self._sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((host, port))
        self.port = self._sock.getsockname()[1]
        self.base_url = f"https://{'[' + host + ']' if ':' in host else host}:{self.port}"
        self.issuer = Issuer(self.state, self.signer, self.base_url)
        self.mail = MailServers(self.state, self.signer, host, self.tls.cert_path, self.tls.key_path,
                                {"imap": imap_port, "pop": pop_port, "smtp": smtp_port})
        self.actors = ActorRunner(self.state, self.base_url, self.ca_path, self.mail.addresses)
        self.state.actor_runner = self.actors
        self.app = self._build_app()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._control: control.ControlClient | None = None

    def _build_app(self) -> Starlette:
        routes = (control.routes(self.state) + Graph(self.issuer).routes() + Ews(self.issuer).routes()
                  + Entra(self.issuer).routes())
        app = Starlette(routes=routes)
        return FaultsAndStats(app, self.state)

    @property
    def endpoints(self) -> dict:
        return {"authority": self.base_url, "graph": self.base_url + "/v1.0",
                "ews": self.base_url + "/EWS/Exchange.asmx", "ca_bundle": str(self.ca_path),
                **self.mail.addresses}

    @property
    def signing_key_pem(self) -> bytes:
        """Public key of the token signer (PEM), e.g. for a mail server validating tokens locally."""
        return self.signer.public_pem

    @property
    def signing_kid(self) -> str:
        return self.signer.kid

    @property
    def control(self) -> control.ControlClient:
        if self._control is None:
            self._control = control.ControlClient(self.base_url, self.ca_path)
        return self._control

    def start(self, timeout: float = 15.0) -> Sandbox:
        if self._thread is not None:
            return self
        self.mail.start()
        config = uvicorn.Config(self.app, ssl_certfile=str(self.tls.cert_path), ssl_keyfile=str(self.tls.key_path),
                                log_level="warning", lifespan="off", access_log=False,
                                timeout_graceful_shutdown=1,
                                # Microsoft keeps idle connections open for minutes. uvicorn's 5 s default
                                # closed them just as MSAL's device-code poll (every 5 s) reused one:
                                # RemoteDisconnected, a flaky test (2026-11-24)
                                timeout_keep_alive=120)
        self._server = _Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._sock]},
                                        name=f"sandbox-{self.port}", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the sandbox did not start on {self.base_url}")
            time.sleep(0.01)
        self.actors.start()
        return self

    def stop(self) -> None:
        self.actors.stop()
        if self._control is not None:
            self._control.close()
            self._control = None
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            if self._server.loop is not None and not self._server.loop.is_closed():
                try:
                    self._server.loop.call_soon_threadsafe(self._server.drop_connections)
                except RuntimeError:
                    pass
            self._thread.join(3)
            if self._thread.is_alive():  # idle TLS keep-alive clients never answer close_notify
                self._server.force_exit = True
                self._thread.join(5)
        self._server = self._thread = None
        self.mail.stop()
        try:
            self._sock.close()
        except OSError:
            pass

    def __enter__(self) -> Sandbox:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def describe(self) -> str:
        return json.dumps({"base_url": self.base_url, "endpoints": self.endpoints,
                           "ca_path": str(self.ca_path)}, indent=2)
