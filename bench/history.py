"""Render (issue 8, figure 4) and storage (figure 5) on synthetic history, written straight through the store's
tables with bulk inserts (no checks run): N integrations x 5 checks, one result per check every 5 minutes.

- render: raw rows as the retention keeps them (every run of the last ``raw_hours``, at least the newest
  ``raw_per_check`` per check, plus older failures of the last ``failures_days``), hourly rollups for
  ``rollup_days``, 2 % of the integrations failing and 1 % warning (``degrade``: the report gives those full pages);
  then GET / and one integration page through Starlette's TestClient (``auth: none``) and ``render_report`` (time
  and size).
- alerts (issue 15, item 4): on the render store, the alert evaluation a dispatch cycle starts every 15 s: idle (nothing
  new, ``ALERT_CHANGES`` incidents open) and busy (``ALERT_CHANGES`` checks fail at once, then recover; the second of
  two rounds), each with the time the SQLite write lock was held (BEGIN IMMEDIATE to COMMIT, on the engine's events).
- raw_hours (issue 19, item 4; ``python -m bench.history``, ``RAW_DOC`` below): 10,000 integrations' results kept by
  age, prune, rollup, beats read and the rollups' size, on SQLite and PostgreSQL.
- storage: results written tick by tick (5 minutes) with a fake clock, ``rollup_history`` and ``prune_history``
  called as the scheduler calls them (rollup every tick, prune every hour); the SQLite file (after a WAL
  checkpoint, no VACUUM: the product does none) is measured after day 1 and after a steady-state day.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml
from sqlalchemy import text

from mailwarden.monitor import config as config_mod
from mailwarden.monitor.db import open_store
from mailwarden.monitor.db_history import AVAILABILITY_MARK, WATERMARK
from mailwarden.monitor.models import CheckResult, CheckRollup, CheckState, IntegrationRollup, Meta
from mailwarden.monitor.runtime import integration_rows

CHECKS = {"delegated": ["token", "pop", "imap", "smtp", "secret_expiry"],
          "app": ["token", "graph_mail", "ews", "smtp", "secret_expiry"]}
TICK = timedelta(minutes=5)
FAIL_RATE = 0.01  # one result in a hundred is not ok


def write_config(n: int, workdir: Path) -> config_mod.Config:
    tenants, apps, integrations = {}, {}, []
    for t in range(max(1, -(-n // 10))):
        tid = f"t{t:04d}"
        tenants[tid] = {"tenant_id": f"00000000-0000-4000-8000-{t:012d}", "monitor_app": f"{tid}-monitor"}
        for k, key in enumerate(("monitor", "deleg", "app")):
            apps[f"{tid}-{key}"] = {"tenant": tid, "client_id": f"00000000-0000-4000-9{k:03d}-{t:012d}",
                                    "secret": "env:BENCH_UNUSED_SECRET"}
    for i in range(n):
        tid = f"t{i // 10:04d}"
        flow = "delegated" if i % 2 == 0 else "app"
        item = {"name": f"{tid}-i{i % 10}", "app": f"{tid}-{'deleg' if flow == 'delegated' else 'app'}",
                "flow": flow, "mailbox": f"box{i % 10}@{tid}.example.com",
                "checks": {k: {} for k in CHECKS[flow]}}
        if flow == "delegated":
            item["account"] = f"delegate@{tid}.example.com"
        integrations.append(item)
    doc = {"database": "sqlite:///history.db", "defaults": {"interval": "5m"}, "web": {"auth": "none"},
           "tenants": tenants, "apps": apps, "integrations": integrations}
    path = workdir / "history.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return config_mod.load(path)


def pairs(cfg: config_mod.Config) -> list[tuple[str, str]]:
    return [(i.name, k) for i in cfg.integrations for k in i.checks]


def _result(rng: random.Random, integ: str, check: str, at: datetime) -> dict[str, Any]:
    bad = rng.random() < FAIL_RATE
    return {"integration": integ, "check": check, "status": "fail" if bad else "ok",
            "code": "auth_failed" if bad else None,
            "summary": "authentication failed for the mailbox" if bad else f"{check} ok",
            "latency_ms": 50.0 + rng.random() * 400, "details": {"round_trips": 5},
            "transcript": ("S: +OK ready\nC: AUTH XOAUTH2\nS: -ERR Authentication failure\n" * 4) if bad else None,
            "raw": None, "checked_at": at}


def _states(conn: Any, cfg: config_mod.Config, now: datetime) -> None:
    last = {}
    for rid, integ, check in conn.execute(text(
            "SELECT max(id), integration, \"check\" FROM check_results GROUP BY integration, \"check\"")):
        last[(integ, check)] = rid
    conn.execute(CheckState.__table__.insert(), [
        {"integration": i, "check": c, "status": "ok", "failures": 0, "successes": 10,
         "since": now - timedelta(days=90), "last_status": "ok", "last_code": None,
         "last_result_id": last.get((i, c)), "last_checked_at": now, "last_ok_at": now} for i, c in pairs(cfg)])


def degrade(conn: Any, cfg: config_mod.Config, now: datetime) -> dict[str, int]:
    """A fleet is never all green: every 50th integration's mailbox check fails (its last 3 hours of results
    and its state: ``auth_failed``), every 100th's secret_expiry warns (``secret_expiring``); the report details
    these (full pages), so its time includes them. Idempotent (the same rows, the same values)."""
    r, st = CheckResult.__table__, CheckState.__table__
    since = now - timedelta(hours=3)
    counts = {"failing": 0, "warning": 0}
    for i, integ in enumerate(cfg.integrations):
        if i % 50 == 7:
            mailbox_check = next(k for k in integ.checks if k not in ("token", "secret_expiry"))
            check, status, code, kind = mailbox_check, "fail", "auth_failed", "failing"
        elif i % 100 == 3:
            check, status, code, kind = "secret_expiry", "warn", "secret_expiring", "warning"
        else:
            continue
        pair = (r.c.integration == integ.name) & (r.c.check == check)
        conn.execute(r.update().where(pair, r.c.checked_at >= since).values(
            status=status, code=code, summary=f"{code} (synthetic)",
            transcript="S: +OK ready\nC: AUTH XOAUTH2\nS: -ERR Authentication failure\n" if status == "fail" else None))
        conn.execute(st.update().where(st.c.integration == integ.name, st.c.check == check).values(
            status=status, last_status=status, last_code=code, since=since, last_ok_at=since, failures=36,
            successes=0))
        counts[kind] += 1
    return counts


def build_render_store(cfg: config_mod.Config, now: datetime, *, raw_per_check: int, failures_days: int,
                       rollup_days: int, raw_hours: int = 0) -> tuple[Any, dict[str, Any]]:
    store = open_store(cfg.database_url())
    store.inventory.sync_integrations(integration_rows(cfg), now)
    rng = random.Random(8)
    t0 = time.perf_counter()
    top = now.replace(minute=0, second=0, microsecond=0)
    raw = rollups = 0
    kept = max(raw_per_check, int(timedelta(hours=raw_hours) / TICK))  # the runs of raw_hours, or the cap's
    with store.engine.begin() as conn:
        for integ, check in pairs(cfg):
            rows = [_result(rng, integ, check, now - TICK * k) for k in range(kept, 0, -1)]
            # older failures kept by failures_days (one a day, beyond the cap)
            start = now - TICK * kept
            rows = [_result(random.Random(0), integ, check, start - timedelta(days=d)) | {"status": "fail",
                    "code": "auth_failed"} for d in range(failures_days, 0, -3)] + rows
            conn.execute(CheckResult.__table__.insert(), rows)
            raw += len(rows)
        _states(conn, cfg, now)
        degraded = degrade(conn, cfg, now)
        # the last day through the table's bulk insert, then copied day by day further back in SQL (SQLite)
        day = [top - timedelta(hours=h) for h in range(24, 0, -1)]
        batch = [{"integration": integ, "check": check, "hour": h, "total": 12, "ok": 12 - bad, "warn": 0,
                  "fail": bad, "error": 0, "blocked": 0, "latency_sum_ms": 2400.0, "latency_count": 12,
                  "latency_max_ms": 400.0}
                 for integ, check in pairs(cfg) for h in day for bad in [1 if rng.random() < 0.1 else 0]]
        conn.execute(CheckRollup.__table__.insert(), batch)
        rollups = len(batch)
        cols = "integration, \"check\", total, ok, warn, fail, error, blocked, latency_sum_ms, latency_count, " \
               "latency_max_ms"
        newest = (top - timedelta(hours=24)).replace(tzinfo=None).isoformat(" ", "microseconds")
        for d in range(1, rollup_days):
            rollups += conn.exec_driver_sql(
                f"INSERT INTO check_rollups (hour, {cols}) SELECT strftime('%Y-%m-%d %H:%M:%f000', hour, "
                f"'-{d} days'), {cols} FROM check_rollups WHERE hour >= ?", (newest,)).rowcount
        conn.execute(Meta.__table__.insert(), [{"key": WATERMARK, "value": (top - timedelta(hours=1)).isoformat()}])
        # availability per integration and hour (what the overview and the API read): 95 % of hours all up
        hours = [top - timedelta(hours=h) for h in range(24 * rollup_days, 0, -1)]
        avail = [{"integration": integ.name, "hour": h, "up_ms": up, "down_ms": 3_600_000 - up}
                 for integ in cfg.integrations for h in hours
                 for up in [3_600_000 if rng.random() > 0.05 else rng.randrange(0, 3_600_000)]]
        conn.execute(IntegrationRollup.__table__.insert(), avail)
        conn.execute(Meta.__table__.insert(), [{"key": AVAILABILITY_MARK,
                                                "value": (top - timedelta(hours=1)).isoformat()}])
    return store, {"raw_rows": raw, "rollup_rows": rollups, "availability_rows": len(avail),
                   "build_s": round(time.perf_counter() - t0, 1), **degraded}


def _best(fn: Any, repeat: int, first: list[float] | None = None) -> tuple[float, Any]:
    """The best of ``repeat`` calls; ``first`` gets the first call's time (a cold start: templates compiled,
    caches filled)."""
    best, out = float("inf"), None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        took = time.perf_counter() - t
        if first is not None and not first:
            first.append(took)
        best = min(best, took)
    return best, out


def render(n: int, workdir: Path, say: Any, *, reuse: bool = False) -> dict[str, Any]:
    from starlette.testclient import TestClient

    from mailwarden.monitor.web.app import create_app
    from mailwarden.monitor.web.auth import Access
    from mailwarden.monitor.web.report import render_report

    workdir.mkdir(parents=True, exist_ok=True)
    done = workdir / f"history-{n}.built"  # a store built for n integrations, kept by --workdir: reused
    if not (reuse and done.exists()):
        done.unlink(missing_ok=True)
        for stale in ("history.db", "history.db-wal", "history.db-shm"):
            (workdir / stale).unlink(missing_ok=True)
    cfg = write_config(n, workdir)
    ret = cfg.web.retention
    if done.exists():
        store, built = open_store(cfg.database_url()), json.loads(done.read_text())
        now = datetime.fromisoformat(built["now"])
        if "failing" not in built:  # built before degrade() existed
            with store.engine.begin() as conn:
                built.update(degrade(conn, cfg, now))
            done.write_text(json.dumps(built))
        say(f"render store reused: {built}")
    else:
        now = datetime.now(UTC)
        store, built = build_render_store(cfg, now, **ret.model_dump())
        built["now"] = now.isoformat()
        done.write_text(json.dumps(built))
        say(f"render store: {built}")
    try:
        t = time.perf_counter()
        store.history.rollup_history(now)  # the report rolls the last hour up first; time it apart
        rollup_s = time.perf_counter() - t
        app = create_app(cfg, store, access=Access(mode="none"))
        name = cfg.integrations[0].name
        with TestClient(app, base_url="http://127.0.0.1:8080") as client:
            cold: list[float] = []
            overview_s, page = _best(lambda: client.get("/"), 3, cold)
            assert page.status_code == 200, page.status_code
            integ_s, ipage = _best(lambda: client.get(f"/integrations/{name}"), 3)
            assert ipage.status_code == 200, ipage.status_code
        say(f"overview {overview_s * 1000:.0f} ms (first GET {cold[0] * 1000:.0f} ms; {len(page.content)} bytes), "
            f"integration page {integ_s * 1000:.0f} ms")
        t = time.perf_counter()
        html = render_report(cfg, store, now)
        report_s = time.perf_counter() - t
        say(f"report {report_s:.2f} s, {len(html.encode()) / 1e6:.1f} MB")
        alert_figs = alerts(workdir, store, say)  # last: it adds results, transitions and incidents
    finally:
        store.close()
    built.pop("now", None)
    return {"render_integrations": n, "render_checks": len(pairs(cfg)), **built,
            "overview_ms": round(overview_s * 1000, 1), "overview_first_ms": round(cold[0] * 1000, 1),
            "overview_bytes": len(page.content),
            "integration_page_ms": round(integ_s * 1000, 1), "report_s": round(report_s, 2),
            "report_mb": round(len(html.encode()) / 1e6, 2), "rollup_catchup_s": round(rollup_s, 3), **alert_figs}


ALERT_CHANGES = 10  # checks that fail at once, then recover (the busy evaluations)
IDLE_RUNS = 30


class WriteLockTimer:
    """How long the SQLite write lock is held: from BEGIN IMMEDIATE (``monitor.db``'s write transactions) to the
    COMMIT or ROLLBACK that ends it, summed over one ``measure``d call."""

    def __init__(self, engine: Any):
        from sqlalchemy import event

        from mailwarden.monitor.db import _IMMEDIATE

        self.held_s, self._open = 0.0, {}

        def begin(conn: Any) -> None:
            if conn.get_execution_options().get(_IMMEDIATE):
                self._open[id(conn.connection)] = time.perf_counter()

        def end(conn: Any) -> None:
            t = self._open.pop(id(conn.connection), None)
            if t is not None:
                self.held_s += time.perf_counter() - t

        for name, fn in (("begin", begin), ("commit", end), ("rollback", end)):
            event.listen(engine, name, fn)

    def measure(self, fn: Any) -> tuple[float, float, Any]:
        """(wall ms, write lock held ms, result) of one call."""
        self.held_s = 0.0
        t = time.perf_counter()
        out = fn()
        return (time.perf_counter() - t) * 1000, self.held_s * 1000, out


def alerts(workdir: Path, store: Any, say: Any) -> dict[str, Any]:
    """The dispatcher's evaluation on the render store (N integrations x 5 checks, their states and results):
    idle, and folding ``ALERT_CHANGES`` transitions (opening, then resolving, one incident each). Nothing is sent:
    the route is a loopback port nobody listens on, and only ``evaluate`` runs."""
    from statistics import median

    from mailwarden import state as sm
    from mailwarden.checks.base import Outcome, Status
    from mailwarden.monitor.alerting import make_dispatcher

    doc = yaml.safe_load((workdir / "history.yaml").read_text(encoding="utf-8"))
    doc["alerts"] = {"routes": [{"name": "bench", "url": "json://127.0.0.1:9/bench"}]}
    path = workdir / "alerts.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    acfg = config_mod.load(path)
    timer = WriteLockTimer(store.engine)
    dispatcher = make_dispatcher(acfg, store)
    first_ms, first_lock_ms, _ = timer.measure(lambda: dispatcher.evaluate(datetime.now(UTC)))
    # each round: ALERT_CHANGES integrations' token checks fail (one transition and one incident each), then recover;
    # integrations that changed within the flapping window (an earlier round, or run on a reused store) are left
    # out, so that no round is a flapping notice instead
    th = sm.Thresholds(failure_threshold=1, success_threshold=1)
    window = timedelta(seconds=acfg.alerts.flapping.window)
    recent = {t.integration for t in store.checks.transitions(limit=100_000) if t.at > datetime.now(UTC) - window}
    spare = iter([i.name for i in acfg.integrations if i.name not in recent][::7])

    def results(status: str, code: str | None) -> None:
        for name in changed:
            store.checks.record_result(integration=name, check="token", checked_at=datetime.now(UTC), thresholds=th,
                                       outcome=Outcome(Status(status), code, f"bench {status}"))

    for _ in range(2):  # the first round compiles the statements and templates; the second is measured
        changed = [next(spare) for _ in range(ALERT_CHANGES)]
        results("fail", "consent_missing")
        open_ms, open_lock_ms, queued = timer.measure(lambda: dispatcher.evaluate(datetime.now(UTC)))
        idle = [timer.measure(lambda: dispatcher.evaluate(datetime.now(UTC)))[:2] for _ in range(IDLE_RUNS)]
        results("ok", None)
        resolve_ms, resolve_lock_ms, _ = timer.measure(lambda: dispatcher.evaluate(datetime.now(UTC)))
    idle_ms, idle_lock_ms = median(w for w, _ in idle), median(h for _, h in idle)
    say(f"alert evaluation: idle {idle_ms:.2f} ms (write lock {idle_lock_ms:.2f} ms), {len(changed)} checks failing "
        f"{open_ms:.1f} ms (lock {open_lock_ms:.1f} ms, {len(queued)} deliveries), recovering {resolve_ms:.1f} ms "
        f"(lock {resolve_lock_ms:.1f} ms); first evaluation {first_ms:.1f} ms (lock {first_lock_ms:.1f} ms)")
    return {"alert_idle_eval_ms": round(idle_ms, 2), "alert_idle_eval_best_ms": round(min(w for w, _ in idle), 2),
            "alert_idle_lock_ms": round(idle_lock_ms, 2), "alert_changes": len(changed),
            "alert_open_eval_ms": round(open_ms, 1), "alert_open_lock_ms": round(open_lock_ms, 1),
            "alert_resolve_eval_ms": round(resolve_ms, 1), "alert_resolve_lock_ms": round(resolve_lock_ms, 1),
            "alert_first_eval_ms": round(first_ms, 1), "alert_first_lock_ms": round(first_lock_ms, 1)}


def _db_bytes(store: Any, path: Path) -> int:
    with store.engine.connect() as conn:
        conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    return path.stat().st_size


def storage(n: int, workdir: Path, say: Any, days: int | None = None) -> dict[str, Any]:
    """``days``: by default one more than the raw results are kept (``web.retention.raw_hours``), so that the last
    day is a steady one: the days before it still fill the window of raw results kept by age."""
    workdir.mkdir(parents=True, exist_ok=True)
    for stale in ("history.db", "history.db-wal", "history.db-shm"):
        (workdir / stale).unlink(missing_ok=True)
    cfg = write_config(n, workdir)
    ret = cfg.web.retention
    days = days or max(2, -(-int(ret.raw_hours) // 24) + 1)
    path = workdir / "history.db"
    store = open_store(cfg.database_url())
    start = datetime(2030, 1, 1, tzinfo=UTC)
    store.inventory.sync_integrations(integration_rows(cfg), start)
    rng = random.Random(5)
    all_pairs = pairs(cfg)
    sizes = [_db_bytes(store, path)]
    rollup_s: list[float] = []
    prune_s: list[float] = []
    results = CheckResult.__table__
    states = CheckState.__table__
    pruned_at = None
    try:
        with store.engine.begin() as conn:
            conn.execute(states.insert(), [{"integration": i, "check": c, "status": "new", "failures": 0,
                                            "successes": 0} for i, c in all_pairs])
        now = start
        for _ in range(days):
            for _tick in range(int(timedelta(days=1) / TICK)):
                # the tick's results, as record_result writes them (one row each, the state points at it)
                rows = [_result(rng, i, c, now) for i, c in all_pairs]
                with store.engine.begin() as conn:
                    conn.execute(results.insert(), rows)
                    conn.exec_driver_sql(
                        "UPDATE check_states SET last_result_id = (SELECT max(id) FROM check_results r WHERE "
                        "r.integration = check_states.integration AND r.\"check\" = check_states.\"check\" AND "
                        "r.checked_at >= ?)", (now.replace(tzinfo=None).isoformat(" "),))
                now += TICK
                t = time.perf_counter()
                store.history.rollup_history(now)
                rollup_s.append(time.perf_counter() - t)
                if pruned_at is None or now - pruned_at >= timedelta(hours=1):
                    t = time.perf_counter()
                    store.history.prune_history(now, **ret.model_dump())
                    prune_s.append(time.perf_counter() - t)
                    pruned_at = now
            sizes.append(_db_bytes(store, path))
            say(f"storage: day {len(sizes) - 1} done, file {sizes[-1] / 1e6:.1f} MB, rollup mean "
                f"{sum(rollup_s) / len(rollup_s) * 1000:.0f} ms, prune mean {sum(prune_s) / len(prune_s):.2f} s")
        counts = {"raw_rows": store.count(CheckResult), "rollup_rows": store.count(CheckRollup)}
    finally:
        store.close()
    growth = [b - a for a, b in zip(sizes, sizes[1:], strict=False)]
    return {"storage_integrations": n, "storage_checks": len(all_pairs),
            "storage_file_mb": [round(s / 1e6, 1) for s in sizes],
            "storage_day1_mb": round(growth[0] / 1e6, 1),
            "storage_steady_mb_per_day": round(growth[-1] / 1e6, 1) if len(growth) > 1 else None,
            "rollup_ms_mean": round(sum(rollup_s) / len(rollup_s) * 1000, 1),
            "prune_s_mean": round(sum(prune_s) / len(prune_s), 2), **{f"storage_{k}": v for k, v in counts.items()}}


# -- raw results kept by age (issue 19, item 4): `python -m bench.history` ------------------------------------------
def say(msg: str) -> None:
    print(f"[bench.history {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.history", description=RAW_DOC,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-n", "--integrations", type=int, default=10_000,
                   help="integrations, 5 checks each (default 10,000)")
    p.add_argument("--raw-hours", type=int, default=48, help="web.retention.raw_hours (default 48)")
    p.add_argument("--interval", type=int, default=5, help="minutes between two runs of a check (default 5)")
    p.add_argument("--rollup-sample", type=int, default=100,
                   help="integrations given 90 days of hourly rollups, for the 90-day read and the rollup row size "
                        "(default 100)")
    p.add_argument("--backend", choices=["sqlite", "postgres", "both"], default="both",
                   help="both (default): SQLite, then PostgreSQL when 127.0.0.1:5432 answers")
    p.add_argument("--plans", action="store_true", help="print the query plans of the prune and the beats read")
    p.add_argument("--workdir", type=Path, default=None, help="keep the config and the SQLite store here")
    p.add_argument("--json", type=Path, default=None, help="also write the figures to this file")
    return p.parse_args(argv)


RAW_DOC = """`python -m bench.history [-n 10000] [--raw-hours 48] [--interval 5]`: raw results kept by age
(``web.retention.raw_hours``) at scale. N integrations x 5 checks, one result per check every ``--interval`` minutes
for raw_hours + 1 hours (the hour past raw_hours is what one hourly prune deletes), written with one INSERT ... SELECT
per hour of results (no check run; 1 % of results fail, with a transcript), the rollup watermark at the current hour
(the steady state: every hour before it rolled up). Then: the rows and the database size (SQLite: the file after a
WAL checkpoint; PostgreSQL: the table with its indexes), one prune as the scheduler runs it every hour (the retention
defaults beside raw_hours), the rows kept, one rollup as the scheduler runs it every minute, the beats of one
integration (``recent_beats``: every run of raw_hours, and the newest 60), and for the daily-rollup question: 90 days
of hourly rollups for ``--rollup-sample`` integrations, a 90-day bar (90 cells of 24 h, ``uptime_cells``) of one of
them, and the bytes per rollup row (the fleet's 90 days extrapolated from it). SQLite, then PostgreSQL (a database of
its own, created and dropped) when 127.0.0.1:5432 answers. Figures beside the machine's speed reference."""


def _pg_admin() -> tuple[Any, str] | None:
    import getpass

    import psycopg

    for user in dict.fromkeys(["postgres", getpass.getuser()]):
        for db in ("test", "postgres"):
            try:
                return psycopg.connect(host="127.0.0.1", port=5432, user=user, dbname=db, connect_timeout=3,
                                       autocommit=True), user
            except psycopg.Error:
                continue
    return None


TRANSCRIPT = "S: +OK ready\nC: AUTH XOAUTH2\nS: -ERR Authentication failure\n" * 4  # a failure's, as _result's


def _fill_raw(store: Any, start: datetime, runs: int, per_insert: int, interval: timedelta) -> None:
    """``runs`` results of every check state's pair from ``start``, oldest first, ``per_insert`` runs (of every pair)
    an INSERT ... SELECT: time order, as the scheduler writes them. Status from a hash of (pair, run): 1 % fail."""
    sqlite = store.engine.dialect.name == "sqlite"
    fail = "((s.id * 7919 + k * 104729) % 100 = 0)"
    if sqlite:
        at = f"strftime('%Y-%m-%d %H:%M:%f000', :start, '+' || (k * {int(interval.total_seconds())}) || ' seconds')"
        ticks = ("WITH RECURSIVE tick(k) AS (SELECT :lo UNION ALL SELECT k + 1 FROM tick WHERE k + 1 < :hi) ")
        source = "tick CROSS JOIN check_states s"
    else:
        at = f"CAST(:start AS timestamptz) + k * interval '{int(interval.total_seconds())} seconds'"
        ticks = ""
        source = "generate_series(CAST(:lo AS integer), CAST(:hi AS integer) - 1) AS tick(k) CROSS JOIN check_states s"
    sql = (f"{ticks}INSERT INTO check_results (integration, \"check\", status, code, summary, latency_ms, details, "
           f"transcript, raw, checked_at) SELECT s.integration, s.\"check\", "
           f"CASE WHEN {fail} THEN 'fail' ELSE 'ok' END, CASE WHEN {fail} THEN 'auth_failed' END, "
           f"CASE WHEN {fail} THEN 'authentication failed for the mailbox' ELSE s.\"check\" || ' ok' END, "
           f"50 + (s.id * 31 + k * 17) % 400, '{{\"round_trips\": 5}}', "
           f"CASE WHEN {fail} THEN :transcript END, "
           f"NULL, {at} FROM {source} ORDER BY k, s.id")
    stamp = start.replace(tzinfo=None).isoformat(" ") if sqlite else start.isoformat()
    for lo in range(0, runs, per_insert):
        with store.engine.begin() as conn:
            if sqlite:  # a 1 GB page cache while writing (the build only: set back below, the figures use the default)
                conn.exec_driver_sql("PRAGMA cache_size = -1000000")
            conn.execute(text(sql), {"start": stamp, "lo": lo, "hi": min(runs, lo + per_insert),
                                     "transcript": TRANSCRIPT})
            if sqlite:
                conn.exec_driver_sql("PRAGMA cache_size = -2000")  # SQLite's default, as the store runs


def _size(store: Any, path: Path | None) -> dict[str, float]:
    """The database (SQLite: the file after a WAL checkpoint, pages freed by a prune included: the product never
    VACUUMs; PostgreSQL: pg_database_size) and the results table with its indexes, in MB."""
    if path is not None:
        return {"database_mb": round(_db_bytes(store, path) / 1e6, 1),
                "results_with_indexes_mb": round(_table_bytes(store, "check_results") / 1e6, 1)}
    with store.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql("VACUUM ANALYZE check_results")  # the planner's statistics, as autovacuum would have them
        whole = conn.exec_driver_sql("SELECT pg_database_size(current_database())").scalar()
    return {"database_mb": round(whole / 1e6, 1),
            "results_with_indexes_mb": round(_table_bytes(store, "check_results") / 1e6, 1)}


def _table_bytes(store: Any, table: str) -> int:
    """The bytes of a table's pages and its indexes' (SQLite: dbstat; PostgreSQL: pg_total_relation_size)."""
    with store.engine.connect() as conn:
        if store.engine.dialect.name != "sqlite":
            return int(conn.exec_driver_sql("SELECT pg_total_relation_size(%(t)s)", {"t": table}).scalar())
        names = [table] + list(conn.exec_driver_sql(
            "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = ?", (table,)).scalars())
        # page by page: dbstat's aggregate row wraps at 4 GiB (seen with SQLite 3.40: 1.5 GB for a 5.8 GB table)
        return sum(int(conn.exec_driver_sql("SELECT coalesce(sum(pgsize), 0) FROM dbstat WHERE name = ?",
                                            (name,)).scalar()) for name in names)


def _plans(store: Any, stmts: dict[str, Any]) -> dict[str, list[str]]:
    """The query plan of each statement as the store sends it (its own SQL and bound values: EXPLAIN QUERY PLAN on
    SQLite, EXPLAIN on PostgreSQL; neither runs it), through cursor hooks that prefix the statement and read the plan
    before SQLAlchemy treats the cursor as a DELETE's."""
    from sqlalchemy import event

    sqlite = store.engine.dialect.name == "sqlite"
    seen: list[Any] = []

    def explain(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool) -> Any:
        return ("EXPLAIN QUERY PLAN " if sqlite else "EXPLAIN ") + statement, parameters

    def read(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool) -> None:
        seen[:] = cursor.fetchall()

    out = {}
    with store.engine.connect() as conn:
        event.listen(conn, "before_cursor_execute", explain, retval=True)
        event.listen(conn, "after_cursor_execute", read)
        try:
            for name, stmt in stmts.items():
                conn.execute(stmt)
                out[name] = [f"{r[1]}<-{r[0]} {r[3]}" for r in seen] if sqlite else [r[0] for r in seen]
                conn.rollback()
        finally:
            event.remove(conn, "before_cursor_execute", explain)
            event.remove(conn, "after_cursor_execute", read)
    return out


def raw_hours_figures(backend: str, cfg: config_mod.Config, url: str, path: Path | None, args: argparse.Namespace,
                      ) -> dict[str, Any]:
    from mailwarden.monitor.db_history import hour_of

    interval = timedelta(minutes=args.interval)
    per_hour = max(1, int(timedelta(hours=1) / interval))
    runs = per_hour * (args.raw_hours + 1)
    ret = cfg.web.retention.model_copy(update={"raw_hours": args.raw_hours})
    all_pairs = pairs(cfg)
    now = datetime(2030, 1, 3, 0, 56, tzinfo=UTC)  # a result at :55, the scheduler's minute at :56
    start = now - interval * runs + timedelta(minutes=1)  # the runs end at now - 1 minute
    store = open_store(url)
    fig: dict[str, Any] = {"backend": backend, "pairs": len(all_pairs), "runs_per_check": runs,
                           "rows_written": len(all_pairs) * runs}
    try:
        store.inventory.sync_integrations(integration_rows(cfg), start)
        with store.engine.begin() as conn:
            conn.execute(CheckState.__table__.insert(), [
                {"integration": i, "check": c, "status": "ok", "failures": 0, "successes": 10, "since": start}
                for i, c in all_pairs])
        say(f"{backend}: writing {fig['rows_written']:,} results ({len(all_pairs):,} checks x {runs} runs, one every "
            f"{args.interval} min from {start:%Y-%m-%d %H:%M})")
        t = time.perf_counter()
        _fill_raw(store, start, runs, per_hour, interval)
        with store.engine.begin() as conn:
            conn.exec_driver_sql(
                "UPDATE check_states SET last_result_id = (SELECT max(id) FROM check_results r WHERE "
                "r.integration = check_states.integration AND r.\"check\" = check_states.\"check\")")
            conn.execute(Meta.__table__.insert(), [{"key": WATERMARK, "value": hour_of(now).isoformat()},
                                                   {"key": AVAILABILITY_MARK, "value": hour_of(now).isoformat()}])
        fig["write_s"] = round(time.perf_counter() - t, 1)
        fig.update({f"before_{k}": v for k, v in _size(store, path).items()})
        say(f"{backend}: written in {fig['write_s']} s, {fig}")
        if args.plans:
            keep_from = min(hour_of(now), now - timedelta(hours=args.raw_hours))
            name = cfg.integrations[len(cfg.integrations) // 2].name
            fig["plans"] = _plans(store, {
                "prune": store.history._prune_results(keep_from, now - timedelta(days=ret.failures_days),
                                                      ret.raw_per_check),
                "beats": store.history._beats_query(name, now - timedelta(hours=args.raw_hours), 60)})
            for k, lines in fig["plans"].items():
                say(f"{backend}: plan of {k}:\n  " + "\n  ".join(lines))
        t = time.perf_counter()
        removed = store.history.prune_history(now, **ret.model_dump())
        fig["prune_s"] = round(time.perf_counter() - t, 2)
        fig["pruned_rows"] = removed["results"]
        fig["rows_kept"] = store.count(CheckResult)
        fig["rows_kept_per_check"] = round(fig["rows_kept"] / len(all_pairs), 1)
        t = time.perf_counter()
        again = store.history.prune_history(now + timedelta(minutes=1), **ret.model_dump())
        fig["prune_again_s"] = round(time.perf_counter() - t, 2)
        fig["prune_again_rows"] = again["results"]
        say(f"{backend}: prune {fig['prune_s']} s ({fig['pruned_rows']:,} rows deleted, {fig['rows_kept']:,} kept); "
            f"again a minute later {fig['prune_again_s']} s ({again['results']} rows)")
        t = time.perf_counter()
        store.history.rollup_history(now)
        fig["rollup_s"] = round(time.perf_counter() - t, 2)
        fig.update({f"after_{k}": v for k, v in _size(store, path).items()})
        name = cfg.integrations[len(cfg.integrations) // 2].name
        since = now - timedelta(hours=args.raw_hours)
        for label, n in (("all", runs), ("60", 60)):
            store.history.recent_beats(name, since, n)  # warm: the page's first read of a process is not the common one
            took, beats = _best(lambda n=n: store.history.recent_beats(name, since, n), 5)
            fig[f"beats_{label}_ms"] = round(took * 1000, 1)
            fig[f"beats_{label}_rows"] = sum(len(b) for b in beats.values())
        say(f"{backend}: rollup {fig['rollup_s']} s; beats of {name}: {fig['beats_all_rows']} rows "
            f"{fig['beats_all_ms']} ms, newest 60 a check {fig['beats_60_ms']} ms")
        fig.update(_rollup_sample(store, cfg, now, args.rollup_sample, path))
    finally:
        store.close()
    return fig


def _rollup_sample(store: Any, cfg: config_mod.Config, now: datetime, sample: int, path: Path | None,
                   ) -> dict[str, Any]:
    """90 days of hourly check rollups for ``sample`` integrations: the read of a 90-day bar and the size of a row."""
    from mailwarden.monitor.db_history import hour_of

    top = hour_of(now)
    some = [(i, c) for i, c in pairs(cfg) if i in {x.name for x in cfg.integrations[:sample]}]
    hours = [top - timedelta(hours=h) for h in range(24 * 90, 0, -1)]
    rng = random.Random(9)
    before = _table_bytes(store, "check_rollups")
    t = time.perf_counter()
    rows = 0
    with store.engine.begin() as conn:
        for chunk in range(0, len(hours), 24 * 10):
            batch = [{"integration": i, "check": c, "hour": h, "total": 12, "ok": 12 - bad, "warn": 0, "fail": bad,
                      "error": 0, "blocked": 0, "latency_sum_ms": 2400.0, "latency_count": 12, "latency_max_ms": 400.0}
                     for h in hours[chunk:chunk + 240] for i, c in some for bad in [int(rng.random() < 0.05)]]
            conn.execute(CheckRollup.__table__.insert(), batch)
            rows += len(batch)
    write_s = time.perf_counter() - t
    per_row = (_table_bytes(store, "check_rollups") - before) / rows  # with its indexes
    name = cfg.integrations[0].name
    start = top - timedelta(days=90)
    store.history.uptime_cells([name], start, 24, 90)
    took, cells = _best(lambda: store.history.uptime_cells([name], start, 24, 90), 5)
    fleet_rows = len(pairs(cfg)) * 24 * 90
    fig = {"rollup_sample_rows": rows, "rollup_sample_write_s": round(write_s, 1),
           "rollup_bytes_per_row": round(per_row), "rollup_90d_bar_ms": round(took * 1000, 1),
           "rollup_90d_bar_cells": len(cells[name]),  # 90 a check "rollup_90d_rows_per_integration": 5 * 24 * 90,
           "fleet_hourly_90d_rows": fleet_rows, "fleet_hourly_90d_gb_estimate": round(fleet_rows * per_row / 1e9, 1),
           "fleet_daily_90d_gb_estimate": round(fleet_rows / 24 * per_row / 1e9, 2)}
    say(f"rollups: {rows:,} rows (90 days x {sample} integrations) ~{fig['rollup_bytes_per_row']} bytes a row; a "
        f"90-day bar of one integration {fig['rollup_90d_bar_ms']} ms; the fleet's 90 days of hourly rows: "
        f"{fleet_rows:,} ~{fig['fleet_hourly_90d_gb_estimate']} GB (daily: ~{fig['fleet_daily_90d_gb_estimate']} GB)")
    return fig


def main(argv: list[str] | None = None) -> int:
    import shutil
    import uuid

    from bench import report, workload

    args = parse(argv)
    speed_start = report.speed_reference()
    workdir, tmp = workload.prepare_workdir(args.workdir, "mailwarden-bench-history-")
    results: dict[str, Any] = {}
    try:
        cfg = write_config(args.integrations, workdir)
        if args.backend in ("sqlite", "both"):
            path = workdir / "history.db"
            for stale in ("history.db", "history.db-wal", "history.db-shm"):
                (workdir / stale).unlink(missing_ok=True)
            results["sqlite"] = raw_hours_figures("sqlite", cfg, cfg.database_url(), path, args)
            for stale in ("history.db", "history.db-wal", "history.db-shm"):
                (workdir / stale).unlink(missing_ok=True)
        if args.backend in ("postgres", "both"):
            admin = _pg_admin()
            if admin is None:
                say("PostgreSQL: 127.0.0.1:5432 does not answer; SQLite only")
                results["postgres"] = "not reachable at 127.0.0.1:5432"
            else:
                conn, user = admin
                db = f"mailwarden_bench_{uuid.uuid4().hex[:8]}"
                conn.execute(f'CREATE DATABASE "{db}"')
                try:
                    results["postgres"] = raw_hours_figures(
                        "postgres", cfg, f"postgresql+psycopg://{user}@127.0.0.1:5432/{db}", None, args)
                finally:
                    conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
                    conn.close()
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    speed_end = report.speed_reference()
    doc = {"integrations": args.integrations, "raw_hours": args.raw_hours, "interval_min": args.interval,
           "results": results, "machine": report.machine(), "speed": {"start": speed_start, "end": speed_end}}
    print(json.dumps(doc, indent=2))
    if args.json:
        args.json.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    for backend, f in results.items():
        if isinstance(f, str):
            print(f"\n{backend}: {f}")
            continue
        print(f"\n{backend}, {args.integrations:,} integrations x 5 checks, a run every {args.interval} min, raw_hours "
              f"{args.raw_hours}: {f['rows_written']:,} results written ({f['runs_per_check']} a check) in "
              f"{f['write_s']} s; prune {f['prune_s']} s ({f['pruned_rows']:,} deleted, {f['rows_kept']:,} kept, "
              f"{f['rows_kept_per_check']} a check; again a minute later {f['prune_again_s']} s); rollup "
              f"{f['rollup_s']} s; database {f['after_database_mb']:,} MB; beats of one integration "
              f"{f['beats_all_ms']} ms ({f['beats_all_rows']} rows), newest 60 a check {f['beats_60_ms']} ms; "
              f"90-day bar from hourly rollups {f['rollup_90d_bar_ms']} ms, {f['rollup_bytes_per_row']} bytes a "
              f"rollup row: the fleet's 90 days hourly ~{f['fleet_hourly_90d_gb_estimate']} GB, daily "
              f"~{f['fleet_daily_90d_gb_estimate']} GB")
    print(f"machine speed reference (CPU ms, lower is faster; start -> end): TLS context "
          f"{speed_start['tls_context_ms']} -> {speed_end['tls_context_ms']}, Python loop "
          f"{speed_start['python_loop_ms']} -> {speed_end['python_loop_ms']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
