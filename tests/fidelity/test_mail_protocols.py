"""IMAP, POP3 and SMTP as Exchange Online really answers them (M365_FACTS.md, corrected 2026-12-02), played by
the sandbox from its modelled state and read by the real checks. Each test names the public capture."""

from __future__ import annotations

import asyncio

import pytest

from mailwarden.checks.base import Status
from mailwarden.checks.diagnoses import render_fix
from mailwarden.checks.facts import facts
from tests.e2e.test_mailbox_checks import shared_mailbox as house_on_the_hill  # a licensed delegate on a shared box

MAIL = {"token": {}, "imap": {}, "pop": {}, "smtp": {}}
PERMISSION_WORDS = ("Add-MailboxPermission", "API permissions", "Grant admin consent", "FullAccess",
                    "Add-RecipientPermission")


@pytest.fixture
def hoth(world):
    def make(checks=None, integrations=1, **box):
        w = world("delegated", checks=checks or MAIL, exchange=house_on_the_hill(**box))
        if integrations > 1:  # more integrations on the same mailbox and account
            w.rewrite(lambda d: d["integrations"].extend(
                {**d["integrations"][0], "name": f"subject{i}"} for i in range(2, integrations + 1)))
        w.sign_in()
        return w
    return make


def fix_of(w, outcome, integration="subject") -> str:
    cfg = w.runtime.config
    return " ".join(render_fix(outcome.code, **facts(cfg, cfg.integration(integration), outcome)))


def test_smtp_signs_in_as_the_delegate_and_sends_as_the_shared_mailbox(hoth):
    """A delegate's token authenticates SMTP only as the delegate: `535 5.7.3` for user=<shared mailbox>
    (jstedfast/MailKit#1770 wire log; nextcloud/mail#13667, #13668; Mailspring-Sync#116; frappe#23079;
    email-oauth2-proxy#426). Send As is applied at submission: `554 5.2.252 SendAsDenied` (gophish#2900)."""
    w = hoth(checks={"token": {}, "smtp": {"canary_to": "ops@example.test"}})
    ok = w.run("smtp")
    assert ok.status == Status.OK, ok.summary
    assert ok.metrics["login_as"] == w.upn and ok.metrics["send_verified"] is True
    assert f"SMTP AUTH as {w.upn}" in ok.summary and f"sent as box@{w.upn.split('@')[1]}" in ok.summary
    w.ctl.revoke_mailbox_permission(f"box@{w.upn.split('@')[1]}", permission="send_as", trustee=w.upn)
    denied = w.run("smtp")
    assert (denied.status, denied.code) == (Status.FAIL, "send_as_denied"), denied.summary
    assert "5.2.252 SendAsDenied" in denied.summary
    assert f"-Trustee {w.upn}" in fix_of(w, denied)


def test_smtp_without_canary_says_send_as_is_unproven(hoth):
    w = hoth(checks={"token": {}, "smtp": {}})
    outcome = w.run("smtp")
    assert outcome.status == Status.OK and outcome.metrics["send_verified"] is False
    assert "Send As" in outcome.summary and "canary" in outcome.summary


def test_delegate_own_smtp_auth_off_names_the_delegate(hoth):
    """`535 5.7.139 ... disabled for the Mailbox` for the delegate's own mailbox (email-oauth2-proxy#193 shows
    the tenant form): the fix sets the delegate's switch, not the shared mailbox's."""
    w = hoth(checks={"token": {}, "smtp": {}})
    w.ctl.patch_mailbox(w.upn, smtp_auth_enabled=False)
    outcome = w.run("smtp")
    assert (outcome.status, outcome.code) == (Status.FAIL, "smtp_auth_disabled_mailbox"), outcome.summary
    assert f"Set-CASMailbox -Identity {w.upn}" in fix_of(w, outcome)


def test_imap_throttled_waits_as_asked_for_every_check_of_the_mailbox(hoth):
    """`BAD Request is throttled. Suggested Backoff Time: N milliseconds` then `* BYE Connection closed. 14`
    (simonrob/email-oauth2-proxy#191; NO form: imapsync/imapsync#198, ikvk/imap_tools#135)."""
    w = hoth(checks={"token": {}, "imap": {}}, integrations=2, budget={"limit": 2, "window_s": 600})
    w.ctl.use_budget(f"box@{w.upn.split('@')[1]}", w.upn, 2)  # the helpdesk itself spent the budget
    outcome = w.run("imap")
    assert (outcome.status, outcome.code) == (Status.WARN, "throttled"), outcome.summary
    assert 500 < outcome.retry_after_s <= 600 and "Suggested Backoff Time" in outcome.summary
    assert not any(word in fix_of(w, outcome) for word in PERMISSION_WORDS)
    connections = w.ctl.stats()["mail"]["imap"]["connections"]
    other = w.run("imap", "subject2")  # the same mailbox: not asked while the wait lasts
    assert (other.status, other.code) == (Status.WARN, "throttled") and "not run" in other.summary
    assert w.ctl.stats()["mail"]["imap"]["connections"] == connections


def test_imap_not_connected_is_confirmed_on_a_second_connection(hoth):
    """AUTHENTICATE OK, then `BAD User is authenticated but not connected.` (email-oauth2-proxy#74,
    MailKit#1496); Exchange answers the same with about 20 connections open (mscdex/node-imap#523): only a
    second refusal makes it a diagnosis, and its fix names the connection limit too."""
    w = hoth(checks={"token": {}, "imap": {}}, load={"imap": 20})
    w.ctl.reset_stats()
    outcome = w.run("imap")
    assert (outcome.status, outcome.code) == (Status.FAIL, "authenticated_not_connected"), outcome.summary
    assert outcome.metrics["confirmed_on_second_connection"] is True
    assert w.ctl.stats()["mail"]["imap"]["auth_ok"] == 2
    assert "20" in fix_of(w, outcome)
    w.ctl.patch_mailbox(f"box@{w.upn.split('@')[1]}", load={})
    assert w.run("imap").status == Status.OK


def test_pop_refuses_a_token_too_long_for_its_command_line(world):
    """`-ERR Protocol error. Connection is closed. 10` for a command line past Exchange's limit (getmail6#256;
    M365_FACTS.md: since 2025 tokens over ~4 KB of base64 are refused)."""
    w = world("delegated", checks={"token": {}, "pop": {}}, user={"groups": 200}, own_mailbox=True,
              exchange=lambda ids: {"mailboxes": [{"address": ids["upn"], "type": "user"}]})
    w.sign_in()
    outcome = w.run("pop")
    assert (outcome.status, outcome.code) == (Status.FAIL, "token_too_long"), outcome.summary
    assert outcome.metrics["line_length"] > 4000
    assert "groups claim" in fix_of(w, outcome)


@pytest.mark.parametrize(("setup", "code", "status"), [
    # Microsoft's SMTP submission page; fastapi-mail#75: three connections per mailbox
    (lambda w: w.ctl.patch_mailbox(w.upn, load={"smtp": 3}), "throttled", Status.WARN),
    # Microsoft's text for the daily limit (554 5.2.0 SubmissionQuotaExceededException)
    (lambda w: w.ctl.record_sent(w.upn, 10000), "sending_quota_exceeded", Status.FAIL),
    # KB 4498191 (550 5.7.705) / microsoft-graph-docs#6698 (550 5.7.708)
    (lambda w: w.ctl.set_tenant_exchange(w.tenant_id, outbound_blocked="tenant"), "outbound_blocked", Status.FAIL),
    (lambda w: w.ctl.set_tenant_exchange(w.tenant_id, outbound_blocked="ip"), "outbound_blocked", Status.FAIL),
], ids=["432-concurrency", "554-quota", "550-5.7.705", "550-5.7.708"])
def test_smtp_submission_limits(hoth, setup, code, status):
    w = hoth(checks={"token": {}, "smtp": {"canary_to": "ops@example.test", "canary_from": None}})
    w.rewrite(lambda d: d["integrations"][0]["checks"]["smtp"].update(canary_from=w.upn))
    setup(w)
    outcome = w.run("smtp")
    assert (outcome.status, outcome.code) == (status, code), outcome.summary
    assert not any(word in fix_of(w, outcome) for word in PERMISSION_WORDS), fix_of(w, outcome)
    if code == "throttled":
        assert outcome.retry_after_s and outcome.backoff_target == f"smtp:{w.upn}".lower()


def test_smtp_421_during_an_exchange_incident_is_the_service(hoth, sandbox):
    """`421 4.3.2 Service not active` at AUTH (jstedfast/MailKit#1106): the service, not the mailbox."""
    w = hoth(checks={"token": {}, "smtp": {}})
    incident = sandbox.control.open_incident("exchange")
    try:
        outcome = w.run("smtp")
    finally:
        sandbox.control.close_incident(incident)
    assert (outcome.status, outcome.code) == (Status.ERROR, "service_unavailable"), outcome.summary
    assert "service health" in fix_of(w, outcome).lower()
    assert not any(word in fix_of(w, outcome) for word in PERMISSION_WORDS)


def test_a_silent_server_is_always_a_timeout(hoth, sandbox):
    """A server that accepts TCP and never answers: `timeout` every time, never `unexpected_reply` (the socket
    watchdog and the run deadline no longer race)."""
    w = hoth(checks={"token": {}, "imap": {}, "pop": {}, "smtp": {}})
    w.rewrite(lambda d: d["defaults"].update(timeout="1s"))
    for kind in ("imap", "pop", "smtp"):
        sandbox.control.set_protocol_fault(kind, mode="hang")
    try:
        codes = [(kind, w.run(kind).code) for kind in ("imap", "pop", "smtp") for _ in range(2)]
    finally:
        for kind in ("imap", "pop", "smtp"):
            sandbox.control.set_protocol_fault(kind, mode="none")
    assert codes == [(k, "timeout") for k in ("imap", "pop", "smtp") for _ in range(2)]


def test_a_silent_server_is_a_timeout_when_the_socket_times_out_before_the_watchdog(hoth, sandbox, monkeypatch):
    """On a busy machine the watchdog thread that hangs up at the timeout can run late, and the socket's own timeout
    (the same length) fires first. smtplib reports that read timeout as SMTPServerDisconnected "Connection
    unexpectedly closed: timed out", which was classified as connection_refused ("refused the connection"): seen once
    in the suite on two processes. Whichever deadline fires first, a silent server is a timeout."""
    from mailwarden.checks import mailbox

    arm = mailbox._watchdog.arm
    monkeypatch.setattr(mailbox._watchdog, "arm", lambda timeout, conns: arm(timeout + 30, conns))  # always late
    w = hoth(checks={"token": {}, "imap": {}, "pop": {}, "smtp": {}})
    w.rewrite(lambda d: d["defaults"].update(timeout="1s"))
    for kind in ("imap", "pop", "smtp"):
        sandbox.control.set_protocol_fault(kind, mode="hang")
    try:
        outcomes = {kind: w.run(kind) for kind in ("imap", "pop", "smtp")}
    finally:
        for kind in ("imap", "pop", "smtp"):
            sandbox.control.set_protocol_fault(kind, mode="none")
    assert {k: o.code for k, o in outcomes.items()} == {"imap": "timeout", "pop": "timeout", "smtp": "timeout"}
    assert "closed the connection" not in outcomes["smtp"].summary


def test_a_hung_server_costs_two_timeouts_not_one_per_integration(world, sandbox):
    """Four integrations on one hung IMAP server, one at a time (per_tenant 1): the breaker keyed on (host, port,
    tenant) opens after two independent timeouts and the rest end at once, saying why."""
    w = world("app", app_permissions={"exchange": ["IMAP.AccessAsApp"]}, checks={"token": {}, "imap": {}},
              exchange=lambda ids: {"service_principals": [ids["app_id"]], "mailboxes": [
                  {"address": f"box{i}@{ids['domain']}", "type": "shared", "full_access": [ids["app_id"]]}
                  for i in range(1, 5)]})

    def four(d):
        d["defaults"]["timeout"] = "1s"
        d["concurrency"] = {"total": 4, "per_tenant": 1}
        base = d["integrations"][0]
        domain = base["mailbox"].split("@")[1]
        d["integrations"] = [{**base, "name": "subject" if i == 1 else f"subject{i}", "mailbox": f"box{i}@{domain}"}
                             for i in range(1, 5)]
    w.rewrite(four)
    runner = w.runtime.runner
    sandbox.control.set_protocol_fault("imap", mode="hang")
    before = sandbox.control.stats()["mail"]["imap"]["connections"]
    try:
        async def all_four():
            return await runner.run_many([(n, ["imap"]) for n in ("subject", "subject2", "subject3", "subject4")])
        results = asyncio.run(all_four())
    finally:
        sandbox.control.set_protocol_fault("imap", mode="none")
    assert [r.outcome.code for r in results] == ["timeout"] * 4
    not_tried = [r for r in results if r.outcome.metrics.get("breaker_open")]
    assert len(not_tried) == 2 and all("not tried" in r.outcome.summary for r in not_tried)
    assert sandbox.control.stats()["mail"]["imap"]["connections"] - before == 2
    runner.breaker._keys.clear()  # the breaker's probe time has not come yet; the server is back
    assert w.run("imap").status == Status.OK


def test_tls_name_mismatch_names_the_certificate_and_host(hoth):
    """A certificate that is not for the configured host name: the summary says so (the TLS fix then applies)."""
    w = hoth(checks={"token": {}, "imap": {}})
    w.rewrite(lambda d: d["endpoints"].update(imap=d["endpoints"]["imap"].replace("127.0.0.1", "vm")))
    outcome = w.run("imap")
    assert (outcome.status, outcome.code) == (Status.ERROR, "tls_error"), outcome.summary
    assert "not valid for the host name vm" in outcome.summary
