"""The directory state: tenants, users, apps and their credentials, grants, sessions, faults.

Every answer of the sandbox is derived from this state. Mutations happen under `State.lock`
(an RLock), from the HTTP handlers, the control API or Python code holding `Sandbox.state`.
"""

from __future__ import annotations

import datetime as dt
import itertools
import threading
import uuid
from collections import defaultdict, deque
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509

GRAPH = "graph"
EXCHANGE = "exchange"
RESOURCES = (GRAPH, EXCHANGE)
GRAPH_APP_ID = "00000003-0000-0000-c000-000000000000"
EXCHANGE_APP_ID = "00000002-0000-0ff1-ce00-000000000000"
# Microsoft's own tenant: appOwnerOrganizationId of Microsoft Graph's and Exchange Online's service principals
MICROSOFT_TENANT_ID = "f8cdef31-a31e-4b4a-93e4-5f571e91255a"
SIGN_IN_AUDIENCES = ("AzureADMyOrg", "AzureADMultipleOrgs")
SP_APPLICATION, SP_MANAGED_IDENTITY = "Application", "ManagedIdentity"
MFA_STATES = (None, "required", "enrollment_required", "not_passed")
INACTIVITY_LIMIT = dt.timedelta(days=90)
SERVICES = ("entra", "exchange")
# What an open Microsoft incident does to the service's answers (M365_FACTS.md, "Throttling and transient
# replies"): Entra's token endpoint answers 5xx with an HTML page or an empty body, or AADSTS90033 in JSON;
# Exchange answers Graph 503 with Retry-After, SMTP 421 4.3.2 and EWS 503.
INCIDENT_EFFECTS = ("html", "empty", "busy", "none")  # none: listed in service health, answers unchanged
# Entra ID licence of a tenant: sign-in logs and the usage reports need P1 or P2 (M365_FACTS.md, "What Graph can
# tell about the consuming system"); a free tenant answers 403 Authentication_RequestFromNonPremiumTenantOrB2CTenant
LICENCES = ("free", "p1", "p2")
# Events kept per log (sign-ins, directory audits). Entra keeps 30 days; the sandbox keeps the newest N (memory)
LOG_RETENTION = 50_000


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def new_id() -> str:
    return str(uuid.uuid4())


@dataclass
class Secret:
    key_id: str
    display_name: str | None
    value: str
    start: dt.datetime
    end: dt.datetime
    # When Entra ID's token endpoint knows the secret: a new secret is refused (7000215) for seconds to about
    # two minutes while it replicates (M365_FACTS.md); the tenant's `secret_replication_s` sets the delay.
    usable_from: dt.datetime | None = None

    @property
    def hint(self) -> str:
        return self.value[:3]


@dataclass
class Certificate:
    key_id: str
    cert: x509.Certificate
    start: dt.datetime
    end: dt.datetime
    thumbprint: str  # SHA-1, upper hex
    thumbprint_sha256: str
    display_name: str
    key_path: Path | None = None
    cert_path: Path | None = None


@dataclass
class FederatedCredential:
    """A federated identity credential of an app registration (workload identity federation)."""

    id: str
    name: str
    issuer: str
    subject: str
    audiences: list[str] = field(default_factory=lambda: ["api://AzureADTokenExchange"])
    description: str | None = None


@dataclass
class App:
    app_id: str
    tenant_id: str
    display_name: str
    object_id: str = field(default_factory=new_id)
    sp_object_id: str = field(default_factory=new_id)  # the enterprise application (service principal)
    enabled: bool = True
    public_client: bool = False
    redirect_uris: list[str] = field(default_factory=list)
    assignment_required: bool = False
    assigned_users: set[str] = field(default_factory=set)  # lower-case UPNs
    secrets: list[Secret] = field(default_factory=list)
    certificates: list[Certificate] = field(default_factory=list)
    app_permissions: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    delegated_permissions: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    # consent a user gave for themselves (tenant allows user consent): upn -> resource -> scopes
    user_grants: dict[str, dict[str, set[str]]] = field(default_factory=dict)
    created: dt.datetime = field(default_factory=utcnow)
    # owners (directory objects): app ids of service principals and lower-case UPNs of users
    owners: set[str] = field(default_factory=set)
    sign_in_audience: str = "AzureADMyOrg"  # AzureADMultipleOrgs: other tenants may hold a service principal
    federated_credentials: list[FederatedCredential] = field(default_factory=list)
    # set on the per-request view of a multitenant app's service principal in another tenant (State.client_app)
    home_tenant_id: str | None = None

    def consented_scopes(self, upn: str, resource: str) -> set[str]:
        own = self.user_grants.get(upn.lower(), {}).get(resource, set())
        return set(self.delegated_permissions.get(resource, set())) | set(own)


@dataclass
class ServicePrincipal:
    """A service principal with no application object in its tenant: the service principal of another tenant's
    multitenant app (consented here: its own app roles, delegated grants, enabled flag), or a managed identity."""

    app_id: str
    tenant_id: str  # the tenant it lives in
    display_name: str
    kind: str = SP_APPLICATION  # Application | ManagedIdentity
    home_tenant_id: str | None = None  # the app's home tenant (appOwnerOrganizationId); None for managed identities
    object_id: str = field(default_factory=new_id)
    enabled: bool = True
    assignment_required: bool = False
    assigned_users: set[str] = field(default_factory=set)
    app_permissions: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    delegated_permissions: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    user_grants: dict[str, dict[str, set[str]]] = field(default_factory=dict)
    created: dt.datetime = field(default_factory=utcnow)
    # managed identities: ["isExplicit=False|True", "<Azure resource id>"], and the certificate Azure rotates
    alternative_names: list[str] = field(default_factory=list)
    certificate_start: dt.datetime | None = None
    certificate_end: dt.datetime | None = None
    certificate_key_id: str = field(default_factory=new_id)

    def consented_scopes(self, upn: str, resource: str) -> set[str]:
        own = self.user_grants.get(upn.lower(), {}).get(resource, set())
        return set(self.delegated_permissions.get(resource, set())) | set(own)


def foreign_client(sp: ServicePrincipal, home: App | None) -> App:
    """The App the token endpoint works with when a multitenant app signs in to a tenant where it has a service
    principal: the home registration's credentials, client settings and name; this tenant's service principal
    (object id, enabled, assignment, consent). Containers are shared, so consent given here lands on `sp`."""
    return App(
        app_id=sp.app_id, tenant_id=sp.tenant_id, display_name=home.display_name if home else sp.display_name,
        object_id=home.object_id if home else sp.object_id, sp_object_id=sp.object_id, enabled=sp.enabled,
        public_client=home.public_client if home else False,
        redirect_uris=home.redirect_uris if home else [],
        assignment_required=sp.assignment_required, assigned_users=sp.assigned_users,
        secrets=home.secrets if home else [], certificates=home.certificates if home else [],
        app_permissions=sp.app_permissions, delegated_permissions=sp.delegated_permissions,
        user_grants=sp.user_grants, created=sp.created,
        sign_in_audience=home.sign_in_audience if home else "AzureADMultipleOrgs",
        federated_credentials=home.federated_credentials if home else [], home_tenant_id=sp.home_tenant_id,
    )


@dataclass
class User:
    upn: str
    password: str
    tenant_id: str
    oid: str = field(default_factory=new_id)
    display_name: str = ""
    enabled: bool = True
    locked: bool = False
    password_expired: bool = False
    mfa: str | None = None
    mfa_code: str = "123456"
    ca_blocked: bool = False
    signin_frequency_hours: float | None = None
    tokens_valid_from: dt.datetime | None = None  # set by "revoke sessions"
    # An admin reset or a change of the password revokes refresh tokens that descend from a password sign-in
    # (50173); its expiry revokes nothing (M365_FACTS.md, the revocation notes).
    password_changed_at: dt.datetime | None = None
    mail: str | None = None  # primary SMTP address, when it differs from the UPN
    proxy_addresses: list[str] = field(default_factory=list)  # "SMTP:primary", "smtp:alias"
    blocked_by_security_defaults: bool = False  # 530035
    mfa_max_age_hours: float | None = None  # MFA of a refresh token's sign-in older than this: 50078
    groups: int = 0  # group memberships carried in its tokens (large tokens: the POP line limit)

    @property
    def address(self) -> str:
        return self.mail or self.upn


@dataclass
class Tenant:
    id: str
    domain: str
    display_name: str = ""
    user_consent: bool = True
    users: dict[str, User] = field(default_factory=dict)  # lower-case UPN -> User
    apps: dict[str, App] = field(default_factory=dict)  # app_id -> App
    # service principals without an application object here: foreign multitenant apps, managed identities
    service_principals: dict[str, ServicePrincipal] = field(default_factory=dict)  # app_id -> ServicePrincipal
    secret_replication_s: float = 0.0  # how long a new client secret is refused (7000215) after it is added
    exchange_online: bool = True  # the tenant has Office 365 Exchange Online's service principal (else 500011)
    # Token requests the tenant's apps may make: per app per minute (429 with a plain-text body past it) and
    # for the tenant per minute (AADSTS90055 past it). None: no limit. Real limits are not published.
    token_requests_per_app_minute: int | None = None
    token_requests_per_tenant_minute: int | None = None
    # Identical token requests (client, grant, scope, user) per 5 minutes before AADSTS50196 (loop detected)
    identical_requests_limit: int | None = None
    entra_licence: str = "p1"  # free | p1 | p2
    # Logs arrive late (M365_FACTS.md): seconds before an event shows in the sign-in logs (interactive and service
    # principal), in the non-interactive sign-in logs, and in the directory audits
    signin_log_delay_s: float = 0.0
    noninteractive_log_delay_s: float = 0.0
    audit_log_delay_s: float = 0.0
    admin_upn: str = ""  # who changes the directory when a control op names no actor (default admin@<domain>)


@dataclass
class RefreshToken:
    token: str
    tenant_id: str
    client_id: str
    upn: str
    scopes: list[str]
    auth_time: dt.datetime  # the interactive sign-in this grant descends from
    issued_at: dt.datetime  # this token; inactivity is measured from here
    mfa: bool = False
    expires_at: dt.datetime | None = None  # None: until revoked or inactive 90 days
    family: str = field(default_factory=new_id)
    public: bool = False  # issued to a public client (no secret): refreshed without one, else 700025
    password_based: bool = True  # the sign-in it descends from used a password (every sandbox sign-in does)


@dataclass
class AuthCode:
    code: str
    tenant_id: str
    client_id: str
    upn: str
    redirect_uri: str
    scopes: list[str]
    code_challenge: str | None
    code_challenge_method: str | None
    nonce: str | None
    auth_time: dt.datetime
    expires_at: dt.datetime
    mfa: bool = False
    redeemed: bool = False


@dataclass
class DeviceCode:
    device_code: str
    user_code: str
    tenant_id: str
    client_id: str
    scopes: list[str]
    expires_at: dt.datetime
    interval: int
    approved_upn: str | None = None
    auth_time: dt.datetime | None = None
    mfa: bool = False
    redeemed: bool = False


@dataclass
class Incident:
    """A Microsoft-side incident on a service (what service health lists), and how it shows."""

    id: str
    service: str  # entra | exchange
    effect: str = "html"  # entra: html | empty | busy (AADSTS90033); exchange: any (503 / 421); none: listed only
    title: str = ""
    started: dt.datetime = field(default_factory=utcnow)
    retry_after: int = 30
    issue_id: str = ""  # service health id, e.g. EX123456
    status: str = "serviceDegradation"  # serviceHealthStatus while open; serviceRestored once closed
    classification: str = "incident"  # incident | advisory
    impact_description: str = ""
    feature: str = ""
    feature_group: str = ""
    ended: dt.datetime | None = None  # closed (service restored); still listed by service health
    last_modified: dt.datetime = field(default_factory=utcnow)
    posts: list = field(default_factory=list)  # (time, text) updates, as service health posts them


@dataclass
class Fault:
    id: str
    path_prefix: str
    status: int | None = 429
    count: int | None = 1  # requests left to fail; None: until cleared
    retry_after: int = 5
    latency_ms: int = 0
    method: str | None = None
    # a page fault (sandbox.directory): request number `page` of the Graph listing `listing` answers `status`;
    # the path middleware never applies these
    listing: str | None = None
    page: int | None = None
    tenant: str | None = None  # tenant id; None: any tenant


class State:
    """The live directory. Look-ups and the bookkeeping of issued grants."""

    def __init__(self, workdir: Path, token_lifetime_s: int = 3600, device_code_interval_s: int = 5):
        self.lock = threading.RLock()
        self.workdir = workdir
        self.started_at = utcnow()
        self.token_lifetime_s = token_lifetime_s
        self.device_code_interval_s = device_code_interval_s
        self.tenants: dict[str, Tenant] = {}
        self.refresh_tokens: dict[str, RefreshToken] = {}
        self.auth_codes: dict[str, AuthCode] = {}
        self.device_codes: dict[str, DeviceCode] = {}
        self.faults: list[Fault] = []
        self.incidents: list[Incident] = []  # open and closed (service health keeps the history)
        # sign-in logs and directory audits (sandbox.logs, sandbox.audit), oldest first; seq orders events
        self.signins: deque = deque(maxlen=LOG_RETENTION)
        self.audits: deque = deque(maxlen=LOG_RETENTION)
        self.log_seq = itertools.count(1)
        # the consuming systems' actors (sandbox.actors) and the runner that drives them (set by Sandbox)
        self.actors: dict = {}
        self.actor_runner = None
        # live logged-in sessions per (protocol, mailbox address lower-case), kept by the mail servers
        # (session_opened / session_closed)
        self.sessions: dict[tuple[str, str], int] = defaultdict(int)
        # token requests seen (monotonic-free wall times) per app, per tenant and per identical request
        self.token_log: dict[str, list[dt.datetime]] = defaultdict(list)
        self.exchange: dict = {}  # tenant id -> sandbox.mail.model.ExchangeTenant
        # protocol -> {"mode": none|hang|latency, "latency_ms": int}
        self.protocol_faults: dict[str, dict] = {p: {"mode": "none", "latency_ms": 0} for p in ("imap", "pop", "smtp")}
        self.stats: dict = {}
        self.reset_stats()

    # -- time -------------------------------------------------------------------------------------
    @staticmethod
    def now() -> dt.datetime:
        return utcnow()

    # -- look-ups ---------------------------------------------------------------------------------
    def tenant(self, ident: str) -> Tenant | None:
        """By tenant id or by a domain of the tenant (case-insensitive), as Entra resolves `{tenant}`."""
        ident = (ident or "").lower()
        with self.lock:
            if ident in self.tenants:
                return self.tenants[ident]
            for t in self.tenants.values():
                if t.domain.lower() == ident:
                    return t
        return None

    def find_app(self, app_id: str) -> App | None:
        with self.lock:
            for t in self.tenants.values():
                if app_id.lower() in t.apps:
                    return t.apps[app_id.lower()]
        return None

    def find_user(self, upn: str) -> User | None:
        with self.lock:
            for t in self.tenants.values():
                if upn.lower() in t.users:
                    return t.users[upn.lower()]
        return None

    def find_user_by_address(self, address: str, tenant_id: str | None = None) -> User | None:
        """By UPN, primary SMTP address or proxy address, as Exchange resolves a recipient."""
        key = (address or "").strip().lower()
        with self.lock:
            for t in self.tenants.values():
                if tenant_id is not None and t.id != tenant_id:
                    continue
                if key in t.users:
                    return t.users[key]
                for u in t.users.values():
                    if (u.mail or "").lower() == key or any(p.split(":", 1)[-1].lower() == key
                                                            for p in u.proxy_addresses):
                        return u
        return None

    def client_app(self, tenant: Tenant, client_id: str) -> App | None:
        """The app `client_id` as a client of `tenant`: its own registration, or the service principal of another
        tenant's multitenant app (signing in with the home registration's credentials). None: neither (700016).
        Managed identities do not sign in at the token endpoint."""
        key = (client_id or "").lower()
        with self.lock:
            app = tenant.apps.get(key)
            if app is not None:
                return app
            sp = tenant.service_principals.get(key)
            if sp is None or sp.kind != SP_APPLICATION:
                return None
            home_tenant = self.tenants.get(sp.home_tenant_id or "")
            home = home_tenant.apps.get(key) if home_tenant else None
            if home is not None and home.sign_in_audience != "AzureADMultipleOrgs":
                return None  # no longer multitenant: Entra no longer finds it from other tenants
            return foreign_client(sp, home)

    def require_app(self, app_id: str) -> App:
        app = self.find_app(app_id)
        if app is None:
            raise KeyError(f"no app {app_id}")
        return app

    def require_user(self, upn: str) -> User:
        user = self.find_user(upn)
        if user is None:
            raise KeyError(f"no user {upn}")
        return user

    def require_tenant(self, ident: str) -> Tenant:
        t = self.tenant(ident)
        if t is None:
            raise KeyError(f"no tenant {ident}")
        return t

    def find_device_code(self, user_code: str):
        code = (user_code or "").strip().upper().replace("-", "")
        with self.lock:
            return next((d for d in self.device_codes.values() if d.user_code == code), None)

    def incident(self, service: str) -> Incident | None:
        """The open incident that changes the service's answers (closed and `effect: none` ones do not)."""
        with self.lock:
            return next((i for i in self.incidents
                         if i.service == service and i.ended is None and i.effect != "none"), None)

    def count_in_window(self, key: str, window: dt.timedelta, add: bool | int = True) -> int:
        """How many events of ``key`` happened within ``window`` (this one included when ``add``; ``add`` may be a
        count: that many events now, the log pruned once)."""
        now = self.now()
        with self.lock:
            log = self.token_log[key]
            log[:] = [t for t in log if now - t < window]
            log.extend([now] * int(add))
            return len(log)

    def oldest_in_window(self, key: str) -> dt.datetime | None:
        with self.lock:
            log = self.token_log.get(key) or []
            return log[0] if log else None

    # -- faults -----------------------------------------------------------------------------------
    def take_fault(self, path: str, method: str) -> tuple[int, Fault | None]:
        """Latency to add (ms) and the status fault to answer with, consuming one of its count."""
        latency, hit = 0, None
        with self.lock:
            for f in list(self.faults):
                if f.listing is not None:
                    continue
                if not path.startswith(f.path_prefix) or (f.method and f.method.upper() != method):
                    continue
                latency += f.latency_ms
                if f.status and hit is None and (f.count is None or f.count > 0):
                    hit = f
                    if f.count is not None:
                        f.count -= 1
                        if f.count <= 0:
                            self.faults.remove(f)
        return latency, hit

    def take_page_fault(self, tenant_id: str, listing: str, page: int) -> Fault | None:
        """The page fault (if any) for request `page` of `listing`, consuming one of its count."""
        with self.lock:
            for f in list(self.faults):
                if f.listing is None or f.listing.lower() != listing.lower() or f.page != page:
                    continue
                if f.tenant is not None and f.tenant != tenant_id:
                    continue
                if f.count is not None:
                    f.count -= 1
                    if f.count <= 0:
                        self.faults.remove(f)
                return f
        return None

    # -- stats ------------------------------------------------------------------------------------
    def reset_stats(self) -> None:
        with self.lock:
            self.stats = {"requests": defaultdict(int), "token": defaultdict(lambda: defaultdict(int)),
                          "mail": {p: {"connections": 0, "auth_ok": 0, "auth_failed": 0,
                                       "commands": defaultdict(lambda: defaultdict(int))}
                                   for p in ("imap", "pop", "smtp", "graph", "ews")},
                          "delivered": [], "sessions_peak": {}}

    def session_opened(self, key: tuple[str, str]) -> None:
        """A client logged in to mailbox ``key[1]`` over protocol ``key[0]``: counted live, and the most sessions
        the mailbox had open at once over every protocol (stats ``sessions_peak``, since the last reset)."""
        with self.lock:
            self.sessions[key] += 1
            mailbox = key[1]
            now = sum(n for (_, mb), n in self.sessions.items() if mb == mailbox)
            peak = self.stats["sessions_peak"]
            peak[mailbox] = max(peak.get(mailbox, 0), now)

    def session_closed(self, key: tuple[str, str]) -> None:
        with self.lock:
            self.sessions[key] -= 1

    def count_mail(self, protocol: str, key: str, mailbox: str | None = None, n: int = 1) -> None:
        """key: "connections" / "auth_ok" / "auth_failed", or a command counted for `mailbox` ("-" before login)."""
        with self.lock:
            p = self.stats["mail"][protocol]
            if key in ("connections", "auth_ok", "auth_failed"):
                p[key] += n
            else:
                p["commands"][(mailbox or "-").lower()][key.upper()] += n

    def record_delivery(self, via: str, sender: str, to: str, subject: str, delivered: bool) -> None:
        with self.lock:
            self.stats["delivered"].append({"via": via, "from": sender, "to": to, "subject": subject,
                                            "delivered": delivered, "at": utcnow().isoformat()})

    def count_request(self, key: str) -> None:
        with self.lock:
            self.stats["requests"][key] += 1

    def count_token(self, grant_type: str, client_id: str) -> None:
        with self.lock:
            self.stats["token"][grant_type or "(none)"][client_id or "(none)"] += 1

    def stats_snapshot(self) -> dict:
        with self.lock:
            return {
                "since": self.stats.get("since"),
                "requests": dict(self.stats["requests"]),
                "token": {g: dict(c) for g, c in self.stats["token"].items()},
                "token_total": sum(sum(c.values()) for c in self.stats["token"].values()),
                "mail": {p: {"connections": v["connections"], "auth_ok": v["auth_ok"], "auth_failed": v["auth_failed"],
                             "commands": {mb: dict(c) for mb, c in v["commands"].items()}}
                         for p, v in self.stats["mail"].items()},
                "delivered": list(self.stats["delivered"]),
                "sessions_peak": dict(self.stats["sessions_peak"]),
            }
