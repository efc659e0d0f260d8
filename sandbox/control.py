"""The control API under /_sandbox/ (JSON) and `ControlClient`, its Python client.

POST /_sandbox/ops/<name> with a JSON object of parameters runs one op of `sandbox.ops.OPS`.
GET /_sandbox/state (never secret values or tokens), GET /_sandbox/stats, POST /_sandbox/stats/reset.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import requests
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from . import directory as _directory  # noqa: F401 - registers add_page_fault in OPS
from .mail.model import exchange_json
from .ops import OPS
from .state import State


def _iso(v) -> str | None:
    return v.isoformat() if v else None


def snapshot(state: State) -> dict:
    now = state.now()
    with state.lock:
        tenants = []
        for t in state.tenants.values():
            users = [{
                "upn": u.upn, "oid": u.oid, "enabled": u.enabled, "locked": u.locked,
                "password_expired": u.password_expired, "mfa": u.mfa, "ca_blocked": u.ca_blocked,
                "signin_frequency_hours": u.signin_frequency_hours,
                "tokens_valid_from": _iso(u.tokens_valid_from),
                "refresh_tokens": sum(1 for rt in state.refresh_tokens.values() if rt.upn == u.upn.lower()),
            } for u in t.users.values()]
            apps = [{
                "app_id": a.app_id, "object_id": a.object_id, "display_name": a.display_name,
                "enabled": a.enabled, "public_client": a.public_client, "redirect_uris": a.redirect_uris,
                "assignment_required": a.assignment_required, "assigned_users": sorted(a.assigned_users),
                "secrets": [{"keyId": s.key_id, "displayName": s.display_name, "hint": s.hint,
                             "startDateTime": _iso(s.start), "endDateTime": _iso(s.end),
                             "expired": s.end <= now} for s in a.secrets],
                "certificates": [{"keyId": c.key_id, "thumbprint": c.thumbprint, "displayName": c.display_name,
                                  "startDateTime": _iso(c.start), "endDateTime": _iso(c.end),
                                  "expired": c.end <= now, "key_path": str(c.key_path) if c.key_path else None,
                                  "cert_path": str(c.cert_path) if c.cert_path else None}
                                 for c in a.certificates],
                "application_permissions": {r: sorted(p) for r, p in a.app_permissions.items() if p},
                "delegated_permissions": {r: sorted(p) for r, p in a.delegated_permissions.items() if p},
                "user_grants": {u: {r: sorted(p) for r, p in g.items() if p} for u, g in a.user_grants.items()},
                "owners": sorted(a.owners),
                "sign_in_audience": a.sign_in_audience,
                "federated_credentials": [{"id": f.id, "name": f.name, "issuer": f.issuer, "subject": f.subject}
                                          for f in a.federated_credentials],
            } for a in t.apps.values()]
            sps = [{"app_id": sp.app_id, "object_id": sp.object_id, "display_name": sp.display_name,
                    "type": sp.kind, "home_tenant": sp.home_tenant_id, "enabled": sp.enabled,
                    "application_permissions": {r: sorted(p) for r, p in sp.app_permissions.items() if p},
                    "delegated_permissions": {r: sorted(p) for r, p in sp.delegated_permissions.items() if p},
                    "user_grants": {u: {r: sorted(p) for r, p in g.items() if p} for u, g in sp.user_grants.items()}}
                   for sp in t.service_principals.values()]
            ex = state.exchange.get(t.id)
            tenants.append({"id": t.id, "domain": t.domain, "user_consent": t.user_consent,
                            "entra_licence": t.entra_licence, "admin": t.admin_upn,
                            "signin_log_delay_s": t.signin_log_delay_s,
                            "noninteractive_log_delay_s": t.noninteractive_log_delay_s,
                            "audit_log_delay_s": t.audit_log_delay_s,
                            "users": users, "apps": apps, "service_principals": sps,
                            "exchange": exchange_json(ex) if ex else None})
        return {
            "now": now.isoformat(), "started_at": state.started_at.isoformat(),
            "token_lifetime_s": state.token_lifetime_s, "tenants": tenants,
            "device_codes": [{"user_code": d.user_code, "client_id": d.client_id, "approved": bool(d.approved_upn),
                              "expired": d.expires_at <= now, "redeemed": d.redeemed}
                             for d in state.device_codes.values()],
            "faults": [vars(f) for f in state.faults],
            "incidents": [{"id": i.id, "issue_id": i.issue_id, "service": i.service, "effect": i.effect,
                           "status": i.status, "title": i.title, "started": _iso(i.started), "ended": _iso(i.ended)}
                          for i in state.incidents],
            "actors": [a.status() for a in state.actors.values()],
            "logs": {"signins": len(state.signins), "audits": len(state.audits),
                     "pending": sum(1 for e in list(state.signins) + list(state.audits) if e.visible_at > now)},
            "protocol_faults": {p: dict(v) for p, v in state.protocol_faults.items()},
        }


def routes(state: State) -> list[Route]:
    async def run_op(request: Request) -> Response:
        name = request.path_params["name"]
        fn = OPS.get(name)
        if fn is None:
            return JSONResponse({"error": f"unknown op {name!r}", "ops": sorted(OPS)}, status_code=404)
        raw = await request.body()
        try:
            params = json.loads(raw) if raw else {}
            if not isinstance(params, dict):
                raise ValueError("the body must be a JSON object")
            # in a worker thread: an op may take time (certificates, actors' rounds that call this very server)
            return JSONResponse(await run_in_threadpool(fn, state, **params))
        except KeyError as exc:
            return JSONResponse({"error": str(exc.args[0] if exc.args else exc)}, status_code=404)
        except (ValueError, TypeError) as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)

    async def get_state(request: Request) -> Response:
        return JSONResponse(snapshot(state))

    async def get_stats(request: Request) -> Response:
        return JSONResponse(state.stats_snapshot())

    async def reset(request: Request) -> Response:
        state.reset_stats()
        return JSONResponse({"reset": True})

    return [
        Route("/_sandbox/ops/{name}", run_op, methods=["POST"]),
        Route("/_sandbox/state", get_state),
        Route("/_sandbox/stats", get_stats),
        Route("/_sandbox/stats/reset", reset, methods=["POST"]),
    ]


class ControlError(RuntimeError):
    def __init__(self, status: int, message: str):
        super().__init__(f"HTTP {status}: {message}")
        self.status = status


class ControlClient:
    """One method per control op; every method returns the op's JSON answer."""

    def __init__(self, base_url: str, ca_path: str | Path, timeout: float = 10.0):
        self.base_url = base_url.rstrip("/")
        self.session = requests.Session()
        self.session.verify = str(ca_path)
        self.session.trust_env = False
        self.timeout = timeout

    def call(self, op: str, /, **params: Any) -> Any:
        r = self.session.post(f"{self.base_url}/_sandbox/ops/{op}", json=params, timeout=self.timeout)
        if r.status_code != 200:
            raise ControlError(r.status_code, r.json().get("error", r.text))
        return r.json()

    def state(self) -> dict:
        return self.session.get(f"{self.base_url}/_sandbox/state", timeout=self.timeout).json()

    def stats(self) -> dict:
        return self.session.get(f"{self.base_url}/_sandbox/stats", timeout=self.timeout).json()

    def reset_stats(self) -> dict:
        return self.session.post(f"{self.base_url}/_sandbox/stats/reset", timeout=self.timeout).json()

    def _with(self, op: str, actor: str | None, /, **params):
        """Ops an admin performs take an optional `actor` (who the directory audit names)."""
        if actor is not None:
            params["actor"] = actor
        return self.call(op, **params)

    # directory
    def add_tenant(self, **spec): return self.call("add_tenant", **spec)
    def add_user(self, tenant: str, **spec): return self.call("add_user", tenant=tenant, **spec)
    def patch_user(self, upn: str, **fields): return self.call("patch_user", upn=upn, **fields)
    def delete_user(self, upn: str, actor: str | None = None): return self._with("delete_user", actor, upn=upn)
    def add_app(self, tenant: str, **spec): return self.call("add_app", tenant=tenant, **spec)
    def patch_app(self, app_id: str, **fields): return self.call("patch_app", app_id=app_id, **fields)
    def disable_app(self, app_id: str, actor: str | None = None): return self._with("disable_app", actor, app_id=app_id)
    def enable_app(self, app_id: str, actor: str | None = None): return self._with("enable_app", actor, app_id=app_id)
    def delete_app(self, app_id: str, actor: str | None = None): return self._with("delete_app", actor, app_id=app_id)
    def assign_user(self, app_id: str, upn: str, actor: str | None = None):
        return self._with("assign_user", actor, app_id=app_id, upn=upn)
    def unassign_user(self, app_id: str, upn: str, actor: str | None = None):
        return self._with("unassign_user", actor, app_id=app_id, upn=upn)
    def set_user_consent(self, tenant: str, allowed: bool):
        return self.call("set_user_consent", tenant=tenant, allowed=allowed)
    def add_owner(self, app_id: str, owner: str, actor: str | None = None):
        return self._with("add_owner", actor, app_id=app_id, owner=owner)
    def remove_owner(self, app_id: str, owner: str, actor: str | None = None):
        return self._with("remove_owner", actor, app_id=app_id, owner=owner)

    # credentials
    def add_secret(self, app_id: str, **spec): return self.call("add_secret", app_id=app_id, **spec)
    def expire_secret(self, app_id: str, key_id: str): return self.call("expire_secret", app_id=app_id, key_id=key_id)
    def set_secret_end(self, app_id: str, key_id: str, end: str):
        return self.call("set_secret_end", app_id=app_id, key_id=key_id, end=end)
    def delete_secret(self, app_id: str, key_id: str, actor: str | None = None):
        return self._with("delete_secret", actor, app_id=app_id, key_id=key_id)
    def add_certificate(self, app_id: str, **spec): return self.call("add_certificate", app_id=app_id, **spec)
    def expire_certificate(self, app_id: str, key_id: str):
        return self.call("expire_certificate", app_id=app_id, key_id=key_id)
    def delete_certificate(self, app_id: str, key_id: str, actor: str | None = None):
        return self._with("delete_certificate", actor, app_id=app_id, key_id=key_id)

    # permissions (admin consent)
    def add_app_permission(self, app_id: str, resource: str, permission: str, actor: str | None = None):
        return self._with("add_app_permission", actor, app_id=app_id, resource=resource, permission=permission)
    def remove_app_permission(self, app_id: str, resource: str, permission: str, actor: str | None = None):
        return self._with("remove_app_permission", actor, app_id=app_id, resource=resource, permission=permission)
    def add_delegated_permission(self, app_id: str, resource: str, permission: str, actor: str | None = None):
        return self._with("add_delegated_permission", actor, app_id=app_id, resource=resource, permission=permission)
    def remove_delegated_permission(self, app_id: str, resource: str, permission: str, actor: str | None = None):
        return self._with("remove_delegated_permission", actor, app_id=app_id, resource=resource,
                          permission=permission)

    # sessions
    def revoke_user_sessions(self, upn: str, actor: str | None = None):
        return self._with("revoke_user_sessions", actor, upn=upn)
    def expire_refresh_tokens(self, upn: str): return self.call("expire_refresh_tokens", upn=upn)
    def age_refresh_tokens(self, upn: str, days: float): return self.call("age_refresh_tokens", upn=upn, days=days)
    def approve_device_code(self, user_code: str, upn: str, mfa: bool = False):
        return self.call("approve_device_code", user_code=user_code, upn=upn, mfa=mfa)
    def expire_device_code(self, user_code: str): return self.call("expire_device_code", user_code=user_code)
    def set_token_lifetime(self, seconds: int): return self.call("set_token_lifetime", seconds=seconds)
    def reset_password(self, upn: str, password: str | None = None, actor: str | None = None):
        return self._with("reset_password", actor, upn=upn, password=password)
    def set_tenant(self, tenant: str, **fields): return self.call("set_tenant", tenant=tenant, **fields)

    # Microsoft's own incidents (service health lists them)
    def open_incident(self, service: str, effect: str = "html", title: str = "", retry_after: int = 30,
                      **issue) -> str:
        """issue: issue_id, status, classification, impact_description, feature, feature_group."""
        return self.call("open_incident", service=service, effect=effect, title=title, retry_after=retry_after,
                         **issue)["id"]
    def set_incident_status(self, id: str, status: str, post: str | None = None):  # noqa: A002
        return self.call("set_incident_status", id=id, status=status, post=post)
    def close_incident(self, id: str | None = None): return self.call("close_incident", id=id)  # noqa: A002

    # the logs (sign-ins, directory audits)
    def ingest_logs(self, tenant: str | None = None): return self.call("ingest_logs", tenant=tenant)
    def record_signin(self, tenant: str, app_id: str, **event):
        """event: upn, error_code, event_type, resource, correlation_id, at, ip_address, key_id."""
        return self.call("record_signin", tenant=tenant, app_id=app_id, **event)

    # the consuming systems' actors
    def add_actor(self, tenant: str, **spec): return self.call("add_actor", tenant=tenant, **spec)
    def remove_actor(self, name: str): return self.call("remove_actor", name=name)
    def get_actors(self, name: str | None = None): return self.call("get_actors", name=name)
    def stop_actor(self, name: str): return self.call("stop_actor", name=name)
    def start_actor(self, name: str): return self.call("start_actor", name=name)
    def set_actor_secret(self, name: str, value: str | None = None, key_id: str | None = None):
        return self.call("set_actor_secret", name=name, value=value, key_id=key_id)
    def revoke_actor_token(self, name: str, how: str = "sessions", actor: str | None = None):
        return self._with("revoke_actor_token", actor, name=name, how=how)
    def actor_sign_in(self, name: str, at: str | None = None): return self.call("actor_sign_in", name=name, at=at)
    def tick_actors(self, name: str | None = None) -> list[dict]:
        return self.call("tick_actors", name=name)["results"]

    # faults
    def add_fault(self, path_prefix: str, status: int | None = 429, count: int | None = 1, retry_after: int = 5,
                  latency_ms: int = 0, method: str | None = None) -> str:
        return self.call("add_fault", path_prefix=path_prefix, status=status, count=count,
                         retry_after=retry_after, latency_ms=latency_ms, method=method)["id"]
    def clear_faults(self, id: str | None = None):  # noqa: A002
        return self.call("clear_faults", id=id)
    # directory objects for discovery (sandbox.directory)
    def add_foreign_service_principal(self, tenant: str, app_id: str, home_tenant: str, **spec):
        return self.call("add_foreign_service_principal", tenant=tenant, app_id=app_id, home_tenant=home_tenant,
                         **spec)
    def add_managed_identity(self, tenant: str, **spec): return self.call("add_managed_identity", tenant=tenant, **spec)
    def delete_directory_service_principal(self, tenant: str, app_id: str):
        return self.call("delete_directory_service_principal", tenant=tenant, app_id=app_id)
    def add_federated_credential(self, app_id: str, name: str, issuer: str, subject: str, **spec):
        return self.call("add_federated_credential", app_id=app_id, name=name, issuer=issuer, subject=subject, **spec)
    def remove_federated_credential(self, app_id: str, id: str):  # noqa: A002
        return self.call("remove_federated_credential", app_id=app_id, id=id)
    def set_sign_in_audience(self, app_id: str, sign_in_audience: str):
        return self.call("set_sign_in_audience", app_id=app_id, sign_in_audience=sign_in_audience)
    def add_page_fault(self, listing: str, page: int, status: int = 503, retry_after: int = 5,
                       count: int | None = 1, tenant: str | None = None) -> str:
        """Request number `page` (1 = without $skiptoken) of a Graph directory listing (applications,
        servicePrincipals, oauth2PermissionGrants, users, appRoleAssignedTo, appRoleAssignments, owners,
        federatedIdentityCredentials) answers `status`; clear_faults removes it."""
        return self.call("add_page_fault", listing=listing, page=page, status=status, retry_after=retry_after,
                         count=count, tenant=tenant)["id"]

    # Exchange Online
    def add_mailbox(self, tenant: str, **spec): return self.call("add_mailbox", tenant=tenant, **spec)
    def patch_mailbox(self, address: str, **fields): return self.call("patch_mailbox", address=address, **fields)
    def delete_mailbox(self, address: str): return self.call("delete_mailbox", address=address)
    def get_mailbox(self, address: str): return self.call("get_mailbox", address=address)
    def grant_mailbox_permission(self, address: str, permission: str, trustee: str):
        return self.call("grant_mailbox_permission", address=address, permission=permission, trustee=trustee)
    def revoke_mailbox_permission(self, address: str, permission: str, trustee: str):
        return self.call("revoke_mailbox_permission", address=address, permission=permission, trustee=trustee)
    def add_service_principal(self, tenant: str, app_id: str):
        return self.call("add_service_principal", tenant=tenant, app_id=app_id)
    def remove_service_principal(self, tenant: str, app_id: str):
        return self.call("remove_service_principal", tenant=tenant, app_id=app_id)
    def set_tenant_exchange(self, tenant: str, **fields):
        """Only the fields given change: smtp_auth_enabled, ews_enabled (None: never set), ews_allowed_app_ids
        (None: no allow-list), outbound_blocked (tenant | ip | None)."""
        return self.call("set_tenant_exchange", tenant=tenant, **fields)
    def use_budget(self, address: str, principal: str, requests: int):
        return self.call("use_budget", address=address, principal=principal, requests=requests)
    def record_sent(self, address: str, recipients: int):
        return self.call("record_sent", address=address, recipients=recipients)
    def add_access_policy(self, tenant: str, app_id: str, access_right: str, members: list[str]) -> str:
        return self.call("add_access_policy", tenant=tenant, app_id=app_id, access_right=access_right,
                         members=members)["id"]
    def remove_access_policy(self, tenant: str, id: str | None = None, app_id: str | None = None):  # noqa: A002
        return self.call("remove_access_policy", tenant=tenant, id=id, app_id=app_id)
    def add_message(self, address: str, **spec): return self.call("add_message", address=address, **spec)
    def mark_all_seen(self, address: str, seen: bool = True):
        return self.call("mark_all_seen", address=address, seen=seen)
    def set_protocol_fault(self, protocol: str, mode: str = "none", latency_ms: int = 0):
        return self.call("set_protocol_fault", protocol=protocol, mode=mode, latency_ms=latency_ms)

    def close(self) -> None:
        self.session.close()
