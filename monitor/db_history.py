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

from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import and_, delete, not_
from sqlmodel import col, select

from monitor.models import CheckResult, CheckRollup, CheckState, Meta

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
        """Aggregate raw results into hourly rollups from the watermark on; returns the rows upserted."""
        with self._session(write=True) as s:
            start = self._watermark(s)
            if start is None:
                oldest = s.exec(select(CheckResult.checked_at).order_by(col(CheckResult.checked_at)).limit(1)).first()
                start = hour_of(oldest) if oldest is not None else hour_of(now - _SLACK)
            rows = s.exec(select(CheckResult.integration, CheckResult.check, CheckResult.status,
                                 CheckResult.latency_ms, CheckResult.checked_at)
                          .where(CheckResult.checked_at >= start))
            agg: dict[tuple[str, str, datetime], dict[str, Any]] = defaultdict(
                lambda: {"total": 0, **dict.fromkeys(STATUSES, 0), "latency_sum_ms": 0.0, "latency_count": 0,
                         "latency_max_ms": None})
            for integ, check, status, latency, at in rows:
                a = agg[(integ, check, hour_of(at))]
                a["total"] += 1
                if status in STATUSES:
                    a[status] += 1
                if latency is not None and status != "blocked":
                    a["latency_sum_ms"] += latency
                    a["latency_count"] += 1
                    a["latency_max_ms"] = max(a["latency_max_ms"] or 0.0, latency)
            for (integ, check, hour), values in agg.items():
                stmt = self._insert()(CheckRollup).values(integration=integ, check=check, hour=hour, **values)
                s.execute(stmt.on_conflict_do_update(index_elements=["integration", "check", "hour"], set_=values))
            mark = max(start, hour_of(now - _SLACK))
            stmt = self._insert()(Meta).values(key=WATERMARK, value=mark.isoformat())
            s.execute(stmt.on_conflict_do_update(index_elements=["key"], set_={"value": mark.isoformat()}))
        return len(agg)

    def prune_history(self, now: datetime, *, raw_per_check: int, failures_days: int,
                      rollup_days: int) -> dict[str, int]:
        """Delete raw results beyond the caps (only hours already rolled up) and rollups past retention."""
        removed = {"results": 0, "rollups": 0}
        with self._session(write=True) as s:
            mark = self._watermark(s)
            keep_ids = {i for i in s.exec(select(CheckState.last_result_id)) if i is not None}
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
                if keep_ids:
                    stmt = stmt.where(col(CheckResult.id).not_in(keep_ids))
                removed["results"] += s.execute(stmt).rowcount or 0
            old = delete(CheckRollup).where(CheckRollup.hour < now - timedelta(days=rollup_days))
            removed["rollups"] = s.execute(old).rowcount or 0
        return removed

    def rollups(self, integration: str | None = None, since: datetime | None = None) -> list[CheckRollup]:
        stmt = select(CheckRollup).order_by(CheckRollup.integration, CheckRollup.check, CheckRollup.hour)
        if integration is not None:
            stmt = stmt.where(CheckRollup.integration == integration)
        if since is not None:
            stmt = stmt.where(CheckRollup.hour >= since)
        with self._session() as s:
            return list(s.exec(stmt))
