"""The `mailwarden` command line (Typer). Every error a person sees is one paragraph, never a traceback."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from monitor import config as config_mod
from monitor.errors import ConfigError, MailwardenError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="mailwarden: health checks and secret-expiry monitoring for Microsoft 365 mailbox integrations.")
db_app = typer.Typer(no_args_is_help=True, help="Database maintenance.")
app.add_typer(db_app, name="db")

ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="Config file (default ./mailwarden.yaml, "
                                                "or $MAILWARDEN_CONFIG).", show_default=False)]
EXIT_OK, EXIT_WARN, EXIT_FAIL, EXIT_UNKNOWN = 0, 1, 2, 3


def fail(exc: MailwardenError | str, code: int) -> typer.Exit:
    text = exc.message() if isinstance(exc, MailwardenError) else exc
    typer.echo(f"mailwarden: {text}", err=True)
    return typer.Exit(code)


def load_config(path: Path | None, exit_code: int) -> config_mod.Config:
    try:
        return config_mod.load(config_mod.config_path(path))
    except ConfigError as exc:
        raise fail(exc, exit_code) from None


@app.command()
def validate(config: ConfigOpt = None,
             resolve: Annotated[bool, typer.Option("--resolve", help="Also resolve every env:/file: reference.")]
             = False) -> None:
    """Check the configuration file. Exit 0 when valid, 1 when not (every problem listed with key path and line)."""
    cfg = load_config(config, 1)
    problems = []
    if resolve:
        for where, ref in config_mod.references(cfg):
            try:
                config_mod.resolve_ref(ref, cfg.base_dir, what=where)
            except MailwardenError as exc:
                problems.append(exc.message())
    if problems:
        typer.echo(f"mailwarden: {len(problems)} reference(s) do not resolve:", err=True)
        for p in problems:
            typer.echo(f"  - {p}", err=True)
        raise typer.Exit(1)
    n = len(cfg.integrations)
    typer.echo(f"{config_mod.config_path(config)}: valid ({n} integration(s), {len(cfg.apps)} app(s), "
               f"{len(cfg.tenants)} tenant(s){', all references resolve' if resolve else ''})")


@app.command()
def schema() -> None:
    """Print the JSON Schema of the configuration file (for editors). Exit 0."""
    doc = config_mod.Config.model_json_schema()
    doc.setdefault("title", "mailwarden configuration")
    typer.echo(json.dumps(doc, indent=2))


@db_app.command("upgrade")
def db_upgrade(config: ConfigOpt = None) -> None:
    """Apply the database migrations (also done at every start). Exit 0, or 3 when the database fails."""
    from monitor.db import open_store

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

    Exit codes (monitoring-plugin convention): 0 all ok, 1 some warn, 2 some fail, 3 a check could not
    run (error), the selection matches nothing, or the config or database is unusable.
    """
    from monitor import logs, output
    from monitor.runner import select
    from monitor.runtime import open_runtime

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
        results = output.run_with_progress(runtime.runner, selection, show=fmt == "table" and sys.stdout.isatty())
        if not no_alerts and cfg.alerts.active():
            from monitor.cli_alerts import dispatch_once

            dispatch_once(runtime)
    finally:
        runtime.close()
    rows = [r.as_json(cfg) for r in results]
    if fmt == "json":
        typer.echo(json.dumps(rows, indent=2))
    else:
        output.print_table(rows)
    raise typer.Exit(exit_code([r["status"] for r in rows]))


def _selection(cfg, integration, kind, select):
    if integration and not any(i.name == integration for i in cfg.integrations):
        raise fail(f"no integration named {integration!r} in the config", EXIT_UNKNOWN)
    selection = select(cfg, integration, kind)
    if not selection:
        raise fail("the selection matches no check"
                   + (f" (no integration has a {kind!r} check)" if kind else ""), EXIT_UNKNOWN)
    return selection


def exit_code(statuses: list[str]) -> int:
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
    from monitor import cli_alerts, cli_reauth, cli_secrets, cli_serve, cli_web  # noqa: F401


_register_more()
