"""The sandbox fixtures every area's tests share (a pytest plugin, loaded by tests/conftest.py).

- ``shared_sandbox`` (session): the one sandbox (Entra ID, Graph, Exchange Online) of the test session, started
  with no tenant. Every test that needs one gets this instance unless it asks for its own: tests/e2e, alerts,
  rotation, reauth, fidelity, the sign-in worlds (tests/monitor/signin_world.py) and tests/monitor/test_discover.py
  used to start one each (a session, directory or module apiece).
- ``sandbox``: what a test uses; the shared sandbox, or a fresh one for a test marked ``fresh_sandbox``.
- ``fresh_sandbox``: a sandbox of the test's own (see its docstring for who needs one).
- ``world``: a tenant of the test's own (own apps, users, consent setting) in ``sandbox`` and an ordinary config
  pointing at it (``World``): the end-to-end tests' factory, used by tests/e2e, alerts, rotation, reauth, fidelity.

Only ``shared_sandbox`` and ``fresh_sandbox`` start a sandbox. ``sandbox`` and ``world`` may be imported into a test
module or conftest (tests/e2e/conftest.py re-exports them): pytest then registers another fixture of the same name,
which is cheap because it only looks the shared one up. Never import ``shared_sandbox`` itself: a session fixture
registered again is a second instance (that is how tests/e2e, alerts, rotation, reauth and fidelity had five).

Sharing is safe because what a test changes on the Microsoft side belongs to its own tenant: fresh tenant, app and
user ids (uuid4) per world. Sandbox-wide settings (``add_fault``, ``set_protocol_fault``, ``set_token_lifetime``,
``reset_stats``/``stats``) are used the way they were when tests/e2e already shared one sandbox per directory: set
and undone within one test, or read right after a reset. A test that leaves sandbox-wide state behind must be
marked ``@pytest.mark.fresh_sandbox("why")``.

Not shared, on purpose: tests/sandbox (the sandbox's own tests, on a scenario with fixed tenants they index by
position, and ``tick_actors()`` of every actor), tests/sandbox/test_directory.py and tests/monitor/test_add.py (a
scenario of their own: fixed tenant ids), the demo (``demo.prepare``: a sandbox per demo) and the tests that start
a sandbox in a subprocess (the CLI's own start is what they test)."""

from __future__ import annotations

import asyncio
import textwrap
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import yaml

if TYPE_CHECKING:  # imported where used: a run of tests that start no sandbox does not pay for it
    from mailwarden.monitor.runtime import Runtime
    from mailwarden_sandbox import Sandbox

DELEGATED_SCOPES = {"exchange": ["POP.AccessAsUser.All", "SMTP.Send"], "graph": ["User.Read"]}
REQUIRE_DELEGATED = ["exchange:POP.AccessAsUser.All", "exchange:SMTP.Send"]
REQUIRE_APP = ["exchange:SMTP.SendAsApp"]
REDIRECT = "http://127.0.0.1:8080/auth/callback"
FRESH = "fresh_sandbox"


def pytest_configure(config):
    config.addinivalue_line(
        "markers", f"{FRESH}(why): the test gets a sandbox of its own (it leaves sandbox-wide state behind: say which)")


_SHARED_STARTED: list[str] = []  # the workdir of each shared sandbox this process started: one, or it is not shared


@pytest.fixture(scope="session")
def shared_sandbox(tmp_path_factory):
    """The session's one sandbox, started with no tenant: each test adds its own (``world``)."""
    from mailwarden_sandbox import Sandbox

    if _SHARED_STARTED:
        pytest.fail(f"a second shared sandbox (the first: {_SHARED_STARTED[0]}): shared_sandbox was registered again, "
                    "by importing it into a test module or conftest; import `sandbox` instead", pytrace=False)
    workdir = tmp_path_factory.mktemp("sandbox")
    _SHARED_STARTED.append(str(workdir))
    with Sandbox({"tenants": []}, workdir=workdir) as sb:
        yield sb


@pytest.fixture
def fresh_sandbox(tmp_path_factory):
    """A sandbox of this test's own, for a test that changes Microsoft-side state outside its own tenant and leaves
    it behind, where the next test in the shared sandbox would see it. Today: tests/alerts/test_service_health.py
    (Microsoft 365 service health incidents are read by every tenant; one test closes every open incident, the other
    leaves one open). Costs a start and a stop (~0.5 s: keys, TLS certificate, listeners)."""
    from mailwarden_sandbox import Sandbox

    with Sandbox({"tenants": []}, workdir=tmp_path_factory.mktemp("fresh-sandbox")) as sb:
        yield sb


@pytest.fixture
def sandbox(request):
    """The sandbox this test uses: ``fresh_sandbox`` when it is marked ``fresh_sandbox``, else ``shared_sandbox``."""
    marker = request.node.get_closest_marker(FRESH)
    if marker is not None:
        if not (marker.args or marker.kwargs.get("why")):
            pytest.fail(f"@pytest.mark.{FRESH} needs the reason (why) on {request.node.nodeid}", pytrace=False)
        return request.getfixturevalue("fresh_sandbox")
    return request.getfixturevalue("shared_sandbox")


class SandboxWorld:
    """What every world in the sandbox has (this module's ``World``, tests/monitor/signin_world.py's): the sandbox's
    control API, and mailwarden's runtime on the world's config, opened (again) by ``open``."""

    sb: Sandbox
    config_path: Path
    runtime: Runtime | None

    @property
    def ctl(self):
        return self.sb.control

    def open(self) -> Runtime:
        from mailwarden.monitor import config as config_mod
        from mailwarden.monitor.runtime import open_runtime

        if self.runtime is not None:
            self.runtime.close()
        self.runtime = open_runtime(config_mod.load(self.config_path))
        return self.runtime


@dataclass
class World(SandboxWorld):
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

    def run(self, kind: str, integration: str = "subject"):
        rt = self.runtime or self.open()
        return asyncio.run(rt.runner.run_one(integration, kind)).outcome

    def sign_in(self, *, as_user: str | None = None, password: str | None = None):
        from mailwarden.monitor import reauth
        from mailwarden_sandbox.browser import sign_in

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
