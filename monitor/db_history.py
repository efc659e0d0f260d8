"""The history repository (``store.history``, ``monitor.db``): hourly rollups and bounded raw results, and
each integration's availability (one definition for every surface: ``percent``, ``integration_state``,
``availability_ms``; hourly ``integration_rollups`` written by ``rollup_availability``).

Rollups are recomputed from raw rows, so the job is idempotent: every hour from a watermark (kept in
``meta``) up to now is aggregated again and upserted; the watermark then moves to the start of the
previous hour, and only raw rows older than the watermark may be pruned. An hour is therefore always
rolled up from all of its rows before any of them goes. Raw rows kept per (integration, check): every one
younger than ``raw_hours`` (each run of the last hours: the beats, ``recent_beats``), plus the newest
``raw_per_check`` of any status, plus the newest ``raw_per_check`` failures younger than ``failures_days`` (a
failing check's recent transcripts outlive a flood of later successes), plus the row a check state points at.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

from sqlalchemy import and_, case, delete, func, literal, literal_column, or_, type_coerce
from sqlalchemy import select as core_select
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import aliased
from sqlalchemy.sql.functions import FunctionElement
from sqlalchemy.types import Integer, NullType
from sqlmodel import col, select

from mailwarden.columns import UTCDateTime
from mailwarden.monitor.db_repository import Repository
from mailwarden.monitor.models import (
    CheckResult,
    CheckRollup,
    CheckState,
    Integration,
    IntegrationRollup,
    Meta,
    Transition,
    table_of,
)

WATERMARK = "history.rollup_from"
AVAILABILITY_MARK = "history.availability_from"  # the availability rollup's own watermark (it catches up apart)
STATUSES = ("ok", "warn", "fail", "error", "blocked")
GOOD = ("ok", "warn")
BAD = ("fail", "error", "blocked")  # a check state that makes its integration unavailable
_BACKFILL = timedelta(days=31)  # first run: availability from the stored transitions of the longest window (30 d)
_ROWS_PER_RUN = 50_000  # integration-hours written per run while catching up (bounds the write lock)
_MS = timedelta(milliseconds=1)
_HOUR = timedelta(hours=1)
_SLACK = timedelta(minutes=5)  # a result may be stored a little after its checked_at


def _utc(raw: Any) -> datetime:
    """A timestamp as the driver returns it (SQLite: text without offset, UTC; PostgreSQL: aware) as aware UTC."""
    if isinstance(raw, str):
        try:  # parsed with its offset: 5x faster than parsing, then replace(tzinfo=...)
            return datetime.fromisoformat(raw + "+00:00")
        except ValueError:
            raw = datetime.fromisoformat(raw)
    return raw.replace(tzinfo=UTC) if raw.tzinfo is None else raw.astimezone(UTC)


def _utc_or_none(raw: Any) -> datetime | None:
    return None if raw is None else _utc(raw)


def _failed(status: Any) -> Any:
    """``status NOT IN ('ok', 'warn')`` with the statuses as SQL literals, not bound values: SQLite uses the partial
    index ix_check_results_failures only for a term that matches its WHERE, constants included (bound: a table
    scan; at 10,000 integrations x 5 checks with 48 h of results kept, a prune with nothing to delete took 5.2 s of
    SQLite's write lock with the scan, 2.9 s with the index; bench/history.py)."""
    return status.not_in([literal_column(f"'{st}'") for st in GOOD])


def _driver_rows(conn: Any, stmt: Any) -> list[tuple[Any, ...]]:
    """The driver's own tuples, without a SQLAlchemy Row per row nor the column types' processing (the caller
    converts): for the overview's reads of thousands of rows (bench/)."""
    result = conn.execute(stmt)
    try:
        return result.cursor.fetchall()
    finally:
        result.close()


class StateRow(NamedTuple):
    integration: str
    check: str
    last_status: str | None
    last_code: str | None
    since: datetime | None
    last_checked_at: datetime | None
    last_ok_at: datetime | None


class Beat(NamedTuple):
    """One run of a check as the beats show it (a raw result, without its transcript, raw reply and metrics)."""

    id: int
    checked_at: datetime
    status: str
    code: str | None
    latency_ms: float | None
    summary: str


_FINAL_HOURS_LOCK = threading.Lock()


def _availability_rows(conn: Any, since: datetime, until: datetime | None,
                       integration: str | None) -> list[tuple[str, datetime, int, int]]:
    """(integration, hour, up_ms, down_ms) of the hours in [since, until), read from
    ix_integration_rollups_integration_hour alone (one range per integration: the IN list; without it SQLite
    walks the whole index). The hour comes back as the driver gives it and is converted once per distinct hour."""
    c, names = table_of(IntegrationRollup).c, table_of(Integration).c
    which = c.integration == integration if integration is not None else c.integration.in_(core_select(names.name))
    stmt = core_select(c.integration, type_coerce(c.hour, NullType()), c.up_ms, c.down_ms).where(which, c.hour >= since)
    if until is not None:
        stmt = stmt.where(c.hour < until)
    hours: dict[Any, datetime] = {}
    out = []
    for integ, raw, up, down in _driver_rows(conn, stmt):
        hour = hours.get(raw)
        if hour is None:
            hour = hours[raw] = _utc(raw)
        out.append((integ, hour, int(up), int(down)))
    return out


def _availability_sums(conn: Any, starts: Sequence[datetime], integrations: list[str] | None,
                       lo: datetime | None, hi: datetime | None) -> dict[str, list[tuple[int, int]]]:
    """Per integration: (up_ms, down_ms) of the hours in [max(start, lo), hi) for each of ``starts``: one statement,
    one pass over ix_integration_rollups_integration_hour (the IN list: one range per integration)."""
    c, names = table_of(IntegrationRollup).c, table_of(Integration).c
    which = c.integration.in_(integrations if integrations is not None else core_select(names.name))
    sums = []
    for at in starts:
        since = c.hour >= literal(at, UTCDateTime)
        sums += [func.sum(case((since, c.up_ms), else_=0)), func.sum(case((since, c.down_ms), else_=0))]
    stmt = (core_select(c.integration, *sums).where(which, c.hour >= max(min(starts), lo or min(starts)))
            .group_by(c.integration))
    if hi is not None:
        stmt = stmt.where(c.hour < hi)
    return {row[0]: [(int(row[1 + 2 * i] or 0), int(row[2 + 2 * i] or 0)) for i in range(len(starts))]
            for row in _driver_rows(conn, stmt)}


class _CellOf(FunctionElement):
    """``(hour - start)`` in whole hours, integer-divided by ``per``: the cell of an hourly rollup in a bar.
    Date arithmetic is the one thing SQLite and PostgreSQL spell differently (all three are SQL expressions,
    bound values included: part of the statement cache key)."""

    type = Integer()
    inherit_cache = True
    name = "cell_of"


@compiles(_CellOf, "sqlite")
def _cell_of_sqlite(element: _CellOf, compiler: Any, **kw: Any) -> str:
    hour, start, per = (compiler.process(c, **kw) for c in element.clauses)
    return f"(CAST(round((julianday({hour}) - julianday({start})) * 24) AS INTEGER) / {per})"


@compiles(_CellOf, "postgresql")
def _cell_of_postgresql(element: _CellOf, compiler: Any, **kw: Any) -> str:
    hour, start, per = (compiler.process(c, **kw) for c in element.clauses)
    return f"(CAST(round(EXTRACT(EPOCH FROM ({hour} - {start})) / 3600) AS INTEGER) / {per})"


def hour_of(t: datetime) -> datetime:
    return t.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


# -- availability: one definition for the overview, the integration page, the report, the API and /metrics -------
def percent(up_ms: int, down_ms: int) -> float | None:
    """An integration's availability in percent: the share of the time known (up + down) that was up; None when no
    time is known. One decimal, more only where rounding would turn a partial figure into 0 or 100 (99.96 stays
    99.96, never "100.0")."""
    known = up_ms + down_ms
    if known <= 0:
        return None
    if down_ms == 0 or up_ms == 0:
        return 100.0 if down_ms == 0 else 0.0
    exact = 100.0 * up_ms / known
    for digits in (1, 2, 3, 4):
        if 0 < (shown := round(exact, digits)) < 100:
            return shown
    return 99.9999 if exact > 50 else 0.0001


def integration_state(statuses: Iterable[str], in_maintenance: bool = False) -> str | None:
    """What one instant of an integration counts as, from its checks' states (after the thresholds): "down" when
    one is bad (fail, error, blocked), else "up" when all are good (ok, warn), else None, left out of the
    denominator (in a maintenance window, paused, or a check with no state yet: ``new``)."""
    statuses = list(statuses)
    if in_maintenance or not statuses:
        return None
    if any(st in BAD for st in statuses):
        return "down"
    return "up" if all(st in GOOD for st in statuses) else None


def availability_ms(checks: Sequence[str], at_start: dict[str, str], changes: Iterable[tuple[datetime, str, str]],
                    start: datetime, end: datetime,
                    maintenance: Iterable[tuple[datetime, datetime]] = ()) -> dict[datetime, list[int]]:
    """Per hour from ``start`` (an hour's start) to ``end``: [up_ms, down_ms] of one integration whose ``checks``
    were in the states ``at_start`` at ``start`` (a check missing: ``new``) and then changed as ``changes`` say
    ((at, check, to_status), in the order they were folded), less the ``maintenance`` spans. Pure."""
    events: list[tuple[datetime, int, str, Any]] = []
    last: dict[str, datetime] = {}
    for at, check, to in changes:
        at = max(at, last.get(check, at))  # folded in this order: a late checked_at never reorders them
        last[check] = at
        events.append((at, 1, check, to))
    for a, b in maintenance:
        events += [(a, 0, "", 1), (b, 0, "", -1)]
    events.sort(key=lambda e: (e[0], e[1]))
    state = {k: at_start.get(k, "new") for k in checks}
    out: dict[datetime, list[int]] = {}
    held, t = 0, start

    def count(a: datetime, b: datetime) -> None:
        kind = integration_state(state.values(), held > 0)
        while a < b:
            hour = hour_of(a)
            nxt = min(b, hour + _HOUR)
            cell = out.setdefault(hour, [0, 0])
            if kind is not None:
                cell[0 if kind == "up" else 1] += (nxt - a) // _MS
            a = nxt

    for at, typ, check, value in events:
        at = min(max(at, start), end)
        if at > t:
            count(t, at)
            t = at
        if typ == 0:
            held += value
        elif check in state:
            state[check] = value
    count(t, end)
    return out


def maintenance_spans(windows: Sequence[Any], start: datetime,
                      end: datetime) -> Callable[[str, Iterable[str]], list[tuple[datetime, datetime]]]:
    """For an integration (name, tags): the parts of [start, end) in which one of the config's maintenance windows
    (``alerts.maintenance``, the windows that hold alerts) covers it, left out of its availability."""
    from zoneinfo import ZoneInfo

    from apscheduler.triggers.cron import CronTrigger

    from mailwarden.alerts.windows import covers

    found: list[tuple[Any, list[tuple[datetime, datetime]]]] = []
    for w in windows:
        spans = []
        if w.cron:
            duration = timedelta(seconds=float(w.duration or 0))
            trigger = CronTrigger.from_crontab(w.cron, timezone=w.timezone)
            begin = trigger.get_next_fire_time(None, start - duration)
            while begin is not None and begin < end:
                spans.append((max(begin.astimezone(UTC), start), min((begin + duration).astimezone(UTC), end)))
                begin = trigger.get_next_fire_time(begin, begin + timedelta(seconds=1))
        else:
            zone = ZoneInfo(w.timezone)
            a, b = (t if t.tzinfo else t.replace(tzinfo=zone) for t in (w.start, w.end))
            spans.append((max(a.astimezone(UTC), start), min(b.astimezone(UTC), end)))
        found.append((w, [(a, b) for a, b in spans if a < b]))

    def of(integration: str, tags: Iterable[str]) -> list[tuple[datetime, datetime]]:
        tags = list(tags)
        return [span for w, spans in found if spans and covers(w, [integration], tags) for span in spans]

    return of


class HistoryRepository(Repository):
    """Rollups, availability and the pruning of raw results (``store.history``)."""

    def _watermark(self, s: Any) -> datetime | None:
        row = s.get(Meta, WATERMARK)
        return datetime.fromisoformat(row.value) if row is not None else None

    def rollup_history(self, now: datetime, *, maintenance: Sequence[Any] = ()) -> int:
        """Aggregate raw results into hourly check rollups from the watermark on (returns the rows upserted),
        then each integration's availability into its hourly rollups (``rollup_availability``; ``maintenance``:
        the config's maintenance windows, ``alerts.maintenance``).

        Set-based: one ``INSERT ... SELECT ... GROUP BY ... ON CONFLICT DO UPDATE`` per hour window (the
        hour a bound value, so the same statement runs on SQLite and PostgreSQL); no row goes through
        Python, so the write lock is held for index range scans only (it used to re-read every result
        since the watermark and upsert row by row: bench/)."""
        upserted = self._rollup_checks(now)
        self.rollup_availability(now, maintenance=maintenance)
        return upserted

    def _rollup_checks(self, now: datetime) -> int:
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
        r = table_of(CheckResult).c
        timed = and_(r.latency_ms.is_not(None), r.status != "blocked")
        counts = [func.sum(case((r.status == st, 1), else_=0)).label(st) for st in STATUSES]
        agg = (core_select(r.integration, r.check, literal(hour, UTCDateTime).label("hour"),
                           func.count().label("total"), *counts,
                           func.coalesce(func.sum(case((timed, r.latency_ms), else_=None)), 0.0)
                           .label("latency_sum_ms"),
                           func.count(case((timed, 1), else_=None)).label("latency_count"),
                           func.max(case((timed, r.latency_ms), else_=None)).label("latency_max_ms"))
               .where(r.checked_at >= hour, r.checked_at < hour + timedelta(hours=1))
               .group_by(r.integration, r.check))
        cols = ["integration", "check", "hour", "total", *STATUSES, "latency_sum_ms", "latency_count",
                "latency_max_ms"]
        stmt = self._insert()(table_of(CheckRollup)).from_select(cols, agg)
        # only the pairs whose hour changed are written: the current hour is summed again every minute, and
        # rewriting all 5,000 rows (and their index entries) each time held the write lock for nothing (bench/)
        current = table_of(CheckRollup).c
        changed = or_(*(current[c].is_distinct_from(stmt.excluded[c]) for c in cols[3:]))
        return stmt.on_conflict_do_update(index_elements=["integration", "check", "hour"],
                                          set_={c: stmt.excluded[c] for c in cols[3:]}, where=changed)

    def prune_history(self, now: datetime, *, raw_per_check: int, failures_days: int, rollup_days: int,
                      raw_hours: int = 0) -> dict[str, int]:
        """Delete raw results beyond the caps and older than ``raw_hours`` (only hours already rolled up) and
        rollups past retention (the settings of ``web.retention``; ``raw_hours`` 0: no result kept for its age).

        Set-based: one ``DELETE`` for all (integration, check) pairs (the same statement on SQLite and
        PostgreSQL); see ``_prune_results`` for the rule. It used to walk every pair with three statements
        under the write lock: 9-12 s an hour at 1,000 integrations x 5 checks (bench/)."""
        removed = {"results": 0, "rollups": 0, "availability": 0}
        with self._session(write=True) as s:
            mark = self._watermark(s)
            if mark is not None:
                removed["results"] = s.execute(self._prune_results(
                    min(mark, now - timedelta(hours=raw_hours)), now - timedelta(days=failures_days),
                    raw_per_check)).rowcount or 0
            old = delete(CheckRollup).where(col(CheckRollup.hour) < now - timedelta(days=rollup_days))
            removed["rollups"] = s.execute(old).rowcount or 0
            old = delete(IntegrationRollup).where(col(IntegrationRollup.hour) < now - timedelta(days=rollup_days))
            removed["availability"] = s.execute(old).rowcount or 0
        return removed

    @staticmethod
    def _prune_results(keep_from: datetime, fail_since: datetime, cap: int) -> Any:
        """A row goes when all of these hold: at least ``cap`` rows of its pair are newer (it is older than the
        pair's cap-th newest row, as ``cut`` finds it: ties at the cut stay), it is older than ``keep_from`` (the
        rollup watermark, or the start of the ``raw_hours`` kept, whichever is earlier), it is not one of the
        pair's newest ``cap`` failures younger than ``fail_since``, and no check state points at it.

        Window functions (ROW_NUMBER over each pair) are the textbook way, and were measured: SQLite ranks
        a million rows in 2-3 s even from an index. So the pair's cut is a correlated ``LIMIT 1 OFFSET cap-1``
        on ix_check_results_integration_check_at (0.1 s for 5,000 pairs), for the pairs with a row older than
        ``keep_from`` only (a range of ix_check_results_checked_at); the failures are read from the partial index
        ix_check_results_failures (``_failed``); only pairs with more young failures than the cap get a failure
        cut; and the victims are a range of ix_check_results_integration_check_at below each pair's cut and
        ``keep_from``, anti-joined with the kept failures and the states' rows without reading the table. The
        constant bound ``keep_from`` is what lets PostgreSQL read the victims from the checked_at range: without
        it, it hashed the whole table three times (at 10,000 integrations x 5 checks with 48 h kept: 30 s an hour,
        7.6 s with it; bench/history.py). The CTEs are MATERIALIZED (SQLite >= 3.35, PostgreSQL >= 12): inlined, SQLite
        recomputed the correlated cut for every candidate row."""
        t = table_of(CheckResult)
        r, x = t.c, t.alias("x").c
        bad = _failed(r.status)

        def nth_newest(integ: Any, check: Any, *where: Any) -> Any:
            return (core_select(x.checked_at).where(x.integration == integ, x.check == check, *where)
                    .order_by(x.checked_at.desc()).limit(1).offset(cap - 1).scalar_subquery())

        # only the pairs with a row older than keep_from can lose one: a range of ix_check_results_checked_at, not
        # the whole table (with raw_hours it holds every run of two days: 29 million rows at 10,000 integrations)
        pairs = core_select(r.integration, r.check).where(r.checked_at < keep_from).distinct().subquery("pairs")
        cut = (core_select(pairs.c.integration, pairs.c.check,
                           nth_newest(pairs.c.integration, pairs.c.check).label("cutoff"))
               .cte("cut", nesting=True).prefix_with("MATERIALIZED"))
        failures = (core_select(r.id, r.integration, r.check, r.checked_at).where(bad)
                    .cte("failures", nesting=True).prefix_with("MATERIALIZED"))
        f = failures.c
        many = (core_select(f.integration, f.check,
                            nth_newest(f.integration, f.check, _failed(x.status), x.checked_at >= fail_since)
                            .label("fail_cutoff"))
                .where(f.checked_at >= fail_since).group_by(f.integration, f.check).having(func.count() >= cap)
                .cte("many", nesting=True).prefix_with("MATERIALIZED"))
        kept = (core_select(f.id.label("id"))
                .select_from(failures.outerjoin(many, and_(many.c.integration == f.integration,
                                                           many.c.check == f.check)))
                .where(f.checked_at >= fail_since,
                       or_(many.c.fail_cutoff.is_(None), f.checked_at >= many.c.fail_cutoff))
                .cte("kept", nesting=True).prefix_with("MATERIALIZED"))
        states = table_of(CheckState)
        va = t.alias("v")
        v = va.c
        # SQLite's range's upper bound: the earlier of the pair's cut and keep_from (no cut, fewer than cap rows: NULL,
        # nothing goes; of two bounds it ranges up to one and filters the rows between them); PostgreSQL's: keep_from
        keep = literal(keep_from, UTCDateTime)
        below = case((cut.c.cutoff > keep, keep), else_=cut.c.cutoff)
        # anti-joins (LEFT JOIN ... IS NULL), not NOT IN: PostgreSQL hashes NOT IN only while the list fits work_mem
        victims = (core_select(v.id)
                   .select_from(cut.join(va, and_(v.integration == cut.c.integration, v.check == cut.c.check,
                                                  v.checked_at < below, v.checked_at < keep))
                                .outerjoin(kept, kept.c.id == v.id)
                                .outerjoin(states, states.c.last_result_id == v.id))
                   .where(kept.c.id.is_(None), states.c.last_result_id.is_(None)))
        return delete(t).where(r.id.in_(victims))

    def rollup_availability(self, now: datetime, *, maintenance: Sequence[Any] = ()) -> int:
        """Each integration's availability per hour, from its own watermark to ``now`` (the current hour up to
        ``now``); returns the rows written. Read from the check states after the thresholds: the transitions from
        the watermark on, and for the state at the watermark the ``from_status`` of each check's first one (else
        its current state). The integration's checks are those of the config now (the store's copy).

        The first run starts ``_BACKFILL`` ago, or at the first transition if that is later (after an upgrade the
        30-day figures come from the history already stored); a run writes at most ``_ROWS_PER_RUN`` integration-hours,
        so catching up never holds the write lock for long. Idempotent: hours from the watermark are computed
        again and only changed rows are written."""
        it, st, tr, m = (table_of(Integration).c, table_of(CheckState).c, table_of(Transition).c,
                         table_of(Meta).c)
        with self._connection(write=True) as conn:
            raw = conn.execute(core_select(m.value).where(m.key == AVAILABILITY_MARK)).scalar()
            if raw is not None:
                start = datetime.fromisoformat(raw).astimezone(UTC)
            else:
                # before the first transition every check was new (nothing known); a state entered earlier than
                # the backfill holds from its start unless a later transition says otherwise
                oldest = conn.execute(core_select(func.min(tr.at))).scalar()
                start = max(hour_of(oldest), hour_of(now - _BACKFILL)) if oldest is not None else hour_of(now - _SLACK)
            integrations = conn.execute(core_select(it.name, it.tags, it.checks).where(it.removed_at.is_(None))).all()
            end = min(now, start + _HOUR * max(1, _ROWS_PER_RUN // max(1, len(integrations))))
            if end <= start:
                return 0
            current = {(i, k): status for i, k, status in _driver_rows(conn, core_select(st.integration, st.check,
                                                                                          st.status))}
            first_from: dict[tuple[str, str], str] = {}
            changes: dict[str, list[tuple[datetime, str, str]]] = defaultdict(list)
            for integ, check, frm, to, at in conn.execute(core_select(tr.integration, tr.check, tr.from_status,
                                                                      tr.to_status, tr.at)
                                                          .where(tr.at >= start).order_by(tr.id)):
                first_from.setdefault((integ, check), frm)
                if at < end:
                    changes[integ].append((at, check, to))
            held = maintenance_spans(maintenance, start, end)
            stored = {(i, h): (up, down) for i, h, up, down in _availability_rows(conn, start, end, None)}
            rows = []
            for name, tags, checks in integrations:
                at_start = {k: first_from.get((name, k), current.get((name, k), "new")) for k in checks or []}
                hours = availability_ms(list(checks or []), at_start, changes.get(name, ()), start, end,
                                        held(name, tags or []))
                # only the rows that changed: the current hour every minute, past ones once
                rows += [{"integration": name, "hour": hour, "up_ms": up, "down_ms": down}
                         for hour, (up, down) in hours.items() if stored.get((name, hour)) != (up, down)]
            if rows:
                stmt = self._insert()(table_of(IntegrationRollup))
                conn.execute(stmt.on_conflict_do_update(
                    index_elements=["integration", "hour"],
                    set_={"up_ms": stmt.excluded.up_ms, "down_ms": stmt.excluded.down_ms}), rows)
            mark = max(start, min(hour_of(now - _SLACK), end)).isoformat()
            upsert = self._insert()(Meta).values(key=AVAILABILITY_MARK, value=mark)
            conn.execute(upsert.on_conflict_do_update(index_elements=["key"], set_={"value": mark}))
        return len(rows)

    def availability_by_hour(self, since: datetime,
                             integration: str | None = None) -> list[tuple[str, datetime, int, int]]:
        """(integration, hour, up_ms, down_ms) of the hours from ``since``: the overview's hourly strip and 24 h
        figure. For every integration (the overview, reloaded every minute by everyone who has it open) the hours
        before the availability watermark are final and read once per process: only the hours from the watermark
        on (one or two) are read again at each call."""
        with self._connection() as conn:
            m = table_of(Meta).c
            raw = conn.execute(core_select(m.value).where(m.key == AVAILABILITY_MARK)).scalar()
            mark = datetime.fromisoformat(raw).astimezone(UTC) if raw else None
            if integration is not None or mark is None or mark <= since:
                return _availability_rows(conn, since, None, integration)
            hours = []
            hour = since
            while hour < mark:
                hours.append(hour)
                hour += _HOUR
            cache: dict[datetime, list[tuple[str, datetime, int, int]]] = self.__dict__.setdefault("_final_hours", {})
            with _FINAL_HOURS_LOCK:
                missing = [h for h in hours if h not in cache]
            if missing:
                by_hour: dict[datetime, list[tuple[str, datetime, int, int]]] = {h: [] for h in missing}
                for row in _availability_rows(conn, missing[0], mark, None):
                    by_hour.setdefault(row[1], []).append(row)
                with _FINAL_HOURS_LOCK:
                    cache.update(by_hour)
            fresh = _availability_rows(conn, mark, None, None)
        with _FINAL_HOURS_LOCK:
            for old in [h for h in cache if h < since - timedelta(hours=24)]:
                del cache[old]
            final = [row for h in hours for row in cache.get(h, [])]
        return final + fresh

    def availability_sums(self, starts: Sequence[datetime], integrations: list[str] | None = None,
                          until: datetime | None = None) -> dict[str, list[tuple[int, int]]]:
        """Per integration: (up_ms, down_ms) summed over the hours from each of ``starts`` (to ``until``): the
        24 h / 7 d / 30 d figures of the API, /metrics and the report. ``integrations``: only these (default:
        every one the store knows).

        For every integration the hours before the availability watermark are final: their sums are read once
        per process and watermark (an hour), only the hours from the watermark on at each call. Summing 30 days
        at every call was 0.24 s at 1,000 integrations, for each scrape of /metrics and each /api/integrations."""
        with self._connection() as conn:
            if integrations is not None:
                return _availability_sums(conn, starts, integrations, None, until)
            m = table_of(Meta).c
            raw = conn.execute(core_select(m.value).where(m.key == AVAILABILITY_MARK)).scalar()
            mark = datetime.fromisoformat(raw).astimezone(UTC) if raw else None
            if mark is None or mark <= min(starts) or (until is not None and until <= mark):
                return _availability_sums(conn, starts, None, None, until)
            key = (tuple(starts), mark)
            cache: dict[tuple[Any, ...], dict[str, list[tuple[int, int]]]] = self.__dict__.setdefault("_final_sums",
                                                                                                     {})
            with _FINAL_HOURS_LOCK:
                final = cache.get(key)
            if final is None:
                final = _availability_sums(conn, starts, None, None, mark)
                with _FINAL_HOURS_LOCK:
                    for old in [k for k in cache if k[1] != mark]:
                        del cache[old]
                    cache[key] = final
            fresh = _availability_sums(conn, starts, None, mark, until)
        out = {name: list(sums) for name, sums in final.items()}
        for name, sums in fresh.items():
            out[name] = [(a + c, b + d) for (a, b), (c, d) in zip(out.get(name, [(0, 0)] * len(starts)), sums,
                                                                  strict=True)]
        return out

    def availability_cells(self, integrations: list[str], start: datetime, hours_per_cell: int,
                           cells: int) -> dict[str, list[tuple[int, int, int]]]:
        """Per integration: (cell, up_ms, down_ms) for ``cells`` cells of ``hours_per_cell`` hours from ``start``
        (cell 0 first), summed in the database: the availability bars of the integration page and the report."""
        c = table_of(IntegrationRollup).c
        cell = _CellOf(c.hour, literal(start, UTCDateTime), literal(hours_per_cell, Integer()))
        stmt = (core_select(c.integration, cell, func.sum(c.up_ms), func.sum(c.down_ms))
                .where(c.integration.in_(integrations), c.hour >= start,
                       c.hour < start + timedelta(hours=hours_per_cell * cells))
                .group_by(c.integration, cell))
        out: dict[str, list[tuple[int, int, int]]] = {name: [] for name in integrations}
        with self._connection() as conn:
            for integ, i, up, down in _driver_rows(conn, stmt):
                out[integ].append((int(i), int(up or 0), int(down or 0)))
        return out

    def rollups(self, integration: str | None = None, since: datetime | None = None) -> list[CheckRollup]:
        stmt = select(CheckRollup).order_by(col(CheckRollup.integration), col(CheckRollup.check), col(CheckRollup.hour))
        if integration is not None:
            stmt = stmt.where(CheckRollup.integration == integration)
        if since is not None:
            stmt = stmt.where(CheckRollup.hour >= since)
        with self._session() as s:
            return list(s.exec(stmt))

    # -- reads of the overview, the integration page and the report: Core rows and the driver's own values
    # (converted here), no ORM objects: 5,000 states through the ORM took 0.36 s of the overview (bench/) ------
    def state_rows(self, integration: str | None = None) -> list[StateRow]:
        """What the pages show of each check state (integration, check, last_status, last_code, since,
        last_checked_at, last_ok_at), as plain named tuples: read for every check at each overview."""
        c = table_of(CheckState).c
        stmt = core_select(c.integration, c.check, c.last_status, c.last_code,
                           *(type_coerce(col_, NullType()) for col_ in (c.since, c.last_checked_at, c.last_ok_at)))
        if integration is not None:
            stmt = stmt.where(c.integration == integration)
        with self._connection() as conn:
            rows = _driver_rows(conn, stmt)
        return [StateRow(i, k, st, code, _utc_or_none(a), _utc_or_none(b), _utc_or_none(o))
                for i, k, st, code, a, b, o in rows]

    def integration_rows(self, name: str | None = None) -> list[Any]:
        """The integrations in the config (not removed), by name: the columns the pages show."""
        c = table_of(Integration).c
        stmt = (core_select(c.name, c.tenant, c.app, c.system, c.flow, c.mailbox, c.tags, c.checks, c.paused)
                .where(c.removed_at.is_(None)).order_by(c.name))
        if name is not None:
            stmt = stmt.where(c.name == name)
        with self._connection() as conn:
            return list(conn.execute(stmt))

    def uptime_totals(self, since: datetime, integration: str | None = None) -> list[tuple[str, int, int]]:
        """(integration, ok + warn, total) summed over its checks' results and the hours from ``since``: the API's
        deprecated ``uptime_24h`` (a share of results, not of time: availability is ``availability_sums``)."""
        c, names = table_of(CheckRollup).c, table_of(Integration).c
        which = c.integration == integration if integration is not None else c.integration.in_(core_select(names.name))
        stmt = (core_select(c.integration, func.sum(c.ok + c.warn), func.sum(c.total))
                .where(which, c.hour >= since).group_by(c.integration))
        with self._connection() as conn:
            return [(integ, int(up or 0), int(total or 0)) for integ, up, total in _driver_rows(conn, stmt)]

    def uptime_cells(self, integrations: list[str], start: datetime, hours_per_cell: int,
                     cells: int) -> dict[str, list[tuple[str, int, int, int]]]:
        """Per integration: (check, cell, ok + warn, total) for ``cells`` cells of ``hours_per_cell`` hours from
        ``start`` (cell 0 first), summed in the database from ix_check_rollups_integration_hour alone: uptime
        bars. 30 days of hourly rows through Python took 10-15 ms an integration (bench/)."""
        c = table_of(CheckRollup).c
        cell = _CellOf(c.hour, literal(start, UTCDateTime), literal(hours_per_cell, Integer()))
        stmt = (core_select(c.integration, c.check, cell, func.sum(c.ok + c.warn), func.sum(c.total))
                .where(c.integration.in_(integrations), c.hour >= start,
                       c.hour < start + timedelta(hours=hours_per_cell * cells))
                .group_by(c.integration, c.check, cell))
        out: dict[str, list[tuple[str, int, int, int]]] = {name: [] for name in integrations}
        with self._connection() as conn:
            for integ, check, i, up, total in _driver_rows(conn, stmt):
                out[integ].append((check, int(i), int(up or 0), int(total or 0)))
        return out

    def latency_rows(self, integrations: list[str], since: datetime) -> dict[str, list[tuple[str, datetime, float]]]:
        """Per integration: (check, hour, mean latency in ms) of each hour from ``since`` that has timed
        results: sparklines."""
        c = table_of(CheckRollup).c
        stmt = (core_select(c.integration, c.check, type_coerce(c.hour, NullType()), c.latency_sum_ms / c.latency_count)
                .where(c.integration.in_(integrations), c.hour >= since, c.latency_count > 0))
        hours: dict[Any, datetime] = {}
        out: dict[str, list[tuple[str, datetime, float]]] = {name: [] for name in integrations}
        with self._connection() as conn:
            for integ, check, raw, mean in _driver_rows(conn, stmt):
                hour = hours.get(raw)
                if hour is None:
                    hour = hours[raw] = _utc(raw)
                out[integ].append((check, hour, float(mean)))
        return out

    def recent_beats(self, integration: str, since: datetime, per_check: int) -> dict[str, list[Beat]]:
        """Per check of ``integration``: its newest ``per_check`` raw results checked at ``since`` or later, oldest
        first, as ``Beat`` tuples (the beats of the integration page; ``web.retention.raw_hours`` keeps every run
        of the last hours). A check without such a result is missing."""
        out: dict[str, list[Beat]] = {}
        with self._connection() as conn:
            for rid, check, at, status, code, latency, summary in _driver_rows(
                    conn, self._beats_query(integration, since, per_check)):
                out.setdefault(check, []).append(Beat(int(rid), _utc(at), status, code,
                                                      None if latency is None else float(latency), summary or ""))
        return out

    @staticmethod
    def _beats_query(integration: str, since: datetime, per_check: int) -> Any:
        """One statement: a window over the integration's range of ix_check_results_integration_check_at."""
        r = table_of(CheckResult).c
        newest = func.row_number().over(partition_by=r.check, order_by=(r.checked_at.desc(), r.id.desc()))
        ranked = (core_select(r.id, r.check, type_coerce(r.checked_at, NullType()).label("at"), r.status, r.code,
                              r.latency_ms, r.summary, newest.label("n"))
                  .where(r.integration == integration, r.checked_at >= since).subquery("ranked"))
        k = ranked.c
        return (core_select(k.id, k.check, k.at, k.status, k.code, k.latency_ms, k.summary)
                .where(k.n <= per_check).order_by(k.check, k.at, k.id))

    def latest_results_of(self, integrations: list[str]) -> list[CheckResult]:
        """``latest_results`` of several integrations in one statement (the report's pages)."""
        r = aliased(CheckResult)
        newest = (select(r.id).where(r.integration == CheckState.integration, r.check == CheckState.check)
                  .order_by(col(r.checked_at).desc(), col(r.id).desc()).limit(1)
                  .correlate(CheckState).scalar_subquery())
        ids = select(newest).select_from(CheckState).where(col(CheckState.integration).in_(integrations))
        stmt = (select(CheckResult).where(col(CheckResult.id).in_(ids))
                .order_by(CheckResult.integration, CheckResult.check))
        with self._session() as s:
            return list(s.exec(stmt))
