"""The token check against the sandbox: every AADSTS code of the catalog, end to end.

Each case changes the directory state the way it happens in a real tenant (a secret expires, an admin
revokes sessions, consent is removed) and asserts the diagnosis mailwarden gives, with a fix.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest

from mailwarden.checks.base import Status
from mailwarden.checks.diagnoses import get


def app_case(mutate, **make):
    return ("app", mutate, make)


def user_case(mutate, **make):
    return ("delegated", mutate, make)


def _wrong_secret(w):
    (w.dir / "secrets" / "subject").write_text(w.key_id)  # the Secret ID pasted instead of the Value


def _wrong_tenant(w):
    w.rewrite(lambda d: d["tenants"]["t"].update(tenant_id="00000000-1111-2222-3333-444444444444"))


def _delete_cert(w):
    w.ctl.delete_certificate(w.app_id, w.key_id)


def _remove_consent(w):
    w.ctl.remove_delegated_permission(w.app_id, "exchange", "POP.AccessAsUser.All")


CASES = {
    7000222: app_case(lambda w: w.ctl.expire_secret(w.app_id, w.key_id)),
    7000215: app_case(_wrong_secret),
    700016: app_case(lambda w: w.ctl.delete_app(w.app_id)),
    7000112: app_case(lambda w: w.ctl.disable_app(w.app_id)),
    90002: app_case(_wrong_tenant),
    700027: app_case(_delete_cert, certificate=True),
    70008: user_case(lambda w: w.ctl.expire_refresh_tokens(w.upn)),
    700082: user_case(lambda w: w.ctl.age_refresh_tokens(w.upn, 91)),
    50173: user_case(lambda w: w.ctl.revoke_user_sessions(w.upn)),
    70043: user_case(lambda w: (w.ctl.patch_user(w.upn, signin_frequency_hours=1),
                                w.ctl.age_refresh_tokens(w.upn, 0.5))),
    65001: user_case(_remove_consent),
    50057: user_case(lambda w: w.ctl.patch_user(w.upn, enabled=False)),
    530035: user_case(lambda w: w.ctl.patch_user(w.upn, blocked_by_security_defaults=True)),
    50053: user_case(lambda w: w.ctl.patch_user(w.upn, locked=True)),
    53003: user_case(lambda w: w.ctl.patch_user(w.upn, ca_blocked=True)),
    50076: user_case(lambda w: w.ctl.patch_user(w.upn, mfa="required")),
    50079: user_case(lambda w: w.ctl.patch_user(w.upn, mfa="enrollment_required")),
    50074: user_case(lambda w: w.ctl.patch_user(w.upn, mfa="not_passed")),
    50105: user_case(lambda w: (w.ctl.patch_app(w.app_id, assignment_required=True),
                                w.ctl.unassign_user(w.app_id, w.upn))),
}

EXPECTED = {
    7000222: "secret_expired", 7000215: "secret_invalid", 700016: "app_not_found", 7000112: "app_disabled",
    90002: "tenant_not_found", 700027: "certificate_invalid", 70008: "refresh_token_expired",
    700082: "refresh_token_expired", 50173: "refresh_token_revoked", 70043: "signin_frequency",
    65001: "consent_missing", 50057: "user_disabled", 530035: "security_defaults_blocked",
    50053: "user_locked", 53003: "conditional_access_blocked", 50076: "mfa_required", 50079: "mfa_required",
    50074: "mfa_required", 50105: "user_not_assigned",
}


@pytest.mark.parametrize("aadsts", sorted(CASES), ids=str)
def test_aadsts_code_end_to_end(world, aadsts):
    flow, mutate, make = CASES[aadsts]
    w = world(flow, **make)
    if flow == "delegated":
        w.sign_in()
        if aadsts == 50105:
            w.ctl.assign_user(w.app_id, w.upn)  # assigned at sign-in; unassigned by the mutation
    first = w.run("token")
    assert first.status == Status.OK, first.summary
    mutate(w)
    outcome = w.run("token")
    assert outcome.status == Status.FAIL, outcome.summary
    assert outcome.code == EXPECTED[aadsts], outcome.summary
    if aadsts != 90002:
        assert aadsts in outcome.metrics["error_codes"]
    assert f"AADSTS{aadsts}" in outcome.summary
    assert get(outcome.code).fix, "every failure comes with fix steps"
    assert w.secret not in outcome.summary


def test_admin_consent_required_90094_at_sign_in(world):
    """Entra answers 90094 at the sign-in (not on refresh) when consent is missing and users may not
    consent: the reauthorisation is refused with the consent diagnosis, nothing stored."""
    from mailwarden.monitor.reauth import ReauthError

    w = world("delegated", user_consent=False)
    _remove_consent(w)
    with pytest.raises(ReauthError) as info:
        w.sign_in()
    assert info.value.code == "consent_missing" and "AADSTS90094" in info.value.message()
    assert w.runtime.tokens.stored_row("subject") is None


def test_assertion_out_of_time_range_700024(world, monkeypatch):
    """A client assertion whose exp lies in the past (the monitor's clock is wrong) -> 700024."""
    import time

    import msal.oauth2cli.assertion as assertion

    w = world("app", certificate=True)
    assert w.run("token").status == Status.OK
    real = time.time
    monkeypatch.setattr(assertion.time, "time", lambda: real() - 3600)
    outcome = w.run("token")
    assert (outcome.status, outcome.code) == (Status.FAIL, "certificate_invalid")
    assert 700024 in outcome.metrics["error_codes"]


def test_app_only_consent_removed_names_the_role(world):
    w = world("app")
    assert w.run("token").status == Status.OK
    w.ctl.remove_app_permission(w.app_id, "exchange", "SMTP.SendAsApp")
    outcome = w.run("token")
    assert (outcome.status, outcome.code) == (Status.FAIL, "consent_missing")
    assert "SMTP.SendAsApp" in outcome.summary and outcome.metrics["permission"] == "SMTP.SendAsApp"


def test_token_check_always_asks_the_token_endpoint(world):
    w = world("app")
    w.ctl.reset_stats()
    for _ in range(3):
        assert w.run("token").status == Status.OK
    stats = w.ctl.stats()
    assert stats["token"]["client_credentials"][w.app_id] == 3


def test_delegated_refresh_token_rotates_and_is_saved_encrypted(world):
    w = world("delegated")
    w.sign_in()
    store = w.runtime.tokens
    before = store.stored_row("subject").ciphertext
    assert w.run("token").status == Status.OK
    after = store.stored_row("subject").ciphertext
    assert after != before, "the rotated refresh token is saved"
    # what is stored is ciphertext: no refresh token, no JWT, no account secret in the database file
    raw = (w.dir / "mailwarden.db").read_bytes() + (w.dir / "mailwarden.db-wal").read_bytes()
    # Fernet ciphertext is base64 and may contain "eyJ" by chance, never a dotted JWT
    assert not re.search(rb"eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}\.", raw)
    assert b'"refresh_token"' not in raw.lower() and w.secret.encode() not in raw
    # a new process (fresh runtime) reads the stored token and still works
    w.open()
    assert w.run("token").status == Status.OK


def test_no_refresh_token_yet_says_reauth(world):
    w = world("delegated")
    outcome = w.run("token")
    assert (outcome.status, outcome.code) == (Status.FAIL, "no_refresh_token")
    assert get("no_refresh_token").needs_reauth


def test_identity_provider_down_is_error_not_fail(world):
    w = world("app")
    w.rewrite(lambda d: d["endpoints"].update(authority="https://127.0.0.1:9"))
    outcome = w.run("token")
    assert outcome.status == Status.ERROR
    assert outcome.code in ("connection_refused", "idp_unreachable")


def test_throttled_token_endpoint_is_reported(world):
    w = world("app")
    w.ctl.add_fault(f"/{w.tenant_id}/oauth2/v2.0/token", status=429, count=1, retry_after=7)
    outcome = w.run("token")
    w.ctl.clear_faults()
    assert (outcome.status, outcome.code) == (Status.WARN, "throttled")
    assert outcome.retry_after_s == 7 and outcome.backoff_target
    state = w.runtime.store.checks.get_state("subject", "token")
    assert state.not_before is not None, "the scheduler will wait before asking again"
    asked = w.ctl.stats()["token_total"]
    waiting = w.run("token")  # within the Retry-After: not asked again
    assert (waiting.status, waiting.code) == (Status.WARN, "throttled") and "not run" in waiting.summary
    assert w.ctl.stats()["token_total"] == asked
    runner = w.runtime.runner
    later = datetime.now(UTC) + timedelta(seconds=8)
    runner.clock = lambda: later
    assert w.run("token").status == Status.OK
