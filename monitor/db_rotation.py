"""The secret-expiry and rotation tables' repository (``store.rotation``, ``monitor.db``).

A reminder stage is claimed by inserting its row (unique per credential and stage) in the same transaction
that queues its deliveries in the alert outbox: a stage is queued once or not at all, whatever crashes or
restarts, and two processes never both queue it. Rotation rows change with their audit events and notices
in one transaction too. Nothing here ever holds a secret value: details are redacted on the way in.
"""

from __future__ import annotations

from typing import Any

from sqlmodel import col, select

from mailwarden.alerts.records import AlertDelivery
from mailwarden.monitor.db_repository import Repository
from mailwarden.monitor.models import ExpiryReminder, Rotation, RotationEvent
from mailwarden.redact import redact


class RotationRepository(Repository):
    """Expiry reminders, rotations and their events (``store.rotation``)."""

    def _queue(self, s: Any, deliveries: list[AlertDelivery]) -> None:
        for d in deliveries:
            values = {k: getattr(d, k) for k in AlertDelivery.model_fields if k != "id"}
            for k in ("title", "body_text", "body_markdown"):
                values[k] = redact(values[k])
            s.execute(self._insert()(AlertDelivery).values(**values)
                      .on_conflict_do_nothing(index_elements=["key", "route", "service"]))

    def claim_reminder(self, reminder: ExpiryReminder, deliveries: list[AlertDelivery]) -> bool:
        """Record the stage and queue its deliveries; False (nothing queued) when the stage was sent before."""
        values = {k: getattr(reminder, k) for k in ExpiryReminder.model_fields if k != "id"}
        with self._session(write=True) as s:
            res = s.execute(self._insert()(ExpiryReminder).values(**values)
                            .on_conflict_do_nothing(index_elements=["client_id", "key_id", "stage"]))
            if res.rowcount != 1:
                return False
            self._queue(s, deliveries)
        return True

    def reminders(self, client_id: str | None = None) -> list[ExpiryReminder]:
        stmt = select(ExpiryReminder).order_by(ExpiryReminder.client_id, ExpiryReminder.key_id,
                                               col(ExpiryReminder.stage).desc())
        if client_id is not None:
            stmt = stmt.where(ExpiryReminder.client_id == client_id)
        with self._session() as s:
            return list(s.exec(stmt))

    def rotation(self, client_id: str, key_id: str) -> Rotation | None:
        with self._session() as s:
            return s.exec(select(Rotation).where(Rotation.client_id == client_id, Rotation.key_id == key_id)).first()

    def rotations(self, client_id: str | None = None, *, open_only: bool = False) -> list[Rotation]:
        stmt = select(Rotation).order_by(col(Rotation.client_id), col(Rotation.started_at), col(Rotation.id))
        if client_id is not None:
            stmt = stmt.where(Rotation.client_id == client_id)
        if open_only:
            stmt = stmt.where(Rotation.state != "old_removed")
        with self._session() as s:
            return list(s.exec(stmt))

    def save_rotation(self, row: Rotation, events: list[RotationEvent] | None = None,
                      deliveries: list[AlertDelivery] | None = None) -> Rotation:
        """Insert or update ``row`` with its audit events and notices, in one transaction."""
        with self._session(write=True) as s:
            row.auto_error = redact(row.auto_error) if row.auto_error else None
            if row.id is None:
                s.add(row)
            else:
                row = s.merge(row)
            for ev in events or []:
                ev.detail = redact(ev.detail)
                s.add(ev)
            self._queue(s, deliveries or [])
            s.flush()
            s.refresh(row)
        return row

    def add_rotation_event(self, event: RotationEvent) -> None:
        with self._session(write=True) as s:
            event.detail = redact(event.detail)
            s.add(event)

    def rotation_events(self, client_id: str | None = None, limit: int = 200) -> list[RotationEvent]:
        """Oldest first (the last ``limit``)."""
        stmt = select(RotationEvent).order_by(col(RotationEvent.at).desc(), col(RotationEvent.id).desc()).limit(limit)
        if client_id is not None:
            stmt = stmt.where(RotationEvent.client_id == client_id)
        with self._session() as s:
            return list(reversed(list(s.exec(stmt))))

    def queue_deliveries(self, deliveries: list[AlertDelivery]) -> None:
        with self._session(write=True) as s:
            self._queue(s, deliveries)
