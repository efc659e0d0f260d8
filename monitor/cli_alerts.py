"""`mailwarden ack`, `snooze`, `incidents` and `alerts test`: people's side of the alerts."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated

import typer

from mailwarden.alerts.incidents import incident_json as _row
from mailwarden.alerts.incidents import parse_until
from mailwarden.errors import MailwardenError
from mailwarden.monitor.cli import EXIT_UNKNOWN, ConfigOpt, app, fail, load_config

alerts_app = typer.Typer(no_args_is_help=True, help="Alert routes.")
app.add_typer(alerts_app, name="alerts")


def dispatch_once(runtime) -> None:
    """After `mailwarden check`: one dispatch cycle; a failure is reported, never changes the exit code."""
    from mailwarden.monitor.alerting import make_dispatcher
    from mailwarden.monitor.reauth_links import for_runtime

    try:
        report = make_dispatcher(runtime.config, runtime.store, reauth_urls=for_runtime(runtime)).run_once()
    except MailwardenError as exc:
        typer.echo(f"mailwarden: alerts not dispatched: {exc.message()}", err=True)
        return
    if report.failed:
        typer.echo(f"mailwarden: {report.failed} alert delivery attempt(s) failed; they are retried by "
                   "`mailwarden serve` or the next `check` (see the notifications table)", err=True)


def _store(config):
    from mailwarden.monitor.db import open_store

    cfg = load_config(config, EXIT_UNKNOWN)
    try:
        return cfg, open_store(cfg.database_url())
    except MailwardenError as exc:
        raise fail(exc, EXIT_UNKNOWN) from None


def _open_incident(store, incident_id: int):
    inc = store.alerts.get_incident(incident_id)
    if inc is None:
        raise fail(f"no incident #{incident_id} (list them with `mailwarden incidents`)", 1)
    if inc.status != "open":
        raise fail(f"incident #{incident_id} is already resolved ({inc.resolve_reason})", 1)
    return inc


@app.command()
def ack(incident_id: Annotated[int, typer.Argument(help="The incident number (in every alert).")],
        by: Annotated[str, typer.Option("--by", help="Who takes it (recorded, and named in later notices).")],
        config: ConfigOpt = None) -> None:
    """Acknowledge an open incident: no more reminders; the recovery notice still comes.

    Exit 0 acknowledged, 1 no such open incident, 3 config or database error, or a usage error (e.g. an
    incident number that is not a number).
    """
    _, store = _store(config)
    try:
        _open_incident(store, incident_id)
        store.alerts.ack_incident(incident_id, by, datetime.now(UTC))
    finally:
        store.close()
    typer.echo(f"incident #{incident_id} acknowledged by {by}: reminders stop")


@app.command()
def snooze(incident_id: Annotated[int, typer.Argument(help="The incident number.")],
           until: Annotated[str | None, typer.Option("--until", help="ISO 8601 time with offset.")] = None,
           for_: Annotated[str | None, typer.Option("--for", help="A duration: 30m, 2h, 3d.")] = None,
           config: ConfigOpt = None) -> None:
    """Hold an open incident's reminders until a time (at most 30 days ahead).

    Exit 0 snoozed, 1 no such open incident, 3 a bad --until/--for (a usage error, as any other), or a
    config or database error.
    """
    now = datetime.now(UTC)
    try:
        end = parse_until(until, for_, now)
    except ValueError as exc:
        raise fail(f"snooze: {exc}; nothing was changed", EXIT_UNKNOWN) from None
    _, store = _store(config)
    try:
        _open_incident(store, incident_id)
        store.alerts.snooze_incident(incident_id, end)
    finally:
        store.close()
    typer.echo(f"incident #{incident_id} snoozed until {end.isoformat().replace('+00:00', 'Z')}")


@app.command()
def incidents(config: ConfigOpt = None,
              fmt: Annotated[str, typer.Option("--format", "-f", help="table or json.")] = "table",
              all_: Annotated[bool, typer.Option("--all", help="Resolved ones too.")] = False) -> None:
    """List open incidents (with --all, resolved ones too).

    Exit 0 none open, 1 some open, 3 config/database error or a usage error.
    """
    if fmt not in ("table", "json"):
        raise fail(f"--format must be table or json, not {fmt!r}", EXIT_UNKNOWN)
    _, store = _store(config)
    try:
        rows = [_row(i) for i in store.alerts.incidents(None if all_ else "open")]
    finally:
        store.close()
    if fmt == "json":
        typer.echo(json.dumps(rows, indent=2))
    else:
        from rich.console import Console
        from rich.table import Table

        table = Table(title="incidents")
        for c in ("id", "status", "title", "integrations", "opened_at", "reminders", "ack_by", "snoozed_until"):
            table.add_column(c, overflow="fold")
        for r in rows:
            table.add_row(str(r["id"]), r["status"], f"{r['title']} ({r['code']})", ", ".join(r["integrations"]),
                          r["opened_at"], str(r["reminders"]), r["ack_by"] or "", r["snoozed_until"] or "")
        Console().print(table) if rows else typer.echo("no open incidents" if not all_ else "no incidents")
    raise typer.Exit(1 if any(r["status"] == "open" for r in rows) else 0)


@alerts_app.command("test")
def alerts_test(config: ConfigOpt = None,
                route: Annotated[str | None, typer.Option("--route", help="Only routes with this name or tag.")]
                = None) -> None:
    """Send a test notification through each route (or those named/tagged ROUTE); report each service.

    Exit 0 every service accepted it, 1 some failed, 3 no route matches, a config/database error, or a usage
    error.
    """
    from mailwarden.alerts import routes as routes_mod
    from mailwarden.monitor.alerting import make_dispatcher

    cfg, store = _store(config)
    try:
        chosen = [n for n, r in routes_mod.configured(cfg).items() if route is None or route == n or route in r.tags]
        if not chosen:
            raise fail("no alert route matches" + (f" {route!r}" if route else " (alerts.routes is empty)"),
                       EXIT_UNKNOWN)
        results = make_dispatcher(cfg, store).test(chosen)
    finally:
        store.close()
    for name, outcome in results:
        mark = ("ok" if outcome.ok else "UNCONFIRMED (sent, no answer in time)" if outcome.unconfirmed
                else "FAILED (permanent)" if outcome.permanent else "FAILED")
        typer.echo(f"{name}  {outcome.service or '-'}  {mark}{'' if outcome.ok else ': ' + (outcome.error or '')}")
    raise typer.Exit(0 if all(o.ok for _, o in results) else 1)
