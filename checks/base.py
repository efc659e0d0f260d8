"""The one signature every check kind shares, and the result it returns.

A check is an object with ``kind``, ``config_model`` (a pydantic model of its per-integration options)
and ``async run(ctx) -> Outcome``. It never raises for a failure it can name: it returns an Outcome
with a diagnosis code from ``checks.diagnoses``. Anything it does raise becomes an ``error`` result in
the runner, so one broken check never stops the others.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol

from pydantic import BaseModel, ConfigDict

from mailwarden.outcome import SEVERITY_ORDER, Outcome, Status  # noqa: F401 - the kernel's types, re-exported

if TYPE_CHECKING:  # pragma: no cover - typing only
    from datetime import date

    from mailwarden.checks.credentials import CredentialRead
    from mailwarden.endpoints import Endpoints


# -- ports: what a check needs from the application (mailwarden.monitor implements them) ----------------------
class IntegrationConfig(Protocol):
    """One integration as configured (monitor.config.IntegrationConfig)."""

    name: str
    app: str
    flow: Literal["app", "delegated"]
    mailbox: str
    account: str | None
    system: str | None
    checks: dict[str, Any]


class AppConfig(Protocol):
    """An app registration as configured (monitor.config.AppConfig)."""

    tenant: str
    client_id: str
    secret: str | None
    secret_expires_on: date | None
    observe_only: bool  # mailwarden holds no copy of its credential


class TenantConfig(Protocol):
    tenant_id: str
    monitor_app: str | None


class Config(Protocol):
    """What checks read of the whole configuration (monitor.config.Config)."""

    defaults: Any

    def threshold(self, integ: Any, name: str) -> Any: ...

    def tenant_name_of(self, integ: Any) -> str: ...


class TokenProvider(Protocol):
    """Where a check gets the token the consuming system would present (monitor.tokens.TokenProvider). Blocking
    (MSAL): call it in a worker thread."""

    def app_token(self, app_name: str, resource: str, *, fresh: bool = False,
                  tenant_name: str | None = None) -> dict[str, Any]: ...

    def delegated_token(self, integ: Any, scopes: list[str], *, force_refresh: bool = False) -> dict[str, Any]: ...

    def client_credential(self, app_name: str) -> str | dict[str, str]: ...


class CredentialReader(Protocol):
    """Where a check reads an app registration's credentials (monitor.credentials.CredentialReader)."""

    async def read(self, app_name: str) -> CredentialRead: ...


@dataclass(frozen=True, slots=True)
class SignIn:
    """One sign-in of an integration's app by the consuming system, from Entra ID's sign-in log (Graph beta
    ``auditLogs/signIns``). mailwarden's own sign-ins are never among them (matched exactly by correlation id)."""

    id: str
    at: datetime  # createdDateTime
    event_type: str  # interactiveUser | nonInteractiveUser | servicePrincipal
    error_code: int  # status.errorCode: 0 is a success
    failure_reason: str | None  # status.failureReason
    credential_key_id: str | None  # servicePrincipalCredentialKeyId (app-only sign-ins)
    account: str | None  # userPrincipalName (delegated sign-ins)
    origin: str = "consumer"  # "consumer", or "unconfirmed": inside a browser reauthorisation window, not matched


@dataclass(frozen=True, slots=True)
class SignInWindow:
    """What the sign-in log says of one integration's consuming system, as far as mailwarden has read it."""

    state: str  # ok | pending (not read yet) | unlicensed | forbidden | unsupported | error
    note: str | None  # state != ok: why the consuming system is unknown, and how to enable the evidence
    since: datetime | None  # the oldest time the stored sign-ins cover
    read_until: datetime | None  # the newest time read (logs arrive late: recent minutes may still fill in)
    signins: tuple[SignIn, ...] = ()  # the consumer's sign-ins (unconfirmed ones too, labelled), oldest first


class SignInLog(Protocol):
    """Where a check reads the consuming system's sign-ins (monitor.signins implements it)."""

    # Any: the implementation takes monitor.config's IntegrationConfig (a parameter cannot be narrower than here)
    def window(self, integration: Any) -> SignInWindow: ...


@dataclass(frozen=True, slots=True)
class CanarySent:
    """One canary an integration's sending check (smtp, graph_mail) sent, as its stored result records it."""

    tag: str  # the unique tag in its subject: "[mailwarden canary] <integration> <tag>"
    sent_at: datetime  # when the server accepted it (UTC)
    to: str | None  # the address it was sent to


class CanaryLog(Protocol):
    """What the canaries' reading side needs (monitor.canaries implements it from the stored results)."""

    def sent(self, integration: str, since: datetime) -> list[CanarySent]:
        """The canaries ``integration``'s checks sent since ``since``, oldest first."""
        ...

    def seen(self, integration: str, check: str, since: datetime) -> dict[str, datetime]:
        """The canaries (tag -> the server's received time) this reading check found in its mailbox in its runs since
        ``since`` (recorded in its results), so that one collected between two runs is known to have arrived."""
        ...


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
    # the consuming system's sign-ins (the `consumer` check); None where the application has no sign-in log
    signins: SignInLog | None = None
    # the canaries other integrations sent (a reading check's `canary` option); None where nothing is stored
    canaries: CanaryLog | None = None
    # the HTTP clients the Graph and EWS checks of this event loop share (checks.graph_client.SharedHttp: kept-alive
    # connections); None: each check opens its own
    http: Any = None

    def now(self) -> datetime:
        return self.clock()


Flow = Literal["app", "delegated"]
FLOWS: tuple[Flow, ...] = ("app", "delegated")
# One permission a check needs: (resource, alternatives). The resource is checks.permissions' GRAPH or EXCHANGE (a
# name, not a URI: the URI depends on the cloud); any one alternative satisfies it, the first is the one a fix names.
Permission = tuple[str, tuple[str, ...]]


class Check(Protocol):
    """A check kind's declarations (class attributes: what the application knows of the kind without running it) and
    its ``run``. ``tests/checks/test_declarations.py`` checks them for every registered kind."""

    kind: ClassVar[str]
    # Its options (the integration's ``checks.<kind>`` mapping): parsed once, when the configuration is loaded.
    config_model: ClassVar[type[BaseModel]]
    # The kinds that run before it in a cycle, and while one of them fails it is `blocked` (code
    # ``blocked_by_<kind>``): the mailbox checks depend on the token check (checks.TOKEN_KIND).
    depends_on: ClassVar[tuple[str, ...]]
    # The permissions its token must carry, per flow: the token check asks for and verifies those of every check of
    # its integration (checks.permissions.needs). Empty when it adds no permission of its own.
    needs: ClassVar[Mapping[Flow, tuple[Permission, ...]]]
    # It asks Entra ID for a token as the integration's app (in the integration's tenant).
    uses_app_token: ClassVar[bool]
    # It signs in as the integration's app (with mailwarden's copy of its credential): never for an observe_only app.
    needs_credential: ClassVar[bool]
    # The server it talks to, as the name of an ``Endpoints`` field (``imap``, ``pop``, ``smtp``: host and port;
    # ``ews``, ``graph``: a URL); None for a check that talks to no mail server (the breaker's key is that server).
    endpoint: ClassVar[str | None]

    async def run(self, ctx: CheckContext) -> Outcome: ...


# Back-off targets: what a server's "wait" (Retry-After, IMAP's Suggested Backoff Time, EWS BackOffMilliseconds)
# applies to. Microsoft throttles per app at the token endpoint, per app and mailbox in Graph, per mailbox in the
# mail protocols: every check on a throttled target waits, whichever integration it belongs to.
def token_target(tenant_id: str, client_id: str) -> str:
    return f"token:{tenant_id}:{client_id}".lower()


def mailbox_target(protocol: str, mailbox: str, client_id: str | None = None) -> str:
    return f"{protocol}:{client_id + ':' if client_id else ''}{mailbox}".lower()


def targets(kind: str, integration: IntegrationConfig, app: AppConfig, tenant: TenantConfig,
            monitor_client_id: str | None = None, home: TenantConfig | None = None) -> list[str]:
    """The back-off targets a check of ``kind`` touches, the token endpoint first. ``tenant``: the integration's;
    ``home``: the app's own tenant, where its credentials are read with the monitor app (default ``tenant``)."""
    if kind == "secret_expiry":
        return [token_target((home or tenant).tenant_id, monitor_client_id)] if monitor_client_id else []
    if kind == "consumer":
        return []  # it reads the stored sign-in log; the poller's Graph requests have their own back-off
    out = [token_target(tenant.tenant_id, app.client_id)]
    if kind == "graph_mail":
        out.append(mailbox_target("graph", integration.mailbox, app.client_id))
    elif kind == "smtp" and integration.flow == "delegated" and integration.account:
        out.append(mailbox_target("smtp", integration.account))  # SMTP signs in as the delegate
    elif kind in ("imap", "pop", "smtp", "ews"):
        out.append(mailbox_target(kind, integration.mailbox))
    return out
