"""Control operations: the run-time changes an admin (or time) makes to the directory.

Each op is `name(state, **params) -> JSON-able`, registered in OPS; the HTTP control API and
`ControlClient` expose them one to one. KeyError -> 404, ValueError/TypeError -> 400.
Ops that an admin performs in the portal take `actor` (a UPN, or the app id of a service principal acting through
Graph; default the tenant's `admin`) and write the directory audit Entra would (sandbox.audit).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

from . import audit, grants, logs, scenario
from .audit import prop
from .errors import AADError
from .state import RESOURCES, Fault, State, new_id

OPS: dict[str, Callable] = {}


def op(fn: Callable) -> Callable:
    OPS[fn.__name__] = fn
    return fn


def _res(resource: str) -> str:
    if resource not in RESOURCES:
        raise ValueError(f"resource must be one of {RESOURCES}")
    return resource


def _iso(v: dt.datetime | None) -> str | None:
    return v.isoformat() if v else None


# -- directory objects -----------------------------------------------------------------------------
@op
def add_tenant(state: State, **spec) -> dict:
    t = scenario.add_tenant(state, spec)
    return {"id": t.id, "domain": t.domain}


@op
def add_user(state: State, tenant: str, actor: str | None = None, **spec) -> dict:
    u = scenario.add_user(state, tenant, spec)
    audit.user_changed(state, state.tenants[u.tenant_id], u.upn, "Add user", [], actor, "Add")
    return {"upn": u.upn, "oid": u.oid}


@op
def patch_user(state: State, upn: str, actor: str | None = None, **fields) -> dict:
    scenario.check_user_fields({"mfa": fields.get("mfa"), **fields})
    with state.lock:
        user = state.require_user(upn)
        was_enabled = user.enabled
        for k, v in fields.items():
            setattr(user, k, v)
        tenant = state.tenants[user.tenant_id]
        if "enabled" in fields and bool(fields["enabled"]) != was_enabled:
            props = [prop("AccountEnabled", [was_enabled], [user.enabled]), audit.included("AccountEnabled")]
            audit.user_changed(state, tenant, user.upn, "Enable account" if user.enabled else "Disable account",
                               props, actor)
        rest = sorted(set(fields) - {"enabled"})
        if rest:
            audit.user_changed(state, tenant, user.upn, "Update user", [audit.included(*rest)], actor)
    return {"upn": user.upn}


@op
def delete_user(state: State, upn: str, actor: str | None = None) -> dict:
    with state.lock:
        user = state.require_user(upn)
        tenant = state.tenants[user.tenant_id]
        audit.user_changed(state, tenant, user.upn, "Delete user", [], actor, "Delete")
        del tenant.users[upn.lower()]
    return {"deleted": upn}


@op
def add_app(state: State, tenant: str, actor: str | None = None, **spec) -> dict:
    app = scenario.add_app(state, tenant, spec)
    corr = new_id()
    t = state.tenants[app.tenant_id]
    audit.record(state, t, "Add application", "ApplicationManagement", "Add", [audit.app_target(app)], actor, corr)
    audit.record(state, t, "Add service principal", "ApplicationManagement", "Add", [audit.sp_target(app)], actor,
                 corr)
    return {"app_id": app.app_id, "object_id": app.object_id,
            "secrets": [{"keyId": s.key_id, "value": s.value} for s in app.secrets],
            "certificates": [{"keyId": c.key_id, "thumbprint": c.thumbprint, "key_path": str(c.key_path),
                              "cert_path": str(c.cert_path)} for c in app.certificates]}


# the audited name of each patchable field: (on the service principal?, modified property)
APP_FIELDS = {"enabled": (True, "AccountEnabled"), "assignment_required": (True, "AppRoleAssignmentRequired"),
              "public_client": (False, "PublicClient"), "redirect_uris": (False, "AppAddress"),
              "display_name": (False, "DisplayName")}


@op
def patch_app(state: State, app_id: str, actor: str | None = None, **fields) -> dict:
    """Enterprise application (service principal): enabled ("Enabled for users to sign in?"), assignment_required;
    app registration: public_client, redirect_uris, display_name."""
    if set(fields) - set(APP_FIELDS):
        raise ValueError(f"patch_app accepts {sorted(APP_FIELDS)}")
    with state.lock:
        app = state.require_app(app_id)
        for k, v in fields.items():
            old = getattr(app, k)
            setattr(app, k, v)
            on_sp, name = APP_FIELDS[k]
            if old != v:
                (audit.service_principal_updated if on_sp else audit.application_updated)(state, app, name, old, v,
                                                                                         actor)
    return {"app_id": app.app_id}


@op
def disable_app(state: State, app_id: str, actor: str | None = None) -> dict:
    return patch_app(state, app_id, actor=actor, enabled=False)


@op
def enable_app(state: State, app_id: str, actor: str | None = None) -> dict:
    return patch_app(state, app_id, actor=actor, enabled=True)


@op
def delete_app(state: State, app_id: str, actor: str | None = None) -> dict:
    with state.lock:
        app = state.require_app(app_id)
        t, corr = state.tenants[app.tenant_id], new_id()
        audit.record(state, t, "Delete application", "ApplicationManagement", "Delete", [audit.app_target(app)],
                     actor, corr)
        audit.record(state, t, "Remove service principal", "ApplicationManagement", "Delete",
                     [audit.sp_target(app)], actor, corr)
        del t.apps[app.app_id]
    return {"deleted": app_id}


def _assignment(state: State, app, upn: str, added: bool, actor: str | None) -> None:
    t = state.tenants[app.tenant_id]
    props = [prop("User.UPN", None, upn) if added else prop("User.UPN", upn, None),
             prop("TargetId.ServicePrincipalNames", None, app.app_id)]
    activity = "Add app role assignment grant to user" if added else "Remove app role assignment from user"
    audit.record(state, t, activity, "UserManagement", "Assign" if added else "Unassign",
                 [audit.sp_target(app, props), audit.target(audit.user_id(t, upn), None, "User", upn=upn)], actor)


@op
def assign_user(state: State, app_id: str, upn: str, actor: str | None = None) -> dict:
    with state.lock:
        app = state.require_app(app_id)
        app.assigned_users.add(upn.lower())
        _assignment(state, app, upn, True, actor)
    return {"app_id": app_id, "upn": upn}


@op
def unassign_user(state: State, app_id: str, upn: str, actor: str | None = None) -> dict:
    with state.lock:
        app = state.require_app(app_id)
        app.assigned_users.discard(upn.lower())
        _assignment(state, app, upn, False, actor)
    return {"app_id": app_id, "upn": upn}


@op
def add_owner(state: State, app_id: str, owner: str, actor: str | None = None) -> dict:
    """Owners > Add owners: a user (UPN) or a service principal (its app id)."""
    with state.lock:
        app = state.require_app(app_id)
        app.owners.add(owner.lower())
        audit.owner_changed(state, app, owner, True, actor)
        return {"app_id": app_id, "owners": sorted(app.owners)}


@op
def remove_owner(state: State, app_id: str, owner: str, actor: str | None = None) -> dict:
    with state.lock:
        app = state.require_app(app_id)
        app.owners.discard(owner.lower())
        audit.owner_changed(state, app, owner, False, actor)
        return {"app_id": app_id, "owners": sorted(app.owners)}


@op
def set_user_consent(state: State, tenant: str, allowed: bool) -> dict:
    with state.lock:
        state.require_tenant(tenant).user_consent = bool(allowed)
    return {"tenant": tenant, "user_consent": bool(allowed)}


# -- sessions and tokens ---------------------------------------------------------------------------
def _user_tokens(state: State, upn: str):
    state.require_user(upn)
    return [rt for rt in state.refresh_tokens.values() if rt.upn == upn.lower()]


@op
def revoke_user_sessions(state: State, upn: str, actor: str | None = None) -> dict:
    """revokeSignInSessions: refresh tokens from sign-ins before now stop working (50173)."""
    with state.lock:
        user = state.require_user(upn)
        old = user.tokens_valid_from
        user.tokens_valid_from = state.now()
        audit.user_changed(state, state.tenants[user.tenant_id], user.upn, "Update StsRefreshTokenValidFrom Timestamp",
                           [prop("StsRefreshTokensValidFrom", _iso(old), _iso(user.tokens_valid_from))], actor)
        return {"upn": upn, "tokens_valid_from": _iso(user.tokens_valid_from)}


@op
def reset_password(state: State, upn: str, password: str | None = None, actor: str | None = None) -> dict:
    """An admin resets the password (or the user changes it): refresh tokens from sign-ins with the old password
    stop working (50173 on their next use)."""
    with state.lock:
        user = state.require_user(upn)
        if password is not None:
            user.password = str(password)
        user.password_changed_at = state.now()
        user.password_expired = False
        audit.user_changed(state, state.tenants[user.tenant_id], user.upn, "Reset password", [], actor)
        return {"upn": upn, "password_changed_at": _iso(user.password_changed_at)}


@op
def set_tenant(state: State, tenant: str, **fields) -> dict:
    """Tenant-wide settings: secret_replication_s, exchange_online, token_requests_per_app_minute,
    token_requests_per_tenant_minute, identical_requests_limit, user_consent, entra_licence, the log delays, admin."""
    allowed = {"secret_replication_s", "exchange_online", "token_requests_per_app_minute",
               "token_requests_per_tenant_minute", "identical_requests_limit", "user_consent", "entra_licence",
               "signin_log_delay_s", "noninteractive_log_delay_s", "audit_log_delay_s", "admin_upn"}
    if set(fields) - allowed:
        raise ValueError(f"set_tenant accepts {sorted(allowed)}")
    with state.lock:
        t = state.require_tenant(tenant)
        for k, v in fields.items():
            if k == "secret_replication_s":
                v = float(v or 0)
            elif k.endswith("_delay_s"):
                v = scenario.parse_duration(v)
            elif k == "entra_licence":
                v = scenario.check_licence(v)
            elif k == "admin_upn":
                v = str(v)
            elif k in ("exchange_online", "user_consent"):
                v = bool(v)
            elif v is not None:
                v = int(v)
            setattr(t, k, v)
        return {k: getattr(t, k) for k in sorted(allowed)}


def _drop(state: State, attr: str, id: str | None) -> int:  # noqa: A002 - the item's id
    """Remove the item with ``id`` from ``state.<attr>`` (every item when None); how many went."""
    with state.lock:
        items = getattr(state, attr)
        kept = [i for i in items if id is not None and i.id != id]
        setattr(state, attr, kept)
        return len(items) - len(kept)


@op
def expire_refresh_tokens(state: State, upn: str) -> dict:
    with state.lock:
        rts = _user_tokens(state, upn)
        for rt in rts:
            rt.expires_at = state.now() - dt.timedelta(seconds=1)
        return {"upn": upn, "expired": len(rts)}


@op
def age_refresh_tokens(state: State, upn: str, days: float) -> dict:
    """As if `days` passed without use: the user's token and sign-in times, and the time of an
    earlier session revocation, move back (700082 at >= 90 days; sign-in frequency sees the age)."""
    delta = dt.timedelta(days=float(days))
    with state.lock:
        rts = _user_tokens(state, upn)
        for rt in rts:
            rt.issued_at -= delta
            rt.auth_time -= delta
        user = state.require_user(upn)
        if user.tokens_valid_from is not None:  # a revocation before them happened as long ago
            user.tokens_valid_from -= delta
        return {"upn": upn, "aged": len(rts)}


@op
def approve_device_code(state: State, user_code: str, upn: str, mfa: bool = False) -> dict:
    with state.lock:
        dc = state.find_device_code(user_code)
        if dc is None:
            raise KeyError(f"no device code {user_code}")
        tenant = state.require_tenant(dc.tenant_id)
        user = tenant.users.get(upn.lower())
        if user is None:
            raise KeyError(f"no user {upn} in tenant {tenant.id}")
        app = state.client_app(tenant, dc.client_id)  # a multitenant app of another tenant too
        if app is None:
            raise KeyError(f"no app {dc.client_id} in tenant {tenant.id}")
        grants.approve_device(state, tenant, app, dc, user, bool(mfa))
        # the user's sign-in on /devicelogin, as the page would log it
        ctx = logs.SignInContext(correlation_id=new_id(), event_type=logs.INTERACTIVE, tenant=tenant, app=app,
                                 upn=user.upn, client_app=logs.BROWSER, protocol="deviceCode", mfa=bool(mfa))
        try:
            ctx.resource = grants.parse_scopes(dc.scopes, tenant).resource
        except AADError:
            pass
        logs.record(state, ctx)
    return {"user_code": dc.user_code, "approved": upn}


@op
def expire_device_code(state: State, user_code: str) -> dict:
    with state.lock:
        dc = state.find_device_code(user_code)
        if dc is None:
            raise KeyError(f"no device code {user_code}")
        dc.expires_at = state.now() - dt.timedelta(seconds=1)
    return {"user_code": dc.user_code}


@op
def set_token_lifetime(state: State, seconds: int) -> dict:
    """Access/ID token lifetime for tokens issued from now on (negative: issued already expired)."""
    with state.lock:
        state.token_lifetime_s = int(seconds)
    return {"token_lifetime_s": state.token_lifetime_s}


# -- faults and stats ------------------------------------------------------------------------------
@op
def add_fault(state: State, path_prefix: str, status: int | None = 429, count: int | None = 1,
              retry_after: int = 5, latency_ms: int = 0, method: str | None = None) -> dict:
    if path_prefix.startswith("/_sandbox"):
        raise ValueError("the control API cannot be faulted")
    f = Fault(id=new_id(), path_prefix=path_prefix, status=status, count=count, retry_after=int(retry_after),
              latency_ms=int(latency_ms), method=method)
    with state.lock:
        state.faults.append(f)
    return {"id": f.id}


@op
def clear_faults(state: State, id: str | None = None) -> dict:  # noqa: A002 - the fault's id
    return {"cleared": _drop(state, "faults", id)}


@op
def reset_stats(state: State) -> dict:
    state.reset_stats()
    return {"reset": True}


from . import actor_ops as _actor_ops  # noqa: E402,F401 - registers the consuming systems' ops
from . import app_ops as _app_ops  # noqa: E402,F401 - registers the credential and permission ops
from . import log_ops as _log_ops  # noqa: E402,F401 - registers the log ops
from .mail import ops as _mail_ops  # noqa: E402,F401 - registers the Exchange ops
