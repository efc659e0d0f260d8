"""What `validate` says about mail-flow evidence (issue 16): IMAP's or Graph's old `backlog_warn` is a warning (as
written it never opens an incident, where `backlog_age` does after its grace), and a delegated integration's receiving
check without `backlog_age` gets a suggestion, which is never a problem (`--strict` does not count it)."""

from __future__ import annotations

from typer.testing import CliRunner

from mailwarden.monitor import config as config_mod
from mailwarden.monitor.cli import app as cli_app
from tests.monitor.test_config import BASE, write

runner = CliRunner()


def test_the_old_backlog_warn_is_a_warning_with_its_line_and_the_new_name(tmp_path):
    path = write(tmp_path, BASE + "    checks: {imap: {backlog_warn: 2h}}\n")
    _cfg, warnings, _suggested = config_mod.load_with_notes(path)
    [said] = [w for w in warnings if "backlog_warn" in w]
    assert said.startswith("integrations[0].checks.imap.backlog_warn (line 12): the old name of backlog_age"), said
    assert "as written it only warns" in said and "Write backlog_age: 2h for a failure (an incident)" in said


def test_a_delegated_receiving_check_without_backlog_age_gets_a_suggestion_never_a_problem(tmp_path):
    path = write(tmp_path, BASE + "    checks: {token: {}, pop: {backlog_warn: 50}}\n"
                 "  - {name: daemon, app: helpdesk, flow: app, mailbox: queue@contoso.com, checks: [graph_mail]}\n"
                 "  - {name: aged, app: helpdesk, flow: delegated, account: a@contoso.com, mailbox: a@contoso.com,\n"
                 "     checks: {imap: {backlog_age: 1h}}}\n")
    _cfg, warnings, suggested = config_mod.load_with_notes(path)
    assert [s.split(":")[0] for s in suggested] == ["integrations[0].checks.pop (line 12)"], suggested
    assert "set backlog_age" in suggested[0]
    result = runner.invoke(cli_app, ["validate", "--strict", "-c", str(path)])
    assert result.exit_code == (1 if warnings else 0), result.output
    assert "1 suggestion(s)" in result.output and "set backlog_age" in result.output


def test_a_canary_from_an_integration_that_does_not_exist_is_named(tmp_path):
    from tests.monitor.test_config import problems

    found, _ = problems(tmp_path, BASE + "    checks: {imap: {canary: {from: helpdesk-suport, deliver_within: 10m}}}\n")
    assert any(p.startswith("integrations[0].checks.imap.canary.from (line 12): no integration named "
                            "'helpdesk-suport'; did you mean 'helpdesk-support'?") for p in found), found
