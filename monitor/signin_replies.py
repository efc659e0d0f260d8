"""What a sign-in-log read answered, and what mailwarden then says about a tenant: pure functions.

The poller (``monitor.signins``) reads Graph beta ``auditLogs/signIns`` per tenant; a refusal is about the tenant
(its licence, the monitor app's permission, its cloud), so it is said once per tenant, never per integration, with
why the consuming systems are unknown and how to make them known (M365_FACTS.md, "What Graph can tell about the
consuming system"; sandbox/README.md, "Endpoints").
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from mailwarden.durations import retry_after
from mailwarden.redact import redact

OK, PENDING, UNLICENSED, FORBIDDEN, UNSUPPORTED, ERROR = "ok", "pending", "unlicensed", "forbidden", "unsupported", \
    "error"
# when an integration's event types disagree, the window says the one that explains most (worst first)
ORDER = (UNSUPPORTED, UNLICENSED, FORBIDDEN, ERROR, PENDING, OK)
NON_PREMIUM = "Authentication_RequestFromNonPremiumTenantOrB2CTenant"
THROTTLE_DEFAULT_S = 60.0  # a 429 without Retry-After
GLOBAL_ONLY = ("global", "custom")  # clouds whose Graph has beta auditLogs/signIns as mailwarden reads it
PERMISSIONS = "AuditLog.Read.All and Directory.Read.All"


@dataclass(frozen=True)
class Refusal:
    """Why a read of one tenant's sign-in log gave nothing: the state it puts the tenant in, what was answered
    (redacted, for the note), and the wait Microsoft asked for (seconds, or None)."""

    state: str
    detail: str
    wait_s: float | None = None


def refusal(status: int, code: str | None, message: str | None, retry_after_header: str | None) -> Refusal:
    """A Graph answer other than 200, by its status and error code (never by its text)."""
    said = f"Microsoft Graph answered {status}" + (f" {code}" if code else "")
    text = redact(message or "").strip().rstrip(".")
    said += f" ({text})" if text else ""
    wait = retry_after(retry_after_header)
    if status == 403 and code == NON_PREMIUM:
        return Refusal(UNLICENSED, said)
    if status == 403:
        return Refusal(FORBIDDEN, said)
    if status == 404:
        return Refusal(UNSUPPORTED, said + ": this Graph has no beta auditLogs/signIns")
    if status == 429:
        return Refusal(ERROR, said, wait or THROTTLE_DEFAULT_S)
    return Refusal(ERROR, said, wait)


def worst(states: list[str]) -> str:
    return min(states, key=ORDER.index) if states else PENDING


def note(state: str, tenant: str, detail: str | None, *, monitor_app: str | None = None,
         last_success: datetime | None = None, poll_every_s: float = 300.0) -> str | None:
    """The one sentence a tenant's state gets: that the consuming systems' own sign-ins are unknown, why, and how
    to make them known. None for ``ok``."""
    if state == OK:
        return None
    head = f"Consuming systems' own sign-ins in tenant {tenant}: unknown"
    why = f": {detail}" if detail else ""
    app = monitor_app or "the tenant's monitor_app"
    how = {
        UNLICENSED: "Entra ID keeps sign-in logs readable through Microsoft Graph only in tenants with Microsoft Entra "
                    "ID P1 or P2: once the tenant has one, the next poll reads them",
        FORBIDDEN: f"grant the monitor app {app} the Microsoft Graph application permissions {PERMISSIONS} with admin "
                   f"consent (Entra admin center > App registrations > {app} > API permissions), and check that its "
                   "own credential works (mailwarden check shows its secret_expiry)",
        UNSUPPORTED: "check the consuming systems' sign-ins in the Entra admin center (Monitoring > Sign-in logs), "
                     "or set tenants.<name>.monitor_app on a global-cloud tenant",
        ERROR: "mailwarden reads again at the next poll; the sign-ins read "
               + (f"until {last_success:%Y-%m-%d %H:%M} UTC " if last_success else "") + "are kept",
        PENDING: f"the first read of its sign-in log runs within {poll_every_s / 60:g} minutes",
    }.get(state, "")
    return f"{head}{why}. {how[:1].upper() + how[1:]}." if how else f"{head}{why}."


def not_read_reason(cloud: str, tenant: str, *, monitor_app: str | None, enabled: bool | None) -> str | None:
    """Why a tenant's sign-in log is not read at all (state ``unsupported``), or None when it is."""
    if enabled is False:
        return "reading sign-in logs is switched off (evidence.signins.enabled: false)"
    if not monitor_app:
        return (f"tenant {tenant} names no monitor_app to read its sign-in log with (tenants.{tenant}.monitor_app: an "
                f"app with {PERMISSIONS})")
    if cloud not in GLOBAL_ONLY:
        return (f"the {cloud} cloud: mailwarden reads sign-in logs (Graph beta auditLogs/signIns, with the event "
                "types and credential key ids the global cloud gives) only in the global cloud")
    return None
