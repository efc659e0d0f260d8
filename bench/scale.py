"""`python -m bench --scale N [--workers 1,2] [--cycles K]`: queue mode (issue 20 item 6) across worker processes.

The workload of `python -m bench` (``bench.workload``, the sandbox in its own process at 50 ms round trips) on a
fresh PostgreSQL database, run as production runs it: a leader (`mailwarden serve --no-worker`) and W `mailwarden
worker` processes, each a subprocess of its own. Per worker count it measures whole cycles (every check of every
integration once): checks per second, checks per CPU-second of mailwarden's processes and of PostgreSQL's backends
(the cost of the queue is mostly there), the sandbox's CPU apart (it plays Microsoft), the peak queue lag, and
whether every check ran exactly once. Then the scaling efficiency from 1 to 2 workers.

How a cycle is driven: the leader schedules every check that never ran within 6 s of its start (token checks first,
``monitor.scheduler.sync_jobs``), and a restarted leader schedules each check one interval after its stored last run.
So each cycle starts a fresh leader; before every cycle after the first, the stored last runs (``check_states``) are
moved back by a day, which makes every check due again at once. The workers keep running across the cycles of one
worker count, so the first cycle warms their token caches and later cycles measure the steady state.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import yaml
from cryptography.fernet import Fernet

from bench import report, workload
from bench.pg import PG_HOST, PG_PORT, admin_connect
from bench.stage import staged

DEFAULT_JSON = Path(__file__).with_name("results-scale.json")
BENCH_APP = "mailwarden-bench"  # the bench's own PostgreSQL connections: never counted as mailwarden's cost
ENQUEUE_APP = "mailwarden-bench-enqueue"
KEY_ENV = "MW_BENCH_TOKEN_KEY"
INTERVAL = "30m"  # longer than any cycle: a check runs once per cycle, when the bench starts one
STALLED_AFTER = 20
MAILWARDEN = Path(sys.executable).with_name("mailwarden")
_TICK = os.sysconf("SC_CLK_TCK")
TARGETS = {"efficiency": (">=", 0.9), "throughput_ratio": (">=", 1.8), "duplicates": ("==", 0), "lost": ("==", 0)}


def say(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def proc_cpu_s(pid: int) -> float | None:
    """User + system CPU seconds of a process (all its threads), None once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / _TICK


# -- the database --------------------------------------------------------------------------------------------------
@contextlib.contextmanager
def fresh_database():
    try:
        admin, user = admin_connect(application_name=BENCH_APP)
    except ConnectionError as exc:
        raise SystemExit(f"python -m bench --scale needs PostgreSQL on {PG_HOST}:{PG_PORT} (trust auth): {exc}") \
            from None
    name = f"mailwarden_scale_{os.getpid()}_{int(time.time())}"
    admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield name, f"postgresql+psycopg://{user}@{PG_HOST}:{PG_PORT}/{name}", user
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


class Db:
    """The bench's own connection to the run's database (application_name ``mailwarden-bench``, excluded from the
    cost): results, the backends' pids."""

    def __init__(self, name: str, user: str):
        self.name = name
        self.conn = psycopg.connect(host=PG_HOST, port=PG_PORT, user=user, dbname=name, autocommit=True,
                                    application_name=BENCH_APP)
        self.lock = threading.Lock()

    def q(self, sql: str, params: Any = None) -> list[tuple]:
        with self.lock:
            return self.conn.execute(sql, params).fetchall()

    def backends(self) -> dict[int, str]:
        """Every backend of the database but the bench's own: pid -> application_name."""
        rows = self.q("SELECT pid, application_name FROM pg_stat_activity WHERE datname = %s "
                      "AND application_name NOT LIKE %s", (self.name, BENCH_APP + "%"))
        return {pid: app or "(sqlalchemy engine)" for pid, app in rows}

    def max_result_id(self) -> int:
        return self.q("SELECT coalesce(max(id), 0) FROM check_results")[0][0]

    def results_after(self, last_id: int) -> list[tuple]:
        return self.q('SELECT integration, "check", status, code, checked_at, latency_ms FROM check_results '
                      "WHERE id > %s", (last_id,))

    def count_after(self, last_id: int) -> int:
        return self.q("SELECT count(*) FROM check_results WHERE id > %s", (last_id,))[0][0]

    def pairs_after(self, last_id: int) -> int:
        return self.q('SELECT count(DISTINCT (integration, "check")) FROM check_results WHERE id > %s',
                      (last_id,))[0][0]

    def make_all_due(self) -> int:
        """Every check due again now: its stored last run a day earlier (see the module docstring)."""
        with self.lock:
            return self.conn.execute("UPDATE check_states SET last_checked_at = last_checked_at - interval '1 day' "
                                     "WHERE last_checked_at IS NOT NULL").rowcount

    def close(self) -> None:
        self.conn.close()


# -- processes -------------------------------------------------------------------------------------------------------
class Proc:
    """A `mailwarden` subprocess of the run; its JSON log lines go to a file."""

    def __init__(self, name: str, args: list[str], config: Path, env: dict[str, str]):
        self.name = name
        self.log = config.parent / f"{name}.log"
        with self.log.open("w") as out:
            self.proc = subprocess.Popen([str(MAILWARDEN), *args, "-c", str(config)],  # noqa: S603 - our own CLI
                                         cwd=config.parent, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=out)
        self.pid = self.proc.pid

    def lines(self) -> list[dict]:
        text = self.log.read_text(errors="replace")
        out = []
        for line in text[: text.rfind("\n") + 1].splitlines():
            if line.startswith("{"):
                with contextlib.suppress(ValueError):
                    out.append(json.loads(line))
        return out

    def wait_for(self, msgs: tuple[str, ...], timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.lines():
                if line.get("msg") in msgs:
                    return line
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited ({self.proc.returncode}): {self.log.read_text()[-2000:]}")
            time.sleep(0.1)
        raise RuntimeError(f"{self.name}: no {msgs} within {timeout} s: {self.log.read_text()[-2000:]}")

    def cpu_s(self) -> float:
        return proc_cpu_s(self.pid) or 0.0

    def stop(self) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode


# -- sampling -------------------------------------------------------------------------------------------------------
class Sampler:
    """Every second: the queue's figures (``monitor.due.read_stats``) and the CPU of each PostgreSQL backend of the
    run's database, kept per pid so that a backend that ends during a cycle still counts up to its last sample."""

    def __init__(self, db: Db, url: str):
        from sqlalchemy import create_engine

        self.db = db
        self.engine = create_engine(url, connect_args={"application_name": BENCH_APP}, pool_size=1)
        self.cpu: dict[int, float] = {}
        self.app: dict[int, str] = {}
        self.peak_lag = 0.0
        self.peak_ready = 0
        self.errors = 0
        self.last: Any = None  # the latest QueueStats
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def sample(self) -> None:
        for pid, app in self.db.backends().items():
            cpu = proc_cpu_s(pid)
            if cpu is not None:
                self.cpu[pid] = max(cpu, self.cpu.get(pid, 0.0))
                self.app[pid] = app

    def reset_peaks(self) -> None:
        self.peak_lag, self.peak_ready = 0.0, 0

    def _loop(self) -> None:
        from mailwarden.monitor.due import read_stats

        while not self._stop.wait(1.0):
            try:
                stats = self.last = read_stats(self.engine, STALLED_AFTER)
                self.peak_lag = max(self.peak_lag, stats.oldest_ready_s or 0.0)
                self.peak_ready = max(self.peak_ready, stats.ready)
                self.sample()
            except Exception:  # noqa: BLE001 - a sample missed is a figure less precise, not a failed run
                self.errors += 1

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)
        self.engine.dispose()


def pg_by_app(before: dict[int, float], after: dict[int, float], apps: dict[int, str]) -> dict[str, float]:
    out: Counter[str] = Counter()
    for pid, cpu in after.items():
        out[apps.get(pid, "?")] += cpu - before.get(pid, 0.0)
    return {k: round(v, 3) for k, v in sorted(out.items())}


# -- one cycle ------------------------------------------------------------------------------------------------------
@dataclass
class Cycle:
    checks: int = 0
    wall_s: float = 0.0
    work_s: float = 0.0  # first check started to last check ended (the workers' span)
    leader_cpu_s: float = 0.0
    workers_cpu_s: float = 0.0
    pg_cpu_s: float = 0.0
    pg_by_app: dict[str, float] = field(default_factory=dict)
    sandbox_cpu_s: float = 0.0
    peak_lag_s: float = 0.0
    peak_ready: int = 0
    duplicates: int = 0
    lost: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    log_warnings: dict[str, int] = field(default_factory=dict)
    shutdown_log: dict[str, int] = field(default_factory=dict)  # the leader's warnings while it stopped
    loadavg_1m: float = 0.0  # at the cycle's end: whether something else ran on the machine meanwhile
    lost_stored_after_leader_stop: int = 0  # lost ones that ran once the cycle's leader was stopped (SIGTERM)

    @property
    def cpu_s(self) -> float:
        return self.leader_cpu_s + self.workers_cpu_s + self.pg_cpu_s

    def as_json(self) -> dict:
        out = {k: (round(v, 3) if isinstance(v, float) else v) for k, v in self.__dict__.items()}
        out["cpu_s"] = round(self.cpu_s, 3)
        out["checks_per_s"] = round(self.checks / self.wall_s, 1) if self.wall_s else None
        out["checks_per_cpu_s"] = round(self.checks / self.cpu_s, 1) if self.cpu_s else None
        return out


def _ts(line: dict) -> float:
    return datetime.fromisoformat(line["ts"].replace("Z", "+00:00")).timestamp()


def run_cycle(ctx: Run, workers: list[Proc], label: str, timeout_s: float) -> Cycle:
    """One cycle: a fresh leader schedules every check; ends when each has a result (or nothing new was stored for
    a minute, or ``timeout_s``), then waits 3 s more for duplicates."""
    db, sampler, expected = ctx.db, ctx.sampler, ctx.expected
    last_id = db.max_result_id()
    for w in workers:
        ctx.log_marks[w.name] = len(w.lines())
    leader = Proc(f"leader-{label}", ["serve", "--no-worker"], ctx.config, ctx.env)
    try:
        started = leader.wait_for(("scheduler started", "scheduler jobs started"), 120)
        if started.get("msg") == "scheduler started" and started.get("leader") is False:
            started = leader.wait_for(("scheduler jobs started",), 120)
        sampler.sample()
        pg0 = dict(sampler.cpu)
        sampler.reset_peaks()
        t0 = _ts(started)
        cpu0 = (leader.cpu_s(), sum(w.cpu_s() for w in workers), ctx.sandbox.cpu_s())
        deadline = time.monotonic() + timeout_s
        stored = 0
        quiet_since = time.monotonic()
        while time.monotonic() < deadline:
            count = db.count_after(last_id)
            if count != stored:
                stored, quiet_since = count, time.monotonic()
            if count >= len(expected) and db.pairs_after(last_id) >= len(expected):
                break
            for p in (leader, *workers):
                if p.proc.poll() is not None:
                    raise RuntimeError(f"{p.name} exited ({p.proc.returncode}): {p.log.read_text()[-3000:]}")
            quiet = time.monotonic() - quiet_since
            idle = sampler.last is not None and sampler.last.ready == 0 and sampler.last.running == 0
            # nothing stored for a minute and nothing queued or running (or three minutes): the rest is lost. A
            # leader short of CPU can go quiet for seconds between enqueues (bench/RESULTS.md, 2026-12-03: 15 s
            # cut a cycle short)
            if quiet > 180 or (quiet > 60 and idle):
                break
            time.sleep(1.0)
        cpu1 = (leader.cpu_s(), sum(w.cpu_s() for w in workers), ctx.sandbox.cpu_s())
        sampler.sample()
        pg1 = dict(sampler.cpu)
        peak_lag, peak_ready = sampler.peak_lag, sampler.peak_ready
        time.sleep(3.0)  # a duplicate (a job run again) would be stored by now
        rows = db.results_after(last_id)
        seen = Counter((r[0], r[1]) for r in rows)
        warnings = _warnings(ctx, (leader, *workers))
    finally:
        leader.stop()
    missing = expected - set(seen)
    if missing:  # were they still in the leader? A stopping leader enqueues what it had gathered (Feed.flush)
        time.sleep(5.0)
        late = {(r[0], r[1]) for r in db.results_after(last_id)} & missing
    else:
        late = set()
    # apart: what the leader logged while it stopped (SIGTERM between cycles; not part of the cycle)
    shutdown = _warnings(ctx, (leader,))
    c = Cycle(checks=len(rows))
    ends = [r[4].timestamp() + (r[5] or 0) / 1000 for r in rows]
    starts = [r[4].timestamp() for r in rows]
    c.wall_s = max(ends) - t0 if ends else 0.0
    c.work_s = max(ends) - min(starts) if ends else 0.0
    c.loadavg_1m = os.getloadavg()[0]
    c.leader_cpu_s = cpu1[0] - cpu0[0]
    c.workers_cpu_s = cpu1[1] - cpu0[1]
    c.sandbox_cpu_s = cpu1[2] - cpu0[2]
    c.pg_by_app = pg_by_app(pg0, pg1, sampler.app)
    c.pg_cpu_s = sum(c.pg_by_app.values())
    c.peak_lag_s, c.peak_ready = peak_lag, peak_ready
    c.duplicates = sum(1 for n in seen.values() if n > 1)
    c.lost = len(expected - set(seen))
    c.statuses = dict(Counter(r[2] for r in rows))
    c.problems = [f"{r[0]}/{r[1]}: {r[2]} {r[3]}" for r in rows if r[2] != "ok"][:5]
    c.problems += [f"lost: {i}/{k}" for i, k in sorted(expected - set(seen))[:5]]
    c.problems += [f"duplicate: {i}/{k} x{n}" for (i, k), n in seen.items() if n > 1][:5]
    c.log_warnings = dict(warnings)
    c.lost_stored_after_leader_stop = len(late)
    c.shutdown_log = {k: n - warnings.get(k, 0) for k, n in shutdown.items() if n > warnings.get(k, 0)}
    return c


def _warnings(ctx: Run, procs: tuple[Proc, ...]) -> Counter[str]:
    """Warning and error log lines of ``procs`` since the cycle began, by process kind and message."""
    out: Counter[str] = Counter()
    for p in procs:
        for line in p.lines()[ctx.log_marks.get(p.name, 0):]:
            if line.get("level") in ("warning", "error", "critical"):
                out[f"{p.name.split('-')[0].rstrip('0123456789')}: {line.get('msg')}"] += 1
    return out


@dataclass
class Run:
    config: Path
    env: dict[str, str]
    db: Db
    sampler: Sampler
    sandbox: Any
    expected: set[tuple[str, str]]
    log_marks: dict[str, int] = field(default_factory=dict)


def start_workers(ctx: Run, count: int, concurrency: int) -> list[Proc]:
    workers = [Proc(f"worker{i + 1}-of-{count}", ["worker", "--concurrency", str(concurrency)], ctx.config, ctx.env)
               for i in range(count)]
    for w in workers:
        w.wait_for(("worker started",), 120)
    return workers


# -- the enqueue cost ----------------------------------------------------------------------------------------------
async def _enqueue_cost(url: str, db: Db, jobs: int, batch: int) -> dict[str, Any]:
    """``monitor.queue.Enqueuer.enqueue`` in this process, in batches as the leader's Feed sends them, with no worker
    running: CPU ms per job here (time.process_time) and in PostgreSQL's backend; the jobs are deleted after."""
    from mailwarden.monitor.due import TOKEN_PRIORITY, Due
    from mailwarden.monitor.queue import Enqueuer, make_app

    app = make_app(url, application_name=ENQUEUE_APP)
    now = datetime.now(UTC)
    kinds = ("token", "pop", "smtp", "secret_expiry")
    due = [Due(f"enqueue-bench-{i // len(kinds)}", kinds[i % len(kinds)], now,
               TOKEN_PRIORITY if i % len(kinds) == 0 else 0) for i in range(jobs)]

    def pg_cpu() -> float:
        pids = [pid for (pid,) in db.q("SELECT pid FROM pg_stat_activity WHERE datname = %s AND application_name = %s",
                                       (db.name, ENQUEUE_APP))]
        return sum(proc_cpu_s(p) or 0.0 for p in pids)

    async with app.open_async():
        enqueuer = Enqueuer(app, url)
        await enqueuer.enqueue([Due("enqueue-bench-warm", "token", now)])  # the pool's connection, the plan
        pg0, cpu0, wall0 = pg_cpu(), time.process_time(), time.perf_counter()
        added = 0
        for i in range(0, jobs, batch):
            added += len(await enqueuer.enqueue(due[i:i + batch]))
        cpu1, wall1, pg1 = time.process_time(), time.perf_counter(), pg_cpu()
    with db.lock:  # procrastinate's delete trigger names its tables unqualified: its schema first
        db.conn.execute("SET search_path TO procrastinate, public")
        db.conn.execute("DELETE FROM procrastinate_jobs WHERE queueing_lock LIKE 'enqueue-bench-%'")
        db.conn.execute("RESET search_path")
    return {"jobs": jobs, "batch": batch, "added": added, "wall_s": round(wall1 - wall0, 3),
            "cpu_ms_per_job": round((cpu1 - cpu0) * 1000 / jobs, 4),
            "pg_cpu_ms_per_job": round((pg1 - pg0) * 1000 / jobs, 4)}


# -- the run ---------------------------------------------------------------------------------------------------------
class _NoAliases(yaml.SafeDumper):
    def ignore_aliases(self, data: Any) -> bool:
        return True


def _edit(url: str):
    def edit(path: Path) -> None:
        doc = yaml.safe_load(path.read_text())
        doc["database"] = url
        doc["token_key"] = f"env:{KEY_ENV}"
        doc["web"] = {"enabled": False}
        doc["defaults"]["interval"] = INTERVAL
        doc["execution"] = {"mode": "queue", "queue": {"stalled_after": STALLED_AFTER}}
        # no anchors: the integrations share their empty check dicts, and the config loader refuses more than
        # 10,000 uses of aliases (a YAML bomb's signature), which 10,000 integrations would exceed
        path.write_text(yaml.dump(doc, Dumper=_NoAliases, sort_keys=False))
    return edit


def _mean(values: list[float]) -> float | None:
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def summarise(per_w: dict[int, list[Cycle]]) -> dict[str, Any]:
    """Per worker count, the steady cycles (2..K; cycle 1 when it is the only one) pooled."""
    out: dict[str, Any] = {}
    for w, cycles in per_w.items():
        steady = cycles[1:] or cycles
        checks = sum(c.checks for c in steady)
        wall = sum(c.wall_s for c in steady)
        cpu = sum(c.cpu_s for c in steady)
        out[str(w)] = {
            "cycles_used": [i + 2 if len(cycles) > 1 else 1 for i in range(len(steady))],
            "checks_per_s": round(checks / wall, 2) if wall else None,
            "checks_per_cpu_s": round(checks / cpu, 2) if cpu else None,
            "cpu_ms_per_check": round(cpu * 1000 / checks, 3) if checks else None,
            "cpu_ms_per_check_leader_workers_pg": [round(sum(getattr(c, k) for c in steady) * 1000 / max(checks, 1), 3)
                                                   for k in ("leader_cpu_s", "workers_cpu_s", "pg_cpu_s")],
            "sandbox_cpu_ms_per_check": round(sum(c.sandbox_cpu_s for c in steady) * 1000 / max(checks, 1), 3),
            "peak_lag_s": round(max(c.peak_lag_s for c in cycles), 1),
            "duplicates_by_cycle": [c.duplicates for c in cycles],
            "lost_by_cycle": [c.lost for c in cycles],
        }
    return out


def ratios(summary: dict[str, Any], workers: list[int]) -> dict[str, Any]:
    cores = os.cpu_count() or 1
    one, two = summary.get("1"), summary.get("2")
    out: dict[str, Any] = {"cores": cores}
    if not (one and two):
        out["efficiency"] = out["throughput_ratio"] = None
        out["note"] = "needs --workers 1,2"
        return out
    out["efficiency"] = round(two["checks_per_cpu_s"] / one["checks_per_cpu_s"], 3)
    out["throughput_ratio"] = round(two["checks_per_s"] / one["checks_per_s"], 3)
    out["throughput_judged"] = cores >= 2 + 2
    return out


def verdicts(doc: dict) -> dict[str, str]:
    r = doc["ratios"]
    out = {}
    if r.get("efficiency") is not None:
        out["efficiency"] = "PASS" if r["efficiency"] >= TARGETS["efficiency"][1] else "FAIL"
        out["throughput_ratio"] = (("PASS" if r["throughput_ratio"] >= TARGETS["throughput_ratio"][1] else "FAIL")
                                   if r["throughput_judged"] else f"not judged: {r['cores']} cores")
    dup = sum(sum(s["duplicates_by_cycle"]) for s in doc["summary"].values())
    lost = sum(sum(s["lost_by_cycle"]) for s in doc["summary"].values())
    out["duplicates"] = "PASS" if dup == 0 else "FAIL"
    out["lost"] = "PASS" if lost == 0 else "FAIL"
    return out


def render(doc: dict) -> str:
    sp = doc["speed"]
    ref = (f"speed reference: TLS context {sp['start']['tls_context_ms']} -> {sp['end']['tls_context_ms']} ms, "
           f"Python loop {sp['start']['python_loop_ms']} -> {sp['end']['python_loop_ms']} ms (start -> end)")
    lines = [f"queue mode, {doc['integrations']} integrations, {doc['checks_per_cycle']} checks per cycle, "
             f"{doc['latency_ms']} ms per round trip, worker concurrency {doc['concurrency']}, "
             f"{doc['cycles']} cycles per worker count (cycle 1 warms the token caches)",
             f"machine: {doc['machine']['nproc']} cores, {doc['machine']['cpu']}; {ref}", ""]
    lines.append("| W | cycle | checks | wall s | checks/s | CPU s (leader+workers+PG) | checks/CPU-s | "
                 "PG CPU by application | sandbox CPU s | peak lag s | dup | lost | statuses | load 1m |")
    lines.append("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for w, cycles in doc["cycles_by_workers"].items():
        for i, c in enumerate(cycles):
            lines.append(
                f"| {w} | {i + 1} | {c['checks']} | {c['wall_s']} | {c['checks_per_s']} | "
                f"{c['cpu_s']} ({c['leader_cpu_s']}+{c['workers_cpu_s']}+{c['pg_cpu_s']}) | {c['checks_per_cpu_s']} | "
                f"{', '.join(f'{k} {v}' for k, v in c['pg_by_app'].items())} | {c['sandbox_cpu_s']} | "
                f"{c['peak_lag_s']} | {c['duplicates']} | {c['lost']} | {c['statuses']} | {c['loadavg_1m']} |")
    lines.append("")
    for w, s in doc["summary"].items():
        lead, work, pg = s["cpu_ms_per_check_leader_workers_pg"]
        lines.append(f"W={w} (cycles {s['cycles_used']}): {s['checks_per_s']} checks/s, {s['checks_per_cpu_s']} "
                     f"checks per CPU-second ({s['cpu_ms_per_check']} ms per check: leader {lead}, workers {work}, "
                     f"PostgreSQL {pg}); sandbox {s['sandbox_cpu_ms_per_check']} ms per check; peak lag "
                     f"{s['peak_lag_s']} s; duplicates {s['duplicates_by_cycle']}, lost {s['lost_by_cycle']} "
                     f"[{ref}]")
    e = doc["enqueue"]
    lines.append(f"enqueue (Enqueuer.enqueue in-process, {e['jobs']} jobs in batches of {e['batch']}): "
                 f"{e['cpu_ms_per_job']} ms CPU per job in the leader, {e['pg_cpu_ms_per_job']} ms in PostgreSQL "
                 f"({e['wall_s']} s wall) [{ref}]")
    r, v = doc["ratios"], doc["verdicts"]
    if r.get("efficiency") is not None:
        lines.append(f"scaling efficiency (checks per CPU-second, 2 workers / 1): {r['efficiency']} (target >= 0.9: "
                     f"{v['efficiency']}) [{ref}]")
        lines.append(f"throughput ratio (checks/s, 2 workers / 1): {r['throughput_ratio']} (target >= 1.8: "
                     f"{v['throughput_ratio']}) [{ref}]")
    else:
        lines.append(f"scaling efficiency and throughput ratio: {r.get('note')}")
    lines.append(f"duplicates: {v['duplicates']}, lost: {v['lost']} (target 0 / 0)")
    for w, cycles in doc["cycles_by_workers"].items():
        for i, c in enumerate(cycles):
            for p in c["problems"]:
                lines.append(f"  W={w} cycle {i + 1} not ok: {p}")
            if c["lost"]:
                lines.append(f"  W={w} cycle {i + 1}: of the {c['lost']} lost, {c['lost_stored_after_leader_stop']} "
                             "ran only once the cycle's leader was stopped (its shutdown flush of the Feed)")
            for msg, n in c["log_warnings"].items():
                lines.append(f"  W={w} cycle {i + 1} log warning x{n}: {msg}")
            for msg, n in c["shutdown_log"].items():
                lines.append(f"  W={w} after cycle {i + 1}, the leader stopping (SIGTERM), logged x{n}: {msg}")
    return "\n".join(lines)


def main(args: argparse.Namespace) -> int:
    speed_start = report.speed_reference()
    say(f"machine speed reference (start): {speed_start}")
    workers_list = [int(w) for w in str(args.workers).split(",") if w.strip()]
    concurrency = args.concurrency
    say(f"worker concurrency: {concurrency} checks at once per worker process")
    key = Fernet.generate_key().decode()
    os.environ[KEY_ENV] = key  # the config's token_key, for this process (seeding) and the subprocesses
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILWARDEN_")}
    work = workload.build(args.scale)
    cycles_by_w: dict[int, list[Cycle]] = {}
    with fresh_database() as (dbname, url, user):
        say(f"database {dbname}")
        with staged(work, args.workdir, "mailwarden-scale-", say, edit=_edit(url), note=", queue mode") as stage:
            stage.sandbox.set_latency(args.latency_ms)
            db = Db(dbname, user)
            sampler = Sampler(db, url)
            try:
                enqueue = asyncio.run(_enqueue_cost(url, db, args.enqueue_jobs, args.enqueue_batch))
                say(f"enqueue cost: {enqueue}")
                expected = {(i.name, k) for i in stage.config.integrations if not i.paused for k in i.checks}
                ctx = Run(stage.workdir / "mailwarden.yaml", env, db, sampler, stage.sandbox, expected)
                sampler.start()
                timeout = max(300.0, len(expected) / 5)
                for w in workers_list:
                    procs = start_workers(ctx, w, concurrency)
                    try:
                        cycles_by_w[w] = []
                        for k in range(1, args.cycles + 1):
                            if w != workers_list[0] or k > 1:
                                db.make_all_due()
                            c = run_cycle(ctx, procs, f"w{w}-c{k}", timeout)
                            cycles_by_w[w].append(c)
                            report.write(build_doc(args, workers_list, expected, stage.seed, enqueue, cycles_by_w,
                                                   speed_start, complete=False), args.json)  # a stopped run keeps it
                            j = c.as_json()
                            say(f"W={w} cycle {k}: {c.checks} checks in {c.wall_s:.1f} s ({j['checks_per_s']}/s), "
                                f"CPU leader {c.leader_cpu_s:.1f} workers {c.workers_cpu_s:.1f} PG {c.pg_cpu_s:.1f} "
                                f"({j['checks_per_cpu_s']} checks/CPU-s), sandbox {c.sandbox_cpu_s:.1f}, peak lag "
                                f"{c.peak_lag_s:.1f} s, duplicates {c.duplicates}, lost {c.lost}, {c.statuses}")
                    finally:
                        for p in procs:
                            p.stop()
            finally:
                sampler.stop()
                db.close()
    doc = build_doc(args, workers_list, expected, stage.seed, enqueue, cycles_by_w, speed_start, complete=True)
    print(render(doc))
    report.write(doc, args.json)
    print(f"\nwritten: {args.json}")
    return 0


def build_doc(args: argparse.Namespace, workers_list: list[int], expected: set, seed: dict, enqueue: dict,
              cycles_by_w: dict[int, list[Cycle]], speed_start: dict, *, complete: bool) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "complete": complete, "integrations": args.scale, "checks_per_cycle": len(expected),
        "latency_ms": args.latency_ms, "concurrency": args.concurrency, "cycles": args.cycles,
        "workers": workers_list, "interval": INTERVAL,
        "when": datetime.now(UTC).isoformat(timespec="seconds"), "machine": report.machine(),
        "loadavg_end": os.getloadavg(), "seed": seed, "enqueue": enqueue,
        "cycles_by_workers": {str(w): [c.as_json() for c in cs] for w, cs in cycles_by_w.items()},
        "summary": summarise(cycles_by_w),
    }
    doc["ratios"] = ratios(doc["summary"], workers_list)
    doc["speed"] = {"start": speed_start, "end": report.speed_reference()}
    doc["verdicts"] = verdicts(doc)
    doc["targets"] = {k: f"{op} {t:g}" for k, (op, t) in TARGETS.items()}
    return doc
