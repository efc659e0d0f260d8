"""Control ops of what Graph tells about the consuming system: the logs' ingestion, other clients' sign-ins,
and Microsoft's incidents as service health lists them (registered in `sandbox.ops.OPS`)."""

from __future__ import annotations

import secrets

from . import logs
from .errors import AADSTS, AADError
from .ops import op
from .reports import SERVICE_NAMES
from .scenario import parse_when
from .state import INCIDENT_EFFECTS, SERVICES, Incident, State, new_id


@op
def ingest_logs(state: State, tenant: str | None = None) -> dict:
    """The logs catch up: every sign-in and audit event still in flight (the tenant's delays) shows now."""
    tid = state.require_tenant(tenant).id if tenant else None
    now = state.now()
    counts = {"signins": 0, "audits": 0}
    with state.lock:
        for name, events in (("signins", state.signins), ("audits", state.audits)):
            for e in events:
                if (tid is None or e.tenant_id == tid) and e.visible_at > now:
                    e.visible_at = now
                    counts[name] += 1
    return counts


@op
def record_signin(state: State, tenant: str, app_id: str, upn: str | None = None, error_code: int = 0,
                  event_type: str = logs.NON_INTERACTIVE, resource: str = "graph", correlation_id: str | None = None,
                  at: str | None = None, ip_address: str = "127.0.0.1", key_id: str | None = None) -> dict:
    """A sign-in by a client outside the sandbox (a user's phone, the consuming system's other host): e.g. the
    interrupts non-interactive logs are full of (50058 silent sign-in without a session, 50140 "Keep me signed in",
    50074 strong authentication) that the sandbox's own flows do not produce. `at`: '-10m' or ISO (default now)."""
    if event_type not in logs.EVENT_TYPES:
        raise ValueError(f"event_type must be one of {logs.EVENT_TYPES}")
    if error_code and int(error_code) not in AADSTS:
        raise ValueError(f"unknown AADSTS code {error_code} (known: {sorted(AADSTS)})")
    with state.lock:
        t = state.require_tenant(tenant)
        app = t.apps.get(app_id.lower())
        ctx = logs.SignInContext(correlation_id=correlation_id or new_id(), event_type=event_type, ip=ip_address,
                                 tenant=t, app=app, client_id=app_id, upn=upn,
                                 resource=logs.RESOURCE_BY_NAME.get(resource.lower(), resource.lower()))
        if key_id and app is not None:
            ctx.credential = next((c for c in list(app.secrets) + list(app.certificates) if c.key_id == key_id), None)
        when = parse_when(at, state.now()) if at else None
        err = AADError(int(error_code)) if error_code else None
        ev = logs.record(state, ctx, err, created=when)
    return {"id": ev.id, "correlationId": ev.correlation_id, "createdDateTime": logs.gtime(ev.created),
            "visible_at": ev.visible_at.isoformat()}


ISSUE_PREFIX = {"exchange": "EX", "entra": "AD"}  # Exchange Online's EX is documented; Entra's prefix is assumed
HEALTH_STATUSES = ("investigating", "serviceDegradation", "serviceInterruption", "restoringService",
                   "extendedRecovery", "verifyingService", "serviceRestored", "falsePositive",
                   "investigationSuspended", "postIncidentReviewPublished")


@op
def open_incident(state: State, service: str, effect: str = "html", title: str = "", retry_after: int = 30,
                  issue_id: str | None = None, status: str | None = None, classification: str = "incident",
                  impact_description: str = "", feature: str = "", feature_group: str = "") -> dict:
    """A Microsoft incident on Entra ID (the token endpoint answers 503 HTML, 500 empty or AADSTS90033) or
    Exchange Online (Graph 503, EWS 503, SMTP 421), until closed; `effect: none` is only listed by service health.
    Service health (GET /admin/serviceAnnouncement/issues) lists it with its title, status and posts."""
    if service not in SERVICES:
        raise ValueError(f"service must be one of {SERVICES}")
    if effect not in INCIDENT_EFFECTS:
        raise ValueError(f"effect must be one of {INCIDENT_EFFECTS}")
    if classification not in ("incident", "advisory"):
        raise ValueError("classification must be incident or advisory")
    default = "serviceInterruption" if service == "entra" and effect in ("html", "empty") else "serviceDegradation"
    if (status or default) not in HEALTH_STATUSES:
        raise ValueError(f"status must be one of {HEALTH_STATUSES}")
    inc = Incident(id=new_id(), service=service, effect=effect, title=title or f"{service} degraded",
                   retry_after=int(retry_after), status=status or default, classification=classification,
                   impact_description=impact_description or f"Users may be unable to use {SERVICE_NAMES[service]}.",
                   feature=feature, feature_group=feature_group,
                   issue_id=issue_id or f"{ISSUE_PREFIX[service]}{secrets.randbelow(900000) + 100000}")
    inc.posts.append((inc.started, f"Title: {inc.title}\n\nUser impact: {inc.impact_description}"))
    with state.lock:
        state.incidents.append(inc)
    return {"id": inc.id, "issue_id": inc.issue_id}


@op
def set_incident_status(state: State, id: str, status: str, post: str | None = None) -> dict:  # noqa: A002
    """Microsoft posts an update: the issue's status moves on (restoringService, extendedRecovery, ...)."""
    if status not in HEALTH_STATUSES:
        raise ValueError(f"status must be one of {HEALTH_STATUSES}")
    with state.lock:
        inc = next((i for i in state.incidents if i.id == id or i.issue_id == id), None)
        if inc is None:
            raise KeyError(f"no incident {id}")
        inc.status, inc.last_modified = status, state.now()
        inc.posts.append((inc.last_modified, post or f"Current status: {status}"))
        return {"id": inc.id, "issue_id": inc.issue_id, "status": inc.status}


@op
def close_incident(state: State, id: str | None = None) -> dict:  # noqa: A002 - the incident's id
    """The service is restored: answers are normal again; service health keeps the issue, resolved."""
    closed = 0
    with state.lock:
        for inc in state.incidents:
            if inc.ended is None and (id is None or id in (inc.id, inc.issue_id)):
                inc.ended = inc.last_modified = state.now()
                inc.status = "serviceRestored"
                inc.posts.append((inc.ended, "Final status: the service is restored."))
                closed += 1
    return {"closed": closed}
