"""Helpers of the sandbox tests (driven with MSAL and requests only)."""

from __future__ import annotations

import uuid
from urllib.parse import parse_qs, urlsplit

import msal
import requests

from mailwarden_sandbox.browser import sign_in

TENANT = "11111111-2222-3333-4444-555555555555"
DOMAIN = "contoso.onmicrosoft.com"
STRICT_TENANT = "22222222-3333-4444-5555-666666666666"  # user_consent: false
MONITOR_APP = "12121212-3434-5656-7878-909090909090"
MONITOR_SECRET = "mw18Q~monitor-secret-value-for-tests-000001"
REDIRECT = "https://127.0.0.1:8080/auth/callback"
PASSWORD = "P@ss-demo-1"
OUTLOOK = ["https://outlook.office.com/IMAP.AccessAsUser.All", "https://outlook.office.com/SMTP.Send"]

SCENARIO = {
    "token_lifetime_s": 3600,
    "tenants": [
        {"id": TENANT, "domain": DOMAIN, "users": [{"upn": "helpdesk-mail@contoso.com", "password": PASSWORD}],
         "apps": [{"app_id": MONITOR_APP, "display_name": "mailwarden",
                   "secrets": [{"display_name": "monitor", "value": MONITOR_SECRET, "end": "+365d"}],
                   "application_permissions": {"graph": ["Application.Read.All"]}}],
         # EWS allowed for the org: never set, it is blocked since 1 October 2026 (M365_FACTS.md)
         "exchange": {"ews_enabled": True}},
        {"id": STRICT_TENANT, "domain": "fabrikam.onmicrosoft.com", "user_consent": False},
    ],
}


def session_for(sb) -> requests.Session:
    s = requests.Session()
    s.verify = str(sb.ca_path)
    s.trust_env = False
    return s


def cca(sb, app_id, credential, tenant=TENANT) -> msal.ConfidentialClientApplication:
    """A fresh MSAL app each time: MSAL caches identical error responses for 60 s."""
    return msal.ConfidentialClientApplication(app_id, client_credential=credential,
                                              authority=f"{sb.base_url}/{tenant}", instance_discovery=False,
                                              http_client=session_for(sb))


def pca(sb, app_id, tenant=TENANT) -> msal.PublicClientApplication:
    return msal.PublicClientApplication(app_id, authority=f"{sb.base_url}/{tenant}", instance_discovery=False,
                                        http_client=session_for(sb))


def new_user(sb, tenant=TENANT, **spec) -> str:
    upn = f"user-{uuid.uuid4().hex[:8]}@contoso.com"
    sb.control.add_user(tenant, upn=upn, password=PASSWORD, **spec)
    return upn


def new_app(sb, tenant=TENANT, secret=True, **spec) -> tuple[str, str | None]:
    """An app with one valid secret, admin-consented delegated Outlook scopes and an auth-code redirect."""
    spec.setdefault("display_name", f"app {uuid.uuid4().hex[:6]}")
    spec.setdefault("redirect_uris", [REDIRECT, "http://localhost"])
    spec.setdefault("delegated_permissions", {"exchange": ["IMAP.AccessAsUser.All", "POP.AccessAsUser.All",
                                                           "SMTP.Send"], "graph": ["User.Read"]})
    if secret:
        spec.setdefault("secrets", [{"display_name": "s1", "end": "+30d"}])
    made = sb.control.add_app(tenant, **spec)
    return made["app_id"], (made["secrets"][0]["value"] if made["secrets"] else None)


def assert_aad(result: dict, code: int, error: str | None = None) -> None:
    assert "access_token" not in result, result
    assert result.get("error_codes") == [code], result
    assert result["error_description"].startswith(f"AADSTS{code}: "), result
    for key in ("timestamp", "trace_id", "correlation_id", "error_uri"):
        assert key in result, key
    assert "Trace ID: " in result["error_description"]
    if error:
        assert result["error"] == error, result


def sign_in_code(sb, app: msal.ClientApplication, upn: str, scopes=OUTLOOK, redirect=REDIRECT, **kw):
    """Auth code + PKCE through the sandbox's sign-in page; returns (flow, auth_response dict)."""
    flow = app.initiate_auth_code_flow(scopes, redirect_uri=redirect, login_hint=upn)
    url = sign_in(flow["auth_uri"], upn, kw.pop("password", PASSWORD), sb.ca_path, **kw)
    query = {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}
    return flow, query


def user_tokens(sb, app_id, secret, upn, scopes=OUTLOOK, **kw) -> dict:
    app = cca(sb, app_id, secret)
    flow, response = sign_in_code(sb, app, upn, scopes, **kw)
    result = app.acquire_token_by_auth_code_flow(flow, response)
    assert "access_token" in result, result
    return result
