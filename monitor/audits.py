"""Who changed it (issue 16): the directory changes to monitored apps, read from Entra ID's directory audit log and
named in the alerts of the failures they explain.

Each sign-in poll (``monitor.signins``) reads every polled tenant's Graph ``auditLogs/directoryAudits`` once
(AuditLog.Read.All; every edition, no Entra ID P1/P2: M365_FACTS.md), from its last read minus the overlap, with the
filters Microsoft documents for it (directoryaudit.md: ``activityDateTime`` ge, ``loggedByService`` eq; the
activities below are all Core Directory's). An event is kept when its activity is one of ``ACTIVITIES`` and it names
a monitored app: by the object id of the app's registration or service principal (``resolve_ids``: the monitor app
looks them up once a day) or by its app id in the event's modified properties. What it did is classified here
(``classify``) into a ``change``; the alerts of a diagnosis name the changes that explain it (``EXPLAINS``), made to
the integration's own app (its service principal in the integration's tenant, its registration in its home
tenant), from ``MATCH_BEFORE`` before the failure began until just after (``evidence``). No matching event: nothing
is said, nothing guessed.

Activity names and shapes: Microsoft Entra audit log categories and activities (learn.microsoft.com/entra/identity/
monitoring-health/reference-audit-activities) and the captured events sandbox/audit.py cites: the credential event's
name is compared with its dash as a hyphen, since the reference table writes a hyphen and the events an en dash.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from mailwarden.monitor.db_signins import WINDOW_MARGIN
from mailwarden.monitor.signin_plan import when

if TYPE_CHECKING:  # pragma: no cover
    from mailwarden.monitor.config import Config, IntegrationConfig
    from mailwarden.monitor.db import Store
    from mailwarden.monitor.models import DirectoryAuditRecord

POLL_PREFIX = "directory_audits.poll."  # meta: per tenant, where reading its audit log stands
SERVICE = "Core Directory"
APPLICATION, SERVICE_PRINCIPAL = "application", "service_principal"
IDS_PREFIX = "directory_audits.ids."  # meta: per tenant, the object ids of its monitored apps
IDS_TTL = timedelta(days=1)  # looked up again after this (an app deleted and registered again gets new ids)
TEXT_MAX = 200  # outside text kept per column
SHOWN = 3  # events named per integration in an alert (the newest)
# How long before a failure began a change can have caused it: Entra ID honours an access token issued before a
# change until it expires (60-90 minutes by default, up to 28 hours for clients capable of continuous access
# evaluation), and a failure begins when a check next runs and fails its threshold; older changes are left out,
# since a check that kept working long after one shows it was not the cause.
MATCH_BEFORE = timedelta(hours=48)

CREDENTIALS = "Update application - Certificates and secrets management"
# activity -> the change it can be (``classify`` decides from its modified properties)
ACTIVITIES = {
    "Consent to application": "consent_granted",
    "Add app role assignment to service principal": "consent_granted",
    "Add delegated permission grant": "consent_granted",
    "Revoke consent": "consent_removed",
    "Remove app role assignment from service principal": "consent_removed",
    "Remove delegated permission grant": "consent_removed",
    CREDENTIALS: "credential",
    "Update service principal": "service_principal",
    "Update application": "application",
    "Delete application": "app_deleted",
    "Remove service principal": "sp_removed",
    "Add owner to application": "owner_added",
    "Remove owner from application": "owner_removed",
    "Remove app role assignment from user": "user_unassigned",
}
# change -> what it did, as an alert says it ({subject}: what was removed or added)
CHANGES = {
    "consent_granted": ("Consent to {subject} granted", "Consent granted"),
    "consent_removed": ("Consent to {subject} removed", "Consent removed"),
    "credential_removed": ("{subject} removed from the app registration",
                           "A credential removed from the app registration"),
    "credential_added": ("{subject} added to the app registration",
                         "A credential added to the app registration"),
    "sp_disabled": ("Sign-in disabled on the enterprise application", None),
    "sp_enabled": ("Sign-in enabled on the enterprise application", None),
    "assignment_required": ("User assignment made required on the enterprise application", None),
    "redirect_uris_changed": ("Redirect URIs of the app registration changed", None),
    "app_deleted": ("App registration deleted", None),
    "sp_removed": ("Enterprise application (service principal) deleted", None),
    "owner_added": ("Owner {subject} added to the app registration", "An owner added to the app registration"),
    "owner_removed": ("Owner {subject} removed from the app registration",
                      "An owner removed from the app registration"),
    "user_unassigned": ("User {subject} unassigned from the enterprise application",
                        "A user unassigned from the enterprise application"),
}
# diagnosis code -> the changes that explain it
EXPLAINS = {
    "consent_missing": ("consent_removed",),
    "permission_missing": ("consent_removed",),
    "secret_invalid": ("credential_removed",),
    "certificate_invalid": ("credential_removed",),
    "credential_not_found": ("credential_removed",),
    "app_disabled": ("sp_disabled",),
    "app_not_found": ("app_deleted", "sp_removed"),
    "app_not_in_tenant": ("sp_removed",),
    "user_not_assigned": ("assignment_required", "user_unassigned"),
    "redirect_uri_mismatch": ("redirect_uris_changed",),
    "graph_unreadable": ("owner_removed",),  # a monitor app that reads the app as its owner (…ReadWrite.OwnedBy)
}
# modified properties that name the monitored app: name -> (what they name, the object they belong to)
_NAMING = {
    "serviceprincipal.objectid": ("id", SERVICE_PRINCIPAL), "serviceprincipal.appid": ("app", SERVICE_PRINCIPAL),
    "targetid.serviceprincipalnames": ("app", SERVICE_PRINCIPAL),
    "application.objectid": ("id", APPLICATION), "application.appid": ("app", APPLICATION),
}
_KEY = re.compile(r"KeyIdentifier=([^,\]]*),KeyType=([^,\]]*)(?:,[^\]]*?)?,DisplayName=([^\]]*)\]")


def activity_of(event: dict[str, Any]) -> str:
    """The event's activity name, its dashes as hyphens (the reference table and the events disagree)."""
    return str(event.get("activityDisplayName") or "").replace("\u2013", "-").replace("\u2014", "-").strip()


def audit_filter(since: datetime) -> str:
    """The $filter of a tenant's read: Core Directory's events from ``since`` (directoryaudit.md documents eq for
    loggedByService and ge for activityDateTime)."""
    at = since.strftime("%Y-%m-%dT%H:%M:%SZ")
    return f"activityDateTime ge {at} and loggedByService eq '{SERVICE}'"


@dataclass(frozen=True)
class AppIds:
    """A monitored app as a tenant's directory names it: its client id and the object ids there (None: none there,
    or not looked up)."""

    app_id: str  # lower case
    application: str | None = None
    service_principal: str | None = None


def _value(raw: Any) -> Any:
    """A modifiedProperties value: a JSON text (``"\\"x\\""``, ``"[true]"``); a one-item list as its item."""
    if raw is None:
        return None
    try:
        value = json.loads(raw) if isinstance(raw, str) else raw
    except ValueError:
        return raw
    return value[0] if isinstance(value, list) and len(value) == 1 else value


def _props(target: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    out = {}
    for p in target.get("modifiedProperties") or []:
        if isinstance(p, dict) and p.get("displayName"):
            out[str(p["displayName"]).lower()] = (_value(p.get("oldValue")), _value(p.get("newValue")))
    return out


def _named(event: dict[str, Any], apps: Iterable[AppIds]) -> tuple[AppIds, str] | None:
    """The monitored app the event names, and which of its objects (by object id, or its app id in a property). A
    grant's first target is the resource's service principal (Microsoft Graph's, say): a monitored app there is the
    resource, not the client whose consent changed, so only the client's properties and later targets name it."""
    grant = ACTIVITIES.get(activity_of(event)) in ("consent_granted", "consent_removed") \
        and activity_of(event) not in ("Consent to application", "Revoke consent")
    by_id: dict[str, tuple[AppIds, str]] = {}
    by_app: dict[str, AppIds] = {}
    for a in apps:
        by_app[a.app_id] = a
        for oid, kind in ((a.application, APPLICATION), (a.service_principal, SERVICE_PRINCIPAL)):
            if oid:
                by_id[oid.lower()] = (a, kind)
    for i, t in enumerate(event.get("targetResources") or []):
        if not isinstance(t, dict):
            continue
        hit = by_id.get(str(t.get("id") or "").lower()) if not (grant and i == 0) else None
        if hit is not None:
            return hit
        for name, (old, new) in _props(t).items():
            naming = _NAMING.get(name)
            if naming is None:  # a property that names no object
                continue
            what, kind = naming
            for v in (old, new):
                v = str(v or "").strip().lower()
                if what == "id" and v in by_id:
                    return by_id[v][0], kind
                if what == "app" and v in by_app:
                    return by_app[v], kind
    return None


def _keys(value: Any) -> dict[str, str]:
    """KeyDescription -> {key id: 'Client secret|Certificate "name" (key id)'}."""
    out = {}
    for item in value if isinstance(value, list) else [value]:
        for key_id, kind, name in _KEY.findall(str(item or "")):
            what = "Certificate" if "X509" in kind or "Asymmetric" in kind else "Client secret"
            out[key_id] = f"{what} \"{name}\" ({key_id})" if name else f"{what} {key_id}"
    return out


def _all_props(event: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    out: dict[str, tuple[Any, Any]] = {}
    for t in event.get("targetResources") or []:
        if isinstance(t, dict):
            out.update(_props(t))
    return out


def _change(activity: str, event: dict[str, Any]) -> tuple[str, str | None] | None:
    """(change, subject) of a relevant event, or None when it changed nothing an alert would name."""
    kind = ACTIVITIES.get(activity)
    props = _all_props(event)
    if kind in ("consent_granted", "consent_removed"):
        removed = kind == "consent_removed"
        role = props.get("approle.value")
        scope = props.get("delegatedpermissiongrant.scope")
        if role is not None:
            subject = role[0 if removed else 1]
            return kind, f"{subject} (application permission)" if subject else None
        if scope is not None:
            subject = str(scope[0 if removed else 1] or "").strip()
            return kind, f"{subject} (delegated permission)" if subject else None
        return kind, None
    if kind == "credential":
        old, new = props.get("keydescription", (None, None))
        before, after = _keys(old), _keys(new)
        gone = [v for k, v in before.items() if k not in after]
        if gone:
            return "credential_removed", ", ".join(gone)
        added = [v for k, v in after.items() if k not in before]
        return ("credential_added", ", ".join(added)) if added else None
    if kind == "service_principal":
        if "accountenabled" in props:
            enabled = str(props["accountenabled"][1]).lower() == "true"
            return ("sp_enabled" if enabled else "sp_disabled"), None
        if str(props.get("approleassignmentrequired", (None, None))[1]).lower() == "true":
            return "assignment_required", None
        return None
    if kind == "application":
        return ("redirect_uris_changed", None) if "appaddress" in props else None
    if kind in ("owner_added", "owner_removed"):
        owner = next((t for t in event.get("targetResources") or []
                      if isinstance(t, dict) and t.get("type") in ("User", "ServicePrincipal")), None)
        return kind, (owner.get("userPrincipalName") or owner.get("displayName")) if owner else None
    if kind == "user_unassigned":
        upn = props.get("user.upn", (None, None))[0]
        return kind, str(upn) if upn else None
    if kind is not None:
        return kind, None
    return None


def _cut(value: Any) -> str | None:
    text = str(value).strip() if value is not None else ""
    return text[:TEXT_MAX] or None


def classify(event: dict[str, Any], apps: Iterable[AppIds], tenant_id: str, now: datetime) -> dict[str, Any] | None:
    """The row to store for an event (``models.DirectoryAuditRecord``), or None: not a relevant activity, not a
    monitored app, failed (nothing changed), or without an id or time."""
    activity = activity_of(event)
    at = when(event.get("activityDateTime"))
    if activity not in ACTIVITIES or not event.get("id") or at is None:
        return None
    if str(event.get("result") or "success").lower() != "success":
        return None
    named = _named(event, apps)
    change = _change(activity, event) if named is not None else None
    if named is None or change is None:
        return None
    app, target = named
    by = b if isinstance(b := event.get("initiatedBy"), dict) else {}
    user = u if isinstance(u := by.get("user"), dict) else None
    actor_app = a if isinstance(a := by.get("app"), dict) else None
    row = dict(audit_id=str(event["id"])[:TEXT_MAX], tenant_id=tenant_id.lower(), app_id=app.app_id, target=target,
               change=change[0], activity=_cut(event.get("activityDisplayName")) or activity, activity_at=at,
               subject=_cut(change[1]), initiator_upn=None, initiator_name=None, initiator_app_id=None, read_at=now)
    if user and (user.get("userPrincipalName") or user.get("displayName")):
        row.update(initiator_upn=_cut(user.get("userPrincipalName")), initiator_name=_cut(user.get("displayName")))
    elif actor_app and (actor_app.get("appId") or actor_app.get("displayName")):
        row.update(initiator_name=_cut(actor_app.get("displayName")), initiator_app_id=_cut(actor_app.get("appId")))
    return row


# -- where a tenant's read stands ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class AuditPoll:
    """Where reading a tenant's directory audit log stands: ``state`` as the sign-in log's (``signin_replies``), what
    was answered when it was not ok, and what has been read: from ``covered_from`` to ``read_until`` without a gap."""

    state: str
    checked_at: datetime
    detail: str | None = None
    last_success_at: datetime | None = None
    covered_from: datetime | None = None
    read_until: datetime | None = None


def load_poll(store: Store, tenant_id: str) -> AuditPoll | None:
    raw = store.meta.get_meta(POLL_PREFIX + tenant_id.lower())
    try:
        doc = json.loads(raw) if raw else None
        if not isinstance(doc, dict):
            return None
        fields: dict[str, Any] = {k: (datetime.fromisoformat(v) if k.endswith(("_at", "_from", "_until")) and v else v)
                                  for k, v in doc.items()}
        return AuditPoll(**fields)
    except (ValueError, TypeError):
        return None


def save_poll(store: Store, tenant_id: str, poll: AuditPoll) -> None:
    doc = {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in vars(poll).items()}
    store.meta.set_meta(POLL_PREFIX + tenant_id.lower(), json.dumps(doc))


# -- the object ids of the monitored apps -----------------------------------------------------------------------
def load_ids(store: Store, tenant_id: str) -> dict[str, dict[str, Any]]:
    raw = store.meta.get_meta(IDS_PREFIX + tenant_id.lower())
    try:
        doc = json.loads(raw) if raw else {}
    except ValueError:
        return {}
    return doc if isinstance(doc, dict) else {}


def save_ids(store: Store, tenant_id: str, doc: dict[str, dict[str, Any]]) -> None:
    store.meta.set_meta(IDS_PREFIX + tenant_id.lower(), json.dumps(doc, sort_keys=True))


def due_ids(doc: dict[str, dict[str, Any]], app_ids: Iterable[str], now: datetime) -> list[str]:
    """The apps whose object ids were never looked up, or not within ``IDS_TTL``."""
    out = []
    for a in app_ids:
        at = (doc.get(a) or {}).get("at")
        if not at or now - datetime.fromisoformat(at) >= IDS_TTL:
            out.append(a)
    return out


def app_ids(doc: dict[str, dict[str, Any]], apps: Iterable[str]) -> list[AppIds]:
    return [AppIds(a, (doc.get(a) or {}).get(APPLICATION), (doc.get(a) or {}).get(SERVICE_PRINCIPAL)) for a in apps]


def monitored_apps(config: Config, tenant: str) -> list[str]:
    """The client ids (lower case) of the apps whose changes a tenant's audit log can hold: the apps its (unpaused)
    integrations sign in with there, and the apps registered there that any integration uses."""
    out: set[str] = set()
    for integ in config.integrations:
        app = config.apps.get(integ.app)
        if integ.paused or app is None:
            continue
        if config.tenant_name_of(integ) == tenant or app.tenant == tenant:
            out.add(app.client_id.lower())
    return sorted(out)


# -- what an alert names ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Evidence:
    """One directory change named in an alert."""

    change: str
    activity: str
    at: datetime
    subject: str | None
    initiator_upn: str | None
    initiator_name: str | None
    initiator_app_id: str | None
    tenant: str  # the config's tenant name

    def what(self) -> str:
        with_subject, without = CHANGES.get(self.change, (self.change, None))
        if self.change in ("consent_granted", "consent_removed") and "app role" in self.activity:
            with_subject, without = "Admin " + with_subject[0].lower() + with_subject[1:], without
        if self.subject and "{subject}" in with_subject:
            return with_subject.format(subject=self.subject)
        return without or with_subject.replace(" {subject}", "")

    def who(self) -> str:
        """The user (UPN, else display name) or the app (display name and app id) that made the change."""
        if self.initiator_upn or (self.initiator_name and not self.initiator_app_id):
            return self.initiator_upn or self.initiator_name or ""
        if self.initiator_app_id:
            return f"app {self.initiator_name} ({self.initiator_app_id})" if self.initiator_name \
                else f"app {self.initiator_app_id}"
        return "an initiator the directory audit does not name"

    def as_dict(self) -> dict[str, Any]:
        return {"change": self.change, "activity": self.activity, "at": self.at.isoformat(), "what": self.what(),
                "by": self.who(), "tenant": self.tenant}


def evidence(store: Store, config: Config, integ: IntegrationConfig, code: str | None,
             since: datetime) -> list[Evidence]:
    """The directory changes that explain ``code`` for the integration's app, made from ``MATCH_BEFORE`` before the
    failure began (``since``) until ``WINDOW_MARGIN`` after (Entra's clock against ours), newest first: its service
    principal's in the integration's tenant, its registration's in its home tenant. Empty when none is stored."""
    changes = EXPLAINS.get(code or "")
    app = config.apps.get(integ.app)
    if not changes or app is None:
        return []
    names = {config.tenant_name_of(integ): SERVICE_PRINCIPAL, app.tenant: APPLICATION}
    wanted: dict[str, set[str]] = {}
    for name, target in names.items():
        tenant = config.tenants.get(name)
        if tenant is not None:
            wanted.setdefault(tenant.tenant_id.lower(), set()).add(target)
    if config.tenant_name_of(integ) == app.tenant:  # one tenant: both objects
        wanted = {t: {APPLICATION, SERVICE_PRINCIPAL} for t in wanted}
    rows: list[DirectoryAuditRecord] = store.signins.directory_audits_of(
        list(wanted), app.client_id, changes, since - MATCH_BEFORE, since + WINDOW_MARGIN, limit=SHOWN * 4)
    tenant_names = {t.tenant_id.lower(): n for n, t in config.tenants.items()}
    out = [Evidence(r.change, r.activity, r.activity_at, r.subject, r.initiator_upn, r.initiator_name,
                    r.initiator_app_id, tenant_names.get(r.tenant_id, r.tenant_id))
           for r in rows if r.target in wanted.get(r.tenant_id, set())]
    return out[:SHOWN]


def incident_evidence(store: Store, config: Config, incidents: Iterable[Any]) -> dict[int, list[tuple[str, Evidence]]]:
    """Incident id -> (integration, change) for each member whose failure a stored directory change explains
    (``evidence`` from when the member's failure began), for the alerts (``alerts.messages.Context``)."""
    out: dict[int, list[tuple[str, Evidence]]] = {}
    for inc in incidents:
        found: list[tuple[str, Evidence]] = []
        for m in inc.members or []:
            if m.get("code") not in EXPLAINS or m.get("status") not in ("fail", "error"):
                continue
            try:
                integ = config.integration(m["integration"])
            except KeyError:  # left the config
                continue
            since = datetime.fromisoformat(m["since"]) if m.get("since") else inc.opened_at
            found += [(integ.name, e) for e in evidence(store, config, integ, m["code"], since)
                      if (integ.name, e) not in found]
        if found and inc.id is not None:
            out[inc.id] = found
    return out
