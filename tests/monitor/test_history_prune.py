"""`prune_history` keeps exactly the rows it kept when it walked every (integration, check) pair with three
statements: the set-based DELETE is compared with that per-pair reference on the same store, on SQLite and on
PostgreSQL (the ``store`` fixture of the storage contract suite)."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

from sqlalchemy import and_, delete, not_, text
from sqlmodel import Session, col, select

from mailwarden.monitor.db_history import GOOD, WATERMARK
from mailwarden.monitor.models import CheckResult, CheckState, Meta

NOW = datetime(2030, 6, 1, 12, 0, tzinfo=UTC)
CAP, FAILURE_DAYS = 6, 30
RETENTION = {"raw_per_check": CAP, "failures_days": FAILURE_DAYS, "rollup_days": 90}


def _reference_prune(s: Session, now: datetime, *, raw_per_check: int, failures_days: int) -> None:
    """The per-pair prune as it was (monitor/db_history.py before the set-based DELETE), results part."""
    mark = datetime.fromisoformat(s.get(Meta, WATERMARK).value)
    keep_ids = {(integ, check): i for integ, check, i in s.exec(
        select(CheckState.integration, CheckState.check, CheckState.last_result_id)) if i is not None}
    pairs = list(s.exec(select(CheckResult.integration, CheckResult.check).distinct()))
    fail_since = now - timedelta(days=failures_days)
    for integ, check in pairs:
        of_pair = and_(CheckResult.integration == integ, CheckResult.check == check)
        newest = (select(CheckResult.checked_at).where(of_pair)
                  .order_by(col(CheckResult.checked_at).desc()).offset(raw_per_check - 1).limit(1))
        cutoff = s.exec(newest).first()
        if cutoff is None:
            continue
        fail_cutoff = s.exec(newest.where(col(CheckResult.status).not_in(GOOD))).first()
        kept_failure = and_(col(CheckResult.status).not_in(GOOD), CheckResult.checked_at >= fail_since,
                            CheckResult.checked_at >= fail_cutoff) if fail_cutoff is not None else \
            and_(col(CheckResult.status).not_in(GOOD), CheckResult.checked_at >= fail_since)
        stmt = delete(CheckResult).where(of_pair, CheckResult.checked_at < cutoff, CheckResult.checked_at < mark,
                                         not_(kept_failure))
        if (integ, check) in keep_ids:
            stmt = stmt.where(CheckResult.id != keep_ids[(integ, check)])
        s.execute(stmt)


def _fill(st, rng: random.Random) -> None:
    """Pairs with every edge of the rule: fewer rows than the cap, exactly the cap, ties at the cut, floods of
    failures (fail, error, blocked; warn counts as good) some older than failures_days, rows newer than the
    watermark, and a check state pointing at a row the caps would drop."""
    rows: list[dict] = []

    def add(integ: str, check: str, status: str, at: datetime) -> None:
        rows.append({"integration": integ, "check": check, "status": status, "summary": status, "details": {},
                     "checked_at": at})

    for k in range(CAP - 2):  # fewer than the cap: all stay
        add("few", "token", "ok", NOW - timedelta(days=50, hours=k))
    for k in range(CAP):  # exactly the cap
        add("exact", "token", "fail" if k % 2 else "ok", NOW - timedelta(days=40, hours=k))
    for k in range(CAP + 8):  # the 5th to 7th newest share a timestamp: the cut (6th) falls among them
        add("ties", "pop", "ok", NOW - timedelta(hours=10 + (min(k, CAP - 2) if k <= CAP else k - 2)))
    for k in range(40):  # a flood of failures, old and young, and warns (good)
        status = ("fail", "error", "blocked", "warn", "ok")[k % 5]
        add("flood", "imap", status, NOW - timedelta(days=k * 1.5))
    for k in range(30):  # young rows: newer than the watermark, never pruned yet
        add("young", "smtp", "ok" if k % 7 else "fail", NOW - timedelta(minutes=4 * k))
    for integ in ("r1", "r2", "r3"):
        for check in ("token", "graph_mail", "ews"):
            for _ in range(rng.randint(0, 40)):
                status = rng.choice(["ok"] * 6 + ["warn", "fail", "error", "blocked"])
                at = NOW - timedelta(minutes=rng.choice([0, 7, 60, 600, 6000, 60000, 90000]) + rng.randint(0, 3) * 60)
                add(integ, check, status, at)
    rows.sort(key=lambda r: rng.random())  # ids in no particular order of time
    with st.engine.begin() as conn:
        conn.execute(CheckResult.__table__.insert(), rows)
        pointed = conn.execute(text("SELECT min(id) FROM check_results WHERE integration = 'flood'")).scalar()
        oldest_r1 = conn.execute(text("SELECT min(id) FROM check_results WHERE integration = 'r1' "
                                      "AND \"check\" = 'token'")).scalar()
        conn.execute(CheckState.__table__.insert(), [
            {"integration": "flood", "check": "imap", "status": "ok", "failures": 0, "successes": 1,
             "last_result_id": pointed},
            {"integration": "r1", "check": "token", "status": "ok", "failures": 0, "successes": 1,
             "last_result_id": oldest_r1},
            {"integration": "few", "check": "token", "status": "new", "failures": 0, "successes": 0,
             "last_result_id": None}])
        conn.execute(Meta.__table__.insert(), [{"key": WATERMARK, "value": (NOW - timedelta(hours=2)).isoformat()}])


def _ids(st) -> set[int]:
    with st.engine.connect() as conn:
        return set(conn.execute(text("SELECT id FROM check_results")).scalars())


def test_set_based_prune_keeps_the_rows_the_per_pair_prune_kept(store):  # noqa: F811 - the fixture
    _fill(store, random.Random(8))
    before = _ids(store)
    for now in (NOW, NOW + timedelta(days=28)):  # then later: more failures age past failures_days
        with Session(store.engine) as s:
            _reference_prune(s, now, raw_per_check=CAP, failures_days=FAILURE_DAYS)
            s.flush()
            expected = set(s.exec(select(CheckResult.id)))
            s.rollback()
        assert _ids(store) == before  # the reference ran in a transaction rolled back
        removed = store.history.prune_history(now, **RETENTION)
        after = _ids(store)
        assert after == expected
        assert removed["results"] == len(before - after) > 0
        before = after
    # what a user relies on, spelled out: the state's row survives, rows newer than the watermark survive
    with store.engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM check_results WHERE integration = 'young'")).scalar() == 30
        assert conn.execute(text("SELECT count(*) FROM check_results WHERE integration = 'few'")).scalar() == CAP - 2
        assert conn.execute(text("SELECT count(*) FROM check_results r JOIN check_states s ON "
                                 "s.last_result_id = r.id")).scalar() == 2


def test_prune_without_a_watermark_keeps_every_result(store):  # noqa: F811 - the fixture
    _fill(store, random.Random(3))
    with store.engine.begin() as conn:
        conn.execute(text("DELETE FROM meta"))
    before = _ids(store)
    assert store.history.prune_history(NOW, **RETENTION)["results"] == 0
    assert _ids(store) == before
