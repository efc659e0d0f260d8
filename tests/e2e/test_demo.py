"""The demo, as a user runs it: `mailwarden demo --once --format json` from a clean directory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

MAILWARDEN = [sys.executable, "-m", "mailwarden.monitor"]
OK = ("ok", None)
EXPECTED = {
    ("hoth-support", "token"): OK, ("hoth-support", "pop"): OK, ("hoth-support", "smtp"): OK,
    ("hoth-support", "secret_expiry"): OK,
    ("hoth-it", "token"): OK, ("hoth-it", "imap"): OK, ("hoth-it", "secret_expiry"): OK,
    ("hoth-sales", "token"): OK, ("hoth-sales", "imap"): ("fail", "authenticated_not_connected"),
    ("hoth-sales", "secret_expiry"): OK,
    ("oracle-b2c-support", "token"): ("fail", "refresh_token_revoked"),
    ("oracle-b2c-support", "pop"): ("blocked", "blocked_by_token"),
    ("oracle-b2c-support", "secret_expiry"): OK,
    ("oracle-b2c-billing", "token"): OK, ("oracle-b2c-billing", "pop"): ("fail", "auth_failed"),
    ("oracle-b2c-billing", "secret_expiry"): OK,
    ("sinch-queue", "token"): OK, ("sinch-queue", "graph_mail"): OK, ("sinch-queue", "secret_expiry"): OK,
    ("sinch-billing", "token"): OK, ("sinch-billing", "graph_mail"): ("warn", "throttled"),
    ("sinch-billing", "secret_expiry"): OK,
    ("sinch-sales", "token"): OK, ("sinch-sales", "graph_mail"): ("fail", "access_policy_denied"),
    ("sinch-sales", "secret_expiry"): OK,
    ("sinch-escalations", "token"): ("fail", "consent_missing"),
    ("sinch-escalations", "graph_mail"): ("blocked", "blocked_by_token"),
    ("sinch-escalations", "secret_expiry"): OK,
    ("agiloft-inbound", "token"): OK, ("agiloft-inbound", "ews"): ("warn", "ews_retiring"),
    ("agiloft-inbound", "secret_expiry"): ("warn", "secret_expiring"),
    ("agiloft-contracts", "token"): OK, ("agiloft-contracts", "ews"): ("fail", "mailbox_not_found"),
    ("agiloft-contracts", "secret_expiry"): ("warn", "secret_expiring"),
    ("enaio-notify", "token"): ("fail", "secret_expired"), ("enaio-notify", "smtp"): ("blocked", "blocked_by_token"),
    ("enaio-notify", "secret_expiry"): ("fail", "secret_expired"),
    ("enaio-webclient", "token"): OK, ("enaio-webclient", "smtp"): ("fail", "smtp_auth_disabled_mailbox"),
    ("enaio-webclient", "secret_expiry"): OK,
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


def test_every_check_kind_passes_and_fails_somewhere_and_nothing_is_unclassified(demo_run):
    """Issue 13: every check kind has at least one passing and one failing demo integration; no result of the demo
    is `unclassified`; the House-on-the-Hill SMTP check signs in as the licensed user."""
    rows = json.loads(demo_run[0].stdout)
    kinds = {r["check"] for r in rows}
    for kind in kinds:
        # EWS in Exchange Online answers as warn ews_retiring from 180 days before its shutdown: it passes
        statuses = {"ok" if r["code"] == "ews_retiring" else r["status"] for r in rows if r["check"] == kind}
        assert "ok" in statuses and statuses & {"fail", "error"}, (kind, statuses)
    assert not [r for r in rows if r["code"] == "unclassified"]
    smtp = next(r for r in rows if (r["integration"], r["check"]) == ("hoth-support", "smtp"))
    assert smtp["details"]["login_as"] == "hoth-mail@contoso-demo.onmicrosoft.com"
    throttled = next(r for r in rows if r["code"] == "throttled")
    assert not any(w in " ".join(throttled["fix"]) for w in ("Add-MailboxPermission", "API permissions"))


def test_demo_results_carry_fix_and_days_left(demo_run):
    rows = json.loads(demo_run[0].stdout)
    for r in rows:
        if r["status"] != "ok":
            assert r["fix"] and all(isinstance(s, str) and s for s in r["fix"]), r
    expiring = next(r for r in rows if r["code"] == "secret_expiring")
    assert expiring["details"]["days_left"] == 10
    ews = next(r for r in rows if r["check"] == "ews" and r["code"] == "ews_retiring")
    assert "2027" in ews["details"]["notice"] and ews["details"]["retires_on"] == "2027-04-01"
    assert "1 April 2027" in ews["summary"] and ews["details"]["days_words"] in ews["summary"]
    assert any("Microsoft Graph > Application permissions > Mail.ReadWrite" in step for step in ews["fix"])
    # the fix of an app-only failure carries no delegated-only step, and the other way round
    auth = next(r for r in rows if r["code"] == "auth_failed")
    assert not any(step.startswith("App-only:") for step in auth["fix"])
    consent = next(r for r in rows if r["code"] == "consent_missing")
    assert "Mail.ReadWrite" in consent["summary"]


def test_demo_leaks_no_secret(demo_run):
    proc, work = demo_run
    scenario = (Path(__file__).resolve().parents[2] / "sandbox" / "scenarios" / "demo.yaml").read_text()
    secrets = [line.split('value: "')[1].split('"')[0] for line in scenario.splitlines() if 'value: "' in line]
    assert len(secrets) == 8
    db = b"".join(p.read_bytes() for p in work.glob("mailwarden.db*"))
    for secret in secrets:
        assert secret not in proc.stdout and secret not in proc.stderr
        assert secret.encode() not in db
    assert (work / "mailwarden.yaml").exists()
    assert oct((work / "secrets" / "enaio-smtp-oauth2.secret").stat().st_mode & 0o777) == "0o600"


def test_check_against_the_demo_tenant_exits_2(tmp_path):
    from mailwarden.monitor import demo

    env = demo.prepare(tmp_path / "demo", quiet=True)
    try:
        proc = subprocess.run([*MAILWARDEN, "check", "-c", str(env.config_path), "--format", "json",
                               "--integration", "enaio-notify"], capture_output=True, text=True, timeout=60)
        ok = subprocess.run([*MAILWARDEN, "check", "-c", str(env.config_path), "--integration", "sinch-queue"],
                            capture_output=True, text=True, timeout=60)
    finally:
        env.close()
    assert proc.returncode == 2
    assert {r["code"] for r in json.loads(proc.stdout)} == {"secret_expired", "blocked_by_token"}
    assert ok.returncode == 0 and "sinch-queue" in ok.stdout
