"""The history part of the Store (mixed into ``monitor.db.Store``): hourly rollups and bounded raw results.

Rollups are recomputed from raw rows, so the job is idempotent: every hour from a watermark (kept in
``meta``) up to now is aggregated again and upserted; the watermark then moves to the start of the
previous hour, and only raw rows older than the watermark may be pruned. An hour is therefore always
rolled up from all of its rows before any of them goes. Raw rows kept per (integration, check): the
newest ``raw_per_check`` of any status, plus the newest ``raw_per_check`` failures younger than
``failures_days`` (a failing check's recent transcripts outlive a flood of later successes), plus the
row a check state points at.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import and_, case, delete, func, literal, not_
from sqlmodel import col, select

from monitor.models import CheckResult, CheckRollup, CheckState, Meta, UTCDateTime

WATERMARK = "history.rollup_from"
STATUSES = ("ok", "warn", "fail", "error", "blocked")
GOOD = ("ok", "warn")
_SLACK = timedelta(minutes=5)  # a result may be stored a little after its checked_at


def hour_of(t: datetime) -> datetime:
    return t.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


class HistoryStore:
    # provided by monitor.db.Store
    _session: Callable[..., Any]
    _insert: Callable[[], Any]

    def _watermark(self, s: Any) -> datetime | None:
        row = s.get(Meta, WATERMARK)
        return datetime.fromisoformat(row.value) if row is not None else None

    def rollup_history(self, now: datetime) -> int:
        """Aggregate raw results into hourly rollups from the watermark on; returns the rows upserted.

        Set-based: one ``INSERT ... SELECT ... GROUP BY ... ON CONFLICT DO UPDATE`` per hour window (the
        hour a bound value, so the same statement runs on SQLite and PostgreSQL); no row goes through
        Python, so the write lock is held for index range scans only (it used to re-read every result
        since the watermark and upsert row by row: bench/)."""
        with self._session(write=True) as s:
            start = self._watermark(s)
            if start is None:
                oldest = s.exec(select(CheckResult.checked_at).order_by(col(CheckResult.checked_at)).limit(1)).first()
                start = hour_of(oldest) if oldest is not None else hour_of(now - _SLACK)
            newest = s.exec(select(func.max(CheckResult.checked_at)).where(CheckResult.checked_at >= start)).first()
            last = max(hour_of(now), hour_of(newest)) if newest is not None else None
            upserted = 0
            hour = start
            while last is not None and hour <= last:
                upserted += s.execute(self._rollup_hour(hour)).rowcount or 0
                hour += timedelta(hours=1)
            mark = max(start, hour_of(now - _SLACK))
            stmt = self._insert()(Meta).values(key=WATERMARK, value=mark.isoformat())
            s.execute(stmt.on_conflict_do_update(index_elements=["key"], set_={"value": mark.isoformat()}))
        return upserted

    def _rollup_hour(self, hour: datetime) -> Any:
        r = CheckResult.__table__.c
        timed = and_(r.latency_ms.is_not(None), r.status != "blocked")
        counts = [func.sum(case((r.status == st, 1), else_=0)).label(st) for st in STATUSES]
        agg = (select(r.integration, r.check, literal(hour, UTCDateTime).label("hour"),
                      func.count().label("total"), *counts,
                      func.coalesce(func.sum(case((timed, r.latency_ms), else_=None)), 0.0).label("latency_sum_ms"),
                      func.count(case((timed, 1), else_=None)).label("latency_count"),
                      func.max(case((timed, r.latency_ms), else_=None)).label("latency_max_ms"))
               .where(r.checked_at >= hour, r.checked_at < hour + timedelta(hours=1))
               .group_by(r.integration, r.check))
        cols = ["integration", "check", "hour", "total", *STATUSES, "latency_sum_ms", "latency_count",
                "latency_max_ms"]
        stmt = self._insert()(CheckRollup.__table__).from_select(cols, agg)
        return stmt.on_conflict_do_update(index_elements=["integration", "check", "hour"],
                                          set_={c: stmt.excluded[c] for c in cols[3:]})

    def prune_history(self, now: datetime, *, raw_per_check: int, failures_days: int,
                      rollup_days: int) -> dict[str, int]:
        """Delete raw results beyond the caps (only hours already rolled up) and rollups past retention."""
        removed = {"results": 0, "rollups": 0}
        with self._session(write=True) as s:
            mark = self._watermark(s)
            # the row each check state points at; it belongs to that state's own (integration, check)
            keep_ids = {(integ, check): i for integ, check, i in s.exec(
                select(CheckState.integration, CheckState.check, CheckState.last_result_id)) if i is not None}
            pairs = list(s.exec(select(CheckResult.integration, CheckResult.check).distinct()))
            fail_since = now - timedelta(days=failures_days)
            for integ, check in pairs if mark is not None else []:
                of_pair = and_(CheckResult.integration == integ, CheckResult.check == check)
                newest = (select(CheckResult.checked_at).where(of_pair)
                          .order_by(col(CheckResult.checked_at).desc()).offset(raw_per_check - 1).limit(1))
                cutoff = s.exec(newest).first()
                if cutoff is None:
                    continue  # fewer rows than the cap
                fail_cutoff = s.exec(newest.where(col(CheckResult.status).not_in(GOOD))).first()
                kept_failure = and_(col(CheckResult.status).not_in(GOOD), CheckResult.checked_at >= fail_since,
                                    CheckResult.checked_at >= fail_cutoff) if fail_cutoff is not None else \
                    and_(col(CheckResult.status).not_in(GOOD), CheckResult.checked_at >= fail_since)
                stmt = delete(CheckResult).where(of_pair, CheckResult.checked_at < cutoff,
                                                 CheckResult.checked_at < mark, not_(kept_failure))
                if (integ, check) in keep_ids:  # one id per pair, not every state's id in each DELETE (bench/)
                    stmt = stmt.where(CheckResult.id != keep_ids[(integ, check)])
                removed["results"] += s.execute(stmt).rowcount or 0
            old = delete(CheckRollup).where(CheckRollup.hour < now - timedelta(days=rollup_days))
            removed["rollups"] = s.execute(old).rowcount or 0
        return removed

    def uptime_by_hour(self, since: datetime, integration: str | None = None) -> list[tuple[str, datetime, int, int]]:
        """(integration, hour, ok + warn, total) summed over the integration's checks, hours from ``since``."""
        r = CheckRollup
        # grouped by hour first: SQLite then scans ix_check_rollups_hour from ``since`` (by integration first it
        # walked the whole unique index, every rollup of 90 days: 3.5 s at 1,000 integrations, bench/)
        stmt = (select(r.integration, r.hour, func.sum(r.ok + r.warn), func.sum(r.total))
                .where(r.hour >= since).group_by(r.hour, r.integration))
        if integration is not None:
            stmt = stmt.where(r.integration == integration)
        with self._session() as s:
            return [tuple(row) for row in s.exec(stmt)]

    def rollups(self, integration: str | None = None, since: datetime | None = None) -> list[CheckRollup]:
        stmt = select(CheckRollup).order_by(CheckRollup.integration, CheckRollup.check, CheckRollup.hour)
        if integration is not None:
            stmt = stmt.where(CheckRollup.integration == integration)
        if since is not None:
            stmt = stmt.where(CheckRollup.hour >= since)
        with self._session() as s:
            return list(s.exec(stmt))
