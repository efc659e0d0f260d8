"""The stored shape of mailwarden: integrations, credential metadata, results, states, transitions,
encrypted token caches and a small key/value table.

Every timestamp is timezone-aware UTC in Python whatever the backend (SQLite keeps no offset: see
``UTCDateTime``). No column ever holds a secret value: credentials are references and metadata, token
caches are ciphertext, and the text of server replies is redacted by the store before it is written.
Changing a table here needs a migration in ``monitor/migrations/versions``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Index, LargeBinary, Table, Text, UniqueConstraint, false, text
from sqlmodel import Field, SQLModel

from mailwarden.alerts.records import AlertDelivery, Incident, Notification
from mailwarden.columns import ts as _ts

# the alert tables (incidents, the outbox, send attempts) are the alerts layer's own records, stored here too
ALERT_TABLES = (Incident, AlertDelivery, Notification)


class Integration(SQLModel, table=True):
    __tablename__ = "integrations"
    __table_args__ = (UniqueConstraint("name", name="uq_integrations_name"),)

    id: int | None = Field(default=None, primary_key=True)
    name: str
    tenant: str
    app: str
    flow: str  # app | delegated
    mailbox: str
    account: str | None = None
    system: str | None = None
    tags: list[str] = Field(default_factory=list, sa_type=JSON)
    owners: list[str] = Field(default_factory=list, sa_type=JSON)
    checks: list[str] = Field(default_factory=list, sa_type=JSON)
    paused: bool = False
    config_hash: str = ""
    created_at: datetime = _ts()
    updated_at: datetime = _ts()
    removed_at: datetime | None = _ts(nullable=True, default=None)  # set when it leaves the config


class Credential(SQLModel, table=True):
    """Metadata of one credential of an app registration (never its value)."""

    __tablename__ = "credentials"
    # One row per (client_id, kind, key_id), a missing key_id (a config-only credential) counting as one
    # value: a plain UNIQUE would let NULLs repeat on both backends.
    __table_args__ = (
        Index("ux_credentials_identity", "client_id", "kind", text("coalesce(key_id, '')"), unique=True),
    )

    id: int | None = Field(default=None, primary_key=True)
    tenant: str
    app: str  # the app's name in the config
    client_id: str
    kind: str  # client_secret | certificate | refresh_token
    reference: str | None = None  # e.g. "env:HELPDESK_SECRET": the reference, not its value
    key_id: str | None = None  # Graph keyId
    display_name: str | None = None
    hint: str | None = None  # first 3 characters of the secret, as Graph gives it
    thumbprint: str | None = None
    start_at: datetime | None = _ts(nullable=True, default=None)
    expires_at: datetime | None = _ts(nullable=True, index=True, default=None)
    source: str  # graph | config
    first_seen_at: datetime = _ts()
    last_seen_at: datetime = _ts()
    removed_at: datetime | None = _ts(nullable=True, default=None)  # no longer on the app
    last_verified_at: datetime | None = _ts(nullable=True, default=None)


class CheckResult(SQLModel, table=True):
    __tablename__ = "check_results"
    __table_args__ = (Index("ix_check_results_integration_check_at", "integration", "check", "checked_at"),
                      # the failures the prune keeps (db_history._failed): not a table scan (migration 0012)
                      Index("ix_check_results_failures", "integration", "check", "checked_at",
                            sqlite_where=text("status NOT IN ('ok', 'warn')"),
                            postgresql_where=text("status NOT IN ('ok', 'warn')")))

    id: int | None = Field(default=None, primary_key=True)
    integration: str
    check: str
    status: str  # ok | warn | fail | error | blocked
    code: str | None = None
    summary: str = Field(default="", sa_type=Text)
    latency_ms: float | None = None
    details: dict[str, Any] = Field(default_factory=dict, sa_type=JSON)  # metrics
    transcript: str | None = Field(default=None, sa_type=Text)  # redacted
    raw: str | None = Field(default=None, sa_type=Text)  # redacted
    checked_at: datetime = _ts(index=True)


class CheckState(SQLModel, table=True):
    __tablename__ = "check_states"
    __table_args__ = (UniqueConstraint("integration", "check", name="uq_check_states_integration_check"),)

    id: int | None = Field(default=None, primary_key=True)
    integration: str
    check: str
    status: str = "new"  # new | paused | ok | warn | fail | error | blocked (after thresholds)
    failures: int = 0
    successes: int = 0
    since: datetime | None = _ts(nullable=True, default=None)
    last_status: str | None = None  # raw status of the latest result
    last_code: str | None = None
    last_result_id: int | None = None
    last_checked_at: datetime | None = _ts(nullable=True, default=None)
    last_ok_at: datetime | None = _ts(nullable=True, default=None)
    not_before: datetime | None = _ts(nullable=True, default=None)  # throttled: do not run before

    def covers(self, due: datetime) -> bool:
        """A result taken at or after ``due`` is stored: the check has run for that due time (queue mode runs each
        due check once, whoever ran it: a worker, the leader during an outage, a job run again)."""
        return self.last_checked_at is not None and self.last_checked_at >= due


class Transition(SQLModel, table=True):
    __tablename__ = "transitions"
    __table_args__ = (Index("ix_transitions_integration_at", "integration", "at"),)

    id: int | None = Field(default=None, primary_key=True)
    integration: str
    check: str
    from_status: str
    to_status: str
    code: str | None = None
    result_id: int | None = None  # None for a pause
    at: datetime = _ts()
    silent: bool = False
    # The alerts dispatcher claims rows with UPDATE ... WHERE processed_at IS NULL.
    processed_at: datetime | None = _ts(nullable=True, index=True, default=None)


class TokenCache(SQLModel, table=True):
    """An MSAL token cache, encrypted elsewhere: only bytes here. One per (tenant, app, account): the integrations
    of one account share it (migration 0009)."""

    __tablename__ = "token_caches"
    __table_args__ = (UniqueConstraint("token_key", name="uq_token_caches_token_key"),)

    id: int | None = Field(default=None, primary_key=True)
    # "<tenant id>:<client id>:<account>", lower case; None on a row from before migration 0009 until adopted
    token_key: str | None = None
    integration: str = Field(index=True)  # the integration that last stored it
    ciphertext: bytes = Field(sa_type=LargeBinary)
    key_fingerprint: str
    account: str | None = None  # the configured account the cache was accepted for
    updated_at: datetime = _ts()
    # Issued to a public client (device code, or an import that Entra ID refused with the app's secret): it
    # is refreshed without a client secret, since presenting one is refused with AADSTS700025 (M365_FACTS.md).
    public_client: bool = Field(default=False, sa_column_kwargs={"server_default": false()})
    # The object id of the user whose sign-in was accepted (the identity evidence when Graph cannot be read).
    oid: str | None = None


class Meta(SQLModel, table=True):
    __tablename__ = "meta"

    key: str = Field(primary_key=True)
    value: str


class CheckRollup(SQLModel, table=True):
    """One hour of one check's results (counts per status, latency): uptime bars and sparklines read
    these, so raw results can be capped (see ``monitor.db_history``)."""

    __tablename__ = "check_rollups"
    __table_args__ = (UniqueConstraint("integration", "check", "hour", name="uq_check_rollups_integration_check_hour"),
                      Index("ix_check_rollups_hour", "hour"),
                      # covers the uptime reads of the overview and the integration page (migration 0006)
                      Index("ix_check_rollups_integration_hour", "integration", "hour", "check", "ok", "warn", "total"))

    id: int | None = Field(default=None, primary_key=True)
    integration: str
    check: str
    hour: datetime = _ts()  # start of the hour, UTC
    total: int = 0
    ok: int = 0
    warn: int = 0
    fail: int = 0
    error: int = 0
    blocked: int = 0
    latency_sum_ms: float = 0.0
    latency_count: int = 0
    latency_max_ms: float | None = None


class IntegrationRollup(SQLModel, table=True):
    """One hour of one integration's availability, from its checks' states after the thresholds (transitions,
    not raw results): the milliseconds in which every check was good (ok or warn) and those in which one was bad
    (fail, error, blocked). Time paused, in a maintenance window or with a check not yet known is in neither
    (``monitor.db_history``): availability = up_ms / (up_ms + down_ms). Whole milliseconds: sums over 30 days
    are exact, so a window with no bad time is 100 %, never 99.99999 %."""

    __tablename__ = "integration_rollups"
    __table_args__ = (UniqueConstraint("integration", "hour", name="uq_integration_rollups_integration_hour"),
                      Index("ix_integration_rollups_hour", "hour"),
                      # covers every availability read (overview, pages, API, metrics) without the table
                      Index("ix_integration_rollups_integration_hour", "integration", "hour", "up_ms", "down_ms"))

    id: int | None = Field(default=None, primary_key=True)
    integration: str
    hour: datetime = _ts()  # start of the hour, UTC
    up_ms: int = 0
    down_ms: int = 0


class ExpiryReminder(SQLModel, table=True):
    """One reminder stage of one credential, claimed once (the unique key): never sent twice, restarts included."""

    __tablename__ = "expiry_reminders"
    __table_args__ = (UniqueConstraint("client_id", "key_id", "stage", name="uq_expiry_reminders_client_key_stage"),)

    id: int | None = Field(default=None, primary_key=True)
    client_id: str
    key_id: str
    app: str
    stage: int  # days before expiry; 0 = on expiry
    expires_at: datetime = _ts()
    integrations: list[str] = Field(default_factory=list, sa_type=JSON)
    sent_at: datetime = _ts()  # queued in the outbox


class Rotation(SQLModel, table=True):
    """Where the rotation of one credential (the old one) stands: expiring -> new_secret_created -> in_use ->
    old_removed. ``auto_step`` follows the automated path (never holds the secret)."""

    __tablename__ = "rotations"
    __table_args__ = (UniqueConstraint("client_id", "key_id", name="uq_rotations_client_key"),)

    id: int | None = Field(default=None, primary_key=True)
    client_id: str
    key_id: str  # the old credential
    app: str
    tenant: str
    hint: str | None = None
    old_expires_at: datetime | None = _ts(nullable=True, default=None)
    state: str = "expiring"  # expiring | new_secret_created | in_use | old_removed
    new_key_id: str | None = None
    new_hint: str | None = None
    new_expires_at: datetime | None = _ts(nullable=True, default=None)
    reference: str | None = None  # mailwarden's reference when the rotation started (a change is noted)
    automated: bool = False
    auto_step: str | None = None  # added | handed_over | verified | removal_scheduled | removed | failed
    auto_error: str | None = Field(default=None, sa_type=Text)
    remove_after: datetime | None = _ts(nullable=True, default=None)
    started_at: datetime = _ts()
    updated_at: datetime = _ts()
    new_seen_at: datetime | None = _ts(nullable=True, default=None)
    in_use_at: datetime | None = _ts(nullable=True, default=None)
    removed_at: datetime | None = _ts(nullable=True, default=None)
    remind_remove_at: datetime | None = _ts(nullable=True, default=None)  # "remove the old secret" sent
    stuck_alert_at: datetime | None = _ts(nullable=True, default=None)  # "still on the old one" sent


class RotationEvent(SQLModel, table=True):
    """The rotation audit: every step, by whom (mailwarden or seen on the app), ok or not, and why."""

    __tablename__ = "rotation_events"
    __table_args__ = (Index("ix_rotation_events_client_at", "client_id", "at"),)

    id: int | None = Field(default=None, primary_key=True)
    client_id: str
    app: str
    key_id: str | None = None  # the old credential
    new_key_id: str | None = None
    step: str
    ok: bool = True
    detail: str = Field(default="", sa_type=Text)  # redacted
    at: datetime = _ts()


class ReauthRequest(SQLModel, table=True):
    """A person must sign in again for one integration. ``open_key`` holds the integration's name while the
    request is open and NULL once closed: its unique index keeps one open request per integration. The link
    is never stored: it is an HMAC of ``nonce`` (with the id and expiry) under a key derived from the token
    key, so a copy of the database cannot produce a working link (``monitor.reauth_links``)."""

    __tablename__ = "reauth_requests"
    __table_args__ = (UniqueConstraint("open_key", name="uq_reauth_requests_open_key"),
                      Index("ix_reauth_requests_integration", "integration"))

    id: int | None = Field(default=None, primary_key=True)
    integration: str
    open_key: str | None = None
    account: str | None = None
    code: str | None = None  # the diagnosis that opened it
    nonce: str
    opened_at: datetime = _ts()
    expires_at: datetime = _ts()
    closed_at: datetime | None = _ts(nullable=True, default=None)
    closed_by: str | None = None  # signed_in | token_ok | expired


class ReauthAttempt(SQLModel, table=True):
    """The audit of the reauthorisation pages: one row per started sign-in (and per refused visit). While a
    sign-in is under way, ``flow`` holds MSAL's flow dict encrypted with the token key and ``state_hash``
    finds it; both are cleared when the callback claims it, so a response cannot be replayed."""

    __tablename__ = "reauth_attempts"
    __table_args__ = (UniqueConstraint("state_hash", name="uq_reauth_attempts_state_hash"),
                      Index("ix_reauth_attempts_request", "request_id"))

    id: int | None = Field(default=None, primary_key=True)
    request_id: int | None = None
    integration: str | None = None
    client: str | None = None  # the client address
    state_hash: str | None = None
    flow: bytes | None = Field(default=None, sa_type=LargeBinary)
    result: str = "started"  # started | ok | wrong_account | consent_missing | cancelled | refused | ...
    signed_in_as: str | None = None
    detail: str = Field(default="", sa_type=Text)  # redacted
    started_at: datetime = _ts()
    finished_at: datetime | None = _ts(nullable=True, default=None)


class OwnTokenRequest(SQLModel, table=True):
    """One of mailwarden's own token requests, recorded before it was sent: its ``client-request-id`` is the
    ``correlationId`` of the sign-in Entra ID logs for it, so the sign-in poller labels that sign-in mailwarden's
    and never the consuming system's (``monitor.signins``). Kept 72 hours (logs arrive up to hours late)."""

    __tablename__ = "own_token_requests"
    __table_args__ = (UniqueConstraint("correlation_id", name="uq_own_token_requests_correlation_id"),
                      Index("ix_own_token_requests_at", "at"))

    id: int | None = Field(default=None, primary_key=True)
    correlation_id: str
    tenant: str  # the authority's tenant segment (an id or a domain)
    client_id: str
    at: datetime = _ts()
    generated: bool = False  # MSAL sent no client-request-id: mailwarden set this one


class ReauthWindow(SQLModel, table=True):
    """A reauthorisation sign-in under way (the web link's button, ``mailwarden reauth``): the person signs in
    in a browser, which mailwarden cannot tag, so a sign-in of this app and account inside the window that matches
    none of mailwarden's own requests is labelled ``unconfirmed``, never the consuming system's."""

    __tablename__ = "reauth_windows"
    __table_args__ = (Index("ix_reauth_windows_client_account", "client_id", "account", "started_at"),
                      Index("ix_reauth_windows_attempt", "attempt_id"))

    id: int | None = Field(default=None, primary_key=True)
    attempt_id: int | None = None  # the web sign-in's ReauthAttempt; None for the command line
    integration: str
    tenant_id: str
    client_id: str
    account: str  # lower case
    source: str  # web | cli
    started_at: datetime = _ts()
    ends_at: datetime = _ts()  # when the callback came, or when an abandoned sign-in stops counting


class SignInRecord(SQLModel, table=True):
    """One sign-in event of an integration's app read from Entra ID's sign-in log (Graph beta ``auditLogs/signIns``).
    ``origin``: ``own`` (a correlation id of mailwarden's own token requests), ``unconfirmed`` (in a reauthorisation
    window, unmatched) or ``consumer`` (the consuming system's). Kept ``evidence.signins.keep`` (14 days)."""

    __tablename__ = "signins"
    __table_args__ = (UniqueConstraint("signin_id", name="uq_signins_signin_id"),
                      Index("ix_signins_app_type_at", "tenant_id", "app_id", "event_type", "created_at"),
                      Index("ix_signins_created_at", "created_at"),
                      Index("ix_signins_correlation_id", "correlation_id"))

    id: int | None = Field(default=None, primary_key=True)
    signin_id: str  # the event's id
    tenant_id: str
    app_id: str  # lower case
    event_type: str  # interactiveUser | nonInteractiveUser | servicePrincipal
    created_at: datetime = _ts()
    user_principal_name: str | None = None  # lower case
    error_code: int = 0
    failure_reason: str | None = Field(default=None, sa_type=Text)
    credential_key_id: str | None = None
    correlation_id: str | None = None
    origin: str = "consumer"  # own | unconfirmed | consumer
    read_at: datetime = _ts()


class SignInPoll(SQLModel, table=True):
    """Where reading one (tenant, event type, app)'s sign-ins stands: ``state`` ok | unlicensed | forbidden |
    unsupported | error, why (``note``, one wording per tenant), and what has been read: from ``covered_from`` to
    ``read_until`` without a gap."""

    __tablename__ = "signin_polls"
    __table_args__ = (UniqueConstraint("tenant_id", "event_type", "app_id",
                                       name="uq_signin_polls_tenant_type_app"),)

    id: int | None = Field(default=None, primary_key=True)
    tenant_id: str
    event_type: str
    app_id: str
    state: str = "ok"
    note: str | None = Field(default=None, sa_type=Text)
    checked_at: datetime | None = _ts(nullable=True, default=None)
    last_success_at: datetime | None = _ts(nullable=True, default=None)
    covered_from: datetime | None = _ts(nullable=True, default=None)
    read_until: datetime | None = _ts(nullable=True, default=None)


class DirectoryAuditRecord(SQLModel, table=True):
    """One directory change to a monitored app read from Entra ID's directory audit log (Graph
    ``auditLogs/directoryAudits``; ``monitor.audits``): consent granted or removed, a secret or certificate added or
    removed, the service principal disabled, owners changed. ``target`` is the object the event names (``application``:
    the registration in the app's home tenant; ``service_principal``: the enterprise app in this tenant); ``change``
    what it did (``monitor.audits.CHANGES``). Outside text (``subject``, the initiator) is cut to its column's limit.
    Kept ``evidence.signins.keep``, as sign-ins are."""

    __tablename__ = "directory_audits"
    __table_args__ = (UniqueConstraint("audit_id", name="uq_directory_audits_audit_id"),
                      Index("ix_directory_audits_app_at", "app_id", "activity_at"),
                      Index("ix_directory_audits_activity_at", "activity_at"))

    id: int | None = Field(default=None, primary_key=True)
    audit_id: str  # the event's id
    tenant_id: str  # lower case
    app_id: str  # the monitored app's client id, lower case
    target: str  # application | service_principal
    change: str  # monitor.audits.CHANGES
    activity: str  # activityDisplayName, as Entra wrote it
    activity_at: datetime = _ts()
    subject: str | None = None  # what was removed or added: a permission, a credential, an owner, a user
    initiator_upn: str | None = None  # a user who made the change
    initiator_name: str | None = None  # the user's or the app's display name
    initiator_app_id: str | None = None  # an app (service principal) that made the change
    read_at: datetime = _ts()


class BackoffWait(SQLModel, table=True):
    """A wait a server asked for on one target (``checks.base.targets``: an app at the token endpoint, an app and
    mailbox in Graph, a mailbox in a mail protocol), shared by every worker in queue mode (``monitor.backoff``'s
    ``SharedBackoff``, through ``store.backoff``). One row per target, holding the latest ``until`` heard; expired rows
    are pruned (migration 0013)."""

    __tablename__ = "backoff_waits"

    target: str = Field(primary_key=True)
    until: datetime = _ts()
    status: str  # the status and code of the reply that asked for the wait, repeated by a check not run
    code: str | None = None
    why: str  # redacted


MODELS: tuple[type[SQLModel], ...] = (Integration, Credential, CheckResult, CheckState, Transition,
                                      TokenCache, Meta, Incident, AlertDelivery, Notification, CheckRollup,
                                      IntegrationRollup, ExpiryReminder, Rotation, RotationEvent, ReauthRequest,
                                      ReauthAttempt, OwnTokenRequest, ReauthWindow, SignInRecord, SignInPoll,
                                      DirectoryAuditRecord, BackoffWait)
TABLE_NAMES: tuple[str, ...] = tuple(m.__tablename__ for m in MODELS)  # type: ignore[misc]


def table_of(model: type[SQLModel]) -> Table:
    """The ``Table`` of a table model, for Core statements: ``model.__table__``, typed.

    SQLAlchemy's declarative set-up sets ``__table__`` on every ``table=True`` class; SQLModel's stubs don't
    declare it, so mypy cannot see it."""
    table: Table = model.__table__  # type: ignore[attr-defined]  # set at class creation, undeclared in the stubs
    return table
