"""`mailwarden validate` reports every problem in one run (issue 17 item 4): a key's own problems and the names that
must match (unknown check kinds, duplicate names, unknown apps and tenants) together, each with its key path, line,
plain English (never pydantic's "Input should be ..." or "Value error, ...") and, for a misspelt key or name, the
closest known one. It warns when links in alerts or reauthorisation links would point at a web.base_url that is
unset or loopback: printed, exit 0 (the config is valid: systemd's `ExecStartPre=mailwarden validate` still starts
the service), exit 1 with --strict."""

from __future__ import annotations

import re
import textwrap

import pytest
from typer.testing import CliRunner

from mailwarden.errors import ConfigError
from mailwarden.monitor import config as config_mod
from mailwarden.monitor.cli import app

runner = CliRunner()
RAW = ("Input should be", "Value error", "Assertion failed", "valid dictionary", "valid integer", "literal_error")

BASE = """\
tenants:
  contoso: {tenant_id: 11111111-2222-3333-4444-555555555555}
apps:
  helpdesk: {tenant: contoso, client_id: 66666666-7777-8888-9999-000000000000, secret: env:HD_SECRET}
integrations:
  - name: helpdesk-support
    app: helpdesk
    flow: app
    mailbox: support@contoso.com
"""


def write(tmp_path, text):
    path = tmp_path / "mailwarden.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def validate(path, *args):
    res = runner.invoke(app, ["validate", "-c", str(path), *args])
    return res.exit_code, res.output


def lines_of(output: str) -> dict[str, str]:
    """key path -> the problem's line as printed ('  - integrations[0].app (line 7): ...')."""
    return {m.group(1): m.group(0) for m in re.finditer(r"^  - (\S+) \(line \d+\): .*$", output, re.M)}


def test_three_different_mistakes_are_reported_in_one_run(tmp_path):
    """A misspelt key (pydantic's own check), an unknown app and an unknown check kind (cross-references, which the
    old code reported only once every key was valid): all three at once, with lines and suggestions."""
    path = write(tmp_path, """\
        tenants:
          contoso: {tenant_id: 11111111-2222-3333-4444-555555555555}
        apps:
          helpdesk: {tenant: contoso, client_id: 66666666-7777-8888-9999-000000000000, secret: env:HD_SECRET}
        integrations:
          - name: helpdesk-support
            app: helpdsk
            flow: app
            mailbx: support@contoso.com
            checks: [token, imapp]
        """)
    code, out = validate(path)
    assert code == 1
    found = lines_of(out)
    assert "(line 7): no app named 'helpdsk'; did you mean 'helpdesk'?" in found["integrations[0].app"], out
    assert "(line 9): unknown key; did you mean 'mailbox'?" in found["integrations[0].mailbx"], out
    assert "(line 10): unknown check 'imapp'; did you mean 'imap'?" in found["integrations[0].checks[1]"], out
    assert "(line 6): required key is missing" in found["integrations[0].mailbox"], out  # mailbx was meant
    assert not any(raw in out for raw in RAW), out


def test_names_that_must_match_are_checked_beside_invalid_values(tmp_path):
    """Duplicate names, an unknown tenant, a route's unknown check kind and a maintenance window's unknown integration,
    next to a bad duration and a bad flow, in one run; sorted by line."""
    misspelt = BASE.replace("tenant: contoso, client_id", "tenant: contso, client_id")
    path = write(tmp_path, misspelt + textwrap.dedent("""\
          - name: helpdesk-support
            app: helpdesk
            flow: sideways
            mailbox: other@contoso.com
            interval: 5 minutes
            checks: {pop: {backlog_warm: 5}}
        alerts:
          routes: [{url: "json://localhost", checks: [tokn]}]
          maintenance: [{name: patch, cron: "0 22 * * tue", duration: 2h, integrations: [helpdesk-suport]}]
        """))
    code, out = validate(path)
    assert code == 1
    found = lines_of(out)
    expected = {
        "apps.helpdesk.tenant": "(line 4): no tenant named 'contso'; did you mean 'contoso'?",
        "integrations[1].name": "(line 10): duplicate name 'helpdesk-support' (also integrations[0])",
        "integrations[1].flow": "(line 12): must be 'app' or 'delegated', not 'sideways'",
        "integrations[1].interval": "(line 14): not a duration: '5 minutes'",
        "integrations[1].checks.pop.backlog_warm": "(line 15): unknown key; did you mean 'backlog_warn'?",
        "alerts.routes[0].checks[0]": "(line 17): unknown check 'tokn'; did you mean 'token'?",
        "alerts.maintenance[0].integrations[0]": "(line 18): no integration named 'helpdesk-suport'; did you mean "
                                                 "'helpdesk-support'?",
    }
    for key, text in expected.items():
        assert key in found and text in found[key], (key, out)
    numbers = [int(n) for n in re.findall(r"^  - \S+ \(line (\d+)\)", out, re.M)]
    assert numbers == sorted(numbers)
    assert not any(raw in out for raw in RAW), out


@pytest.mark.parametrize(("setting", "key", "message"), [
    ("defaults: {failure_threshold: many}", "defaults.failure_threshold", "must be a whole number"),
    ("defaults: {failure_threshold: 0}", "defaults.failure_threshold", "must be at least 1"),
    ("web: {enabled: maybe}", "web.enabled", "must be true or false"),
    ("web: {trusted_proxies: 10.0.0.1}", "web.trusted_proxies", "must be a list"),
    ("concurrency: [1, 2]", "concurrency", "must be a mapping"),
    ("cloud: globl", "cloud", "not 'globl'; did you mean 'global'?"),
    ("log_level: 7", "log_level", "must be 'debug', 'info', 'warning' or 'error'"),
    ("alerts: {maintenance: [{name: x, start: soon, end: later}]}", "alerts.maintenance[0].start",
     "must be a date and time"),
    ("apps2: {}", "apps2", "unknown key; did you mean 'apps'?"),
    ("web: {listn: 0.0.0.0:8080}", "web.listn", "unknown key; did you mean 'listen'?"),
])
def test_messages_are_plain_english(tmp_path, setting, key, message):
    with pytest.raises(ConfigError) as info:
        config_mod.load(write(tmp_path, BASE + setting + "\n"))
    text = info.value.message()
    assert any(p.startswith(f"{key} (line ") and message in p for p in info.value.problems), text
    assert not any(raw in text for raw in RAW), text


def test_integration_name_rule_is_explained(tmp_path):
    with pytest.raises(ConfigError) as info:
        config_mod.load(write(tmp_path, BASE.replace("name: helpdesk-support", "name: help desk")))
    assert any(p.startswith("integrations[0].name (line 6): must start with a letter or digit") for p in
               info.value.problems), info.value.problems


ALERTS = 'alerts: {routes: [{url: "json://localhost"}]}\n'
DELEGATED = BASE.replace("flow: app", "flow: delegated\n    account: helpdesk-mail@contoso.com")


@pytest.mark.parametrize("text", [BASE + ALERTS, DELEGATED], ids=["alerts", "reauthorisation links"])
def test_unset_base_url_warns_when_links_are_sent(tmp_path, text):
    code, out = validate(write(tmp_path, text))
    assert code == 0
    assert validate(write(tmp_path, text), "--strict")[0] == 1
    assert "valid (" in out and "1 warning(s)" in out
    assert "web.base_url: it is not set" in out and "will not open for anyone else" in out
    assert "Set web.base_url to the address people open mailwarden at" in out


def test_loopback_base_url_warns_with_its_line_and_a_real_one_does_not(tmp_path):
    code, out = validate(write(tmp_path, BASE + ALERTS + "web: {base_url: 'http://localhost:8080'}\n"))
    assert code == 0 and "1 warning(s)" in out
    assert "web.base_url (line 11): http://localhost:8080 is an address only this machine reaches" in out
    for loopback in ("http://127.0.0.2:8080", "http://[::1]:8080", "http://0.0.0.0:8080"):
        _, out = validate(write(tmp_path, BASE + ALERTS + f"web: {{base_url: '{loopback}'}}\n"))
        assert "only this machine reaches" in out, loopback
    # no links, or a base_url people can open: no warning
    assert validate(write(tmp_path, BASE)) == (0, f"{tmp_path / 'mailwarden.yaml'}: valid (1 integration(s), 1 app(s), "
                                                  "1 tenant(s))\n")
    code, out = validate(write(tmp_path, DELEGATED + ALERTS + "web: {base_url: 'https://mw.contoso.com'}\n"))
    assert code == 0 and "warning(s)" not in out
