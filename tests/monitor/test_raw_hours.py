"""Raw results kept by age (``web.retention.raw_hours``, issue 19 item 4): every run of the last hours survives the
prune beside the per-check count cap and the failures, never fewer rows than before; the rollup watermark still
protects what is not rolled up; the beats read (``recent_beats``); the setting's bounds. On SQLite and PostgreSQL
(the ``store`` fixture)."""

from __future__ import annotations

import random
import textwrap
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text

from mailwarden.errors import ConfigError
from mailwarden.monitor import config as config_mod
from mailwarden.monitor.config import RetentionConfig
from mailwarden.monitor.db_history import GOOD, WATERMARK, Beat
from mailwarden.monitor.models import CheckResult, CheckState, Meta

NOW = datetime(2030, 6, 1, 12, 0, tzinfo=UTC)
CAP, FAILURE_DAYS = 10, 30


def _add(store, rows: list[tuple[str, str, str, datetime]], *, mark: datetime | None,
         pointed: tuple[str, str, datetime] | None = None) -> dict[int, tuple[str, str, str, datetime]]:
    """Results (integration, check, status, checked_at) in a shuffled order of ids; the rollup watermark at ``mark``;
    a check state pointing at the result of ``pointed`` (integration, check, checked_at). Returns them by id."""
    rows = list(rows)
    random.Random(4).shuffle(rows)
    with store.engine.begin() as conn:
        conn.execute(CheckResult.__table__.insert(), [
            {"integration": i, "check": c, "status": st, "summary": st, "details": {}, "checked_at": at,
             "code": None if st in GOOD else "auth_failed", "latency_ms": 100.0} for i, c, st, at in rows])
        if mark is not None:
            conn.execute(Meta.__table__.insert(), [{"key": WATERMARK, "value": mark.isoformat()}])
    with store.engine.connect() as conn:
        ids = [r[0] for r in conn.execute(text("SELECT id FROM check_results ORDER BY id"))]
    by_id = dict(zip(ids, rows, strict=True))
    if pointed is not None:
        rid = next(i for i, (a, b, _, at) in by_id.items() if (a, b, at) == pointed)
        with store.engine.begin() as conn:
            conn.execute(CheckState.__table__.insert(), [
                {"integration": pointed[0], "check": pointed[1], "status": "ok", "failures": 0, "successes": 1,
                 "last_result_id": rid}])
    return by_id


def _kept(store) -> set[int]:
    with store.engine.connect() as conn:
        return set(conn.execute(text("SELECT id FROM check_results")).scalars())


def _expected(by_id, *, now: datetime, mark: datetime, raw_hours: int, cap: int, failures_days: int,
              pointed: set[int] = frozenset()) -> set[int]:
    """The rule of the config's description, written out per pair: kept while younger than raw_hours, or among the
    newest ``cap`` (ties at the cut stay), or among the newest ``cap`` non-ok younger than failures_days, or pointed
    at by a state; and always while not rolled up (not older than the watermark)."""
    fail_since = now - timedelta(days=failures_days)
    pairs: dict[tuple[str, str], list[tuple[int, str, datetime]]] = {}
    for rid, (i, c, st, at) in by_id.items():
        pairs.setdefault((i, c), []).append((rid, st, at))
    keep = set()
    for rows in pairs.values():
        times = sorted((at for _, _, at in rows), reverse=True)
        cut = times[cap - 1] if len(times) >= cap else None
        young_bad = sorted((at for _, st, at in rows if st not in GOOD and at >= fail_since), reverse=True)
        fail_cut = young_bad[cap - 1] if len(young_bad) >= cap else None
        for rid, st, at in rows:
            if (cut is None or at >= cut or at >= mark or at >= now - timedelta(hours=raw_hours) or rid in pointed
                    or (st not in GOOD and at >= fail_since and (fail_cut is None or at >= fail_cut))):
                keep.add(rid)
    return keep


def _every(integ: str, check: str, step: timedelta, count: int, *, bad_every: int = 0,
           end: datetime = NOW) -> list[tuple[str, str, str, datetime]]:
    return [(integ, check, "fail" if bad_every and k % bad_every == bad_every - 1 else "ok", end - step * k)
            for k in range(count)]


def test_results_younger_than_raw_hours_survive_beyond_the_count_cap(store):
    """A check run every 5 minutes for 60 hours, the retention defaults (48 h, 200 a check): every run of the last
    48 hours is still there after the prune (576 rows, not the cap's 200); older ones go, except the newest failures
    within failures_days."""
    rows = _every("helpdesk", "imap", timedelta(minutes=5), 12 * 60, bad_every=50)
    mark = NOW.replace(minute=0) - timedelta(hours=1)
    by_id = _add(store, rows, mark=mark)
    removed = store.history.prune_history(NOW, **RetentionConfig().model_dump())
    kept = _kept(store)
    assert kept == _expected(by_id, now=NOW, mark=mark, raw_hours=48, cap=200, failures_days=30)
    young = {rid for rid, (*_, at) in by_id.items() if at > NOW - timedelta(hours=48)}
    assert young <= kept and len(young) == 12 * 48
    old = {rid: r for rid, r in by_id.items() if r[3] < NOW - timedelta(hours=48)}
    assert {rid for rid, r in old.items() if rid in kept} == {rid for rid, r in old.items() if r[2] == "fail"}
    assert removed["results"] == len(by_id) - len(kept) > 0


def test_old_results_go_except_the_newest_per_check_and_recent_failures(store):
    """Past raw_hours the rule of before holds: a check that ran every 6 hours keeps its newest ``raw_per_check``
    even though they are older than raw_hours; failures within failures_days stay; older failures go."""
    rows = (_every("sparse", "token", timedelta(hours=6), 60)  # 15 days: 4 younger than raw_hours (24)
            + _every("busy", "pop", timedelta(minutes=30), 24 * 2 * 40, bad_every=23)  # 40 days, failures throughout
            + _every("busy", "smtp", timedelta(hours=1), 5))  # fewer than the cap: all stay
    mark = NOW - timedelta(hours=1)
    by_id = _add(store, rows, mark=mark, pointed=("sparse", "token", NOW - timedelta(hours=6 * 59)))
    pointed = {rid for rid, r in by_id.items() if r[:2] == ("sparse", "token") and r[3] == NOW - timedelta(hours=354)}
    store.history.prune_history(NOW, raw_per_check=CAP, failures_days=FAILURE_DAYS, rollup_days=90, raw_hours=24)
    kept = _kept(store)
    assert kept == _expected(by_id, now=NOW, mark=mark, raw_hours=24, cap=CAP, failures_days=FAILURE_DAYS,
                             pointed=pointed)
    sparse = sorted(by_id[rid][3] for rid in kept if by_id[rid][0] == "sparse")
    assert len(sparse) == CAP + 1 and sparse[0] == NOW - timedelta(hours=354)  # the state's row, then the newest
    assert all(at >= NOW - timedelta(hours=6 * (CAP - 1)) for at in sparse[1:])
    busy = [by_id[rid] for rid in kept if by_id[rid][:2] == ("busy", "pop")]
    assert sum(at >= NOW - timedelta(hours=24) for *_, at in busy) == 24 * 2 + 1  # every run of raw_hours (both ends)
    old_fails = [at for _, _, st, at in busy if st == "fail" and at < NOW - timedelta(hours=24)]
    assert old_fails and all(at >= NOW - timedelta(days=FAILURE_DAYS) for at in old_fails)
    assert sum(by_id[rid][:2] == ("busy", "smtp") for rid in kept) == 5


def test_the_watermark_still_protects_results_not_rolled_up(store):
    """raw_hours shorter than the time since the last rollup: nothing newer than the watermark goes."""
    rows = _every("helpdesk", "ews", timedelta(minutes=10), 6 * 30)  # 30 hours
    mark = NOW - timedelta(hours=20)
    by_id = _add(store, rows, mark=mark)
    store.history.prune_history(NOW, raw_per_check=CAP, failures_days=FAILURE_DAYS, rollup_days=90, raw_hours=1)
    kept = _kept(store)
    assert {rid for rid, r in by_id.items() if r[3] >= mark} <= kept
    assert kept == {rid for rid, r in by_id.items() if r[3] >= mark}  # the newest CAP are younger than the mark
    with store.engine.begin() as conn:
        conn.execute(text("DELETE FROM meta"))
    assert store.history.prune_history(NOW + timedelta(days=5), raw_per_check=CAP, failures_days=0, rollup_days=90,
                                       raw_hours=1)["results"] == 0  # no watermark yet: nothing rolled up, nothing goes


def test_random_histories_keep_exactly_the_union(store):
    """Random pairs, statuses and gaps, several raw_hours: the prune keeps exactly the union of the rules."""
    rng = random.Random(19)
    rows = []
    for p in range(12):
        for k in range(rng.randint(0, 60)):
            rows.append((f"i{p % 4}", ("token", "imap", "smtp")[p % 3],
                         rng.choice(["ok"] * 5 + ["warn", "fail", "error", "blocked"]),
                         NOW - timedelta(minutes=rng.choice([0, 5, 50, 300, 3000, 30000, 60000]) + 7 * k)))
    rows = list(dict.fromkeys(rows))
    mark = NOW - timedelta(hours=3)
    by_id = _add(store, rows, mark=mark)
    for raw_hours in (200, 40, 6, 1):  # each on what the one before kept
        expected = _expected(by_id, now=NOW, mark=mark, raw_hours=raw_hours, cap=4, failures_days=20)
        store.history.prune_history(NOW, raw_per_check=4, failures_days=20, rollup_days=90, raw_hours=raw_hours)
        assert _kept(store) == expected
        by_id = {i: r for i, r in by_id.items() if i in expected}
    assert len(by_id) < len(rows)


def test_recent_beats_are_the_newest_runs_of_each_check_since(store):
    rows = (_every("helpdesk", "token", timedelta(minutes=5), 40, bad_every=7)
            + _every("helpdesk", "imap", timedelta(minutes=5), 3, end=NOW - timedelta(minutes=1))
            + _every("helpdesk", "smtp", timedelta(minutes=5), 5, end=NOW - timedelta(hours=5))  # before since
            + _every("other", "token", timedelta(minutes=5), 40))
    _add(store, rows, mark=None)
    beats = store.history.recent_beats("helpdesk", NOW - timedelta(hours=2), 20)
    assert set(beats) == {"token", "imap"}
    token = beats["token"]
    assert [b.checked_at for b in token] == [NOW - timedelta(minutes=5) * k for k in range(19, -1, -1)]
    assert all(isinstance(b, Beat) and b.checked_at.tzinfo is not None for b in token)
    assert [(b.status, b.code) for b in token if b.status != "ok"] == [("fail", "auth_failed")] * 2
    assert token[-1].latency_ms == 100.0 and token[-1].summary == "ok"
    assert [b.checked_at for b in beats["imap"]] == [NOW - timedelta(minutes=11), NOW - timedelta(minutes=6),
                                                    NOW - timedelta(minutes=1)]
    assert store.history.recent_beats("helpdesk", NOW - timedelta(minutes=12), 500)["token"][0].checked_at == \
        NOW - timedelta(minutes=10)
    assert store.history.recent_beats("nobody", NOW - timedelta(days=9), 10) == {}


BASE = """\
tenants:
  contoso: {tenant_id: 11111111-2222-3333-4444-555555555555, monitor_app: mon}
apps:
  mon: {tenant: contoso, client_id: 12121212-3434-5656-7878-909090909090, secret: env:MON_SECRET}
integrations:
  - {name: hd, app: mon, flow: app, mailbox: support@contoso.com}
"""


@pytest.mark.parametrize(("value", "ok"), [(1, True), (48, True), (2160, True), (0, False), (2161, False),
                                           ("two days", False)])
def test_raw_hours_bounds(tmp_path, value, ok):
    path = tmp_path / "mailwarden.yaml"
    path.write_text(BASE + textwrap.dedent(f"""\
        web:
          auth: none
          retention: {{raw_hours: {value!r}}}
        """))
    if ok:
        assert config_mod.load(path).web.retention.raw_hours == value
        return
    with pytest.raises(ConfigError) as info:
        config_mod.load(path)
    assert any(p.startswith("web.retention.raw_hours") for p in info.value.problems), info.value.problems


def test_raw_hours_default_and_description():
    assert RetentionConfig().raw_hours == 48
    described = RetentionConfig.model_fields["raw_hours"].description
    assert "younger than raw_hours" in described and "raw_per_check" in described and "failures_days" in described


def test_the_prune_reads_the_failures_from_their_index(tmp_path):
    """With raw_hours the table holds every run of the last two days: the prune must not scan it for the failures
    it keeps. SQLite uses the partial index only when the statement spells its WHERE with constants (bound values:
    a table scan), so the plan is checked as the store sends the statement."""
    from sqlalchemy import event

    from mailwarden.monitor.db import open_store

    store = open_store(f"sqlite:///{tmp_path / 'mailwarden.db'}")
    plan: list[str] = []

    def explain(conn, cursor, statement, parameters, context, many):
        return "EXPLAIN QUERY PLAN " + statement, parameters

    def read(conn, cursor, statement, parameters, context, many):
        plan.extend(row[3] for row in cursor.fetchall())

    try:
        with store.engine.connect() as conn:
            event.listen(conn, "before_cursor_execute", explain, retval=True)
            event.listen(conn, "after_cursor_execute", read)
            conn.execute(store.history._prune_results(NOW - timedelta(hours=48), NOW - timedelta(days=30), 200))
            conn.rollback()
    finally:
        store.close()
    assert any("USING INDEX ix_check_results_failures" in line for line in plan), plan
    assert "SCAN check_results" not in plan, plan  # the table itself, row by row
