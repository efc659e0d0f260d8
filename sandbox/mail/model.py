"""Exchange Online state of a tenant: mailboxes, permissions, service principals, access policies.

Kept in `State.exchange[tenant_id]`; parsed from a tenant's `exchange:` scenario section and changed
by the ops in `sandbox.mail.ops`. Callers hold `state.lock` while reading or changing it.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass, field
from typing import Any

from ..state import State, new_id

PROTOCOLS = ("imap", "pop", "smtp")
FAULT_MODES = ("none", "hang", "latency")
POLICY_RIGHTS = ("RestrictAccess", "DenyAccess")
LOAD_KINDS = ("imap", "graph", "ews", "smtp")
MAILBOX_FIELDS = {"address", "type", "owner", "full_access", "send_as", "imap_enabled", "pop_enabled",
                  "smtp_auth_enabled", "ews_enabled", "not_connected", "messages", "display_name", "id",
                  "ews_impersonation_denied", "load", "budget", "quarantine_senders"}
PATCHABLE = {"type", "owner", "imap_enabled", "pop_enabled", "smtp_auth_enabled", "ews_enabled",
             "not_connected", "display_name", "ews_impersonation_denied", "load", "budget", "quarantine_senders"}
# Exchange Online's limits per mailbox (M365_FACTS.md, "Throttling and transient replies"): about 20 IMAP
# connections; 4 concurrent Graph requests per app; 10,000 requests per 10 minutes per app (Graph's figure,
# used here as the budget of every protocol). EWS: Exchange's EWSMaxConcurrency
# default of 27 (Exchange Online's own value is not published). SMTP: up to three concurrent connections per
# mailbox (Microsoft's SMTP submission page; past it 432 4.3.2).
IMAP_CONNECTIONS = 20
GRAPH_CONCURRENCY = 4
EWS_CONCURRENCY = 27
SMTP_SENDER_THREADS = 3
DEFAULT_BUDGET = {"limit": 10000, "window_s": 600}
# From 1 October 2026 Exchange Online blocks EWS in tenants that did not set EWSEnabled (M365_FACTS.md)
EWS_BLOCK_UNSET_FROM = dt.datetime(2026, 10, 1, tzinfo=dt.UTC)


@dataclass
class Message:
    uid: int
    subject: str
    sender: str
    received: dt.datetime
    seen: bool = False
    to: list[str] = field(default_factory=list)
    body: str = ""
    id: str = field(default_factory=lambda: "AAMk" + uuid.uuid4().hex)
    deleted: bool = False  # IMAP \Deleted (expunged later)

    def rfc822(self) -> bytes:
        date = self.received.strftime("%a, %d %b %Y %H:%M:%S +0000")
        head = (f"From: {self.sender}\r\nTo: {', '.join(self.to)}\r\nSubject: {self.subject}\r\n"
                f"Date: {date}\r\nMessage-ID: <{self.id[4:20]}@sandbox.mailwarden>\r\n"
                "Content-Type: text/plain; charset=utf-8\r\n\r\n")
        return (head + (self.body or "") + "\r\n").encode()


@dataclass
class Mailbox:
    address: str
    tenant_id: str
    type: str = "user"  # user | shared
    owner: str | None = None  # UPN (lower case) of a user mailbox's owner
    display_name: str = ""
    id: str = field(default_factory=new_id)
    full_access: set[str] = field(default_factory=set)  # UPNs or app ids, lower case
    send_as: set[str] = field(default_factory=set)
    imap_enabled: bool = True
    pop_enabled: bool = True
    smtp_auth_enabled: bool | None = None  # None: the tenant's setting
    ews_enabled: bool = True
    not_connected: bool = False
    ews_impersonation_denied: set[str] = field(default_factory=set)  # app ids
    # connections / requests other clients (the consuming system, users' phones) hold on the mailbox right now
    load: dict[str, int] = field(default_factory=dict)
    # requests each principal may make on the mailbox per window (Exchange's budget); past it: throttled
    budget: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_BUDGET))
    messages: list[Message] = field(default_factory=list)
    # senders whose mail to this mailbox Exchange quarantines (an anti-spam or mail flow rule): accepted at
    # submission, never in the mailbox (a message trace shows "Quarantined"), lower case
    quarantine_senders: set[str] = field(default_factory=set)
    uidvalidity: int = 14
    next_uid: int = 1

    def add_message(self, subject: str, sender: str, received: dt.datetime, seen: bool = False,
                    to: list[str] | None = None, body: str = "") -> Message:
        m = Message(uid=self.next_uid, subject=subject, sender=sender, received=received, seen=seen,
                    to=to or [self.address], body=body)
        self.next_uid += 1
        self.messages.append(m)
        self.messages.sort(key=lambda x: (x.received, x.uid))
        return m

    def delivers_from(self, sender: str) -> bool:
        """Whether mail from ``sender`` reaches this mailbox (not quarantined)."""
        return sender.lower() not in self.quarantine_senders

    def size(self) -> int:
        return sum(len(m.rfc822()) for m in self.messages)


@dataclass
class AccessPolicy:
    id: str
    app_id: str
    access_right: str
    members: set[str]

    def blocks(self, address: str) -> bool:
        inside = address.lower() in self.members
        return not inside if self.access_right == "RestrictAccess" else inside


@dataclass
class ExchangeTenant:
    smtp_auth_enabled: bool = True
    # Set-OrganizationConfig -EWSEnabled: True, False, or None (never set: blocked from 1 October 2026)
    ews_enabled: bool | None = None
    # EWS application allow-list (EWSAllowedAppIDs); None: no list, every app may use EWS where EWS is on
    ews_allowed_app_ids: set[str] | None = None
    # outbound mail blocked for spam: "tenant" (550 5.7.705) or "ip" (550 5.7.708)
    outbound_blocked: str | None = None
    service_principals: set[str] = field(default_factory=set)
    access_policies: list[AccessPolicy] = field(default_factory=list)
    mailboxes: dict[str, Mailbox] = field(default_factory=dict)  # lower-case address -> Mailbox


def ews_org_enabled(state: State, ex: ExchangeTenant) -> bool:
    if ex.ews_enabled is None:
        return state.now() < EWS_BLOCK_UNSET_FROM
    return ex.ews_enabled


def in_use(state: State, kind: str, mb: Mailbox) -> int:
    """Connections of ``kind`` open on ``mb``: the other clients' load and this sandbox's live sessions."""
    return int(mb.load.get(kind, 0)) + int(state.sessions.get((kind, mb.address.lower()), 0))


def spend(state: State, principal: str, mb: Mailbox) -> float | None:
    """One request of ``principal`` on ``mb`` against its budget. None when within it, else the seconds until
    the oldest request in the window leaves it (Exchange's back-off)."""
    limit, window = int(mb.budget.get("limit", 0) or 0), float(mb.budget.get("window_s", 600) or 600)
    if limit <= 0:
        return None
    key = f"budget:{principal.lower()}:{mb.address.lower()}"
    span = dt.timedelta(seconds=window)
    if state.count_in_window(key, span, add=False) >= limit:
        oldest = state.oldest_in_window(key) or state.now()
        return max(1.0, (oldest + span - state.now()).total_seconds())
    state.count_in_window(key, span)
    return None


def use_budget(state: State, principal: str, mb: Mailbox, n: int) -> None:
    key = f"budget:{principal.lower()}:{mb.address.lower()}"
    for _ in range(int(n)):
        state.count_in_window(key, dt.timedelta(seconds=float(mb.budget.get("window_s", 600) or 600)))


def exchange_of(state: State, tenant_id: str) -> ExchangeTenant:
    ex = state.exchange.get(tenant_id)
    if ex is None:
        ex = state.exchange[tenant_id] = ExchangeTenant()
    return ex


def find_mailbox(state: State, address: str, tenant_id: str | None = None) -> Mailbox | None:
    """By address (any tenant unless `tenant_id`)."""
    key = (address or "").strip().lower()
    with state.lock:
        for tid, ex in state.exchange.items():
            if (tenant_id is None or tid == tenant_id) and key in ex.mailboxes:
                return ex.mailboxes[key]
    return None


def require_mailbox(state: State, address: str) -> Mailbox:
    mb = find_mailbox(state, address)
    if mb is None:
        raise KeyError(f"no mailbox {address}")
    return mb


def resolve_user_id(state: State, tenant_id: str, ident: str) -> Mailbox | None:
    """Graph `/users/{id|userPrincipalName}`: the mailbox of a user (by oid or UPN) or of a shared
    mailbox (by its object id or address)."""
    ident = (ident or "").strip().lower()
    with state.lock:
        ex = state.exchange.get(tenant_id)
        tenant = state.tenants.get(tenant_id)
        if ex is None or tenant is None:
            return None
        if ident in ex.mailboxes:
            return ex.mailboxes[ident]
        for mb in ex.mailboxes.values():
            if mb.id.lower() == ident:
                return mb
        user = tenant.users.get(ident) or next((u for u in tenant.users.values() if u.oid.lower() == ident), None)
        if user is not None:
            return next((mb for mb in ex.mailboxes.values() if mb.owner == user.upn.lower()), None)
    return None


def _flag(spec: dict, name: str, default: bool) -> bool:
    v = spec.get(name, default)
    return default if v is None else bool(v)


def parse_exchange(state: State, tenant_id: str, spec: dict | None) -> ExchangeTenant:
    from .. import scenario

    spec = spec or {}
    unknown = set(spec) - {"smtp_auth_enabled", "ews_enabled", "service_principals", "access_policies",
                           "mailboxes", "ews_allowed_app_ids", "outbound_blocked"}
    if unknown:
        raise scenario.ScenarioError(f"unknown exchange fields: {sorted(unknown)}")
    with state.lock:
        ex = exchange_of(state, tenant_id)
        ex.smtp_auth_enabled = _flag(spec, "smtp_auth_enabled", True)
        ews = spec.get("ews_enabled")
        ex.ews_enabled = None if ews is None else bool(ews)
        allowed = spec.get("ews_allowed_app_ids")
        ex.ews_allowed_app_ids = None if allowed is None else {str(a).lower() for a in allowed}
        ex.outbound_blocked = check_outbound(spec.get("outbound_blocked"))
        ex.service_principals = {str(a).lower() for a in spec.get("service_principals") or []}
        for p in spec.get("access_policies") or []:
            add_policy(ex, **p)
        for m in spec.get("mailboxes") or []:
            add_mailbox(state, tenant_id, m)
    return ex


def check_outbound(value: object) -> str | None:
    if value not in (None, "tenant", "ip"):
        raise ValueError("outbound_blocked must be tenant, ip or null")
    return value  # type: ignore[return-value]


def check_load(value: object) -> dict[str, int]:
    load = {str(k): int(v) for k, v in dict(value or {}).items()}  # type: ignore[call-overload]
    bad = set(load) - set(LOAD_KINDS)
    if bad:
        raise ValueError(f"load kinds are {LOAD_KINDS}")
    return load


def check_budget(value: object) -> dict[str, int]:
    budget = {**DEFAULT_BUDGET, **{str(k): int(v) for k, v in dict(value or {}).items()}}  # type: ignore[call-overload]
    if set(budget) - set(DEFAULT_BUDGET):
        raise ValueError("budget has limit and window_s")
    return budget


def add_policy(ex: ExchangeTenant, app_id: str, access_right: str, members: list[str] | None = None,
               id: str | None = None) -> AccessPolicy:  # noqa: A002
    if access_right not in POLICY_RIGHTS:
        raise ValueError(f"access_right must be one of {POLICY_RIGHTS}")
    p = AccessPolicy(id=id or new_id(), app_id=str(app_id).lower(), access_right=access_right,
                     members={str(m).lower() for m in members or []})
    ex.access_policies.append(p)
    return p


def add_mailbox(state: State, tenant_id: str, spec: dict) -> Mailbox:
    from .. import scenario

    unknown = set(spec) - MAILBOX_FIELDS
    if unknown:
        raise scenario.ScenarioError(f"unknown mailbox fields: {sorted(unknown)}")
    address = str(spec["address"]).strip()
    kind = spec.get("type", "user")
    if kind not in ("user", "shared"):
        raise scenario.ScenarioError("mailbox type must be user or shared")
    with state.lock:
        state.require_tenant(tenant_id)
        if find_mailbox(state, address):
            raise scenario.ScenarioError(f"mailbox {address} exists")
        owner = spec.get("owner") or (address if kind == "user" else None)
        mb = Mailbox(address=address, tenant_id=tenant_id, type=kind, owner=owner.lower() if owner else None,
                     display_name=spec.get("display_name") or address.split("@")[0])
        if spec.get("id"):
            mb.id = str(spec["id"])
        mb.full_access = {str(x).lower() for x in spec.get("full_access") or []}
        mb.send_as = {str(x).lower() for x in spec.get("send_as") or []}
        mb.ews_impersonation_denied = {str(x).lower() for x in spec.get("ews_impersonation_denied") or []}
        mb.quarantine_senders = {str(x).lower() for x in spec.get("quarantine_senders") or []}
        for name in ("imap_enabled", "pop_enabled", "ews_enabled"):
            setattr(mb, name, _flag(spec, name, True))
        mb.not_connected = bool(spec.get("not_connected", False))
        mb.load = check_load(spec.get("load"))
        mb.budget = check_budget(spec.get("budget"))
        s = spec.get("smtp_auth_enabled")
        mb.smtp_auth_enabled = None if s is None else bool(s)
        for msg in spec.get("messages") or []:
            add_message_spec(state, mb, msg)
        exchange_of(state, tenant_id).mailboxes[address.lower()] = mb
    return mb


def add_message_spec(state: State, mb: Mailbox, spec: dict[str, Any]) -> Message:
    from .. import scenario

    when = scenario.parse_when(spec.get("received", "-1h"), state.now())
    return mb.add_message(subject=str(spec.get("subject", "(no subject)")),
                          sender=str(spec.get("from", "sender@example.com")), received=when,
                          seen=bool(spec.get("seen", False)), body=str(spec.get("body", "")))


def mailbox_json(mb: Mailbox) -> dict:
    return {"address": mb.address, "id": mb.id, "type": mb.type, "owner": mb.owner,
            "full_access": sorted(mb.full_access), "send_as": sorted(mb.send_as),
            "imap_enabled": mb.imap_enabled, "pop_enabled": mb.pop_enabled,
            "smtp_auth_enabled": mb.smtp_auth_enabled, "ews_enabled": mb.ews_enabled,
            "not_connected": mb.not_connected, "ews_impersonation_denied": sorted(mb.ews_impersonation_denied),
            "load": dict(mb.load), "budget": dict(mb.budget), "quarantine_senders": sorted(mb.quarantine_senders),
            "messages": [{"uid": m.uid, "id": m.id, "subject": m.subject, "from": m.sender,
                          "received": m.received.isoformat(), "seen": m.seen} for m in mb.messages]}


def exchange_json(ex: ExchangeTenant) -> dict:
    return {"smtp_auth_enabled": ex.smtp_auth_enabled, "ews_enabled": ex.ews_enabled,
            "ews_allowed_app_ids": sorted(ex.ews_allowed_app_ids) if ex.ews_allowed_app_ids is not None else None,
            "outbound_blocked": ex.outbound_blocked,
            "service_principals": sorted(ex.service_principals),
            "access_policies": [{"id": p.id, "app_id": p.app_id, "access_right": p.access_right,
                                 "members": sorted(p.members)} for p in ex.access_policies],
            "mailboxes": [mailbox_json(mb) for mb in ex.mailboxes.values()]}
