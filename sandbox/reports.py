"""Graph's view of the consuming system: sign-in logs, directory audits, the usage reports, service health.

- `GET /v1.0|beta/auditLogs/signIns[/{id}]`: AuditLog.Read.All and Directory.Read.All (both: signin-list.md,
  "known issue"); P1/P2 (else 403 Authentication_RequestFromNonPremiumTenantOrB2CTenant, message as captured in
  microsoft-graph-docs#11818). Interactive user sign-ins only, unless (beta) `signInEventTypes/any(t: t eq '..')`
  names another type (beta/resources/signin.md note); one event type per request (M365_FACTS.md: mixing types was
  refused "Invalid filter clause"). Newest first; `$top` (default and maximum 1000, signin-list.md), `$skiptoken`.
- `GET /v1.0|beta/auditLogs/directoryAudits[/{id}]`: AuditLog.Read.All; every edition.
- `GET /beta/reports/servicePrincipalSignInActivities` and `/beta/reports/appCredentialSignInActivities`:
  AuditLog.Read.All (or Directory.Read.All); P1/P2 (reportroot-list-serviceprincipalsigninactivities.md,
  reportroot-list-appcredentialsigninactivities.md, resources/appcredentialsigninactivity.md).
- `GET /v1.0|beta/admin/serviceAnnouncement/issues[/{id}]`: ServiceHealth.Read.All (serviceannouncement-list-issues.md,
  resources/servicehealthissue.md); the sandbox's incidents (`open_incident`/`close_incident`).
"""

from __future__ import annotations

import base64
import re

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from . import audit, logs, odata
from .errors import graph_error
from .state import EXCHANGE, GRAPH, Incident, State, Tenant

SIGNIN_READ = ({"AuditLog.Read.All"}, {"Directory.Read.All", "Directory.ReadWrite.All"})  # one of each set
AUDIT_READ = {"AuditLog.Read.All"}
REPORT_READ = {"AuditLog.Read.All", "Directory.Read.All", "Directory.ReadWrite.All"}
HEALTH_READ = {"ServiceHealth.Read.All"}
DENIED = "Insufficient privileges to complete the operation."
NON_PREMIUM = ("Authentication_RequestFromNonPremiumTenantOrB2CTenant",
               "Neither tenant is B2C or tenant doesn't have premium license")
SERVICE_NAMES = {"entra": "Microsoft Entra", "exchange": "Exchange Online"}
_PATH = re.compile(r"^(auditLogs/signIns|auditLogs/directoryAudits|reports/servicePrincipalSignInActivities|"
                   r"reports/appCredentialSignInActivities|admin/serviceAnnouncement/issues)(?:/([^/]+))?/?$", re.I)


def _granted(claims: dict) -> set[str]:
    return set(claims.get("roles") or []) | set((claims.get("scp") or "").split())


class Reports:
    def __init__(self, state: State, base_url: str):
        self.state, self.base_url = state, base_url

    async def dispatch(self, request: Request, claims: dict, tenant: Tenant, rest: str,
                       version: str) -> Response | None:
        m = _PATH.match(rest)
        if m is None or request.method != "GET":
            return None
        kind, ident = m.group(1).lower(), m.group(2)
        crid = request.headers.get("client-request-id")
        granted = _granted(claims)
        if kind.startswith("reports/") and version != "beta":
            return graph_error(400, "BadRequest", f"Resource not found for the segment '{kind.split('/')[1]}'.", crid)
        if kind == "auditlogs/signins":
            allowed = all(granted & need for need in SIGNIN_READ)
        elif kind == "auditlogs/directoryaudits":
            allowed = bool(granted & AUDIT_READ)
        elif kind.startswith("reports/"):
            allowed = bool(granted & REPORT_READ)
        else:
            allowed = bool(granted & HEALTH_READ)
        if not allowed:
            return graph_error(403, "Authorization_RequestDenied", DENIED, crid)
        if (kind == "auditlogs/signins" or kind.startswith("reports/")) and tenant.entra_licence == "free":
            return graph_error(403, *NON_PREMIUM, crid)
        try:
            if kind == "auditlogs/signins":
                return self.signins(request, tenant, version, ident, crid)
            if kind == "auditlogs/directoryaudits":
                return self.audits(request, tenant, version, ident, crid)
            if kind == "reports/serviceprincipalsigninactivities":
                return self.report(request, sp_activities(self.state, tenant), "servicePrincipalSignInActivities",
                                   crid)
            if kind == "reports/appcredentialsigninactivities":
                return self.report(request, credential_activities(self.state, tenant),
                                   "appCredentialSignInActivities", crid)
            return self.issues(request, version, ident, crid)
        except odata.FilterError:
            return graph_error(400, "BadRequest", "Invalid filter clause", crid)

    def _ok(self, body: dict, crid: str | None) -> JSONResponse:
        headers = {"OData-Version": "4.0"}
        if crid:
            headers.update({"client-request-id": crid, "request-id": crid})
        return JSONResponse(body, headers=headers)

    def _page(self, request: Request, events: list, render, context: str, crid: str | None) -> JSONResponse:
        """Newest-first events (each with .created and .seq) -> one page and the nextLink to the rest."""
        q = request.query_params
        size = odata.top(q.get("$top"), 1000, 1000)
        start = odata.after(q.get("$skiptoken"))
        if start is not None:
            events = [e for e in events if (e.created, e.seq) < start]
        page = events[:size]
        body = {"@odata.context": context, "value": [render(e) for e in page]}
        if len(events) > size:
            last = page[-1]
            body["@odata.nextLink"] = str(request.url.include_query_params(
                **{"$skiptoken": odata.skiptoken(last.created, last.seq)}))
        return self._ok(body, crid)

    # -- sign-ins --------------------------------------------------------------------------------------
    def signins(self, request: Request, tenant: Tenant, version: str, ident: str | None, crid) -> Response:
        beta = version == "beta"
        events = logs.visible(self.state, tenant.id)
        context = f"{self.base_url}/{version}/$metadata#auditLogs/signIns"
        if ident is not None:
            hit = next((e for e in events if e.id == ident), None)
            if hit is None:
                return graph_error(404, "Request_ResourceNotFound", f"Resource '{ident}' does not exist or one of "
                                   "its queried reference-property objects are not present.", crid)
            return self._ok({"@odata.context": context + "/$entity", **logs.signin_json(hit, tenant, beta)}, crid)
        types = {logs.INTERACTIVE}
        clauses = odata.parse(request.query_params.get("$filter"))
        typed = [c for c in clauses if isinstance(c, odata.AnyOf)]
        for c in typed:
            if not beta or c.coll.lower() != "signineventtypes" or c.prop is not None:
                raise odata.FilterError(c.coll)
        if typed:
            wanted = {str(v) for c in typed for v in c.values}
            if len(wanted) != 1 or wanted - set(logs.EVENT_TYPES):
                raise odata.FilterError("signInEventTypes")  # one event type per request (M365_FACTS.md)
            value = wanted.pop()
            types = {value} if typed[0].op == "eq" else set(logs.EVENT_TYPES) - {value}
        events = [e for e in events if e.event_type in types]
        for c in clauses:
            if isinstance(c, odata.Cmp):
                getter = SIGNIN_PROPS.get(c.prop.lower())
                if getter is None or (c.prop.lower() not in V1_FILTERABLE and not beta):
                    raise odata.FilterError(c.prop)
                events = [e for e in events if odata.compare(getter(e), c.op, c.value)]
        return self._page(request, events, lambda e: logs.signin_json(e, tenant, beta), context, crid)

    # -- directory audits ------------------------------------------------------------------------------
    def audits(self, request: Request, tenant: Tenant, version: str, ident: str | None, crid) -> Response:
        events = audit.visible(self.state, tenant.id)
        context = f"{self.base_url}/{version}/$metadata#auditLogs/directoryAudits"
        if ident is not None:
            hit = next((e for e in events if e.body["id"] == ident), None)
            if hit is None:
                return graph_error(404, "Request_ResourceNotFound", f"Resource '{ident}' does not exist or one of "
                                   "its queried reference-property objects are not present.", crid)
            return self._ok({"@odata.context": context + "/$entity", **hit.body}, crid)
        for c in odata.parse(request.query_params.get("$filter")):
            if isinstance(c, odata.AnyOf):
                if c.coll.lower() != "targetresources" or (c.prop or "").lower() not in ("id", "displayname", "type"):
                    raise odata.FilterError(c.coll)
                key = {"id": "id", "displayname": "displayName", "type": "type"}[c.prop.lower()]
                events = [e for e in events if any(odata.compare(t.get(key), "eq", v) for t in e.body["targetResources"]
                                                   for v in c.values) == (c.op == "eq")]
                continue
            path = c.prop.lower()
            if path == "activitydatetime":
                events = [e for e in events if odata.compare(e.created, c.op, c.value)]
            elif path in AUDIT_PROPS:
                events = [e for e in events if odata.compare(_dig(e.body, AUDIT_PROPS[path]), c.op, c.value)]
            else:
                raise odata.FilterError(c.prop)
        return self._page(request, events, lambda e: e.body, context, crid)

    # -- usage reports ---------------------------------------------------------------------------------
    def report(self, request: Request, rows: list[dict], name: str, crid) -> Response:
        for c in odata.parse(request.query_params.get("$filter")):
            if not isinstance(c, odata.Cmp) or c.prop.lower() not in ("appid", "keyid", "id"):
                raise odata.FilterError(str(c))
            key = {"appid": "appId", "keyid": "keyId", "id": "id"}[c.prop.lower()]
            rows = [r for r in rows if key in r and odata.compare(r[key], c.op, c.value)]
        return self._offset_page(request, rows, f"{self.base_url}/beta/$metadata#reports/{name}", crid, 1000)

    def _offset_page(self, request: Request, rows: list[dict], context: str, crid, default: int) -> Response:
        q = request.query_params
        size = odata.top(q.get("$top"), default, 1000)
        try:
            skip = int(q.get("$skip", "0"))
        except ValueError as exc:
            raise odata.FilterError("$skip") from exc
        body = {"@odata.context": context, "value": rows[skip:skip + size]}
        if skip + size < len(rows):
            body["@odata.nextLink"] = str(request.url.include_query_params(**{"$skip": str(skip + size)}))
        return self._ok(body, crid)

    # -- service health --------------------------------------------------------------------------------
    def issues(self, request: Request, version: str, ident: str | None, crid) -> Response:
        with self.state.lock:
            rows = [issue_json(i) for i in sorted(self.state.incidents, key=lambda i: i.started, reverse=True)]
        context = f"{self.base_url}/{version}/$metadata#admin/serviceAnnouncement/issues"
        if ident is not None:
            hit = next((r for r in rows if r["id"].lower() == ident.lower()), None)
            if hit is None:
                return graph_error(404, "NotFound", f"Issue '{ident}' was not found.", crid)  # assumption
            return self._ok({"@odata.context": context + "/$entity", **hit}, crid)
        for c in odata.parse(request.query_params.get("$filter")):
            if not isinstance(c, odata.Cmp) or c.prop not in ISSUE_FILTERABLE:
                raise odata.FilterError(str(c))
            rows = [r for r in rows if odata.compare(_issue_value(r, c.prop), c.op, c.value)]
        return self._offset_page(request, rows, context, crid, 100)


def _dig(body: dict, path: tuple[str, ...]):
    for key in path:
        if not isinstance(body, dict):
            return None
        body = body.get(key)
    return body


SIGNIN_PROPS = {
    "id": lambda e: e.id, "appid": lambda e: e.app_id, "appdisplayname": lambda e: e.app_name,
    "userprincipalname": lambda e: e.upn, "userid": lambda e: e.user_id, "correlationid": lambda e: e.correlation_id,
    "createddatetime": lambda e: e.created, "status/errorcode": lambda e: e.error_code,
    "ipaddress": lambda e: e.ip, "resourceid": lambda e: logs.RESOURCES.get(e.resource or "", (None, None))[1],
    "resourcedisplayname": lambda e: logs.RESOURCES.get(e.resource or "", (None, None))[0],
    "serviceprincipalid": lambda e: e.sp_id if e.event_type == logs.SERVICE_PRINCIPAL else "",
    "serviceprincipalname": lambda e: (e.app_name or "") if e.event_type == logs.SERVICE_PRINCIPAL else "",
    "isinteractive": lambda e: e.event_type == logs.INTERACTIVE,
}
V1_FILTERABLE = {"id", "appid", "appdisplayname", "userprincipalname", "userid", "correlationid", "createddatetime",
                 "status/errorcode", "ipaddress", "resourceid", "resourcedisplayname", "isinteractive"}
AUDIT_PROPS = {
    "id": ("id",), "activitydisplayname": ("activityDisplayName",), "category": ("category",),
    "correlationid": ("correlationId",), "result": ("result",), "loggedbyservice": ("loggedByService",),
    "operationtype": ("operationType",), "initiatedby/user/id": ("initiatedBy", "user", "id"),
    "initiatedby/user/userprincipalname": ("initiatedBy", "user", "userPrincipalName"),
    "initiatedby/user/displayname": ("initiatedBy", "user", "displayName"),
    "initiatedby/app/appid": ("initiatedBy", "app", "appId"),
    "initiatedby/app/displayname": ("initiatedBy", "app", "displayName"),
    "initiatedby/app/serviceprincipalid": ("initiatedBy", "app", "servicePrincipalId"),
}
ISSUE_FILTERABLE = {"id", "service", "status", "classification", "isResolved", "startDateTime", "endDateTime",
                    "lastModifiedDateTime", "feature", "featureGroup", "origin"}


def _issue_value(row: dict, prop: str):
    value = row.get(prop)
    if prop.endswith("DateTime") and value:
        return odata.value_of(value)
    return value


def _activity(ev: logs.SignInEvent | None) -> dict | None:
    if ev is None:
        return None
    return {"lastSignInDateTime": logs.gtime(ev.created), "lastSignInRequestId": ev.id}


def _latest(current, ev):
    return ev if current is None or (ev.created, ev.seq) > (current.created, current.seq) else current


def sp_activities(state: State, tenant: Tenant) -> list[dict]:
    """Last successful sign-in per service principal, as a client (delegated / app-only) and as a resource; every
    client counts, mailwarden's own too. Built from the sign-in events that have arrived."""
    rows: dict[str, dict] = {}
    for ev in logs.visible(state, tenant.id):
        if ev.error_code != 0:
            continue
        slot = "applicationAuthentication" if ev.event_type == logs.SERVICE_PRINCIPAL else "delegated"
        client = rows.setdefault(ev.app_id, {})
        client[slot + "Client"] = _latest(client.get(slot + "Client"), ev)
        if ev.resource in (GRAPH, EXCHANGE):
            res_app = logs.RESOURCES[ev.resource][1]
            res = rows.setdefault(res_app, {})
            res[slot + "Resource"] = _latest(res.get(slot + "Resource"), ev)
    out = []
    for app_id, slots in rows.items():
        last = None
        for ev in slots.values():
            last = _latest(last, ev)
        out.append({
            "id": base64.b64encode(app_id.encode()).decode(), "appId": app_id,
            "applicationAuthenticationClientSignInActivity": _activity(slots.get("applicationAuthenticationClient")),
            "applicationAuthenticationResourceSignInActivity":
                _activity(slots.get("applicationAuthenticationResource")),
            "delegatedClientSignInActivity": _activity(slots.get("delegatedClient")),
            "delegatedResourceSignInActivity": _activity(slots.get("delegatedResource")),
            "lastSignInActivity": _activity(last),
        })
    out.sort(key=lambda r: r["lastSignInActivity"]["lastSignInDateTime"], reverse=True)
    return out


def credential_activities(state: State, tenant: Tenant) -> list[dict]:
    """Last successful sign-in per credential (keyId) of the tenant's apps, across all flows."""
    latest: dict[str, logs.SignInEvent] = {}
    for ev in logs.visible(state, tenant.id):
        if ev.error_code == 0 and ev.key_id:
            latest[ev.key_id] = _latest(latest.get(ev.key_id), ev)
    out = []
    for key_id, ev in latest.items():
        out.append({
            "id": base64.b64encode(f"{key_id}|application".encode()).decode(), "appId": ev.app_id,
            "appObjectId": ev.app_object_id, "createdDateTime": logs.gtime(ev.key_start),
            "credentialOrigin": "application", "expirationDateTime": logs.gtime(ev.key_end), "keyId": key_id,
            "keyType": ev.key_type, "keyUsage": "sign",
            "resourceId": logs.RESOURCES.get(ev.resource or "", (None, None))[1],
            "servicePrincipalObjectId": ev.sp_id,
            "signInActivity": _activity(ev),
        })
    out.sort(key=lambda r: r["signInActivity"]["lastSignInDateTime"], reverse=True)
    return out


def issue_json(i: Incident) -> dict:
    return {
        "startDateTime": logs.gtime(i.started), "endDateTime": logs.gtime(i.ended),
        "lastModifiedDateTime": logs.gtime(i.last_modified), "title": i.title, "id": i.issue_id,
        "impactDescription": i.impact_description, "classification": i.classification, "origin": "microsoft",
        "status": i.status, "service": SERVICE_NAMES.get(i.service, i.service), "feature": i.feature,
        "featureGroup": i.feature_group, "isResolved": i.ended is not None, "highImpact": None, "details": [],
        "posts": [{"createdDateTime": logs.gtime(at), "postType": "regular",
                   "description": {"contentType": "html", "content": text}} for at, text in i.posts],
    }
