"""Figures against the targets of issue 8: printed with PASS/FAIL and written as JSON. Targets are printed,
never asserted: a benchmark informs, it does not gate."""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path
from typing import Any

from bench.cycle import MAILBOX_KINDS, Measured, cpu_ms, median_cpu_ms

TARGETS = {
    "cycle_vs_ideal": ("<=", 1.5),
    "speedup_vs_cron": (">=", 25.0),
    "cpu_ms_per_mailbox_check": ("<=", 3.0),
    "cpu_ms_per_cached_token": ("<=", 0.5),
    "mailbox_token_requests_cycles_2_3": ("==", 0),
    "peak_rss_mb": ("<=", 250.0),
    # a collection stops every thread and the event loop: one shorter than a round trip (the bench's 50 ms) delays
    # the checks in flight by less than one reply, it does not stall the cycle
    "gc_longest_pause_ms": ("<=", 50.0),
    "overview_ms": ("<=", 300.0),
    "report_s": ("<=", 1.0),
    "storage_steady_mb_per_day": ("<=", 50.0),
    "alert_idle_eval_ms": ("<=", 5.0),
}


def verdict(name: str, value: float | None) -> str:
    if name not in TARGETS or value is None:
        return "info"
    op, target = TARGETS[name]
    ok = {"<=": value <= target, ">=": value >= target, "==": value == target}[op]
    return "PASS" if ok else "FAIL"


def machine() -> dict[str, Any]:
    mem_kb = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    except OSError:
        pass
    cpu = ""
    try:
        cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                    if ln.startswith("model name")), "")
    except OSError:
        pass
    return {"nproc": os.cpu_count(), "memory_gb": round(mem_kb / 1024 / 1024, 1), "cpu": cpu,
            "python": platform.python_version(), "platform": platform.platform()}


def speed_reference() -> dict[str, float]:
    """CPU milliseconds of two fixed pieces of work, best of three: loading certifi's CA bundle into a new SSL
    context (OpenSSL, as in a check's TLS) and a pure-Python loop (the interpreter, as in the runner). This
    2-core VM shares its host: the same instructions measured 17.4 ms at one hour and 22-27 ms two hours later
    (session 3), and every CPU figure moves with them. Taken at the start and the end of a run, they say whether
    the run's figures compare with another's."""
    import ssl

    import certifi

    def best(fn) -> float:
        times = []
        for _ in range(3):
            t = time.process_time()
            fn()
            times.append((time.process_time() - t) * 1000)
        return round(min(times), 2)

    def python_loop() -> None:
        total = 0
        for i in range(300_000):
            total += i * i % 7
    return {"tls_context_ms": best(lambda: ssl.create_default_context(cafile=certifi.where())),
            "python_loop_ms": best(python_loop)}


def figures(n: int, latency_ms: float, ideal: dict, cycles: list[Measured], kinds: dict[str, list[Measured]],
            cached: dict, base: Measured, base_count: int, rss_mb: float, seed: dict) -> dict[str, Any]:
    first = cycles[0]
    later = cycles[1:]
    mailbox_tokens = {i + 2: {k: v for k, v in c.idp_token.items() if k in MAILBOX_KINDS} for i, c in enumerate(later)}
    token_check_requests = {i + 2: c.idp_token.get("token", 0) for i, c in enumerate(later)}
    base_scaled = base.wall_s * n / base_count if base_count else None
    # each kind's median over its rounds (bench.phases.by_kind), the rounds beside it
    cpu_by_kind = {k: round(median_cpu_ms(r), 3) for k, r in kinds.items() if r and r[0].checks}
    cpu_rounds = {k: [round(cpu_ms(m), 3) for m in r] for k, r in kinds.items() if r and r[0].checks}
    figs: dict[str, Any] = {
        "cycle_wall_s": round(first.wall_s, 3),
        "cycle_ideal_s": round(ideal["ideal_s"], 3),
        "cycle_vs_ideal": round(first.wall_s / ideal["ideal_s"], 3) if ideal["ideal_s"] else None,
        "checks_per_s": round(first.checks / first.wall_s, 1) if first.wall_s else None,
        "steady_cycle_wall_s": [round(c.wall_s, 3) for c in later],
        "steady_vs_ideal": [round(c.wall_s / ideal["ideal_s"], 3) for c in later],
        "cpu_ms_per_check_cycle": round(first.cpu_s * 1000 / max(first.checks, 1), 3),
        "cpu_ms_per_check_steady": [round(c.cpu_s * 1000 / max(c.checks, 1), 3) for c in later],
        "cpu_ms_per_check_by_kind": cpu_by_kind,
        "cpu_ms_per_check_by_kind_rounds": cpu_rounds,
        "cpu_ms_per_mailbox_check": max((v for k, v in cpu_by_kind.items() if k in MAILBOX_KINDS), default=None),
        "cpu_ms_per_cached_token": max((v["cpu_ms_per_fetch"] for v in cached.values()), default=None),
        "cached_token_by_flow": cached,
        "baseline_integrations": base_count,
        "baseline_wall_s": round(base.wall_s, 3),
        "baseline_scaled_s": round(base_scaled, 1) if base_scaled else None,
        # judged only against a baseline whose checks all passed: a failing check is cheaper than a real one (a
        # token error blocks its mailbox checks), so a baseline with failures is too fast
        "speedup_vs_cron": (round(base_scaled / first.wall_s, 1)
                            if base_scaled and first.wall_s and set(base.statuses) == {"ok"} else None),
        "baseline_statuses": dict(base.statuses),
        "baseline_idp_requests": {"token": sum(base.idp_token.values()), "discovery": sum(base.idp_discovery.values())},
        "mailbox_token_requests_cycles_2_3": sum(sum(v.values()) for v in mailbox_tokens.values()),
        "mailbox_token_requests_by_cycle": mailbox_tokens,
        "token_check_requests_by_cycle": token_check_requests,
        "sandbox_token_requests_by_cycle": [c.sandbox_token_total for c in cycles],
        "sandbox_cpu_s_cycle": round(first.sandbox_cpu_s, 3),
        "sandbox_cpu_share_cycle": round(first.sandbox_cpu_s / first.wall_s, 3) if first.wall_s else None,
        "mailwarden_cpu_share_cycle": round(first.cpu_s / first.wall_s, 3) if first.wall_s else None,
        "peak_rss_mb": round(rss_mb, 1),
    }
    return {
        "integrations": n, "checks_per_cycle": first.checks, "latency_ms": latency_ms, "machine": machine(),
        "seed": seed, "ideal": ideal, "figures": figs,
        "verdicts": {k: verdict(k, figs.get(k)) for k in TARGETS},
        "targets": {k: f"{op} {t:g}" for k, (op, t) in TARGETS.items()},
        "cycles": [c.as_json() for c in cycles], "by_kind": {k: [m.as_json() for m in r] for k, r in kinds.items()},
        "baseline": base.as_json(),
    }


def render(doc: dict) -> str:
    f, v, t = doc["figures"], doc["verdicts"], doc["targets"]
    m = doc["machine"]
    lines = [f"mailwarden bench: {doc['integrations']} integrations, {doc['checks_per_cycle']} checks per cycle, "
             f"{doc['latency_ms']:g} ms per round trip; {m['nproc']} cores, {m['memory_gb']} GB",
             *([f"machine speed reference (CPU ms, lower is faster; start -> end): "
                f"TLS context {doc['speed']['start']['tls_context_ms']} -> {doc['speed']['end']['tls_context_ms']}, "
                f"Python loop {doc['speed']['start']['python_loop_ms']} -> {doc['speed']['end']['python_loop_ms']}"]
               if doc.get("speed") else []),
             "", f"{'figure':44} {'value':>14}  {'target':>9}  verdict"]

    def row(label: str, key: str | None, value: Any, unit: str = "") -> None:
        shown = f"{value}{unit}" if value is not None else "-"
        lines.append(f"{label:44} {shown:>14}  {t.get(key, ''):>9}  {v.get(key, 'info') if key else 'info'}")

    row("cycle wall time", None, f["cycle_wall_s"], " s")
    row("round-trip ideal", None, f["cycle_ideal_s"], " s")
    row("cycle / ideal", "cycle_vs_ideal", f["cycle_vs_ideal"])
    row("steady cycles (2, 3) / ideal", None, ", ".join(map(str, f["steady_vs_ideal"])))
    row("checks per second", None, f["checks_per_s"])
    row("cron baseline, scaled to N", None, f["baseline_scaled_s"], " s")
    idp = f.get("baseline_idp_requests") or {}
    row("  its token POSTs, discovery GETs", None, f"{idp.get('token', '-')}, {idp.get('discovery', '-')}")
    statuses = f.get("baseline_statuses") or {}
    row("  its checks' statuses", None, ", ".join(f"{k} {n}" for k, n in sorted(statuses.items())) or "-")
    if f["speedup_vs_cron"] is None and set(statuses) - {"ok"}:
        lines.append(f"{'speed-up over the cron baseline':44} {'not judged':>14}  (its checks did not all pass)")
    else:
        row("speed-up over the cron baseline", "speedup_vs_cron", f["speedup_vs_cron"], "x")
    row("mailwarden CPU per check (cycle 1)", None, f["cpu_ms_per_check_cycle"], " ms")
    rounds = f.get("cpu_ms_per_check_by_kind_rounds") or {}
    if rounds:
        most = max(map(len, rounds.values()))
        lines.append(f"  CPU per check by kind: the median of {most} rounds, each round after it")
    for kind, ms in f["cpu_ms_per_check_by_kind"].items():
        key = "cpu_ms_per_mailbox_check" if kind in MAILBOX_KINDS else None
        each = f"  ({', '.join(map(str, rounds[kind]))})" if len(rounds.get(kind, ())) > 1 else ""
        lines.append(f"{'  CPU per ' + kind + ' check':44} {str(ms) + ' ms':>14}  "
                     f"{t[key] if key else '':>9}  {verdict(key, ms) if key else 'info'}{each}")
    for flow, c in f["cached_token_by_flow"].items():
        ms = c["cpu_ms_per_fetch"]
        lines.append(f"{'  CPU per token from cache (' + flow + ')':44} {str(ms) + ' ms':>14}  "
                     f"{t['cpu_ms_per_cached_token']:>9}  {verdict('cpu_ms_per_cached_token', ms)}")
    row("token requests by mailbox checks, cycles 2+3", "mailbox_token_requests_cycles_2_3",
        f["mailbox_token_requests_cycles_2_3"])
    row("  token check's own requests, cycles 2, 3", None,
        ", ".join(str(x) for x in f["token_check_requests_by_cycle"].values()))
    row("sandbox CPU during cycle 1", None, f["sandbox_cpu_s_cycle"], " s")
    row("  sandbox / mailwarden CPU share of wall", None,
        f"{f['sandbox_cpu_share_cycle']} / {f['mailwarden_cpu_share_cycle']}")
    row("peak RSS (mailwarden process)", "peak_rss_mb", f["peak_rss_mb"], " MB")
    if f.get("gc"):
        g = f["gc"]
        row("garbage collections in cycles 1-3 (gen 0/1/2)", None, "/".join(str(n) for n in g["collections"].values()))
        row("  longest pause, longest full collection", None, f"{g['longest_ms']}, {g['longest_full_ms']} ms")
        for n, c in enumerate(g.get("by_cycle", []), 1):  # cycle 1 runs before the warm freeze (as serve's first)
            row(f"    cycle {n}: full collections, longest pause", None, f"{c['full']}, {c['longest_ms']} ms")
        row(f"  a full collection after them ({g['objects_after_cycles']:,} objects)", None,
            g["full_after_cycles_ms"], " ms")
        if "warm_freeze_ms" in g:
            row("  the warm freeze's own collection (once)", None, g["warm_freeze_ms"], " ms")
        row("longest garbage-collection pause", "gc_longest_pause_ms", f["gc_longest_pause_ms"], " ms")
    return "\n".join(lines + history_lines(doc))


def render_history(doc: dict) -> str:
    m = doc["machine"]
    return "\n".join([f"mailwarden bench, history figures only; {m['nproc']} cores, {m['memory_gb']} GB",
                      *history_lines(doc)])


def history_lines(doc: dict) -> list[str]:
    h, t = doc.get("history"), doc["targets"]
    lines: list[str] = []
    if not h:
        return ["render, alert and storage figures: not measured in this run (`python -m bench --history`)"]
    lines += ["", f"history: {h.get('render_integrations')} integrations x 5 checks, 90 days (render); "
              f"{h.get('storage_integrations')} x 5 checks every 5 min (storage)"]
    hv = {k: verdict(k, h.get(k)) for k in TARGETS}

    def hrow(label: str, key: str, unit: str = "") -> None:
        value = h.get(key)
        shown = f"{value}{unit}" if value is not None else "-"
        lines.append(f"{label:44} {shown:>14}  {t.get(key, ''):>9}  {hv.get(key, 'info')}")

    hrow("overview page (GET /)", "overview_ms", " ms")
    hrow("  first GET after start (caches cold)", "overview_first_ms", " ms")
    hrow("integration page", "integration_page_ms", " ms")
    hrow("static report", "report_s", " s")
    hrow("  report size", "report_mb", " MB")
    hrow("alert evaluation, idle (median)", "alert_idle_eval_ms", " ms")
    hrow("  write lock held per idle evaluation", "alert_idle_lock_ms", " ms")
    changes = h.get("alert_changes", "N")
    hrow(f"alert evaluation, {changes} checks failing", "alert_open_eval_ms", " ms")
    hrow("  write lock held", "alert_open_lock_ms", " ms")
    hrow(f"alert evaluation, {changes} checks recovering", "alert_resolve_eval_ms", " ms")
    hrow("  write lock held", "alert_resolve_lock_ms", " ms")
    hrow("storage growth, day 1 (caps filling)", "storage_day1_mb", " MB")
    hrow("storage growth, steady-state day", "storage_steady_mb_per_day", " MB")
    hrow("rollup_history per run (storage sim, mean)", "rollup_ms_mean", " ms")
    hrow("prune_history per run (storage sim, mean)", "prune_s_mean", " s")
    return lines


def write(doc: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2, default=str) + "\n", encoding="utf-8")
