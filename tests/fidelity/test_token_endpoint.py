"""Entra ID's token endpoint as it really answers (M365_FACTS.md, corrected 2026-12-02: throttling and transient
replies, password expiry and reset, secret replication), played by the sandbox and read by the real checks."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from mailwarden.checks.base import Status
from mailwarden.checks.diagnoses import render_fix
from mailwarden.checks.facts import facts

CREDENTIAL_WORDS = ("New client secret", "Certificates & secrets", "API permissions", "Grant admin consent",
                    "Add-MailboxPermission")


def fix_of(w, outcome) -> str:
    cfg = w.runtime.config
    return " ".join(render_fix(outcome.code, **facts(cfg, cfg.integration("subject"), outcome)))


def smtp_app_world(world):
    return world("app", checks={"token": {}, "smtp": {}},
                 exchange=lambda ids: {"service_principals": [ids["app_id"]], "mailboxes": [
                     {"address": f"box@{ids['domain']}", "type": "shared", "full_access": [ids["app_id"]]}]})


def test_plain_text_429_is_throttled_and_the_app_waits(world):
    """HTTP 429 with a plain-text body `Too Many Requests` and Retry-After (AzureAD/microsoft-authentication-
    library-for-dotnet#2855). MSAL cannot parse it; mailwarden reads the status, honours the wait for every check
    of the app, and calls it neither `unclassified` nor a credential problem."""
    w = smtp_app_world(world)
    w.ctl.set_tenant(w.tenant_id, token_requests_per_app_minute=0)
    try:
        outcome = w.run("token")
        assert (outcome.status, outcome.code) == (Status.WARN, "throttled"), outcome.summary
        assert "HTTP 429 with plain text 'Too Many Requests'" in outcome.summary
        assert 0 < outcome.retry_after_s <= 61
        assert not any(word in fix_of(w, outcome) for word in CREDENTIAL_WORDS)
        asked = w.ctl.stats()["token_total"]
        smtp = w.run("smtp")  # the same app: waits instead of asking the token endpoint again
        assert (smtp.status, smtp.code) == (Status.WARN, "throttled") and "not run" in smtp.summary
        assert w.ctl.stats()["token_total"] == asked
    finally:
        w.ctl.set_tenant(w.tenant_id, token_requests_per_app_minute=None)


@pytest.mark.parametrize(("effect", "words"), [("html", "an HTML page"), ("empty", "an empty body"),
                                               ("busy", "AADSTS90033")])
def test_token_endpoint_incident_is_a_service_error(world, sandbox, effect, words):
    """During an Entra ID incident the token endpoint answers 5xx with an HTML page or an empty body (MSAL raises
    'HTTP Error: 503'), or AADSTS90033 `temporarily_unavailable` with HTTP 503 (Azure/azure-sdk-for-python#14241).
    Each is `error` `service_unavailable`: nothing is known about the credential."""
    w = smtp_app_world(world)
    incident = sandbox.control.open_incident("entra", effect=effect)
    try:
        outcome = w.run("token")
    finally:
        sandbox.control.close_incident(incident)
    assert (outcome.status, outcome.code) == (Status.ERROR, "service_unavailable"), outcome.summary
    assert words in outcome.summary
    fix = fix_of(w, outcome)
    assert "service health" in fix.lower() and not any(word in fix for word in CREDENTIAL_WORDS)


def test_loop_detection_and_tenant_throttling_are_throttled(world):
    """AADSTS50196 'client request loop' (HTTP 400 invalid_grant: MSAL.NET#2353, azure-pipelines-tasks#17620) and
    AADSTS90055 (tenant throttling): `warn` `throttled`, with a wait."""
    w = smtp_app_world(world)
    w.ctl.set_tenant(w.tenant_id, identical_requests_limit=1)
    try:
        assert w.run("token").status == Status.OK
        outcome = w.run("token")
    finally:
        w.ctl.set_tenant(w.tenant_id, identical_requests_limit=None)
    assert (outcome.status, outcome.code) == (Status.WARN, "throttled"), outcome.summary
    assert "AADSTS50196" in outcome.summary and outcome.retry_after_s
    w = smtp_app_world(world)
    w.ctl.set_tenant(w.tenant_id, token_requests_per_tenant_minute=0)
    try:
        outcome = w.run("token")
    finally:
        w.ctl.set_tenant(w.tenant_id, token_requests_per_tenant_minute=None)
    assert (outcome.status, outcome.code) == (Status.WARN, "throttled") and "AADSTS90055" in outcome.summary


def test_password_expiry_keeps_refresh_working_and_a_reset_revokes(world):
    """M365_FACTS.md (corrected): password expiry revokes nothing (50055 is an interactive sign-in error); an
    admin password reset revokes password-based refresh tokens: AADSTS50173 on the next refresh."""
    w = world("delegated")
    w.sign_in()
    w.ctl.patch_user(w.upn, password_expired=True)
    assert w.run("token").status == Status.OK  # no false alarm on password expiry
    w.ctl.reset_password(w.upn, password="Reset-By-Admin-1!")
    outcome = w.run("token")
    assert (outcome.status, outcome.code) == (Status.FAIL, "refresh_token_revoked"), outcome.summary
    assert "AADSTS50173" in outcome.summary
    fix = fix_of(w, outcome)
    assert "password reset" in fix and "Re-authorise mailwarden's own token" in fix


def test_a_brand_new_secret_is_replicating_not_invalid(world):
    """A new client secret is refused (7000215) for seconds to about two minutes while it replicates
    (M365_FACTS.md). Graph shows it as just added: `warn` `secret_replicating`, checked again in seconds; once the
    grace (5 minutes) has passed, the refusal counts."""
    w = smtp_app_world(world)
    w.ctl.set_tenant(w.tenant_id, secret_replication_s=3600)  # it will not replicate during this test
    new = w.ctl.add_secret(w.app_id, display_name="rotated today")
    (w.dir / "secrets" / "subject").write_text(new["value"])
    outcome = w.run("token")
    assert (outcome.status, outcome.code) == (Status.WARN, "secret_replicating"), outcome.summary
    assert outcome.recheck_s and outcome.recheck_s <= 15
    assert "Nothing to do yet" in fix_of(w, outcome)
    smtp = w.run("smtp")  # the mailbox checks of the app read it the same way
    assert (smtp.status, smtp.code) == (Status.WARN, "secret_replicating"), smtp.summary
    later = datetime.now(UTC) + timedelta(minutes=6)
    w.runtime.runner.clock = lambda: later
    outcome = w.run("token")
    assert (outcome.status, outcome.code) == (Status.FAIL, "secret_invalid"), outcome.summary


def test_a_tenant_without_exchange_online_is_resource_not_found(world):
    """AADSTS500011 'The resource principal named ... was not found in the tenant' (invalid_resource;
    laravel-azure-middleware#51): Office 365 Exchange Online's service principal is missing."""
    w = smtp_app_world(world)
    w.ctl.set_tenant(w.tenant_id, exchange_online=False)
    outcome = w.run("token")
    assert (outcome.status, outcome.code) == (Status.FAIL, "resource_not_found"), outcome.summary
    assert "Office 365 Exchange Online" in fix_of(w, outcome)


def test_an_unreachable_login_host_is_one_cause_for_every_check(world):
    """A login host that refuses connections is `idp_unreachable` for the token check and for every mailbox check
    (one cause), never `connection_refused` with advice about the IMAP/POP/SMTP ports."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]  # nothing listens here once the socket is closed
    w = smtp_app_world(world)
    w.rewrite(lambda d: d["endpoints"].update(authority=f"https://127.0.0.1:{closed}"))
    outcome = w.run("token")
    assert (outcome.status, outcome.code) == (Status.ERROR, "idp_unreachable"), outcome.summary
    assert "993" not in fix_of(w, outcome) and "refused the connection" in outcome.summary
    assert w.run("smtp").code == "blocked_by_token"  # its mailbox checks wait for it: one cause, one alert
    w.rewrite(lambda d: d["integrations"][0].update(checks={"smtp": {}}))  # no token check to wait for
    outcome = w.run("smtp")
    assert (outcome.status, outcome.code) == (Status.ERROR, "idp_unreachable"), outcome.summary
