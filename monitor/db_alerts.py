"""The alert tables' repository (``store.alerts``, ``monitor.db``): evaluation, claiming, ack, snooze; it implements
``alerts.ports.AlertRepository``.

Evaluation runs in two steps (``alerts.dispatcher``):
1. ``fold_alerts``: the unprocessed transitions into incidents, in one transaction under one lock: SQLite's write
   lock (BEGIN IMMEDIATE), a transaction-scoped advisory lock on PostgreSQL. It reads the transitions, the open
   incidents and the recent changes of the checks that changed, nothing else. The notices it decides are stored as
   outbox rows in the state ``notice`` (``notice_row``), with the time at which the policy's time-driven
   rules (reminders, held notices, maintenance summaries, flapping) next have something to do. Two processes
   therefore never fold the same transition twice, and a crash leaves transitions unprocessed rather than half done.
2. After that commit, outside the lock, the notices are rendered and routed (``notices_to_route``, ``check_facts``)
   and their deliveries queued (``route_notices``: a key already queued stays as it is, so two processes routing the
   same notice queue it once); a crash in between leaves the notice rows for the next cycle.
``alerts_pending`` is what a dispatch cycle asks first: one read-only statement, no lock; nothing new and nothing
due means no evaluation at all. A person's ack or snooze clears the stored due time, so the next cycle folds.

Sending is claimed per delivery with a conditional UPDATE (healthchecks' pattern): only the process whose
UPDATE changed the row sends it, and the row names it (``claimed_by``: the dispatcher's worker id, host, process and
a random part, see ``alerts.dispatcher``); a claim expires after a lease so a crashed sender's work is retried, and a
process that starts releases at once the claims of its own instance's processes that are gone
(``release_claims``). A delivery ends ``sent``, ``failed`` (permanent) or ``unconfirmed``: its request went out and
no answer came, so it is not sent again.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import delete, exists, or_, update
from sqlalchemy import select as core_select
from sqlmodel import Session, col, select

from mailwarden.alerts.records import NOTICE, AlertDelivery, Incident, Notification
from mailwarden.monitor.db_repository import Repository
from mailwarden.monitor.models import CheckResult, CheckState, Meta, Transition, table_of

_ALERTS_LOCK = 726193500452
NEXT_DUE = "alerts.next_due"  # Meta: when the policy's time-driven rules next act (ISO 8601; "" for never)
UNCONFIRMED = "unconfirmed"  # AlertDelivery.state, and the start of its Notification's error: sent, answer missing


def attempt_outcome(n: Notification) -> str:
    """How a send attempt ended, as people read it: ``ok``, ``unconfirmed`` (the request went out, no answer came: not
    sent again), ``permanent`` (not retried) or ``error`` (retried)."""
    if n.ok:
        return "ok"
    if (n.error or "").startswith(UNCONFIRMED + ":"):
        return UNCONFIRMED
    return "permanent" if n.permanent else "error"


@dataclass
class AlertBatch:
    """What one fold sees; ``add`` and ``flush`` give new incidents their ids (the notices' stable keys)."""

    transitions: list[Transition]
    incidents: list[Incident]
    recent: dict[tuple[str, str], list[datetime]]
    session: Session = field(repr=False)

    def add(self, obj: Any) -> None:
        self.session.add(obj)

    def flush(self) -> None:
        self.session.flush()

    def result_details(self, result_ids: list[int]) -> dict[int, dict[str, Any]]:
        """The stored details (metrics) of these results, by id: what a transition's cause is read from."""
        if not result_ids:
            return {}
        rows = self.session.exec(select(col(CheckResult.id), col(CheckResult.details))
                                 .where(col(CheckResult.id).in_(result_ids))).all()
        # a stored result's id (its primary key) is never None
        return {cast(int, rid): details or {} for rid, details in rows}


class AlertRepository(Repository):
    """``alerts.ports.AlertRepository``: incidents, the outbox, claims and send attempts (``store.alerts``)."""

    def alerts_pending(self, now: datetime) -> bool:
        """Whether an evaluation has anything to do at ``now``: a transition not yet folded, a notice not yet routed,
        or the time the last fold stored for the policy's next time-driven step reached (no time stored: yes)."""
        t, d, m = table_of(Transition), table_of(AlertDelivery), table_of(Meta)
        stmt = core_select(exists().where(t.c.processed_at.is_(None)), exists().where(d.c.state == NOTICE),
                           core_select(m.c.value).where(m.c.key == NEXT_DUE).scalar_subquery())
        with self._connection() as conn:
            unfolded, unrouted, due = conn.execute(stmt).one()
        if unfolded or unrouted or due is None:
            return True
        return bool(due) and now >= datetime.fromisoformat(due)

    def fold_alerts(self, fold: Callable[[AlertBatch], tuple[list[AlertDelivery], datetime | None]], *,
                    now: datetime, flap_window: timedelta, limit: int = 2000) -> list[AlertDelivery]:
        """Step 1: ``fold(batch)`` returns the notice rows it decided and the policy's next due time; both are stored
        with the incidents and the transitions marked processed, in one transaction under the alerts lock."""
        with self._session(write=True) as s:
            if not self._sqlite:
                s.connection().exec_driver_sql(f"SELECT pg_advisory_xact_lock({_ALERTS_LOCK})")
            transitions = list(s.exec(select(Transition).where(col(Transition.processed_at).is_(None))
                                      .order_by(col(Transition.at), col(Transition.id)).limit(limit)))
            incidents = list(s.exec(select(Incident).where(or_(col(Incident.status) == "open",
                                                                col(Incident.held_window).is_not(None)))
                                    .order_by(col(Incident.id))))
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
            notices, next_due = fold(AlertBatch(transitions, incidents, dict(recent), s))
            s.flush()
            ids = [t.id for t in transitions]
            for i in range(0, len(ids), 500):
                s.execute(update(Transition).where(col(Transition.id).in_(ids[i:i + 500])).values(processed_at=now))
            for n in notices:
                values = {k: getattr(n, k) for k in AlertDelivery.model_fields if k != "id"}
                s.execute(self._insert()(AlertDelivery).values(**{**values, "state": NOTICE})
                          .on_conflict_do_nothing(index_elements=["key", "route", "service"]))
            due = next_due.isoformat() if next_due is not None else ""
            s.execute(self._insert()(Meta).values(key=NEXT_DUE, value=due)
                      .on_conflict_do_update(index_elements=["key"], set_={"value": due}))
        return notices

    def notices_to_route(self) -> list[AlertDelivery]:
        """Step 2's input: the notices folded but not yet routed (``notice_row``), oldest first."""
        with self._session() as s:
            return list(s.exec(select(AlertDelivery).where(AlertDelivery.state == NOTICE)
                               .order_by(col(AlertDelivery.id))))

    def incidents_by_id(self, ids: Iterable[int]) -> dict[int, Incident]:
        wanted = sorted(set(ids))
        if not wanted:
            return {}
        with self._session() as s:
            return {i.id: i for i in s.exec(select(Incident).where(col(Incident.id).in_(wanted)))}

    def check_facts(self, pairs: Iterable[tuple[str, str]]) -> dict[tuple[str, str], tuple[str | None, Any, dict]]:
        """(latest summary, last success, latest metrics) of each (integration, check) in ``pairs``: what a notice
        says about its checks."""
        wanted = set(pairs)
        if not wanted:
            return {}
        with self._session() as s:
            states = [st for st in s.exec(select(CheckState).where(
                col(CheckState.integration).in_({i for i, _ in wanted}))) if (st.integration, st.check) in wanted]
            ids = [st.last_result_id for st in states if st.last_result_id]
            latest: dict[int, CheckResult] = {}
            for i in range(0, len(ids), 500):
                latest.update({r.id: r for r in s.exec(select(CheckResult).where(
                    col(CheckResult.id).in_(ids[i:i + 500])))})
        out = {}
        for st in states:
            r = latest.get(st.last_result_id or 0)
            out[(st.integration, st.check)] = (r.summary if r else None, st.last_ok_at, (r.details or {}) if r else {})
        return out

    def route_notices(self, notice_ids: list[int], deliveries: list[AlertDelivery]) -> None:
        """Step 2's output, in one short transaction: queue the deliveries (a key, route and service already queued
        is left alone) and drop the notice rows they were rendered from."""
        with self._session(write=True) as s:
            for d in deliveries:
                values = {k: getattr(d, k) for k in AlertDelivery.model_fields if k != "id"}
                s.execute(self._insert()(AlertDelivery).values(**values)
                          .on_conflict_do_nothing(index_elements=["key", "route", "service"]))
            if notice_ids:
                s.execute(delete(AlertDelivery).where(col(AlertDelivery.id).in_(notice_ids),
                                                      col(AlertDelivery.state) == NOTICE))

    # -- sending ---------------------------------------------------------------------------------------
    def claim_deliveries(self, worker: str, now: datetime, *, lease: timedelta = timedelta(minutes=5),
                         limit: int = 100) -> list[AlertDelivery]:
        """Claim due deliveries: each row is handed to exactly one caller (conditional UPDATE)."""
        free = or_(col(AlertDelivery.claimed_until).is_(None), col(AlertDelivery.claimed_until) < now)
        with self._session() as s:
            candidates = list(s.exec(select(AlertDelivery.id).where(
                AlertDelivery.state == "pending", AlertDelivery.next_attempt_at <= now, free)
                .order_by(col(AlertDelivery.next_attempt_at), col(AlertDelivery.id)).limit(limit)))
        claimed = []
        for did in candidates:
            with self._session(write=True) as s:
                res = s.execute(update(AlertDelivery)
                                .where(col(AlertDelivery.id) == did, col(AlertDelivery.state) == "pending", free)
                                .values(claimed_by=worker, claimed_until=now + lease,
                                        attempts=AlertDelivery.attempts + 1))
                if res.rowcount == 1:
                    claimed.append(s.get(AlertDelivery, did))
        return claimed

    def release_claims(self, gone: Callable[[str], bool]) -> int:
        """Release the claims of pending deliveries whose claimant ``gone(claimed_by)`` says is gone (a process of
        this instance that crashed mid-send): due again at once instead of after the lease. How many."""
        with self._session() as s:
            owners = set(s.exec(select(AlertDelivery.claimed_by).where(
                AlertDelivery.state == "pending", col(AlertDelivery.claimed_by).is_not(None)).distinct()))
        dead = sorted(o for o in owners if o and gone(o))
        if not dead:
            return 0
        with self._session(write=True) as s:
            res = s.execute(update(AlertDelivery)
                            .where(col(AlertDelivery.state) == "pending", col(AlertDelivery.claimed_by).in_(dead))
                            .values(claimed_by=None, claimed_until=None))
            return res.rowcount or 0

    def finish_delivery(self, delivery: AlertDelivery, worker: str, *, ok: bool, service: str, error: str | None,
                        permanent: bool, next_attempt_at: datetime | None, now: datetime,
                        unconfirmed: bool = False) -> bool:
        """Record the attempt (a Notification row) and release the claim. False when the claim was lost.
        ``unconfirmed``: the request went out and no answer came; the delivery ends there (state ``unconfirmed``),
        its Notification's error saying so."""
        state = UNCONFIRMED if unconfirmed else "sent" if ok else ("failed" if permanent else "pending")
        if unconfirmed and not (error or "").startswith(UNCONFIRMED + ":"):
            error = f"{UNCONFIRMED}: {error or 'the request was sent, no answer came'}"
        with self._session(write=True) as s:
            res = s.execute(update(AlertDelivery).where(col(AlertDelivery.id) == delivery.id,
                                                        col(AlertDelivery.claimed_by) == worker)
                            .values(state=state, claimed_by=None, claimed_until=None,
                                    sent_at=now if ok or unconfirmed else None,
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
        stmt = select(Incident).order_by(col(Incident.opened_at), col(Incident.id))
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
                self._fold_again(s)
            return inc

    def snooze_incident(self, incident_id: int, until: datetime) -> Incident | None:
        with self._session(write=True) as s:
            inc = s.get(Incident, incident_id)
            if inc is not None and inc.status == "open":
                inc.snoozed_until = until
                s.add(inc)
                self._fold_again(s)  # a shorter snooze than before brings the reminder forward
            return inc

    @staticmethod
    def _fold_again(s: Session) -> None:
        """An incident changed outside a fold (a person's ack or snooze): the stored due time no longer holds, so the
        next dispatch cycle folds and stores a new one."""
        s.execute(delete(Meta).where(col(Meta.key) == NEXT_DUE))

    def notifications(self, incident_id: int | None = None) -> list[Notification]:
        stmt = select(Notification).order_by(col(Notification.at), col(Notification.id))
        if incident_id is not None:
            stmt = stmt.where(Notification.incident_id == incident_id)
        with self._session() as s:
            return list(s.exec(stmt))

    def deliveries(self) -> list[AlertDelivery]:
        with self._session() as s:
            return list(s.exec(select(AlertDelivery).order_by(col(AlertDelivery.id))))
