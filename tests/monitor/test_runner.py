"""The runner: a check that raises or hangs becomes an `error` and never stops the others; mailbox
checks are blocked while the token check fails; the limits hold."""

import asyncio
import textwrap
from typing import ClassVar

import pytest
from pydantic import BaseModel

from mailwarden import checks
from mailwarden.checks.base import NoOptions, Outcome, Status
from mailwarden.monitor import config as config_mod
from mailwarden.monitor.runner import select
from mailwarden.monitor.runtime import open_runtime


class Scripted:
    """A check kind whose outcomes a test sets, standing for any real kind."""

    config_model: ClassVar[type[BaseModel]] = NoOptions
    # the declarations of checks.base.Check: a scripted kind asks for no token and talks to no server
    needs: ClassVar[dict] = {}
    uses_app_token: ClassVar[bool] = False
    endpoint: ClassVar[str | None] = None

    def __init__(self, kind, depends_on=()):
        self.kind = kind
        self.depends_on = depends_on
        self.next: dict[str, object] = {}
        self.running = 0
        self.peak = 0
        self.calls = []

    async def run(self, ctx):
        self.calls.append(ctx.integration.name)
        self.running += 1
        self.peak = max(self.peak, self.running)
        try:
            action = self.next.get(ctx.integration.name, "ok")
            if action == "hang":
                await asyncio.sleep(30)
            if action == "raise":
                raise RuntimeError("boom with Bearer eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl")
            if action == "slow":
                await asyncio.sleep(0.05)
                action = "ok"
            return Outcome(Status(action), None if action == "ok" else "auth_failed", f"scripted {action}")
        finally:
            self.running -= 1


@pytest.fixture
def kinds(monkeypatch):
    token, mailbox = Scripted("token"), Scripted("imap_test", depends_on=("token",))
    registry = dict(checks.REGISTRY)
    registry.update({"token": token, "imap_test": mailbox})
    monkeypatch.setattr(checks, "REGISTRY", registry)
    import mailwarden.monitor.runner as runner_mod

    monkeypatch.setattr(runner_mod, "REGISTRY", registry)
    return token, mailbox


def make_runtime(tmp_path, n=3, extra=""):
    integrations = "".join(
        f"  - {{name: i{k}, app: a, flow: app, mailbox: box{k % 2}@contoso.com, checks: [token, imap_test]}}\n"
        for k in range(n))
    text = textwrap.dedent(f"""\
        defaults: {{timeout: 0.5s, failure_threshold: 1}}
        {extra}
        tenants: {{t: {{tenant_id: 11111111-2222-3333-4444-555555555555}}}}
        apps: {{a: {{tenant: t, client_id: 66666666-7777-8888-9999-000000000000, secret: env:X}}}}
        integrations:
        """) + integrations
    (tmp_path / "mailwarden.yaml").write_text(text)
    return open_runtime(config_mod.load(tmp_path / "mailwarden.yaml"))


def test_raise_and_hang_become_errors_and_others_still_run(tmp_path, kinds):
    token, mailbox = kinds
    rt = make_runtime(tmp_path)
    token.next = {"i0": "raise", "i1": "hang"}
    results = asyncio.run(rt.runner.run_many(select(rt.config)))
    by = {(r.integration, r.check): r.outcome for r in results}
    assert by[("i0", "token")].status == Status.ERROR and by[("i0", "token")].code == "unclassified"
    assert "RuntimeError" in by[("i0", "token")].summary
    assert "eyJ" not in by[("i0", "token")].summary and "eyJ" not in (by[("i0", "token")].raw or "")
    assert by[("i1", "token")].status == Status.ERROR and by[("i1", "token")].code == "timeout"
    assert by[("i2", "token")].status == Status.OK and by[("i2", "imap_test")].status == Status.OK
    # every result is stored
    assert len(rt.store.checks.latest_results()) == 6
    rt.close()


def test_mailbox_checks_blocked_while_token_fails(tmp_path, kinds):
    token, mailbox = kinds
    rt = make_runtime(tmp_path, n=2)
    token.next = {"i0": "fail"}
    results = asyncio.run(rt.runner.run_many(select(rt.config)))
    by = {(r.integration, r.check): r.outcome for r in results}
    assert by[("i0", "imap_test")].status == Status.BLOCKED
    assert by[("i0", "imap_test")].code == "blocked_by_token"
    assert mailbox.calls.count("i0") == 0 and mailbox.calls.count("i1") == 1
    # the token recovers: the mailbox check runs again
    token.next = {}
    results = asyncio.run(rt.runner.run_many(select(rt.config, "i0")))
    assert {r.check: r.outcome.status for r in results} == {"token": Status.OK, "imap_test": Status.OK}
    rt.close()


def test_one_connection_per_mailbox_and_protocol(tmp_path, kinds):
    token, mailbox = kinds
    rt = make_runtime(tmp_path, n=6)
    mailbox.next = {f"i{k}": "slow" for k in range(6)}
    # six integrations over two mailboxes: never more than two imap_test runs at once
    asyncio.run(rt.runner.run_many(select(rt.config, check="imap_test")))
    assert mailbox.peak <= 2
    rt.close()


def test_global_concurrency_limit(tmp_path, kinds):
    token, mailbox = kinds
    rt = make_runtime(tmp_path, n=8, extra="concurrency: {total: 3, per_tenant: 5}")
    token.next = {f"i{k}": "slow" for k in range(8)}
    asyncio.run(rt.runner.run_many(select(rt.config, check="token")))
    assert token.peak == 3
    rt.close()


def test_select_filters_and_skips_paused(tmp_path):
    (tmp_path / "mailwarden.yaml").write_text(textwrap.dedent("""\
        tenants: {t: {tenant_id: 11111111-2222-3333-4444-555555555555}}
        apps: {a: {tenant: t, client_id: 66666666-7777-8888-9999-000000000000, secret: env:X}}
        integrations:
          - {name: live, app: a, flow: app, mailbox: a@b.com}
          - {name: resting, app: a, flow: app, mailbox: c@b.com, paused: true}
        """))
    cfg = config_mod.load(tmp_path / "mailwarden.yaml")
    assert select(cfg) == [("live", ["token", "secret_expiry"])]
    assert select(cfg, check="token") == [("live", ["token"])]
    assert select(cfg, "resting") == [("resting", ["token", "secret_expiry"])]
