"""Upgrading from the release before this one (commit 40986af, when the code was still the top-level packages
`monitor`, `checks`, ...) keeps what an operator has: the open incidents, the delegated sign-ins, the history and
the reauthorisation links already sent in alerts. The upgrade is the migrations alone (monitor/db.py ``upgrade`` at
start); nobody re-authorises, nothing is re-created.

The old release is installed into its own virtualenv (once per session). Its own demo API writes the state: a
config, a SQLite (or PostgreSQL) database and a token key; two check cycles (incidents, results, transitions), one
alert dispatch (the notices, with the reauthorisation link of oracle-b2c-support, whose sessions the demo revokes),
one history rollup. Then the old monitor stops, and its sandbox, Microsoft's side, stays up holding the refresh
tokens it issued, while the current code opens the same config and database and checks against it.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from mailwarden.monitor import config as config_mod
from mailwarden.monitor.alerting import make_dispatcher
from mailwarden.monitor.reauth_links import for_runtime
from mailwarden.monitor.runtime import open_runtime
from mailwarden.monitor.scheduler import Monitor
from mailwarden.monitor.web.app import create_app
from tests.conftest import require_service
from tests.dashboards.conftest import login
from tests.pg import fresh_database

pytestmark = pytest.mark.slow

OLD_RELEASE = "40986af"  # the last commit before this session's changes (issue 15)
ROOT = Path(__file__).resolve().parents[2]
DELEGATED = ("hoth-support", "hoth-sales", "oracle-b2c-support", "oracle-b2c-billing")
REVOKED = "oracle-b2c-support"  # the old demo revokes its account's sessions after signing in

# Runs in the old release's virtualenv, on its own API: argv = workdir, database URL ("" = the demo's SQLite), out.
OLD_DEMO = r'''
import json, sys
from datetime import UTC, datetime
from pathlib import Path

import yaml
from cryptography.fernet import Fernet

from alerts.dispatcher import Dispatcher
from monitor import demo, reauth_links

workdir, database, out = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
if database:  # the demo's config, on another database (PostgreSQL needs a configured token key)
    write_config = demo.write_config

    def on_database(*args, **kwargs):
        path = write_config(*args, **kwargs)
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
        key = path.parent / "token.key"
        key.write_bytes(Fernet.generate_key() + b"\n")
        key.chmod(0o600)
        doc.update(database=database, token_key="file:token.key")
        path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
        return path

    demo.write_config = on_database
env = demo.prepare(workdir, quiet=True, web_port=0)  # signs in the delegated integrations, revokes one
rt = env.runtime
cycles = [env.run_once(), env.run_once()]
Dispatcher(rt.config, rt.store, reauth_urls=reauth_links.for_runtime(rt)).run_once()
rt.store.rollup_history(datetime.now(UTC))
doc = {
    "config": str(env.config_path),
    "password": env.web_password,
    "results": [[r["integration"], r["check"], r["status"], r["code"]] for r in cycles[-1]],
    "incidents": [[i.id, i.code, i.affected] for i in rt.store.incidents("open")],
    "reauth": [[r.id, r.integration, r.account] for r in rt.store.open_reauth_requests()],
    "rollups": [[r.integration, r.check, r.hour.isoformat(), r.total, r.ok, r.fail]
                for r in rt.store.rollups()],
    "alerts": [d.body_text for d in rt.store.deliveries()],
}
rt.close()  # the old monitor stops
Path(str(out) + ".part").write_text(json.dumps(doc), encoding="utf-8")
Path(str(out) + ".part").rename(out)
sys.stdin.read()  # Microsoft's side (the sandbox, holding the refresh tokens it issued) stays up until stdin closes
env.sandbox.stop()
'''


def _clean_env() -> dict[str, str]:
    drop = ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")
    return {k: v for k, v in os.environ.items() if not k.startswith("MAILWARDEN_") and k not in drop}


@pytest.fixture(scope="session")
def old_python(tmp_path_factory):
    """The old release, pip-installed (not editable) into a virtualenv of its own: its python, for the session."""
    base = tmp_path_factory.mktemp("old-release")
    if shutil.which("git") is None:
        require_service("git", "git is not installed: the old release is read from the repository's history")
    tree = subprocess.run(["git", "-C", str(ROOT), "archive", "--format=tar", OLD_RELEASE], capture_output=True)
    if tree.returncode != 0:
        require_service("the git history", f"commit {OLD_RELEASE} is not in {ROOT}: "
                        f"{tree.stderr.decode(errors='replace').strip()}")
    src = base / "src"
    with tarfile.open(fileobj=io.BytesIO(tree.stdout)) as tar:
        tar.extractall(src, filter="data")
    # pinned to the dependency versions this checkout is tested with (the same pins in both releases)
    constraints = base / "constraints.txt"
    constraints.write_text("".join(sorted({f"{d.metadata['Name']}=={d.version}\n" for d in metadata.distributions()
                                           if d.metadata["Name"] and d.metadata["Name"].lower() != "mailwarden"})))
    venv = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, env=_clean_env())
    python = venv / "bin" / "python"
    # --no-compile: only the modules the demo imports get bytecode (compiling all of msgraph-sdk took a third)
    pip = subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-compile",
                          "-c", str(constraints), str(src)], capture_output=True, text=True, env=_clean_env(),
                         timeout=600)
    if pip.returncode != 0:
        require_service("PyPI", f"cannot install the old release: {(pip.stdout + pip.stderr)[-3000:]}")
    yield python
    shutil.rmtree(venv, ignore_errors=True)  # about 600 MB; pytest keeps its last three temporary directories


@pytest.fixture
def pg_url():
    """A PostgreSQL database of this test's own, dropped at the end."""
    with fresh_database("mailwarden_upgrade") as url:
        yield url


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def old_demo(request, old_python, tmp_path):
    """What the old release left behind (its JSON summary); its sandbox runs until the test ends."""
    database = request.getfixturevalue("pg_url") if request.param == "postgres" else ""
    script, out, log = tmp_path / "old_demo.py", tmp_path / "old.json", tmp_path / "old_demo.log"
    script.write_text(OLD_DEMO, encoding="utf-8")
    with log.open("w") as logf:
        proc = subprocess.Popen([str(old_python), str(script), str(tmp_path / "demo"), database, str(out)],
                                cwd=tmp_path, env=_clean_env(), stdin=subprocess.PIPE, stdout=logf,
                                stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while not out.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the old release's demo did not finish (exit {proc.poll()}):\n{log.read_text()[-4000:]}")
            time.sleep(0.1)
        yield json.loads(out.read_text(encoding="utf-8"))
    finally:
        proc.stdin.close()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def test_an_upgrade_keeps_incidents_sign_ins_history_and_reauthorisation_links(old_demo):
    old = old_demo
    # what the old release saw: the premise of everything below
    old_results = {(i, k): (s, c) for i, k, s, c in old["results"]}
    assert old_results[(REVOKED, "token")] == ("fail", "refresh_token_revoked")
    assert all(old_results[(name, "token")] == ("ok", None) for name in DELEGATED if name != REVOKED)
    incidents = sorted(tuple(i) for i in old["incidents"])  # (id, code, affected integrations)
    assert [REVOKED] in [affected for *_, affected in incidents]
    assert [tuple(r[1:]) for r in old["reauth"]] == [(REVOKED, "b2c-support@contoso-demo.onmicrosoft.com")]
    links = {m for body in old["alerts"] for m in re.findall(r"https?://\S+/reauth/[\w.-]+", body)}
    assert len(links) == 1, old["alerts"]
    link = links.pop()  # what the account's owner holds in their mailbox
    rollups = sorted(tuple(r) for r in old["rollups"])
    assert any(r[0] == "hoth-support" and r[3] == 2 for r in rollups)

    cfg = config_mod.load(Path(old["config"]))
    rt = open_runtime(cfg)  # what serve, check and the web app do at start: migrate to the newest revision
    try:
        store = rt.store
        # incidents: the same ones, still open (before the new code writes anything)
        assert sorted((i.id, i.code, i.affected) for i in store.alerts.incidents("open")) == incidents
        # history: the old hourly rollups read back unchanged
        assert sorted((r.integration, r.check, r.hour.isoformat(), r.total, r.ok, r.fail)
                      for r in store.history.rollups()) == rollups

        monitor = Monitor(rt)
        app = create_app(lambda: monitor.runtime.config, lambda: monitor.runtime.store, monitor=monitor)
        admin = ("admin", old["password"])  # the old config's password still signs in
        with TestClient(app, base_url=cfg.web.base_url) as client:
            page = client.get(link)
            assert page.status_code == 200, (page.status_code, page.text[:2000])
            assert f"Re-authorise <code>{REVOKED}</code>" in page.text
            assert "b2c-support@contoso-demo.onmicrosoft.com" in page.text
            assert f'action="/reauth/{link.rsplit("/", 1)[1]}"' in page.text  # its button starts the sign-in
            # ... and it is the link the new release shows again in reminders and on the dashboard
            assert for_runtime(rt)() == {REVOKED: link}

            # availability: the scheduler's history job builds it from the stored history (migration 0008)
            store.history.rollup_history(datetime.now(UTC), maintenance=cfg.alerts.maintenance)
            listed = client.get("/api/integrations", auth=admin)
            assert listed.status_code == 200, listed.text
            api = {i["name"]: i for i in listed.json()}
            assert (api["hoth-support"]["availability_24h"], api["hoth-support"]["uptime_24h"]) == (100.0, 100.0)
            assert api[REVOKED]["availability_24h"] == 0.0
            assert api[REVOKED]["open_incidents"] == [i for i, _, affected in incidents if affected == [REVOKED]]
            assert login(client, old["password"]).status_code == 303
            overview = client.get("/")
            assert overview.status_code == 200 and "hoth-support" in overview.text

        # sign-ins: every stored refresh token works at the same Microsoft (the old sandbox), adopted under the
        # account's key (migration 0009); the revoked one is refused as revoked, not missing
        results = asyncio.run(rt.runner.run_many([(name, ["token"]) for name in DELEGATED]))
        assert {r.integration: (r.outcome.status.value, r.outcome.code) for r in results} == {
            "hoth-support": ("ok", None), "hoth-sales": ("ok", None), "oracle-b2c-billing": ("ok", None),
            REVOKED: ("fail", "refresh_token_revoked")}

        # the failure goes on as the same incident: nobody is paged again for it
        report = make_dispatcher(cfg, store, reauth_urls=for_runtime(rt)).run_once()
        assert report.queued == 0, report
        assert sorted((i.id, i.code, i.affected) for i in store.alerts.incidents("open")) == incidents
        assert [r.id for r in store.reauth.open_reauth_requests()] == [old["reauth"][0][0]]
    finally:
        rt.close()
