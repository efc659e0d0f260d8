"""Directory audits written by the changes made to apps and users, the usage reports, and service health, read
through Graph with requests (tokens from MSAL)."""

from __future__ import annotations

import base64
import datetime as dt
import json

from tests.sandbox.helpers import DOMAIN, TENANT, new_app, new_user, session_for, sign_in_code
from tests.sandbox.log_helpers import (
    GRAPH_DEFAULT,
    NI_FILTER,
    SP_FILTER,
    audits,
    graph_get,
    new_tenant,
    reader_token,
    recording_cca,
    signins,
)

CREDENTIALS = "Update application \u2013 Certificates and secrets management"


def app_object_id(sb, app_id: str) -> str:
    return next(a["object_id"] for t in sb.control.state()["tenants"] for a in t["apps"] if a["app_id"] == app_id)


def about(sb, token: str, object_id: str) -> list[dict]:
    return audits(sb, token, f"targetResources/any(t: t/id eq '{object_id}')")


def test_secret_added_and_removed_by_an_admin(sb):
    app_id, _ = new_app(sb)
    oid = app_object_id(sb, app_id)
    added = sb.control.add_secret(app_id, display_name="helpdesk 2027", actor="it-admin@contoso.com")
    sb.control.delete_secret(app_id, added["keyId"])  # no actor: the tenant's admin
    token = reader_token(sb, roles=["AuditLog.Read.All"])
    events = [e for e in about(sb, token, oid) if e["activityDisplayName"] == CREDENTIALS]
    removed, add = events  # newest first
    assert add["initiatedBy"]["user"]["userPrincipalName"] == "it-admin@contoso.com"
    assert add["initiatedBy"]["app"] is None
    assert removed["initiatedBy"]["user"]["userPrincipalName"] == f"admin@{DOMAIN}"
    assert add["category"] == "ApplicationManagement" and add["result"] == "success"
    assert add["loggedByService"] == "Core Directory" and add["id"].startswith(f"Directory_{add['correlationId']}_")
    [target] = add["targetResources"]
    assert (target["id"], target["type"]) == (oid, "Application")
    props = {p["displayName"]: p for p in target["modifiedProperties"]}
    new_keys = json.loads(props["KeyDescription"]["newValue"])
    assert f"[KeyIdentifier={added['keyId']},KeyType=Password,KeyUsage=Verify,DisplayName=helpdesk 2027]" in new_keys
    assert props["Included Updated Properties"]["newValue"] == '"KeyDescription"'
    assert added["keyId"] not in removed["targetResources"][0]["modifiedProperties"][0]["newValue"]
    # beside each credential event, a bare "Update application" under the same correlation id (as captured)
    assert {e["correlationId"] for e in about(sb, token, oid) if e["activityDisplayName"] == "Update application"} \
        == {add["correlationId"], removed["correlationId"]}
    when = dt.datetime.fromisoformat(add["activityDateTime"].replace("Z", "+00:00"))
    later = (when + dt.timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert audits(sb, token, f"activityDateTime ge {later} and targetResources/any(t: t/id eq '{oid}')") == []


def test_add_password_through_graph_names_the_calling_app(sb):
    rotator, rotator_secret = new_app(sb, application_permissions={"graph": ["Application.ReadWrite.OwnedBy"]})
    target_app, _ = new_app(sb, owners=[rotator])
    app, _ = recording_cca(sb, rotator, rotator_secret)
    token = app.acquire_token_for_client(GRAPH_DEFAULT)["access_token"]
    with session_for(sb) as s:
        r = s.post(f"{sb.endpoints['graph']}/applications(appId='{target_app}')/addPassword",
                   json={"passwordCredential": {"displayName": "rotated"}},
                   headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200, r.text
    [event] = [e for e in about(sb, reader_token(sb), app_object_id(sb, target_app))
               if e["activityDisplayName"] == CREDENTIALS]
    assert event["initiatedBy"]["user"] is None
    assert event["initiatedBy"]["app"]["appId"] == rotator and event["initiatedBy"]["app"]["servicePrincipalId"]
    assert r.json()["keyId"] in event["targetResources"][0]["modifiedProperties"][0]["newValue"]


def test_consent_granted_and_removed_disable_and_owners(sb):
    app_id, _ = new_app(sb)
    token = reader_token(sb)
    sb.control.add_app_permission(app_id, "graph", "Mail.ReadWrite", actor="alex@contoso.com")
    sb.control.remove_delegated_permission(app_id, "exchange", "POP.AccessAsUser.All")
    sb.control.disable_app(app_id, actor="alex@contoso.com")
    sb.control.add_owner(app_id, "owner@contoso.com")
    name = next(a["display_name"] for t in sb.control.state()["tenants"] for a in t["apps"] if a["app_id"] == app_id)
    mine = [e for e in audits(sb, token, "activityDateTime ge 2000-01-01T00:00:00Z")
            if app_id in json.dumps(e) or name in json.dumps(e)]
    names = [e["activityDisplayName"] for e in mine]
    for expected in ("Consent to application", "Add app role assignment to service principal",
                     "Remove delegated permission grant", "Update service principal", "Add owner to application"):
        assert expected in names, (expected, names)
    role = next(e for e in mine if e["activityDisplayName"] == "Add app role assignment to service principal")
    [res] = role["targetResources"]
    assert res["displayName"] == "Microsoft Graph" and res["type"] == "ServicePrincipal"
    values = {p["displayName"]: p["newValue"] for p in res["modifiedProperties"]}
    assert values["AppRole.Value"] == '"Mail.ReadWrite"' and values["ServicePrincipal.AppId"] == f'"{app_id}"'
    assert role["initiatedBy"]["user"]["userPrincipalName"] == "alex@contoso.com"
    removed = next(e for e in mine if e["activityDisplayName"] == "Remove delegated permission grant")
    assert removed["targetResources"][0]["displayName"] == "Office 365 Exchange Online"
    disabled = next(e for e in mine if e["activityDisplayName"] == "Update service principal")
    props = {p["displayName"]: p for p in disabled["targetResources"][0]["modifiedProperties"]}
    assert (props["AccountEnabled"]["oldValue"], props["AccountEnabled"]["newValue"]) == ("[true]", "[false]")
    owner = next(e for e in mine if e["activityDisplayName"] == "Add owner to application")
    assert [t["type"] for t in owner["targetResources"]] == ["User", "Application"]
    assert owner["targetResources"][0]["userPrincipalName"] == "owner@contoso.com"


def test_a_users_own_consent_on_the_sign_in_page_is_audited(sb):
    app_id, secret = new_app(sb, delegated_permissions={"graph": ["User.Read"]})  # no Outlook consent yet
    upn = new_user(sb)
    app, _ = recording_cca(sb, app_id, secret)
    flow, response = sign_in_code(sb, app, upn)
    assert "access_token" in app.acquire_token_by_auth_code_flow(flow, response)
    events = [e for e in audits(sb, reader_token(sb), "activityDisplayName eq 'Consent to application'")
              if e["initiatedBy"]["user"] and e["initiatedBy"]["user"]["userPrincipalName"] == upn]
    [consent] = events
    props = {p["displayName"]: p["newValue"] for p in consent["targetResources"][0]["modifiedProperties"]}
    assert props["ConsentContext.IsAdminConsent"] == '"False"' and "IMAP.AccessAsUser.All" in props[
        "ConsentAction.Permissions"]


def test_audits_arrive_late_too(sb):
    tid, token = new_tenant(sb, audit_log_delay_s="15m")
    app_id, _ = new_app(sb, tenant=tid)
    sb.control.disable_app(app_id)
    assert [e for e in audits(sb, token) if e["activityDisplayName"] == "Update service principal"] == []
    assert sb.control.ingest_logs(tid)["audits"] >= 1
    assert [e for e in audits(sb, token) if e["activityDisplayName"] == "Update service principal"]


def test_usage_reports_count_every_client_per_app_and_per_credential(sb):
    made = sb.control.add_app(TENANT, secrets=[{"end": "+30d"}], application_permissions={"graph": ["Mail.Read"]},
                              redirect_uris=["https://127.0.0.1:8080/auth/callback"],
                              delegated_permissions={"exchange": ["IMAP.AccessAsUser.All", "SMTP.Send"]})
    app_id, secret = made["app_id"], made["secrets"][0]
    cert = sb.control.add_certificate(app_id, end="+100d")
    app, _ = recording_cca(sb, app_id, secret["value"])
    app.acquire_token_for_client(GRAPH_DEFAULT)
    flow, response = sign_in_code(sb, app, new_user(sb))
    app.acquire_token_by_auth_code_flow(flow, response)
    with open(cert["key_path"]) as k:
        cert_app, _ = recording_cca(sb, app_id, {"private_key": k.read(), "thumbprint": cert["thumbprint"]})
    assert "access_token" in cert_app.acquire_token_for_client(GRAPH_DEFAULT)
    token = reader_token(sb)
    r = graph_get(sb, "reports/servicePrincipalSignInActivities", token, **{"$filter": f"appId eq '{app_id}'"})
    [row] = r.json()["value"]
    sp_events = signins(sb, token, f"{SP_FILTER} and appId eq '{app_id}'")
    ni_events = signins(sb, token, f"{NI_FILTER} and appId eq '{app_id}'")
    assert row["applicationAuthenticationClientSignInActivity"]["lastSignInRequestId"] == sp_events[0]["id"]
    assert row["delegatedClientSignInActivity"]["lastSignInRequestId"] == ni_events[0]["id"]
    assert row["lastSignInActivity"]["lastSignInRequestId"] == sp_events[0]["id"]
    assert row["delegatedResourceSignInActivity"] is None
    assert base64.b64decode(row["id"]).decode() == app_id
    r = graph_get(sb, "reports/appCredentialSignInActivities", token, **{"$filter": f"appId eq '{app_id}'"})
    by_key = {c["keyId"]: c for c in r.json()["value"]}
    assert set(by_key) == {secret["keyId"], cert["keyId"]}
    assert by_key[secret["keyId"]]["keyType"] == "clientSecret" and by_key[cert["keyId"]]["keyType"] == "certificate"
    assert by_key[cert["keyId"]]["signInActivity"]["lastSignInRequestId"] == sp_events[0]["id"]
    assert by_key[secret["keyId"]]["keyUsage"] == "sign"
    assert by_key[secret["keyId"]]["credentialOrigin"] == "application"
    assert by_key[secret["keyId"]]["expirationDateTime"].endswith("Z")
    r = graph_get(sb, "reports/appCredentialSignInActivities", token, **{"$filter": f"keyId eq '{cert['keyId']}'"})
    assert [c["keyId"] for c in r.json()["value"]] == [cert["keyId"]]


def test_service_health_lists_incidents_open_and_closed(sb):
    token = reader_token(sb)
    made = sb.control.call("open_incident", service="exchange", effect="none", title="Mail delayed for some users",
                           feature="E-Mail timely delivery")
    try:
        rows = graph_get(sb, "admin/serviceAnnouncement/issues", token, "v1.0",
                         **{"$filter": "service eq 'Exchange Online'"}).json()["value"]
        issue = next(i for i in rows if i["id"] == made["issue_id"])
        assert issue["id"].startswith("EX") and issue["title"] == "Mail delayed for some users"
        assert (issue["status"], issue["isResolved"], issue["endDateTime"]) == ("serviceDegradation", False, None)
        assert issue["classification"] == "incident" and issue["origin"] == "microsoft"
        assert issue["startDateTime"].endswith("Z") and issue["posts"][0]["description"]["contentType"] == "html"
        sb.control.set_incident_status(made["id"], "restoringService")
        one = graph_get(sb, f"admin/serviceAnnouncement/issues/{made['issue_id']}", token, "v1.0").json()
        assert one["status"] == "restoringService" and len(one["posts"]) == 2
    finally:
        sb.control.close_incident(made["id"])
    closed = graph_get(sb, f"admin/serviceAnnouncement/issues/{made['issue_id']}", token, "v1.0").json()
    assert (closed["status"], closed["isResolved"]) == ("serviceRestored", True) and closed["endDateTime"]
    unresolved = graph_get(sb, "admin/serviceAnnouncement/issues", token, "v1.0",
                           **{"$filter": "isResolved eq false"}).json()["value"]
    assert made["issue_id"] not in [i["id"] for i in unresolved]


def test_an_entra_incident_is_listed_while_it_refuses_tokens(sb):
    token = reader_token(sb)
    app_id, secret = new_app(sb)
    incident = sb.control.open_incident("entra", effect="busy", title="Sign-in failures")
    try:
        with session_for(sb) as s:
            r = s.post(f"{sb.base_url}/{TENANT}/oauth2/v2.0/token", data={
                "grant_type": "client_credentials", "client_id": app_id, "client_secret": secret,
                "scope": GRAPH_DEFAULT[0]})
        assert r.status_code == 503 and r.json()["error_codes"] == [90033]
        rows = graph_get(sb, "admin/serviceAnnouncement/issues", token).json()["value"]
        issue = next(i for i in rows if i["title"] == "Sign-in failures")
        assert issue["service"] == "Microsoft Entra" and not issue["isResolved"]
        assert issue["status"] == "serviceDegradation"
    finally:
        sb.control.close_incident(incident)
