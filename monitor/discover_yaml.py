"""`mailwarden discover --format yaml`: ready config entries for the mail-capable apps the config does not monitor
yet: pure text from the findings.

The document is a whole configuration (the tenants, their monitor apps and the cloud copied from the config read,
every relative ``file:`` reference made absolute) so that ``mailwarden validate -c FILE`` and ``mailwarden check -c
FILE`` take it as it is; its ``apps:`` and ``integrations:`` entries are what to paste into the real one. ``TODO``
marks only what Graph cannot tell: the reference to the consuming system's secret (``env:TODO_...``), the mailbox
an app-only system reads, the account of an admin-consented delegated app. Apps with federated credentials only are
written ``observe_only`` (watched through the monitor app: their sign-ins, no copy to probe with); managed identities,
whose sign-ins are of another kind, are listed in comments.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any, cast

from mailwarden.checks import TOKEN_KIND
from mailwarden.monitor import discover_model as m
from mailwarden.monitor.config import AppConfig, Config

_PLAIN = re.compile(r"^[A-Za-z_][A-Za-z0-9_.@/+-]*(:[A-Za-z0-9_.@/+~-][A-Za-z0-9_.@/+:~-]*)?$")
_WORDS = {"true", "false", "yes", "no", "on", "off", "null", "y", "n", "~"}
TODO_DOMAIN = "example.invalid"
TODO_MAILBOX = "# TODO: the mailbox it reads or sends from"


def q(value: Any) -> str:
    """A YAML scalar: plain when unambiguous, else double-quoted (JSON's escapes are YAML's)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    s = str(value)
    if _PLAIN.match(s) and s.lower() not in _WORDS:
        return s
    return json.dumps(s, ensure_ascii=False)


def flow(value: Any) -> str:
    """A flow collection ({a: 1} / [a, b]) on one line."""
    if isinstance(value, dict):
        return "{" + ", ".join(f"{q(k)}: {flow(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(flow(v) for v in value) + "]"
    return q(value)


def comment(text: str) -> str:
    """Text from the tenant (display names) made safe inside a comment: one line, no control characters."""
    return re.sub(r"[\x00-\x1f\x7f\u2028\u2029\x85]+", " ", str(text)).strip()


def slug(text: str, taken: set[str], suffix: str = "") -> str:
    base = re.sub(r"[^A-Za-z0-9_.-]+", "-", text.strip().lower()).strip("-._")[:80] or "app"
    if not base[0].isalnum():
        base = "app-" + base
    name, n = base + suffix, 2
    while name in taken:
        name, n = f"{base}-{n}{suffix}", n + 1
    taken.add(name)
    return name


def _absolute(config: Config, ref: str) -> str:
    if ref.startswith("file:"):
        return "file:" + str(config.path(ref[5:]))
    return ref


def _app_entry(config: Config, app: AppConfig) -> dict[str, Any]:
    out: dict[str, Any] = {"tenant": app.tenant, "client_id": app.client_id}
    if app.secret:
        out["secret"] = _absolute(config, app.secret)
    elif app.certificate:
        out["certificate"] = {"key": _absolute(config, app.certificate.key),
                              "cert": _absolute(config, app.certificate.cert)}
    return out


def _domain(f: m.AppFinding, fallback: str | None) -> str:
    for u in f.users:
        if u.user_principal_name and "@" in u.user_principal_name:
            return u.user_principal_name.rsplit("@", 1)[1]
    return f.publisher_domain or fallback or TODO_DOMAIN


def _describe(f: m.AppFinding) -> list[str]:
    lines = [f"{comment(f.display_name)} (appId {f.app_id})"
             + (f", multitenant, home tenant {f.home_tenant_id}" if f.multitenant and f.home_tenant_id else "")]
    for fl in f.flows():
        names = sorted({p.label for p in f.permissions if p.flow == fl})
        lines.append(("application permissions: " if fl == "app" else "delegated grants: ") + ", ".join(names))
    creds = []
    for c in f.credentials:
        if c.kind == "client_secret":
            creds.append(f"secret hint {comment(c.hint or '?')}... ends {(c.end or 'never')[:10]}"
                         + (" (expired)" if c.expired else ""))
        elif c.kind == "certificate":
            creds.append(f"certificate {comment(c.thumbprint or c.key_id or '?')} ends {(c.end or 'never')[:10]}")
    if creds:
        more = f"; and {len(creds) - 5} more" if len(creds) > 5 else ""
        lines.append("credentials: " + "; ".join(creds[:5]) + more)
    if any(c.kind == "federated" for c in f.credentials):
        lines.append("also has federated identity credentials: if the system uses them, a probe with a secret does "
                     "not follow its path")
    if f.owners:
        lines.append("owners: " + ", ".join(comment(o.user_principal_name or o.display_name or o.id or "?")
                                            for o in f.owners[:5]))
    if f.last_sign_in is not None:
        lines.append(f"last sign-in: {f.last_sign_in.get('last') or 'none recorded'}")
    return lines


def render(config: Config, results: list[m.TenantDiscovery], now: datetime | None = None) -> str:
    now = now or datetime.now(UTC)
    out = [f"# mailwarden discover, {now:%Y-%m-%d %H:%M} UTC: configuration entries for the apps that can touch mail",
           "# and that the configuration does not monitor yet. Copy `apps:` and `integrations:` into your",
           "# configuration, or use this file as it is: mailwarden validate -c FILE; mailwarden check -c FILE.",
           "# Replace every TODO first: Graph cannot tell a secret's value, nor which mailbox an app-only system uses."]
    if config.cloud != "global":
        out.append(f"cloud: {q(config.cloud)}")
    if config.endpoints is not None:
        ends = {k: v for k, v in config.endpoints.model_dump().items() if v is not None}
        if ends.get("ca_bundle"):
            ends["ca_bundle"] = str(config.path(ends["ca_bundle"]))
        out.append("endpoints: " + flow(ends))
    if "base_url" in config.web.model_fields_set:  # delegated integrations' reauthorisation links open there
        out.append("web: " + flow({"base_url": config.web.base_url}))
    tenants = list(results)
    out.append("tenants:" if tenants else "tenants: {}")
    for r in tenants:
        t = config.tenants[r.tenant]
        out.append(f"  {q(r.tenant)}: " + flow({"tenant_id": t.tenant_id, **({"monitor_app": t.monitor_app}
                                                                              if t.monitor_app else {})}))
    app_names = set(config.apps)
    integ_names = {i.name for i in config.integrations}
    apps_lines: list[str] = []
    integ_lines: list[str] = []
    evidence: list[str] = []
    unnamed: list[str] = []
    for r in tenants:
        monitor = config.tenants[r.tenant].monitor_app
        if monitor and monitor in config.apps:
            apps_lines.append(f"  {q(monitor)}: {flow(_app_entry(config, config.apps[monitor]))}"
                              f"  # tenant {comment(r.tenant)}'s monitor app, as configured")
        fallback = next((f.publisher_domain for f in r.apps if f.publisher_domain), None)
        # the consumer check reads the sign-in log: AuditLog.Read.All and Directory.Read.All, Entra ID P1/P2
        log_readable = not any(n.code == "grants_unreadable" for n in r.notes)
        signins_read = not any(n.code.startswith("signins_") for n in r.notes)  # unlicensed / unreadable
        for f in r.apps:
            if f.monitored:
                continue
            if not f.app_id:  # granted, but its service principal was past a page that failed: no client id
                unnamed.append(f"#   service principal {f.service_principal_id} (tenant {comment(r.tenant)})")
                continue
            if f.evidence_only and f.application_object_id and f.service_principal_type != m.MANAGED_IDENTITY \
                    and log_readable and signins_read:  # federated credentials only: observe_only, no copy
                _entries(f, r.tenant, _domain(f, fallback), app_names, integ_names, apps_lines, integ_lines,
                         consumer=True, observe=True)
                continue
            if f.evidence_only:
                evidence.append(f"#   {comment(f.display_name)} (appId {f.app_id}, tenant {comment(r.tenant)}): "
                                f"{comment(f.evidence_only_reason or '')}")
                continue
            _entries(f, r.tenant, _domain(f, fallback), app_names, integ_names, apps_lines, integ_lines,
                     consumer=log_readable and f.last_sign_in is not None)
    out.append("apps:" if apps_lines else "apps: {}")
    out += apps_lines
    out.append("integrations:" if integ_lines else "integrations: []")
    out += integ_lines
    if evidence:
        out += ["# Not written as entries: these apps can touch mail, but mailwarden can neither hold a copy of their",
                "# credential nor read their sign-ins as an app's (a managed identity's sign-ins are of another",
                "# kind), or the sign-in log is unreadable.", *evidence]
    if unnamed:
        out += ["# Not named: the list of service principals stopped before these (discover's answer was partial);",
                "# run discover again for their entries.", *unnamed]
    return "\n".join(out) + "\n"


def _entries(f: m.AppFinding, tenant: str, domain: str, app_names: set[str], integ_names: set[str],
             apps_lines: list[str], integ_lines: list[str], *, consumer: bool, observe: bool = False) -> None:
    """An app's entry and its integrations' (one per flow). ``observe``: an app with federated credentials only,
    watched through the monitor app (observe_only: its sign-ins and its registration, no copy to probe with)."""
    name = slug(f.display_name, app_names)
    secrets = [c for c in f.credentials if c.kind == "client_secret"]
    certs = [c for c in f.credentials if c.kind == "certificate"]
    apps_lines += [f"  # {line}" for line in _describe(f)]
    apps_lines.append(f"  {q(name)}:")
    apps_lines.append(f"    tenant: {q(tenant)}")
    apps_lines.append(f"    client_id: {q(f.app_id)}")
    env = "TODO_" + re.sub(r"[^A-Z0-9]+", "_", name.upper()).strip("_") + "_SECRET"
    if observe:
        apps_lines.append("    observe_only: true  # federated credentials only: no secret or certificate to copy")
    elif secrets or not certs:
        newest = max(secrets, key=lambda c: c.end or "", default=None)
        said = (f" (hint {comment(newest.hint or '?')}..., keyId {newest.key_id})" if newest is not None
                else f" (its publisher's: the app is registered in tenant {f.home_tenant_id})"
                if not f.credentials_known and f.home_tenant_id else " (Graph shows none)")
        apps_lines.append(f"    secret: {q('env:' + env)}  # TODO: where the consuming system's secret is{said}")
    else:
        newest = max(certs, key=lambda c: c.end or "")
        pair = {"key": f"file:TODO/{name}.key.pem", "cert": f"file:TODO/{name}.cert.pem"}
        apps_lines.append(f"    certificate: {flow(pair)}  # TODO: the key and certificate files (thumbprint "
                          f"{comment(newest.thumbprint or '?')})")
    flows = f.flows()
    for fl in flows:
        kinds, require = f.checks(fl)
        checks: dict[str, dict] = {} if observe else {TOKEN_KIND: {"require": require} if require else {}}
        if f.credentials_known and (secrets or certs):
            checks["secret_expiry"] = {}
        for k in ([] if observe else kinds):  # the mailbox checks sign in as the app
            checks[k] = {}
        if consumer:
            checks["consumer"] = {}
        iname = slug(f.display_name, integ_names, "" if len(flows) == 1 else f"-{fl}")
        integ_lines.append(f"  - name: {q(iname)}")
        integ_lines.append(f"    app: {q(name)}")
        integ_lines.append(f"    flow: {fl}")
        if fl == "delegated":
            users = [u for u in f.users if u.user_principal_name]
            if len(users) == 1 and not any(p.consent == "admin" for p in f.permissions if p.flow == fl):
                u = users[0]
                upn = cast(str, u.user_principal_name)  # users keeps only those with one
                integ_lines.append(f"    account: {q(upn.lower())}  # the user who consented")
                integ_lines.append(f"    mailbox: {q((u.mail or upn).lower())}"
                                   "  # its own mailbox; change it for a shared one")
            else:
                who = ", ".join(comment(u.user_principal_name or u.id or "?") for u in f.users[:5])
                said = f" (consented: {who})" if who else " (admin consent names no user)"
                integ_lines.append(f"    account: {q(f'todo-account@{domain}')}  # TODO: the account the system "
                                   f"signs in as{said}")
                integ_lines.append(f"    mailbox: {q(f'todo-mailbox@{domain}')}  {TODO_MAILBOX}")
        else:
            integ_lines.append(f"    mailbox: {q(f'todo-mailbox@{domain}')}  {TODO_MAILBOX}")
        integ_lines.append(f"    system: {q(comment(f.display_name))}")
        integ_lines.append("    checks:")
        integ_lines += [f"      {k}: {flow(v)}" for k, v in checks.items()]
