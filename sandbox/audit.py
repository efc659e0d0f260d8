"""Directory audits: what changed in the directory, who changed it, when (Graph `directoryAudit`).

Recorded by the control ops that change an app or a user (each takes an `actor`: a UPN, or the app id of a
service principal; default the tenant's `admin`), by Graph addPassword/removePassword (the caller of the token)
and by a user's own consent on the sign-in page.

Shapes: microsoftgraph/microsoft-graph-docs-contrib api-reference/v1.0/resources/directoryaudit.md and
v1.0/api/directoryaudit-list.md (initiatedBy.user {id, displayName, userPrincipalName, ipAddress, userType,
homeTenantId, homeTenantName}, targetResources {id, displayName, type, userPrincipalName, groupType,
modifiedProperties {displayName, oldValue, newValue}}); app initiators {appId, displayName, servicePrincipalId,
servicePrincipalName} and the ids "Directory_<correlationId>_<5>_<n>" as in captured events (splunk/attack_data
azure_ad_bypass_admin_consent.log); modifiedProperties values JSON-encoded strings ("\"x\"", "[true]") and
KeyDescription "[\"[KeyIdentifier=..,KeyType=Password,KeyUsage=Verify,DisplayName=..]\"]" with a companion
"Included Updated Properties" as captured for addPassword/removePassword (kavachiq WI-05 spike report, which also
shows an "Update application" event with no modifiedProperties beside each credential change).
Activity names: Microsoft Entra audit log categories and activities (learn.microsoft.com/entra/identity/
monitoring-health/reference-audit-activities). That table spells "Update application - Certificates and secrets
management" with a hyphen; captured events (and Microsoft's own Sentinel queries) carry an en dash: the sandbox
emits the en dash.
"""

from __future__ import annotations

import datetime as dt
import json
import random
import string
import uuid
from dataclasses import dataclass

from .state import EXCHANGE_APP_ID, GRAPH, GRAPH_APP_ID, App, Certificate, Secret, State, Tenant, new_id

CREDENTIALS = "Update application \u2013 Certificates and secrets management"
RESOURCE_SP = {GRAPH: ("Microsoft Graph", GRAPH_APP_ID), "exchange": ("Office 365 Exchange Online", EXCHANGE_APP_ID)}


@dataclass(slots=True)
class AuditEvent:
    seq: int
    tenant_id: str
    created: dt.datetime
    visible_at: dt.datetime
    body: dict  # the directoryAudit JSON (activityDateTime and id included)


def jstr(value) -> str | None:
    """Entra's modifiedProperties encoding: every value is a JSON text (compact, as .NET writes it)."""
    return None if value is None else json.dumps(value, separators=(",", ":"))


def prop(name: str, old=None, new=None) -> dict:
    return {"displayName": name, "oldValue": jstr(old), "newValue": jstr(new)}


def included(*names: str) -> dict:
    return {"displayName": "Included Updated Properties", "oldValue": None, "newValue": jstr(", ".join(names))}


def resource_sp_id(tenant: Tenant, resource: str) -> str:
    """The object id of Microsoft Graph's / Exchange Online's service principal in the tenant (stable)."""
    return str(uuid.uuid5(uuid.NAMESPACE_OID, f"{tenant.id}:{RESOURCE_SP[resource][1]}"))


def user_id(tenant: Tenant, upn: str) -> str:
    user = tenant.users.get(upn.lower())
    return user.oid if user else str(uuid.uuid5(uuid.NAMESPACE_OID, f"{tenant.id}:{upn.lower()}"))


def initiator(state: State, tenant: Tenant, actor: str | None) -> dict:
    """`actor`: an app id of the tenant (a service principal acting through Graph) or a UPN (default: the admin)."""
    who = (actor or tenant.admin_upn or f"admin@{tenant.domain}").strip()
    app = tenant.apps.get(who.lower())
    if app is not None:
        return {"app": {"appId": app.app_id, "displayName": app.display_name,
                        "servicePrincipalId": app.sp_object_id, "servicePrincipalName": None}, "user": None}
    user = tenant.users.get(who.lower())
    return {"app": None, "user": {"id": user_id(tenant, who), "displayName": user.display_name if user else None,
                                  "userPrincipalName": who, "ipAddress": "127.0.0.1", "userType": None,
                                  "homeTenantId": None, "homeTenantName": None}}


def target(id: str, name: str | None, kind: str, props: list[dict] | None = None,  # noqa: A002
           upn: str | None = None) -> dict:
    return {"id": id, "displayName": name, "type": kind, "userPrincipalName": upn, "groupType": None,
            "modifiedProperties": props or []}


def app_target(app: App, props: list[dict] | None = None) -> dict:
    return target(app.object_id, app.display_name, "Application", props)


def sp_target(app: App, props: list[dict] | None = None) -> dict:
    return target(app.sp_object_id, app.display_name, "ServicePrincipal", props)


def resource_target(tenant: Tenant, resource: str, props: list[dict] | None = None) -> dict:
    return target(resource_sp_id(tenant, resource), RESOURCE_SP[resource][0], "ServicePrincipal", props)


def record(state: State, tenant: Tenant, activity: str, category: str, operation: str, targets: list[dict],
           actor: str | None = None, correlation_id: str | None = None, result: str = "success",
           details: list[dict] | None = None, service: str = "Core Directory") -> dict:
    now = state.now()
    corr = correlation_id or new_id()
    suffix = "".join(random.choices(string.ascii_uppercase + string.digits, k=5))
    body = {
        "id": f"Directory_{corr}_{suffix}_{random.randint(10_000_000, 999_999_999)}",
        "category": category, "correlationId": corr, "result": result, "resultReason": "",
        "activityDisplayName": activity,
        # seven fractional digits, as Entra writes activityDateTime
        "activityDateTime": now.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f") + "0Z",
        "loggedByService": service, "operationType": operation, "userAgent": None,
        "initiatedBy": initiator(state, tenant, actor), "targetResources": targets,
        "additionalDetails": details or [],
    }
    with state.lock:
        state.audits.append(AuditEvent(seq=next(state.log_seq), tenant_id=tenant.id, created=now,
                                       visible_at=now + dt.timedelta(seconds=tenant.audit_log_delay_s), body=body))
    return body


def visible(state: State, tenant_id: str) -> list[AuditEvent]:
    now = state.now()
    with state.lock:
        events = [e for e in state.audits if e.tenant_id == tenant_id and e.visible_at <= now]
    events.sort(key=lambda e: (e.created, e.seq), reverse=True)
    return events


# -- the activities the sandbox's changes produce ----------------------------------------------------------

def key_description(creds: list) -> list[str]:
    out = []
    for c in creds:
        kind, usage = ("AsymmetricX509Cert", "Verify") if isinstance(c, Certificate) else ("Password", "Verify")
        out.append(f"[KeyIdentifier={c.key_id},KeyType={kind},KeyUsage={usage},DisplayName={c.display_name or ''}]")
    return out


def credentials_changed(state: State, app: App, before: list[Secret | Certificate], actor: str | None) -> None:
    """A secret or certificate added or removed (portal, addPassword, removePassword): the credential event and the
    bare "Update application" beside it, under one correlation id."""
    tenant = state.tenants[app.tenant_id]
    corr = new_id()
    after = list(app.secrets) + list(app.certificates)
    props = [prop("KeyDescription", key_description(before), key_description(after)), included("KeyDescription")]
    record(state, tenant, CREDENTIALS, "ApplicationManagement", "Update", [app_target(app, props)], actor, corr)
    record(state, tenant, "Update application", "ApplicationManagement", "Update", [app_target(app)], actor, corr)


def consent(state: State, app: App, resource: str, scopes: list[str], actor: str | None, admin: bool,
            app_only: bool, upn: str | None = None) -> None:
    """Consent to application (admin consent from the portal, or a user's own at the sign-in page) and the grant
    it makes: "Add app role assignment to service principal" per role, or "Add delegated permission grant"."""
    tenant = state.tenants[app.tenant_id]
    corr = new_id()
    perms = f"[] => [[Scope: {' '.join(scopes)}, ConsentType: {'AllPrincipals' if admin else 'Principal'}]]; "
    record(state, tenant, "Consent to application", "ApplicationManagement", "Assign", [sp_target(app, [
        prop("ConsentContext.IsAdminConsent", None, str(admin)), prop("ConsentContext.IsAppOnly", None, str(app_only)),
        prop("ConsentContext.OnBehalfOfAll", None, str(admin)), prop("ConsentAction.Permissions", None, perms),
        prop("TargetId.ServicePrincipalNames", None, app.app_id)])], actor, corr)
    if app_only:
        for role in scopes:
            record(state, tenant, "Add app role assignment to service principal", "ApplicationManagement", "Assign",
                   [resource_target(tenant, resource, [
                       prop("AppRole.Value", None, role), prop("ServicePrincipal.ObjectID", None, app.sp_object_id),
                       prop("ServicePrincipal.DisplayName", None, app.display_name),
                       prop("ServicePrincipal.AppId", None, app.app_id)])], actor, corr)
    else:
        record(state, tenant, "Add delegated permission grant", "ApplicationManagement", "Assign",
               [resource_target(tenant, resource, [
                   prop("DelegatedPermissionGrant.Scope", None, " " + " ".join(scopes)),
                   prop("DelegatedPermissionGrant.ConsentType", None, "AllPrincipals" if admin else "Principal"),
                   prop("ServicePrincipal.ObjectID", None, app.sp_object_id)]), sp_target(app)]
               + ([target(user_id(tenant, upn), upn, "User", upn=upn)] if upn else []), actor, corr)


def grant_removed(state: State, app: App, resource: str, scope: str, actor: str | None, app_only: bool) -> None:
    tenant = state.tenants[app.tenant_id]
    if app_only:
        record(state, tenant, "Remove app role assignment from service principal", "ApplicationManagement",
               "Unassign", [resource_target(tenant, resource, [
                   prop("AppRole.Value", scope, None), prop("ServicePrincipal.ObjectID", app.sp_object_id, None),
                   prop("ServicePrincipal.DisplayName", app.display_name, None)])], actor)
    else:
        record(state, tenant, "Remove delegated permission grant", "ApplicationManagement", "Unassign",
               [resource_target(tenant, resource, [prop("DelegatedPermissionGrant.Scope", " " + scope, None)]),
                sp_target(app)], actor)


def service_principal_updated(state: State, app: App, name: str, old, new, actor: str | None) -> None:
    tenant = state.tenants[app.tenant_id]
    record(state, tenant, "Update service principal", "ApplicationManagement", "Update",
           [sp_target(app, [prop(name, [old], [new]), included(name)])], actor)


def application_updated(state: State, app: App, name: str, old, new, actor: str | None) -> None:
    tenant = state.tenants[app.tenant_id]
    record(state, tenant, "Update application", "ApplicationManagement", "Update",
           [app_target(app, [prop(name, old, new), included(name)])], actor)


def owner_changed(state: State, app: App, owner: str, added: bool, actor: str | None) -> None:
    tenant = state.tenants[app.tenant_id]
    owning_app = tenant.apps.get(owner.lower())
    if owning_app is not None:
        who = target(owning_app.sp_object_id, owning_app.display_name, "ServicePrincipal")
    else:
        who = target(user_id(tenant, owner), None, "User", upn=owner)
    app_props = [prop("Application.ObjectID", None, app.object_id), prop("Application.AppId", None, app.app_id),
                 prop("Application.DisplayName", None, app.display_name)]
    if not added:
        app_props = [prop(p["displayName"], json.loads(p["newValue"]), None) for p in app_props]
    who["modifiedProperties"] = app_props
    activity = "Add owner to application" if added else "Remove owner from application"
    record(state, tenant, activity, "ApplicationManagement", "Assign" if added else "Unassign",
           [who, app_target(app)], actor)


def user_changed(state: State, tenant: Tenant, upn: str, activity: str, props: list[dict], actor: str | None,
                 operation: str = "Update") -> None:
    record(state, tenant, activity, "UserManagement", operation,
           [target(user_id(tenant, upn), None, "User", props, upn=upn)], actor)
