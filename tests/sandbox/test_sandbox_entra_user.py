"""Delegated flows: auth code + PKCE, rotating refresh tokens, device code, and every user-state code."""

from __future__ import annotations

import hashlib
from urllib.parse import parse_qs, urlsplit

import jwt
import pytest

from mailwarden_sandbox.browser import SignInError, device_login, sign_in
from tests.sandbox.helpers import (
    OUTLOOK,
    PASSWORD,
    REDIRECT,
    STRICT_TENANT,
    TENANT,
    assert_aad,
    cca,
    new_app,
    new_user,
    pca,
    sign_in_code,
    user_tokens,
)


def claims_of(token: str) -> dict:
    return jwt.decode(token, options={"verify_signature": False})


def redirect_error(url: str) -> tuple[str, str]:
    q = {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}
    assert url.startswith(REDIRECT) and "code" not in q, url
    return q["error"], q["error_description"]


def test_auth_code_pkce_issues_outlook_token_id_token_and_account(sb):
    app_id, secret = new_app(sb)
    upn = new_user(sb)
    app = cca(sb, app_id, secret)
    flow, response = sign_in_code(sb, app, upn)
    assert response["state"] == flow["state"] and "session_state" in response
    result = app.acquire_token_by_auth_code_flow(flow, response)
    at = claims_of(result["access_token"])
    assert at["aud"] == "https://outlook.office.com" and at["idtyp"] == "user"
    assert at["scp"] == at["scope"] == "IMAP.AccessAsUser.All POP.AccessAsUser.All SMTP.Send"
    assert at["upn"] == at["unique_name"] == at["preferred_username"] == upn and at["ver"] == "1.0"
    assert "roles" not in at and at["tid"] == TENANT
    assert result["refresh_token"] and result["id_token_claims"]["preferred_username"] == upn
    # MSAL sends the SHA-256 of its nonce and checks it comes back
    assert result["id_token_claims"]["nonce"] == hashlib.sha256(flow["nonce"].encode()).hexdigest()
    assert result["id_token_claims"]["iss"] == f"{sb.base_url}/{TENANT}/v2.0"
    accounts = app.get_accounts()
    assert [a["username"] for a in accounts] == [upn]
    again = app.acquire_token_silent_with_error(OUTLOOK, account=accounts[0], force_refresh=True)
    assert "access_token" in again and again["access_token"] != result["access_token"]


def test_form_post_response_mode(sb):
    app_id, secret = new_app(sb)
    upn = new_user(sb)
    app = cca(sb, app_id, secret)
    flow = app.initiate_auth_code_flow(OUTLOOK, redirect_uri=REDIRECT, login_hint=upn, response_mode="form_post")
    url = sign_in(flow["auth_uri"], upn, PASSWORD, sb.ca_path)
    response = {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}
    assert "access_token" in app.acquire_token_by_auth_code_flow(flow, response)


def test_pkce_mismatch_code_reuse_and_redirect_mismatch(sb, http):
    app_id, secret = new_app(sb)
    upn = new_user(sb)
    app = cca(sb, app_id, secret)
    flow, response = sign_in_code(sb, app, upn)
    url = f"{sb.base_url}/{TENANT}/oauth2/v2.0/token"
    data = {"grant_type": "authorization_code", "client_id": app_id, "client_secret": secret,
            "code": response["code"], "redirect_uri": REDIRECT, "code_verifier": "x" * 43,
            "scope": " ".join(OUTLOOK)}
    assert_aad(http.post(url, data=data).json(), 501481, "invalid_grant")
    flow, response = sign_in_code(sb, app, upn)
    data.update(code=response["code"], code_verifier=flow["code_verifier"])
    assert "access_token" in http.post(url, data=data).json()
    assert_aad(http.post(url, data=data).json(), 54005)
    with pytest.raises(SignInError) as info:
        sign_in_code(sb, app, upn, redirect="https://evil.example/cb")
    assert info.value.code == 50011
    with pytest.raises(SignInError) as info:
        sign_in_code(sb, app, upn, password="wrong")
    assert info.value.code == 50126


def test_refresh_tokens_rotate_and_old_ones_stay_valid(sb):
    app_id, secret = new_app(sb)
    upn = new_user(sb)
    first = user_tokens(sb, app_id, secret, upn)
    second = cca(sb, app_id, secret).acquire_token_by_refresh_token(first["refresh_token"], OUTLOOK)
    third = cca(sb, app_id, secret).acquire_token_by_refresh_token(second["refresh_token"], OUTLOOK)
    assert len({first["refresh_token"], second["refresh_token"], third["refresh_token"]}) == 3
    again = cca(sb, app_id, secret).acquire_token_by_refresh_token(first["refresh_token"], OUTLOOK)
    assert "access_token" in again
    # a confidential client must still authenticate on refresh
    assert_aad(cca(sb, app_id, "bad").acquire_token_by_refresh_token(first["refresh_token"], OUTLOOK), 7000215)


def test_session_revocation_expiry_and_inactivity(sb):
    app_id, secret = new_app(sb)
    upn = new_user(sb)
    rt = user_tokens(sb, app_id, secret, upn)["refresh_token"]
    sb.control.age_refresh_tokens(upn, 89)
    assert "access_token" in cca(sb, app_id, secret).acquire_token_by_refresh_token(rt, OUTLOOK)
    sb.control.age_refresh_tokens(upn, 1)
    assert_aad(cca(sb, app_id, secret).acquire_token_by_refresh_token(rt, OUTLOOK), 700082, "invalid_grant")

    rt = user_tokens(sb, app_id, secret, upn)["refresh_token"]
    sb.control.expire_refresh_tokens(upn)
    assert_aad(cca(sb, app_id, secret).acquire_token_by_refresh_token(rt, OUTLOOK), 70008, "invalid_grant")

    rt = user_tokens(sb, app_id, secret, upn)["refresh_token"]
    sb.control.revoke_user_sessions(upn)
    assert_aad(cca(sb, app_id, secret).acquire_token_by_refresh_token(rt, OUTLOOK), 50173, "invalid_grant")
    rt = user_tokens(sb, app_id, secret, upn)["refresh_token"]  # a new sign-in after the revocation works
    assert "access_token" in cca(sb, app_id, secret).acquire_token_by_refresh_token(rt, OUTLOOK)

    sb.control.patch_user(upn, signin_frequency_hours=12)
    sb.control.age_refresh_tokens(upn, 1)
    assert_aad(cca(sb, app_id, secret).acquire_token_by_refresh_token(rt, OUTLOOK), 70043, "invalid_grant")


USER_STATES = [
    ({"enabled": False}, 50057),
    ({"locked": True}, 50053),
    ({"blocked_by_security_defaults": True}, 530035),
    ({"ca_blocked": True}, 53003),
    ({"mfa": "required"}, 50076),
    ({"mfa": "enrollment_required"}, 50079),
    ({"mfa": "not_passed"}, 50074),
]


@pytest.mark.parametrize(("patch", "code"), USER_STATES, ids=[str(c) for _, c in USER_STATES])
def test_user_state_codes_on_refresh_and_sign_in(sb, patch, code):
    app_id, secret = new_app(sb)
    upn = new_user(sb)
    rt = user_tokens(sb, app_id, secret, upn)["refresh_token"]
    sb.control.patch_user(upn, **patch)
    assert_aad(cca(sb, app_id, secret).acquire_token_by_refresh_token(rt, OUTLOOK), code, "invalid_grant")
    app = cca(sb, app_id, secret)
    flow = app.initiate_auth_code_flow(OUTLOOK, redirect_uri=REDIRECT, login_hint=upn)
    error, description = redirect_error(sign_in(flow["auth_uri"], upn, PASSWORD, sb.ca_path))
    assert description.startswith(f"AADSTS{code}:")
    assert error == ("interaction_required" if code in (50076, 50079, 50074) else "access_denied")


def test_password_expiry_stops_sign_in_not_refresh_and_a_reset_revokes(sb):
    """M365_FACTS.md (corrected 2026-12-02): password expiry revokes nothing (50055 is an interactive sign-in
    error); an admin password reset revokes password-based refresh tokens (50173 on the next refresh)."""
    app_id, secret = new_app(sb)
    upn = new_user(sb)
    rt = user_tokens(sb, app_id, secret, upn)["refresh_token"]
    sb.control.patch_user(upn, password_expired=True)
    assert "access_token" in cca(sb, app_id, secret).acquire_token_by_refresh_token(rt, OUTLOOK)
    flow = cca(sb, app_id, secret).initiate_auth_code_flow(OUTLOOK, redirect_uri=REDIRECT, login_hint=upn)
    _, description = redirect_error(sign_in(flow["auth_uri"], upn, PASSWORD, sb.ca_path))
    assert description.startswith("AADSTS50055:")
    sb.control.reset_password(upn, password="Changed-Pa55!")
    assert_aad(cca(sb, app_id, secret).acquire_token_by_refresh_token(rt, OUTLOOK), 50173, "invalid_grant")


def test_mfa_satisfied_interactively_keeps_refresh_working(sb):
    app_id, secret = new_app(sb)
    upn = new_user(sb, mfa="required", mfa_code="424242")
    result = user_tokens(sb, app_id, secret, upn, mfa_code="424242")
    assert claims_of(result["access_token"])["amr"] == ["pwd", "mfa"]
    assert "access_token" in cca(sb, app_id, secret).acquire_token_by_refresh_token(result["refresh_token"], OUTLOOK)


def test_assignment_required_50105(sb):
    app_id, secret = new_app(sb)
    upn = new_user(sb)
    rt = user_tokens(sb, app_id, secret, upn)["refresh_token"]
    sb.control.patch_app(app_id, assignment_required=True)
    assert_aad(cca(sb, app_id, secret).acquire_token_by_refresh_token(rt, OUTLOOK), 50105, "invalid_grant")
    sb.control.assign_user(app_id, upn)
    assert "access_token" in cca(sb, app_id, secret).acquire_token_by_refresh_token(rt, OUTLOOK)


def test_consent_removed_65001_and_user_consent(sb):
    app_id, secret = new_app(sb)
    upn = new_user(sb)
    rt = user_tokens(sb, app_id, secret, upn)["refresh_token"]
    sb.control.remove_delegated_permission(app_id, "exchange", "SMTP.Send")
    result = cca(sb, app_id, secret).acquire_token_by_refresh_token(rt, OUTLOOK)
    assert_aad(result, 65001, "invalid_grant")
    assert result["suberror"] == "consent_required"
    imap_only = cca(sb, app_id, secret).acquire_token_by_refresh_token(rt, OUTLOOK[:1])
    assert claims_of(imap_only["access_token"])["scp"] == "IMAP.AccessAsUser.All POP.AccessAsUser.All"
    # the tenant allows user consent: signing in again with the consent box ticked grants it for this user
    result = user_tokens(sb, app_id, secret, upn)
    assert "SMTP.Send" in claims_of(result["access_token"])["scp"].split()
    app = cca(sb, app_id, secret)
    flow = app.initiate_auth_code_flow(OUTLOOK, redirect_uri=REDIRECT, login_hint=(other := new_user(sb)))
    error, description = redirect_error(sign_in(flow["auth_uri"], other, PASSWORD, sb.ca_path, consent=False))
    assert error == "access_denied" and description.startswith("AADSTS65004:")


def test_admin_consent_required_90094(sb):
    app_id, secret = new_app(sb, tenant=STRICT_TENANT, delegated_permissions={"exchange": ["IMAP.AccessAsUser.All"]})
    upn = new_user(sb, tenant=STRICT_TENANT)
    app = cca(sb, app_id, secret, tenant=STRICT_TENANT)
    flow = app.initiate_auth_code_flow(OUTLOOK, redirect_uri=REDIRECT, login_hint=upn)
    error, description = redirect_error(sign_in(flow["auth_uri"], upn, PASSWORD, sb.ca_path))
    assert error == "access_denied" and description.startswith("AADSTS90094:")
    sb.control.add_delegated_permission(app_id, "exchange", "SMTP.Send")
    flow, response = sign_in_code(sb, app, upn)
    assert "access_token" in app.acquire_token_by_auth_code_flow(flow, response)


def test_device_code_public_client(sb, http):
    app_id, _ = new_app(sb, secret=False, public_client=True)
    upn = new_user(sb)
    app = pca(sb, app_id)
    flow = app.initiate_device_flow(OUTLOOK)
    assert flow["verification_uri"] == f"{sb.base_url}/devicelogin" and flow["user_code"] in flow["message"]
    poll = {"grant_type": "urn:ietf:params:oauth:grant-type:device_code", "client_id": app_id,
            "device_code": flow["device_code"]}
    url = f"{sb.base_url}/{TENANT}/oauth2/v2.0/token"
    pending = http.post(url, data=poll).json()
    assert pending["error"] == "authorization_pending" and pending["error_codes"] == [70016]
    sb.control.approve_device_code(flow["user_code"], upn)
    result = app.acquire_token_by_device_flow(flow)
    assert claims_of(result["access_token"])["upn"] == upn and result["refresh_token"]
    # through the /devicelogin page, as a person would
    flow = app.initiate_device_flow(OUTLOOK)
    with pytest.raises(SignInError):
        device_login(flow["verification_uri"], flow["user_code"], upn, "wrong", sb.ca_path)
    device_login(flow["verification_uri"], flow["user_code"], upn, PASSWORD, sb.ca_path)
    assert "access_token" in app.acquire_token_by_device_flow(flow)
    # expiry
    flow = app.initiate_device_flow(OUTLOOK)
    sb.control.expire_device_code(flow["user_code"])
    assert_aad(app.acquire_token_by_device_flow(flow), 70019, "expired_token")
    # user state applies to the device code grant too
    flow = app.initiate_device_flow(OUTLOOK)
    sb.control.approve_device_code(flow["user_code"], upn)
    sb.control.patch_user(upn, locked=True)
    assert_aad(app.acquire_token_by_device_flow(flow), 50053)


def test_device_code_refused_for_confidential_client(sb):
    app_id, _ = new_app(sb)
    flow = pca(sb, app_id).initiate_device_flow(OUTLOOK)
    assert "user_code" not in flow
    assert flow["error"] == "invalid_client" and flow["error_codes"] == [7000218]


def test_device_code_admin_consent_required_90094(sb):
    app_id, _ = new_app(sb, tenant=STRICT_TENANT, secret=False, public_client=True,
                        delegated_permissions={"exchange": ["IMAP.AccessAsUser.All"]})
    upn = new_user(sb, tenant=STRICT_TENANT)
    app = pca(sb, app_id, tenant=STRICT_TENANT)
    flow = app.initiate_device_flow(OUTLOOK)
    sb.control.approve_device_code(flow["user_code"], upn)
    assert_aad(app.acquire_token_by_device_flow(flow), 90094)
