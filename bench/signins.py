"""`python -m bench.signins [--integrations N]`: the cost of a sign-in poll (issue 16): requests per poll cycle and
mailwarden's CPU seconds per poll, for N integrations (default 1,000 in 100 tenants, bench.workload's mix) against
the real sandbox in its own process (so mailwarden's CPU is measured alone), beside the machine's speed reference.

Each tenant's monitor app may read the sign-in logs (AuditLog.Read.All, Directory.Read.All). The logs are seeded
through the sandbox's control API with ``--per-target`` sign-ins per (app, event type) after a first, unmeasured
poll (mailwarden reads nothing from before it recorded its own token requests, which includes the monitor apps'
first tokens): measured poll 1 reads and stores them, the following ones re-read them in the 45-minute overlap.
Target (issue 16): at most a few sign-in requests per tenant per poll interval, per event type, not per
integration: one request per (tenant, event type, app) and page is what is counted here.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path

from bench import report, workload
from bench.sandbox_proc import SandboxProcess
from mailwarden.monitor import config as config_mod
from mailwarden.monitor.runtime import open_runtime
from mailwarden.monitor.signins import EVENT_TYPES, targets_of

READER = ["AuditLog.Read.All", "Directory.Read.All"]


def say(msg: str) -> None:
    print(f"[bench.signins {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.signins", description=__doc__)
    p.add_argument("--integrations", "-n", type=int, default=1000, help="N integrations (10 per tenant)")
    p.add_argument("--per-target", type=int, default=6, help="sign-ins seeded per (app, event type) (default 6)")
    p.add_argument("--polls", type=int, default=3, help="polls measured after the seeding (default 3)")
    p.add_argument("--workdir", type=Path, default=None, help="keep the sandbox, config and database here")
    return p.parse_args(argv)


def monitor_may_read_logs(work: workload.Workload) -> None:
    """Give every tenant's monitor app the sign-in log permissions (the workload's has Application.Read.All)."""
    monitors = {cid for name, cid in work.client_ids.items() if name.endswith("-monitor")}
    for tenant in work.scenario["tenants"]:
        for app in tenant["apps"]:
            if app["app_id"] in monitors:
                roles = app.setdefault("application_permissions", {}).setdefault("graph", [])
                roles += [r for r in READER if r not in roles]


def seed(sandbox: SandboxProcess, cfg: config_mod.Config, per_target: int) -> int:
    """``per_target`` sign-ins of each polled (app, event type), now; returns how many."""
    accounts = {(cfg.apps[i.app].client_id, et): i.account for i in cfg.integrations for et in EVENT_TYPES[i.flow]}
    made = 0
    for targets in targets_of(cfg).values():
        for t in targets:
            for _ in range(per_target):
                sandbox.control.record_signin(t.tenant_id, t.app_id, upn=accounts.get((t.app_id, t.event_type)),
                                              event_type=t.event_type)
                made += 1
    return made


async def polls(cfg: config_mod.Config, n: int, before: Callable[[], int]) -> tuple[list[dict], int]:
    """One unmeasured poll (mailwarden reads no log from before it recorded its own requests), ``before()`` (the
    seeding), then ``n`` measured polls; returns their figures and what ``before`` returned."""
    rt = open_runtime(cfg)
    out = []
    try:
        cpu = time.process_time()
        cold = await rt.signins.poll()  # the monitor apps' tokens (one token request per tenant), empty logs
        say(f"poll 0 (cold: monitor tokens, nothing to read): {cold.requests} requests, "
            f"CPU {time.process_time() - cpu:.3f} s")
        seeded = await asyncio.to_thread(before)
        for i in range(n):
            cpu, wall = time.process_time(), time.perf_counter()
            got = await rt.signins.poll()
            row = {"poll": i + 1, "requests": got.requests, "read": got.read, "stored": got.stored,
                   "audit_requests": got.audit_requests, "audits_read": got.audits_read,
                   "cpu_s": round(time.process_time() - cpu, 3), "wall_s": round(time.perf_counter() - wall, 3),
                   "states": sorted(set(got.states.values()))}
            say(f"poll {i + 1}: {row}")
            out.append(row)
    finally:
        rt.close()
    return out, seeded


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    speed_start = report.speed_reference()
    work = workload.build(args.integrations)
    monitor_may_read_logs(work)
    workdir, tmp = workload.prepare_workdir(args.workdir, "mailwarden-bench-signins-")
    sandbox = SandboxProcess(workload.write_scenario(work, workdir), workdir / "sandbox")
    try:
        cfg = config_mod.load(workload.write(work, workdir, sandbox.endpoints))
        plan = targets_of(cfg)
        say(f"{len(cfg.integrations)} integrations in {len(cfg.tenants)} tenants: {sum(map(len, plan.values()))} "
            f"(tenant, event type, app) targets")
        measured, seeded = asyncio.run(polls(cfg, args.polls, lambda: seed(sandbox, cfg, args.per_target)))
        say(f"{seeded} sign-ins seeded")
    finally:
        sandbox.stop()
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    tenants = len(plan)
    steady = measured[1:] or measured
    doc = {
        "integrations": len(cfg.integrations), "tenants": tenants,
        "targets_per_tenant": {t: len(v) for t, v in list(plan.items())[:1]},
        "event_types_per_tenant": len({t.event_type for v in plan.values() for t in v}),
        "seeded_signins": seeded, "polls": measured,
        "requests_per_poll": measured[-1]["requests"],
        "requests_per_tenant_per_poll": round(measured[-1]["requests"] / max(tenants, 1), 2),
        # the directory audit log (monitor.audits): one read per tenant, counted apart from the sign-in log's
        "audit_requests_per_poll": measured[-1]["audit_requests"],
        "cpu_s_per_poll_first": measured[0]["cpu_s"],
        "cpu_s_per_poll_steady": round(sum(p["cpu_s"] for p in steady) / len(steady), 3),
        "graph": "the sandbox (its own process), Graph beta auditLogs/signIns over HTTPS",
        "machine": report.machine(),
        "speed": {"start": speed_start, "end": report.speed_reference()},
    }
    print(json.dumps(doc, indent=2))
    print(f"\n{doc['integrations']} integrations in {tenants} tenants: {doc['requests_per_poll']} sign-in requests "
          f"per poll ({doc['requests_per_tenant_per_poll']} per tenant: one per event type and app) and "
          f"{doc['audit_requests_per_poll']} directory audit requests, CPU "
          f"{doc['cpu_s_per_poll_first']} s (poll storing {seeded} new sign-ins) / {doc['cpu_s_per_poll_steady']} s "
          f"(steady: re-reading them in the overlap) per "
          f"poll; machine speed reference (CPU ms, lower is faster; start -> end): TLS context "
          f"{doc['speed']['start']['tls_context_ms']} -> {doc['speed']['end']['tls_context_ms']}, Python loop "
          f"{doc['speed']['start']['python_loop_ms']} -> {doc['speed']['end']['python_loop_ms']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
