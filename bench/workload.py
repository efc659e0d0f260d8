"""The generated workload: a sandbox scenario and a mailwarden config of N integrations in a seeds-like mix.

Ten integrations per tenant (an MSP watches many tenants), each tenant with the five consuming systems of
the seeds on their real paths:

- House-on-the-Hill helpdesk: delegated POP + SMTP on shared mailboxes (x3), IMAP + SMTP on another (x1),
  one licensed delegate account signed in once and used for all four (as HotH does);
- Oracle B2C Service: delegated POP, one sign-in per mailbox (x1);
- Sinch Contact Center: app-only Graph (x2);
- Agiloft: app-only EWS (x1);
- enaio: app-only SMTP (x2).

Every integration also has `token` and `secret_expiry`: 34 checks per tenant, 3.4 per integration.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import yaml

PER_TENANT = 10
NS = uuid.UUID("6b1d3c52-8f1e-4a8e-9d0c-5b3a0e7f2c11")
REDIRECT = "http://127.0.0.1:8080/auth/callback"

# (suffix, app key, flow, mailbox checks) for the ten integrations of a tenant
MIX = [
    ("hoth-1", "hoth", "delegated", {"pop": {}, "smtp": {}}),
    ("hoth-2", "hoth", "delegated", {"pop": {}, "smtp": {}}),
    ("hoth-3", "hoth", "delegated", {"pop": {}, "smtp": {}}),
    ("hoth-imap", "hoth", "delegated", {"imap": {}, "smtp": {}}),
    ("b2c", "b2c", "delegated", {"pop": {}}),
    ("sinch-1", "sinch", "app", {"graph_mail": {}}),
    ("sinch-2", "sinch", "app", {"graph_mail": {}}),
    ("agiloft", "agiloft", "app", {"ews": {}}),
    ("enaio-1", "enaio", "app", {"smtp": {}}),
    ("enaio-2", "enaio", "app", {"smtp": {}}),
]
APPS = {
    "monitor": {"application_permissions": {"graph": ["Application.Read.All"]}},
    "hoth": {"delegated_permissions": {"exchange": ["POP.AccessAsUser.All", "IMAP.AccessAsUser.All", "SMTP.Send"],
                                       "graph": ["User.Read"]}, "redirect_uris": [REDIRECT]},
    "b2c": {"delegated_permissions": {"exchange": ["POP.AccessAsUser.All"], "graph": ["User.Read"]},
            "redirect_uris": [REDIRECT]},
    "sinch": {"application_permissions": {"graph": ["Mail.ReadWrite"]}},
    "agiloft": {"application_permissions": {"exchange": ["full_access_as_app"]}},
    "enaio": {"application_permissions": {"exchange": ["SMTP.SendAsApp"]}},
}


def _id(*parts: object) -> str:
    return str(uuid.uuid5(NS, "/".join(map(str, parts))))


@dataclass
class Integration:
    name: str
    tenant: str
    app: str  # config app name
    flow: str
    mailbox: str
    account: str | None
    checks: dict


@dataclass
class Workload:
    n: int
    tenants: int
    scenario: dict
    integrations: list[Integration]
    secrets: dict[str, str]  # config app name -> secret value
    passwords: dict[str, str]  # upn -> password
    client_ids: dict[str, str] = field(default_factory=dict)  # config app name -> client id

    def kinds(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for i in self.integrations:
            for k in i.checks:
                out[k] = out.get(k, 0) + 1
        return out


def build(n: int) -> Workload:
    tenants_n = max(1, -(-n // PER_TENANT))
    tenants, integrations, secrets, passwords, client_ids = [], [], {}, {}, {}
    made = 0
    for t in range(tenants_n):
        domain = f"t{t:04d}.bench.onmicrosoft.com"
        hoth_user, b2c_user = f"hoth-mail@{domain}", f"b2c-support@{domain}"
        passwords[hoth_user], passwords[b2c_user] = f"Bench-{t}-HotH!", f"Bench-{t}-B2C!"
        apps = []
        for key, spec in APPS.items():
            name = f"t{t:04d}-{key}"
            value = f"{key[:2]}{t % 10}Q~bench{_id(t, key).replace('-', '')[:28]}"
            secrets[name] = value
            client_ids[name] = _id(t, "app", key)
            apps.append({"app_id": client_ids[name], "display_name": f"{key} (tenant {t})",
                         "secrets": [{"display_name": key, "value": value, "start": "-30d", "end": "+300d"}],
                         **spec})
        mailboxes = [{"address": hoth_user, "type": "user"}, {"address": b2c_user, "type": "user"}]
        for suffix, app_key, flow, checks in MIX:
            if made >= n:
                break
            made += 1
            app = f"t{t:04d}-{app_key}"
            if app_key == "b2c":
                mailbox, account = b2c_user, b2c_user
            else:
                mailbox = f"{suffix}@{domain}"
                account = hoth_user if flow == "delegated" else None
                trustee = hoth_user if flow == "delegated" else client_ids[app]
                mailboxes.append({"address": mailbox, "type": "shared", "full_access": [trustee],
                                  "send_as": [trustee]})
            integrations.append(Integration(f"t{t:04d}-{suffix}", f"t{t:04d}", app, flow, mailbox, account,
                                            {"token": {}, **checks, "secret_expiry": {}}))
        tenants.append({
            "id": _id(t, "tenant"), "domain": domain,
            "users": [{"upn": u, "password": passwords[u]} for u in (hoth_user, b2c_user)],
            "apps": apps,
            # EWS on for the org (a tenant that never set it is blocked since 1 October 2026)
            "exchange": {"smtp_auth_enabled": True, "ews_enabled": True,
                         "service_principals": [client_ids[f"t{t:04d}-enaio"]], "mailboxes": mailboxes},
        })
    return Workload(n, tenants_n, {"token_lifetime_s": 3600, "tenants": tenants}, integrations, secrets,
                    passwords, client_ids)


def write(work: Workload, workdir: Path, endpoints: dict[str, str]) -> Path:
    """The config a user would write for these tenants (secrets as file: references); returns its path."""
    secrets_dir = workdir / "secrets"
    secrets_dir.mkdir(parents=True, exist_ok=True)
    apps = {}
    for name, value in work.secrets.items():
        path = secrets_dir / f"{name}.secret"
        path.write_text(value + "\n", encoding="utf-8")
        os.chmod(path, 0o600)
        apps[name] = {"tenant": name[:5], "client_id": work.client_ids[name], "secret": f"file:secrets/{name}.secret"}
    tenants = {f"t{t:04d}": {"tenant_id": spec["id"], "monitor_app": f"t{t:04d}-monitor"}
               for t, spec in enumerate(work.scenario["tenants"])}
    integrations = []
    for i in work.integrations:
        item = {"name": i.name, "app": i.app, "flow": i.flow, "mailbox": i.mailbox, "checks": i.checks}
        if i.account:
            item["account"] = i.account
        integrations.append(item)
    doc = {
        "database": "sqlite:///mailwarden.db",
        "cloud": "custom",
        "endpoints": {k: v for k, v in endpoints.items()
                      if k in ("authority", "graph", "ews", "imap", "pop", "smtp", "ca_bundle")},
        # interval: longer than a cycle, so the scheduler never fires on its own: the bench starts each cycle
        "defaults": {"interval": "30m", "timeout": "30s"},
        "tenants": tenants,
        "apps": apps,
        "integrations": integrations,
    }
    path = workdir / "mailwarden.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return path


def write_scenario(work: Workload, workdir: Path) -> Path:
    path = workdir / "scenario.yaml"
    path.write_text(yaml.safe_dump(work.scenario, sort_keys=False), encoding="utf-8")
    return path


def prepare_workdir(workdir: Path | None, prefix: str) -> tuple[Path, Path | None]:
    """The run's directory, emptied of a previous run's database and key; (dir, the temporary dir to remove
    afterwards, or None when the caller named one)."""
    tmp = None
    if workdir is None:
        tmp = workdir = Path(tempfile.mkdtemp(prefix=prefix))
    workdir = workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    for stale in ("mailwarden.db", "mailwarden.db-wal", "mailwarden.db-shm", "mailwarden.key"):
        (workdir / stale).unlink(missing_ok=True)
    return workdir, tmp
