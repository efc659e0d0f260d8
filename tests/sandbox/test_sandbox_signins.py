"""Sign-in logs from what happens at the token endpoint and the sign-in page, read through Graph
(`/v1.0` and `/beta` auditLogs/signIns), driven with MSAL and requests."""

from __future__ import annotations

import datetime as dt

import pytest

from mailwarden_sandbox.browser import SignInError, sign_in
from tests.sandbox.helpers import OUTLOOK, TENANT, assert_aad, new_app, new_user, sign_in_code
from tests.sandbox.log_helpers import (
    GRAPH_DEFAULT,
    NI_FILTER,
    SP_FILTER,
    graph_get,
    new_tenant,
    reader_token,
    recording_cca,
    signins,
)


def test_client_credentials_sign_in_carries_msal_correlation_id_and_the_secret_key_id(sb):
    made = sb.control.add_app(TENANT, display_name="Sinch mail", secrets=[{"display_name": "s1", "end": "+30d"}],
                              application_permissions={"graph": ["Mail.ReadWrite"]})
    app_id, key_id = made["app_id"], made["secrets"][0]["keyId"]
    app, http = recording_cca(sb, app_id, made["secrets"][0]["value"])
    assert "access_token" in app.acquire_token_for_client(GRAPH_DEFAULT)
    token = reader_token(sb)
    [ev] = signins(sb, token, f"{SP_FILTER} and appId eq '{app_id}'")
    assert ev["correlationId"] == http.request_ids[-1]  # MSAL's client-request-id
    assert ev["signInEventTypes"] == ["servicePrincipal"] and ev["isInteractive"] is False
    assert ev["servicePrincipalCredentialKeyId"] == key_id and ev["clientCredentialType"] == "clientSecret"
    assert ev["servicePrincipalName"] == "Sinch mail" and ev["servicePrincipalId"]
    assert ev["appId"] == app_id and ev["appDisplayName"] == "Sinch mail"
    assert ev["status"] == {"errorCode": 0, "failureReason": "Other.", "additionalDetails": None}
    assert ev["resourceDisplayName"] == "Microsoft Graph"
    assert ev["resourceId"] == "00000003-0000-0000-c000-000000000000"
    assert ev["createdDateTime"].endswith("Z") and ev["userPrincipalName"] is None
    # v1.0 has interactive user sign-ins only; beta too unless the filter names another event type
    assert signins(sb, token, f"appId eq '{app_id}'", version="v1.0") == []
    assert signins(sb, token, f"appId eq '{app_id}'") == []
    r = graph_get(sb, f"auditLogs/signIns/{ev['id']}", token)
    assert r.status_code == 200 and r.json()["correlationId"] == ev["correlationId"]


def test_failed_client_credentials_are_logged_with_the_aadsts_code_and_the_error_ids(sb):
    made = sb.control.add_app(TENANT, secrets=[{"display_name": "old", "start": "-400d", "end": "+1d"}],
                              application_permissions={"graph": ["Mail.Read"]})
    app_id, secret = made["app_id"], made["secrets"][0]
    sb.control.expire_secret(app_id, secret["keyId"])
    app, _ = recording_cca(sb, app_id, secret["value"])
    result = app.acquire_token_for_client(GRAPH_DEFAULT)
    assert_aad(result, 7000222, "invalid_client")
    wrong, _ = recording_cca(sb, app_id, secret["keyId"])  # the Secret ID pasted instead of the value
    assert_aad(wrong.acquire_token_for_client(GRAPH_DEFAULT), 7000215)
    events = signins(sb, reader_token(sb), f"{SP_FILTER} and appId eq '{app_id}'")
    assert [e["status"]["errorCode"] for e in events] == [7000215, 7000222]  # newest first
    expired = events[1]
    assert expired["correlationId"] == result["correlation_id"] and expired["id"] == result["trace_id"]
    assert expired["servicePrincipalCredentialKeyId"] == secret["keyId"]  # the key it matched, expired
    assert expired["status"]["failureReason"].startswith("The provided client secret keys for app")
    assert events[0]["servicePrincipalCredentialKeyId"] == ""  # matched no key
    by_code = signins(sb, reader_token(sb), f"{SP_FILTER} and status/errorCode eq 7000215 and appId eq '{app_id}'")
    assert [e["id"] for e in by_code] == [events[0]["id"]]


def test_interactive_sign_in_code_redemption_and_refresh(sb):
    app_id, secret = new_app(sb)
    upn = new_user(sb)
    app, http = recording_cca(sb, app_id, secret)
    flow, response = sign_in_code(sb, app, upn)
    result = app.acquire_token_by_auth_code_flow(flow, response)
    redeem_id = http.request_ids[-1]
    [account] = app.get_accounts()
    assert "access_token" in app.acquire_token_silent_with_error(OUTLOOK, account=account, force_refresh=True)
    refresh_id = http.request_ids[-1]
    token = reader_token(sb)
    [interactive] = signins(sb, token, f"appId eq '{app_id}'", version="v1.0")
    assert interactive["userPrincipalName"] == upn and interactive["isInteractive"] is True
    assert interactive["status"]["errorCode"] == 0 and interactive["clientAppUsed"] == "Browser"
    assert interactive["resourceDisplayName"] == "Office 365 Exchange Online"
    assert interactive["userId"] == result["id_token_claims"]["oid"]
    assert "signInEventTypes" not in interactive  # a beta property
    beta = signins(sb, token, f"appId eq '{app_id}'")
    assert [e["signInEventTypes"] for e in beta] == [["interactiveUser"]] and beta[0]["servicePrincipalId"] == ""
    refresh, redeem = signins(sb, token, f"{NI_FILTER} and appId eq '{app_id}'")
    assert (redeem["correlationId"], refresh["correlationId"]) == (redeem_id, refresh_id)
    assert refresh["isInteractive"] is False and refresh["userPrincipalName"] == upn
    assert refresh["status"]["errorCode"] == 0 and refresh["servicePrincipalCredentialKeyId"] == ""


def test_refresh_under_mfa_logs_the_50074_interrupt_then_success(sb):
    app_id, secret = new_app(sb)
    upn = new_user(sb, mfa="required", mfa_code="424242")
    app, http = recording_cca(sb, app_id, secret)
    flow, response = sign_in_code(sb, app, upn, mfa_code="424242")
    assert "access_token" in app.acquire_token_by_auth_code_flow(flow, response)
    [account] = app.get_accounts()
    assert "access_token" in app.acquire_token_silent_with_error(OUTLOOK, account=account, force_refresh=True)
    events = signins(sb, reader_token(sb), f"{NI_FILTER} and correlationId eq '{http.request_ids[-1]}'")
    assert [e["status"]["errorCode"] for e in events] == [0, 50074]
    assert events[1]["status"]["failureReason"] == "Strong Authentication is required."
    assert events[0]["status"]["additionalDetails"] == "MFA requirement satisfied by claim in the token"
    assert events[0]["authenticationRequirement"] == "multiFactorAuthentication"


def test_revoked_sessions_show_as_a_failed_refresh(sb):
    app_id, secret = new_app(sb)
    upn = new_user(sb)
    app, http = recording_cca(sb, app_id, secret)
    flow, response = sign_in_code(sb, app, upn)
    app.acquire_token_by_auth_code_flow(flow, response)
    sb.control.revoke_user_sessions(upn)
    [account] = app.get_accounts()
    assert_aad(app.acquire_token_silent_with_error(OUTLOOK, account=account, force_refresh=True), 50173)
    [ev] = signins(sb, reader_token(sb), f"{NI_FILTER} and correlationId eq '{http.request_ids[-1]}'")
    assert ev["status"]["errorCode"] == 50173 and ev["userPrincipalName"] == upn


def test_wrong_password_on_the_sign_in_page_is_an_interactive_failure(sb):
    app_id, secret = new_app(sb)
    upn = new_user(sb)
    app, _ = recording_cca(sb, app_id, secret)
    flow = app.initiate_auth_code_flow(OUTLOOK, redirect_uri="https://127.0.0.1:8080/auth/callback", login_hint=upn)
    with pytest.raises(SignInError) as err:
        sign_in(flow["auth_uri"], upn, "not-the-password", sb.ca_path)
    assert err.value.code == 50126
    [ev] = signins(sb, reader_token(sb), f"appId eq '{app_id}'", version="v1.0")
    assert ev["status"]["errorCode"] == 50126 and ev["userPrincipalName"] == upn
    assert ev["status"]["failureReason"] == "Error validating credentials due to invalid username or password."


def test_filters_paging_and_refusals(sb):
    made = sb.control.add_app(TENANT, secrets=[{"end": "+30d"}], application_permissions={"graph": ["Mail.Read"]})
    since = dt.datetime.now(dt.UTC).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")
    for _ in range(3):  # a fresh MSAL app each time: a request, not MSAL's cached token
        app, _ = recording_cca(sb, made["app_id"], made["secrets"][0]["value"])
        assert "access_token" in app.acquire_token_for_client(GRAPH_DEFAULT)
    token = reader_token(sb)
    clause = f"{SP_FILTER} and appId eq '{made['app_id']}' and createdDateTime ge {since}"
    everything = signins(sb, token, clause)
    assert len(everything) == 3
    r = graph_get(sb, "auditLogs/signIns", token, **{"$filter": clause, "$top": "2"})
    page = r.json()
    assert [e["id"] for e in page["value"]] == [e["id"] for e in everything[:2]]
    rest = graph_get(sb, page["@odata.nextLink"], token).json()
    assert [e["id"] for e in rest["value"]] == [everything[2]["id"]] and "@odata.nextLink" not in rest
    assert page["@odata.context"].endswith("/beta/$metadata#auditLogs/signIns")
    later = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert signins(sb, token, f"{SP_FILTER} and appId eq '{made['app_id']}' and createdDateTime ge {later}") == []
    for bad, version in (("signInEventTypes/any(t: t eq 'servicePrincipal' or t eq 'nonInteractiveUser')", "beta"),
                         (f"{SP_FILTER} and {NI_FILTER}", "beta"),
                         (SP_FILTER, "v1.0"),
                         (f"appId eq '{made['app_id']}' or appId eq 'x'", "beta"),
                         ("nonsense", "beta")):
        r = graph_get(sb, "auditLogs/signIns", token, version, **{"$filter": bad})
        assert r.status_code == 400, (bad, r.text)
        assert r.json()["error"]["code"] == "BadRequest" and r.json()["error"]["message"] == "Invalid filter clause"
    others = signins(sb, token, f"signInEventTypes/any(t: t ne 'interactiveUser') and appId eq '{made['app_id']}'")
    assert len(others) == 3


def test_permissions_and_the_licence(sb):
    only_audit = reader_token(sb, roles=["AuditLog.Read.All"])
    for path, version in (("auditLogs/signIns", "v1.0"), ("auditLogs/signIns", "beta"),
                          ("admin/serviceAnnouncement/issues", "v1.0")):
        r = graph_get(sb, path, only_audit, version)
        assert r.status_code == 403 and r.json()["error"]["code"] == "Authorization_RequestDenied", path
        assert r.json()["error"]["message"] == "Insufficient privileges to complete the operation."
    assert graph_get(sb, "auditLogs/directoryAudits", only_audit, "v1.0").status_code == 200
    assert graph_get(sb, "reports/servicePrincipalSignInActivities", only_audit).status_code == 200
    assert graph_get(sb, "auditLogs/signIns", "not-a-token").status_code == 401
    tid, token = new_tenant(sb, entra_licence="free")
    for path, version in (("auditLogs/signIns", "v1.0"), ("auditLogs/signIns", "beta"),
                          ("reports/servicePrincipalSignInActivities", "beta"),
                          ("reports/appCredentialSignInActivities", "beta")):
        r = graph_get(sb, path, token, version)
        assert r.status_code == 403, path
        error = r.json()["error"]
        assert error["code"] == "Authentication_RequestFromNonPremiumTenantOrB2CTenant"
        assert error["message"] == "Neither tenant is B2C or tenant doesn't have premium license"
    assert graph_get(sb, "auditLogs/directoryAudits", token, "v1.0").status_code == 200  # every edition
    sb.control.set_tenant(tid, entra_licence="p2")
    assert graph_get(sb, "auditLogs/signIns", token).status_code == 200
    r = graph_get(sb, "reports/servicePrincipalSignInActivities", token, "v1.0")
    assert r.status_code == 400  # the reports are beta only


def test_logs_arrive_late_non_interactive_later(sb):
    tid, token = new_tenant(sb, signin_log_delay_s="2m", noninteractive_log_delay_s="30m",
                            users=[{"upn": "late@late.example", "password": "P@ss-demo-1"}])
    app_id, secret = new_app(sb, tenant=tid, application_permissions={"graph": ["Mail.Read"]})
    app, http = recording_cca(sb, app_id, secret, tenant=tid)
    app.acquire_token_for_client(GRAPH_DEFAULT)
    flow, response = sign_in_code(sb, app, "late@late.example")
    app.acquire_token_by_auth_code_flow(flow, response)
    assert signins(sb, token, f"{SP_FILTER} and appId eq '{app_id}'") == []  # not yet ingested
    assert signins(sb, token, f"appId eq '{app_id}'", version="v1.0") == []
    pending = sb.control.state()["logs"]["pending"]
    assert pending >= 3
    sb.control.set_tenant(tid, signin_log_delay_s=0)  # changes later events only: these keep their delay
    assert signins(sb, token, f"{SP_FILTER} and appId eq '{app_id}'") == []
    assert sb.control.ingest_logs(tid)["signins"] >= 3  # the pipeline catches up
    [sp] = signins(sb, token, f"{SP_FILTER} and appId eq '{app_id}'")
    [redeem] = signins(sb, token, f"{NI_FILTER} and appId eq '{app_id}'")
    assert sp["correlationId"] == http.request_ids[0] and redeem["correlationId"] == http.request_ids[-1]
    assert len(signins(sb, token, f"appId eq '{app_id}'", version="v1.0")) == 1


def test_other_clients_interrupts_recorded_by_op(sb):
    app_id, _ = new_app(sb)
    upn = new_user(sb)
    made = sb.control.record_signin(TENANT, app_id, upn=upn, error_code=50058, at="-5m")
    [ev] = signins(sb, reader_token(sb), f"{NI_FILTER} and correlationId eq '{made['correlationId']}'")
    assert ev["status"]["errorCode"] == 50058 and ev["userPrincipalName"] == upn
    assert ev["status"]["failureReason"] == "A silent sign-in request was sent but no user is signed in."


def test_a_refused_interactive_sign_in_names_the_logged_request(sb):
    app_id, secret = new_app(sb)
    upn = new_user(sb, enabled=False)
    app, _ = recording_cca(sb, app_id, secret)
    _, response = sign_in_code(sb, app, upn)
    assert response["error"] == "access_denied" and response["error_description"].startswith("AADSTS50057: ")
    fields = dict(line.split(": ", 1) for line in response["error_description"].split("\r\n")[1:])
    [ev] = signins(sb, reader_token(sb), f"appId eq '{app_id}'", version="v1.0")
    assert ev["status"]["errorCode"] == 50057 and ev["status"]["failureReason"] == "The user account is disabled."
    assert (ev["correlationId"], ev["id"]) == (fields["Correlation ID"], fields["Trace ID"])
