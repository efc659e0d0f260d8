"""`python -m bench.discover [--apps N]`: the cost of `mailwarden discover` (issue 17) on a tenant of N generated
principals (default 10,000; the sandbox's `extra_apps` mix: Graph and Exchange application permissions, admin- and
user-consented delegated grants, apps without mail, certificate-only, expired secrets, federated credentials,
managed identities, foreign multitenant apps) against the real sandbox in its own process (so mailwarden's CPU is
measured alone), beside the machine's speed reference.

Counted: Graph requests (by mailwarden, and as the sandbox saw them, by listing), wall and CPU seconds per run.
The first run includes the monitor app's token and TLS set-up; the second reuses nothing but the process. The
target (issue 17): requests grow with the pages of the tenant-wide lists (999 objects each) and with the
mail-capable app registrations (owners, federated credentials: two each), never with all apps.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

import yaml

from bench import report, workload
from bench.sandbox_proc import SandboxProcess
from mailwarden.monitor import config as config_mod
from mailwarden.monitor.discover import discover
from mailwarden.monitor.tokens import TokenProvider

READER = ["Application.Read.All", "Directory.Read.All", "User.Read.All", "AuditLog.Read.All"]


def say(msg: str) -> None:
    print(f"[bench.discover {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.discover", description=__doc__)
    p.add_argument("--apps", "-n", type=int, default=10_000, help="generated principals in the tenant (default 10,000)")
    p.add_argument("--users", type=int, default=50, help="users in the tenant (consenting users, owners)")
    p.add_argument("--runs", type=int, default=2, help="discover runs measured (default 2)")
    p.add_argument("--workdir", type=Path, default=None, help="keep the sandbox and config here")
    return p.parse_args(argv)


def scenario(n: int, users: int, tid: str, monitor_id: str, secret: str) -> dict:
    domain = f"bench-{tid[:8]}.onmicrosoft.com"
    return {"tenants": [{
        "id": tid, "domain": domain, "entra_licence": "p1",
        "users": [{"upn": f"user{i:03}@{domain}", "password": f"Pw-{uuid.uuid4().hex[:12]}"} for i in range(users)],
        "apps": [{"app_id": monitor_id, "display_name": "mailwarden monitor", "secrets": [{"value": secret}],
                  "application_permissions": {"graph": READER}}],
        "extra_apps": {"count": n, "seed": 1}}]}


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    speed_start = report.speed_reference()
    workdir, tmp = workload.prepare_workdir(args.workdir, "mailwarden-bench-discover-")
    tid, monitor_id, secret = str(uuid.uuid4()), str(uuid.uuid4()), f"bm8Q~{uuid.uuid4().hex}"
    path = workdir / "scenario.yaml"
    path.write_text(yaml.safe_dump(scenario(args.apps, args.users, tid, monitor_id, secret)))
    started = time.perf_counter()
    sandbox = SandboxProcess(path, workdir / "sandbox")
    say(f"sandbox with {args.apps} generated principals up in {time.perf_counter() - started:.1f} s")
    runs = []
    try:
        (workdir / "monitor.secret").write_text(secret)
        ends = {k: v for k, v in sandbox.endpoints.items() if k in ("authority", "graph", "ca_bundle")}
        (workdir / "mailwarden.yaml").write_text(yaml.safe_dump({
            "cloud": "custom", "endpoints": ends, "defaults": {"timeout": "60s"},
            "tenants": {"bench": {"tenant_id": tid, "monitor_app": "monitor"}},
            "apps": {"monitor": {"tenant": "bench", "client_id": monitor_id, "secret": "file:monitor.secret"}}}))
        cfg = config_mod.load(workdir / "mailwarden.yaml")
        tokens = TokenProvider(cfg, None, None, timeout_s=60)
        for i in range(args.runs):
            sandbox.control.reset_stats()
            cpu, wall, sb_cpu = time.process_time(), time.perf_counter(), sandbox.cpu_s()
            [res] = discover(cfg, tokens, ["bench"])
            row = {"run": i + 1, "status": res.status, "apps_found": len(res.apps), "requests": res.requests,
                   "wall_s": round(time.perf_counter() - wall, 3), "cpu_s": round(time.process_time() - cpu, 3),
                   "sandbox_cpu_s": round(sandbox.cpu_s() - sb_cpu, 3)}
            seen = Counter()
            for key, count in sandbox.stats()["requests"].items():
                method, _, url = key.partition(" ")
                listing = re.sub(r"/[0-9a-f-]{36}", "/{id}", url.split("?")[0])
                seen[listing] += count
            row["sandbox_requests"] = dict(seen.most_common())
            row["per_app_requests"] = sum(v for k, v in seen.items() if k.startswith("/v1.0/applications/{id}/"))
            runs.append(row)
            say(f"run {i + 1}: {json.dumps({k: v for k, v in row.items() if k != 'sandbox_requests'})}")
    finally:
        sandbox.stop()
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    last = runs[-1]
    doc = {"apps_in_tenant": args.apps, "users": args.users, "runs": runs,
           "graph": "the sandbox (its own process), Graph v1.0 directory listings and beta usage report over HTTPS",
           "machine": report.machine(), "speed": {"start": speed_start, "end": report.speed_reference()}}
    print(json.dumps(doc, indent=2))
    print(f"\n{args.apps} principals: {last['apps_found']} can touch mail; discover made {last['requests']} Graph "
          f"requests ({last['per_app_requests']} of them per app: owners and federated credentials of the mail-capable "
          f"app registrations), wall {runs[0]['wall_s']} s (first run, with the token) / {last['wall_s']} s, "
          f"mailwarden CPU {runs[0]['cpu_s']} s / {last['cpu_s']} s, sandbox CPU {last['sandbox_cpu_s']} s; machine "
          f"speed reference (CPU ms, lower is faster; start -> end): TLS context "
          f"{doc['speed']['start']['tls_context_ms']} -> {doc['speed']['end']['tls_context_ms']}, Python loop "
          f"{doc['speed']['start']['python_loop_ms']} -> {doc['speed']['end']['python_loop_ms']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
