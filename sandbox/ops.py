"""Control operations: the run-time changes an admin (or time) makes to the directory.

Each op is `name(state, **params) -> JSON-able`, registered in OPS; the HTTP control API and
`ControlClient` expose them one to one. KeyError -> 404, ValueError/TypeError -> 400.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

from . import grants, scenario
from .passwords import replicated_at
from .state import INCIDENT_EFFECTS, RESOURCES, SERVICES, Fault, Incident, State, new_id

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
def add_user(state: State, tenant: str, **spec) -> dict:
    u = scenario.add_user(state, tenant, spec)
    return {"upn": u.upn, "oid": u.oid}


@op
def patch_user(state: State, upn: str, **fields) -> dict:
    scenario.check_user_fields({"mfa": fields.get("mfa"), **fields})
    with state.lock:
        user = state.require_user(upn)
        for k, v in fields.items():
            setattr(user, k, v)
    return {"upn": user.upn}


@op
def delete_user(state: State, upn: str) -> dict:
    with state.lock:
        user = state.require_user(upn)
        del state.tenants[user.tenant_id].users[upn.lower()]
    return {"deleted": upn}


@op
def add_app(state: State, tenant: str, **spec) -> dict:
    app = scenario.add_app(state, tenant, spec)
    return {"app_id": app.app_id, "object_id": app.object_id,
            "secrets": [{"keyId": s.key_id, "value": s.value} for s in app.secrets],
            "certificates": [{"keyId": c.key_id, "thumbprint": c.thumbprint, "key_path": str(c.key_path),
                              "cert_path": str(c.cert_path)} for c in app.certificates]}


@op
def patch_app(state: State, app_id: str, **fields) -> dict:
    allowed = {"enabled", "public_client", "redirect_uris", "assignment_required", "display_name"}
    if set(fields) - allowed:
        raise ValueError(f"patch_app accepts {sorted(allowed)}")
    with state.lock:
        app = state.require_app(app_id)
        for k, v in fields.items():
            setattr(app, k, v)
    return {"app_id": app.app_id}


@op
def disable_app(state: State, app_id: str) -> dict:
    return patch_app(state, app_id, enabled=False)


@op
def enable_app(state: State, app_id: str) -> dict:
    return patch_app(state, app_id, enabled=True)


@op
def delete_app(state: State, app_id: str) -> dict:
    with state.lock:
        app = state.require_app(app_id)
        del state.tenants[app.tenant_id].apps[app.app_id]
    return {"deleted": app_id}


@op
def assign_user(state: State, app_id: str, upn: str) -> dict:
    with state.lock:
        state.require_app(app_id).assigned_users.add(upn.lower())
    return {"app_id": app_id, "upn": upn}


@op
def unassign_user(state: State, app_id: str, upn: str) -> dict:
    with state.lock:
        state.require_app(app_id).assigned_users.discard(upn.lower())
    return {"app_id": app_id, "upn": upn}


@op
def add_owner(state: State, app_id: str, owner: str) -> dict:
    """Owners > Add owners: a user (UPN) or a service principal (its app id)."""
    with state.lock:
        app = state.require_app(app_id)
        app.owners.add(owner.lower())
        return {"app_id": app_id, "owners": sorted(app.owners)}


@op
def remove_owner(state: State, app_id: str, owner: str) -> dict:
    with state.lock:
        app = state.require_app(app_id)
        app.owners.discard(owner.lower())
        return {"app_id": app_id, "owners": sorted(app.owners)}


@op
def set_user_consent(state: State, tenant: str, allowed: bool) -> dict:
    with state.lock:
        state.require_tenant(tenant).user_consent = bool(allowed)
    return {"tenant": tenant, "user_consent": bool(allowed)}


# -- credentials -----------------------------------------------------------------------------------
@op
def add_secret(state: State, app_id: str, **spec) -> dict:
    """Like Graph addPassword: the value is returned here, once."""
    with state.lock:
        app = state.require_app(app_id)
        spec.setdefault("start", state.now().isoformat())
        s = scenario.make_secret(state, spec)
        s.usable_from = replicated_at(state, app)
        app.secrets.append(s)
    return {"keyId": s.key_id, "value": s.value, "hint": s.hint, "displayName": s.display_name,
            "startDateTime": _iso(s.start), "endDateTime": _iso(s.end)}


def _secret(state: State, app_id: str, key_id: str):
    app = state.require_app(app_id)
    for s in app.secrets:
        if s.key_id == key_id:
            return app, s
    raise KeyError(f"no secret {key_id} on app {app_id}")


@op
def expire_secret(state: State, app_id: str, key_id: str) -> dict:
    with state.lock:
        _, s = _secret(state, app_id, key_id)
        s.end = state.now() - dt.timedelta(seconds=1)
    return {"keyId": key_id, "endDateTime": _iso(s.end)}


@op
def set_secret_end(state: State, app_id: str, key_id: str, end: str) -> dict:
    with state.lock:
        _, s = _secret(state, app_id, key_id)
        s.end = scenario.parse_when(end, state.now())
    return {"keyId": key_id, "endDateTime": _iso(s.end)}


@op
def delete_secret(state: State, app_id: str, key_id: str) -> dict:
    with state.lock:
        app, s = _secret(state, app_id, key_id)
        app.secrets.remove(s)
    return {"deleted": key_id}


@op
def add_certificate(state: State, app_id: str, **spec) -> dict:
    with state.lock:
        app = state.require_app(app_id)
        spec.setdefault("start", state.now().isoformat())
        c = scenario.make_certificate(state, app, spec)
        app.certificates.append(c)
    return {"keyId": c.key_id, "thumbprint": c.thumbprint, "key_path": str(c.key_path) if c.key_path else None,
            "cert_path": str(c.cert_path) if c.cert_path else None, "endDateTime": _iso(c.end)}


def _cert(state: State, app_id: str, key_id: str):
    app = state.require_app(app_id)
    for c in app.certificates:
        if c.key_id == key_id:
            return app, c
    raise KeyError(f"no certificate {key_id} on app {app_id}")


@op
def expire_certificate(state: State, app_id: str, key_id: str) -> dict:
    """The key credential's endDateTime passes (the certificate file itself is unchanged)."""
    with state.lock:
        _, c = _cert(state, app_id, key_id)
        c.end = state.now() - dt.timedelta(seconds=1)
    return {"keyId": key_id, "endDateTime": _iso(c.end)}


@op
def delete_certificate(state: State, app_id: str, key_id: str) -> dict:
    with state.lock:
        app, c = _cert(state, app_id, key_id)
        app.certificates.remove(c)
    return {"deleted": key_id}


# -- permissions and consent -----------------------------------------------------------------------
@op
def add_app_permission(state: State, app_id: str, resource: str, permission: str) -> dict:
    with state.lock:
        app = state.require_app(app_id)
        app.app_permissions.setdefault(_res(resource), set()).add(permission)
        return {"app_id": app_id, resource: sorted(app.app_permissions[resource])}


@op
def remove_app_permission(state: State, app_id: str, resource: str, permission: str) -> dict:
    with state.lock:
        app = state.require_app(app_id)
        app.app_permissions.setdefault(_res(resource), set()).discard(permission)
        return {"app_id": app_id, resource: sorted(app.app_permissions[resource])}


@op
def add_delegated_permission(state: State, app_id: str, resource: str, permission: str) -> dict:
    """Admin consent for a delegated scope (an oauth2PermissionGrant for all principals)."""
    with state.lock:
        app = state.require_app(app_id)
        app.delegated_permissions.setdefault(_res(resource), set()).add(permission)
        return {"app_id": app_id, resource: sorted(app.delegated_permissions[resource])}


@op
def remove_delegated_permission(state: State, app_id: str, resource: str, permission: str) -> dict:
    """Removes the admin grant and every user's own grant of that scope."""
    with state.lock:
        app = state.require_app(app_id)
        app.delegated_permissions.setdefault(_res(resource), set()).discard(permission)
        for grants_of_user in app.user_grants.values():
            grants_of_user.get(resource, set()).discard(permission)
        return {"app_id": app_id, resource: sorted(app.delegated_permissions[resource])}


# -- sessions and tokens ---------------------------------------------------------------------------
def _user_tokens(state: State, upn: str):
    state.require_user(upn)
    return [rt for rt in state.refresh_tokens.values() if rt.upn == upn.lower()]


@op
def revoke_user_sessions(state: State, upn: str) -> dict:
    """revokeSignInSessions: refresh tokens from sign-ins before now stop working (50173)."""
    with state.lock:
        user = state.require_user(upn)
        user.tokens_valid_from = state.now()
        return {"upn": upn, "tokens_valid_from": _iso(user.tokens_valid_from)}


@op
def reset_password(state: State, upn: str, password: str | None = None) -> dict:
    """An admin resets the password (or the user changes it): refresh tokens from sign-ins with the old password
    stop working (50173 on their next use)."""
    with state.lock:
        user = state.require_user(upn)
        if password is not None:
            user.password = str(password)
        user.password_changed_at = state.now()
        user.password_expired = False
        return {"upn": upn, "password_changed_at": _iso(user.password_changed_at)}


@op
def set_tenant(state: State, tenant: str, **fields) -> dict:
    """Tenant-wide settings: secret_replication_s, exchange_online, token_requests_per_app_minute,
    token_requests_per_tenant_minute, identical_requests_limit, user_consent."""
    allowed = {"secret_replication_s", "exchange_online", "token_requests_per_app_minute",
               "token_requests_per_tenant_minute", "identical_requests_limit", "user_consent"}
    if set(fields) - allowed:
        raise ValueError(f"set_tenant accepts {sorted(allowed)}")
    with state.lock:
        t = state.require_tenant(tenant)
        for k, v in fields.items():
            if k == "secret_replication_s":
                v = float(v or 0)
            elif k in ("exchange_online", "user_consent"):
                v = bool(v)
            elif v is not None:
                v = int(v)
            setattr(t, k, v)
        return {k: getattr(t, k) for k in sorted(allowed)}


@op
def open_incident(state: State, service: str, effect: str = "html", title: str = "",
                  retry_after: int = 30) -> dict:
    """A Microsoft incident on Entra ID (the token endpoint answers 503 HTML, 500 empty or AADSTS90033) or
    Exchange Online (Graph 503, EWS 503, SMTP 421), until closed."""
    if service not in SERVICES:
        raise ValueError(f"service must be one of {SERVICES}")
    if effect not in INCIDENT_EFFECTS:
        raise ValueError(f"effect must be one of {INCIDENT_EFFECTS}")
    inc = Incident(id=new_id(), service=service, effect=effect, title=title or f"{service} degraded",
                   retry_after=int(retry_after))
    with state.lock:
        state.incidents.append(inc)
    return {"id": inc.id}


def _drop(state: State, attr: str, id: str | None) -> int:  # noqa: A002 - the item's id
    """Remove the item with ``id`` from ``state.<attr>`` (every item when None); how many went."""
    with state.lock:
        items = getattr(state, attr)
        kept = [i for i in items if id is not None and i.id != id]
        setattr(state, attr, kept)
        return len(items) - len(kept)


@op
def close_incident(state: State, id: str | None = None) -> dict:  # noqa: A002 - the incident's id
    return {"closed": _drop(state, "incidents", id)}


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
        grants.approve_device(state, tenant, tenant.apps[dc.client_id], dc, user, bool(mfa))
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


from .mail import ops as _mail_ops  # noqa: E402,F401 - registers the Exchange ops
