"""A tenant of its own in the session's shared sandbox for the sign-in evidence tests: an app-only daemon and a
delegated helpdesk (each with its consuming system as a sandbox actor), a monitor app that may read the sign-in logs,
and an ordinary config pointing at it. mailwarden runs through its runtime, as `serve` and `check` do."""

from __future__ import annotations

import asyncio
import textwrap
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from mailwarden.monitor import reauth
from mailwarden.monitor.runtime import Runtime
from mailwarden_sandbox import Sandbox
from mailwarden_sandbox.browser import sign_in
from tests.sandbox_fixtures import SandboxWorld

READER = ["Application.Read.All", "AuditLog.Read.All", "Directory.Read.All"]
REDIRECT = "http://127.0.0.1:8080/auth/callback"
DELEGATED = {"exchange": ["POP.AccessAsUser.All"], "graph": ["User.Read"]}


@pytest.fixture
def sb(sandbox):
    """The sandbox the worlds live in: the session's shared one (tests/sandbox_fixtures.py; each world is a tenant of
    its own), or a fresh one for a test marked ``fresh_sandbox``."""
    return sandbox


@dataclass
class World(SandboxWorld):
    sb: Sandbox
    dir: Path
    tenant_id: str
    domain: str
    apps: dict[str, str]  # config name -> client id
    upn: str
    password: str
    config_path: Path
    runtime: Runtime | None = None
    actors: dict[str, str] = field(default_factory=dict)  # integration -> actor name

    @property
    def rt(self) -> Runtime:
        return self.runtime or self.open()

    def poll(self):
        return asyncio.run(self.rt.signins.poll())

    def check(self, kind: str, integration: str):
        return asyncio.run(self.rt.runner.run_one(integration, kind)).outcome

    def window(self, integration: str):
        return self.rt.signins.window(self.rt.config.integration(integration))

    def tick(self, integration: str) -> dict:
        [result] = self.ctl.tick_actors(self.actors[integration])
        return result

    def sign_in(self, integration: str = "helpdesk"):
        """mailwarden's own refresh token for the delegated integration (auth code + PKCE, the sandbox browser)."""
        integ = self.rt.config.integration(integration)
        flow = reauth.start(self.rt.tokens, integ, REDIRECT)
        back = sign_in(flow["auth_uri"], self.upn, self.password, self.sb.ca_path)
        return reauth.complete(self.rt.tokens, integ, flow, reauth.parse_redirect(back))

    def rows(self, **where):
        """The stored sign-in events of this tenant (newest first)."""
        from sqlmodel import Session, select

        from mailwarden.monitor.models import SignInRecord

        stmt = select(SignInRecord).where(SignInRecord.tenant_id == self.tenant_id)
        for k, v in where.items():
            stmt = stmt.where(getattr(SignInRecord, k) == v)
        with Session(self.rt.store.engine) as s:
            return sorted(s.exec(stmt), key=lambda r: r.created_at, reverse=True)


def make_world(sb, tmp_path: Path, *, licence: str = "p1", monitor_roles=READER, evidence: dict | None = None,
               integrations=("daemon", "helpdesk"), database: str = "sqlite:///mailwarden.db", actors: bool = True,
               **tenant_fields) -> World:
    tid = str(uuid.uuid4())
    domain = f"t{tid[:8]}.onmicrosoft.com"
    upn, password = f"helpdesk@{domain}", "Pw-" + uuid.uuid4().hex[:10]
    ids = {name: str(uuid.uuid4()) for name in ("daemon", "helpdesk", "monitor")}
    secrets = {name: f"{name[:2]}8Q~{uuid.uuid4().hex}" for name in ids}
    apps = [
        {"app_id": ids["daemon"], "display_name": "daemon", "secrets": [{"value": secrets["daemon"], "start": "-30d"}],
         "application_permissions": {"graph": ["Mail.ReadWrite"]}},
        {"app_id": ids["helpdesk"], "display_name": "helpdesk", "secrets": [{"value": secrets["helpdesk"]}],
         "redirect_uris": [REDIRECT], "delegated_permissions": DELEGATED},
        {"app_id": ids["monitor"], "display_name": "mailwarden monitor", "secrets": [{"value": secrets["monitor"]}],
         "application_permissions": {"graph": list(monitor_roles)}},
    ]
    box = f"box@{domain}"
    sb.control.add_tenant(id=tid, domain=domain, entra_licence=licence, users=[{"upn": upn, "password": password}],
                          apps=apps, exchange={"mailboxes": [
                              {"address": box, "type": "shared", "full_access": [ids["daemon"]]},
                              {"address": upn, "type": "user"}]}, **tenant_fields)
    d = tmp_path / f"w-{tid[:6]}"
    (d / "secrets").mkdir(parents=True)
    for name, value in secrets.items():
        (d / "secrets" / name).write_text(value)
    specs = {
        "daemon": {"name": "daemon", "app": "daemon", "flow": "app", "mailbox": box, "system": "Sinch",
                   "checks": {"token": {}}},
        "helpdesk": {"name": "helpdesk", "app": "helpdesk", "flow": "delegated", "mailbox": upn, "account": upn,
                     "system": "Oracle B2C Service",
                     "checks": {"token": {"require": ["exchange:POP.AccessAsUser.All"]}}},
    }
    doc = {
        "database": database, "cloud": "custom",
        "endpoints": {k: v for k, v in sb.endpoints.items()
                      if k in ("authority", "graph", "ews", "imap", "pop", "smtp", "ca_bundle")},
        "defaults": {"timeout": "15s", "failure_threshold": 1},
        "tenants": {"t": {"tenant_id": tid, "monitor_app": "monitor"}},
        "apps": {name: {"tenant": "t", "client_id": ids[name], "secret": f"file:secrets/{name}"} for name in ids},
        "integrations": [specs[i] for i in integrations],
    }
    if evidence is not None:
        doc["evidence"] = {"signins": evidence}
    path = d / "mailwarden.yaml"
    path.write_text(textwrap.dedent(yaml.safe_dump(doc)))
    w = World(sb, d, tid, domain, ids, upn, password, path)
    if actors:
        for name in integrations:
            actor = f"{name}-{tid[:6]}"
            spec = {"graph": dict(protocol="graph", mailbox=box),
                    "pop": dict(flow="delegated", protocol="pop", mailbox=upn, account=upn)}
            sb.control.add_actor(tid, name=actor, app_id=ids[name], interval_s=None,
                                 **spec["graph" if name == "daemon" else "pop"])
            w.actors[name] = actor
    return w


@pytest.fixture
def world(sb, tmp_path):
    made: list[World] = []

    def make(**kw) -> World:
        w = make_world(sb, tmp_path, **kw)
        made.append(w)
        w.open()  # mailwarden starts before anything signs in: its own requests are recorded from here on
        return w

    yield make
    for w in made:
        if w.runtime is not None:
            w.runtime.close()
