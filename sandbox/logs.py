"""Sign-in logs: one event per token request and per interactive sign-in, as Entra ID records them.

The token endpoint and the sign-in pages fill a `SignInContext` while they decide (tenant, app, user, resource,
the credential the client presented) and call `record` with the outcome. Events are rendered in Microsoft
Graph's `signIn` shape by `signin_json` (v1.0: the documented v1.0 properties; beta: the beta ones too).

Shapes: microsoftgraph/microsoft-graph-docs-contrib api-reference/beta/resources/signin.md (properties,
signInEventTypes values, servicePrincipalCredentialKeyId), v1.0/resources/signin.md (the v1.0 subset),
beta/api/signin-list.md (a captured-looking example: servicePrincipalId "" on user sign-ins, status with
errorCode/failureReason/additionalDetails, "hidden" risk for non-P2) and resources/signinstatus.md;
learn.microsoft.com Q&A 1052879 (a success is errorCode 0 with failureReason "Other.").
Logs arrive late (M365_FACTS.md): each event gets `visible_at` from the tenant's delays.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from .errors import AADError
from .state import EXCHANGE, EXCHANGE_APP_ID, GRAPH, GRAPH_APP_ID, App, State, Tenant, User, new_id

INTERACTIVE, NON_INTERACTIVE, SERVICE_PRINCIPAL = "interactiveUser", "nonInteractiveUser", "servicePrincipal"
EVENT_TYPES = (INTERACTIVE, NON_INTERACTIVE, SERVICE_PRINCIPAL, "managedIdentity")
RESOURCES = {GRAPH: ("Microsoft Graph", GRAPH_APP_ID), EXCHANGE: ("Office 365 Exchange Online", EXCHANGE_APP_ID)}
RESOURCE_BY_NAME = {"graph": GRAPH, "exchange": EXCHANGE, GRAPH_APP_ID: GRAPH, EXCHANGE_APP_ID: EXCHANGE}
BROWSER, DESKTOP = "Browser", "Mobile Apps and Desktop clients"
# additionalDetails Entra adds to some outcomes (signin-list.md example for 50126; the MFA one is seen on
# non-interactive refreshes after a 50074 interrupt)
DETAILS = {
    50126: "The user didn't enter the right credentials. \u00a0It's expected to see some number of these errors "
           "in your logs due to users making mistakes.",
}
MFA_BY_CLAIM = "MFA requirement satisfied by claim in the token"


@dataclass
class SignInContext:
    """What a token request or sign-in page learned about the sign-in; filled while the request is decided."""

    correlation_id: str  # the client's client-request-id, or one Entra made up
    event_type: str = NON_INTERACTIVE
    request_id: str = field(default_factory=new_id)  # the event id, and the trace_id of an error reply
    ip: str = "127.0.0.1"
    user_agent: str = ""
    client_app: str = DESKTOP
    protocol: str = "none"  # authenticationProtocol: none | deviceCode | ...
    grant: str = ""  # the token request's grant_type ("" on sign-in pages)
    tenant: Tenant | None = None
    app: App | None = None
    client_id: str = ""
    upn: str | None = None
    resource: str | None = None  # GRAPH | EXCHANGE
    credential: object | None = None  # the Secret or Certificate the client presented (when it matched one)
    mfa: bool = False
    skip: bool = False  # not a sign-in (a device-code poll still pending)


@dataclass(slots=True)  # tens of thousands are kept (state.LOG_RETENTION)
class SignInEvent:
    seq: int
    id: str
    tenant_id: str
    created: dt.datetime
    visible_at: dt.datetime
    event_type: str
    correlation_id: str
    app_id: str
    app_name: str | None
    app_object_id: str
    sp_id: str
    upn: str | None
    user_id: str | None
    user_name: str | None
    resource: str | None
    error_code: int
    failure_reason: str
    additional: str | None
    key_id: str | None
    key_type: str | None  # clientSecret | certificate
    thumbprint: str | None
    key_start: dt.datetime | None
    key_end: dt.datetime | None
    ip: str
    user_agent: str
    mfa: bool
    client_app: str
    protocol: str


def context(headers, client_host: str | None, event_type: str) -> SignInContext:
    """A context for a request: its client-request-id (generated when absent, as Entra does), address and agent."""
    return SignInContext(correlation_id=headers.get("client-request-id") or new_id(), event_type=event_type,
                         ip=client_host or "127.0.0.1", user_agent=headers.get("user-agent", ""))


def delay(tenant: Tenant, event_type: str) -> dt.timedelta:
    seconds = tenant.noninteractive_log_delay_s if event_type == NON_INTERACTIVE else tenant.signin_log_delay_s
    return dt.timedelta(seconds=seconds)


def record(state: State, ctx: SignInContext, err: AADError | None = None, additional: str | None = None,
           created: dt.datetime | None = None, event_id: str | None = None) -> SignInEvent | None:
    """One sign-in event of the context's tenant (none without a tenant: Entra cannot tell whose log it is)."""
    tenant = ctx.tenant
    if tenant is None or ctx.skip:
        return None
    app = ctx.app
    user: User | None = tenant.users.get((ctx.upn or "").lower()) if ctx.upn else None
    cred = ctx.credential
    is_cert = cred is not None and hasattr(cred, "thumbprint")
    now = created or state.now()
    code = err.code if err is not None else 0
    reason = err.text.split(": ", 1)[1] if err is not None else "Other."
    with state.lock:
        ev = SignInEvent(
            seq=next(state.log_seq), id=event_id or ctx.request_id, tenant_id=tenant.id, created=now,
            visible_at=now + delay(tenant, ctx.event_type), event_type=ctx.event_type,
            correlation_id=ctx.correlation_id, app_id=app.app_id if app else (ctx.client_id or "").lower(),
            app_name=app.display_name if app else None, app_object_id=app.object_id if app else "",
            sp_id=app.sp_object_id if app else "", upn=(ctx.upn or "").lower() or None,
            user_id=user.oid if user else None, user_name=(user.display_name or user.upn) if user else None,
            resource=ctx.resource, error_code=code, failure_reason=reason,
            additional=additional if additional is not None else DETAILS.get(code),
            key_id=getattr(cred, "key_id", None), key_type=("certificate" if is_cert else "clientSecret") if cred
            else None, thumbprint=getattr(cred, "thumbprint", None), key_start=getattr(cred, "start", None),
            key_end=getattr(cred, "end", None), ip=ctx.ip, user_agent=ctx.user_agent, mfa=ctx.mfa,
            client_app=ctx.client_app, protocol=ctx.protocol)
        state.signins.append(ev)
    return ev


def record_success(state: State, ctx: SignInContext) -> None:
    """A granted request. A refresh by a user under an MFA requirement is logged as Entra logs it: an interrupt
    (50074, "Strong Authentication is required.") and then the success satisfied by the token's MFA claim
    (M365_FACTS.md: non-interactive logs are full of interrupts that are not failures)."""
    tenant = ctx.tenant
    user = tenant.users.get((ctx.upn or "").lower()) if tenant is not None and ctx.upn else None
    if ctx.grant == "refresh_token" and user is not None and user.mfa == "required" and ctx.mfa:
        record(state, ctx, AADError(50074), event_id=new_id())
        record(state, ctx, additional=MFA_BY_CLAIM)
        return
    record(state, ctx)


def visible(state: State, tenant_id: str) -> list[SignInEvent]:
    """The tenant's events that have arrived in the logs, newest first."""
    now = state.now()
    with state.lock:
        events = [e for e in state.signins if e.tenant_id == tenant_id and e.visible_at <= now]
    events.sort(key=lambda e: (e.created, e.seq), reverse=True)
    return events


def gtime(value: dt.datetime | None) -> str | None:
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if value else None


V1_FIELDS = ("id", "createdDateTime", "userDisplayName", "userPrincipalName", "userId", "appId", "appDisplayName",
             "ipAddress", "clientAppUsed", "correlationId", "conditionalAccessStatus", "isInteractive", "riskDetail",
             "riskLevelAggregated", "riskLevelDuringSignIn", "riskState", "riskEventTypes", "riskEventTypes_v2",
             "resourceDisplayName", "resourceId", "status", "deviceDetail", "location",
             "appliedConditionalAccessPolicies")


def signin_json(ev: SignInEvent, tenant: Tenant, beta: bool) -> dict:
    user_event = ev.event_type in (INTERACTIVE, NON_INTERACTIVE)
    sp_event = ev.event_type == SERVICE_PRINCIPAL
    risk = "none" if tenant.entra_licence == "p2" else "hidden"  # risk details need P2 (signin.md)
    res_name, res_id = RESOURCES.get(ev.resource or "", (None, None))
    body = {
        "id": ev.id, "createdDateTime": gtime(ev.created),
        "userDisplayName": ev.user_name if user_event else None,
        "userPrincipalName": ev.upn if user_event else None,
        "userId": (ev.user_id or "") if user_event else "",
        "appId": ev.app_id, "appDisplayName": ev.app_name, "ipAddress": ev.ip,
        "clientAppUsed": ev.client_app, "correlationId": ev.correlation_id,
        "conditionalAccessStatus": "failure" if ev.error_code == 53003 else "notApplied",
        "isInteractive": ev.event_type == INTERACTIVE,
        "riskDetail": risk, "riskLevelAggregated": risk, "riskLevelDuringSignIn": risk, "riskState": "none",
        "riskEventTypes": [], "riskEventTypes_v2": [],
        "resourceDisplayName": res_name, "resourceId": res_id,
        "status": {"errorCode": ev.error_code, "failureReason": ev.failure_reason,
                   "additionalDetails": ev.additional},
        "deviceDetail": {"deviceId": "", "displayName": "", "operatingSystem": "", "browser": ev.user_agent[:60],
                         "isCompliant": False, "isManaged": False, "trustType": ""},
        "location": {"city": "", "state": "", "countryOrRegion": "", "geoCoordinates": {}},
        "appliedConditionalAccessPolicies": [],
    }
    if not beta:
        return {k: body[k] for k in V1_FIELDS}
    body.update({
        "userType": "member" if user_event else None,
        "signInEventTypes": [ev.event_type],
        "servicePrincipalId": ev.sp_id if sp_event else "",
        "servicePrincipalName": (ev.app_name or "") if sp_event else "",
        "servicePrincipalCredentialKeyId": (ev.key_id or "") if sp_event else "",
        "servicePrincipalCredentialThumbprint": (ev.thumbprint or "") if sp_event else "",
        "clientCredentialType": ev.key_type or "none",
        "resourceTenantId": tenant.id, "homeTenantId": tenant.id, "homeTenantName": "",
        "resourceServicePrincipalId": "",
        "originalRequestId": ev.id, "uniqueTokenIdentifier": "", "userAgent": ev.user_agent,
        "authenticationProtocol": ev.protocol, "incomingTokenType": "none",
        "authenticationRequirement": "multiFactorAuthentication" if ev.mfa else "singleFactorAuthentication",
        "authenticationMethodsUsed": [], "authenticationDetails": [], "authenticationProcessingDetails": [],
        "authenticationRequirementPolicies": [], "sessionLifetimePolicies": [], "networkLocationDetails": [],
        "tokenIssuerName": "", "tokenIssuerType": "AzureAD", "processingTimeInMilliseconds": 12,
        "crossTenantAccessType": "none", "flaggedForReview": False, "isTenantRestricted": False,
        "signInIdentifier": ev.upn if user_event else None, "autonomousSystemNumber": 0,
    })
    return body


def describe(state: State, ctx: SignInContext, tenant: Tenant, grant: str, form: dict) -> None:
    """Who and what a token request is about, read from the grant it presents (before it is judged)."""
    from .grants import parse_scopes

    scope = form.get("scope")
    if grant == "refresh_token":
        rt = state.refresh_tokens.get(form.get("refresh_token") or "")
        if rt is not None and rt.tenant_id == tenant.id:
            ctx.upn, ctx.mfa, scope = rt.upn, rt.mfa, scope or rt.scopes
    elif grant == "authorization_code":
        code = state.auth_codes.get(form.get("code") or "")
        if code is not None and code.tenant_id == tenant.id:
            ctx.upn, ctx.mfa, scope = code.upn, code.mfa, code.scopes
    elif grant.endswith("device_code"):
        ctx.protocol = "deviceCode"
        dc = state.device_codes.get(form.get("device_code") or form.get("code") or "")
        if dc is not None and dc.tenant_id == tenant.id:
            ctx.upn, ctx.mfa, scope = dc.approved_upn, dc.mfa, dc.scopes
    if scope:
        try:
            ctx.resource = parse_scopes(scope, tenant).resource
        except AADError:
            pass
