"""An integration's availability (monitor.db_history): the share of the time in which all its checks' states,
after the failure/success thresholds, were good, weighted by time; paused, maintenance and not-yet-known time left
out. The pure parts against tables; the rollup and its reads on SQLite and PostgreSQL (the storage contract's
``store`` fixture)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text

from mailwarden.checks.base import Outcome, Status
from mailwarden.monitor import db_history
from mailwarden.monitor.config import MaintenanceWindow
from mailwarden.monitor.db_history import (
    AVAILABILITY_MARK,
    availability_ms,
    integration_state,
    maintenance_spans,
    percent,
)
from mailwarden.monitor.models import IntegrationRollup
from mailwarden.state import Thresholds

T0 = datetime(2030, 3, 4, 8, 0, tzinfo=UTC)  # a Monday
MIN = timedelta(minutes=1)
HOUR_MS = 3_600_000


# -- pure ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("statuses, maintenance, expected", [
    (["ok", "ok"], False, "up"),
    (["ok", "warn"], False, "up"),  # warn: works, needs attention: good
    (["ok", "fail"], False, "down"),
    (["ok", "error"], False, "down"),
    (["fail", "blocked"], False, "down"),
    (["ok", "blocked"], False, "down"),
    (["ok", "new"], False, None),  # a check without a state yet: unknown, left out
    (["fail", "new"], False, "down"),  # ... unless another is known bad: then not all are good
    (["paused", "paused"], False, None),
    (["ok", "ok"], True, None),  # a maintenance window: left out
    (["fail"], True, None),
    ([], False, None),
])
def test_integration_state_table(statuses, maintenance, expected):
    assert integration_state(statuses, maintenance) == expected


@pytest.mark.parametrize("up, down, expected", [
    (0, 0, None), (5, 0, 100.0), (0, 5, 0.0), (2, 1, 66.7), (3, 1, 75.0),
    (9996, 4, 99.96),  # rounds to 100.0 at one decimal: never shown as 100 while some time was down
    (4, 9996, 0.04),  # ... nor as 0 while some was up
    (10**9, 1, 99.9999), (1, 10**9, 0.0001),
])
def test_percent_never_says_100_or_0_of_a_partial_figure(up, down, expected):
    assert percent(up, down) == expected


def test_a_check_that_never_worked_makes_it_0_and_the_others_change_nothing():
    # agiloft-contracts: token ok, ews failing from its first result, secret_expiry warning
    changes = [(T0 + MIN, "token", "ok"), (T0 + 2 * MIN, "ews", "fail"), (T0 + 2 * MIN, "secret_expiry", "warn")]
    hours = availability_ms(["token", "ews", "secret_expiry"], {}, changes, T0, T0 + timedelta(hours=2))
    assert hours == {T0: [0, HOUR_MS - 2 * 60_000], T0 + timedelta(hours=1): [0, HOUR_MS]}


def test_time_weighted_across_hours_with_maintenance_and_pause_left_out():
    at = {"token": "ok", "pop": "ok"}
    changes = [(T0 + 30 * MIN, "pop", "fail"), (T0 + 90 * MIN, "pop", "ok"),
               (T0 + 150 * MIN, "token", "paused"), (T0 + 150 * MIN, "pop", "paused")]
    held = [(T0 + 100 * MIN, T0 + 110 * MIN)]
    hours = availability_ms(["token", "pop"], at, changes, T0, T0 + timedelta(hours=3), held)
    assert hours == {T0: [30 * 60_000, 30 * 60_000], T0 + timedelta(hours=1): [20 * 60_000, 30 * 60_000],
                     T0 + timedelta(hours=2): [30 * 60_000, 0]}


def test_a_check_not_in_the_integration_and_late_timestamps_change_nothing():
    changes = [(T0 + 20 * MIN, "imap", "fail"),  # removed from the config: not one of its checks
               (T0 + 10 * MIN, "token", "fail"), (T0 + 5 * MIN, "token", "ok")]  # folded in this order
    hours = availability_ms(["token"], {"token": "ok"}, changes, T0, T0 + timedelta(hours=1))
    assert hours == {T0: [HOUR_MS, 0]}  # fail at 10, ok again "at 5", that is at 10: down for no time


def test_maintenance_spans_of_recurring_and_one_off_windows():
    windows = [MaintenanceWindow(name="patch", cron="0 22 * * tue", duration=3 * 3600, timezone="Europe/Berlin",
                                 tags=["helpdesk"]),
               MaintenanceWindow(name="move", start=T0 + timedelta(hours=1), end=T0 + timedelta(hours=2),
                                 integrations=["b"])]
    of = maintenance_spans(windows, T0, T0 + timedelta(days=7))
    # Tuesday 22:00 in Berlin (UTC+1 in March) is 21:00 UTC, for three hours
    tuesday = datetime(2030, 3, 5, 21, 0, tzinfo=UTC)
    assert of("a", ["helpdesk"]) == [(tuesday, tuesday + timedelta(hours=3))]
    assert of("b", []) == [(T0 + timedelta(hours=1), T0 + timedelta(hours=2))]
    assert of("c", ["dms"]) == []
    # a window that started before the range is cut at its start
    late = maintenance_spans(windows, tuesday + timedelta(hours=1), tuesday + timedelta(hours=8))
    assert late("a", ["helpdesk"]) == [(tuesday + timedelta(hours=1), tuesday + timedelta(hours=3))]


# -- the rollup and its reads, on both backends ----------------------------------------------------------------------
def _integration(st, name: str, checks: list[str], tags: list[str] | None = None) -> None:
    rows = [{"name": i.name, "tenant": i.tenant, "app": i.app, "flow": i.flow, "mailbox": i.mailbox,
             "tags": i.tags, "checks": i.checks} for i in st.inventory.integrations()]
    rows.append({"name": name, "tenant": "t", "app": "x", "flow": "app", "mailbox": f"{name}@x", "checks": checks,
                 "tags": tags or []})
    st.inventory.sync_integrations(rows, T0)


def _result(st, integ: str, check: str, status: str, minute: int, th: Thresholds = Thresholds(2, 1)):
    st.checks.record_result(integration=integ, check=check, checked_at=T0 + minute * MIN, thresholds=th,
                        outcome=Outcome(Status(status), None if status == "ok" else f"{status}_code", status))


def _availability(st, since: datetime, name: str) -> float | None:
    return percent(*st.history.availability_sums([since])[name][0])


def test_the_never_working_check_is_0_percent_where_results_said_66_7(store):  # noqa: F811 - the fixture
    _integration(store, "agiloft-contracts", ["token", "ews", "secret_expiry"])
    for minute in range(0, 180, 5):
        _result(store, "agiloft-contracts", "token", "ok", minute)
        _result(store, "agiloft-contracts", "ews", "fail", minute)
        _result(store, "agiloft-contracts", "secret_expiry", "warn", minute)
    store.history.rollup_history(T0 + timedelta(hours=3))
    assert _availability(store, T0, "agiloft-contracts") == 0.0
    (_, good, total), = store.history.uptime_totals(T0)  # the deprecated figure: results pooled over the checks
    assert round(100 * good / total, 1) == 66.7


def test_states_after_the_thresholds_weighted_by_time(store):  # noqa: F811 - the fixture
    _integration(store, "a", ["token"])
    # one failure alone (threshold 2) is no state change; two are, from the second until the next ok
    for minute, status in ((0, "ok"), (10, "fail"), (20, "ok"), (30, "fail"), (40, "fail"), (50, "ok")):
        _result(store, "a", "token", status, minute)
    store.history.rollup_history(T0 + timedelta(minutes=60))
    assert store.history.availability_sums([T0])["a"] == [(50 * 60_000, 10 * 60_000)]
    assert _availability(store, T0, "a") == 83.3


def test_pause_maintenance_and_the_time_before_a_first_state_are_left_out(store):  # noqa: F811 - the fixture
    _integration(store, "b", ["token", "pop"], tags=["helpdesk"])
    th = Thresholds(1, 1)
    _result(store, "b", "token", "ok", 0, th)  # pop has no state until minute 10: unknown
    _result(store, "b", "pop", "ok", 10, th)
    _result(store, "b", "token", "warn", 20, th)  # good
    _result(store, "b", "token", "fail", 30, th)
    _result(store, "b", "pop", "blocked", 30, th)  # bad
    _result(store, "b", "token", "ok", 40, th)
    _result(store, "b", "pop", "ok", 40, th)
    for check in ("token", "pop"):
        store.checks.pause("b", check, T0 + 50 * MIN)
    window = MaintenanceWindow(name="m", start=T0 + 40 * MIN, end=T0 + 45 * MIN, tags=["helpdesk"])
    store.history.rollup_history(T0 + 60 * MIN, maintenance=[window])
    assert store.history.availability_sums([T0])["b"] == [(25 * 60_000, 10 * 60_000)]
    assert _availability(store, T0, "b") == 71.4


def test_rollup_is_idempotent_catches_up_in_bounded_runs_and_is_pruned(store, monkeypatch):  # noqa: F811
    _integration(store, "a", ["token"])
    _integration(store, "c", ["token", "imap"])
    for minute in range(0, 26 * 60, 20):  # 26 hours; c's imap fails in its 3rd hour
        _result(store, "a", "token", "ok", minute)
        _result(store, "c", "token", "ok", minute)
        _result(store, "c", "imap", "fail" if 120 <= minute < 180 else "ok", minute)
    now = T0 + timedelta(hours=26)
    store.history.rollup_history(now)
    first = _read(store)
    assert len(first) == 2 * 26 and store.history.rollup_availability(now) == 0  # nothing changed: nothing written
    assert first[("c", T0 + timedelta(hours=2))] == (20 * 60_000, 40 * 60_000)  # down from its 2nd failure
    # after an upgrade (the table empty, no watermark): from the stored transitions, a few hours per run
    with store.engine.begin() as conn:
        conn.execute(text("DELETE FROM integration_rollups"))
        conn.execute(text("DELETE FROM meta WHERE key = :k"), {"k": AVAILABILITY_MARK})
    monkeypatch.setattr(db_history, "_ROWS_PER_RUN", 10)  # 5 hours of 2 integrations per run
    runs = 0
    while _read(store) != first:
        store.history.rollup_availability(now)
        runs += 1
        assert runs <= 6
    assert runs == 6
    removed = store.history.prune_history(now + timedelta(days=89), raw_per_check=200, failures_days=30, rollup_days=90)
    assert removed["availability"] == 2 * 2 and len(_read(store)) == 2 * 24


def _read(st) -> dict[tuple[str, datetime], tuple[int, int]]:
    from sqlmodel import Session, select

    with Session(st.engine) as s:
        return {(r.integration, r.hour): (r.up_ms, r.down_ms) for r in s.exec(select(IntegrationRollup))}


def test_every_read_sums_the_same_read(store):  # noqa: F811 - the fixture
    _integration(store, "a", ["token"])
    _integration(store, "c", ["token", "imap"])
    for minute in range(0, 30 * 60, 20):
        _result(store, "a", "token", "fail" if minute % 240 < 60 else "ok", minute)
        _result(store, "c", "token", "ok", minute)
        _result(store, "c", "imap", "fail" if 600 <= minute < 700 else "ok", minute)
    now = T0 + timedelta(hours=30, minutes=17)
    store.history.rollup_history(now)
    rows = _read(store)
    since = T0 + timedelta(hours=7)
    by_hour = store.history.availability_by_hour(since)
    assert sorted(by_hour) == sorted((i, h, up, down) for (i, h), (up, down) in rows.items() if h >= since)
    assert all(h.tzinfo == UTC for _, h, _, _ in by_hour)
    starts = [since, T0 + timedelta(hours=23), T0]
    sums = store.history.availability_sums(starts)
    for name in ("a", "c"):
        for start, got in zip(starts, sums[name], strict=True):
            mine = [v for (i, h), v in rows.items() if i == name and h >= start]
            assert got == (sum(u for u, _ in mine), sum(d for _, d in mine))
        cells = store.history.availability_cells([name], T0, 6, 6)[name]
        assert sum(u for _, u, _ in cells) == sums[name][2][0] and sum(d for _, _, d in cells) == sums[name][2][1]
    assert 0 < percent(*sums["a"][2]) < 100 and 0 < percent(*sums["c"][2]) < 100
    # the overview's hours before the watermark come from memory, the current ones are read each time
    assert sorted(store.history.availability_by_hour(since)) == sorted(by_hour)
    _result(store, "a", "token", "fail", 30 * 60 + 20)
    _result(store, "a", "token", "fail", 30 * 60 + 21)
    store.history.rollup_history(now + 10 * MIN)
    later = {(i, h): (u, d) for i, h, u, d in store.history.availability_by_hour(since)}
    assert later[("a", T0 + timedelta(hours=30))][1] > rows[("a", T0 + timedelta(hours=30))][1]
    assert later == {(i, h): v for (i, h), v in _read(store).items() if h >= since}
    rows = _read(store)
    for name, got in store.history.availability_sums(starts).items():  # final hours' sums from memory, the rest read
        assert got == [(sum(u for (i, h), (u, _) in rows.items() if i == name and h >= start),
                        sum(d for (i, h), (_, d) in rows.items() if i == name and h >= start)) for start in starts]
    again = type(store)(store.engine)  # another process reads the same
    assert {(i, h): (u, d) for i, h, u, d in again.history.availability_by_hour(since)} == later


def test_after_an_upgrade_a_state_older_than_the_backfill_counts_from_its_start(store):  # noqa: F811 - the fixture
    _integration(store, "old", ["token"])
    _integration(store, "new", ["token"])
    _result(store, "old", "token", "ok", 0)  # its only transition: 40 days before now
    now = T0 + timedelta(days=40)
    _result(store, "new", "token", "ok", 40 * 24 * 60 - 120)  # two hours before now
    store.history.rollup_history(now)
    rows = _read(store)
    first = now - timedelta(days=31)
    assert min(h for i, h in rows if i == "old") == first and rows[("old", first)] == (HOUR_MS, 0)
    assert sum(u for (i, _), (u, _) in rows.items() if i == "old") == 31 * 24 * HOUR_MS
    assert sum(u for (i, _), (u, _) in rows.items() if i == "new") == 2 * HOUR_MS
