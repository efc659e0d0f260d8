"""High-availability and fault tests: real `mailwarden serve` processes on PostgreSQL.

Helpers: a database on the shared server (127.0.0.1:5432, as tests/monitor/test_storage.py), a throwaway
cluster made with initdb on a free port (for outages: never stop the shared server), a json:// receiver,
and a `serve` process whose JSON log lines the tests read.
"""

from __future__ import annotations

import glob
import http.server
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from tests.conftest import require_service
from tests.pg import fresh_database

ROOT = Path(__file__).resolve().parents[2]
MAILWARDEN = ROOT / ".venv" / "bin" / "mailwarden"
SECRET = "Zq8~ha-canary-secret-51c0de"  # noqa: S105 - a recognisable fake secret
KEY_IN_TITLE = re.compile(r"\[([^\[\]]+)\]\s*$")


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: runs real processes for tens of seconds (tests/ha)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- the shared server ------------------------------------------------------------------------------------
@pytest.fixture
def shared_pg_url():
    """A fresh database on the shared server for one test; dropped at the end."""
    with fresh_database("mailwarden_ha") as url:
        yield url


# -- a throwaway cluster ----------------------------------------------------------------------------------
def _pg_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


class Cluster:
    """initdb on a free port in a temp dir; run as `postgres` when we are root (initdb refuses root)."""

    def __init__(self, bindir: Path):
        self.bindir = bindir
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="mailwarden-pg-"))
        self.data = self.dir / "data"
        self.log = self.dir / "postgres.log"
        self._as: list[str] = []
        if os.geteuid() == 0:
            import pwd

            pw = pwd.getpwnam("postgres")
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
            self._as = ["runuser", "-u", "postgres", "--"]
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/mailwarden"

    def _run(self, *args: str, timeout: float = 60) -> None:
        proc = subprocess.run([*self._as, *args], capture_output=True, text=True, timeout=timeout, cwd=self.dir)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} failed: {proc.stdout}{proc.stderr}")

    def init(self) -> None:
        self._run(str(self.bindir / "initdb"), "-D", str(self.data), "-U", "postgres", "-A", "trust",
                  "--no-sync", "-E", "UTF8")
        self.start()
        self._run(str(self.bindir / "createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres",
                  "mailwarden")

    def start(self) -> None:
        opts = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.dir} -c fsync=off"
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-o", opts, "-w",
                  "start")

    def stop(self) -> None:
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")

    def destroy(self) -> None:
        subprocess.run([*self._as, str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop"],
                       capture_output=True, timeout=60, check=False)
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def cluster():
    bindir = _pg_bin()
    if bindir is None:
        require_service("PostgreSQL server binaries", "initdb not found (/usr/lib/postgresql/*/bin)")
    c = Cluster(bindir)
    try:
        c.init()
    except (RuntimeError, KeyError, OSError, subprocess.TimeoutExpired) as exc:
        c.destroy()
        require_service("a throwaway PostgreSQL cluster", f"initdb/pg_ctl failed: {exc}")
    yield c
    c.destroy()


# -- a json:// receiver -----------------------------------------------------------------------------------
class Receiver:
    def __init__(self):
        self.bodies: list[dict] = []
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                receiver.bodies.append({**json.loads(raw), "_at": time.time()})
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"json://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def keys(self) -> list[str]:
        out = []
        for b in self.bodies:
            m = KEY_IN_TITLE.search(b.get("title", ""))
            assert m, b
            out.append(m.group(1))
        return out


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.server.shutdown()
    r.server.server_close()


# -- config and `serve` processes -------------------------------------------------------------------------
def write_config(path: Path, database: str, names: list[str], *, web_port: int | None = None,
                 alerts_url: str | None = None, interval: str = "3s", failure_threshold: int = 1) -> Path:
    web = (f"{{listen: 127.0.0.1:{web_port}, base_url: http://127.0.0.1:{web_port}, auth: none}}"
           if web_port else "{enabled: false}")
    integrations = "".join(
        f"  - {{name: {n}, app: a, flow: app, mailbox: {n}@contoso.com, checks: [token]}}\n" for n in names)
    alerts = (f"alerts:\n  routes: [{{url: '{alerts_url}'}}]\n  reminder_interval: 10s\n"
              "  correlation: {window: 1s}\n  retry_backoff: 1s\n") if alerts_url else ""
    # Nothing listens on 127.0.0.1:9: every token check ends at once as error/connection_refused.
    path.write_text(textwrap.dedent(f"""\
        database: {database}
        token_key: env:MW_TOKEN_KEY
        cloud: custom
        endpoints:
          authority: https://127.0.0.1:9
          graph: https://127.0.0.1:9/v1.0
        web: {web}
        defaults: {{interval: {interval}, timeout: 2s, failure_threshold: {failure_threshold}}}
        tenants: {{t: {{tenant_id: 11111111-2222-3333-4444-555555555555}}}}
        apps: {{a: {{tenant: t, client_id: 66666666-7777-8888-9999-000000000000, secret: env:MW_TEST_SECRET}}}}
        integrations:
        """) + integrations + alerts)
    return path


TOKEN_KEY = Fernet.generate_key().decode()


class Serve:
    """One `mailwarden serve` process; its stderr (JSON lines) goes to a file the test reads."""

    def __init__(self, config: Path, name: str, command: tuple[str, ...] = ("serve",)):
        self.name = name
        self.log = config.parent / f"{name}.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("MAILWARDEN_")}
        env.update(MW_TEST_SECRET=SECRET, MW_TOKEN_KEY=TOKEN_KEY)
        with self.log.open("w") as err:
            self.proc = subprocess.Popen([str(MAILWARDEN), *command, "-c", str(config)], cwd=config.parent,
                                         env=env, stdin=subprocess.DEVNULL, stdout=err, stderr=err)

    def lines(self) -> list[dict]:
        text = self.log.read_text()
        complete = text[: text.rfind("\n") + 1]
        return [json.loads(line) for line in complete.splitlines() if line.startswith("{")]

    def msgs(self, msg: str) -> list[dict]:
        return [ln for ln in self.lines() if ln.get("msg") == msg]

    def wait_for(self, pred: Callable[[list[dict]], object], what: str, timeout: float = 30.0) -> object:
        deadline = time.monotonic() + timeout
        while True:
            got = pred(self.lines())
            if got:
                return got
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.name} exited ({self.proc.returncode}) before {what}:\n"
                                     f"{self.log.read_text()[-3000:]}")
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.name}: timed out waiting for {what}:\n{self.log.read_text()[-3000:]}")
            time.sleep(0.1)

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
                raise
        return self.proc.returncode


@pytest.fixture
def serve():
    started: list[Serve] = []

    def start(config: Path, name: str, command: tuple[str, ...] = ("serve",)) -> Serve:
        """`mailwarden <command> -c config` (``serve`` by default; ``("worker",)`` for a queue worker)."""
        s = Serve(config, name, command)
        started.append(s)
        return s

    yield start
    for s in started:
        if s.proc.poll() is None:
            s.proc.kill()
            s.proc.wait(5)
