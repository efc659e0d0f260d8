"""One JSON for a result: `mailwarden check --format json` prints, and /api/results and /api/integrations/NAME answer,
the same object for the same stored result (``monitor.output.result_json``), details.tenant/flow/mailbox included;
never a secret the check's metrics carried."""

from __future__ import annotations

import json
import textwrap
from typing import ClassVar

import pytest
from pydantic import BaseModel
from starlette.testclient import TestClient
from typer.testing import CliRunner

from mailwarden import checks
from mailwarden.checks.base import NoOptions, Outcome, Status
from mailwarden.monitor import config as config_mod
from mailwarden.monitor.cli import app
from mailwarden.monitor.db import open_store
from mailwarden.monitor.web.app import create_app
from mailwarden.monitor.web.auth import Access
from mailwarden.redact import register_secret

LEAKED = "Xq7~result-json-secret-4b2e9a"


class Scripted:
    config_model: ClassVar[type[BaseModel]] = NoOptions
    # the declarations of checks.base.Check: a scripted kind asks for no token and talks to no server
    needs: ClassVar[dict] = {}
    uses_app_token: ClassVar[bool] = False
    endpoint: ClassVar[str | None] = None

    def __init__(self, kind: str, outcome: Outcome, depends_on: tuple[str, ...] = ()):
        self.kind, self.outcome, self.depends_on = kind, outcome, depends_on

    async def run(self, ctx):
        return self.outcome


@pytest.fixture
def cfg(tmp_path, monkeypatch):
    register_secret(LEAKED)
    token = Scripted("token", Outcome(Status.OK, None, "token ok", 12.34, {"roles": ["Mail.ReadWrite"]}))
    mailbox = Scripted("pop_test", Outcome(
        Status.FAIL, "auth_failed", "POP said -ERR Authentication failure", 45.67,
        {"phases_ms": {"connect": 3.5, "stat": 1.0}, "reply": f"-ERR denied for {LEAKED}"}), depends_on=("token",))
    registry = {**checks.REGISTRY, "token": token, "pop_test": mailbox}
    monkeypatch.setattr(checks, "REGISTRY", registry)
    import mailwarden.monitor.runner as runner_mod

    monkeypatch.setattr(runner_mod, "REGISTRY", registry)
    monkeypatch.setenv("MW_RJ_SECRET", "x-secret-value")
    path = tmp_path / "mailwarden.yaml"
    path.write_text(textwrap.dedent("""\
        defaults: {timeout: 5s, failure_threshold: 1}
        tenants: {contoso: {tenant_id: 11111111-2222-3333-4444-555555555555}}
        apps: {a: {tenant: contoso, client_id: 66666666-7777-8888-9999-000000000000, secret: env:MW_RJ_SECRET}}
        web: {auth: none}
        integrations:
          - {name: helpdesk, app: a, flow: delegated, account: mail@contoso.com, mailbox: support@contoso.com,
             checks: [token, pop_test]}
        """))
    return path


def test_cli_and_api_give_the_same_object_for_the_same_stored_result(cfg):
    res = CliRunner().invoke(app, ["check", "-c", str(cfg), "--format", "json", "--no-alerts"])
    assert res.exit_code == 2, res.output
    printed = {(r["integration"], r["check"]): r for r in json.loads(res.stdout)}
    config = config_mod.load(cfg)
    store = open_store(config.database_url())
    try:
        web = create_app(config, store, access=Access(mode="none"))
        with TestClient(web, base_url="http://127.0.0.1:8080") as client:
            listed = client.get("/api/results", params={"integration": "helpdesk"}).json()
            detail = client.get("/api/integrations/helpdesk").json()["results"]
    finally:
        store.close()
    assert len(printed) == len(listed) == len(detail) == 2
    for served in (listed, detail):
        assert {(r["integration"], r["check"]): r for r in served} == printed
    pop = printed[("helpdesk", "pop_test")]
    assert pop["details"]["tenant"] == "contoso" and pop["details"]["flow"] == "delegated"
    assert pop["details"]["mailbox"] == "support@contoso.com"
    assert pop["details"]["phases_ms"] == {"connect": 3.5, "stat": 1.0}
    assert pop["status"] == "fail" and pop["fix"] and isinstance(pop["id"], int) and pop["latency_ms"] == 45.7
    assert pop["checked_at"].endswith("Z")
    # a secret the check's reply carried is masked in what is printed, as in what is stored and served
    assert LEAKED not in res.stdout and LEAKED not in json.dumps(listed)
