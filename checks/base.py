"""The one signature every check kind shares, and the result it returns.

A check is an object with ``kind``, ``config_model`` (a pydantic model of its per-integration options)
and ``async run(ctx) -> Outcome``. It never raises for a failure it can name: it returns an Outcome
with a diagnosis code from ``checks.diagnoses``. Anything it does raise becomes an ``error`` result in
the runner, so one broken check never stops the others.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:  # pragma: no cover - typing only
    from monitor.config import AppConfig, Config, IntegrationConfig, TenantConfig
    from monitor.credentials import CredentialReader
    from monitor.endpoints import Endpoints
    from monitor.tokens import TokenProvider


class Status(StrEnum):
    """Raw status of one result, before failure/success thresholds (DESIGN.md, Contracts)."""

    OK = "ok"
    WARN = "warn"
    FAIL = "fail"
    ERROR = "error"
    BLOCKED = "blocked"


# Worst first: used to sort integrations and to pick an exit code.
SEVERITY_ORDER = {Status.FAIL: 0, Status.ERROR: 1, Status.WARN: 2, Status.BLOCKED: 3, Status.OK: 4}


@dataclass
class Outcome:
    status: Status
    code: str | None = None  # diagnosis code; None only for a plain ok
    summary: str = ""
    latency_ms: float | None = None
    metrics: dict[str, Any] = field(default_factory=dict)  # e.g. days_left, message_count
    transcript: list[str] = field(default_factory=list)  # redacted protocol lines, kept for failures
    raw: str | None = None  # redacted raw reply, kept for `unclassified`
    retry_after_s: float | None = None  # a throttled check asks the scheduler to wait this long
    # the target the server's back-off applies to (see ``targets``): every check on it waits, not only this one
    backoff_target: str | None = None
    recheck_s: float | None = None  # run this check again this soon, instead of at its interval

    @classmethod
    def ok(cls, summary: str, **kw: Any) -> Outcome:
        return cls(Status.OK, None, summary, **kw)


class NoOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")


@dataclass
class CheckContext:
    """What a check may use. Built by the runner for one (integration, check) run."""

    config: Config
    integration: IntegrationConfig
    app: AppConfig
    tenant: TenantConfig
    options: BaseModel
    tokens: TokenProvider
    credentials: CredentialReader
    endpoints: Endpoints
    timeout_s: float
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    # Shared between the checks of one cycle (e.g. the app credentials read once per cycle).
    cycle_cache: dict[str, Any] = field(default_factory=dict)
    # the event loop the check runs on: a check's worker thread reaches async helpers (the credential read) here
    loop: Any = None

    def now(self) -> datetime:
        return self.clock()


class Check(Protocol):
    kind: ClassVar[str]
    config_model: ClassVar[type[BaseModel]]
    # Mailbox checks depend on the token check and are `blocked` while it fails.
    depends_on_token: ClassVar[bool]

    async def run(self, ctx: CheckContext) -> Outcome: ...


# Back-off targets: what a server's "wait" (Retry-After, IMAP's Suggested Backoff Time, EWS BackOffMilliseconds)
# applies to. Microsoft throttles per app at the token endpoint, per app and mailbox in Graph, per mailbox in the
# mail protocols: every check on a throttled target waits, whichever integration it belongs to.
def token_target(tenant_id: str, client_id: str) -> str:
    return f"token:{tenant_id}:{client_id}".lower()


def mailbox_target(protocol: str, mailbox: str, client_id: str | None = None) -> str:
    return f"{protocol}:{client_id + ':' if client_id else ''}{mailbox}".lower()


def targets(kind: str, integration: IntegrationConfig, app: AppConfig, tenant: TenantConfig,
            monitor_client_id: str | None = None) -> list[str]:
    """The back-off targets a check of ``kind`` touches, the token endpoint first."""
    if kind == "secret_expiry":
        return [token_target(tenant.tenant_id, monitor_client_id)] if monitor_client_id else []
    out = [token_target(tenant.tenant_id, app.client_id)]
    if kind == "graph_mail":
        out.append(mailbox_target("graph", integration.mailbox, app.client_id))
    elif kind == "smtp" and integration.flow == "delegated" and integration.account:
        out.append(mailbox_target("smtp", integration.account))  # SMTP signs in as the delegate
    elif kind in ("imap", "pop", "smtp", "ews"):
        out.append(mailbox_target(kind, integration.mailbox))
    return out
