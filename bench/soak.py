"""`python -m bench.soak [--integrations N] [--minutes M]`: the benchmark scenario without pause (issue 9, soak).

The workload of `python -m bench` (N integrations in the seeds' mix, the sandbox in its own process with
injected latency, delegated tokens seeded through its sign-in page), but run the way `serve` runs it: the real
``Monitor`` (scheduler, runner, SQLite store, history rollups) with every check on a short interval, jitter
included, for M minutes. The default interval (60 s) is about one full-scale cycle on two cores (48 s
measured, bench/RESULTS.md), so cycles follow one another without a pause.

Every second the process samples itself from /proc/self: VmRSS, open file descriptors, sockets, threads,
the SQLAlchemy pool's open connections, whether a check is in flight, and how late the event loop woke the
sampler. Every ``--sample`` seconds (default 60) the period becomes one row: RSS at the mark and its maximum
in the period; the fewest and most descriptors, sockets, threads and pool connections seen, and those minima
over *quiet* samples only (no check in flight: then nothing but long-lived resources is open, so a leak shows
as a rising floor); the TCP sockets ESTABLISHED / CLOSE_WAIT at the mark; the checks finished; the event
loop's worst lag; where the memory is, to explain a change of RSS (RSS split into anonymous and file-backed
pages, malloc's bytes in use and held free, SQLite's heap, Python's allocated blocks). ``tests/soak``
asserts on the rows; this module measures and prints, it asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import json
import os
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from bench import workload
from bench.sandbox_proc import SandboxProcess
from bench.stage import staged
from mailwarden.monitor import config as config_mod
from mailwarden.monitor import tune_malloc
from mailwarden.monitor.runner import RunResult
from mailwarden.monitor.runtime import open_runtime
from mailwarden.monitor.scheduler import Monitor

# Rows before the soak is judged: the first minutes fill the token caches and store, the connection pools and
# SQLite's page caches (at full scale on 2 cores RSS rose 186 -> 197 MB in the first 5 minutes, 2026-11).
WARMUP = 5
TICK_S = 1.0
_TCP_STATES = {"01": "established", "08": "close_wait"}


def say(msg: str) -> None:
    print(f"[soak {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# -- sampling /proc/self ----------------------------------------------------------------------------------
def _status() -> dict[str, int]:
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "RssAnon", "RssFile", "RssShmem", "Threads"):
            out[key] = int(value.split()[0])
    return out


def _fds() -> tuple[int, list[int]]:
    """(open descriptors, inodes of the socket ones)."""
    names = os.listdir("/proc/self/fd")
    inodes = []
    for name in names:
        try:
            target = os.readlink(f"/proc/self/fd/{name}")
        except OSError:  # closed meanwhile (or the listing's own descriptor)
            continue
        if target.startswith("socket:["):
            inodes.append(int(target[8:-1]))
    return len(names), inodes


def tcp_states(inodes: list[int]) -> dict[str, int]:
    """This process's TCP sockets by state (ESTABLISHED, CLOSE_WAIT, other)."""
    mine, out = set(inodes), Counter({"established": 0, "close_wait": 0, "other_tcp": 0})
    for table in ("/proc/self/net/tcp", "/proc/self/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            cols = line.split()
            if len(cols) > 9 and int(cols[9]) in mine:
                out[_TCP_STATES.get(cols[3], "other_tcp")] += 1
    return dict(out)


def _rss_mb(pid: int | str = "self") -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]


def _native() -> dict[str, float | int | None]:
    """Where the memory is, to explain RSS: malloc's bytes in use and held free (glibc, all arenas), SQLite's
    own heap (page caches), and Python's allocated blocks. None where the library is not there."""
    out: dict[str, float | int | None] = {"py_blocks": sys.getallocatedblocks(), "malloc_used_mb": None,
                                          "malloc_free_mb": None, "sqlite_mb": None}
    with contextlib.suppress(OSError, AttributeError):
        mallinfo2 = ctypes.CDLL("libc.so.6").mallinfo2
        mallinfo2.restype = _MallInfo2
        info = mallinfo2()
        out["malloc_used_mb"] = round((info.uordblks + info.hblkhd) / 2**20, 1)
        out["malloc_free_mb"] = round(info.fordblks / 2**20, 1)
    with contextlib.suppress(OSError, AttributeError):
        used = ctypes.CDLL("libsqlite3.so.0").sqlite3_memory_used  # the library _sqlite3 is linked to
        used.restype = ctypes.c_int64
        out["sqlite_mb"] = round(used() / 2**20, 1)
    return out


def _pool_connections(engine: Any) -> int | None:
    """Connections the store's SQLAlchemy pool holds open (idle + in use)."""
    pool = engine.pool
    try:
        return int(pool.checkedin()) + int(pool.checkedout())
    except AttributeError:  # a pool kind without counters
        return None


@dataclass
class Period:
    started: float
    ticks: list[dict[str, Any]] = field(default_factory=list)
    results: Counter = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)

    def row(self, index: int, at: float, mark: dict[str, Any], sandbox_pid: int) -> dict[str, Any]:
        quiet = [t for t in self.ticks if t["in_flight"] == 0]
        row: dict[str, Any] = {"minute": index, "t_s": round(at, 1), "rss_mb": round(mark["rss_kb"] / 1024, 1),
                               "rss_max_mb": round(max(t["rss_kb"] for t in self.ticks) / 1024, 1)}
        for key in ("fds", "sockets", "threads", "db_conns"):
            values = [t[key] for t in self.ticks if t[key] is not None]
            quiet_values = [t[key] for t in quiet if t[key] is not None]
            row[f"{key}_min"] = min(values) if values else None
            row[f"{key}_max"] = max(values) if values else None
            row[f"{key}_quiet"] = min(quiet_values) if quiet_values else None
        row.update(tcp_states(mark["inodes"]))
        row["loop_lag_max_ms"] = round(max(t["lag_s"] for t in self.ticks) * 1000)
        row["quiet_samples"] = len(quiet)
        row["samples"] = len(self.ticks)
        row["checks"] = sum(self.results.values())
        row["not_ok"] = sum(n for status, n in self.results.items() if status != "ok")
        row["sandbox_rss_mb"] = round(_rss_mb(sandbox_pid) or 0.0, 1)
        row.update({"anon_mb": round(mark["anon_kb"] / 1024, 1), "file_mb": round(mark["file_kb"] / 1024, 1)})
        row.update(_native())
        row["problems"] = self.problems[:3]
        return row


def floor(row: dict[str, Any], key: str) -> int | None:
    """The period's floor of ``key``: its minimum over quiet samples, or over all when none was quiet."""
    value = row.get(f"{key}_quiet")
    return value if value is not None else row.get(f"{key}_min")


async def soak(cfg: config_mod.Config, sandbox: SandboxProcess, minutes: float, sample_s: float) -> list[dict]:
    runtime = open_runtime(cfg)
    in_flight = 0
    period = Period(time.monotonic())

    def on_result(result: RunResult) -> None:
        status = result.outcome.status.value
        period.results[status] += 1
        if status != "ok" and len(period.problems) < 3:
            period.problems.append(f"{result.integration}/{result.check}: {status} {result.outcome.code}: "
                                   f"{result.outcome.summary[:200]}")

    monitor = Monitor(runtime, on_result=on_result)
    real_run_one = runtime.runner.run_one

    async def counted(name: str, kind: str) -> RunResult:  # knows whether a check is in flight
        nonlocal in_flight
        in_flight += 1
        try:
            return await real_run_one(name, kind)
        finally:
            in_flight -= 1

    runtime.runner.run_one = counted  # type: ignore[method-assign]
    engine = runtime.store.engine
    rows: list[dict] = []
    start = time.monotonic()
    end = start + minutes * 60
    monitor.start()
    try:
        next_tick, next_mark, lag = start, start + sample_s, 0.0
        while True:
            status = _status()
            fds, inodes = _fds()
            tick = {"rss_kb": status["VmRSS"], "anon_kb": status.get("RssAnon", 0),
                    "file_kb": status.get("RssFile", 0) + status.get("RssShmem", 0), "threads": status["Threads"],
                    "fds": fds, "sockets": len(inodes), "db_conns": _pool_connections(engine),
                    "in_flight": in_flight, "lag_s": lag, "inodes": inodes}
            period.ticks.append({k: v for k, v in tick.items() if k not in ("inodes", "anon_kb", "file_kb")})
            now = time.monotonic()
            if now >= next_mark:
                rows.append(period.row(len(rows) + 1, now - start, tick, sandbox.proc.pid))
                r = rows[-1]
                say(f"row {r['minute']} ({r['t_s']:.0f} s): RSS {r['rss_mb']} MB (max {r['rss_max_mb']}), "
                    f"fds {floor(r, 'fds')}..{r['fds_max']}, sockets {floor(r, 'sockets')}..{r['sockets_max']}, "
                    f"db {r['db_conns_max']}, "
                    f"threads {r['threads_max']}, {r['checks']} checks ({r['not_ok']} not ok), "
                    f"{r['quiet_samples']}/{r['samples']} quiet")
                period = Period(now)
                next_mark += sample_s
                if now >= end - 1e-6:
                    break
            next_tick += TICK_S
            await asyncio.sleep(max(0.0, next_tick - time.monotonic()))
            lag = max(0.0, time.monotonic() - next_tick)  # how late the event loop woke this task up
            if lag > TICK_S:
                next_tick = time.monotonic()  # missed ticks are skipped, not taken back to back
    finally:
        monitor.shutdown()  # also closes the runtime
    return rows


def _configure(path: Path, interval_s: float) -> None:
    """The bench config, with every check on ``interval_s`` (the bench itself starts its cycles by hand)."""
    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    doc["defaults"]["interval"] = f"{interval_s:g}s"
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")


def run(integrations: int, minutes: float, *, interval_s: float = 60.0, sample_s: float = 60.0,
        latency_ms: int = 50, workdir: Path | None = None) -> dict[str, Any]:
    tune_malloc()  # as `mailwarden serve` does at start (its figures are serve's)
    work = workload.build(integrations)
    note = f", every {interval_s:g} s for {minutes:g} min, a row every {sample_s:g} s"
    with staged(work, workdir, "mailwarden-soak-", say, edit=lambda path: _configure(path, interval_s),
                note=note) as stage:
        stage.sandbox.set_latency(latency_ms)
        rows = asyncio.run(soak(stage.config, stage.sandbox, minutes, sample_s))
    checks = sum(len(i.checks) for i in work.integrations)
    return {"integrations": integrations, "checks": checks, "minutes": minutes, "interval_s": interval_s,
            "sample_s": sample_s, "latency_ms": latency_ms, "warmup_rows": WARMUP, "rows": rows}


COLUMNS = [("min", "minute"), ("RSS MB", "rss_mb"), ("max MB", "rss_max_mb"), ("fds", "fds"),
           ("sockets", "sockets"), ("threads", "threads"), ("db conns", "db_conns"), ("est", "established"),
           ("close_wait", "close_wait"), ("checks", "checks"), ("not ok", "not_ok"), ("quiet", "quiet_samples"),
           ("lag ms", "loop_lag_max_ms"), ("anon MB", "anon_mb"), ("file MB", "file_mb"),
           ("malloc MB", "malloc_used_mb"), ("free MB", "malloc_free_mb"), ("sqlite MB", "sqlite_mb"),
           ("py blocks", "py_blocks"), ("sandbox MB", "sandbox_rss_mb")]


def table(doc: dict[str, Any]) -> str:
    """The rows as a text table: fds / sockets / threads / db conns as floor..max (floor: fewest seen
    while no check was in flight, marked * when no sample of the period was quiet)."""
    def cell(row: dict, key: str) -> str:
        if key in ("fds", "sockets", "threads", "db_conns"):
            low = floor(row, key)
            star = "" if row.get(f"{key}_quiet") is not None else "*"
            return f"{low}{star}..{row.get(f'{key}_max')}"
        return str(row.get(key, ""))

    rows = doc["rows"]
    cells = [[title for title, _ in COLUMNS]] + [[cell(r, key) for _, key in COLUMNS] for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(COLUMNS))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(line, widths, strict=True)) for line in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    head = (f"soak: {doc['integrations']} integrations ({doc['checks']} checks) every {doc['interval_s']:g} s, "
            f"{doc['minutes']:g} min, a row every {doc['sample_s']:g} s, first {doc['warmup_rows']} rows warm-up")
    return "\n".join([head, *lines])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--integrations", "-n", type=int, default=1000, help="N integrations (default 1000)")
    p.add_argument("--minutes", type=float, default=30.0, help="how long (default 30)")
    p.add_argument("--interval", type=float, default=60.0, help="every check's interval in seconds (default 60)")
    p.add_argument("--sample", type=float, default=60.0, help="seconds per row (default 60)")
    p.add_argument("--latency-ms", type=int, default=50, help="injected latency per round trip (default 50)")
    p.add_argument("--json", type=Path, default=None, help="also write the rows here")
    p.add_argument("--workdir", type=Path, default=None, help="keep the sandbox, config, log and database here")
    args = p.parse_args(argv)
    doc = run(args.integrations, args.minutes, interval_s=args.interval, sample_s=args.sample,
              latency_ms=args.latency_ms, workdir=args.workdir)
    print(table(doc), flush=True)
    if args.json:
        args.json.write_text(json.dumps(doc, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
