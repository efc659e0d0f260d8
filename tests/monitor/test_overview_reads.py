"""The store's reads for the overview, the integration page and the report (Core rows, the driver's own values
converted in Python) give what the ORM reads give, on SQLite and on PostgreSQL. The availability reads' own
contract (final hours from memory, every read summing the same rows) is in test_availability.py."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime, timedelta

from sqlmodel import Session, select

from mailwarden.checks.base import Outcome, Status
from mailwarden.monitor.models import IntegrationRollup
from mailwarden.state import Thresholds

T0 = datetime(2030, 3, 1, 8, 0, tzinfo=UTC)


def _fill(st) -> datetime:
    st.inventory.sync_integrations([
        {"name": "a", "tenant": "t", "app": "x", "flow": "app", "mailbox": "a@x", "tags": ["dms"],
         "checks": ["token", "ews"]},
        {"name": "b", "tenant": "t", "app": "x", "flow": "delegated", "mailbox": "b@x", "checks": ["token"]},
        {"name": "gone", "tenant": "t", "app": "x", "flow": "app", "mailbox": "g@x", "checks": ["token"]}], T0)
    st.inventory.sync_integrations([
        {"name": "a", "tenant": "t", "app": "x", "flow": "app", "mailbox": "a@x", "tags": ["dms"],
         "checks": ["token", "ews"]},
        {"name": "b", "tenant": "t", "app": "x", "flow": "delegated", "mailbox": "b@x", "checks": ["token"]}], T0)
    for minute in range(0, 30 * 60, 20):  # 30 hours, every 20 minutes
        for integ, check in (("a", "token"), ("a", "ews"), ("b", "token"), ("gone", "token")):
            bad = check == "ews" and minute % 120 == 0
            st.checks.record_result(integration=integ, check=check, checked_at=T0 + timedelta(minutes=minute),
                                    outcome=Outcome(Status.FAIL if bad else Status.OK, "auth_failed" if bad else None,
                                                    "x", latency_ms=10.0 + minute % 7),
                                    thresholds=Thresholds(1, 1))
    now = T0 + timedelta(hours=30)
    st.history.rollup_history(now)
    return now


def test_core_reads_match_the_orm_reads(store):  # noqa: F811 - the fixture
    now = _fill(store)
    orm = {(s.integration, s.check): (s.last_status, s.last_code, s.since, s.last_checked_at, s.last_ok_at)
           for s in store.checks.states()}
    core = {(s.integration, s.check): (s.last_status, s.last_code, s.since, s.last_checked_at, s.last_ok_at)
            for s in store.history.state_rows()}
    assert core == orm and all(t is None or t.tzinfo == UTC for v in core.values() for t in v[2:])
    assert [tuple(s) for s in store.history.state_rows("b")] == [("b", "token", *orm[("b", "token")])]

    assert [(r.integration, r.check, r.id) for r in store.history.latest_results_of(["a", "b"])] == [
        (r.integration, r.check, r.id) for r in store.checks.latest_results() if r.integration in ("a", "b")]

    rows = store.history.integration_rows()
    assert [(r.name, list(r.tags), list(r.checks)) for r in rows] == [("a", ["dms"], ["token", "ews"]),
                                                                       ("b", [], ["token"])]  # not "gone"

    rollups = store.history.rollups()
    since = now - timedelta(hours=24)
    # the hourly availability the overview reads ("gone" left the config before its results: no availability)
    with Session(store.engine) as s:
        orm_hours = {(r.integration, r.hour): (r.up_ms, r.down_ms) for r in s.exec(select(IntegrationRollup))
                     if r.hour >= since}
    got = {(i, h): (u, d) for i, h, u, d in store.history.availability_by_hour(since)}
    assert got == orm_hours and {i for i, _ in got} == {"a", "b"} and all(h.tzinfo == UTC for _, h in got)
    assert {k for k in store.history.availability_by_hour(since, integration="a")} == {
        ("a", h, *v) for (i, h), v in orm_hours.items() if i == "a"}
    # the API's deprecated uptime_24h: results pooled over the checks
    totals: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for r in rollups:
        if r.hour >= since:
            totals[r.integration][0] += r.ok + r.warn
            totals[r.integration][1] += r.total
    assert {i: [u, t] for i, u, t in store.history.uptime_totals(since)} == dict(totals)
    assert store.history.uptime_totals(since, "a") == [("a", *totals["a"])]

    for start, per, count in ((since, 1, 24), (since, 6, 4), (T0, 24, 2), (T0 + timedelta(hours=5), 7, 3)):
        cells: dict[tuple[str, int], list[int]] = defaultdict(lambda: [0, 0])
        for r in rollups:
            if r.integration == "a" and start <= r.hour < start + timedelta(hours=per * count):
                cell = cells[(r.check, int((r.hour - start).total_seconds()) // 3600 // per)]
                cell[0] += r.ok + r.warn
                cell[1] += r.total
        got_cells = {(check, i): [up, total]
                     for check, i, up, total in store.history.uptime_cells(["a", "b"], start, per, count)["a"]}
        assert got_cells == dict(cells), (start, per)
        assert any(up < total for up, total in cells.values())
    expected = sorted((r.check, r.hour, r.latency_sum_ms / r.latency_count) for r in rollups
                      if r.integration == "a" and r.hour >= since and r.latency_count)
    got = sorted(store.history.latency_rows(["a"], since)["a"])
    assert [g[:2] for g in got] == [e[:2] for e in expected]
    assert all(abs(g[2] - e[2]) < 1e-9 for g, e in zip(got, expected, strict=True))
