"""Scenario loading: YAML (or a dict) -> State. The same parsers serve the control API's add_* ops."""

from __future__ import annotations

import datetime as dt
import re
import secrets as pysecrets
import string
from collections import defaultdict
from pathlib import Path
from typing import Any

import yaml

from . import tls
from .state import LICENCES, MFA_STATES, RESOURCES, App, Certificate, Secret, State, Tenant, User, new_id

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
    "audit_log_delay_s", "admin", "actors",
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


def make_certificate(state: State, app: App, spec: dict) -> Certificate:
    """`generate: true` makes a key pair and self-signed cert; else `cert_pem` or `cert_file` is uploaded."""
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
        key = tls.new_rsa_key()
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
    "user_grants", "object_id", "owners",
}


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
        app.secrets = [make_secret(state, s) for s in spec.get("secrets") or []]
        app.certificates = [make_certificate(state, app, c) for c in spec.get("certificates") or []]
        app.owners = {str(o).lower() for o in spec.get("owners") or []}
        tenant.apps[app_id] = app
    return app
