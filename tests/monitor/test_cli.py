"""The CLI contract: exit codes, one-paragraph errors (never a traceback), JSON shape."""

import json

import pytest
from typer.testing import CliRunner

from mailwarden.monitor.cli import app

runner = CliRunner()

# Every Microsoft host is replaced by a closed local port: these tests never leave the machine.
CONFIG = """\
cloud: custom
endpoints: {authority: "https://127.0.0.1:1", graph: "https://127.0.0.1:1/v1.0"}
defaults: {timeout: 5s}
tenants: {t: {tenant_id: 11111111-2222-3333-4444-555555555555, monitor_app: mon}}
apps:
  mon: {tenant: t, client_id: 12121212-3434-5656-7878-909090909090, secret: env:MW_CLI_MON}
  a: {tenant: t, client_id: 66666666-7777-8888-9999-000000000000, secret: env:MW_CLI_SET}
  b: {tenant: t, client_id: 77777777-7777-8888-9999-000000000000, secret: env:MW_CLI_UNSET}
integrations:
  - {name: reachable, app: a, flow: app, mailbox: a@contoso.com, checks: [token]}
  - {name: unresolved, app: b, flow: app, mailbox: b@contoso.com, checks: [token]}
"""


@pytest.fixture
def cfg(tmp_path, monkeypatch):
    monkeypatch.setenv("MW_CLI_SET", "value-of-a-secret-123")
    monkeypatch.delenv("MW_CLI_UNSET", raising=False)
    p = tmp_path / "mailwarden.yaml"
    p.write_text(CONFIG)
    return p


def test_validate_ok_and_resolve(cfg):
    res = runner.invoke(app, ["validate", "-c", str(cfg)])
    assert res.exit_code == 0 and "valid (2 integration(s)" in res.output
    res = runner.invoke(app, ["validate", "-c", str(cfg), "--resolve"])
    assert res.exit_code == 1
    assert "MW_CLI_UNSET is not set" in res.output and "apps.b.secret" in res.output
    assert "MW_CLI_MON" in res.output


def test_validate_reports_problems_with_exit_1(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("integrations:\n  - {name: x, app: nope, flow: sideways, mailbox: m@x.com}\n")
    res = runner.invoke(app, ["validate", "-c", str(p)])
    assert res.exit_code == 1
    assert "integrations[0].flow (line 2)" in res.output
    assert "Traceback" not in res.output


def test_missing_config_is_exit_3_for_check_and_1_for_validate(tmp_path):
    missing = str(tmp_path / "none.yaml")
    assert runner.invoke(app, ["check", "-c", missing]).exit_code == 3
    res = runner.invoke(app, ["validate", "-c", missing])
    assert res.exit_code == 1 and "does not exist" in res.output


def test_check_unresolved_reference_affects_only_its_integration(cfg):
    res = runner.invoke(app, ["check", "-c", str(cfg), "--format", "json"])
    rows = json.loads(res.stdout)
    by = {r["integration"]: r for r in rows}
    assert by["unresolved"]["status"] == "error" and by["unresolved"]["code"] == "config_error"
    assert "MW_CLI_UNSET" in by["unresolved"]["summary"]
    # the other one was really attempted: the (closed) identity provider port refused it; a login host that
    # cannot be reached is one cause, idp_unreachable, with what happened in the summary
    assert by["reachable"]["code"] == "idp_unreachable" and "refused the connection" in by["reachable"]["summary"]
    assert res.exit_code == 3
    for r in rows:
        assert set(r) >= {"integration", "check", "status", "code", "summary", "fix", "latency_ms",
                          "checked_at", "details"}
        assert r["checked_at"].endswith("Z") and r["fix"]
    assert "value-of-a-secret-123" not in res.output


def test_check_selection_that_matches_nothing_is_exit_3(cfg):
    res = runner.invoke(app, ["check", "-c", str(cfg), "--integration", "ghost"])
    assert res.exit_code == 3 and "no integration named 'ghost'" in res.output
    res = runner.invoke(app, ["check", "-c", str(cfg), "--check", "imap"])
    assert res.exit_code == 3 and "matches no check" in res.output
    assert "no integration that is not paused has a 'imap' check" in res.output
    res = runner.invoke(app, ["check", "-c", str(cfg), "-i", "reachable", "--check", "pop"])
    assert res.exit_code == 3 and "integration 'reachable' has no 'pop' check" in res.output
    res = runner.invoke(app, ["check", "-c", str(cfg), "--check", "imapp"])
    assert res.exit_code == 3 and "'imapp' is not a check kind (one of token, secret_expiry, imap" in res.output
    for res in (runner.invoke(app, ["check", "-c", str(cfg), "--check", "imapp"]),
                runner.invoke(app, ["check", "-c", str(cfg), "-i", "ghost"])):
        assert len(res.stderr.strip().splitlines()) == 1 and "nothing was run" in res.stderr


def test_unreachable_database_is_one_paragraph_exit_3(tmp_path, monkeypatch):
    monkeypatch.setenv("MW_CLI_SET", "x-secret-value")
    p = tmp_path / "mailwarden.yaml"
    p.write_text("database: postgresql+psycopg://mw:hunter22@127.0.0.1:1/mw\ntoken_key: env:MW_KEY\n"
                 + CONFIG.split("\n", 2)[2].replace("cloud: custom\n", ""))
    res = runner.invoke(app, ["check", "-c", str(p)])
    assert res.exit_code == 3
    assert "hunter22" not in res.output and "Traceback" not in res.output
    assert "127.0.0.1" in res.output


def test_schema_is_json():
    res = runner.invoke(app, ["schema"])
    doc = json.loads(res.stdout)
    assert res.exit_code == 0 and "integrations" in doc["properties"]


def test_exit_code_order():
    from mailwarden.monitor.cli import exit_code

    def rows(*statuses):
        return [{"integration": f"i{n}", "check": "imap", "status": s} for n, s in enumerate(statuses)]

    assert exit_code(rows("ok", "warn", "error", "fail")) == 2
    assert exit_code(rows("ok", "warn", "error")) == 3
    assert exit_code(rows("ok", "warn")) == 1
    assert exit_code(rows("ok")) == 0
    # blocked is never ok: it counts as the token check that blocks it (tests/monitor/test_cli_check.py)
    assert exit_code(rows("ok", "warn", "blocked")) == 2


def test_help_documents_exit_codes():
    res = runner.invoke(app, ["check", "--help"])
    text = " ".join(res.output.split())
    assert "0 all ok" in text and "2 some fail" in text and "3 some error" in text and "1 some warn" in text
    assert "a blocked check counts as the token check that blocks it" in text
    assert "usage error" in text
