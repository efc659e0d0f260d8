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
    ("hoth-facilities", "token"): OK, ("hoth-facilities", "imap"): ("fail", "consumer_not_collecting"),
    ("hoth-facilities", "secret_expiry"): OK,
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
    # the consuming systems themselves (their actors in the demo scenario), from Entra ID's sign-in log
    ("hoth-support", "consumer"): OK, ("sinch-queue", "consumer"): OK, ("agiloft-inbound", "consumer"): OK,
    ("oracle-b2c-support", "consumer"): ("fail", "consumer_signin_failed"),
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


def test_demo_consumer_checks_judge_the_consuming_systems_own_sign_ins(demo_run):
    """Issue 16: the first cycle already reads the actors' first rounds. Oracle B2C Service's own refresh token ended
    with the revocation (AADSTS50173, beside mailwarden's refresh_token_revoked); the other three sign in, the
    app-only ones with the keyId of the secret they hold."""
    rows = {(r["integration"], r["check"]): r for r in json.loads(demo_run[0].stdout)}
    b2c = rows["oracle-b2c-support", "consumer"]
    assert b2c["summary"].startswith("Oracle B2C Service itself fails to sign in: AADSTS50173")
    assert b2c["details"]["consumer_code"] == 50173 and b2c["details"]["consumer_fatal"] is True
    assert b2c["fix"]
    for name, system in (("hoth-support", "House-on-the-Hill helpdesk"), ("sinch-queue", "Sinch Contact Center"),
                         ("agiloft-inbound", "Agiloft")):
        row = rows[name, "consumer"]
        assert row["summary"].startswith(f"{system} signed in successfully at "), row
        assert row["details"]["last_success_at"], row
    assert rows["hoth-support", "consumer"]["details"]["credential_in_use"] == "unknown"  # delegated
    secrets = rows["agiloft-inbound", "secret_expiry"]["details"]
    for name in ("sinch-queue", "agiloft-inbound"):  # app-only: the keyId of the secret the system presented
        key_id = rows[name, "consumer"]["details"]["credential_key_id"]
        assert key_id and key_id in rows[name, "consumer"]["summary"]
        assert rows[name, "consumer"]["details"]["credential_in_use"] == key_id
    assert rows["agiloft-inbound", "consumer"]["details"]["credential_key_id"] in json.dumps(secrets)


def test_demo_story_mailwardens_token_reauthorised_while_oracle_b2c_itself_still_fails(tmp_path):
    """The issue's case: after someone re-authorises mailwarden (as `mailwarden reauth` does, inside a
    reauthorisation window), mailwarden's token is ok while Oracle B2C Service's own stays revoked: `consumer` keeps
    failing with AADSTS50173 until the system itself is signed in again (the sandbox's actor_sign_in)."""
    import asyncio
    from datetime import UTC, datetime, timedelta

    from mailwarden.monitor import demo, reauth
    from mailwarden.monitor.signins import open_reauth_window
    from mailwarden_sandbox.browser import sign_in

    env = demo.prepare(tmp_path / "demo", quiet=True)
    try:
        rt, sb = env.runtime, env.sandbox

        def results() -> dict:
            asyncio.run(rt.signins.poll())
            return {(r["integration"], r["check"]): r for r in env.run_once()
                    if r["integration"] == "oracle-b2c-support"}

        first = results()
        assert (first["oracle-b2c-support", "token"]["status"], first["oracle-b2c-support", "token"]["code"]) == \
            ("fail", "refresh_token_revoked")
        assert first["oracle-b2c-support", "consumer"]["status"] == "fail"

        integ = rt.config.integration("oracle-b2c-support")
        opened = datetime.now(UTC)
        window = open_reauth_window(rt.store, rt.config, integ, "cli", opened)
        flow = reauth.start(rt.tokens, integ, demo.DEMO_REDIRECT)
        back = sign_in(flow["auth_uri"], integ.account, "Demo-B2C-2026!", sb.ca_path)
        reauth.complete(rt.tokens, integ, flow, reauth.parse_redirect(back))
        rt.store.signins.close_reauth_window(datetime.now(UTC), window_id=window)
        asyncio.run(rt.signins.poll())  # the browser sign-in is stored as unconfirmed, not as the system's success
        # The system's next rounds come minutes later (every 5 minutes), past the window's clock margin. The sandbox's
        # clock cannot move: the window is closed as if the reauthorisation were that long ago instead.
        rt.store.signins.close_reauth_window(opened - timedelta(minutes=10), window_id=window)
        demo.next_log_second()
        (round_,) = sb.control.tick_actors(demo.REVOKED_ACTOR)  # the system's next round: its token stays revoked
        assert round_["ok"] is False and round_["error_code"] == 50173

        after = results()
        assert after["oracle-b2c-support", "token"]["status"] == "ok"
        assert after["oracle-b2c-support", "pop"]["status"] == "ok"
        consumer = after["oracle-b2c-support", "consumer"]
        assert (consumer["status"], consumer["code"]) == ("fail", "consumer_signin_failed")
        assert consumer["summary"].startswith("Oracle B2C Service itself fails to sign in: AADSTS50173")
        assert consumer["details"]["consumer_code"] == 50173
        # mailwarden's own browser sign-in is never counted as the system's success: unconfirmed, and said so
        assert consumer["details"]["unconfirmed"] >= 1 and "unconfirmed" in consumer["summary"]

        demo.next_log_second()
        sb.control.actor_sign_in(demo.REVOKED_ACTOR)  # someone signs Oracle B2C Service itself in again
        (round_,) = sb.control.tick_actors(demo.REVOKED_ACTOR)
        assert round_["ok"] is True
        healed = results()["oracle-b2c-support", "consumer"]
        assert healed["status"] == "ok", healed
        assert healed["summary"].startswith("Oracle B2C Service signed in successfully at ")
    finally:
        env.close()


def test_demo_alert_names_who_removed_the_sinch_escalations_consent(demo_run):
    """Issue 16, who changed it: the demo's admin removes the escalations app's consent at start; the directory audit
    is read with the sign-in log, and the opening alert names the admin and the minute."""
    from mailwarden.monitor import config as config_mod
    from mailwarden.monitor.alerting import make_dispatcher
    from mailwarden.monitor.runtime import open_runtime

    _, work = demo_run
    runtime = open_runtime(config_mod.load(work / "mailwarden.yaml"))
    try:
        [opened] = [d for d in make_dispatcher(runtime.config, runtime.store).evaluate()
                    if d.kind == "opened" and "sinch-escalations" in d.title]
        text = " ".join(opened.body_text.split())
        assert ("Directory audit: Admin consent to Mail.ReadWrite (application permission) removed by "
                "it-admin@contoso-demo.onmicrosoft.com at ") in text, text
    finally:
        runtime.close()
