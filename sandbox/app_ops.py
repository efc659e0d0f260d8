"""Control ops that change an app's credentials and permissions (registered in `sandbox.ops.OPS`); each writes
the directory audit Entra writes, naming `actor` (default the tenant's admin)."""

from __future__ import annotations

import datetime as dt

from . import audit, scenario
from .ops import _iso, _res, op
from .passwords import replicated_at
from .state import State


# -- credentials -----------------------------------------------------------------------------------
def _creds(app) -> list:
    return list(app.secrets) + list(app.certificates)


@op
def add_secret(state: State, app_id: str, actor: str | None = None, **spec) -> dict:
    """Like Graph addPassword: the value is returned here, once."""
    with state.lock:
        app = state.require_app(app_id)
        spec.setdefault("start", state.now().isoformat())
        s = scenario.make_secret(state, spec)
        s.usable_from = replicated_at(state, app)
        before = _creds(app)
        app.secrets.append(s)
        audit.credentials_changed(state, app, before, actor)
    return {"keyId": s.key_id, "value": s.value, "hint": s.hint, "displayName": s.display_name,
            "startDateTime": _iso(s.start), "endDateTime": _iso(s.end)}


def _credential(state: State, app_id: str, key_id: str, kind: str):
    """(app, the secret or certificate with ``key_id``); ``kind``: "secrets" or "certificates"."""
    app = state.require_app(app_id)
    for c in getattr(app, kind):
        if c.key_id == key_id:
            return app, c
    raise KeyError(f"no {kind[:-1]} {key_id} on app {app_id}")


def _expire(state: State, app_id: str, key_id: str, kind: str) -> dict:
    with state.lock:
        _, c = _credential(state, app_id, key_id, kind)
        c.end = state.now() - dt.timedelta(seconds=1)
    return {"keyId": key_id, "endDateTime": _iso(c.end)}


def _delete(state: State, app_id: str, key_id: str, kind: str, actor: str | None) -> dict:
    with state.lock:
        app, c = _credential(state, app_id, key_id, kind)
        before = _creds(app)
        getattr(app, kind).remove(c)
        audit.credentials_changed(state, app, before, actor)
    return {"deleted": key_id}


@op
def expire_secret(state: State, app_id: str, key_id: str) -> dict:
    return _expire(state, app_id, key_id, "secrets")


@op
def set_secret_end(state: State, app_id: str, key_id: str, end: str) -> dict:
    with state.lock:
        _, s = _credential(state, app_id, key_id, "secrets")
        s.end = scenario.parse_when(end, state.now())
    return {"keyId": key_id, "endDateTime": _iso(s.end)}


@op
def delete_secret(state: State, app_id: str, key_id: str, actor: str | None = None) -> dict:
    return _delete(state, app_id, key_id, "secrets", actor)


@op
def add_certificate(state: State, app_id: str, actor: str | None = None, **spec) -> dict:
    with state.lock:
        app = state.require_app(app_id)
        spec.setdefault("start", state.now().isoformat())
        c = scenario.make_certificate(state, app, spec)
        before = _creds(app)
        app.certificates.append(c)
        audit.credentials_changed(state, app, before, actor)
    return {"keyId": c.key_id, "thumbprint": c.thumbprint, "key_path": str(c.key_path) if c.key_path else None,
            "cert_path": str(c.cert_path) if c.cert_path else None, "endDateTime": _iso(c.end)}


@op
def expire_certificate(state: State, app_id: str, key_id: str) -> dict:
    """The key credential's endDateTime passes (the certificate file itself is unchanged)."""
    return _expire(state, app_id, key_id, "certificates")


@op
def delete_certificate(state: State, app_id: str, key_id: str, actor: str | None = None) -> dict:
    return _delete(state, app_id, key_id, "certificates", actor)


# -- permissions and consent -----------------------------------------------------------------------
@op
def add_app_permission(state: State, app_id: str, resource: str, permission: str, actor: str | None = None) -> dict:
    """Admin consent for an application permission (app role), as "Grant admin consent" does."""
    with state.lock:
        app = state.require_app(app_id)
        held = app.app_permissions.setdefault(_res(resource), set())
        if permission not in held:
            audit.consent(state, app, resource, [permission], actor, admin=True, app_only=True)
        held.add(permission)
        return {"app_id": app_id, resource: sorted(app.app_permissions[resource])}


@op
def remove_app_permission(state: State, app_id: str, resource: str, permission: str,
                          actor: str | None = None) -> dict:
    with state.lock:
        app = state.require_app(app_id)
        held = app.app_permissions.setdefault(_res(resource), set())
        if permission in held:
            audit.grant_removed(state, app, resource, permission, actor, app_only=True)
        held.discard(permission)
        return {"app_id": app_id, resource: sorted(app.app_permissions[resource])}


@op
def add_delegated_permission(state: State, app_id: str, resource: str, permission: str,
                             actor: str | None = None) -> dict:
    """Admin consent for a delegated scope (an oauth2PermissionGrant for all principals)."""
    with state.lock:
        app = state.require_app(app_id)
        held = app.delegated_permissions.setdefault(_res(resource), set())
        if permission not in held:
            audit.consent(state, app, resource, [permission], actor, admin=True, app_only=False)
        held.add(permission)
        return {"app_id": app_id, resource: sorted(app.delegated_permissions[resource])}


@op
def remove_delegated_permission(state: State, app_id: str, resource: str, permission: str,
                                actor: str | None = None) -> dict:
    """Removes the admin grant and every user's own grant of that scope."""
    with state.lock:
        app = state.require_app(app_id)
        held = app.delegated_permissions.setdefault(_res(resource), set())
        had = permission in held or any(permission in g.get(resource, set()) for g in app.user_grants.values())
        if had:
            audit.grant_removed(state, app, resource, permission, actor, app_only=False)
        held.discard(permission)
        for grants_of_user in app.user_grants.values():
            grants_of_user.get(resource, set()).discard(permission)
        return {"app_id": app_id, resource: sorted(app.delegated_permissions[resource])}
