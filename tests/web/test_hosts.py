"""The Host allow-list against DNS rebinding: a page on another site that rebinds its name to this server's
address sends its own name as Host and as Origin. It must neither read /api nor act."""

from __future__ import annotations

import base64
import json

from mailwarden.monitor.web.auth import Access
from tests.web.conftest import basic

EVIL = "http://rebound.evil.example:8080"


def session_csrf(client) -> str:
    """The session's CSRF token (every page puts it in the session; forms show it only beside actions)."""
    client.get("/")
    payload = client.cookies["mailwarden_session"].split(".")[0]
    return json.loads(base64.b64decode(payload))["csrf"]


def test_with_auth_none_a_foreign_host_is_refused_but_healthz_answers(world):
    """Attacks `web.auth: none` through DNS rebinding: any Host was served, so a page on a rebound name read
    /api/*. Only base_url's host, the listen host, loopback and web.allowed_hosts are answered (400 otherwise,
    with the security headers); /healthz answers any Host (health checks, load balancers)."""
    with world.client(world.app(Access(mode="none")), base_url=EVIL) as evil:
        for path in ("/api/status", "/", "/metrics", "/login"):
            r = evil.get(path)
            assert r.status_code == 400, (path, r.status_code)
            assert "content-security-policy" in r.headers
        assert evil.get("/healthz").json()["status"] == "ok"
    world.configure(base_url="https://mailwarden.contoso.com", allowed_hosts=["mw-1.internal"])
    app = world.app(Access(mode="none"))
    with world.client(app, base_url=EVIL) as evil:
        assert evil.get("/api/status").status_code == 400
    for base in ("https://mailwarden.contoso.com", "http://127.0.0.1:8080", "http://localhost:9999",
                 "http://[::1]:8080", "http://mw-1.internal:8080"):
        with world.client(app, base_url=base) as ok:
            assert ok.get("/api/status").status_code == 200, base


def test_a_rebound_page_can_neither_read_the_token_nor_act(world):
    """Attacks actions under `web.auth: none`: the Origin check trusted the Host header, so a rebound page
    (same Host and Origin) read the CSRF token and acknowledged incidents. Its Host is refused, and an Origin
    not on the allow-list is refused even with the right Host and token."""
    app = world.app(Access(mode="none"))
    with world.client(app, base_url=EVIL) as evil:
        assert evil.get("/").status_code == 400
    with world.client(app) as c:
        token = session_csrf(c)
        r = c.post("/incidents/1/ack", data={"csrf_token": token}, headers={"Host": "rebound.evil.example:8080",
                                                                             "Origin": EVIL})
        assert r.status_code == 400
        r = c.post("/incidents/1/ack", data={"csrf_token": token}, headers={"Origin": EVIL})
        assert r.status_code == 403
        r = c.post("/incidents/1/ack", data={"csrf_token": token}, headers={"Origin": "http://127.0.0.1:8080"})
        assert r.status_code == 404  # allowed through: there is no incident 1 in this store


def test_with_a_password_a_foreign_host_is_refused_too(world):
    """Attacks the password mode through rebinding (guessing from inside the victim's network, reading with
    cached Basic credentials): the same allow-list holds in every mode."""
    with world.client(base_url=EVIL) as evil:
        assert evil.get("/api/status", headers=basic()).status_code == 400
    with world.client() as ok:
        assert ok.get("/api/status", headers=basic()).status_code == 200
