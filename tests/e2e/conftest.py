"""End to end: mailwarden's real code against the sandbox, reached through configuration only.

Each test builds its own tenant (own apps, users, consent setting) in one session-wide sandbox, writes
an ordinary config pointing at it, and runs checks through the runner as `mailwarden check` does.
"""

from __future__ import annotations

import asyncio
import textwrap
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from mailwarden.monitor import config as config_mod
from mailwarden.monitor import reauth
from mailwarden.monitor.runtime import Runtime, open_runtime
from mailwarden_sandbox import Sandbox
from mailwarden_sandbox.browser import sign_in

DELEGATED_SCOPES = {"exchange": ["POP.AccessAsUser.All", "SMTP.Send"], "graph": ["User.Read"]}
REQUIRE_DELEGATED = ["exchange:POP.AccessAsUser.All", "exchange:SMTP.Send"]
REQUIRE_APP = ["exchange:SMTP.SendAsApp"]
REDIRECT = "http://127.0.0.1:8080/auth/callback"


@pytest.fixture(scope="session")
def sandbox(tmp_path_factory):
    with Sandbox({"tenants": []}, workdir=tmp_path_factory.mktemp("sandbox")) as sb:
        yield sb


@dataclass
class World:
    sb: Sandbox
    dir: Path
    tenant_id: str
    app_id: str
    key_id: str
    secret: str
    upn: str | None
    password: str | None
    config_path: Path
    runtime: Runtime | None = None
    monitor_app_id: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def ctl(self):
        return self.sb.control

    def open(self) -> Runtime:
        if self.runtime is not None:
            self.runtime.close()
        self.runtime = open_runtime(config_mod.load(self.config_path))
        return self.runtime

    def run(self, kind: str, integration: str = "subject"):
        rt = self.runtime or self.open()
        return asyncio.run(rt.runner.run_one(integration, kind)).outcome

    def sign_in(self, *, as_user: str | None = None, password: str | None = None):
        rt = self.runtime or self.open()
        integ = rt.config.integration("subject")
        flow = reauth.start(rt.tokens, integ, REDIRECT)
        back = sign_in(flow["auth_uri"], as_user or self.upn, password or self.password, self.sb.ca_path)
        return reauth.complete(rt.tokens, integ, flow, reauth.parse_redirect(back))

    def rewrite(self, mutate) -> None:
        doc = yaml.safe_load(self.config_path.read_text())
        mutate(doc)
        self.config_path.write_text(yaml.safe_dump(doc))
        self.open()


@pytest.fixture
def world(sandbox, tmp_path):
    made: list[World] = []

    def make(flow: str = "app", *, app_permissions=None, delegated=None, user=None, certificate=False,
             secret_end: str = "+200d", user_consent: bool = True, checks=None, monitor_roles=None,
             secret_expires_on=None, assignment_required=False, own_mailbox=False,
             exchange=None) -> World:
        tid = str(uuid.uuid4())
        domain = f"t{tid[:8]}.onmicrosoft.com"
        app_id, monitor_id, key_id = str(uuid.uuid4()), str(uuid.uuid4()), str(uuid.uuid4())
        secret = f"{uuid.uuid4().hex[:3]}8Q~{uuid.uuid4().hex}"
        upn = password = None
        users = []
        if flow == "delegated":
            upn, password = f"mail-{tid[:6]}@{domain}", "Pw-" + uuid.uuid4().hex[:10]
            users.append({"upn": upn, "password": password, **(user or {})})
        subject = {
            "app_id": app_id, "display_name": "subject app", "redirect_uris": [REDIRECT],
            "assignment_required": assignment_required,
            "application_permissions": app_permissions if app_permissions is not None
            else {"exchange": ["SMTP.SendAsApp"]},
            "delegated_permissions": delegated if delegated is not None else DELEGATED_SCOPES,
        }
        if certificate:
            subject["certificates"] = [{"key_id": key_id, "generate": True, "end": secret_end}]
        else:
            subject["secrets"] = [{"key_id": key_id, "value": secret, "display_name": "in use",
                                   "start": "-10d", "end": secret_end}]
        monitor_secret = "mon~" + uuid.uuid4().hex
        monitor = {"app_id": monitor_id, "display_name": "mailwarden monitor",
                   "secrets": [{"value": monitor_secret}],
                   "application_permissions": {"graph": monitor_roles if monitor_roles is not None
                                               else ["Application.Read.All"]}}
        spec = {"id": tid, "domain": domain, "user_consent": user_consent, "users": users,
                "apps": [subject, monitor]}
        if exchange is not None:
            # callables let a test name the world's own ids: lambda ids: {...}
            spec["exchange"] = exchange(dict(app_id=app_id, upn=upn, domain=domain)) if callable(exchange) \
                else exchange
        sandbox.control.add_tenant(**spec)
        d = tmp_path / f"w{len(made)}"
        (d / "secrets").mkdir(parents=True)
        (d / "secrets" / "monitor").write_text(monitor_secret)
        app_cfg = {"tenant": "t", "client_id": app_id}
        if certificate:
            certs = Path(sandbox.ca_path).parent.parent / "certs" / app_id
            app_cfg["certificate"] = {"key": f"file:{certs / (key_id + '.key.pem')}",
                                      "cert": f"file:{certs / (key_id + '.cert.pem')}"}
        else:
            (d / "secrets" / "subject").write_text(secret)
            app_cfg["secret"] = "file:secrets/subject"
        if secret_expires_on:
            app_cfg["secret_expires_on"] = secret_expires_on
        mailbox = upn if own_mailbox and upn else f"box@{domain}"
        integ = {"name": "subject", "app": "subject", "flow": flow, "mailbox": mailbox,
                 "system": "Test helpdesk",
                 "checks": checks or {"token": {"require": REQUIRE_DELEGATED if flow == "delegated"
                                                else REQUIRE_APP}, "secret_expiry": {}}}
        if upn:
            integ["account"] = upn
        doc = {
            "database": "sqlite:///mailwarden.db", "cloud": "custom",
            "endpoints": {k: v for k, v in sandbox.endpoints.items()
                          if k in ("authority", "graph", "ews", "imap", "pop", "smtp", "ca_bundle")},
            "defaults": {"timeout": "15s", "failure_threshold": 1},
            "tenants": {"t": {"tenant_id": tid, "monitor_app": "monitor"}},
            "apps": {"subject": app_cfg, "monitor": {"tenant": "t", "client_id": monitor_id,
                                                     "secret": "file:secrets/monitor"}},
            "integrations": [integ],
        }
        path = d / "mailwarden.yaml"
        path.write_text(textwrap.dedent(yaml.safe_dump(doc)))
        w = World(sandbox, d, tid, app_id, key_id, secret, upn, password, path, monitor_app_id=monitor_id)
        made.append(w)
        return w

    yield make
    for w in made:
        if w.runtime is not None:
            w.runtime.close()
