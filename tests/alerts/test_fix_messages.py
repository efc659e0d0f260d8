"""Alert notices that must not claim more than mailwarden knows: the recovery of a delegated integration is
mailwarden's own token (the consuming system's sign-in is still to do), a flapping notice names no diagnosis it does
not have, and the monitor app's own token failure is not a missing permission. Rendered through alerts.messages as
the dispatcher renders them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from mailwarden.alerts import messages
from mailwarden.alerts.policy import Notice
from mailwarden.alerts.records import Incident
from mailwarden.checks import diagnoses
from mailwarden.monitor.config import Config

NOW = datetime(2026, 12, 2, 9, 0, tzinfo=UTC)
ACCOUNT = "b2c-support@contoso.com"
# each system's own re-authentication, from its guide in /work/shared/seeds, and the words only it uses
SIGN_IN = {
    "Oracle B2C Service": ("mailbox editor > Authenticate", ("OAuth Scripts",)),
    "House-on-the-Hill helpdesk": ("OAuth Scripts > the oauth: script > Auth", ("mailbox editor", "CUSTOM_CFG")),
    "Acme Ticketing": ("In Acme Ticketing, sign in again as " + ACCOUNT, ("OAuth Scripts", "mailbox editor")),
}
# codes after which the consuming system's own token needs a sign-in too (its fix signs it in again), and codes
# that concern mailwarden's copy only
SYSTEM_TOO = ("refresh_token_revoked", "refresh_token_expired", "signin_frequency", "mfa_required", "password_expired",
              "user_disabled", "user_locked", "security_defaults_blocked", "wrong_account")
MAILWARDEN_ONLY = ("no_refresh_token", "refresh_token_invalid", "public_client_token")


def config(system: str = "Oracle B2C Service", flow: str = "delegated", monitor: bool = True) -> Config:
    integration = {"name": "oracle-b2c-support", "app": "app", "flow": flow, "system": system,
                   "mailbox": "support@contoso.com", "checks": {"token": {}, "pop": {}, "secret_expiry": {}}}
    if flow == "delegated":
        integration["account"] = ACCOUNT
    return Config.model_validate({
        "database": "sqlite:///:memory:", "web": {"base_url": "https://mw.contoso.com"},
        "tenants": {"contoso": {"tenant_id": "11111111-2222-3333-4444-555555555555",
                                **({"monitor_app": "mailwarden"} if monitor else {})}},
        "apps": {"app": {"tenant": "contoso", "client_id": "66666666-7777-8888-9999-000000000000",
                         "secret": "env:APP"},
                 "mailwarden": {"tenant": "contoso", "client_id": "12121212-3434-5656-7878-909090909090",
                                "secret": "env:MONITOR"}},
        "integrations": [integration]})


def resolved(code: str, reason: str = "recovered", check: str = "token") -> Incident:
    return Incident(id=3, key=f"int:oracle-b2c-support:{code}", kind="single", code=code, members=[],
                    affected=["oracle-b2c-support"], opened_at=NOW - timedelta(hours=2), status="resolved",
                    resolved_at=NOW, resolve_reason=reason)


def render(cfg: Config, kind: str, inc: Incident, checks: dict | None = None) -> messages.Message:
    return messages.render(Notice(kind, inc, 2), messages.Context(cfg, checks or {}))


@pytest.mark.parametrize("system", sorted(SIGN_IN))
@pytest.mark.parametrize("code", SYSTEM_TOO)
def test_a_delegated_recovery_is_mailwardens_token_with_the_systems_sign_in_still_to_do(code, system):
    """After mailwarden's own token for oracle-b2c-support was re-authorised a RESOLVED notice went out while Oracle
    B2C Service's own token was still revoked: the notice says whose token works and what is left, in that system's
    own screens."""
    msg = render(config(system), "resolved", resolved(code))
    step, foreign = SIGN_IN[system]
    assert msg.title.startswith("[mailwarden] RESOLVED (mailwarden's own token only)"), msg.title
    for body in (msg.text, msg.markdown):
        assert "mailwarden's own token works again" in body
        assert "Still to do" in body and step in body and ACCOUNT in body, body
        assert not any(word in body for word in foreign), body


@pytest.mark.parametrize("code", MAILWARDEN_ONLY)
def test_a_recovery_of_mailwardens_copy_only_is_plainly_resolved(code):
    msg = render(config(), "resolved", resolved(code))
    assert msg.title.startswith("[mailwarden] RESOLVED:") and "Still to do" not in msg.text


@pytest.mark.parametrize(("flow", "code", "reason"), [
    ("app", "secret_expired", "recovered"),  # app-only: no sign-in anywhere
    ("delegated", "secret_expired", "recovered"),  # a new secret: the system's sign-in survives it
    ("delegated", "refresh_token_revoked", "paused"),  # closed without a recovery: nothing is known
    ("delegated", "refresh_token_revoked", "removed"),
])
def test_no_sign_in_is_left_to_do_where_none_applies(flow, code, reason):
    msg = render(config(flow=flow), "resolved", resolved(code, reason))
    assert msg.title.startswith("[mailwarden] RESOLVED:") and "Still to do" not in msg.text, msg.text
    assert "mailwarden's own token works again" not in msg.text


def test_after_recovery_is_the_catalogs_system_sign_in_for_delegated_only():
    facts = {"system": "Oracle B2C Service", "account": ACCOUNT, "mailbox": "support@contoso.com"}
    assert diagnoses.after_recovery("refresh_token_revoked", flow="app", **facts) == []
    [step] = diagnoses.after_recovery("refresh_token_revoked", flow="delegated", **facts)
    assert "mailbox editor > Authenticate" in step and "click OK" in step
    assert diagnoses.after_recovery("secret_expired", flow="delegated", **facts) == []


def flapping(code: str, members: list[dict]) -> Incident:
    return Incident(id=9, key="flap:oracle-b2c-support:pop", kind="flapping", code=code, members=members,
                    affected=["oracle-b2c-support"], opened_at=NOW, status="open")


def test_a_flapping_notice_keyed_on_a_recovery_names_no_diagnosis_it_does_not_have():
    """It read "Unrecognised failure (ok)" with the generic steps and a link mangled to ``code=[redacted]``."""
    inc = flapping("ok", [{"integration": "oracle-b2c-support", "check": "pop", "status": "ok", "code": None,
                           "since": NOW.isoformat(), "changed": NOW.isoformat()}])
    msg = render(config(), "flapping", inc)
    for text in (msg.title, msg.text, msg.markdown):
        assert "Unrecognised" not in text and "(ok)" not in text and "[redacted]" not in text, text
    assert msg.title.startswith("[mailwarden] FLAPPING: pop is flapping - oracle-b2c-support")
    assert "Diagnosis: none: this notice holds no failure of the check" in msg.text
    assert "https://mw.contoso.com/integrations/oracle-b2c-support" in msg.text
    assert "until it has not changed state for 1 h" in msg.text


def test_a_flapping_notice_with_a_failure_on_record_names_that_diagnosis_and_its_fix():
    inc = flapping("ok", [{"integration": "oracle-b2c-support", "check": "pop", "status": "fail",
                           "code": "auth_failed", "since": NOW.isoformat(), "changed": NOW.isoformat()}])
    msg = render(config(), "flapping", inc, {("oracle-b2c-support", "pop"): messages.CheckFacts(
        "POP login as support@contoso.com refused: -ERR Authentication failure", None, {"phases_ms": {}})})
    assert "pop is flapping (Mailbox login refused)" in msg.title
    assert "Diagnosis: Mailbox login refused (auth_failed)" in msg.text
    assert "-PopEnabled $true" in msg.text and "Unrecognised" not in msg.text


def test_an_unclassified_alert_keeps_its_lookup_link_readable():
    inc = Incident(id=4, key="int:oracle-b2c-support:unclassified", kind="single", code="unclassified", members=[
        {"integration": "oracle-b2c-support", "check": "pop", "status": "error", "code": "unclassified",
         "since": NOW.isoformat()}], affected=["oracle-b2c-support"], opened_at=NOW, status="open")
    msg = render(config(), "opened", inc)
    assert "[redacted]" not in msg.text and "reference-error-codes" in msg.text


@pytest.mark.parametrize(("summary", "expected", "absent"), [
    ("Graph could not be read (the monitor app mailwarden got no Graph token (AADSTS7000222: secret_expired)), and "
     "no secret_expires_on is configured: expiry unknown",
     ("got no token itself (AADSTS7000222: Client secret expired)", "App registrations > mailwarden > Certificates "
      "& secrets > New client secret"), "Application.Read.All"),
    ("Graph could not be read (Graph answered 403 Authorization_RequestDenied: Insufficient privileges to complete "
     "the operation (monitor app mailwarden needs Application.Read.All)), and no secret_expires_on is configured: "
     "expiry unknown", ("App registrations > mailwarden > API permissions", "Application.Read.All"), "New client"),
])
def test_the_monitor_apps_own_token_failure_is_not_a_missing_permission(summary, expected, absent):
    """When the monitor app itself cannot get a token, adding Application.Read.All changes nothing."""
    inc = Incident(id=5, key="monitor:contoso:graph_unreadable", kind="monitor", code="graph_unreadable", members=[
        {"integration": "oracle-b2c-support", "check": "secret_expiry", "status": "error", "code": "graph_unreadable",
         "since": NOW.isoformat()}], affected=["oracle-b2c-support"], opened_at=NOW, status="open")
    msg = render(config(), "opened", inc, {("oracle-b2c-support", "secret_expiry"): messages.CheckFacts(
        summary, None, {"source": None})})
    fix = msg.text[msg.text.index("How to fix:"):]
    assert all(words in fix for words in expected), fix
    assert absent not in fix, fix
