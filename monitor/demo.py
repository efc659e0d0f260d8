"""The demo: the sandbox playing a tenant with five real consuming systems, and mailwarden watching it.

It writes an ordinary config (cloud: custom, endpoints and CA bundle of the sandbox, secrets as
file: references), seeds the delegated integrations' refresh tokens by signing in through the
sandbox's authorize page exactly as an admin would, then breaks what the story needs broken after the
sign-in (a revoked session). Everything else the checks find is the sandbox's directory state.
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from rich.console import Console

from mailwarden.checks import TOKEN_KIND
from mailwarden.errors import MailwardenError
from mailwarden.monitor import config as config_mod
from mailwarden.monitor import reauth
from mailwarden.monitor.runner import RunResult, select
from mailwarden.monitor.runtime import Runtime, open_runtime

if TYPE_CHECKING:  # pragma: no cover - typing only
    from mailwarden_sandbox import Sandbox


def demo_scenario() -> Path:
    """The demo tenant's scenario, inside the sandbox package (which the production image leaves out)."""
    require_sandbox()
    return Path(str(resources.files("mailwarden_sandbox") / "scenarios" / "demo.yaml"))


def require_sandbox() -> None:
    """The demo and sandbox commands need ``mailwarden_sandbox``; say so where it is not installed."""
    try:
        import mailwarden_sandbox  # noqa: F401
    except ImportError:
        raise MailwardenError("the sandbox (mailwarden_sandbox) is not installed here: the production image leaves "
                              "it out", hint="Run the demo from a source checkout: python3 -m venv .venv && "
                              ".venv/bin/pip install -e . && .venv/bin/mailwarden demo") from None
TENANT = "contoso"

# Each of the five systems of shared/seeds on its real path, healthy or broken as admins meet them.
INTEGRATIONS: list[dict[str, Any]] = [
    dict(name="hoth-support", app="HotH email integration", flow="delegated",
         mailbox="support@contoso-demo.onmicrosoft.com", account="hoth-mail@contoso-demo.onmicrosoft.com",
         system="House-on-the-Hill helpdesk", secret_field="OAuth Scripts > oauth:email > Client Secret",
         checks={"pop": {"backlog_warn": 50, "backlog_age": "4h"}, "smtp": {}, "consumer": {}}, tags=["helpdesk"]),
    dict(name="hoth-it", app="HotH email integration", flow="delegated",
         mailbox="it@contoso-demo.onmicrosoft.com", account="hoth-mail@contoso-demo.onmicrosoft.com",
         system="House-on-the-Hill helpdesk", checks={"imap": {"backlog_age": "4h"}}, tags=["helpdesk"]),
    dict(name="hoth-sales", app="HotH email integration", flow="delegated",
         mailbox="sales@contoso-demo.onmicrosoft.com", account="hoth-mail@contoso-demo.onmicrosoft.com",
         system="House-on-the-Hill helpdesk", checks={"imap": {"backlog_age": "4h"}}, tags=["helpdesk"]),
    # its mailbox job for this one stopped 7 hours ago: every sign-in works, only the waiting mail shows it
    dict(name="hoth-facilities", app="HotH email integration", flow="delegated",
         mailbox="facilities@contoso-demo.onmicrosoft.com", account="hoth-mail@contoso-demo.onmicrosoft.com",
         system="House-on-the-Hill helpdesk", checks={"imap": {"backlog_age": "4h"}}, tags=["helpdesk"]),
    dict(name="oracle-b2c-support", app="Oracle B2C Service Email", flow="delegated",
         mailbox="b2c-support@contoso-demo.onmicrosoft.com", account="b2c-support@contoso-demo.onmicrosoft.com",
         system="Oracle B2C Service", secret_field="CUSTOM_CFG_MAILBOX_OA_CLIENT_SECRET",
         reauth_after_rotation=True, checks={"pop": {}, "consumer": {}}, tags=["customer-service"]),
    dict(name="oracle-b2c-billing", app="Oracle B2C Service Email", flow="delegated",
         mailbox="b2c-billing@contoso-demo.onmicrosoft.com", account="b2c-billing@contoso-demo.onmicrosoft.com",
         system="Oracle B2C Service", secret_field="CUSTOM_CFG_MAILBOX_OA_CLIENT_SECRET",
         reauth_after_rotation=True, checks={"pop": {}}, tags=["customer-service"]),
    dict(name="sinch-queue", app="Sinch Contact Center mail", flow="app",
         mailbox="queue-support@contoso-demo.onmicrosoft.com", system="Sinch Contact Center",
         checks={"graph_mail": {}, "consumer": {}}, tags=["contact-center"]),
    dict(name="sinch-billing", app="Sinch Contact Center mail", flow="app",
         mailbox="queue-billing@contoso-demo.onmicrosoft.com", system="Sinch Contact Center",
         checks={"graph_mail": {}}, tags=["contact-center"]),
    dict(name="sinch-sales", app="Sinch Contact Center mail", flow="app",
         mailbox="queue-sales@contoso-demo.onmicrosoft.com", system="Sinch Contact Center",
         checks={"graph_mail": {}}, tags=["contact-center"]),
    dict(name="sinch-escalations", app="Sinch escalations queue", flow="app",
         mailbox="queue-escalations@contoso-demo.onmicrosoft.com", system="Sinch Contact Center",
         checks={"graph_mail": {}}, tags=["contact-center"]),
    dict(name="agiloft-inbound", app="Agiloft Application for OAuth2", flow="app",
         mailbox="records@contoso-demo.onmicrosoft.com", system="Agiloft",
         secret_field="Inbound Email Accounts > Account > Client Secret", checks={"ews": {}, "consumer": {}},
         tags=["records"]),
    dict(name="agiloft-contracts", app="Agiloft Application for OAuth2", flow="app",
         mailbox="contracts@contoso-demo.onmicrosoft.com", system="Agiloft",
         secret_field="Inbound Email Accounts > Account > Client Secret", checks={"ews": {}}, tags=["records"]),
    dict(name="enaio-notify", app="enaio SMTP OAuth2", flow="app",
         mailbox="dms-notify@contoso-demo.onmicrosoft.com", system="enaio", secret_field="OfficeClientSecret",
         checks={"smtp": {}}, tags=["dms"]),
    dict(name="enaio-webclient", app="enaio webclient mail", flow="app",
         mailbox="dms-web@contoso-demo.onmicrosoft.com", system="enaio webclient",
         secret_field="featureSwitches.sendEmail.oAuthClientSecret", checks={"smtp": {}}, tags=["dms"]),
]
# What the story breaks after the tokens are seeded (a revocation must come after the sign-in): every refresh token
# of the account, mailwarden's and Oracle B2C Service's own (its actor, sandbox/scenarios/demo.yaml `actors:`).
REVOKED_USER = "b2c-support@contoso-demo.onmicrosoft.com"
# The scenario's consuming systems (its `actors:`) sign in for hoth-support, oracle-b2c-support, sinch-queue and
# agiloft-inbound, the integrations with a `consumer` check. The revocation ends this one's own refresh token.
REVOKED_ACTOR = "oracle-b2c-support"
# An admin (the scenario tenant's `admin`, it-admin@) removes this app's admin consent to Mail.ReadWrite at start: the
# directory audit records who and when, and the sinch-escalations alert names it.
CONSENT_REMOVED = ("4d5e6f70-4444-4d8e-9f0a-3b4c5d6e7f84", "graph", "Mail.ReadWrite")


def _slug(display: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in display.lower()).strip("-").replace("--", "-")


# The redirect URI registered on the demo's delegated apps (sandbox/scenarios/demo.yaml) for the seeding sign-in.
DEMO_REDIRECT = "http://127.0.0.1:8080/auth/callback"


def _web_section(port: int | None) -> tuple[dict, str | None]:
    """The dashboard on loopback with a password generated for this run (printed at start): the demo shows
    the login every real install has, and nothing else on the machine can use the actions."""
    if port is None:
        return {}, None
    import secrets
    import socket

    from mailwarden.monitor.web.auth import hash_password
    from mailwarden.redact import register_secret

    if port == 0:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
    password = secrets.token_urlsafe(12)
    register_secret(password)
    return {"listen": f"127.0.0.1:{port}", "base_url": f"http://127.0.0.1:{port}",
            "password_hash": hash_password(password), "refresh": "20s"}, password


def write_config(workdir: Path, endpoints: dict[str, str], scenario: dict, interval: int,
                 web: dict | None = None) -> Path:
    """The config a user would write for this tenant, pointing at the sandbox."""
    tenant = scenario["tenants"][0]
    secrets_dir = workdir / "secrets"
    secrets_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(secrets_dir, 0o700)
    apps = {}
    for spec in tenant["apps"]:
        name = _slug(spec["display_name"])
        secret_file = secrets_dir / f"{name}.secret"
        secret_file.write_text(spec["secrets"][0]["value"] + "\n", encoding="utf-8")
        os.chmod(secret_file, 0o600)
        apps[name] = {"tenant": TENANT, "client_id": spec["app_id"], "display_name": spec["display_name"],
                      "secret": f"file:secrets/{name}.secret"}
    integrations = []
    for spec in INTEGRATIONS:
        item = {k: v for k, v in spec.items() if k != "checks"}
        item["app"] = _slug(spec["app"])
        item["checks"] = {TOKEN_KIND: {}, **spec["checks"], "secret_expiry": {}}
        integrations.append(item)
    doc = {
        "database": "sqlite:///mailwarden.db",
        "cloud": "custom",
        # exchange: online, because the sandbox plays Exchange Online (EWS there retires on 1 April 2027)
        "endpoints": {**{k: v for k, v in endpoints.items()
                         if k in ("authority", "graph", "ews", "imap", "pop", "smtp", "ca_bundle")},
                      "exchange": "online"},
        **({"web": web} if web else {}),
        "defaults": {"interval": f"{interval}s", "timeout": "20s", "failure_threshold": 1},
        "tenants": {TENANT: {"tenant_id": tenant["id"], "monitor_app": "mailwarden-monitor"}},
        "apps": apps,
        "integrations": integrations,
        # Alerts print on the terminal (console:// is registered by mailwarden): see README "Alerts".
        "alerts": {"routes": [{"name": "console", "url": "console://"}]},
    }
    path = workdir / "mailwarden.yaml"
    path.write_text("# Written by `mailwarden demo`: a config for the sandbox tenant.\n"
                    + yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return path


@dataclass
class DemoEnv:
    sandbox: Sandbox
    config_path: Path
    runtime: Runtime
    web_password: str | None = None  # generated for the dashboard (when it runs), printed at start
    web_user: str = "admin"

    def run_once(self) -> list[dict]:
        results = asyncio.run(self.runtime.runner.run_many(select(self.runtime.config)))
        return [r.as_json(self.runtime.config) for r in results]

    def monitor(self):
        from mailwarden.monitor.output import print_table
        from mailwarden.monitor.scheduler import Monitor

        jobs = sum(len(i.checks) for i in self.runtime.config.integrations)
        latest: dict[tuple[str, str], dict] = {}
        console = Console()

        def on_result(result: RunResult) -> None:
            latest[(result.integration, result.check)] = result.as_json(self.runtime.config)
            if len(latest) >= jobs:
                print_table(list(latest.values()), console, title="mailwarden demo: latest cycle")
                latest.clear()

        return Monitor(self.runtime, self.config_path, on_result=on_result)

    def close(self) -> None:
        self.runtime.close()
        self.sandbox.stop()


def first_secrets_cycle(runtime: Runtime, *, dispatch: bool = True) -> None:
    """The reminders due at start: the Agiloft secret ends in 10 days (its 14-day reminder, naming both
    agiloft-* integrations), enaio's has expired (its on-expiry reminder). Without ``dispatch`` they wait in
    the outbox for the scheduler's dispatch job, so the interactive demo prints its dashboard URL first."""
    from mailwarden.monitor.alerting import make_dispatcher
    from mailwarden.monitor.reauth_links import for_runtime
    from mailwarden.monitor.secrets import SecretsCycle

    asyncio.run(SecretsCycle.of(runtime).run())
    if dispatch:
        make_dispatcher(runtime.config, runtime.store, reauth_urls=for_runtime(runtime)).run_once()


def first_consumer_rounds(sb, runtime: Runtime) -> None:
    """The consuming systems' first rounds now (their schedules would wait 5 to 15 minutes), the consent removal and
    the revocation the story needs, Oracle B2C Service's next round, then one read of the sign-in log and the directory
    audit: the first cycle's ``consumer`` checks judge them, and the sinch-escalations alert names who removed its
    consent. Oracle B2C Service signed in until its account's sessions were revoked, then its own refresh token
    fails (AADSTS50173), as mailwarden's does; the others sign in. The demo scenario's log delays are shortened so
    what the rounds logged is readable at once."""
    sb.control.tick_actors()
    sb.control.remove_app_permission(*CONSENT_REMOVED)
    sb.control.revoke_user_sessions(REVOKED_USER)
    next_log_second()
    sb.control.tick_actors(REVOKED_ACTOR)
    assert runtime.signins is not None  # open_runtime always sets it
    asyncio.run(runtime.signins.poll())


def next_log_second() -> None:
    """Wait for the next whole second (under one): the sandbox's sign-in log keeps whole seconds, and an event
    logged in the same second as another is in no certain order. The demo's steps follow each other within
    milliseconds; a failure must be logged after the success before it."""
    time.sleep(1.001 - time.time() % 1)


def prepare(workdir: Path, *, interval: int = 60, quiet: bool = False, web_port: int | None = None) -> DemoEnv:
    """``web_port``: write a dashboard section (0: a free port); None (``--once``, tests) writes none."""
    require_sandbox()
    from mailwarden_sandbox import Sandbox
    from mailwarden_sandbox.browser import sign_in

    workdir = workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    for stale in ("mailwarden.db", "mailwarden.db-wal", "mailwarden.db-shm", "mailwarden.key"):
        (workdir / stale).unlink(missing_ok=True)  # a new sandbox is a new tenant: start clean
    scenario = yaml.safe_load(demo_scenario().read_text(encoding="utf-8"))
    sb = Sandbox(demo_scenario(), workdir=workdir / "sandbox", port=0)
    sb.start()
    try:
        web, password = _web_section(web_port)
        config_path = write_config(workdir, sb.endpoints, scenario, interval, web)
        if web:  # what an admin registers for the reauthorisation links: <base_url>/auth/callback (Web platform)
            callback = web["base_url"] + "/auth/callback"
            for spec in scenario["tenants"][0]["apps"]:
                if spec.get("redirect_uris") and callback not in spec["redirect_uris"]:
                    sb.control.patch_app(spec["app_id"], redirect_uris=[*spec["redirect_uris"], callback])
        cfg = config_mod.load(config_path)
        runtime = open_runtime(cfg)
        passwords = {u["upn"]: u["password"] for u in scenario["tenants"][0]["users"]}
        for integ in cfg.integrations:
            if integ.flow != "delegated":
                continue
            redirect = DEMO_REDIRECT
            assert integ.account is not None  # a delegated integration names its account (config validation)
            flow = reauth.start(runtime.tokens, integ, redirect)
            back = sign_in(flow["auth_uri"], integ.account, passwords[integ.account], sb.ca_path)
            reauth.complete(runtime.tokens, integ, flow, reauth.parse_redirect(back))
            if not quiet:
                Console(stderr=True).print(f"signed in as {integ.account} for {integ.name}")
        first_consumer_rounds(sb, runtime)  # revokes REVOKED_USER's sessions between the rounds
        first_secrets_cycle(runtime, dispatch=web_port is None)
    except BaseException:
        sb.stop()
        raise
    return DemoEnv(sb, config_path, runtime, password)
