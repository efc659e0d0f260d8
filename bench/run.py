"""`python -m bench [--integrations N] [--quick]`: cycle against the round-trip ideal, the cron baseline, CPU per
check, token reuse and peak RSS (issue 8, figures 1-3). The sandbox runs in its own process.

`python -m bench --scale N [--workers 1,2] [--cycles K]`: queue mode on PostgreSQL, a leader and worker processes
(issue 20; ``bench.scale``)."""

from __future__ import annotations

import argparse
import asyncio
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

from bench import phases, report, workload
from bench.cycle import CycleDriver, Meter, cpu_ms
from bench.ideal import ideal_s
from bench.instrument import GcPauses, IdpCounter, full_collection_ms, instrumented, no_jitter
from bench.sandbox_proc import SandboxProcess
from bench.stage import staged
from mailwarden.monitor import freeze_heap, preload_checks
from mailwarden.monitor.runtime import open_runtime
from mailwarden.monitor.scheduler import preload as preload_jobs

DEFAULT_JSON = Path(__file__).with_name("results.json")


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    p.add_argument("--integrations", "-n", type=int, default=None,
                   help="N integrations (default 1000; 100 with --quick)")
    p.add_argument("--quick", action="store_true", help="a smoke run: 100 integrations, baseline on 10")
    p.add_argument("--latency-ms", type=int, default=50, help="injected latency per round trip (default 50)")
    p.add_argument("--baseline", type=int, default=None, help="integrations in the cron baseline (default 50)")
    p.add_argument("--per-kind", type=int, default=150, help="checks per kind-homogeneous CPU phase (default 150)")
    p.add_argument("--kind-rounds", type=int, default=3,
                   help="rounds of the per-kind phases; each kind's median is judged (default 3)")
    p.add_argument("--json", type=Path, default=DEFAULT_JSON, help=f"where to write the results ({DEFAULT_JSON})")
    p.add_argument("--history", action="store_true",
                   help="also the render and storage figures (4, 5) on synthetic history (slow: minutes)")
    p.add_argument("--history-only", action="store_true", help="only figures 4 and 5 (no sandbox, no cycles)")
    p.add_argument("--workdir", type=Path, default=None, help="keep the sandbox, config and database here")
    q = p.add_argument_group("queue mode (--scale)")
    q.add_argument("--scale", type=int, default=None, metavar="N",
                   help="queue mode: N integrations on PostgreSQL (127.0.0.1:5432), a leader and worker processes")
    q.add_argument("--workers", default="1,2", help="worker counts to measure, comma-separated (default 1,2)")
    q.add_argument("--cycles", type=int, default=2, help="cycles per worker count; the first warms (default 2)")
    q.add_argument("--concurrency", type=int, default=50, help="checks at once per worker process (default 50)")
    q.add_argument("--enqueue-jobs", type=int, default=3400, help="jobs of the enqueue-cost figure (default 3400)")
    q.add_argument("--enqueue-batch", type=int, default=100,
                   help="jobs per enqueue statement (default 100: the leader's Feed gathers 150 ms of due checks)")
    args = p.parse_args(argv)
    if args.scale is not None:
        if args.json == DEFAULT_JSON:
            args.json = DEFAULT_JSON.with_name("results-scale.json")
        return args
    args.integrations = args.integrations or (100 if args.quick else 1000)
    args.baseline = min(args.baseline or (10 if args.quick else 50), args.integrations)
    return args


def say(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


async def measure(cfg, sandbox: SandboxProcess, args: argparse.Namespace) -> dict:
    counter = IdpCounter()
    with instrumented(counter), no_jitter():
        runtime = open_runtime(cfg)
        try:
            meter = Meter(sandbox, counter)
            driver = CycleDriver(runtime, meter)
            preload_checks(cfg)  # as `mailwarden serve` does before it freezes its heap
            preload_jobs()
            say(f"heap frozen as `mailwarden serve` freezes it at start: {freeze_heap():,} objects")
            cycles = []
            with GcPauses() as pauses:
                for i in range(3):
                    cycles.append(await driver.cycle(first=i == 0))
                    pauses.mark()
                    c = cycles[-1]
                    say(f"cycle {i + 1}: {c.checks} checks in {c.wall_s:.2f} s, CPU {c.cpu_s:.2f} s, "
                        f"sandbox CPU {c.sandbox_cpu_s:.2f} s, statuses {c.statuses}, token POSTs {c.idp_token}")
                    for problem in c.problems:
                        say(f"  not ok: {problem}")
                    if i == 0:  # as serve does once every check has run (monitor.freeze_later)
                        with pauses.ignoring():  # its one collection is timed apart: once per process
                            started = time.perf_counter()
                            frozen = freeze_heap()
                            warm_ms = round((time.perf_counter() - started) * 1000, 1)
                        say(f"heap frozen again, warm: {frozen:,} objects, its collection {warm_ms} ms")
            gc_figures = pauses.summary()
            gc_figures["warm_freeze_ms"] = warm_ms
            gc_figures["full_after_cycles_ms"], gc_figures["objects_after_cycles"] = full_collection_ms()
            say(f"garbage collection during cycles 1-3: {gc_figures}")
            driver.shutdown()
            rss_cycles = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            kinds = sorted({k for i in cfg.integrations for k in i.checks})
            by_kind = await phases.by_kind(runtime, meter, kinds, args.per_kind, args.kind_rounds)
            for kind, rounds in by_kind.items():
                m = rounds[0]
                say(f"{kind}: {m.checks} checks a round, ms CPU each by round "
                    f"{', '.join(f'{cpu_ms(r):.2f}' for r in rounds)}, first round's wall {m.wall_s:.2f} s, "
                    f"token POSTs {m.idp_token}, discovery GETs {m.idp_discovery}")
            cached = phases.cached_tokens(runtime, meter, limit=1000)
            say(f"tokens from cache: {cached}")
            base, base_n = await phases.baseline(runtime, meter, args.baseline)
            say(f"cron baseline: {base_n} integrations, {base.checks} checks in {base.wall_s:.2f} s "
                f"(statuses {base.statuses})")
        finally:
            runtime.close()
    return {"cycles": cycles, "kinds": by_kind, "cached": cached, "base": base, "base_n": base_n,
            "rss_cycles_mb": rss_cycles, "gc": gc_figures}


def history_figures(args: argparse.Namespace) -> dict:
    from bench import history

    base = args.workdir.resolve() if args.workdir else Path(tempfile.mkdtemp(prefix="mailwarden-history-"))
    try:
        out = history.render(args.integrations, base / "render", say, reuse=args.workdir is not None)
        out.update(history.storage(args.integrations, base / "storage", say))
    finally:
        if args.workdir is None:
            shutil.rmtree(base, ignore_errors=True)
    return out


def main(argv: list[str] | None = None) -> int:
    from mailwarden.monitor import tune_malloc

    tune_malloc()  # the monitor is measured as `mailwarden serve` runs it
    args = parse(argv)
    if args.scale is not None:
        from bench import scale

        return scale.main(args)
    if args.history_only:
        doc = {"integrations": args.integrations, "machine": report.machine(), "history": history_figures(args),
               "targets": {k: f"{op} {t:g}" for k, (op, t) in report.TARGETS.items()}}
        doc["verdicts"] = {k: report.verdict(k, doc["history"].get(k)) for k in report.TARGETS
                           if k in doc["history"]}
        print(report.render_history(doc))
        path = args.json.with_name("results-history.json") if args.json == DEFAULT_JSON else args.json
        report.write(doc, path)
        print(f"\nwritten: {path}")
        return 0
    speed_start = report.speed_reference()
    work = workload.build(args.integrations)
    with staged(work, args.workdir, "mailwarden-bench-", say) as stage:
        cfg, seed = stage.config, stage.seed
        stage.sandbox.set_latency(args.latency_ms)
        out = asyncio.run(measure(cfg, stage.sandbox, args))
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    doc = report.figures(args.integrations, args.latency_ms, ideal_s(cfg, args.latency_ms), out["cycles"],
                         out["kinds"], out["cached"], out["base"], out["base_n"], rss_mb, seed)
    doc["figures"]["peak_rss_mb_after_cycles"] = round(out["rss_cycles_mb"], 1)
    doc["figures"]["gc"] = out["gc"]
    longest = doc["figures"]["gc_longest_pause_ms"] = max(out["gc"]["longest_ms"], out["gc"]["full_after_cycles_ms"])
    doc["verdicts"]["gc_longest_pause_ms"] = report.verdict("gc_longest_pause_ms", longest)
    doc["speed"] = {"start": speed_start, "end": report.speed_reference()}
    if args.history:
        doc["history"] = history_figures(args)
        doc["verdicts"].update({k: report.verdict(k, doc["history"].get(k)) for k in report.TARGETS
                                if k in doc["history"]})
    print(report.render(doc))
    report.write(doc, args.json)
    print(f"\nwritten: {args.json}")
    return 0
