"""The alerts layer's own records: incidents, the outbox of notices and deliveries, and every send attempt.

SQLModel tables (the application's store persists them beside its own tables, ``monitor.models``); the policy and
the dispatcher create and change them, the store reads and writes them. Changing one needs a migration in
``monitor/migrations/versions``.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Index, Text, UniqueConstraint
from sqlmodel import Field, SQLModel

from mailwarden.columns import ts

NOTICE = "notice"  # AlertDelivery.state of a notice decided by a fold, not yet rendered and routed


class Incident(SQLModel, table=True):
    """One problem a person should hear about, from the transition to failing until recovery.

    ``key`` says what it is about (see ``alerts.policy.incident_key``); at most one open incident per key.
    ``members`` lists the failing (integration, check) pairs it covers, ``affected`` every integration
    named in the message (all users of a shared app credential)."""

    __tablename__ = "incidents"
    __table_args__ = (Index("ix_incidents_status_key", "status", "key"),)

    id: int | None = Field(default=None, primary_key=True)
    key: str
    kind: str  # single | credential | grouped | flapping
    code: str
    tenant: str | None = None
    client_id: str | None = None
    status: str = "open"  # open | resolved
    members: list[dict[str, Any]] = Field(default_factory=list, sa_type=JSON)
    affected: list[str] = Field(default_factory=list, sa_type=JSON)
    opened_at: datetime = ts()
    notify_after: datetime | None = ts(nullable=True, default=None)  # opening notice held until then
    notified_at: datetime | None = ts(nullable=True, default=None)  # opening notice (or summary) sent
    last_notice_at: datetime | None = ts(nullable=True, default=None)
    reminders: int = 0
    sequence: int = 0  # of the last notice: the stable key is (id, kind, sequence)
    resolved_at: datetime | None = ts(nullable=True, default=None)
    resolve_reason: str | None = None  # recovered | removed | paused | superseded | merged | stable
    ack_by: str | None = None
    ack_at: datetime | None = ts(nullable=True, default=None)
    snoozed_until: datetime | None = ts(nullable=True, default=None)
    held_window: str | None = None  # maintenance window that held a notice back, until its summary
    held_until: datetime | None = ts(nullable=True, default=None)


class AlertDelivery(SQLModel, table=True):
    """The outbox: one message to one service of one route, claimed by one sender at a time."""

    __tablename__ = "alert_deliveries"
    __table_args__ = (UniqueConstraint("key", "route", "service", name="uq_alert_deliveries_key_route_service"),
                      Index("ix_alert_deliveries_state_next", "state", "next_attempt_at"))

    id: int | None = Field(default=None, primary_key=True)
    key: str  # "<incident id>/<kind>/<sequence>" (or "maintenance/<window>/<end>/1")
    incident_id: int | None = None
    kind: str
    route: str
    service: int = 0  # index of the URL within the route
    title: str = Field(default="", sa_type=Text)
    body_text: str = Field(default="", sa_type=Text)
    body_markdown: str = Field(default="", sa_type=Text)
    notify_type: str = "failure"  # apprise NotifyType: info | success | warning | failure
    state: str = "pending"  # notice (folded, not routed) | pending | sent | failed | unconfirmed (no answer in time)
    attempts: int = 0
    next_attempt_at: datetime = ts()
    claimed_by: str | None = None
    claimed_until: datetime | None = ts(nullable=True, default=None)
    created_at: datetime = ts()
    sent_at: datetime | None = ts(nullable=True, default=None)


class Notification(SQLModel, table=True):
    """One send attempt (healthchecks' Notification): what, where, whether it worked and why not."""

    __tablename__ = "notifications"
    __table_args__ = (Index("ix_notifications_incident", "incident_id"),)

    id: int | None = Field(default=None, primary_key=True)
    delivery_id: int | None = None
    incident_id: int | None = None
    key: str
    kind: str  # opened | reminder | resolved | grouped | flapping | maintenance_summary | test
    route: str
    service: str = ""  # the service URL with credentials masked (Apprise privacy=True)
    ok: bool
    error: str | None = Field(default=None, sa_type=Text)
    permanent: bool = False
    at: datetime = ts(index=True)


def notice_row(key: str, kind: str, incident_id: int | None, params: dict[str, Any], now: datetime) -> AlertDelivery:
    """A notice a fold decided, as an outbox row until it is rendered and routed: no route yet, state ``NOTICE``
    (never claimed for sending); ``params`` (JSON in the body) hold what rendering needs besides the incident."""
    return AlertDelivery(key=key, incident_id=incident_id, kind=kind, route="", service=0, state=NOTICE,
                         body_text=json.dumps(params), next_attempt_at=now, created_at=now)


def notice_params(row: AlertDelivery) -> dict[str, Any]:
    return json.loads(row.body_text or "{}")
