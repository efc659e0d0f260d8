"""Usage errors and `--version`: every command, subcommands included, ends a usage error with exit 3 (UNKNOWN in
the monitoring-plugin convention, where click's own 2 reads as CRITICAL) and one line naming the problem."""

from __future__ import annotations

import importlib.metadata

import pytest
import typer.main
from typer.testing import CliRunner

from mailwarden.monitor.cli import app

runner = CliRunner()


def _commands(cmd, path=()):
    yield path, cmd
    for name, sub in sorted(getattr(cmd, "commands", {}).items()):
        yield from _commands(sub, (*path, name))


COMMANDS = list(_commands(typer.main.get_command(app)))
PATHS = [path for path, _ in COMMANDS]
# the ones a person runs (a group that only holds subcommands has no behaviour of its own)
RUNNABLE = [path for path, cmd in COMMANDS
            if not getattr(cmd, "commands", None) or getattr(cmd, "invoke_without_command", False)]


def test_the_table_covers_every_command():
    # a new command joins the tables below by itself; this pins that the walk sees the nested ones
    assert {("check",), ("reauth",), ("snooze",), ("db", "upgrade"), ("secrets", "history"),
            ("web", "hash-password"), ("token-key", "rotate"), ("alerts", "test")} <= set(PATHS)
    assert len(PATHS) >= 23


def one_line_usage_error(res, path, needle):
    where = " ".join(("mailwarden", *path))
    assert res.exit_code == 3, (path, res.exit_code, res.output)
    assert "Traceback" not in res.output and res.exception is None or isinstance(res.exception, SystemExit)
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, (path, res.stderr)
    assert lines[0].startswith(f"{where}: ") and needle in lines[0], lines[0]
    assert f"'{where} --help'" in lines[0]
    assert res.stdout == ""


@pytest.mark.parametrize("path", PATHS, ids=lambda p: " ".join(p) or "mailwarden")
def test_unknown_option_is_exit_3_with_one_line(path):
    res = runner.invoke(app, [*path, "--no-such-option"])
    one_line_usage_error(res, path, "No such option: --no-such-option")


@pytest.mark.parametrize("argv,path,needle", [
    (["reauth"], ("reauth",), "Missing argument"),
    (["ack", "1"], ("ack",), "Missing option '--by'"),
    (["ack", "seven", "--by", "me"], ("ack",), "'incident_id'"),
    (["snooze"], ("snooze",), "Missing argument"),
    (["secrets", "remove-old"], ("secrets", "remove-old"), "Missing argument"),
    (["token-key", "rotate"], ("token-key", "rotate"), "Missing option '--new'"),
    (["demo", "--interval", "soon"], ("demo",), "'--interval'"),
    (["demo", "--interval", "0"], ("demo",), "'--interval'"),
    (["demo", "--port", "70000"], ("demo",), "'--port'"),
    (["sandbox", "--port", "-1"], ("sandbox",), "'--port'"),
    (["check", "--check"], ("check",), "'--check' requires an argument"),
    (["secrets", "-c", "x.yaml", "history", "--app"], ("secrets", "history"), "'--app' requires an argument"),
    (["db", "downgrade"], ("db",), "No such command 'downgrade'"),
    (["chekc"], (), "No such command 'chekc'"),
])
def test_bad_arguments_and_values_are_exit_3_with_one_line(argv, path, needle):
    one_line_usage_error(runner.invoke(app, argv), path, needle)


@pytest.mark.parametrize("args,needle", [
    (["--for", "2x"], "--for '2x'"),
    (["--until", "tomorrow"], "is not an ISO 8601 time"),
    (["--until", "2030-01-07T18:00"], "needs a UTC offset"),
    (["--until", "2020-01-01T00:00Z"], "must end in the future"),
    (["--for", "31d"], "at most 30 days"),
    ([], "exactly one of --until or --for"),
])
def test_snooze_with_a_bad_time_is_exit_3(tmp_path, args, needle):
    res = runner.invoke(app, ["snooze", "1", *args, "-c", str(tmp_path / "none.yaml")])
    assert res.exit_code == 3, res.output
    assert needle in res.stderr and len(res.stderr.strip().splitlines()) == 1


def test_no_command_shows_the_help_and_is_exit_3():
    for argv in ([], ["db"], ["alerts"]):
        res = runner.invoke(app, argv)
        assert res.exit_code == 3 and "Usage" in res.output and "Traceback" not in res.output


@pytest.mark.parametrize("path", RUNNABLE, ids=lambda p: " ".join(p) or "mailwarden")
def test_help_of_every_command_says_usage_errors_exit_3(path):
    res = runner.invoke(app, [*path, "--help"])
    assert res.exit_code == 0
    text = " ".join(res.output.replace("│", " ").split())
    assert "usage error" in text.lower(), text


def test_help_is_exit_0_and_version_prints_the_installed_distribution():
    assert runner.invoke(app, ["--help"]).exit_code == 0
    res = runner.invoke(app, ["--version"])
    assert res.exit_code == 0, res.output
    assert res.stdout.strip() == f"mailwarden {importlib.metadata.version('mailwarden')}"


def test_version_on_the_installed_command(tmp_path):
    """The console script, as a user runs it (not CliRunner): version, and a usage error's exit code."""
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "mailwarden.monitor", "--version"], capture_output=True, text=True,
                          timeout=60, cwd=tmp_path)
    assert proc.returncode == 0 and proc.stdout.startswith("mailwarden ") and proc.stderr == ""
    proc = subprocess.run([sys.executable, "-m", "mailwarden.monitor", "check", "--bogus"], capture_output=True,
                          text=True, timeout=60, cwd=tmp_path)
    assert proc.returncode == 3 and proc.stdout == ""
    assert proc.stderr.strip().splitlines() == [
        "mailwarden check: No such option: --bogus. Usage error (exit 3): see 'mailwarden check --help'."]
