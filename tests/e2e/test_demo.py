"""The demo, as a user runs it: `mailwarden demo --once --format json` from a clean directory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

MAILWARDEN = [sys.executable, "-m", "monitor"]
EXPECTED = {
    ("hoth-support", "token"): ("ok", None),
    ("hoth-support", "secret_expiry"): ("ok", None),
    ("oracle-b2c-support", "token"): ("fail", "refresh_token_revoked"),
    ("oracle-b2c-support", "secret_expiry"): ("ok", None),
    ("sinch-queue", "token"): ("ok", None),
    ("sinch-queue", "secret_expiry"): ("ok", None),
    ("sinch-escalations", "token"): ("fail", "consent_missing"),
    ("sinch-escalations", "secret_expiry"): ("ok", None),
    ("agiloft-inbound", "token"): ("ok", None),
    ("agiloft-inbound", "secret_expiry"): ("warn", "secret_expiring"),
    ("enaio-notify", "token"): ("fail", "secret_expired"),
    ("enaio-notify", "secret_expiry"): ("fail", "secret_expired"),
}


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    work = tmp_path_factory.mktemp("demo")
    proc = subprocess.run([*MAILWARDEN, "demo", "--once", "--format", "json", "--workdir", str(work)],
                          capture_output=True, text=True, timeout=120, cwd=work,
                          env={**os.environ, "PYTHONWARNINGS": "ignore"})
    return proc, work


def test_demo_once_gives_each_integration_its_expected_status(demo_run):
    proc, _ = demo_run
    rows = json.loads(proc.stdout)
    got = {(r["integration"], r["check"]): (r["status"], r["code"]) for r in rows}
    assert got == EXPECTED
    assert proc.returncode == 2, "a failing check makes the exit code 2"


def test_demo_results_carry_fix_and_days_left(demo_run):
    rows = json.loads(demo_run[0].stdout)
    for r in rows:
        if r["status"] != "ok":
            assert r["fix"] and all(isinstance(s, str) and s for s in r["fix"]), r
    expiring = next(r for r in rows if r["code"] == "secret_expiring")
    assert expiring["details"]["days_left"] == 10
    consent = next(r for r in rows if r["code"] == "consent_missing")
    assert "Mail.ReadWrite" in consent["summary"]


def test_demo_leaks_no_secret(demo_run):
    proc, work = demo_run
    scenario = (Path(__file__).resolve().parents[2] / "sandbox" / "scenarios" / "demo.yaml").read_text()
    secrets = [line.split('value: "')[1].split('"')[0] for line in scenario.splitlines() if 'value: "' in line]
    assert len(secrets) == 7
    db = b"".join(p.read_bytes() for p in work.glob("mailwarden.db*"))
    for secret in secrets:
        assert secret not in proc.stdout and secret not in proc.stderr
        assert secret.encode() not in db
    assert (work / "mailwarden.yaml").exists()
    assert oct((work / "secrets" / "enaio-smtp-oauth2.secret").stat().st_mode & 0o777) == "0o600"


def test_check_against_the_demo_tenant_exits_2(tmp_path):
    from monitor import demo

    env = demo.prepare(tmp_path / "demo", quiet=True)
    try:
        proc = subprocess.run([*MAILWARDEN, "check", "-c", str(env.config_path), "--format", "json",
                               "--integration", "enaio-notify"], capture_output=True, text=True, timeout=60)
        ok = subprocess.run([*MAILWARDEN, "check", "-c", str(env.config_path), "--integration", "sinch-queue"],
                            capture_output=True, text=True, timeout=60)
    finally:
        env.close()
    assert proc.returncode == 2
    assert {r["code"] for r in json.loads(proc.stdout)} == {"secret_expired"}
    assert ok.returncode == 0 and "sinch-queue" in ok.stdout
