"""What a sign-in poll reads (``monitor.signins``): per tenant, one request chain per event type and app its
integrations use (app-only: ``servicePrincipal``; delegated: ``interactiveUser`` and ``nonInteractiveUser``), each
with one ``$filter`` naming one event type, as Microsoft refuses a mix (M365_FACTS.md; sandbox/odata.py accepts the
same). Pure functions of the configuration.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from mailwarden.monitor import signin_replies as replies
from mailwarden.monitor.config import Config

INTERACTIVE, NON_INTERACTIVE, SERVICE_PRINCIPAL = "interactiveUser", "nonInteractiveUser", "servicePrincipal"
EVENT_TYPES = {"app": (SERVICE_PRINCIPAL,), "delegated": (INTERACTIVE, NON_INTERACTIVE)}


@dataclass(frozen=True)
class Target:
    """One request chain per poll: a tenant's sign-ins of one event type to one app."""

    tenant: str  # the tenant's name in the config
    tenant_id: str  # lower case
    app_id: str  # lower case
    event_type: str

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.tenant_id, self.event_type, self.app_id)


def signin_filter(event_type: str, app_id: str, since: datetime) -> str:
    """The one $filter of a request: one event type (Microsoft refuses two), one app, from ``since``."""
    at = since.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return f"signInEventTypes/any(t: t eq '{event_type}') and appId eq '{app_id}' and createdDateTime ge {at}"


def beta_base(graph: str) -> str:
    """Graph's beta root beside the configured v1.0 one."""
    root = graph.rstrip("/")
    return (root.rsplit("/", 1)[0] if root.rsplit("/", 1)[-1].lower() in ("v1.0", "beta") else root) + "/beta"


def targets_of(config: Config) -> dict[str, list[Target]]:
    """Per tenant (its config name) whose log is read, the distinct (app, event type) its integrations need."""
    out: dict[str, dict[tuple[str, str], Target]] = {}
    for integ in config.integrations:
        app = config.apps.get(integ.app)
        if integ.paused or app is None:
            continue
        tenant = config.tenant_name_of(integ)  # the consuming system signs in there (a multitenant app: not home)
        if not_read(config, tenant) is not None:
            continue
        tid = config.tenants[tenant].tenant_id.lower()
        for et in EVENT_TYPES[integ.flow]:
            out.setdefault(tenant, {}).setdefault((app.client_id, et), Target(tenant, tid, app.client_id, et))
    return {t: list(v.values()) for t, v in out.items()}


def not_read(config: Config, tenant: str) -> str | None:
    """Why the tenant's sign-in log is not read at all (no monitor_app, switched off, a national cloud), or None."""
    t = config.tenants[tenant]
    return replies.not_read_reason(config.cloud, tenant, monitor_app=t.monitor_app,
                                   enabled=config.evidence.signins.enabled)


def when(value: str | None) -> datetime | None:
    """A Graph DateTimeOffset (``Z``, up to 7 fractional digits) as an aware UTC datetime."""
    if not value:
        return None
    head, _, frac = value.rstrip("Z").partition(".")
    return datetime.fromisoformat(head + (f".{frac[:6]}" if frac else "")).replace(tzinfo=UTC)
