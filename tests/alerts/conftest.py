"""Alert test helpers: a loopback HTTP receiver (scripted status codes), an SMTP sink, a config writer."""

from __future__ import annotations

import http.server
import json
import textwrap
import threading
from datetime import timedelta
from pathlib import Path

import pytest
import yaml

from mailwarden import state as sm
from mailwarden.checks.base import Outcome, Status
from mailwarden.monitor import config as config_mod

APP_ID = "66666666-7777-8888-9999-000000000000"
TENANT_ID = "11111111-2222-3333-4444-555555555555"
SECRET = "Zq8~alert-canary-secret-9d7c1b"


class Receiver:
    def __init__(self):
        self.codes: list[int] = []
        self.bodies: list[dict] = []
        self.pings: list[str] = []  # paths of GET requests (the dead-man heartbeat)
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                code = receiver.codes.pop(0) if receiver.codes else 200
                if code == 200:
                    receiver.bodies.append(json.loads(raw))
                self.send_response(code)
                self.end_headers()
                self.wfile.write(b"{}")

            def do_GET(self):
                receiver.pings.append(self.path)
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"json://127.0.0.1:{self.port}/hook"

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


class Sink:
    def __init__(self):
        from aiosmtpd.controller import Controller

        self.messages: list[bytes] = []
        sink = self

        class Handler:
            async def handle_DATA(self, server, session, envelope):
                sink.messages.append(envelope.content)
                return "250 OK"

        import socket

        with socket.socket() as probe:  # the Controller's readiness check cannot use port 0
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.controller = Controller(Handler(), hostname="127.0.0.1", port=self.port)
        self.controller.start()

    def text(self, i: int) -> str:
        import email
        from email import policy

        msg = email.message_from_bytes(self.messages[i], policy=policy.default)
        parts = [msg["Subject"] or ""]
        for part in msg.walk():
            if part.get_content_maintype() == "text":
                parts.append(part.get_content())
        return "\n".join(parts)


@pytest.fixture
def sink():
    s = Sink()
    yield s
    s.controller.stop()


def write_config(path: Path, *, names=("a",), routes=(), database=None, shared=True, **alerts) -> Path:
    (path.parent / "secret").write_text(SECRET)
    apps = {"app": {"tenant": "t", "client_id": APP_ID, "secret": "file:secret"}}
    integrations = []
    for i, n in enumerate(names):
        app = "app" if shared else f"app{i}"
        if not shared:
            apps[app] = {"tenant": "t", "client_id": f"{i:08d}-7777-8888-9999-000000000000", "secret": "file:secret"}
        integrations.append({"name": n, "app": app, "flow": "app", "mailbox": f"{n}@contoso.com",
                             "system": f"{n} helpdesk", "checks": ["token", "secret_expiry"], "tags": ["helpdesk"],
                             "owners": [f"owner-{n}@contoso.com"]})
    doc = {"database": database or f"sqlite:///{path.parent / 'mw.db'}",
           "web": {"base_url": "http://mw.example:8080"}, "cloud": "custom",
           "endpoints": {"authority": "https://127.0.0.1:9", "graph": "https://127.0.0.1:9/v1.0"},
           "defaults": {"timeout": "2s"},
           "tenants": {"t": {"tenant_id": TENANT_ID}}, "apps": apps, "integrations": integrations,
           "alerts": {"routes": list(routes), **alerts}}
    path.write_text(textwrap.dedent(yaml.safe_dump(doc)))
    return path


def load(path: Path):
    return config_mod.load(path)


def record(store, integration, check, status, code=None, at=None, summary=None, threshold=1):
    return store.checks.record_result(integration=integration, check=check,
                                      outcome=Outcome(Status(status), code, summary or f"{check} {status}"),
                                      checked_at=at, thresholds=sm.Thresholds(failure_threshold=threshold))


def minutes(t0, m):
    return t0 + timedelta(minutes=m)
