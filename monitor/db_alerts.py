"""The alert tables' part of the Store (mixed into ``monitor.db.Store``): evaluation, claiming, ack, snooze.

Evaluation (transitions -> incidents -> outbox rows) runs in one transaction under one lock: SQLite's
write lock (BEGIN IMMEDIATE), a transaction-scoped advisory lock on PostgreSQL. Two processes therefore
never fold the same transition twice, and a crash leaves transitions unprocessed rather than half done.
Sending is claimed per delivery with a conditional UPDATE (healthchecks' pattern): only the process whose
UPDATE changed the row sends it; a claim expires after a lease so a crashed sender's work is retried.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import or_, update
from sqlmodel import Session, col, select

from mailwarden.monitor.models import AlertDelivery, CheckResult, CheckState, Incident, Notification, Transition

_ALERTS_LOCK = 726193500452


@dataclass
class AlertBatch:
    """What one evaluation sees; ``add`` and ``flush`` give new incidents their ids before rendering."""

    transitions: list[Transition]
    incidents: list[Incident]
    recent: dict[tuple[str, str], list[datetime]]
    states: dict[tuple[str, str], CheckState]
    summaries: dict[tuple[str, str], str]
    details: dict[tuple[str, str], dict]
    session: Session = field(repr=False)

    def add(self, obj: Any) -> None:
        self.session.add(obj)

    def flush(self) -> None:
        self.session.flush()


class AlertStore:
    # provided by monitor.db.Store
    _session: Callable[..., Any]
    _sqlite: bool
    _insert: Callable[[], Any]

    def evaluate_alerts(self, step: Callable[[AlertBatch], list[AlertDelivery]], *, now: datetime,
                        flap_window: timedelta, limit: int = 2000) -> list[AlertDelivery]:
        with self._session(write=True) as s:
            if not self._sqlite:
                s.connection().exec_driver_sql(f"SELECT pg_advisory_xact_lock({_ALERTS_LOCK})")
            transitions = list(s.exec(select(Transition).where(col(Transition.processed_at).is_(None))
                                      .order_by(Transition.at, Transition.id).limit(limit)))
            incidents = list(s.exec(select(Incident).where(or_(Incident.status == "open",
                                                                col(Incident.held_window).is_not(None)))
                                    .order_by(Incident.id)))
            pairs = {(t.integration, t.check) for t in transitions}
            recent: dict[tuple[str, str], list[datetime]] = defaultdict(list)
            if pairs:
                oldest = min(t.at for t in transitions) - flap_window
                rows = s.exec(select(Transition.integration, Transition.check, Transition.at)
                              .where(Transition.at >= oldest, col(Transition.silent).is_(False),
                                     col(Transition.integration).in_({p[0] for p in pairs})))
                for integ, check, at in rows:
                    if (integ, check) in pairs:
                        recent[(integ, check)].append(at)
            states = {(st.integration, st.check): st for st in s.exec(select(CheckState))}
            ids = [st.last_result_id for st in states.values() if st.last_result_id]
            summaries, details = {}, {}
            for i in range(0, len(ids), 500):
                for r in s.exec(select(CheckResult).where(col(CheckResult.id).in_(ids[i:i + 500]))):
                    summaries[(r.integration, r.check)] = r.summary
                    details[(r.integration, r.check)] = r.details or {}
            batch = AlertBatch(transitions, incidents, dict(recent), states, summaries, details, s)
            deliveries = step(batch)
            for t in transitions:
                t.processed_at = now
                s.add(t)
            s.flush()
            for d in deliveries:
                values = {k: getattr(d, k) for k in AlertDelivery.model_fields if k != "id"}
                s.execute(self._insert()(AlertDelivery).values(**values)
                          .on_conflict_do_nothing(index_elements=["key", "route", "service"]))
        return deliveries

    # -- sending ---------------------------------------------------------------------------------------
    def claim_deliveries(self, worker: str, now: datetime, *, lease: timedelta = timedelta(minutes=5),
                         limit: int = 100) -> list[AlertDelivery]:
        """Claim due deliveries: each row is handed to exactly one caller (conditional UPDATE)."""
        free = or_(col(AlertDelivery.claimed_until).is_(None), col(AlertDelivery.claimed_until) < now)
        with self._session() as s:
            candidates = list(s.exec(select(AlertDelivery.id).where(
                AlertDelivery.state == "pending", AlertDelivery.next_attempt_at <= now, free)
                .order_by(AlertDelivery.next_attempt_at, AlertDelivery.id).limit(limit)))
        claimed = []
        for did in candidates:
            with self._session(write=True) as s:
                res = s.execute(update(AlertDelivery)
                                .where(AlertDelivery.id == did, AlertDelivery.state == "pending", free)
                                .values(claimed_by=worker, claimed_until=now + lease,
                                        attempts=AlertDelivery.attempts + 1))
                if res.rowcount == 1:
                    claimed.append(s.get(AlertDelivery, did))
        return claimed

    def finish_delivery(self, delivery: AlertDelivery, worker: str, *, ok: bool, service: str, error: str | None,
                        permanent: bool, next_attempt_at: datetime | None, now: datetime) -> bool:
        """Record the attempt (a Notification row) and release the claim. False when the claim was lost."""
        state = "sent" if ok else ("failed" if permanent else "pending")
        with self._session(write=True) as s:
            res = s.execute(update(AlertDelivery).where(AlertDelivery.id == delivery.id,
                                                        AlertDelivery.claimed_by == worker)
                            .values(state=state, claimed_by=None, claimed_until=None,
                                    sent_at=now if ok else None,
                                    next_attempt_at=next_attempt_at or delivery.next_attempt_at))
            s.add(Notification(delivery_id=delivery.id, incident_id=delivery.incident_id, key=delivery.key,
                               kind=delivery.kind, route=delivery.route, service=service, ok=ok, error=error,
                               permanent=permanent, at=now))
            return res.rowcount == 1

    def add_notification(self, **fields: Any) -> None:
        with self._session(write=True) as s:
            s.add(Notification(**fields))

    # -- reading and people's actions -----------------------------------------------------------------
    def incidents(self, status: str | None = "open") -> list[Incident]:
        stmt = select(Incident).order_by(Incident.opened_at, Incident.id)
        if status is not None:
            stmt = stmt.where(Incident.status == status)
        with self._session() as s:
            return list(s.exec(stmt))

    def get_incident(self, incident_id: int) -> Incident | None:
        with self._session() as s:
            return s.get(Incident, incident_id)

    def ack_incident(self, incident_id: int, by: str, now: datetime) -> Incident | None:
        with self._session(write=True) as s:
            inc = s.get(Incident, incident_id)
            if inc is not None and inc.status == "open":
                inc.ack_by, inc.ack_at = by, now
                s.add(inc)
            return inc

    def snooze_incident(self, incident_id: int, until: datetime) -> Incident | None:
        with self._session(write=True) as s:
            inc = s.get(Incident, incident_id)
            if inc is not None and inc.status == "open":
                inc.snoozed_until = until
                s.add(inc)
            return inc

    def notifications(self, incident_id: int | None = None) -> list[Notification]:
        stmt = select(Notification).order_by(Notification.at, Notification.id)
        if incident_id is not None:
            stmt = stmt.where(Notification.incident_id == incident_id)
        with self._session() as s:
            return list(s.exec(stmt))

    def deliveries(self) -> list[AlertDelivery]:
        with self._session() as s:
            return list(s.exec(select(AlertDelivery).order_by(AlertDelivery.id)))
