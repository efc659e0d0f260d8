"""Discovery, JWKS, client credentials (secret and certificate) and the app-level AADSTS codes."""

from __future__ import annotations

import base64
import hashlib
import time
import uuid

import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.sandbox.helpers import DOMAIN, MONITOR_APP, MONITOR_SECRET, TENANT, assert_aad, cca, new_app

GRAPH_DEFAULT = ["https://graph.microsoft.com/.default"]
EXO_DEFAULT = ["https://outlook.office365.com/.default"]


def claims_of(token: str) -> dict:
    return jwt.decode(token, options={"verify_signature": False})


def test_discovery_points_at_the_sandbox(sb, http):
    for ident in (TENANT, DOMAIN):
        doc = http.get(f"{sb.base_url}/{ident}/v2.0/.well-known/openid-configuration").json()
        assert doc["issuer"] == f"{sb.base_url}/{TENANT}/v2.0"
        for key in ("authorization_endpoint", "token_endpoint", "device_authorization_endpoint", "jwks_uri",
                    "end_session_endpoint"):
            assert doc[key].startswith(f"{sb.base_url}/{TENANT}/"), key
    mail = {name: f"127.0.0.1:{sb.mail.socks[name].getsockname()[1]}" for name in ("imap", "pop", "smtp")}
    assert sb.endpoints == {"authority": sb.base_url, "graph": sb.base_url + "/v1.0",
                            "ews": sb.base_url + "/EWS/Exchange.asmx", "ca_bundle": str(sb.ca_path), **mail}


def test_unknown_tenant_90002_on_discovery_and_token(sb, http):
    r = http.get(f"{sb.base_url}/nosuch.onmicrosoft.com/v2.0/.well-known/openid-configuration")
    assert r.status_code == 400
    assert r.json()["error"] == "invalid_tenant" and r.json()["error_codes"] == [90002]
    r = http.post(f"{sb.base_url}/nosuch.onmicrosoft.com/oauth2/v2.0/token",
                  data={"grant_type": "client_credentials", "client_id": MONITOR_APP,
                        "client_secret": MONITOR_SECRET, "scope": GRAPH_DEFAULT[0]})
    assert r.status_code == 400
    assert_aad(r.json(), 90002, "invalid_request")
    with pytest.raises(ValueError, match="Unable to get authority configuration"):
        cca(sb, MONITOR_APP, MONITOR_SECRET, tenant="nosuch.onmicrosoft.com")


def test_token_signature_verifies_against_jwks(sb, http):
    result = cca(sb, MONITOR_APP, MONITOR_SECRET).acquire_token_for_client(GRAPH_DEFAULT)
    token = result["access_token"]
    jwks = http.get(f"{sb.base_url}/{TENANT}/discovery/v2.0/keys").json()
    kid = jwt.get_unverified_header(token)["kid"]
    key = next(k for k in jwt.PyJWKSet.from_dict(jwks).keys if k.key_id == kid)
    claims = jwt.decode(token, key.key, algorithms=["RS256"], audience="https://graph.microsoft.com",
                        issuer=f"https://sts.windows.net/{TENANT}/")
    assert claims["roles"] == ["Application.Read.All"]
    assert claims["idtyp"] == "app" and claims["ver"] == "1.0" and claims["tid"] == TENANT
    assert claims["appid"] == claims["azp"] == MONITOR_APP
    assert claims["exp"] - claims["iat"] == 3600 and "scp" not in claims
    assert result["token_type"] == "Bearer" and result["expires_in"] == 3600


def test_roles_follow_admin_consent(sb):
    app_id, secret = new_app(sb, application_permissions={"exchange": ["IMAP.AccessAsApp", "SMTP.SendAsApp"]})
    claims = claims_of(cca(sb, app_id, secret).acquire_token_for_client(EXO_DEFAULT)["access_token"])
    assert claims["aud"] == "https://outlook.office365.com"
    assert claims["roles"] == ["IMAP.AccessAsApp", "SMTP.SendAsApp"]
    sb.control.remove_app_permission(app_id, "exchange", "IMAP.AccessAsApp")
    sb.control.remove_app_permission(app_id, "exchange", "SMTP.SendAsApp")
    claims = claims_of(cca(sb, app_id, secret).acquire_token_for_client(EXO_DEFAULT)["access_token"])
    assert "roles" not in claims  # still issued, just without roles
    sb.control.add_app_permission(app_id, "exchange", "full_access_as_app")
    claims = claims_of(cca(sb, app_id, secret).acquire_token_for_client(EXO_DEFAULT)["access_token"])
    assert claims["roles"] == ["full_access_as_app"]


def test_secret_errors_7000222_and_7000215(sb, http):
    app_id, secret = new_app(sb, application_permissions={"graph": ["Mail.ReadWrite"]})
    key_id = sb.control.state()["tenants"][0]["apps"][-1]["secrets"][0]["keyId"]
    assert_aad(cca(sb, app_id, "wrong-value").acquire_token_for_client(GRAPH_DEFAULT), 7000215, "invalid_client")
    assert_aad(cca(sb, app_id, key_id).acquire_token_for_client(GRAPH_DEFAULT), 7000215)  # Secret ID pasted
    sb.control.expire_secret(app_id, key_id)
    assert_aad(cca(sb, app_id, secret).acquire_token_for_client(GRAPH_DEFAULT), 7000222, "invalid_client")
    r = http.post(f"{sb.base_url}/{TENANT}/oauth2/v2.0/token", headers={"client-request-id": "abc-123"},
                  data={"grant_type": "client_credentials", "client_id": app_id, "client_secret": secret,
                        "scope": GRAPH_DEFAULT[0]})
    body = r.json()
    assert r.status_code == 401 and body["error"] == "invalid_client" and body["error_codes"] == [7000222]
    assert body["correlation_id"] == "abc-123"
    assert body["error_uri"] == "https://login.microsoftonline.com/error?code=7000222"
    assert "\r\nTrace ID: " in body["error_description"] and "\r\nTimestamp: " in body["error_description"]
    fresh = sb.control.add_secret(app_id, display_name="rotated", end="+90d")
    assert fresh["hint"] == fresh["value"][:3]
    assert "access_token" in cca(sb, app_id, fresh["value"]).acquire_token_for_client(GRAPH_DEFAULT)
    sb.control.delete_secret(app_id, fresh["keyId"])
    assert_aad(cca(sb, app_id, fresh["value"]).acquire_token_for_client(GRAPH_DEFAULT), 7000215)


def test_app_not_found_700016_and_disabled_7000112(sb, http):
    app_id, secret = new_app(sb)
    assert_aad(cca(sb, str(uuid.uuid4()), "x").acquire_token_for_client(GRAPH_DEFAULT), 700016,
               "unauthorized_client")
    sb.control.disable_app(app_id)
    assert_aad(cca(sb, app_id, secret).acquire_token_for_client(GRAPH_DEFAULT), 7000112, "unauthorized_client")
    r = http.post(f"{sb.base_url}/{TENANT}/oauth2/v2.0/token", data={
        "grant_type": "client_credentials", "client_id": app_id, "client_secret": secret,
        "scope": GRAPH_DEFAULT[0]})
    assert r.status_code == 400
    sb.control.enable_app(app_id)
    assert "access_token" in cca(sb, app_id, secret).acquire_token_for_client(GRAPH_DEFAULT)
    sb.control.delete_app(app_id)
    assert_aad(cca(sb, app_id, secret).acquire_token_for_client(GRAPH_DEFAULT), 700016)


def test_client_credentials_scope_must_be_default(sb):
    app_id, secret = new_app(sb)
    result = cca(sb, app_id, secret).acquire_token_for_client(["https://graph.microsoft.com/Mail.Read"])
    assert_aad(result, 1002012, "invalid_scope")


def _cert_credential(made: dict) -> dict:
    with open(made["key_path"]) as f:
        return {"private_key": f.read(), "thumbprint": made["thumbprint"]}


def test_certificate_credential_and_700027(sb):
    app_id, _ = new_app(sb, secret=False, application_permissions={"graph": ["Mail.Send"]})
    made = sb.control.add_certificate(app_id, end="+200d")
    result = cca(sb, app_id, _cert_credential(made)).acquire_token_for_client(GRAPH_DEFAULT)
    claims = claims_of(result["access_token"])
    assert claims["roles"] == ["Mail.Send"] and claims["appidacr"] == "2"
    # a key pair the app registration never saw
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = other.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()).decode()
    assert_aad(cca(sb, app_id, {"private_key": pem, "thumbprint": made["thumbprint"]})
               .acquire_token_for_client(GRAPH_DEFAULT), 700027, "invalid_client")
    assert_aad(cca(sb, app_id, {"private_key": pem, "thumbprint": "AB" * 20})
               .acquire_token_for_client(GRAPH_DEFAULT), 700027)
    sb.control.expire_certificate(app_id, made["keyId"])
    assert_aad(cca(sb, app_id, _cert_credential(made)).acquire_token_for_client(GRAPH_DEFAULT), 700027)
    made2 = sb.control.add_certificate(app_id, end="+30d")
    assert "access_token" in cca(sb, app_id, _cert_credential(made2)).acquire_token_for_client(GRAPH_DEFAULT)
    sb.control.delete_certificate(app_id, made2["keyId"])
    assert_aad(cca(sb, app_id, _cert_credential(made2)).acquire_token_for_client(GRAPH_DEFAULT), 700027)


def _assertion(made: dict, app_id: str, aud: str, now: int, s256: bool = False) -> str:
    with open(made["key_path"], "rb") as f:
        key = serialization.load_pem_private_key(f.read(), None)
    with open(made["cert_path"], "rb") as f:
        der = x509.load_pem_x509_certificate(f.read()).public_bytes(serialization.Encoding.DER)
    header = {"x5t#S256": base64.urlsafe_b64encode(hashlib.sha256(der).digest()).rstrip(b"=").decode()} if s256 \
        else {"x5t": base64.urlsafe_b64encode(hashlib.sha1(der).digest()).rstrip(b"=").decode()}
    claims = {"aud": aud, "iss": app_id, "sub": app_id, "jti": str(uuid.uuid4()), "nbf": now, "exp": now + 600}
    return jwt.encode(claims, key, algorithm="RS256", headers=header)


def test_assertion_x5t_s256_and_time_range_700024(sb):
    app_id, _ = new_app(sb, secret=False, application_permissions={"graph": ["Mail.Send"]})
    made = sb.control.add_certificate(app_id, end="+200d")
    aud = f"{sb.base_url}/{TENANT}/oauth2/v2.0/token"
    now = int(time.time())
    good = _assertion(made, app_id, aud, now, s256=True)
    assert "access_token" in cca(sb, app_id, {"client_assertion": lambda: good}).acquire_token_for_client(GRAPH_DEFAULT)
    stale = _assertion(made, app_id, aud, now - 7200)
    assert_aad(cca(sb, app_id, {"client_assertion": lambda: stale}).acquire_token_for_client(GRAPH_DEFAULT), 700024,
               "invalid_client")
    future = _assertion(made, app_id, aud, now + 7200)
    assert_aad(cca(sb, app_id, {"client_assertion": lambda: future}).acquire_token_for_client(GRAPH_DEFAULT), 700024)
