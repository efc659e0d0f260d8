"""What `mailwarden discover` finds, and the pure logic that turns Graph's lists into it.

An app can touch mail when its service principal holds an application role or a delegated grant of a mail
permission on Microsoft Graph or Office 365 Exchange Online (``is_mail_permission``). Role and scope names come from
the resource service principals' own ``appRoles`` (an assignment names only the role's id); a grant's ``scope``
already holds the names. Which check kinds a permission implies is decided by the product's own table of what each
check needs (``checks.permissions``): a kind is proposed only when the app holds what that check demands, so a
proposed config never fails on a permission the app was never meant to have; the mail permissions no check covers
go to the token check's ``require`` so that their removal is still noticed.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from mailwarden.checks import permissions as perms
from mailwarden.monitor.signin_plan import when

GRAPH, EXCHANGE = perms.GRAPH, perms.EXCHANGE
# The resources' application ids: the same in every tenant and cloud (the service principals' appId)
RESOURCE_APP_IDS = {GRAPH: "00000003-0000-0000-c000-000000000000", EXCHANGE: "00000002-0000-0ff1-ce00-000000000000"}
RESOURCE_NAMES = {GRAPH: perms.MICROSOFT_GRAPH, EXCHANGE: perms.EXCHANGE_ONLINE}
MAIL_NAMES = frozenset({
    "IMAP.AccessAsApp", "POP.AccessAsApp", "SMTP.SendAsApp", "full_access_as_app", "EWS.AccessAsApp",
    "IMAP.AccessAsUser.All", "POP.AccessAsUser.All", "SMTP.Send", "EWS.AccessAsUser.All", "full_access_as_user",
    "EAS.AccessAsUser.All",
})
PROBED_KINDS = ("imap", "pop", "smtp", "ews", "graph_mail")  # the mailbox checks a permission can imply
MANAGED_IDENTITY = "ManagedIdentity"


def is_mail_permission(name: str) -> bool:
    """A role or scope that reads or sends mail: the mail protocols, EWS, and Mail.* (Mail.Read, Mail.Send,
    Mail.ReadWrite.Shared ...; not MailboxSettings.*)."""
    return name in MAIL_NAMES or name.startswith("Mail.")


def token_resource(resource: str, name: str, flow: str) -> str:
    """The resource a token for ``name`` is asked of: Entra lists the delegated protocol and EWS scopes under
    Microsoft Graph, but their tokens are Exchange's (checks.permissions)."""
    if flow != "app" and name in perms._LISTED_UNDER_GRAPH:
        return EXCHANGE
    return resource


@dataclass(frozen=True)
class Permission:
    resource: str  # graph | exchange: where it is granted
    name: str
    flow: str  # app | delegated
    consent: str | None = None  # delegated: "admin" (AllPrincipals) or "user" (Principal)
    user_id: str | None = None  # delegated "user" consent: the consenting user's object id

    @property
    def label(self) -> str:
        return f"{self.resource}:{self.name}"


def implied(flow: str, held: list[Permission]) -> tuple[list[str], list[str]]:
    """(check kinds, token.require entries) for the integration of one flow: a mailbox check kind when the app
    holds what that check needs; every other mail permission as ``resource:Name`` (the token's resource)."""
    have = {(token_resource(p.resource, p.name, flow), p.name) for p in held if p.flow == flow}
    kinds: list[str] = []
    covered: set[tuple[str, str]] = set()
    for kind in PROBED_KINDS:
        needs = perms.needs(flow, [kind])
        hits = [next(((n.resource, a) for a in n.any_of if (n.resource, a) in have), None) for n in needs]
        if needs and all(hits):
            kinds.append(kind)
            covered.update(h for h in hits if h)
    require = sorted(f"{r}:{n}" for r, n in have - covered if is_mail_permission(n))
    return kinds, require


@dataclass
class Credential:
    kind: str  # client_secret | certificate | federated | managed_identity
    key_id: str | None = None
    display_name: str | None = None
    hint: str | None = None  # a secret's first three characters, as Graph gives them
    thumbprint: str | None = None
    start: str | None = None
    end: str | None = None
    expired: bool | None = None
    days_left: int | None = None
    issuer: str | None = None  # federated
    subject: str | None = None  # federated


@dataclass
class Owner:
    type: str  # user | servicePrincipal | other
    id: str | None
    display_name: str | None
    user_principal_name: str | None = None
    app_id: str | None = None


@dataclass
class ConsentingUser:
    id: str | None
    user_principal_name: str | None = None
    display_name: str | None = None
    mail: str | None = None


@dataclass
class AppFinding:
    tenant: str
    display_name: str
    app_id: str
    service_principal_id: str
    application_object_id: str | None  # None: no app registration in this tenant (foreign app, managed identity)
    service_principal_type: str
    enabled: bool
    home_tenant_id: str | None
    multitenant: bool
    publisher_domain: str | None = None
    permissions: list[Permission] = field(default_factory=list)
    credentials: list[Credential] = field(default_factory=list)
    credentials_known: bool = True
    credentials_note: str | None = None
    owners: list[Owner] | None = None  # None: not read
    owners_note: str | None = None
    users: list[ConsentingUser] = field(default_factory=list)
    last_sign_in: dict[str, str | None] | None = None  # None: not read
    evidence_only: bool = False
    evidence_only_reason: str | None = None
    monitored: bool = False
    config_app: str | None = None
    integrations: list[str] = field(default_factory=list)

    def flows(self) -> list[str]:
        return [f for f in ("app", "delegated") if any(p.flow == f for p in self.permissions)]

    def checks(self, flow: str) -> tuple[list[str], list[str]]:
        return implied(flow, self.permissions)

    def as_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["application_permissions"] = [
            {"resource": p.resource, "api": RESOURCE_NAMES[p.resource], "name": p.name}
            for p in self.permissions if p.flow == "app"]
        grants: dict[tuple, dict[str, Any]] = {}
        names = {u.id: u for u in self.users}
        for p in self.permissions:
            if p.flow != "delegated":
                continue
            g = grants.setdefault((p.resource, p.consent, p.user_id), {
                "resource": p.resource, "api": RESOURCE_NAMES[p.resource], "consent": p.consent, "scopes": [],
                "user": asdict(names[p.user_id]) if p.user_id in names else (
                    {"id": p.user_id} if p.user_id else None)})
            g["scopes"].append(p.name)
        out["delegated_permissions"] = list(grants.values())
        del out["permissions"], out["users"]
        out["check_kinds"] = {flow: dict(zip(("kinds", "require"), self.checks(flow), strict=True))
                              for flow in self.flows()}
        return out


@dataclass(frozen=True)
class Note:
    """Something discover could not see in one tenant, once: the permission (or licence) that would show it."""

    code: str
    text: str
    permission: str | None = None


@dataclass
class TenantDiscovery:
    tenant: str
    tenant_id: str
    monitor_app: str | None
    apps: list[AppFinding] = field(default_factory=list)
    notes: list[Note] = field(default_factory=list)
    partial: list[str] = field(default_factory=list)  # why the lists are incomplete
    error: str | None = None  # nothing could be listed
    requests: int = 0
    waited_s: float = 0.0
    seconds: float = 0.0

    @property
    def status(self) -> str:
        return "error" if self.error else ("partial" if self.partial else "ok")

    def note(self, code: str, text: str, permission: str | None = None) -> None:
        if all(n.code != code for n in self.notes):
            self.notes.append(Note(code, text, permission))

    def as_json(self) -> dict[str, Any]:
        return {"tenant": self.tenant, "tenant_id": self.tenant_id, "monitor_app": self.monitor_app,
                "status": self.status, "error": self.error, "partial": list(self.partial),
                "notes": [asdict(n) for n in self.notes], "requests": self.requests,
                "waited_s": round(self.waited_s, 1), "seconds": round(self.seconds, 3), "apps": len(self.apps)}


# -- from Graph's lists to findings ---------------------------------------------------------------------------
def role_names(resource_sp: dict[str, Any] | None) -> dict[str, str]:
    """appRole id -> value of a resource service principal."""
    roles = (resource_sp or {}).get("appRoles") or []
    return {str(r.get("id")).lower(): str(r.get("value")) for r in roles if isinstance(r, dict) and r.get("value")}


def app_permissions(assignments: list[dict[str, Any]], resource: str, names: dict[str, str]) -> \
        dict[str, list[Permission]]:
    """Client service principal id -> the mail roles assigned to it on ``resource``."""
    out: dict[str, list[Permission]] = {}
    for a in assignments:
        if a.get("principalType") not in (None, "ServicePrincipal") or a.get("deletedDateTime"):
            continue
        name = names.get(str(a.get("appRoleId")).lower())
        if name and is_mail_permission(name) and a.get("principalId"):
            found = out.setdefault(str(a["principalId"]).lower(), [])
            p = Permission(resource, name, "app")
            if p not in found:
                found.append(p)
    return out


def delegated_permissions(grants: list[dict[str, Any]], resource: str) -> dict[str, list[Permission]]:
    """Client service principal id -> the mail scopes granted to it on ``resource`` (admin or a user's consent)."""
    out: dict[str, list[Permission]] = {}
    for g in grants:
        if not g.get("clientId"):
            continue
        admin = g.get("consentType") == "AllPrincipals"
        user = None if admin else (str(g.get("principalId")).lower() if g.get("principalId") else None)
        for name in str(g.get("scope") or "").split():
            if is_mail_permission(name):
                found = out.setdefault(str(g["clientId"]).lower(), [])
                p = Permission(resource, name, "delegated", "admin" if admin else "user", user)
                if p not in found:
                    found.append(p)
    return out


def secret(c: dict[str, Any], now: datetime) -> Credential:
    return _dated(Credential("client_secret", _s(c.get("keyId")), c.get("displayName"), hint=c.get("hint")),
                  c, now)


def certificate(c: dict[str, Any], now: datetime) -> Credential:
    return _dated(Credential("certificate", _s(c.get("keyId")), c.get("displayName"),
                             thumbprint=_s(c.get("customKeyIdentifier"))), c, now)


def federated(c: dict[str, Any]) -> Credential:
    return Credential("federated", _s(c.get("id")), c.get("name"), issuer=c.get("issuer"), subject=c.get("subject"))


def _dated(cred: Credential, c: dict[str, Any], now: datetime) -> Credential:
    start, end = when(c.get("startDateTime")), when(c.get("endDateTime"))
    cred.start = start.isoformat().replace("+00:00", "Z") if start else None
    cred.end = end.isoformat().replace("+00:00", "Z") if end else None
    if end is not None:
        cred.expired = end <= now
        cred.days_left = (end - now).days
    return cred


def owner(o: dict[str, Any]) -> Owner:
    kind = str(o.get("@odata.type") or "").rsplit(".", 1)[-1]
    kind = kind if kind in ("user", "servicePrincipal") else ("user" if o.get("userPrincipalName") else "other")
    return Owner(kind, _s(o.get("id")), o.get("displayName"), o.get("userPrincipalName"), o.get("appId"))


def last_sign_in(row: dict[str, Any] | None) -> dict[str, str | None]:
    """The usage report's row of one app: its last sign-in, as a client app-only and delegated."""
    def at(key: str) -> str | None:
        v = (row or {}).get(key)
        return v.get("lastSignInDateTime") if isinstance(v, dict) else None

    return {"last": at("lastSignInActivity"), "app_only": at("applicationAuthenticationClientSignInActivity"),
            "delegated": at("delegatedClientSignInActivity")}


def _s(v: Any) -> str | None:
    return None if v is None else str(v)


def evidence_only(f: AppFinding) -> str | None:
    """Why mailwarden cannot probe the app with its own copy of the credential, or None when it can."""
    if f.service_principal_type == MANAGED_IDENTITY:
        return "a managed identity: Azure holds its credential, no copy can be given to mailwarden"
    kinds = {c.kind for c in f.credentials}
    if "federated" in kinds and not kinds & {"client_secret", "certificate"}:
        return ("it signs in with federated identity credentials only (a workload's token from another identity "
                "provider): there is no secret or certificate to give mailwarden")
    return None
