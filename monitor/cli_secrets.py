"""`mailwarden secrets`: the credential inventory, the reminders/rotation cycle, the rotation audit, and the
guarded removal of an old secret."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from typing import Annotated

import typer

from mailwarden.errors import MailwardenError
from mailwarden.monitor.cli import EXIT_OK, EXIT_UNKNOWN, EXIT_WARN, ConfigOpt, app, fail, load_config

secrets_app = typer.Typer(help="Client secrets and certificates: inventory, expiry reminders, rotation.")
app.add_typer(secrets_app, name="secrets")
FormatOpt = Annotated[str, typer.Option("--format", "-f", help="table or json.")]


def _runtime(config, fmt: str = "table"):
    from mailwarden.monitor import logs
    from mailwarden.monitor.runtime import open_runtime

    if fmt not in ("table", "json"):
        raise fail(f"--format must be table or json, not {fmt!r}", EXIT_UNKNOWN)
    cfg = load_config(config, EXIT_UNKNOWN)
    logs.setup("warning" if cfg.log_level == "info" else cfg.log_level)
    try:
        return open_runtime(cfg)
    except MailwardenError as exc:
        raise fail(exc, EXIT_UNKNOWN) from None


async def _read_all(runtime) -> None:
    for name in runtime.config.apps:
        await runtime.credentials.read(name)


@secrets_app.callback(invoke_without_command=True)
def secrets(ctx: typer.Context, config: ConfigOpt = None, fmt: FormatOpt = "table",
            cached: Annotated[bool, typer.Option("--cached", help="Show what is stored; do not read Graph.")]
            = False) -> None:
    """Every credential of every configured app: expiry, the integrations that depend on it, credentials
    mailwarden's own configuration does not use (and what is not known about them), lifetimes over 12 months,
    rotation state. Reads Graph first (unless --cached).

    Exit codes: 0, 1 when a credential in use expires within 30 days (or has expired), 3 config/database
    error or a usage error.
    """
    if ctx.invoked_subcommand is not None:
        return
    from mailwarden.monitor.secrets import api_secrets

    runtime = _runtime(config, fmt)
    try:
        if not cached:
            asyncio.run(_read_all(runtime))
        doc = api_secrets(runtime.config, runtime.store, datetime.now(UTC))
    finally:
        runtime.close()
    rows = doc["credentials"]
    if fmt == "json":
        typer.echo(json.dumps(doc, indent=2))
    else:
        _table(rows)
    urgent = [r for r in rows if r["integrations"] and r["days_left"] is not None and r["days_left"] < 30]
    raise typer.Exit(EXIT_WARN if urgent else EXIT_OK)


def _table(rows: list[dict]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="mailwarden secrets")
    for col in ("app", "kind", "key id", "hint", "expires", "days", "used by", "rotation", "notes"):
        table.add_column(col)
    below = []  # who uses a credential mailwarden does not use, as far as known: sentences under the table
    for r in rows:
        notes = []
        usage = r.get("usage") or {}
        if r["unused"] or usage.get("mailwarden", "uses") != "uses":
            nothing = "nothing uses it" if r["unused"] else ""
            if usage.get("unknown") or usage.get("evidence"):
                notes.append(f"{nothing} (see below)".strip())
                said = f"{nothing}: {usage['known']}" if nothing else usage["known"]
                rest = f"; {usage['unknown']}" if usage.get("unknown") else ""
                below.append(f"{r['display_name']} {r['key_id'] or r['kind']}: {said}{rest}.")
            else:
                notes.append(f"{nothing}: {usage['known']}" if nothing else usage["known"])
        if r["long_lived"]:
            notes.append(f"lifetime {r['lifetime_days']} d > 12 months")
        if r["reminders_sent"]:
            notes.append("reminded at " + ",".join(str(s) for s in r["reminders_sent"]))
        used = ", ".join(r["integrations"]) or ("mailwarden (monitor app)" if r["used_by_mailwarden"] else "-")
        table.add_row(r["display_name"], r["kind"], (r["key_id"] or "-")[:8], (r["hint"] or "") + "...",
                      (r["expires"] or "never")[:10], "-" if r["days_left"] is None else str(r["days_left"]),
                      used, r["rotation"] or "-", "; ".join(notes))
    console = Console()
    console.print(table)
    for line in below:
        console.print(line, highlight=False, markup=False)


@secrets_app.command("run")
def run(config: ConfigOpt = None) -> None:
    """Run one reminders/rotation cycle now (what `serve` does every hour), then dispatch alerts once.
    Exit 0, 1 when an app could not be handled, 3 config/database error or a usage error."""
    from mailwarden.monitor.secrets import SecretsCycle

    runtime = _runtime(config)
    try:
        cycle = SecretsCycle.of(runtime)
        report = asyncio.run(cycle.run())
        if runtime.config.alerts.active():
            from mailwarden.monitor.cli_alerts import dispatch_once

            dispatch_once(runtime)
    finally:
        runtime.close()
    for key in report.reminders:
        typer.echo(f"reminder queued: {key}")
    for step in report.steps:
        typer.echo(f"rotation: {step}")
    for err in report.errors:
        typer.echo(f"mailwarden: {err}", err=True)
    raise typer.Exit(EXIT_WARN if report.errors else EXIT_OK)


@secrets_app.command("history")
def history(config: ConfigOpt = None, app_name: Annotated[str | None, typer.Option("--app", help="Only this app.")]
            = None, fmt: FormatOpt = "table") -> None:
    """The rotation audit: every step seen or taken, oldest first.

    Exit 0, 3 config/database error, an --app that names no app, or a usage error.
    """
    runtime = _runtime(config, fmt)
    try:
        client_id = runtime.config.apps[app_name].client_id if app_name in runtime.config.apps else None
        if app_name and client_id is None:
            raise fail(f"no app named {app_name!r} in the config", EXIT_UNKNOWN)
        events = runtime.store.rotation.rotation_events(client_id, limit=1000)
    finally:
        runtime.close()
    rows = [{"at": e.at.isoformat(), "app": e.app, "key_id": e.key_id, "new_key_id": e.new_key_id, "step": e.step,
             "ok": e.ok, "detail": e.detail} for e in events]
    if fmt == "json":
        typer.echo(json.dumps(rows, indent=2))
        return
    for r in rows:
        typer.echo(f"{r['at'][:19]}  {r['app']:<20} {'ok ' if r['ok'] else 'BAD'} {r['step']:<22} {r['detail']}")


@secrets_app.command("remove-old")
def remove_old(app_name: Annotated[str, typer.Argument(help="The app (its name in the config).")],
               config: ConfigOpt = None) -> None:
    """Remove the old secret of the app's rotation through Graph (removePassword), now. Refused while
    mailwarden's configured secret still matches it, or before its token checks passed with the new one.
    Exit 0 removed, 1 refused or failed, 3 config/database error, an app not in the config, or a usage error."""
    from mailwarden.monitor.secrets import SecretsCycle

    runtime = _runtime(config)
    try:
        if app_name not in runtime.config.apps:
            raise fail(f"no app named {app_name!r} in the config", EXIT_UNKNOWN)
        cycle = SecretsCycle.of(runtime)
        code, text = asyncio.run(_remove(cycle, app_name))
    finally:
        runtime.close()
    typer.echo(text, err=code != EXIT_OK)
    raise typer.Exit(code)


async def _remove(cycle, app_name: str) -> tuple[int, str]:
    from mailwarden.monitor.rotation import Observation

    client_id = cycle.config.apps[app_name].client_id
    rows = [r for r in cycle.store.rotation.rotations(client_id, open_only=True) if r.state == "in_use"]
    if not rows:
        return EXIT_WARN, f"mailwarden: app {app_name} has no rotation whose new secret is in use"
    row = rows[0]
    healthy, last_ok = cycle._health([i for i in cycle.config.integrations if i.app == app_name])
    steps = await cycle.auto.remove_old(app_name, row, Observation([], None, None, healthy, last_ok))
    cycle._save(app_name, row, steps, [i for i in cycle.config.integrations if i.app == app_name],
                cycle.clock())
    ok = all(s.ok for s in steps)
    return (EXIT_OK if ok else EXIT_WARN), "\n".join(s.detail for s in steps)
