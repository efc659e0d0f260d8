"""`mailwarden discover`: the apps of a tenant that can touch mail, read through its monitor app (issue 17)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated

import typer

from mailwarden.monitor.cli import EXIT_UNKNOWN, ConfigOpt, app, fail, load_config

FORMATS = ("table", "json", "yaml")


@app.command()
def discover(
    config: ConfigOpt = None,
    tenant: Annotated[str | None, typer.Option("--tenant", "-t", help="Only this tenant (its name in the config).")]
    = None,
    fmt: Annotated[str, typer.Option("--format", "-f", help="table, json, or yaml (config entries).")] = "table",
) -> None:
    """List every app registration and service principal that can touch mail in the tenant(s): application
    permissions (IMAP.AccessAsApp, POP.AccessAsApp, SMTP.SendAsApp, full_access_as_app, Microsoft Graph Mail.*),
    delegated grants of mail scopes and who consented, credentials (secret hints and end dates, certificates,
    federated credentials, managed identities), owners, last sign-in, home tenant of multitenant apps, and whether
    this config monitors each. Reads Graph with each tenant's monitor_app: Application.Read.All is required;
    Directory.Read.All (delegated grants), User.Read.All (consenting users' names) and AuditLog.Read.All (last
    sign-ins) are optional, and what their absence hides is said once per tenant. `--format yaml` prints config
    entries for the apps not monitored yet (TODO where Graph cannot tell a value). Secret values are never read.

    Exit codes: 0 every list read; 1 partial (a list stopped halfway, e.g. a page that failed, or Graph throttled
    past the wait discover allows: what was read is shown and marked partial); 3 a tenant could not be read at all
    (no monitor_app, its token refused, Application.Read.All missing, Graph unreachable), an invalid config, a
    --tenant that names no tenant, or a usage error.
    """
    from mailwarden.monitor import logs
    from mailwarden.monitor.discover import discover as run
    from mailwarden.monitor.discover import exit_code
    from mailwarden.monitor.tokens import TokenProvider

    if fmt not in FORMATS:
        raise fail(f"--format must be table, json or yaml, not {fmt!r}", EXIT_UNKNOWN)
    cfg = load_config(config, EXIT_UNKNOWN)
    logs.setup("warning" if cfg.log_level == "info" else cfg.log_level)
    if tenant is not None and tenant not in cfg.tenants:
        known = ", ".join(sorted(cfg.tenants)) or "none"
        raise fail(f"--tenant: no tenant named {tenant!r} in the config (tenants: {known}); nothing was read",
                   EXIT_UNKNOWN)
    names = [tenant] if tenant else list(cfg.tenants)
    if not names:
        raise fail("the config names no tenant; nothing was read", EXIT_UNKNOWN)
    if tenant is None:
        skipped = [n for n in names if not cfg.tenants[n].monitor_app]
        names = [n for n in names if cfg.tenants[n].monitor_app] or names
        for n in skipped if len(skipped) < len(cfg.tenants) else []:
            typer.echo(f"mailwarden: tenant {n} not read: it names no monitor_app (tenants.{n}.monitor_app: an app "
                       "with the Microsoft Graph application permission Application.Read.All)", err=True)
    tokens = TokenProvider(cfg, None, None, timeout_s=cfg.defaults.timeout)
    results = run(cfg, tokens, names)
    now = datetime.now(UTC)
    if fmt == "json":
        typer.echo(json.dumps(as_json(results, now), indent=2))
    elif fmt == "yaml":
        from mailwarden.monitor.discover_yaml import render

        typer.echo(render(cfg, [r for r in results if r.status != "error"], now), nl=False)
    else:
        print_table(results)
    for r in results:  # errors and partial reads on stderr whatever the format (the document stays clean)
        if r.error:
            typer.echo(f"mailwarden: tenant {r.tenant}: {r.error}", err=True)
        for why in r.partial:
            typer.echo(f"mailwarden: tenant {r.tenant}: partial: {why}", err=True)
        if fmt != "table":
            for note in r.notes:
                typer.echo(f"mailwarden: tenant {r.tenant}: note: {note.text}", err=True)
    raise typer.Exit(exit_code(results))


def as_json(results, now: datetime) -> dict:
    """The JSON of `discover --format json`: the tenants read (status ok | partial | error, notes) and every app."""
    return {"generated_at": now.isoformat().replace("+00:00", "Z"),
            "complete": all(r.status == "ok" for r in results),
            "tenants": [r.as_json() for r in results],
            "apps": [f.as_json() for r in results for f in r.apps]}


def _creds(f) -> str:
    parts = []
    for c in f.credentials:
        if c.kind == "client_secret":
            parts.append(f"secret {c.hint or '?'}... {(c.end or 'never')[:10]}" + (" EXPIRED" if c.expired else ""))
        elif c.kind == "certificate":
            parts.append(f"cert {(c.thumbprint or '?')[:8]} {(c.end or 'never')[:10]}" + (" EXPIRED" if c.expired
                                                                                         else ""))
        elif c.kind == "federated":
            parts.append(f"federated {c.issuer or '?'}")
        else:
            parts.append("managed identity")
    if not f.credentials_known:
        parts.append("unknown: " + (f.credentials_note or ""))
    shown = parts[:3] + ([f"+{len(parts) - 3} more"] if len(parts) > 3 else [])
    return "\n".join(shown) or "none"


def print_table(results) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = Console()
    for r in results:
        title = f"tenant {r.tenant} ({r.tenant_id}): {len(r.apps)} app(s) that can touch mail"
        if r.error:
            console.print(f"[bold]tenant {r.tenant}[/]: [magenta]not read[/]", highlight=False)
            continue
        table = Table(title=title + (" [yellow](partial)[/]" if r.partial else ""), show_lines=True)
        for col in ("app", "permissions", "credentials", "owners", "last sign-in", "monitored"):
            table.add_column(col, overflow="fold")
        for f in r.apps:
            who = f"{escape(f.display_name)}\n{f.app_id}"
            if f.multitenant:
                who += f"\nmultitenant, home {f.home_tenant_id or '?'}"
            if f.service_principal_type == "ManagedIdentity":
                who += "\nmanaged identity"
            if not f.enabled:
                who += "\n[dim]disabled[/]"
            grants = []
            for fl in f.flows():
                names = sorted({p.name for p in f.permissions if p.flow == fl})
                grants.append(("app: " if fl == "app" else "delegated: ") + ", ".join(names))
            if f.users:
                grants.append("consented: " + ", ".join(u.user_principal_name or u.id or "?" for u in f.users[:3])
                              + (f" +{len(f.users) - 3}" if len(f.users) > 3 else ""))
            owners = (f.owners_note or "?") if f.owners is None else (
                ", ".join(o.user_principal_name or o.display_name or "?" for o in f.owners[:3]) or "none")
            last = "?" if f.last_sign_in is None else (f.last_sign_in.get("last") or "none recorded")[:16]
            mon = (escape(f"yes: {f.config_app}" + (f" ({', '.join(f.integrations)})" if f.integrations else ""))
                   if f.monitored else "[yellow]no[/]")
            if f.evidence_only:
                mon += "\nevidence only"
            table.add_row(who, escape("\n".join(grants)), escape(_creds(f)), escape(owners), last, mon)
        console.print(table)
        for n in r.notes:
            console.print(f"note: {n.text}", highlight=False, markup=False)
        for f in r.apps:
            if f.evidence_only:
                console.print(f"evidence only: {f.display_name}: {f.evidence_only_reason}", highlight=False,
                              markup=False)
