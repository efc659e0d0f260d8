"""`python -m bench.flood [--rate 20] [--seconds 30] [--integrations 5]`: how the monitor fares while an outsider
floods the web app with bad HTTP Basic requests (the hardening issue: nothing an outsider sends can silence it).

The sandbox runs in its own process; mailwarden runs as `serve` does: the real ``Monitor`` (scheduler, runner,
SQLite store) and the web app (uvicorn) in one event loop, the admin password hashed at the default scrypt cost.
N app-only integrations (token and secret_expiry checks, every 5 s) run for the whole time. Two phases of
``--seconds`` each: quiet, then ``--rate`` bad Basic requests a second on /metrics, each from one of
``--addresses`` loopback source addresses (127.0.1.x), so that the per-client limit does not end the flood by
itself. Meanwhile a client in another thread asks /healthz every 100 ms.

It prints, per phase, the /healthz delay (median, 95th percentile, worst: the figure of the issue), the check
results (all should be ok; before the fix the flood timed them out), the answers the flood got, and the threads
scrypt ran in. It asserts nothing (tests/web/test_flood.py asserts on the same run, shorter).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import socket
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import yaml

from bench.sandbox_proc import SandboxProcess
from mailwarden.monitor import config as config_mod
from mailwarden.monitor.runtime import open_runtime
from mailwarden.monitor.scheduler import Monitor
from mailwarden.monitor.web import auth, server

INTERVAL, TIMEOUT = "5s", "10s"


def say(msg: str) -> None:
    print(f"[flood {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# -- the world: one tenant of app-only integrations in the sandbox -----------------------------------------
def scenario(n: int) -> tuple[dict, dict[str, str], dict[str, str]]:
    """(sandbox scenario, config app name -> secret, config app name -> client id)."""
    tid = str(uuid.uuid4())
    domain = f"t{tid[:8]}.onmicrosoft.com"
    apps, secrets, ids = [], {}, {}
    for i in range(n):
        name = f"s{i}"
        ids[name], secrets[name] = str(uuid.uuid4()), f"{uuid.uuid4().hex[:3]}8Q~{uuid.uuid4().hex}"
        apps.append({"app_id": ids[name], "display_name": f"subject {i}",
                     "secrets": [{"value": secrets[name], "display_name": "in use", "start": "-10d", "end": "+200d"}],
                     "application_permissions": {"exchange": ["SMTP.SendAsApp"]}})
    ids["monitor"], secrets["monitor"] = str(uuid.uuid4()), "mon~" + uuid.uuid4().hex
    apps.append({"app_id": ids["monitor"], "display_name": "mailwarden monitor",
                 "secrets": [{"value": secrets["monitor"]}],
                 "application_permissions": {"graph": ["Application.Read.All"]}})
    tenant = {"id": tid, "domain": domain, "users": [], "apps": apps}
    return {"tenants": [tenant]}, secrets, ids


def write_config(workdir: Path, endpoints: dict[str, str], scen: dict, secrets: dict[str, str],
                 ids: dict[str, str], password_hash: str) -> Path:
    (workdir / "secrets").mkdir(parents=True, exist_ok=True)
    apps = {}
    for name, value in secrets.items():
        (workdir / "secrets" / name).write_text(value)
        apps[name] = {"tenant": "t", "client_id": ids[name], "secret": f"file:secrets/{name}"}
    tenant = scen["tenants"][0]
    doc = {
        "database": "sqlite:///mailwarden.db", "cloud": "custom",
        "endpoints": {k: v for k, v in endpoints.items() if k in ("authority", "graph", "ca_bundle")},
        "defaults": {"interval": INTERVAL, "timeout": TIMEOUT, "failure_threshold": 1},
        "tenants": {"t": {"tenant_id": tenant["id"], "monitor_app": "monitor"}},
        "apps": apps,
        "integrations": [{"name": f"flood-{name}", "app": name, "flow": "app", "mailbox": f"box@{tenant['domain']}",
                          "checks": {"token": {"require": ["exchange:SMTP.SendAsApp"]}, "secret_expiry": {}}}
                         for name in secrets if name != "monitor"],
        "web": {"listen": "127.0.0.1:0", "password_hash": password_hash},
    }
    path = workdir / "mailwarden.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


# -- the outsider, and the health probe (each in its own thread and loop) -----------------------------------
async def _get(port: int, path: str, source: str, header: str | None) -> int:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
    try:
        auth_line = f"Authorization: {header}\r\n" if header else ""
        writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{auth_line}Connection: close\r\n\r\n"
                     .encode())
        await writer.drain()
        line = await reader.readline()
        return int(line.split()[1]) if line else 0
    finally:
        writer.close()


@dataclass
class Flood:
    """``rate`` GET /metrics a second with a wrong Basic password, each from the next of ``addresses`` loopback
    source addresses, for ``seconds``; the answers counted (0: no answer within a minute)."""

    port: int
    rate: float
    seconds: float
    addresses: int = 100
    answers: Counter = field(default_factory=Counter)

    def run(self) -> None:
        asyncio.run(self._run())

    async def _run(self) -> None:
        async def one(i: int) -> None:
            header = "Basic " + base64.b64encode(f"admin:guess-{i}".encode()).decode()
            source = f"127.0.1.{i % self.addresses + 1}"
            try:
                self.answers[await asyncio.wait_for(_get(self.port, "/metrics", source, header), 60)] += 1
            except (TimeoutError, OSError):
                self.answers[0] += 1

        start, tasks, i = time.monotonic(), [], 0
        while (due := start + i / self.rate) < start + self.seconds:
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            tasks.append(asyncio.create_task(one(i)))
            i += 1
        await asyncio.gather(*tasks)


@dataclass
class Probe:
    """GET /healthz every ``every`` seconds from another thread: the delay of each answer, in ms."""

    port: int
    every: float = 0.1
    delays: list[float] = field(default_factory=list)
    failures: int = 0
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        while not self.stop.is_set():
            t0 = time.perf_counter()
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=30) as s:
                    s.sendall(f"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\nConnection: close\r\n\r\n"
                              .encode())
                    ok = s.recv(64).startswith(b"HTTP/1.1 200")
            except OSError:
                ok = False
            if ok:
                self.delays.append((time.perf_counter() - t0) * 1000)
            else:
                self.failures += 1
            self.stop.wait(max(0.0, self.every - (time.perf_counter() - t0)))

    def figures(self) -> dict[str, float]:
        d = sorted(self.delays) or [float("nan")]
        return {"n": len(self.delays), "failures": self.failures, "p50_ms": statistics.median(d),
                "p95_ms": d[min(len(d) - 1, int(len(d) * 0.95))], "max_ms": d[-1]}


# -- one run ------------------------------------------------------------------------------------------------
@dataclass
class Phase:
    name: str
    results: Counter  # status (and code) of every check result stored during the phase
    healthz: dict[str, float]
    answers: Counter  # what the flood was answered
    scrypt_threads: Counter  # thread name (marked when it runs an event loop) -> verifications


async def serve_and_flood(config_path: Path, *, rate: float, seconds: float, addresses: int = 100,
                          phases: tuple[str, ...] = ("quiet", "flood"), warmup: float = 8.0) -> list[Phase]:
    """Run the monitor and its web app as `serve` does (this loop), and each phase for ``seconds``."""
    runtime = open_runtime(config_mod.load(config_path))
    monitor = Monitor(runtime)
    web = server.prepare(monitor)
    assert web is not None, "the config has no web access rule"
    threads: Counter = Counter()
    verify = auth.verify_password

    def counted(password: str, stored: str) -> bool:
        try:
            asyncio.get_running_loop()
            where = f"{threading.current_thread().name} (runs an event loop)"
        except RuntimeError:
            where = threading.current_thread().name
        threads[where] += 1
        return verify(password, stored)

    auth.verify_password = counted
    out = []
    try:
        monitor.start()
        await web.start()
        port = web.sock.getsockname()[1]
        await asyncio.sleep(warmup)  # every check has run once: tokens cached, connections open
        for name in phases:
            threads.clear()
            since = datetime.now(UTC)
            probe = Probe(port)
            probing = threading.Thread(target=probe.run, daemon=True)
            probing.start()
            flood = Flood(port, rate, seconds, addresses)
            if name == "flood":
                await asyncio.to_thread(flood.run)
            else:
                await asyncio.sleep(seconds)
            await asyncio.sleep(1.0)  # checks under way finish
            probe.stop.set()
            await asyncio.to_thread(probing.join)
            results: Counter = Counter()
            for integ in runtime.config.integrations:
                for kind in integ.checks:
                    for r in await asyncio.to_thread(runtime.store.checks.results, integ.name, kind, since, 500):
                        results[r.status + (f" ({r.code})" if r.code else "")] += 1
            out.append(Phase(name, results, probe.figures(), flood.answers, Counter(threads)))
    finally:
        auth.verify_password = verify
        await web.stop()
        monitor.shutdown()
    return out


def start_sandbox(workdir: Path, n: int) -> tuple[SandboxProcess, Path]:
    """The sandbox process with n app-only integrations' tenant, and mailwarden's config for it."""
    scen, secrets, ids = scenario(n)
    (workdir / "scenario.yaml").write_text(yaml.safe_dump(scen, sort_keys=False))
    sb = SandboxProcess(workdir / "scenario.yaml", workdir / "sandbox")
    path = write_config(workdir, sb.endpoints, scen, secrets, ids, auth.hash_password("the admin's real password"))
    return sb, path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.flood", description=__doc__.split("\n\n")[0])
    ap.add_argument("--rate", type=float, default=20.0, help="bad Basic requests a second (default 20)")
    ap.add_argument("--seconds", type=float, default=30.0, help="length of each phase (default 30)")
    ap.add_argument("--integrations", type=int, default=5, help="app-only integrations, 2 checks each (default 5)")
    ap.add_argument("--addresses", type=int, default=100, help="loopback source addresses (default 100)")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="mw-flood-") as tmp:
        workdir = Path(tmp)
        say(f"sandbox and {args.integrations} integrations (checks every {INTERVAL}, timeout {TIMEOUT})")
        sb, config_path = start_sandbox(workdir, args.integrations)
        try:
            say(f"{args.seconds:g} s quiet, then {args.seconds:g} s of {args.rate:g} bad Basic requests/s from "
                f"{args.addresses} addresses")
            phases = asyncio.run(serve_and_flood(config_path, rate=args.rate, seconds=args.seconds,
                                                 addresses=args.addresses))
        finally:
            sb.stop()
    for p in phases:
        h = p.healthz
        print(f"{p.name:6} /healthz delay: median {h['p50_ms']:.1f} ms, p95 {h['p95_ms']:.1f} ms, "
              f"worst {h['max_ms']:.1f} ms ({h['n']} probes, {h['failures']} failed)")
        print(f"{'':6} check results: {dict(p.results)}")
        if p.name == "flood":
            print(f"{'':6} flood answered: {dict(p.answers)}; scrypt ran in: {dict(p.scrypt_threads)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
