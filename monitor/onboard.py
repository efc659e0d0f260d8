"""`mailwarden add SYSTEM`: what each known consuming system needs in the configuration, and the edit that adds it.

One table (``SYSTEMS``) says, per system of ../shared/seeds, its flow, the checks its protocols imply (M365_FACTS.md,
"The five integrations"), the permissions its guide grants, and where each value is in the vendor's own screens (the
catalog's ``checks.diagnoses.SYSTEMS`` words, which the alerts use too). ``plan`` turns answers into config entries;
``insert`` writes them into the YAML text of an existing file, leaving every other line (and comment) as it was.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import yaml

from mailwarden.checks import TOKEN_KIND, diagnoses
from mailwarden.errors import ConfigError

_GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


@dataclass(frozen=True)
class System:
    """A consuming system ``add`` knows: its name on the command line and in runbooks, and what it needs."""

    key: str  # the command line's name
    name: str  # the config's ``system`` (names the catalog's words for it: checks.diagnoses.system_of)
    flow: str  # app | delegated
    checks: dict[str, dict[str, Any]]  # beside token and secret_expiry
    require: tuple[str, ...] = ()  # delegated: the token check's required scopes
    where_ids: str = ""  # where the system keeps its tenant and client ID (the vendor's screens)
    where_mailbox: str = ""
    where_secret: str = ""
    where_account: str = ""
    reauth_after_rotation: bool = False
    several_mailboxes: bool = False  # one app for several mailboxes: --mailbox may be repeated
    notes: tuple[str, ...] = field(default_factory=tuple)  # said after the entry is written


def _words(key: str) -> diagnoses.System:
    return diagnoses.SYSTEMS[key]


SYSTEMS: dict[str, System] = {s.key: s for s in (
    System("house-on-the-hill", "House-on-the-Hill helpdesk", "delegated",
           {"pop": {}, "smtp": {}, "consumer": {}},
           require=("exchange:POP.AccessAsUser.All", "exchange:SMTP.Send"),
           where_ids=_words("hoth").ids, where_mailbox=_words("hoth").mailbox_field,
           where_secret=_words("hoth").secret_field,
           where_account="the licensed user House-on-the-Hill signs in as (a delegate of the shared mailbox with "
                         "Send As): Settings cog > More Tools > OAuth Scripts > the oauth: script > Auth",
           notes=("SMTP signs in as the delegate (the account), not as the shared mailbox: the account needs Send As "
                  "on the mailbox.",)),
    System("oracle-b2c", "Oracle B2C Service", "delegated", {"pop": {}, "consumer": {}},
           require=("exchange:POP.AccessAsUser.All",),
           where_ids=_words("oracle").ids, where_mailbox=_words("oracle").mailbox_field,
           where_secret=_words("oracle").secret_field,
           where_account="the account each mailbox was authenticated with (mailbox editor > Authenticate); one "
                         "authentication per mailbox, usually the mailbox itself",
           reauth_after_rotation=True,
           notes=("Oracle B2C Service authenticates each mailbox on its own: add one integration per mailbox.",)),
    System("sinch", "Sinch Contact Center", "app", {"graph_mail": {}, "consumer": {}},
           where_ids=_words("sinch").ids, where_mailbox=_words("sinch").mailbox_field,
           where_secret=_words("sinch").secret_field, several_mailboxes=True),
    System("agiloft", "Agiloft", "app", {"ews": {}, "consumer": {}},
           where_ids=_words("agiloft").ids, where_mailbox=_words("agiloft").mailbox_field,
           where_secret=_words("agiloft").secret_field, several_mailboxes=True,
           notes=("EWS in Exchange Online shuts down on 1 April 2027: mailwarden warns from 180 days before.",)),
    System("enaio", "enaio", "app", {"smtp": {}, "consumer": {}},
           where_ids=_words("enaio").ids, where_mailbox=_words("enaio").mailbox_field,
           where_secret=_words("enaio").secret_field),
    System("generic", "", "", {},
           where_ids="where the consuming system keeps the directory (tenant) ID and application (client) ID",
           where_mailbox="the mailbox the system reads or sends from",
           where_secret="where the system keeps the client secret", several_mailboxes=True),
)}
PROTOCOL_CHECKS = ("imap", "pop", "smtp", "graph_mail", "ews")


@dataclass
class Answers:
    """What the person (or the flags) gave. None: not given yet."""

    name: str | None = None
    tenant: str | None = None  # a tenant name of the config
    tenant_id: str | None = None  # a new tenant's ID (or verified domain)
    app: str | None = None  # an app name of the config (reused), or the name of the new one
    client_id: str | None = None
    secret: str | None = None  # env:NAME or file:PATH
    mailboxes: list[str] = field(default_factory=list)
    account: str | None = None
    flow: str | None = None  # generic only
    checks: list[str] = field(default_factory=list)  # generic only
    system_name: str | None = None  # generic only: the consuming system's own name


@dataclass
class Plan:
    tenants: dict[str, dict[str, Any]]  # new tenants only
    apps: dict[str, dict[str, Any]]  # new apps only
    integrations: list[dict[str, Any]]

    def names(self) -> list[str]:
        return [i["name"] for i in self.integrations]


def slug(text: str) -> str:
    out = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return (out or "integration")[:60]


def plan(system: System, ans: Answers, existing: dict[str, Any]) -> Plan:
    """The entries to add to ``existing`` (the file's parsed YAML) for ``ans``. Raises ConfigError naming every
    missing or malformed answer and the flag that gives it."""
    problems: list[str] = []
    tenants = dict(existing.get("tenants") or {})
    apps = dict(existing.get("apps") or {})
    names = {str(i.get("name")) for i in existing.get("integrations") or [] if isinstance(i, dict)}
    flow = system.flow or ans.flow
    if flow not in ("app", "delegated"):
        problems.append("--flow: app or delegated (how the system signs in: client credentials, or as a user)")
    checks = dict(system.checks) if system.key != "generic" else {k: {} for k in ans.checks}
    if system.key == "generic" and not any(k in PROTOCOL_CHECKS for k in checks):
        problems.append(f"--check: the protocol(s) the system uses, one or more of {', '.join(PROTOCOL_CHECKS)}")
    new_tenants: dict[str, dict[str, Any]] = {}
    new_apps: dict[str, dict[str, Any]] = {}
    # the tenant: named, or found by its ID, or new
    tenant = ans.tenant
    if tenant is None and ans.tenant_id:
        tenant = next((n for n, t in tenants.items() if str((t or {}).get("tenant_id", "")).lower()
                       == ans.tenant_id.lower()), None)
        if tenant is None:
            tenant = slug(ans.tenant_id.split(".")[0]) if "." in ans.tenant_id else "tenant"
            while tenant in tenants:
                tenant += "-2"
            new_tenants[tenant] = {"tenant_id": ans.tenant_id}
    if tenant is None and len(tenants) == 1:
        tenant = next(iter(tenants))
    if tenant is None:
        problems.append("--tenant-id: the Directory (tenant) ID, a GUID (" + system.where_ids + ")")
    elif tenant not in tenants and tenant not in new_tenants:
        problems.append(f"--tenant: no tenant named {tenant!r} in the config (give --tenant-id for a new one)")
    if ans.tenant_id and not (_GUID.match(ans.tenant_id) or re.match(r"^[A-Za-z0-9.-]+\.[A-Za-z]{2,}$",
                                                                    ans.tenant_id)):
        problems.append("--tenant-id: a GUID or a verified domain")
    # the app: the config's one with this client ID is reused, else a new one
    app = None
    if ans.client_id:
        if not _GUID.match(ans.client_id):
            problems.append("--client-id: the Application (client) ID, a GUID (" + system.where_ids + ")")
        app = next((n for n, a in apps.items() if str((a or {}).get("client_id", "")).lower()
                    == ans.client_id.lower()), None)
        if app is None:
            app = ans.app or slug(system.key if system.key != "generic" else (ans.system_name or "app"))
            while app in apps:
                app += "-2"
            if not ans.secret:
                problems.append("--secret: a reference to the client secret, env:NAME or file:PATH, never the value "
                                f"(the same secret as {system.where_secret})")
            elif not re.match(r"^(env|file):.+$", ans.secret):
                problems.append("--secret: a reference, env:NAME or file:PATH, never the secret itself")
            new_apps[app] = {"tenant": tenant, "client_id": ans.client_id.lower(), "secret": ans.secret}
    elif ans.app and ans.app in apps:
        app = ans.app
    else:
        problems.append("--client-id: the Application (client) ID, a GUID (" + system.where_ids + ")")
        if not ans.secret:
            problems.append("--secret: a reference to the client secret, env:NAME or file:PATH, never the value "
                            f"(the same secret as {system.where_secret})")
    if not ans.mailboxes:
        problems.append("--mailbox: the mailbox address (" + system.where_mailbox + ")")
    for m in ans.mailboxes:
        if not _EMAIL.match(m):
            problems.append(f"--mailbox: {m!r} is not an e-mail address")
    if len(ans.mailboxes) > 1 and not system.several_mailboxes:
        problems.append(f"--mailbox: {system.key} uses one mailbox per integration: run add once per mailbox")
    if flow == "delegated":
        if not ans.account:
            problems.append("--account: the user who signs in (" + (system.where_account or "the delegated user")
                            + ")")
        elif not _EMAIL.match(ans.account):
            problems.append(f"--account: {ans.account!r} is not an e-mail address")
    if problems:
        raise ConfigError(f"{len(problems)} value(s) missing or malformed for `mailwarden add {system.key}`; "
                          "nothing was written", problems=problems)
    assert app is not None  # without an app, a problem above was raised
    integrations = []
    base = ans.name or slug(f"{system.key if system.key != 'generic' else ans.system_name or 'mail'}")
    for mailbox in ans.mailboxes:
        name = base if len(ans.mailboxes) == 1 else f"{base}-{slug(mailbox.split('@')[0])}"
        if name in names:
            name = f"{name}-{slug(mailbox.split('@')[0])}" if len(ans.mailboxes) == 1 else name
        while name in names:
            name += "-2"
        names.add(name)
        entry: dict[str, Any] = {"name": name, "app": app}
        if tenant != (apps.get(app) or new_apps.get(app) or {}).get("tenant"):
            entry["tenant"] = tenant  # a multitenant app of another tenant, used in this one
        entry["flow"] = flow
        if flow == "delegated":
            entry["account"] = ans.account.lower() if ans.account else None
        entry["mailbox"] = mailbox.lower()
        entry["system"] = system.name or ans.system_name or "the consuming system"
        entry_checks: dict[str, Any] = {TOKEN_KIND: {"require": list(system.require)} if system.require else {}}
        entry_checks.update({k: dict(v) for k, v in checks.items() if k != "consumer" or _reads_signins(existing)})
        entry_checks["secret_expiry"] = {}
        entry["checks"] = entry_checks
        if system.reauth_after_rotation:
            entry["reauth_after_rotation"] = True
        integrations.append(entry)
    return Plan(new_tenants, new_apps, integrations)


def fits(system: System, flows: list[str], kinds_of: Any) -> str | None:
    """The flow in which a discovered app can serve ``system`` (its permissions allow the system's protocol checks),
    or None. ``kinds_of(flow)``: the check kinds the app's permissions allow in that flow (discover's ``checks``)."""
    wanted = [k for k in system.checks if k in PROTOCOL_CHECKS]
    for flow in ([system.flow] if system.flow else flows):
        if flow in flows and all(k in kinds_of(flow)[0] for k in wanted) and (wanted or kinds_of(flow)[0]):
            return flow
    return None


def _reads_signins(existing: dict[str, Any]) -> bool:
    """The consumer check judges the tenant's sign-in log: only where some tenant has a monitor app to read it."""
    signins = ((existing.get("evidence") or {}).get("signins") or {}).get("enabled")
    return signins is not False and any((t or {}).get("monitor_app") for t in (existing.get("tenants") or {}).values())


# -- writing into the YAML text --------------------------------------------------------------------------------------

def _block(value: Any, indent: int) -> list[str]:
    text = yaml.safe_dump(value, sort_keys=False, default_flow_style=False, allow_unicode=True, width=200)
    return [(" " * indent + line) if line else line for line in text.splitlines()]


def _top_level(text: str) -> yaml.MappingNode | None:
    node = yaml.compose(text, Loader=yaml.SafeLoader)
    if node is None:
        return None
    if not isinstance(node, yaml.MappingNode):
        raise ConfigError("the top level must be a mapping (key: value); nothing was written", where="line 1")
    return node


def insert(text: str, plan: Plan) -> str:
    """``text`` with the plan's tenants, apps and integrations added under their top-level keys: after the last entry
    of a block section (its indentation kept), or as a new section at the end; a flow-style or empty section is
    rewritten in block style. Every other line stays as it was."""
    for key, entries in (("tenants", plan.tenants), ("apps", plan.apps), ("integrations", plan.integrations)):
        if entries:
            text = _insert_one(text, key, entries)
    return text


def _insert_one(text: str, key: str, entries: dict[str, Any] | list[Any]) -> str:
    lines = text.splitlines()
    root = _top_level(text)
    pair = next(((k, v) for k, v in (root.value if root else []) if k.value == key), None)
    if pair is None:
        tail = [""] if lines and lines[-1].strip() else []
        return "\n".join(lines + tail + [f"{key}:"] + _block(entries, 2)) + "\n"
    knode, vnode = pair
    items = vnode.value if isinstance(vnode, yaml.MappingNode | yaml.SequenceNode) else []
    want = yaml.SequenceNode if isinstance(entries, list) else yaml.MappingNode
    if not isinstance(vnode, want) and not (isinstance(vnode, yaml.ScalarNode) and vnode.tag.endswith(":null")):
        shape = "list" if want is yaml.SequenceNode else "mapping"
        raise ConfigError(f"'{key}' must be a {shape}; nothing was written",
                          where=f"line {knode.start_mark.line + 1}")
    if getattr(vnode, "flow_style", False) or not items:  # `apps: {}`, `apps:`, a flow mapping: rewritten
        current = yaml.safe_load(text).get(key)
        merged: list[Any] | dict[str, Any]
        if isinstance(entries, list):
            merged = (current or []) + entries
        else:
            merged = {**(current or {}), **entries}
        start, end = knode.start_mark.line, vnode.end_mark.line
        if vnode.end_mark.column == 0 and end > start:
            end -= 1
        return "\n".join(lines[:start] + [f"{key}:"] + _block(merged, 2) + lines[end + 1:]) + "\n"
    last = items[-1][1] if isinstance(vnode, yaml.MappingNode) else items[-1]
    after = last.end_mark.line if last.end_mark.column == 0 else last.end_mark.line + 1
    while after - 1 > last.start_mark.line and (not lines[after - 1].strip()
                                                or lines[after - 1].lstrip().startswith("#")):
        after -= 1  # blank lines and comments before the next section stay with it
    if isinstance(vnode, yaml.MappingNode):
        indent = items[0][0].start_mark.column
        block = _block(entries, indent)
    else:
        first = items[0].start_mark
        dash = lines[first.line].rfind("-", 0, first.column)
        indent = dash if dash >= 0 else max(first.column - 2, 0)
        block = _block(entries, indent)
    return "\n".join(lines[:after] + block + lines[after:]) + "\n"
