"""`python -m bench.overview [-n 1000] [--tenants 100] [--runs 15]`: the overview (GET /) at scale (issue 19, item 2):
N integrations in T tenants, state written straight into a SQLite store (no sandbox, no check run), then the page
fetched through Starlette's TestClient (``web.auth: none``, every middleware) and its time (median of ``--runs``
after one cold GET) and weight (KB of HTML as sent; gzip's size beside it, for information) printed beside the
machine's speed reference. Targets (issue 19): within 300 ms, under 500 KB.

The store is a fleet as it looks on a bad morning, so that every part of a row is drawn: two to five checks per
integration; 3 % failing (a spread of diagnosis codes), 1 % not answering, 1 % blocked, 3 % warning, 1 % paused,
1 % pending, 2 % stale; 24 hours of hourly availability per integration (5 % of hours not fully up); an open
incident per failing integration; credentials of every fifth app expiring within 90 days. Each integration has a
consuming system (one of 12), a mailbox, a signing-in account (delegated), tags, and an app with a display name.

Besides the plain overview (its first page: every integration that needs attention and the first 100 ok and paused
ones, ``pages.PAGE_ROWS``), the page is timed with a search (``q``), a filter, a grouping and with every row
(``?page=all``, the "show all" link), so the figures of those paths are printed too. ``--profile``: cProfile's top
functions of one render.
"""

from __future__ import annotations

import argparse
import cProfile
import gzip
import json
import pstats
import random
import shutil
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from bench import report, workload
from mailwarden.alerts.records import Incident
from mailwarden.monitor import config as config_mod
from mailwarden.monitor.db import open_store
from mailwarden.monitor.db_history import AVAILABILITY_MARK
from mailwarden.monitor.models import CheckState, IntegrationRollup, Meta
from mailwarden.monitor.runtime import integration_rows

TARGET_MS, TARGET_KB = 300.0, 500.0
SYSTEMS = ["House-on-the-Hill helpdesk", "Agiloft contracts", "enaio document server", "Oracle B2C Service",
           "Sinch contact center", "Zendesk", "Freshdesk", "ServiceNow", "Jira Service Management", "TOPdesk",
           "SAP invoice intake", "Xerox DocuShare"]
CHECKS = {"delegated": ["token", "imap", "smtp", "secret_expiry", "pop"],
          "app": ["token", "graph_mail", "ews", "secret_expiry", "smtp"]}
FAIL_CODES = {"token": ["secret_expired", "consent_missing", "refresh_token_revoked", "user_disabled",
                        "conditional_access_blocked", "secret_invalid"],
              "imap": ["auth_failed", "authenticated_not_connected"], "pop": ["auth_failed"],
              "smtp": ["smtp_auth_disabled", "auth_failed"],
              "graph_mail": ["access_policy_denied", "permission_missing"],
              "ews": ["mailbox_not_found", "permission_missing"], "secret_expiry": ["secret_expired"]}


def say(msg: str) -> None:
    print(f"[bench.overview {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.overview", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-n", "--integrations", type=int, default=1000, help="integrations (default 1,000)")
    p.add_argument("--tenants", type=int, default=100, help="tenants they are spread over (default 100)")
    p.add_argument("--runs", type=int, default=15, help="GETs measured per page, after one cold GET (default 15)")
    p.add_argument("--workdir", type=Path, default=None, help="keep the config and the store here")
    p.add_argument("--profile", action="store_true", help="print cProfile's top functions of one GET /")
    p.add_argument("--json", type=Path, default=None, help="also write the figures to this file")
    return p.parse_args(argv)


def write_config(n: int, tenants: int, workdir: Path) -> config_mod.Config:
    rng = random.Random(19)
    doc_tenants, apps, integrations = {}, {}, []
    per = -(-n // tenants)
    for t in range(tenants):
        tid = f"tenant{t:03d}"
        doc_tenants[tid] = {"tenant_id": f"00000000-0000-4000-8000-{t:012d}", "monitor_app": f"{tid}-monitor"}
        for k, key in enumerate(("monitor", "deleg", "app")):
            apps[f"{tid}-{key}"] = {"tenant": tid, "client_id": f"00000000-0000-4000-9{k:03d}-{t:012d}",
                                    "display_name": f"{tid.title()} {key} mail connector",
                                    "secret": "env:BENCH_UNUSED_SECRET"}
    for i in range(n):
        t = min(i // per, tenants - 1)
        tid = f"tenant{t:03d}"
        flow = "delegated" if i % 2 == 0 else "app"
        k = rng.randrange(2, 6)
        item: dict[str, Any] = {
            "name": f"{tid}-{SYSTEMS[i % len(SYSTEMS)].split()[0].lower()}-{i % per:02d}",
            "app": f"{tid}-{'deleg' if flow == 'delegated' else 'app'}", "flow": flow,
            "mailbox": f"box{i % per:02d}@{tid}.example.com", "system": SYSTEMS[i % len(SYSTEMS)],
            "checks": {c: {} for c in CHECKS[flow][:k]}, "tags": [["helpdesk", "dms", "billing", "crm"][i % 4]],
            "owners": [f"owner{i % 7}@{tid}.example.com"]}
        if flow == "delegated":
            item["account"] = f"delegate{i % 3}@{tid}.example.com"
        integrations.append(item)
    doc = {"database": "sqlite:///overview.db", "defaults": {"interval": "5m"}, "web": {"auth": "none"},
           "tenants": doc_tenants, "apps": apps, "integrations": integrations}
    path = workdir / "overview.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return config_mod.load(path)


def build_store(cfg: config_mod.Config, now: datetime) -> tuple[Any, dict[str, int]]:
    """The states, availability, incidents and credentials of the fleet, written with bulk inserts."""
    rng = random.Random(7)
    store = open_store(cfg.database_url())
    store.inventory.sync_integrations(integration_rows(cfg), now - timedelta(days=2))
    states, incidents, counts = [], [], {"fail": 0, "error": 0, "blocked": 0, "warn": 0, "paused": 0, "pending": 0,
                                         "stale": 0}
    for i, integ in enumerate(cfg.integrations):
        roll = rng.random()
        kind = ("fail" if roll < 0.03 else "error" if roll < 0.04 else "blocked" if roll < 0.05 else
                "warn" if roll < 0.08 else "paused" if roll < 0.09 else "pending" if roll < 0.10 else
                "stale" if roll < 0.12 else "ok")
        counts[kind] = counts.get(kind, 0) + 1
        kinds = list(integ.checks)
        seen = now - (timedelta(hours=3) if kind == "stale" else timedelta(seconds=rng.randrange(5, 280)))
        for j, check in enumerate(kinds):
            status, code = "ok", None
            if kind == "fail" and j == (0 if i % 3 == 0 else len(kinds) - 1):
                status, code = "fail", rng.choice(FAIL_CODES[check])
            elif kind == "blocked" and check != "token":
                status, code = "blocked", "blocked_by_token"
            elif kind == "blocked":
                status, code = "fail", "consent_missing"
            elif kind == "error" and j == len(kinds) - 1:
                status, code = "error", rng.choice(["timeout", "dns_error", "connection_refused", "tls_error"])
            elif kind == "warn" and j == len(kinds) - 1:
                status, code = "warn", "throttled" if check != "secret_expiry" else "secret_expiring"
            if kind == "pending":
                states.append({"integration": integ.name, "check": check, "status": "new", "failures": 0,
                               "successes": 0, "since": None, "last_status": None, "last_code": None,
                               "last_checked_at": None, "last_ok_at": None})
                continue
            since = now - timedelta(minutes=rng.randrange(10, 6000)) if status != "ok" else now - timedelta(days=9)
            states.append({"integration": integ.name, "check": check, "status": status,
                           "failures": 3 * (status != "ok"), "successes": 10 * (status == "ok"), "since": since,
                           "last_status": status, "last_code": code, "last_checked_at": seen,
                           "last_ok_at": seen if status == "ok" else since})
            if status == "fail":
                incidents.append({"key": f"{integ.name}:{code}", "kind": "single", "code": code,
                                  "tenant": integ.tenant, "status": "open", "opened_at": since,
                                  "members": [{"integration": integ.name, "check": check}],
                                  "affected": [integ.name]})
    top = now.replace(minute=0, second=0, microsecond=0)
    hours = [top - timedelta(hours=h) for h in range(25, 0, -1)]
    avail = [{"integration": integ.name, "hour": h, "up_ms": up, "down_ms": 3_600_000 - up}
             for integ in cfg.integrations for h in hours
             for up in [3_600_000 if rng.random() > 0.05 else rng.randrange(0, 3_600_000)]]
    with store.engine.begin() as conn:
        conn.execute(CheckState.__table__.insert(), states)
        if incidents:
            conn.execute(Incident.__table__.insert(), incidents)
        conn.execute(IntegrationRollup.__table__.insert(), avail)
        conn.execute(Meta.__table__.insert(), [{"key": AVAILABILITY_MARK,
                                                "value": (top - timedelta(hours=1)).isoformat()}])
    for a, (name, app) in enumerate(sorted(cfg.apps.items())):
        if a % 5:
            continue
        store.inventory.upsert_credentials(
            tenant=app.tenant, app=name, client_id=app.client_id, now=now, source="graph",
            creds=[{"kind": "client_secret", "key_id": f"{a:08d}-0000-4000-8000-000000000000",
                    "display_name": f"{name} secret", "hint": "abc",
                    "expires_at": now + timedelta(days=rng.randrange(-5, 90))}])
    counts.update(states=len(states), incidents=len(incidents), availability_rows=len(avail))
    return store, counts


def measure(client: Any, url: str, runs: int) -> dict[str, Any]:
    t = time.perf_counter()
    first = client.get(url)
    cold_ms = (time.perf_counter() - t) * 1000
    assert first.status_code == 200, (url, first.status_code, first.text[:300])
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        page = client.get(url)
        times.append((time.perf_counter() - t) * 1000)
    body = page.content
    return {"url": url, "median_ms": round(statistics.median(times), 1), "min_ms": round(min(times), 1),
            "max_ms": round(max(times), 1), "first_ms": round(cold_ms, 1), "kb": round(len(body) / 1024, 1),
            "gzip_kb": round(len(gzip.compress(body, 6)) / 1024, 1), "rows": body.count(b'<tr class="row ')}


def profile(app: Any) -> None:
    """cProfile of what GET / does in its worker thread (TestClient's profile shows only the waiting): the
    context read from the store and the template rendered, as the route does, on this thread."""
    from mailwarden.monitor.web.pages import overview_context, page_context

    state = app.state.web
    template = state.env.get_template("overview.html")

    def once() -> str:
        now = datetime.now(UTC)
        ctx = page_context(None, state, now, **overview_context(state, now))
        return template.render(**(ctx | {"static": False}))

    once()
    prof = cProfile.Profile()
    prof.enable()
    once()
    prof.disable()
    pstats.Stats(prof, stream=sys.stderr).sort_stats("tottime").print_stats(25)


def main(argv: list[str] | None = None) -> int:
    from starlette.testclient import TestClient

    from mailwarden.monitor.web.app import create_app
    from mailwarden.monitor.web.auth import Access

    args = parse(argv)
    speed_start = report.speed_reference()
    workdir, tmp = workload.prepare_workdir(args.workdir, "mailwarden-bench-overview-")
    for stale in ("overview.db", "overview.db-wal", "overview.db-shm"):
        (workdir / stale).unlink(missing_ok=True)
    try:
        cfg = write_config(args.integrations, args.tenants, workdir)
        now = datetime.now(UTC)
        t = time.perf_counter()
        store, built = build_store(cfg, now)
        say(f"store of {args.integrations} integrations in {args.tenants} tenants built in "
            f"{time.perf_counter() - t:.1f} s: {built}")
        some = cfg.integrations[len(cfg.integrations) // 2]
        urls = {"overview": "/", "search": f"/?q={some.mailbox.split('@')[1]}",
                "filtered": f"/?system={SYSTEMS[5]}&status=problem", "grouped": "/?group=tenant",
                "grouped-system": "/?group=system&status=problem", "all-rows": "/?page=all"}
        figures = {}
        try:
            app = create_app(cfg, store, access=Access(mode="none"))
            with TestClient(app, base_url="http://127.0.0.1:8080") as client:
                for key, url in urls.items():
                    figures[key] = measure(client, url, args.runs)
                    say(f"{key}: {json.dumps(figures[key])}")
                if args.profile:
                    profile(app)
        finally:
            store.close()
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    speed_end = report.speed_reference()
    main_fig = figures["overview"]
    doc = {"integrations": args.integrations, "tenants": args.tenants, "runs": args.runs, "store": built,
           "pages": figures, "targets": {"median_ms": TARGET_MS, "kb": TARGET_KB},
           "verdict": {"time": "PASS" if main_fig["median_ms"] <= TARGET_MS else "FAIL",
                       "weight": "PASS" if main_fig["kb"] < TARGET_KB else "FAIL"},
           "machine": report.machine(), "speed": {"start": speed_start, "end": speed_end}}
    print(json.dumps(doc, indent=2))
    if args.json:
        args.json.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    print(f"\nGET / with {args.integrations} integrations in {args.tenants} tenants: median {main_fig['median_ms']} ms "
          f"of {args.runs} (first {main_fig['first_ms']} ms; target <= {TARGET_MS:.0f} ms: {doc['verdict']['time']}), "
          f"{main_fig['kb']} KB (gzip {main_fig['gzip_kb']} KB; target < {TARGET_KB:.0f} KB: "
          f"{doc['verdict']['weight']}); "
          + "; ".join(f"{k} {v['median_ms']} ms, {v['kb']} KB, {v['rows']} rows" for k, v in figures.items()
                      if k != "overview")
          + f"; machine speed reference (CPU ms, lower is faster; start -> end): TLS context "
          f"{speed_start['tls_context_ms']} -> {speed_end['tls_context_ms']}, Python loop "
          f"{speed_start['python_loop_ms']} -> {speed_end['python_loop_ms']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
