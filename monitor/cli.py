"""The `mailwarden` command line (Typer). Every error a person sees is one paragraph, never a traceback."""

from __future__ import annotations

import json
import sys
from importlib import metadata
from pathlib import Path
from typing import Annotated, Any

import typer
from typer import core as typer_core
from typer.core import TyperGroup

from mailwarden.errors import ConfigError, MailwardenError
from mailwarden.monitor import config as config_mod

EXIT_OK, EXIT_WARN, EXIT_FAIL, EXIT_UNKNOWN = 0, 1, 2, 3
# the click Typer runs on: vendored as typer._click since Typer 0.22, the click package before
_clicks = getattr(typer_core, "_click", None) or typer_core.click  # type: ignore[attr-defined]
_UsageError, _ClickException = _clicks.exceptions.UsageError, _clicks.exceptions.ClickException
_NoArgsIsHelp = getattr(_clicks.exceptions, "NoArgsIsHelpError", ())  # click >= 8.2


def usage_line(exc: Any, words: list[str]) -> str:
    """A usage error as one line: the command, what was wrong, where to read the usage. ``words``: the
    (sub)command named on the command line, for the errors click raises without a context."""
    if exc.ctx is not None:
        words, ctx = [], exc.ctx
        while ctx.parent is not None:  # the root's own name is how it was started (mailwarden, python -m ...)
            words.insert(0, ctx.info_name or "")
            ctx = ctx.parent
    where = " ".join(["mailwarden", *words])
    text = " ".join(exc.format_message().split()).rstrip(".")
    return f"{where}: {text}. Usage error (exit 3): see '{where} --help'."


class RootGroup(TyperGroup):
    """The `mailwarden` command. Click ends a usage error (an unknown option, a missing argument, a value that
    does not parse) with exit 2, which monitoring plugins read as CRITICAL, and Typer prints it in a box: here
    every usage error of every command, subcommands included, is one line on stderr and exit 3 (UNKNOWN)."""

    def main(self, args: Any = None, prog_name: str | None = None, complete_var: str | None = None,
             standalone_mode: bool = True, windows_expand_args: bool = True, **extra: Any) -> Any:
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False,
                                windows_expand_args=windows_expand_args, **extra)
        except _NoArgsIsHelp:
            code = EXIT_UNKNOWN  # no command given: the help was printed while the error was made
        except _UsageError as exc:
            typer.echo(usage_line(exc, self._named(args)), err=True)
            code = EXIT_UNKNOWN
        except _ClickException as exc:
            typer.echo(f"mailwarden: {' '.join(exc.format_message().split())}", err=True)
            code = EXIT_UNKNOWN
        except typer.Abort:  # end of input at a prompt
            typer.echo("mailwarden: aborted (no input); nothing was changed", err=True)
            code = 1
        # not standalone, click returns the command's return value (None) or the code of a typer.Exit
        code = code if isinstance(code, int) else EXIT_OK
        if not standalone_mode:
            return code
        sys.exit(code)

    def _named(self, args: Any) -> list[str]:
        """The command and subcommand names among ``args`` (the command line when None)."""
        words: list[str] = []
        cmd: Any = self
        for token in sys.argv[1:] if args is None else args:
            sub = getattr(cmd, "commands", {}).get(token)
            if sub is not None:
                words.append(token)
                cmd = sub
        return words


app = typer.Typer(cls=RootGroup, add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="mailwarden: health checks and secret-expiry monitoring for Microsoft 365 mailbox integrations."
                       " Every command exits 3 on a usage error (an unknown option, a missing argument, a bad time"
                       " or number, a selection that matches nothing), with one line naming the problem.")
db_app = typer.Typer(no_args_is_help=True, help="Database maintenance.")
app.add_typer(db_app, name="db")

ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="Config file (default ./mailwarden.yaml, "
                                                "or $MAILWARDEN_CONFIG).", show_default=False)]


def fail(exc: MailwardenError | str, code: int) -> typer.Exit:
    text = exc.message() if isinstance(exc, MailwardenError) else exc
    typer.echo(f"mailwarden: {text}", err=True)
    return typer.Exit(code)


def load_config(path: Path | None, exit_code: int) -> config_mod.Config:
    try:
        return config_mod.load(config_mod.config_path(path))
    except ConfigError as exc:
        raise fail(exc, exit_code) from None


def _print_version(value: bool) -> None:
    if not value:
        return
    try:
        version = metadata.version("mailwarden")
    except metadata.PackageNotFoundError:
        raise fail("the version is unknown: the mailwarden distribution is not installed (run `pip install .` "
                   "in the source tree, or use the installed `mailwarden` command)", EXIT_UNKNOWN) from None
    typer.echo(f"mailwarden {version}")
    raise typer.Exit(EXIT_OK)


@app.callback()
def _root(version: Annotated[bool, typer.Option(
        "--version", is_eager=True, callback=_print_version,
        help="Print the installed version and exit 0.")] = False) -> None:
    pass


@app.command()
def validate(config: ConfigOpt = None,
             resolve: Annotated[bool, typer.Option("--resolve", help="Also resolve every env:/file: reference.")]
             = False,
             strict: Annotated[bool, typer.Option("--strict", help="Warnings count as problems (exit 1).")]
             = False) -> None:
    """Check the configuration file: every problem at once (keys, values and names that must match), each with its
    key path, line and what to write instead. Warnings (e.g. links in alerts to a web.base_url that opens only on this
    machine) are printed; a config with warnings is valid. Exit 0 when valid; 1 when not (or a reference does not
    resolve, with --resolve; or warnings, with --strict); 3 on a usage error."""
    path = config_mod.config_path(config)
    try:
        cfg, warnings, suggested = config_mod.load_with_notes(path)
    except ConfigError as exc:
        raise fail(exc, 1) from None
    problems = []
    if resolve:
        for where, ref in config_mod.references(cfg):
            try:
                config_mod.resolve_ref(ref, cfg.base_dir, what=where)
            except MailwardenError as exc:
                problems.append(exc.message())
    if warnings:
        typer.echo(f"mailwarden: {path}: {len(warnings)} warning(s):", err=True)
        for w in warnings:
            typer.echo(f"  - {w}", err=True)
    if suggested:  # never a problem: not counted by --strict
        typer.echo(f"mailwarden: {path}: {len(suggested)} suggestion(s):", err=True)
        for s in suggested:
            typer.echo(f"  - {s}", err=True)
    if problems:
        typer.echo(f"mailwarden: {len(problems)} reference(s) do not resolve:", err=True)
        for p in problems:
            typer.echo(f"  - {p}", err=True)
        raise typer.Exit(1)
    n = len(cfg.integrations)
    typer.echo(f"{path}: valid ({n} integration(s), {len(cfg.apps)} app(s), {len(cfg.tenants)} tenant(s)"
               f"{', all references resolve' if resolve else ''}{f', {len(warnings)} warning(s)' if warnings else ''})")
    if warnings and strict:
        raise typer.Exit(1)


@app.command()
def schema() -> None:
    """Print the JSON Schema of the configuration file, for editors (hover help, completion, checks as you type):
    e.g. `mailwarden schema > mailwarden.schema.json` and `# yaml-language-server: $schema=mailwarden.schema.json`
    as the config's first line. Exit 0, 3 on a usage error."""
    typer.echo(json.dumps(config_mod.json_schema(), indent=2))


@db_app.command("upgrade")
def db_upgrade(config: ConfigOpt = None) -> None:
    """Apply the database migrations (also done at every start). Exit 0, or 3 when the database fails or on a
    usage error."""
    from mailwarden.monitor.db import open_store

    cfg = load_config(config, EXIT_UNKNOWN)
    try:
        open_store(cfg.database_url(), migrate=True).close()
    except MailwardenError as exc:
        raise fail(exc, EXIT_UNKNOWN) from None
    typer.echo("database is at the newest schema")


@app.command()
def check(
    config: ConfigOpt = None,
    integration: Annotated[str | None, typer.Option("--integration", "-i", help="Only this integration.")] = None,
    kind: Annotated[str | None, typer.Option("--check", help="Only this check kind (token, secret_expiry, ...).")]
    = None,
    fmt: Annotated[str, typer.Option("--format", "-f", help="table or json.")] = "table",
    no_alerts: Annotated[bool, typer.Option("--no-alerts", help="Do not dispatch alerts after the run.")] = False,
) -> None:
    """Run the selected checks once, store the results and print them, then dispatch alerts once.

    A mailbox check (imap, pop, smtp, graph_mail, ews) selected without the integration's token check runs
    after it: the token check proves the token with a real round trip, its result is printed and stored
    too, and the mailbox check is blocked while it fails.

    Exit codes (monitoring-plugin convention): 2 some fail, else 3 some error, else 1 some warn, else 0 all
    ok; a blocked check counts as the token check that blocks it (its fail or error). 3 also when the
    selection matches nothing, the config or database is unusable, or on a usage error.
    """
    from mailwarden.monitor import logs, output
    from mailwarden.monitor.runner import select
    from mailwarden.monitor.runtime import open_runtime

    if fmt not in ("table", "json"):
        raise fail(f"--format must be table or json, not {fmt!r}", EXIT_UNKNOWN)
    cfg = load_config(config, EXIT_UNKNOWN)
    logs.setup("warning" if cfg.log_level == "info" else cfg.log_level)
    selection = _selection(cfg, integration, kind, select)
    try:
        runtime = open_runtime(cfg)
    except MailwardenError as exc:
        raise fail(exc, EXIT_UNKNOWN) from None
    try:
        _read_signins(runtime, selection)
        results = output.run_with_progress(runtime.runner, selection, show=fmt == "table" and sys.stdout.isatty())
        if not no_alerts and cfg.alerts.active():
            from mailwarden.monitor.cli_alerts import dispatch_once

            dispatch_once(runtime)
    finally:
        runtime.close()
    rows = [r.as_json(cfg) for r in results]
    if fmt == "json":
        typer.echo(json.dumps(rows, indent=2))
    else:
        output.print_table(rows)
    raise typer.Exit(exit_code(rows))


def _read_signins(runtime, selection: list[tuple[str, list[str]]]) -> None:
    """A consumer check judges the stored sign-ins: read the sign-in logs first when the last read is older than
    evidence.signins.poll_every (a failed read is the check's to report: its window says why)."""
    import asyncio
    import logging

    from mailwarden.monitor.signins import needs_poll

    if runtime.signins is None or not needs_poll(k for _, kinds in selection for k in kinds):
        return
    try:
        asyncio.run(runtime.signins.poll_if_stale())
    except MailwardenError as exc:
        logging.getLogger("mailwarden.signins").warning("sign-in logs not read", extra={"error": exc.message()})


def _selection(cfg, integration, kind, select):
    from mailwarden.checks import REGISTRY

    if integration and not any(i.name == integration for i in cfg.integrations):
        raise fail(f"--integration: no integration named {integration!r} in the config; nothing was run",
                   EXIT_UNKNOWN)
    if kind and kind not in REGISTRY:
        raise fail(f"--check: {kind!r} is not a check kind (one of {', '.join(REGISTRY)}); nothing was run",
                   EXIT_UNKNOWN)
    selection = select(cfg, integration, kind)
    if not selection:
        if integration:
            why = f"integration {integration!r} has no {kind!r} check" if kind else f"{integration!r} has no checks"
        else:
            why = (f"no integration that is not paused has a {kind!r} check" if kind
                   else "every integration is paused, or there is none")
        raise fail(f"the selection matches no check ({why}); nothing was run", EXIT_UNKNOWN)
    return selection


def exit_code(rows: list[dict]) -> int:
    """The monitoring-plugin exit code of a run's rows: 2 if any fail, else 3 if any error, else 1 if any warn,
    else 0. A `blocked` row counts as the status of the token check that blocks it (its fail or error): a run
    whose only failure is a token check's, and whose mailbox checks show as blocked, is not ok."""
    from mailwarden.monitor.runner import TOKEN

    token = {r["integration"]: r["status"] for r in rows if r["check"] == TOKEN}
    # the runner blocks a check only while the token check fails or errs; when the run does not hold that
    # token result (a caller's own selection), the worse of the two for a monitoring plugin is assumed
    statuses = [token.get(r["integration"], "fail") if r["status"] == "blocked" else r["status"] for r in rows]
    if "fail" in statuses:
        return EXIT_FAIL
    if "error" in statuses:
        return EXIT_UNKNOWN
    if "warn" in statuses:
        return EXIT_WARN
    return EXIT_OK


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)


def _register_more() -> None:
    # Commands in their own modules, to keep this one short; they attach to `app`.
    from mailwarden.monitor import (  # noqa: F401 - health: `mailwarden healthcheck` (the image's HEALTHCHECK)
        cli_add,
        cli_alerts,
        cli_discover,
        cli_reauth,
        cli_secrets,
        cli_serve,
        cli_web,
        health,
    )


_register_more()
