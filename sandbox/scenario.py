"""Scenario loading: YAML (or a dict) -> State. The same parsers serve the control API's add_* ops."""

from __future__ import annotations

import datetime as dt
import random
import re
import secrets as pysecrets
import string
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

import yaml

from . import tls
from .state import (
    EXCHANGE,
    GRAPH,
    LICENCES,
    MFA_STATES,
    RESOURCES,
    SIGN_IN_AUDIENCES,
    SP_APPLICATION,
    SP_MANAGED_IDENTITY,
    App,
    Certificate,
    FederatedCredential,
    Secret,
    ServicePrincipal,
    State,
    Tenant,
    User,
    new_id,
)

_REL = re.compile(r"^\s*([+-])\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
USER_FIELDS = {
    "enabled", "locked", "password_expired", "mfa", "mfa_code", "ca_blocked",
    "signin_frequency_hours", "display_name", "password", "mail", "proxy_addresses",
    "blocked_by_security_defaults", "mfa_max_age_hours", "groups",
}
TENANT_FIELDS = {
    "id", "domain", "display_name", "user_consent", "users", "apps", "exchange", "secret_replication_s",
    "exchange_online", "token_requests_per_app_minute", "token_requests_per_tenant_minute",
    "identical_requests_limit", "entra_licence", "signin_log_delay_s", "noninteractive_log_delay_s",
    "audit_log_delay_s", "admin", "actors", "managed_identities", "service_principals", "extra_apps",
}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")


class ScenarioError(ValueError):
    pass


def parse_when(value: Any, base: dt.datetime) -> dt.datetime:
    """'+10d', '-2d', '+3h' relative to `base`; a date (midnight UTC), a datetime or an ISO string."""
    if isinstance(value, dt.datetime):
        return value if value.tzinfo else value.replace(tzinfo=dt.UTC)
    if isinstance(value, dt.date):
        return dt.datetime(value.year, value.month, value.day, tzinfo=dt.UTC)
    if isinstance(value, str):
        m = _REL.match(value)
        if m:
            sign, amount, unit = m.groups()
            delta = dt.timedelta(**{_UNITS[unit]: float(amount)})
            return base + delta if sign == "+" else base - delta
        try:
            return parse_when(dt.datetime.fromisoformat(value.replace("Z", "+00:00")), base)
        except ValueError:
            pass
    raise ScenarioError(f"not a date, datetime or relative time ('+10d', '-3h'): {value!r}")


def parse_duration(value: Any) -> float:
    """Seconds: a number, or '90s' '5m' '2h' '1d' '1w'."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    m = _DURATION.match(str(value or "0"))
    if not m:
        raise ScenarioError(f"not a duration (seconds, or '30s' '5m' '2h'): {value!r}")
    amount, unit = m.groups()
    return dt.timedelta(**{_UNITS[unit or "s"]: float(amount)}).total_seconds()


def check_licence(value: Any) -> str:
    if value not in LICENCES:
        raise ScenarioError(f"entra_licence must be one of {LICENCES}")
    return str(value)


def load(source: dict | str | Path) -> dict:
    if isinstance(source, dict):
        return source
    text = Path(source).read_text(encoding="utf-8")
    data = yaml.safe_load(text) or {}
    if not isinstance(data, dict):
        raise ScenarioError(f"{source}: the scenario must be a mapping")
    return data


def build_state(source: dict | str | Path, workdir: Path) -> State:
    data = load(source)
    state = State(
        workdir,
        token_lifetime_s=int(data.get("token_lifetime_s", 3600)),
        device_code_interval_s=int(data.get("device_code_interval_s", 5)),
    )
    for i, spec in enumerate(data.get("tenants") or []):
        try:
            add_tenant(state, spec)
        except (KeyError, TypeError, ValueError) as exc:
            raise ScenarioError(f"tenants[{i}]: {exc}") from exc
    for t in state.tenants.values():  # foreign service principals may name a home tenant defined later
        for sp in t.service_principals.values():
            check_foreign_sp(state, sp)
    return state


def _opt_int(value: Any) -> int | None:
    return None if value is None else int(value)


def add_tenant(state: State, spec: dict) -> Tenant:
    unknown = set(spec) - TENANT_FIELDS
    if unknown:
        raise ScenarioError(f"unknown tenant fields: {sorted(unknown)}")
    tid = str(spec.get("id") or new_id()).lower()
    domain = spec.get("domain") or f"tenant{tid[:8]}.onmicrosoft.com"
    tenant = Tenant(
        id=tid, domain=domain, display_name=spec.get("display_name") or domain.split(".")[0],
        user_consent=bool(spec.get("user_consent", True)),
        secret_replication_s=float(spec.get("secret_replication_s") or 0),
        exchange_online=bool(spec.get("exchange_online", True)),
        token_requests_per_app_minute=_opt_int(spec.get("token_requests_per_app_minute")),
        token_requests_per_tenant_minute=_opt_int(spec.get("token_requests_per_tenant_minute")),
        identical_requests_limit=_opt_int(spec.get("identical_requests_limit")),
        entra_licence=check_licence(spec.get("entra_licence", "p1")),
        signin_log_delay_s=parse_duration(spec.get("signin_log_delay_s", 0)),
        noninteractive_log_delay_s=parse_duration(spec.get("noninteractive_log_delay_s", 0)),
        audit_log_delay_s=parse_duration(spec.get("audit_log_delay_s", 0)),
        admin_upn=str(spec.get("admin") or f"admin@{domain}"),
    )
    with state.lock:
        if state.tenant(tid) or state.tenant(domain):
            raise ScenarioError(f"tenant {tid} / {domain} exists")
        state.tenants[tid] = tenant
        for j, u in enumerate(spec.get("users") or []):
            try:
                add_user(state, tid, u)
            except (KeyError, TypeError, ValueError) as exc:
                raise ScenarioError(f"users[{j}]: {exc}") from exc
        for j, a in enumerate(spec.get("apps") or []):
            try:
                add_app(state, tid, a)
            except (KeyError, TypeError, ValueError) as exc:
                raise ScenarioError(f"apps[{j}]: {exc}") from exc
        for field_name, kind in (("managed_identities", SP_MANAGED_IDENTITY), ("service_principals", SP_APPLICATION)):
            for j, a in enumerate(spec.get(field_name) or []):
                try:
                    sp = add_service_principal(state, tid, a, kind)
                    if kind == SP_APPLICATION and sp.home_tenant_id in state.tenants:
                        check_foreign_sp(state, sp)
                except (KeyError, TypeError, ValueError) as exc:
                    raise ScenarioError(f"{field_name}[{j}]: {exc}") from exc
        if spec.get("extra_apps"):
            try:
                generate_extra_apps(state, tenant, spec["extra_apps"])
            except (KeyError, TypeError, ValueError) as exc:
                raise ScenarioError(f"extra_apps: {exc}") from exc
        from .mail.model import parse_exchange

        try:
            parse_exchange(state, tid, spec.get("exchange"))
        except (KeyError, TypeError, ValueError) as exc:
            raise ScenarioError(f"exchange: {exc}") from exc
        from .actors import add_actor

        for j, a in enumerate(spec.get("actors") or []):
            try:
                add_actor(state, tid, dict(a))
            except (KeyError, TypeError, ValueError) as exc:
                raise ScenarioError(f"actors[{j}]: {exc}") from exc
    return tenant


def check_user_fields(fields: dict) -> None:
    unknown = set(fields) - USER_FIELDS - {"upn", "oid"}
    if unknown:
        raise ScenarioError(f"unknown user fields: {sorted(unknown)}")
    if fields.get("mfa") not in MFA_STATES:
        raise ScenarioError(f"mfa must be one of {MFA_STATES[1:]} or null")


def add_user(state: State, tenant_id: str, spec: dict) -> User:
    check_user_fields(spec)
    tenant = state.require_tenant(tenant_id)
    upn = spec["upn"]
    with state.lock:
        if state.find_user(upn):
            raise ScenarioError(f"user {upn} exists")
        user = User(upn=upn, password=str(spec["password"]), tenant_id=tenant.id,
                    oid=str(spec.get("oid") or new_id()))
        user.display_name = upn.split("@")[0]
        for k, v in spec.items():
            if k in USER_FIELDS:
                setattr(user, k, str(v) if k in ("password", "mfa_code") else v)
        if user.mail and not user.proxy_addresses:
            user.proxy_addresses = [f"SMTP:{user.mail}"]
        tenant.users[upn.lower()] = user
    return user


def _perms(value: Any) -> dict[str, set[str]]:
    out: dict[str, set[str]] = defaultdict(set)
    for res, perms in (value or {}).items():
        if res not in RESOURCES:
            raise ScenarioError(f"unknown resource {res!r} (use one of {RESOURCES})")
        out[res] |= set(perms or [])
    return out


def generate_secret_value() -> str:
    """Shaped like Entra's: 3 chars, '8Q~' style marker, 34 more."""
    alphabet = string.ascii_letters + string.digits + "_-.~"
    head = "".join(pysecrets.choice(string.ascii_letters + string.digits) for _ in range(3))
    return head + "8Q~" + "".join(pysecrets.choice(alphabet) for _ in range(34))


def make_secret(state: State, spec: dict) -> Secret:
    base = state.started_at
    start = parse_when(spec["start"], base) if spec.get("start") is not None else state.now()
    end = parse_when(spec.get("end", "+365d"), base)
    return Secret(
        key_id=str(spec.get("key_id") or new_id()), display_name=spec.get("display_name"),
        value=str(spec.get("value") or generate_secret_value()), start=start, end=end,
    )


def make_certificate(state: State, app: App, spec: dict, key=None) -> Certificate:
    """`generate: true` makes a key pair and self-signed cert; else `cert_pem` or `cert_file` is uploaded.
    `key`: the key pair to certify (generated when None)."""
    base = state.started_at
    key_id = str(spec.get("key_id") or new_id())
    key_path = cert_path = None
    if spec.get("cert_pem") or spec.get("cert_file"):
        pem = spec.get("cert_pem") or Path(spec["cert_file"]).read_text()
        cert = tls.x509.load_pem_x509_certificate(pem.encode() if isinstance(pem, str) else pem)
        start = cert.not_valid_before_utc
        end = cert.not_valid_after_utc
    else:
        start = parse_when(spec["start"], base) if spec.get("start") is not None else state.now()
        end = parse_when(spec.get("end", "+365d"), base)
        key = key or tls.new_rsa_key()
        cn = spec.get("subject") or f"{app.display_name}"
        cert = tls.self_signed(key, cn, start, max(end, start + dt.timedelta(seconds=1)))
        folder = state.workdir / "certs" / app.app_id
        folder.mkdir(parents=True, exist_ok=True)
        key_path, cert_path = folder / f"{key_id}.key.pem", folder / f"{key_id}.cert.pem"
        key_path.write_bytes(tls.key_pem(key))
        key_path.chmod(0o600)
        cert_path.write_bytes(tls.cert_pem(cert))
    cn = cert.subject.rfc4514_string()
    return Certificate(
        key_id=key_id, cert=cert, start=start, end=end, thumbprint=tls.sha1_thumbprint(cert),
        thumbprint_sha256=tls.sha256_thumbprint(cert), display_name=cn,
        key_path=key_path, cert_path=cert_path,
    )


APP_FIELDS = {
    "app_id", "display_name", "enabled", "public_client", "redirect_uris", "assignment_required",
    "assigned_users", "secrets", "certificates", "application_permissions", "delegated_permissions",
    "user_grants", "object_id", "owners", "sign_in_audience", "federated_credentials",
}


def _expand(specs: list | None) -> list[dict]:
    """A credential spec with `count: n` stands for n credentials of that spec (display names numbered)."""
    out: list[dict] = []
    for spec in specs or []:
        spec = dict(spec)
        n = spec.pop("count", None)
        if n is None:
            out.append(spec)
            continue
        if spec.get("key_id") or spec.get("value"):
            raise ScenarioError("a credential with `count` cannot fix key_id or value")
        for i in range(int(n)):
            one = dict(spec)
            if spec.get("display_name"):
                one["display_name"] = f"{spec['display_name']} #{i + 1}"
            out.append(one)
    return out


def make_federated_credential(spec: dict) -> FederatedCredential:
    unknown = set(spec) - {"id", "name", "issuer", "subject", "audiences", "description"}
    if unknown:
        raise ScenarioError(f"unknown federated credential fields: {sorted(unknown)}")
    return FederatedCredential(
        id=str(spec.get("id") or new_id()), name=str(spec["name"]), issuer=str(spec["issuer"]),
        subject=str(spec["subject"]), audiences=list(spec.get("audiences") or ["api://AzureADTokenExchange"]),
        description=spec.get("description"))


def check_audience(value: Any) -> str:
    if value not in SIGN_IN_AUDIENCES:
        raise ScenarioError(f"sign_in_audience must be one of {SIGN_IN_AUDIENCES}")
    return str(value)


def add_app(state: State, tenant_id: str, spec: dict) -> App:
    unknown = set(spec) - APP_FIELDS
    if unknown:
        raise ScenarioError(f"unknown app fields: {sorted(unknown)}")
    tenant = state.require_tenant(tenant_id)
    app_id = str(spec.get("app_id") or new_id()).lower()
    with state.lock:
        if state.find_app(app_id):
            raise ScenarioError(f"app {app_id} exists")
        app = App(app_id=app_id, tenant_id=tenant.id, display_name=spec.get("display_name") or app_id)
        if spec.get("object_id"):
            app.object_id = str(spec["object_id"])
        app.enabled = bool(spec.get("enabled", True))
        app.public_client = bool(spec.get("public_client", False))
        app.redirect_uris = list(spec.get("redirect_uris") or [])
        app.assignment_required = bool(spec.get("assignment_required", False))
        app.assigned_users = {u.lower() for u in spec.get("assigned_users") or []}
        app.app_permissions = _perms(spec.get("application_permissions"))
        app.delegated_permissions = _perms(spec.get("delegated_permissions"))
        app.user_grants = {u.lower(): _perms(g) for u, g in (spec.get("user_grants") or {}).items()}
        app.secrets = [make_secret(state, s) for s in _expand(spec.get("secrets"))]
        certs = _expand(spec.get("certificates"))
        # many generated certificates share one key pair (a key per certificate would take seconds per hundred)
        shared = tls.new_rsa_key() if sum(1 for c in certs if not (c.get("cert_pem") or c.get("cert_file"))) > 1 \
            else None
        app.certificates = [make_certificate(state, app, c, key=shared) for c in certs]
        app.owners = {str(o).lower() for o in spec.get("owners") or []}
        app.sign_in_audience = check_audience(spec.get("sign_in_audience", "AzureADMyOrg"))
        app.federated_credentials = [make_federated_credential(f) for f in spec.get("federated_credentials") or []]
        tenant.apps[app_id] = app
    return app


SP_FIELDS = {"app_id", "home_tenant", "display_name", "object_id", "enabled", "assignment_required",
             "assigned_users", "application_permissions", "delegated_permissions", "user_grants"}
MI_FIELDS = {"app_id", "display_name", "object_id", "enabled", "application_permissions", "resource_id",
             "user_assigned", "certificate_start", "certificate_end"}


def add_service_principal(state: State, tenant_id: str, spec: dict, kind: str = SP_APPLICATION) -> ServicePrincipal:
    """`service_principals` (another tenant's multitenant app consented here) or `managed_identities`."""
    allowed = SP_FIELDS if kind == SP_APPLICATION else MI_FIELDS
    unknown = set(spec) - allowed
    if unknown:
        raise ScenarioError(f"unknown fields: {sorted(unknown)}")
    tenant = state.require_tenant(tenant_id)
    with state.lock:
        if kind == SP_APPLICATION:
            app_id = str(spec["app_id"]).lower()
            home = spec.get("home_tenant")
            if not home:
                raise ScenarioError("a foreign service principal needs home_tenant (the app's tenant id or domain)")
            home_t = state.tenant(str(home))
            home_id = home_t.id if home_t else str(home).lower()
            if home_id == tenant.id:
                raise ScenarioError("home_tenant is this tenant: list the app under apps")
        else:
            app_id = str(spec.get("app_id") or new_id()).lower()
            home_id = None
        if app_id in tenant.apps or app_id in tenant.service_principals:
            raise ScenarioError(f"{app_id} already has a service principal in {tenant.domain}")
        if kind == SP_MANAGED_IDENTITY and state.find_app(app_id):
            raise ScenarioError(f"app {app_id} exists: a managed identity has no application object")
        name = spec.get("display_name") or (app_id if kind == SP_APPLICATION else f"mi-{app_id[:8]}")
        sp = ServicePrincipal(app_id=app_id, tenant_id=tenant.id, display_name=str(name), kind=kind,
                              home_tenant_id=home_id)
        if spec.get("object_id"):
            sp.object_id = str(spec["object_id"])
        sp.enabled = bool(spec.get("enabled", True))
        sp.app_permissions = _perms(spec.get("application_permissions"))
        if kind == SP_APPLICATION:
            sp.assignment_required = bool(spec.get("assignment_required", False))
            sp.assigned_users = {u.lower() for u in spec.get("assigned_users") or []}
            sp.delegated_permissions = _perms(spec.get("delegated_permissions"))
            sp.user_grants = {u.lower(): _perms(g) for u, g in (spec.get("user_grants") or {}).items()}
        else:
            # Azure names a managed identity after its resource; alternativeNames carry isExplicit (true: a
            # user-assigned identity) and the resource id; Azure rotates its certificate about every 90 days
            user_assigned = bool(spec.get("user_assigned", False))
            rid = spec.get("resource_id") or (
                f"/subscriptions/{uuid.uuid5(uuid.NAMESPACE_URL, tenant.id)}/resourcegroups/rg-mail/providers/"
                + ("Microsoft.ManagedIdentity/userAssignedIdentities/" if user_assigned else "Microsoft.Web/sites/")
                + str(name))
            sp.alternative_names = [f"isExplicit={'True' if user_assigned else 'False'}", str(rid)]
            base = state.started_at
            sp.certificate_start = parse_when(spec.get("certificate_start", "-30d"), base)
            sp.certificate_end = parse_when(spec.get("certificate_end", "+60d"), base)
        tenant.service_principals[app_id] = sp
    return sp


def check_foreign_sp(state: State, sp: ServicePrincipal) -> None:
    """A foreign service principal whose home tenant is in the sandbox must name a multitenant app there."""
    if sp.kind != SP_APPLICATION or sp.home_tenant_id not in state.tenants:
        return  # an app registered outside the sandbox (an ISV's): discoverable, its credentials unknown here
    home = state.tenants[sp.home_tenant_id].apps.get(sp.app_id)
    if home is None:
        raise ScenarioError(f"service principal {sp.app_id}: no such app in its home tenant {sp.home_tenant_id}")
    if home.sign_in_audience != "AzureADMultipleOrgs":
        raise ScenarioError(f"service principal {sp.app_id}: its app is not multitenant "
                            "(sign_in_audience: AzureADMultipleOrgs)")
    if sp.display_name == sp.app_id:
        sp.display_name = home.display_name


# -- the discovery generator (`extra_apps`) ---------------------------------------------------------------------
EXTRA_KINDS = ("graph_app", "exchange_app", "delegated_admin", "delegated_user", "no_mail", "cert_only",
               "expired_secret", "federated", "managed_identity", "foreign_sp")
_GRAPH_ROLES = (["Mail.Read"], ["Mail.ReadWrite"], ["Mail.Send"], ["Mail.ReadWrite", "Mail.Send"],
                ["Mail.ReadBasic.All"], ["Mail.Read", "User.Read.All"])
_EXCHANGE_ROLES = (["IMAP.AccessAsApp"], ["POP.AccessAsApp"], ["SMTP.SendAsApp"], ["full_access_as_app"],
                   ["IMAP.AccessAsApp", "SMTP.SendAsApp"], ["POP.AccessAsApp", "SMTP.SendAsApp"])
_DELEGATED = ({EXCHANGE: ["IMAP.AccessAsUser.All", "SMTP.Send"]}, {EXCHANGE: ["POP.AccessAsUser.All", "SMTP.Send"]},
              {EXCHANGE: ["EWS.AccessAsUser.All"]}, {GRAPH: ["Mail.Read", "User.Read"]},
              {GRAPH: ["Mail.ReadWrite", "Mail.Send", "User.Read"]}, {GRAPH: ["Mail.Send.Shared", "User.Read"]},
              {EXCHANGE: ["IMAP.AccessAsUser.All"], GRAPH: ["User.Read"]})
_NO_MAIL = ({GRAPH: ["User.Read.All"]}, {GRAPH: ["Directory.Read.All"]}, {}, {GRAPH: ["Calendars.Read"]})
_NAMES = {"graph_app": "Mail Archiver", "exchange_app": "Legacy Protocol Connector", "delegated_admin": "Helpdesk Mail",
          "delegated_user": "Personal Mail Add-in", "no_mail": "Directory Sync", "cert_only": "Notification Sender",
          "expired_secret": "Old Scanner Integration", "federated": "CI Mail Pipeline",
          "managed_identity": "func-mail", "foreign_sp": "Partner CRM Mail Connector"}


def _rng_uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _rng_secret(rng: random.Random) -> str:
    alphabet = string.ascii_letters + string.digits + "_-.~"
    head = "".join(rng.choice(string.ascii_letters + string.digits) for _ in range(3))
    return head + "8Q~" + "".join(rng.choice(alphabet) for _ in range(34))


def generate_extra_apps(state: State, tenant: Tenant, spec: Any) -> dict[str, int]:
    """`extra_apps: {count: 200, seed: 1, home_tenant: <id|domain>?}`: `count` more principals for discovery, the
    kinds of EXTRA_KINDS in turn (principal i is kind i mod 10), details (permissions, dates, owners, ids, secret
    values) drawn from a generator seeded with `seed` and the tenant's domain: the same scenario gives the same
    directory. Foreign service principals belong to an app of `home_tenant` (a tenant of the sandbox: the app is
    registered there, multitenant, with one valid secret), default an ISV tenant outside the sandbox."""
    if isinstance(spec, int):
        spec = {"count": spec}
    unknown = set(spec) - {"count", "seed", "home_tenant"}
    if unknown:
        raise ScenarioError(f"unknown extra_apps fields: {sorted(unknown)}")
    count, seed = int(spec.get("count", 0)), spec.get("seed", 1)
    rng = random.Random(f"{seed}:{tenant.domain.lower()}")
    users = sorted(tenant.users)
    home_t = state.tenant(str(spec["home_tenant"])) if spec.get("home_tenant") else None
    if spec.get("home_tenant") and home_t is None:
        raise ScenarioError(f"home_tenant {spec['home_tenant']} is no tenant of the sandbox")
    isv_tenant = home_t.id if home_t else str(uuid.uuid5(uuid.NAMESPACE_DNS, f"isv-{seed}.example"))
    key = None
    counts: dict[str, int] = dict.fromkeys(EXTRA_KINDS, 0)
    for i in range(count):
        kind = EXTRA_KINDS[i % len(EXTRA_KINDS)]
        counts[kind] += 1
        app_id = _rng_uuid(rng)
        name = f"{_NAMES[kind]} {i + 1:03d}"
        valid_secret = {"display_name": "prod", "value": _rng_secret(rng), "key_id": _rng_uuid(rng),
                        "start": f"-{rng.randint(1, 600)}d", "end": f"+{rng.randint(5, 700)}d"}
        owners = [rng.choice(users)] if users and rng.random() < 0.6 else []
        app: dict[str, Any] = {"app_id": app_id, "display_name": name, "object_id": _rng_uuid(rng), "owners": owners}
        created = state.started_at - dt.timedelta(days=rng.randint(20, 1500), seconds=rng.randint(0, 86399))
        if kind == "managed_identity":
            perms = rng.choice(((GRAPH, rng.choice(_GRAPH_ROLES)), (EXCHANGE, rng.choice(_EXCHANGE_ROLES))))
            add_service_principal(state, tenant.id, {
                "app_id": app_id, "display_name": f"{_NAMES[kind]}-{i + 1:03d}", "object_id": _rng_uuid(rng),
                "user_assigned": rng.random() < 0.5, "application_permissions": {perms[0]: perms[1]}},
                SP_MANAGED_IDENTITY).created = created
            continue
        if kind == "foreign_sp":
            sp_spec: dict[str, Any] = {"app_id": app_id, "home_tenant": isv_tenant, "display_name": name,
                                       "object_id": _rng_uuid(rng)}
            if rng.random() < 0.5:
                sp_spec["application_permissions"] = {EXCHANGE: rng.choice(_EXCHANGE_ROLES)}
            else:
                sp_spec["delegated_permissions"] = rng.choice(_DELEGATED)
            if home_t is not None:
                add_app(state, home_t.id, {"app_id": app_id, "display_name": name,
                                           "sign_in_audience": "AzureADMultipleOrgs", "secrets": [valid_secret]})
            add_service_principal(state, tenant.id, sp_spec, SP_APPLICATION).created = created
            continue
        if kind == "graph_app":
            app.update(secrets=[valid_secret], application_permissions={GRAPH: rng.choice(_GRAPH_ROLES)})
        elif kind == "exchange_app":
            app.update(secrets=[valid_secret], application_permissions={EXCHANGE: rng.choice(_EXCHANGE_ROLES)})
        elif kind == "delegated_admin":
            app.update(secrets=[valid_secret], delegated_permissions=rng.choice(_DELEGATED),
                       redirect_uris=[f"https://app{i + 1:03d}.example/auth/callback"])
        elif kind == "delegated_user":
            app.update(secrets=[valid_secret], redirect_uris=["http://localhost"], public_client=rng.random() < 0.5)
            grant = rng.choice(_DELEGATED)
            if users:
                app["user_grants"] = {u: grant for u in rng.sample(users, min(len(users), rng.randint(1, 3)))}
            else:
                app["delegated_permissions"] = grant
        elif kind == "no_mail":
            app.update(secrets=[valid_secret], application_permissions=rng.choice(_NO_MAIL))
        elif kind == "cert_only":
            app["application_permissions"] = rng.choice(({GRAPH: ["Mail.Send"]}, {EXCHANGE: ["SMTP.SendAsApp"]},
                                                          {EXCHANGE: ["full_access_as_app"]}))
        elif kind == "expired_secret":
            valid_secret.update(start=f"-{rng.randint(400, 900)}d", end=f"-{rng.randint(1, 300)}d")
            app.update(secrets=[valid_secret], application_permissions=rng.choice(
                ({GRAPH: ["Mail.Read"]}, {EXCHANGE: ["IMAP.AccessAsApp"]}, {EXCHANGE: ["full_access_as_app"]})))
        elif kind == "federated":
            app.update(application_permissions={GRAPH: rng.choice(_GRAPH_ROLES)}, federated_credentials=[{
                "id": _rng_uuid(rng), "name": f"github-main-{i + 1:03d}",
                "issuer": "https://token.actions.githubusercontent.com",
                "subject": f"repo:example-org/mail-pipeline-{i + 1:03d}:ref:refs/heads/main",
                "description": "deploys from GitHub Actions"}])
        made = add_app(state, tenant.id, app)
        made.created, made.sp_object_id = created, _rng_uuid(rng)
        if kind == "cert_only":
            key = key or tls.new_rsa_key()  # one key pair for every generated certificate (speed)
            made.certificates.append(make_certificate(state, made, {
                "key_id": _rng_uuid(rng), "start": f"-{rng.randint(1, 300)}d", "end": f"+{rng.randint(1, 700)}d",
                "subject": name}, key=key))
    return counts
