"""Graph `addPassword` / `removePassword` on an application (both addressing forms).

Who may: a token with `Application.ReadWrite.All` or `Directory.ReadWrite.All` (app role or delegated
scope) on any app of its tenant; with only `Application.ReadWrite.OwnedBy` the calling app must be an
owner of the target app. Otherwise 403 `Authorization_RequestDenied` as for reads.

`addPassword` returns the new passwordCredential with `secretText`, once (the only time Graph hands a
secret value out); the default lifetime is two years. `removePassword` takes `keyId` and answers 204.
**Assumption**: an unknown keyId is answered 400 `Request_BadRequest` (Microsoft's exact reply unverified).
"""

from __future__ import annotations

import datetime as dt
import json
import re
import uuid

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from . import audit
from .errors import graph_error
from .scenario import ScenarioError, generate_secret_value, parse_when
from .state import App, Secret, State, Tenant

WRITE_ALL = {"Application.ReadWrite.All", "Directory.ReadWrite.All"}
OWNED_BY = "Application.ReadWrite.OwnedBy"
ACTION = re.compile(r"^applications(?:\(appId='([^']*)'\)|/([^/()]+))/"
                    r"(?:microsoft\.graph\.)?(addPassword|removePassword)$", re.I)
DEFAULT_LIFETIME = dt.timedelta(days=730)


def _time(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _find(tenant: Tenant, app_id: str | None, object_id: str | None) -> App | None:
    if app_id is not None:
        return tenant.apps.get(app_id.lower())
    return next((a for a in tenant.apps.values() if a.object_id == object_id), None)


def _allowed(claims: dict, app: App) -> bool:
    granted = set(claims.get("roles") or []) | set((claims.get("scp") or "").split())
    if granted & WRITE_ALL:
        return True
    caller = (claims.get("appid") or claims.get("azp") or "").lower()
    return OWNED_BY in granted and caller in app.owners and "roles" in claims


async def handle(request: Request, claims: dict, tenant: Tenant, state: State, rest: str,
                 base: str) -> Response | None:
    m = ACTION.match(rest)
    if m is None or request.method != "POST":
        return None
    crid = request.headers.get("client-request-id")
    app_id, object_id, action = m.group(1), m.group(2), m.group(3).lower()
    try:
        raw = await request.body()
        body = json.loads(raw) if raw else {}
        if not isinstance(body, dict):
            raise ValueError
    except ValueError:
        return graph_error(400, "BadRequest", "Unable to read JSON request payload.", crid)
    with state.lock:
        app = _find(tenant, app_id, object_id)
        if app is None:
            ident = app_id if app_id is not None else object_id
            return graph_error(404, "Request_ResourceNotFound", f"Resource '{ident}' does not exist or one of its "
                               "queried reference-property objects are not present.", crid)
        if not _allowed(claims, app):
            return graph_error(403, "Authorization_RequestDenied",
                               "Insufficient privileges to complete the operation.", crid)
        before = list(app.secrets) + list(app.certificates)
        if action == "addpassword":
            answer = _add(state, app, body.get("passwordCredential") or {}, crid, base)
        else:
            answer = _remove(app, body.get("keyId"), crid)
        if answer.status_code in (200, 204):  # audited with the token's caller: the app itself, or the user
            caller = claims.get("appid") if "scp" not in claims else claims.get("upn")
            audit.credentials_changed(state, app, before, caller)
        return answer


def replicated_at(state: State, app: App):
    """When a secret added now is known to the token endpoint (the tenant's replication delay)."""
    import datetime as dt

    return state.now() + dt.timedelta(seconds=state.tenants[app.tenant_id].secret_replication_s)


def _add(state: State, app: App, spec: dict, crid: str | None, base: str) -> Response:
    now = state.now()
    try:
        start = parse_when(spec["startDateTime"], now) if spec.get("startDateTime") else now
        end = parse_when(spec["endDateTime"], now) if spec.get("endDateTime") else start + DEFAULT_LIFETIME
    except ScenarioError:
        return graph_error(400, "Request_BadRequest", "Invalid value specified for property 'endDateTime' of "
                           "resource 'PasswordCredential'.", crid)
    if end <= start:
        return graph_error(400, "Request_BadRequest", "Invalid value specified for property 'endDateTime' of "
                           "resource 'PasswordCredential'.", crid)
    secret = Secret(key_id=str(uuid.uuid4()), display_name=spec.get("displayName"), value=generate_secret_value(),
                    start=start, end=end, usable_from=replicated_at(state, app))
    app.secrets.append(secret)
    return JSONResponse({
        "@odata.context": f"{base}/$metadata#microsoft.graph.passwordCredential",
        "customKeyIdentifier": None, "displayName": secret.display_name, "endDateTime": _time(secret.end),
        "hint": secret.hint, "keyId": secret.key_id, "secretText": secret.value,
        "startDateTime": _time(secret.start),
    }, headers={"client-request-id": crid or "", "OData-Version": "4.0"})


def _remove(app: App, key_id: object, crid: str | None) -> Response:
    try:
        wanted = str(uuid.UUID(str(key_id)))
    except ValueError:
        return graph_error(400, "Request_BadRequest", "Invalid value specified for property 'keyId' of resource "
                           "'PasswordCredential'.", crid)
    found = next((s for s in app.secrets if s.key_id.lower() == wanted), None)
    if found is None:
        return graph_error(400, "Request_BadRequest", f"No password credential found with keyId '{wanted}'.", crid)
    app.secrets.remove(found)
    return Response(status_code=204, headers={"client-request-id": crid or ""})
