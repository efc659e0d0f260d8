"""`mailwarden add SYSTEM`: add an integration of a known consuming system (or a generic one) to the config file.

Asks only for what it cannot know (in a terminal; with flags, or ``--no-input``, for scripts), says where each value
is in the vendor's own screens, writes the entries into the file (its other lines and comments kept), validates the
whole file before writing anything, resolves the new secret reference, and runs the new integration's checks once.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Annotated

import typer
import yaml

from mailwarden.errors import ConfigError, MailwardenError
from mailwarden.monitor import config as config_mod
from mailwarden.monitor import onboard
from mailwarden.monitor.cli import EXIT_OK, EXIT_UNKNOWN, EXIT_WARN, ConfigOpt, app, fail

NEW_FILE = ("# mailwarden configuration, started by `mailwarden add`. Secrets are never written here: env:NAME or\n"
            "# file:PATH references only. `mailwarden schema` prints the JSON Schema for editors.\n"
            "database: sqlite:///mailwarden.db\n")


def _ask(label: str, where: str, *, required: bool = True) -> str | None:
    typer.echo(f"{label}: {where}")
    value = typer.prompt(f"  {label}", default="" if not required else None, show_default=False)
    return value.strip() or None


@app.command("add")
def add(
    system: Annotated[str, typer.Argument(help=f"The consuming system: {', '.join(onboard.SYSTEMS)}.")],
    config: ConfigOpt = None,
    name: Annotated[str | None, typer.Option("--name", help="The integration's name (default: from the system).")]
    = None,
    tenant: Annotated[str | None, typer.Option("--tenant", help="A tenant of the config, by its name.")] = None,
    tenant_id: Annotated[str | None, typer.Option("--tenant-id", help="The Directory (tenant) ID (a new tenant).")]
    = None,
    client_id: Annotated[str | None, typer.Option("--client-id", help="The app's Application (client) ID.")] = None,
    app_name: Annotated[str | None, typer.Option("--app", help="An app of the config, or the new app's name.")]
    = None,
    secret: Annotated[str | None, typer.Option("--secret", help="The client secret's reference: env:NAME or "
                                                                 "file:PATH (never the value).")] = None,
    mailbox: Annotated[list[str] | None, typer.Option("--mailbox", help="The mailbox address (repeat for a "
                                                                        "system that reads several).")] = None,
    account: Annotated[str | None, typer.Option("--account", help="Delegated: the user who signs in.")] = None,
    flow: Annotated[str | None, typer.Option("--flow", help="generic: app or delegated.")] = None,
    check: Annotated[list[str] | None, typer.Option("--check", help="generic: a protocol check (imap, pop, smtp, "
                                                                    "graph_mail, ews); repeat.")] = None,
    system_name: Annotated[str | None, typer.Option("--system-name", help="generic: the system's own name.")]
    = None,
    no_input: Annotated[bool, typer.Option("--no-input", help="Never ask: a missing value is an error naming "
                                                              "its flag.")] = False,
    no_check: Annotated[bool, typer.Option("--no-check", help="Write the entry only; run no check.")] = False,
) -> None:
    """Add an integration of a consuming system to the config file, then check it once.

    Exit 0 when written and every check is ok; 1 when written and something needs doing (a check that warns or
    fails, a reference that does not resolve, a sign-in still to be done); 3 when nothing was written (a usage
    error, a missing value without a terminal, a config that would not be valid)."""
    spec = onboard.SYSTEMS.get(system.lower())
    if spec is None:
        raise fail(f"unknown system {system!r}: one of {', '.join(onboard.SYSTEMS)}; nothing was written",
                   EXIT_UNKNOWN)
    path = config_mod.config_path(config)
    text = path.read_text(encoding="utf-8") if path.exists() else NEW_FILE
    try:
        existing = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise fail(f"{path}: malformed YAML ({getattr(exc, 'problem', exc)}); nothing was written",
                   EXIT_UNKNOWN) from None
    if not isinstance(existing, dict):
        raise fail(f"{path}: the top level must be a mapping; nothing was written", EXIT_UNKNOWN)
    ans = onboard.Answers(name=name, tenant=tenant, tenant_id=tenant_id, app=app_name, client_id=client_id,
                          secret=secret, mailboxes=list(mailbox or []), account=account, flow=flow,
                          checks=list(check or []), system_name=system_name)
    if not no_input:  # asks what the flags left out; a script passes --no-input and gets every gap named at once
        _interview(spec, ans, existing, path)
    try:
        plan = onboard.plan(spec, ans, existing)
        new_text = onboard.insert(text, plan)
    except ConfigError as exc:
        raise fail(exc, EXIT_UNKNOWN) from None
    cfg = _validated(path, new_text)
    _write(path, new_text)
    typer.echo(f"{path}: added {', '.join(plan.names())}"
               + (f", app {', '.join(plan.apps)}" if plan.apps else "")
               + (f", tenant {', '.join(plan.tenants)}" if plan.tenants else ""))
    for note in spec.notes:
        typer.echo(f"  note: {note}")
    code = _resolve(cfg, plan)
    if code != EXIT_OK or no_check:
        raise typer.Exit(code)
    raise typer.Exit(_check(path, cfg, plan, spec))


def _interview(spec: onboard.System, ans: onboard.Answers, existing: dict, path: Path) -> None:
    tenants = existing.get("tenants") or {}
    if spec.key == "generic":
        ans.system_name = ans.system_name or _ask("System name", "the consuming system's name, named in alerts")
        while ans.flow not in ("app", "delegated"):
            ans.flow = _ask("Flow", "app (client credentials) or delegated (signs in as a user)")
        while not ans.checks:
            given = _ask("Checks", f"the protocols it uses, comma-separated: {', '.join(onboard.PROTOCOL_CHECKS)}")
            ans.checks = [c.strip() for c in (given or "").split(",") if c.strip()]
    if ans.tenant is None and ans.tenant_id is None and len(tenants) != 1:
        ans.tenant_id = _ask("Directory (tenant) ID", spec.where_ids)
    if ans.client_id is None and not (ans.app and ans.app in (existing.get("apps") or {})):
        _pick_discovered(spec, ans, existing, path)
    if ans.client_id is None and not (ans.app and ans.app in (existing.get("apps") or {})):
        ans.client_id = _ask("Application (client) ID", spec.where_ids)
    known = {str((a or {}).get("client_id", "")).lower() for a in (existing.get("apps") or {}).values()}
    if ans.secret is None and (ans.client_id or "").lower() not in known:
        ans.secret = _ask("Client secret reference", "env:NAME or file:PATH holding the same secret as "
                          + spec.where_secret + " (the value is never written to the config)")
    if not ans.mailboxes:
        given = _ask("Mailbox", spec.where_mailbox + (" (several: comma-separated)" if spec.several_mailboxes
                                                        else ""))
        ans.mailboxes = [m.strip() for m in (given or "").split(",") if m.strip()]
    if (spec.flow or ans.flow) == "delegated" and ans.account is None:
        ans.account = _ask("Signing-in account", spec.where_account or "the user who signs in")


def _pick_discovered(spec: onboard.System, ans: onboard.Answers, existing: dict, path: Path) -> None:
    """Where the tenant has a monitor app, offer the tenant's unmonitored apps whose permissions fit the system
    (`mailwarden discover`), so the client ID (and a delegated system's consenting account) need not be typed."""
    tenants = existing.get("tenants") or {}
    name = ans.tenant or (next(iter(tenants)) if len(tenants) == 1 else None)
    if name is None or not (tenants.get(name) or {}).get("monitor_app") or not path.exists():
        return
    from mailwarden.monitor.discover import discover
    from mailwarden.monitor.tokens import TokenProvider

    try:
        cfg = config_mod.load(path)
        [found] = discover(cfg, TokenProvider(cfg, None, None, timeout_s=cfg.defaults.timeout), [name])
    except (MailwardenError, ValueError) as exc:
        typer.echo(f"  (the tenant's apps could not be listed: {exc}; type the client ID)")
        return
    if found.error:
        typer.echo(f"  (the tenant's apps could not be listed: {found.error}; type the client ID)")
        return
    offers = [(f, flow) for f in found.apps if not f.monitored and not f.evidence_only
              and (flow := onboard.fits(spec, f.flows(), f.checks)) is not None]
    if not offers:
        typer.echo(f"  No unmonitored app in tenant {name} has the permissions {spec.key} needs; type the client ID.")
        return
    typer.echo(f"Apps in tenant {name} with the permissions {spec.key} needs, not monitored yet:")
    for i, (f, flow) in enumerate(offers, 1):
        users = ", ".join(u.user_principal_name or u.id or "?" for u in f.users)
        typer.echo(f"  {i}. {f.display_name} ({f.app_id}), {flow}" + (f", consented by {users}" if users else ""))
    choice = _ask("Which one", f"a number from 1 to {len(offers)}, or Enter to type a client ID", required=False)
    if not choice or not choice.isdigit() or not 1 <= int(choice) <= len(offers):
        return
    picked, flow = offers[int(choice) - 1]
    ans.client_id = picked.app_id
    ans.app = ans.app or onboard.slug(picked.display_name)
    ans.flow = ans.flow or flow
    consented = [u.user_principal_name for u in picked.users if u.user_principal_name]
    if flow == "delegated" and ans.account is None and len(consented) == 1:
        ans.account = consented[0]  # the one user who consented for themselves: the account it signs in as
        typer.echo(f"  signing-in account: {ans.account} (the user who consented)")


def _validated(path: Path, text: str) -> config_mod.Config:
    """The config ``text`` would be, loaded from a file beside ``path`` (relative references resolve the same)."""
    fd, tmp = tempfile.mkstemp(prefix=".mailwarden-add-", suffix=".yaml", dir=path.parent.resolve())
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        return config_mod.load(tmp)
    except ConfigError as exc:
        lines = [p.replace(tmp, str(path)) for p in exc.problems] or [exc.message().replace(tmp, str(path))]
        typer.echo(f"mailwarden: the config would not be valid; nothing was written ({path}):", err=True)
        for line in lines:
            typer.echo(f"  - {line}", err=True)
        raise typer.Exit(EXIT_UNKNOWN) from None
    finally:
        Path(tmp).unlink(missing_ok=True)


def _write(path: Path, text: str) -> None:
    """Replace the file in one step, keeping its mode (a new file: 0600, it names where secrets are)."""
    mode = path.stat().st_mode & 0o777 if path.exists() else 0o600
    fd, tmp = tempfile.mkstemp(prefix=".mailwarden-add-", dir=path.parent.resolve())
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _resolve(cfg: config_mod.Config, plan: onboard.Plan) -> int:
    """`validate --resolve` for the references the new integrations use: EXIT_WARN (and what to do) when one does
    not resolve here."""
    apps = {i["app"] for i in plan.integrations}
    problems = []
    for where, ref in config_mod.references(cfg):
        if any(where.startswith(f"apps.{a}.") for a in apps):
            try:
                config_mod.resolve_ref(ref, cfg.base_dir, what=where)
            except MailwardenError as exc:
                problems.append(exc.message())
    for p in problems:
        typer.echo(f"  not checked yet: {p}", err=True)
    if problems:
        typer.echo("  Set it where mailwarden runs, then run `mailwarden validate --resolve` and `mailwarden check "
                   f"-i {plan.names()[0]}`.", err=True)
        return EXIT_WARN
    return EXIT_OK


def _check(path: Path, cfg: config_mod.Config, plan: onboard.Plan, spec: onboard.System) -> int:
    """One run of each new integration's checks (no alerts); a delegated one without a sign-in says how to sign in."""
    from mailwarden.monitor.cli import check as check_command

    worst = EXIT_OK
    for name in plan.names():
        integ = cfg.integration(name)
        if integ.flow == "delegated" and not _signed_in(cfg, integ):
            typer.echo(f"  {name}: {integ.account} has not signed in for mailwarden yet: run `mailwarden reauth "
                       f"{name}` (or open the reauthorisation link on the dashboard), then `mailwarden check -i "
                       f"{name}`.")
            worst = max(worst, EXIT_WARN)
            continue
        try:
            check_command(config=path, integration=name, kind=None, fmt="table", no_alerts=True)
        except typer.Exit as done:
            worst = max(worst, EXIT_WARN if done.exit_code else EXIT_OK)
    return worst


def _signed_in(cfg: config_mod.Config, integ) -> bool:
    from mailwarden.monitor.runtime import open_runtime

    try:
        runtime = open_runtime(cfg)
    except MailwardenError as exc:
        raise fail(exc, EXIT_UNKNOWN) from None
    try:
        return runtime.tokens.stored_token(integ.name) is not None
    finally:
        runtime.close()
