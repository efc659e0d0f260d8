"""Graph addPassword / removePassword: owner checks, hints, end dates, both addressing forms (httpx + MSAL)."""

from __future__ import annotations

import ssl
import uuid

import httpx
import pytest

from tests.sandbox.helpers import TENANT, cca, new_app

GRAPH_DEFAULT = ["https://graph.microsoft.com/.default"]


def caller(sb, roles):
    """A fresh app with the given Graph app roles: (app_id, token)."""
    app_id, secret = new_app(sb, application_permissions={"graph": roles})
    token = cca(sb, app_id, secret).acquire_token_for_client(GRAPH_DEFAULT)["access_token"]
    return app_id, token


@pytest.fixture
def client(sb):
    ctx = ssl.create_default_context(cafile=str(sb.ca_path))
    with httpx.Client(verify=ctx, trust_env=False, base_url=sb.endpoints["graph"]) as c:
        yield c


def test_owner_adds_and_removes_a_password(sb, client):
    target, old_secret = new_app(sb)
    me, token = caller(sb, ["Application.ReadWrite.OwnedBy"])
    sb.control.add_owner(target, me)
    auth = {"Authorization": f"Bearer {token}"}
    r = client.post(f"/applications(appId='{target}')/addPassword", headers=auth,
                    json={"passwordCredential": {"displayName": "rotated", "endDateTime": "2030-01-31T00:00:00Z"}})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["@odata.context"].endswith("$metadata#microsoft.graph.passwordCredential")
    assert body["displayName"] == "rotated" and body["endDateTime"] == "2030-01-31T00:00:00Z"
    assert body["hint"] == body["secretText"][:3] and uuid.UUID(body["keyId"])
    # the new value works at once, and Graph never shows it again
    assert "access_token" in cca(sb, target, body["secretText"]).acquire_token_for_client(GRAPH_DEFAULT)
    # ...ReadWrite.OwnedBy reads the apps it owns; the value is never shown again
    listed = client.get(f"/applications(appId='{target}')", headers=auth).json()
    assert [p["secretText"] for p in listed["passwordCredentials"]] == [None, None]
    other, _ = new_app(sb)
    assert client.get(f"/applications(appId='{other}')", headers=auth).status_code == 403
    state_app = next(a for t in sb.control.state()["tenants"] for a in t["apps"] if a["app_id"] == target)
    assert me.lower() in state_app["owners"] and len(state_app["secrets"]) == 2
    old_key = next(s["keyId"] for s in state_app["secrets"] if s["keyId"] != body["keyId"])

    object_id = state_app["object_id"]
    r = client.post(f"/applications/{object_id}/removePassword", headers=auth, json={"keyId": old_key})
    assert r.status_code == 204 and r.content == b""
    result = cca(sb, target, old_secret).acquire_token_for_client(GRAPH_DEFAULT)
    assert result.get("error_codes") == [7000215]  # a deleted secret is unknown
    r = client.post(f"/applications/{object_id}/removePassword", headers=auth, json={"keyId": old_key})
    assert r.status_code == 400 and r.json()["error"]["code"] == "Request_BadRequest"


def test_default_end_is_two_years(sb, client):
    target, _ = new_app(sb)
    _, token = caller(sb, ["Application.ReadWrite.All"])  # .All needs no ownership
    r = client.post(f"/applications(appId='{target}')/addPassword", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200, r.text
    body = r.json()
    from datetime import datetime
    start = datetime.fromisoformat(body["startDateTime"].replace("Z", "+00:00"))
    end = datetime.fromisoformat(body["endDateTime"].replace("Z", "+00:00"))
    assert (end - start).days == 730 and body["displayName"] is None


@pytest.mark.parametrize("roles, owner", [(["Application.ReadWrite.OwnedBy"], False),
                                          (["Application.Read.All"], True), ([], True)])
def test_refused_without_ownership_or_write_permission(sb, client, roles, owner):
    target, _ = new_app(sb)
    me, token = caller(sb, roles)
    if owner:
        sb.control.add_owner(target, me)
    auth = {"Authorization": f"Bearer {token}", "client-request-id": "cr-7"}
    for action, body in (("addPassword", {}), ("removePassword", {"keyId": str(uuid.uuid4())})):
        r = client.post(f"/applications(appId='{target}')/{action}", headers=auth, json=body)
        assert r.status_code == 403, r.text
        err = r.json()["error"]
        assert err["code"] == "Authorization_RequestDenied"
        assert err["innerError"]["client-request-id"] == "cr-7"
    state_app = next(a for t in sb.control.state()["tenants"] for a in t["apps"] if a["app_id"] == target)
    assert len(state_app["secrets"]) == 1


def test_owner_removed_loses_access_and_unknown_app_is_404(sb, client):
    target, _ = new_app(sb)
    me, token = caller(sb, ["Application.ReadWrite.OwnedBy"])
    sb.control.add_owner(target, me)
    sb.control.remove_owner(target, me)
    auth = {"Authorization": f"Bearer {token}"}
    assert client.post(f"/applications(appId='{target}')/addPassword", headers=auth).status_code == 403
    r = client.post(f"/applications(appId='{uuid.uuid4()}')/addPassword", headers=auth)
    assert r.status_code == 404 and r.json()["error"]["code"] == "Request_ResourceNotFound"
    r = client.post(f"/applications(appId='{target}')/addPassword", headers=auth,
                    json={"passwordCredential": {"endDateTime": "yesterday"}})
    assert r.status_code == 403  # authorisation comes before the body is judged


def test_bad_end_date_is_400(sb, client):
    target, _ = new_app(sb, tenant=TENANT)
    _, token = caller(sb, ["Application.ReadWrite.All"])
    r = client.post(f"/applications(appId='{target}')/addPassword", headers={"Authorization": f"Bearer {token}"},
                    json={"passwordCredential": {"endDateTime": "2001-01-01T00:00:00Z"}})
    assert r.status_code == 400 and r.json()["error"]["code"] == "Request_BadRequest"
