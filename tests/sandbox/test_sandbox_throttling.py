"""The sandbox's answers from the corrected M365_FACTS.md (2026-12-02), driven with MSAL, requests and the
standard library's mail clients (never product code): throttling and transient replies, public-client refresh
tokens, secret replication, the other AADSTS codes, UPN versus mail address."""

from __future__ import annotations

import imaplib
import poplib
import smtplib
import time

import pytest

from tests.sandbox.helpers import (
    MONITOR_APP,
    MONITOR_SECRET,
    OUTLOOK,
    TENANT,
    assert_aad,
    cca,
    new_app,
    new_user,
    pca,
    session_for,
    sign_in_code,
    user_tokens,
)
from tests.sandbox.mail_helpers import (
    EXO_DEFAULT,
    GRAPH_DEFAULT,
    app_token,
    delegated_token,
    imap_login,
    new_mailbox,
    pop,
    pop_auth,
    smtp,
    smtp_auth,
    user_with_mailbox,
)


def token_post(sb, app_id, secret, **form):
    data = {"client_id": app_id, "client_secret": secret, "grant_type": "client_credentials",
            "scope": "https://graph.microsoft.com/.default", **form}
    return session_for(sb).post(f"{sb.base_url}/{TENANT}/oauth2/v2.0/token", data=data)


def test_token_endpoint_throttling_bodies(sb):
    """429 with a plain-text body and Retry-After (MSAL.NET#2855); AADSTS90055 past the tenant's budget;
    AADSTS50196 for identical requests in a loop (HTTP 400 invalid_grant: MSAL.NET#2353)."""
    app_id, secret = new_app(sb)
    sb.control.set_tenant(TENANT, token_requests_per_app_minute=1)
    try:
        assert token_post(sb, app_id, secret).status_code == 200
        r = token_post(sb, app_id, secret)
        assert (r.status_code, r.text) == (429, "Too Many Requests") and int(r.headers["Retry-After"]) > 0
    finally:
        sb.control.set_tenant(TENANT, token_requests_per_app_minute=None)
    sb.control.set_tenant(TENANT, token_requests_per_tenant_minute=0)
    try:
        r = token_post(sb, app_id, secret)
        assert r.status_code == 429 and r.json()["error_codes"] == [90055]
    finally:
        sb.control.set_tenant(TENANT, token_requests_per_tenant_minute=None)
    sb.control.set_tenant(TENANT, identical_requests_limit=2)
    try:
        assert [token_post(sb, app_id, secret).status_code for _ in range(2)] == [200, 200]
        r = token_post(sb, app_id, secret)
        assert (r.status_code, r.json()["error"], r.json()["error_codes"]) == (400, "invalid_grant", [50196])
    finally:
        sb.control.set_tenant(TENANT, identical_requests_limit=None)


@pytest.mark.parametrize(("effect", "status", "body"), [("html", 503, b"<!DOCTYPE html>"), ("empty", 500, b""),
                                                        ("busy", 503, b'{"error":"temporarily_unavailable"')])
def test_entra_incident_bodies(sb, effect, status, body):
    app_id, secret = new_app(sb)
    incident = sb.control.open_incident("entra", effect=effect)
    try:
        r = token_post(sb, app_id, secret)
    finally:
        sb.control.close_incident(incident)
    assert r.status_code == status and r.content.startswith(body)
    if effect == "busy":
        assert r.json()["error_codes"] == [90033]
    assert token_post(sb, app_id, secret).status_code == 200


def test_public_client_refresh_token_is_refreshed_without_a_secret(sb):
    """A refresh token from the device-code flow presented with a secret: 401 invalid_client AADSTS700025."""
    app_id, secret = new_app(sb, public_client=True)
    upn = new_user(sb)
    app = pca(sb, app_id)
    flow = app.initiate_device_flow(scopes=OUTLOOK)
    sb.control.approve_device_code(flow["user_code"], upn)
    result = app.acquire_token_by_device_flow(flow, exit_condition=lambda f: True)
    rt = result["refresh_token"]
    assert "access_token" in pca(sb, app_id).acquire_token_by_refresh_token(rt, OUTLOOK)
    assert_aad(cca(sb, app_id, secret).acquire_token_by_refresh_token(rt, OUTLOOK), 700025, "invalid_client")


def test_a_new_secret_replicates_before_it_works(sb):
    app_id, _ = new_app(sb)
    sb.control.set_tenant(TENANT, secret_replication_s=1.5)
    try:
        added = sb.control.add_secret(app_id, display_name="fresh")
        assert_aad(cca(sb, app_id, added["value"]).acquire_token_for_client(GRAPH_DEFAULT), 7000215, "invalid_client")
        time.sleep(1.6)
        assert "access_token" in cca(sb, app_id, added["value"]).acquire_token_for_client(GRAPH_DEFAULT)
    finally:
        sb.control.set_tenant(TENANT, secret_replication_s=0)


def test_more_aadsts_codes_from_directory_state(sb):
    app_id, secret = new_app(sb)
    sb.control.set_tenant(TENANT, exchange_online=False)
    try:
        assert_aad(cca(sb, app_id, secret).acquire_token_for_client(EXO_DEFAULT), 500011, "invalid_resource")
    finally:
        sb.control.set_tenant(TENANT, exchange_online=True)
    upn = new_user(sb, mfa="required", mfa_code="111222", mfa_max_age_hours=1)
    rt = user_tokens(sb, app_id, secret, upn, mfa_code="111222")["refresh_token"]
    sb.control.age_refresh_tokens(upn, days=0.1)  # the MFA of that sign-in is now 2.4 h old
    result = cca(sb, app_id, secret).acquire_token_by_refresh_token(rt, OUTLOOK)
    assert_aad(result, 50078, "interaction_required")
    # 500112: the redirect URI differs at code redemption
    other_upn = new_user(sb)
    app = cca(sb, app_id, secret)
    flow, response = sign_in_code(sb, app, other_upn)
    flow["redirect_uri"] = "http://localhost"
    assert_aad(app.acquire_token_by_auth_code_flow(flow, response), 500112)


def test_upn_differs_from_the_mail_address(sb):
    upn = new_user(sb, mail="anna@contoso.com", proxy_addresses=["SMTP:anna@contoso.com", "smtp:a.smith@contoso.com"])
    token = cca(sb, MONITOR_APP, MONITOR_SECRET).acquire_token_for_client(GRAPH_DEFAULT)["access_token"]
    http = session_for(sb)
    r = http.get(f"{sb.base_url}/v1.0/users/{upn}", params={"$select": "id,userPrincipalName,mail,proxyAddresses"},
                 headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 403  # the monitor app has no User.Read.All
    sb.control.add_app_permission(MONITOR_APP, "graph", "User.Read.All")
    token = cca(sb, MONITOR_APP, MONITOR_SECRET).acquire_token_for_client(GRAPH_DEFAULT)["access_token"]
    body = http.get(f"{sb.base_url}/v1.0/users/{upn}", params={"$select": "id,userPrincipalName,mail,proxyAddresses"},
                    headers={"Authorization": f"Bearer {token}"}).json()
    sb.control.remove_app_permission(MONITOR_APP, "graph", "User.Read.All")
    assert (body["userPrincipalName"], body["mail"]) == (upn, "anna@contoso.com")
    assert "smtp:a.smith@contoso.com" in body["proxyAddresses"]
    # the delegate signs in to SMTP with its mail address as user= (its mailbox)
    new_mailbox(sb, address="anna@contoso.com", owner=upn)
    s = smtp(sb)
    assert smtp_auth(s, "anna@contoso.com", delegated_token(sb, upn))[0] == 235
    s.quit()


def test_imap_throttled_and_connection_limit(sb):
    upn = user_with_mailbox(sb, budget={"limit": 3, "window_s": 600})
    token = delegated_token(sb, upn)
    im = imap_login(sb, upn, token)
    assert im.select("INBOX", readonly=True)[0] == "OK"
    sb.control.use_budget(upn, upn, 3)
    tag = im._new_tag().decode()
    im.send(f"{tag} SEARCH UNSEEN\r\n".encode())
    line = im.readline().decode()
    assert line.startswith(f"{tag} BAD Request is throttled. Suggested Backoff Time: ") and "milliseconds" in line
    assert im.readline() == b"* BYE Connection closed. 14\r\n"
    other = user_with_mailbox(sb, load={"imap": 20})
    im = imap_login(sb, other, delegated_token(sb, other))
    with pytest.raises(imaplib.IMAP4.error, match="not connected"):
        im.select("INBOX", readonly=True)


def test_smtp_submission_limits_and_incident(sb):
    upn = user_with_mailbox(sb)
    token = delegated_token(sb, upn)
    sb.control.record_sent(upn, 10000)
    s = smtp(sb)
    smtp_auth(s, upn, token)
    with pytest.raises(smtplib.SMTPDataError) as err:
        s.sendmail(upn, [upn], "Subject: x\r\n\r\ny")
    assert err.value.smtp_code == 554 and b"SubmissionQuotaExceededException" in err.value.smtp_error
    s.close()
    other = user_with_mailbox(sb, load={"smtp": 3})
    s = smtp(sb)
    smtp_auth(s, other, delegated_token(sb, other))
    with pytest.raises(smtplib.SMTPDataError) as err:
        s.sendmail(other, [other], "Subject: x\r\n\r\ny")
    assert err.value.smtp_code == 432 and err.value.smtp_error.startswith(b"4.3.2 Concurrent connections limit")
    s.close()
    incident = sb.control.open_incident("exchange")
    try:
        s = smtp(sb)
        with pytest.raises(smtplib.SMTPAuthenticationError) as err:
            smtp_auth(s, other, delegated_token(sb, other))
        assert err.value.smtp_code == 421
    finally:
        sb.control.close_incident(incident)


def test_pop_line_limit(sb):
    upn = new_user(sb, groups=200)
    new_mailbox(sb, address=upn, owner=upn)
    token = delegated_token(sb, upn)
    p = pop(sb)
    with pytest.raises(poplib.error_proto, match="Protocol error. Connection is closed. 10"):
        pop_auth(p, upn, token)


def test_graph_mail_throttling_and_incident(sb):
    box = new_mailbox(sb, load={"graph": 4})
    _, token = app_token(sb, graph_roles=["Mail.Read"], scope=GRAPH_DEFAULT)
    http = session_for(sb)
    url = f"{sb.base_url}/v1.0/users/{box}/mailFolders/inbox"
    r = http.get(url, headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 429 and r.headers["Retry-After"] == "1"
    assert r.json()["error"] == {**r.json()["error"], "code": "ApplicationThrottled",
                                 "message": "Application is over its MailboxConcurrency limit."}
    sb.control.patch_mailbox(box, load={})
    incident = sb.control.open_incident("exchange", retry_after=12)
    try:
        r = http.get(url, headers={"Authorization": f"Bearer {token}"})
    finally:
        sb.control.close_incident(incident)
    assert r.status_code == 503 and r.json()["error"]["code"] == "UnknownError" and r.headers["Retry-After"] == "12"
    assert http.get(url, headers={"Authorization": f"Bearer {token}"}).status_code == 200
