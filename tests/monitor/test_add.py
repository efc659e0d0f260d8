"""`mailwarden add SYSTEM` (issue 17): the entry it writes into an existing file (every other line kept), the values
it asks for (all missing ones named at once, with the flag and where the vendor keeps the value), nothing written
when the result would not be valid, and, against the sandbox's demo tenant, each of the five systems added by flags
and checked green."""

from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from mailwarden.monitor import config as config_mod
from mailwarden.monitor import onboard
from mailwarden.monitor.cli import app

TENANT_ID = "11111111-2222-3333-4444-555555555555"
CLIENT_ID = "22222222-3333-4444-5555-666666666666"


def _plan(**entries) -> onboard.Plan:
    return onboard.Plan(entries.get("tenants", {}), entries.get("apps", {}), entries.get("integrations", []))


NEW_APP = {"x": {"tenant": "contoso", "client_id": CLIENT_ID, "secret": "env:X"}}
NEW_INTEG = [{"name": "new", "app": "x", "flow": "app", "mailbox": "a@contoso.com"}]

# (label, file text): the shapes a hand-written config takes
SHAPES = [
    ("block, comments", """\
        # top comment
        tenants:
          contoso: {tenant_id: %s}   # inline comment
        apps:
          old:                       # the old app
            tenant: contoso
            client_id: 33333333-3333-4444-5555-666666666666
            secret: env:OLD

        # the integrations follow
        integrations:
          - name: first
            app: old
            flow: app
            mailbox: b@contoso.com
        # trailing comment
        """),
    ("sequence at column 0", """\
        tenants:
          contoso:
            tenant_id: %s
        apps:
            old: {tenant: contoso, client_id: 33333333-3333-4444-5555-666666666666, secret: env:OLD}
        integrations:
        - name: first
          app: old
          flow: app
          mailbox: b@contoso.com
        """),
    ("flow style and empty", """\
        tenants: {contoso: {tenant_id: %s}}
        apps: {}
        integrations:
        """),
    ("sections missing", """\
        database: sqlite:///mailwarden.db
        tenants:
          contoso:
            tenant_id: %s
        """),
]


@pytest.mark.parametrize("label,text", SHAPES, ids=[s[0] for s in SHAPES])
def test_insert_adds_the_entries_and_keeps_every_other_line(label, text):
    before = textwrap.dedent(text) % TENANT_ID
    after = onboard.insert(before, _plan(apps=NEW_APP, integrations=NEW_INTEG))
    old, new = yaml.safe_load(before), yaml.safe_load(after)
    assert new["apps"] == {**(old.get("apps") or {}), **NEW_APP}
    assert new["integrations"] == (old.get("integrations") or []) + NEW_INTEG
    assert new["tenants"] == old["tenants"]
    if label != "flow style and empty":  # a rewritten flow section is the one place lines change
        rest = iter(after.splitlines())
        assert all(line in rest for line in before.splitlines()), after  # every line kept, in its order
    # comments stay with what they describe
    if label == "block, comments":
        lines = after.splitlines()
        assert lines.index("# the integrations follow") == lines.index("integrations:") - 1
        assert lines.index("    secret: env:X") < lines.index("# the integrations follow")


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "mailwarden.yaml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def test_missing_values_are_named_at_once_with_their_flags_and_nothing_is_written(tmp_path):
    path = _write(tmp_path, f"tenants:\n  contoso: {{tenant_id: {TENANT_ID}}}\n")
    before = path.read_text()
    result = CliRunner().invoke(app, ["add", "house-on-the-hill", "--config", str(path), "--no-input"])
    assert result.exit_code == 3, result.output
    for flag in ("--client-id", "--secret", "--mailbox", "--account"):
        assert flag in result.output
    assert "OAuth Scripts" in result.output  # where House-on-the-Hill keeps the IDs and the secret
    assert "nothing was written" in result.output
    assert path.read_text() == before


def test_a_result_that_would_not_be_valid_writes_nothing(tmp_path):
    path = _write(tmp_path, f"""\
        tenants:
          contoso: {{tenant_id: {TENANT_ID}}}
        integrations:
          - {{name: sinch, app: nope, flow: app, mailbox: q@contoso.com}}
        """)
    before = path.read_text()
    result = CliRunner().invoke(app, ["add", "sinch", "--config", str(path), "--no-input", "--client-id", CLIENT_ID,
                                      "--secret", "env:SINCH", "--mailbox", "queue@contoso.com"])
    assert result.exit_code == 3, result.output
    assert "no app named 'nope'" in result.output and "nothing was written" in result.output
    assert path.read_text() == before


def test_an_inline_secret_is_refused(tmp_path):
    path = _write(tmp_path, f"tenants:\n  contoso: {{tenant_id: {TENANT_ID}}}\n")
    result = CliRunner().invoke(app, ["add", "enaio", "--config", str(path), "--no-input", "--client-id", CLIENT_ID,
                                      "--secret", "abcQ~theSecretValueItself", "--mailbox", "dms@contoso.com"])
    assert result.exit_code == 3
    assert "never the secret itself" in result.output
    assert "theSecretValueItself" not in result.output + path.read_text()


def test_a_multitenant_app_of_another_tenant_gets_the_integration_s_tenant(tmp_path):
    home = "99999999-8888-7777-6666-555555555555"
    path = _write(tmp_path, f"""\
        tenants:
          vendor: {{tenant_id: {home}}}
          contoso: {{tenant_id: {TENANT_ID}}}
        apps:
          b2c: {{tenant: vendor, client_id: {CLIENT_ID}, secret: env:B2C}}
        """)
    result = CliRunner().invoke(app, ["add", "oracle-b2c", "--config", str(path), "--no-input", "--tenant", "contoso",
                                      "--client-id", CLIENT_ID, "--mailbox", "support@contoso.com",
                                      "--account", "support@contoso.com", "--no-check"])
    assert result.exit_code in (0, 1), result.output
    cfg = config_mod.load(path)
    integ = cfg.integration("oracle-b2c")
    assert integ.app == "b2c" and integ.tenant == "contoso"  # the app is reused, not added twice
    assert cfg.tenant_name_of(integ) == "contoso" and cfg.apps["b2c"].tenant == "vendor"
    assert integ.reauth_after_rotation  # Oracle B2C: authenticate each mailbox again after a new secret


# -- against the sandbox's demo tenant ------------------------------------------------------------------------------

DEMO = Path(__file__).resolve().parents[2] / "sandbox" / "scenarios" / "demo.yaml"
# (system, app id, mailbox, account, password): healthy mailboxes of the demo tenant
FIVE = [
    ("house-on-the-hill", "1a2b3c4d-1111-4a5b-8c9d-0e1f2a3b4c51", "support@contoso-demo.onmicrosoft.com",
     "hoth-mail@contoso-demo.onmicrosoft.com", "Demo-HotH-2026!"),
    ("oracle-b2c", "2b3c4d5e-2222-4b6c-9d0e-1f2a3b4c5d62", "b2c-support@contoso-demo.onmicrosoft.com",
     "b2c-support@contoso-demo.onmicrosoft.com", "Demo-B2C-2026!"),
    ("sinch", "3c4d5e6f-3333-4c7d-8e9f-2a3b4c5d6e73", "queue-support@contoso-demo.onmicrosoft.com", None, None),
    ("agiloft", "5e6f7081-5555-4e9f-8a1b-4c5d6e7f8095", "records@contoso-demo.onmicrosoft.com", None, None),
    ("enaio", "6f708192-6666-4f0a-9b2c-5d6e7f8091a6", "dms-notify@contoso-demo.onmicrosoft.com", None, None),
]


@pytest.fixture(scope="module")
def demo_tenant(tmp_path_factory):
    from mailwarden.monitor.demo import CONSENT_REMOVED
    from mailwarden_sandbox import Sandbox

    with Sandbox(DEMO, workdir=tmp_path_factory.mktemp("sandbox")) as sb:
        sb.control.remove_app_permission(*CONSENT_REMOVED)  # as the demo does at start: the tenant the demo shows
        yield sb, yaml.safe_load(DEMO.read_text())["tenants"][0]


def _monitor_only_config(sb, tenant: dict, tmp_path: Path) -> Path:
    """A config with the demo tenant and its monitor app only (its secret in secrets/monitor.secret, 0600)."""
    secrets = tmp_path / "secrets"
    secrets.mkdir(mode=0o700, exist_ok=True)
    monitor = tenant["apps"][0]
    (secrets / "monitor.secret").write_text(monitor["secrets"][0]["value"] + "\n")
    os.chmod(secrets / "monitor.secret", 0o600)
    endpoints = {k: v for k, v in sb.endpoints.items()
                 if k in ("authority", "graph", "ews", "imap", "pop", "smtp", "ca_bundle")}
    path = tmp_path / "mailwarden.yaml"
    path.write_text(yaml.safe_dump({
        "database": "sqlite:///mailwarden.db", "cloud": "custom", "endpoints": {**endpoints, "exchange": "online"},
        "tenants": {"contoso": {"tenant_id": tenant["id"], "monitor_app": "monitor"}},
        "apps": {"monitor": {"tenant": "contoso", "client_id": monitor["app_id"],
                             "secret": "file:secrets/monitor.secret"}},
        "evidence": {"signins": {"enabled": False}}}, sort_keys=False))
    return path


@pytest.mark.parametrize("system,app_id,mailbox,account,password", FIVE, ids=[f[0] for f in FIVE])
def test_each_system_added_by_flags_checks_green_against_the_demo_tenant(demo_tenant, tmp_path, system, app_id,
                                                                         mailbox, account, password):
    sb, tenant = demo_tenant
    path = _monitor_only_config(sb, tenant, tmp_path)
    # a fresh secret (the demo's Agiloft and enaio secrets are nearly or already expired, on purpose)
    added = sb.control.add_secret(app_id, display_name="added by the test", end="+400d")
    secret_file = tmp_path / "secrets" / f"{system}.secret"
    secret_file.write_text(added["value"] + "\n")
    os.chmod(secret_file, 0o600)
    flags = ["add", system, "--config", str(path), "--no-input", "--client-id", app_id,
             "--secret", f"file:secrets/{system}.secret", "--mailbox", mailbox]
    if account:
        flags += ["--account", account]
    result = CliRunner().invoke(app, flags)
    cfg = config_mod.load(path)
    integ = cfg.integrations[-1]
    if account:  # nobody has signed in for mailwarden yet: add says how, and checks nothing
        assert result.exit_code == 1 and f"mailwarden reauth {integ.name}" in result.output, result.output
        from mailwarden.monitor import reauth
        from mailwarden.monitor.runtime import open_runtime
        from mailwarden_sandbox.browser import sign_in

        runtime = open_runtime(cfg)
        try:
            flow = reauth.start(runtime.tokens, integ, "http://127.0.0.1:8080/auth/callback")
            back = sign_in(flow["auth_uri"], account, password, sb.ca_path)
            reauth.complete(runtime.tokens, integ, flow, reauth.parse_redirect(back))
        finally:
            runtime.close()
    else:  # add ran the checks: exit 0 all ok, 1 something to do
        assert result.exit_code == (1 if system == "agiloft" else 0), result.output
    assert added["value"] not in result.output + path.read_text()
    rows = json.loads(CliRunner().invoke(app, ["check", "--config", str(path), "-i", integ.name, "--no-alerts",
                                               "--format", "json"]).output)
    assert {r["check"] for r in rows} == set(integ.checks) and len(rows) >= 3
    # green, but for the one warning that is true of every EWS integration in Exchange Online now: EWS shuts down on
    # 1 April 2027 (M365_FACTS.md, "Platform dates")
    expected = {r["check"]: ("warn", "ews_retiring") if r["check"] == "ews" else ("ok", None) for r in rows}
    assert {r["check"]: (r["status"], r["code"]) for r in rows} == expected, rows


def test_asked_in_a_terminal_it_offers_the_tenant_s_unmonitored_apps_that_fit(demo_tenant, tmp_path):
    """Without --client-id (and without --no-input) add lists, through the tenant's monitor app, the apps not monitored
    yet whose permissions fit the system (`mailwarden discover`), so nobody copies a client ID by hand."""
    sb, tenant = demo_tenant
    path = _monitor_only_config(sb, tenant, tmp_path)
    sinch = next(a for a in tenant["apps"] if a["display_name"] == "Sinch Contact Center mail")
    (tmp_path / "secrets" / "sinch.secret").write_text(sinch["secrets"][0]["value"] + "\n")
    answers = "1\nfile:secrets/sinch.secret\nqueue-support@contoso-demo.onmicrosoft.com\n"
    result = CliRunner().invoke(app, ["add", "sinch", "--config", str(path)], input=answers)
    out = result.output
    assert "Apps in tenant contoso with the permissions sinch needs, not monitored yet:" in out, out
    offered = [line for line in out.splitlines() if line.startswith("  1. ") or line.startswith("  2. ")]
    assert offered == [f"  1. Sinch Contact Center mail ({sinch['app_id']}), app"], out  # the only one that fits
    assert "System Configurator" in out  # where Sinch keeps the secret and the mailbox, asked for next
    assert result.exit_code == 0, out
    cfg = config_mod.load(path)
    assert cfg.apps[cfg.integrations[-1].app].client_id == sinch["app_id"]
    assert sinch["secrets"][0]["value"] not in out
