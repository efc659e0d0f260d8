"""`mailwarden check`: the exit code counts a blocked check as the token check that blocks it, and a mailbox check
selected alone (`--check pop`) runs after its integration's token check, which is printed and stored too."""

from __future__ import annotations

import json
import textwrap
from typing import ClassVar

import pytest
from pydantic import BaseModel
from typer.testing import CliRunner

from mailwarden import checks
from mailwarden.checks.base import NoOptions, Outcome, Status
from mailwarden.monitor import config as config_mod
from mailwarden.monitor.cli import app, exit_code
from mailwarden.monitor.db import open_store

runner = CliRunner()


class Scripted:
    """A check kind whose outcome per integration a test sets; it records the order of its runs."""

    config_model: ClassVar[type[BaseModel]] = NoOptions
    # the declarations of checks.base.Check: a scripted kind asks for no token and talks to no server
    needs: ClassVar[dict] = {}
    uses_app_token: ClassVar[bool] = False
    endpoint: ClassVar[str | None] = None

    def __init__(self, kind: str, log: list[str], depends_on: tuple[str, ...] = ()):
        self.kind, self.log, self.depends_on = kind, log, depends_on
        self.next: dict[str, str] = {}

    async def run(self, ctx):
        self.log.append(f"{ctx.integration.name}/{self.kind}")
        status = self.next.get(ctx.integration.name, "ok")
        code = {"ok": None, "fail": "refresh_token_revoked", "error": "idp_unreachable", "warn": "throttled"}[status]
        return Outcome(Status(status), code, f"scripted {status}")


@pytest.fixture
def kinds(monkeypatch):
    log: list[str] = []
    token, mailbox = Scripted("token", log), Scripted("pop_test", log, depends_on=("token",))
    registry = {**checks.REGISTRY, "token": token, "pop_test": mailbox}
    monkeypatch.setattr(checks, "REGISTRY", registry)
    import mailwarden.monitor.runner as runner_mod

    monkeypatch.setattr(runner_mod, "REGISTRY", registry)
    return token, mailbox, log


@pytest.fixture
def cfg(tmp_path, monkeypatch):
    monkeypatch.setenv("MW_CHECK_SECRET", "x-secret-value")
    path = tmp_path / "mailwarden.yaml"
    path.write_text(textwrap.dedent("""\
        defaults: {timeout: 5s, failure_threshold: 1}
        tenants: {t: {tenant_id: 11111111-2222-3333-4444-555555555555}}
        apps: {a: {tenant: t, client_id: 66666666-7777-8888-9999-000000000000, secret: env:MW_CHECK_SECRET}}
        integrations:
          - {name: helpdesk, app: a, flow: app, mailbox: a@contoso.com, checks: [token, pop_test]}
          - {name: no-token, app: a, flow: app, mailbox: b@contoso.com, checks: [pop_test]}
        """))
    return path


def check(cfg, *args):
    res = runner.invoke(app, ["check", "-c", str(cfg), "--format", "json", *args])
    assert res.exception is None or isinstance(res.exception, SystemExit), repr(res.exception)
    return res, {(r["integration"], r["check"]): r for r in json.loads(res.stdout or "[]")}


def stored_results(cfg):
    store = open_store(config_mod.load(cfg).database_url())
    try:
        return sorted((r.integration, r.check, r.status) for r in store.checks.latest_results())
    finally:
        store.close()


def row(integration, check, status):
    return {"integration": integration, "check": check, "status": status}


@pytest.mark.parametrize("rows,code", [
    ([row("a", "token", "ok"), row("a", "pop", "ok")], 0),
    ([row("a", "token", "warn"), row("a", "pop", "ok")], 1),
    ([row("a", "token", "fail"), row("a", "pop", "blocked")], 2),
    ([row("a", "token", "error"), row("a", "pop", "blocked")], 3),
    # a blocked check counts as its own integration's token check, not another's
    ([row("a", "token", "error"), row("a", "pop", "blocked"), row("b", "token", "fail"), row("b", "pop", "blocked")],
     2),
    ([row("a", "token", "error"), row("a", "pop", "blocked"), row("b", "imap", "warn")], 3),
    # the blocking token result not among the rows: never ok
    ([row("a", "pop", "blocked")], 2),
    ([row("a", "pop", "blocked"), row("b", "imap", "error")], 2),
    ([row("a", "pop", "ok"), row("b", "imap", "error"), row("c", "smtp", "warn"), row("d", "token", "fail")], 2),
    ([row("a", "pop", "ok"), row("b", "imap", "error"), row("c", "smtp", "warn")], 3),
    ([row("a", "pop", "ok"), row("c", "smtp", "warn")], 1),
    ([], 0),
])
def test_exit_code_counts_blocked_as_its_token_check(rows, code):
    assert exit_code(rows) == code


def test_mailbox_check_alone_runs_the_token_check_first_and_is_blocked_by_it(cfg, kinds):
    token, _, log = kinds
    res, rows = check(cfg)
    assert res.exit_code == 0 and len(rows) == 3
    # the refresh token is revoked: `check --check pop_test` must not report ok
    token.next = {"helpdesk": "fail"}
    log.clear()
    res, rows = check(cfg, "--check", "pop_test")
    assert set(rows) == {("helpdesk", "token"), ("helpdesk", "pop_test"), ("no-token", "pop_test")}
    assert rows[("helpdesk", "token")]["status"] == "fail"
    assert (rows[("helpdesk", "pop_test")]["status"], rows[("helpdesk", "pop_test")]["code"]) == \
        ("blocked", "blocked_by_token")
    assert rows[("no-token", "pop_test")]["status"] == "ok"  # no token check configured: none is added
    assert "helpdesk/token" in log and "helpdesk/pop_test" not in log
    assert res.exit_code == 2, res.output
    # the token result is stored like any other
    assert ("helpdesk", "token", "fail") in stored_results(cfg)


def test_blocked_by_a_token_error_exits_3(cfg, kinds):
    token, _, _ = kinds
    token.next = {"helpdesk": "error"}
    res, rows = check(cfg, "--check", "pop_test", "-i", "helpdesk")
    assert [k for k in rows] == [("helpdesk", "token"), ("helpdesk", "pop_test")]
    assert rows[("helpdesk", "pop_test")]["status"] == "blocked"
    assert res.exit_code == 3, res.output


def test_token_recovers_and_the_mailbox_check_runs_after_it(cfg, kinds):
    token, _, log = kinds
    token.next = {"helpdesk": "fail"}
    assert check(cfg, "-i", "helpdesk")[0].exit_code == 2
    token.next = {}
    log.clear()
    res, rows = check(cfg, "--check", "pop_test", "-i", "helpdesk")
    assert log == ["helpdesk/token", "helpdesk/pop_test"]
    assert {k: r["status"] for k, r in rows.items()} == {("helpdesk", "token"): "ok", ("helpdesk", "pop_test"): "ok"}
    assert res.exit_code == 0


def test_token_check_alone_brings_nothing_along(cfg, kinds):
    _, _, log = kinds
    res, rows = check(cfg, "--check", "token")
    assert list(rows) == [("helpdesk", "token")] and log == ["helpdesk/token"] and res.exit_code == 0


def test_table_output_shows_the_token_check_it_ran(cfg, kinds):
    token, _, _ = kinds
    token.next = {"helpdesk": "fail"}
    res = runner.invoke(app, ["check", "-c", str(cfg), "--check", "pop_test", "-i", "helpdesk"])
    assert res.exit_code == 2
    assert "token" in res.stdout and "blocked" in res.stdout and "refresh_token_revoked" in res.stdout
