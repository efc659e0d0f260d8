"""Graph applications(appId=), msgraph-sdk parsing, faults, stats, state and the CLI."""

from __future__ import annotations

import json
import os
import signal
import ssl
import subprocess
import sys
import time
from pathlib import Path

import httpx
import jwt

from tests.sandbox.helpers import MONITOR_APP, MONITOR_SECRET, TENANT, cca, new_app

GRAPH_DEFAULT = ["https://graph.microsoft.com/.default"]


def monitor_token(sb) -> str:
    return cca(sb, MONITOR_APP, MONITOR_SECRET).acquire_token_for_client(GRAPH_DEFAULT)["access_token"]


def app_url(sb, app_id: str) -> str:
    return f"{sb.endpoints['graph']}/applications(appId='{app_id}')"


def test_graph_application_credentials(sb, http):
    app_id, secret = new_app(sb, secrets=[{"display_name": "helpdesk 2025", "value": "abc8Q~value-1", "start": "-300d",
                                           "end": "+10d"}])
    cert = sb.control.add_certificate(app_id, end="+200d")
    r = http.get(app_url(sb, app_id), params={"$select": "id,displayName,passwordCredentials,keyCredentials"},
                 headers={"Authorization": f"Bearer {monitor_token(sb)}", "client-request-id": "cr-1"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"@odata.context", "id", "displayName", "passwordCredentials", "keyCredentials"}
    assert body["@odata.context"].endswith("$metadata#applications(id,displayName,passwordCredentials,"
                                           "keyCredentials)/$entity")
    [pw] = body["passwordCredentials"]
    assert pw["hint"] == "abc" and pw["secretText"] is None and pw["customKeyIdentifier"] is None
    assert pw["displayName"] == "helpdesk 2025" and pw["endDateTime"].endswith("Z")
    [kc] = body["keyCredentials"]
    assert kc["customKeyIdentifier"] == cert["thumbprint"] and kc["keyId"] == cert["keyId"]
    assert kc["type"] == "AsymmetricX509Cert" and kc["usage"] == "Verify" and kc["key"] is None
    assert kc["displayName"].startswith("CN=")
    full = http.get(app_url(sb, app_id), headers={"Authorization": f"Bearer {monitor_token(sb)}"}).json()
    assert full["appId"] == app_id and "publisherDomain" in full
    assert "abc8Q~value-1" not in json.dumps(sb.control.state())  # the control API never echoes values


def test_graph_errors_403_404_401(sb, http):
    app_id, secret = new_app(sb)
    no_role = cca(sb, app_id, secret).acquire_token_for_client(GRAPH_DEFAULT)["access_token"]
    r = http.get(app_url(sb, app_id), headers={"Authorization": f"Bearer {no_role}", "client-request-id": "c-9"})
    assert r.status_code == 403
    err = r.json()["error"]
    assert err["code"] == "Authorization_RequestDenied"
    assert err["message"] == "Insufficient privileges to complete the operation."
    assert err["innerError"]["client-request-id"] == "c-9" and r.headers["client-request-id"] == "c-9"
    assert r.headers["request-id"] == err["innerError"]["request-id"]
    r = http.get(app_url(sb, "00000000-0000-0000-0000-000000000001"),
                 headers={"Authorization": f"Bearer {monitor_token(sb)}"})
    assert r.status_code == 404 and r.json()["error"]["code"] == "Request_ResourceNotFound"
    r = http.get(app_url(sb, app_id))
    assert r.status_code == 401 and r.json()["error"]["code"] == "InvalidAuthenticationToken"
    sb.control.set_token_lifetime(-60)
    try:
        expired = monitor_token(sb)
    finally:
        sb.control.set_token_lifetime(3600)
    r = http.get(app_url(sb, app_id), headers={"Authorization": f"Bearer {expired}"})
    assert r.status_code == 401 and "expired" in r.json()["error"]["message"]
    exo = cca(sb, MONITOR_APP, MONITOR_SECRET).acquire_token_for_client(["https://outlook.office365.com/.default"])
    r = http.get(app_url(sb, app_id), headers={"Authorization": f"Bearer {exo['access_token']}"})
    assert r.status_code == 401  # wrong audience
    forged = jwt.encode(jwt.decode(monitor_token(sb), options={"verify_signature": False}), "k" * 32)
    assert http.get(app_url(sb, app_id), headers={"Authorization": f"Bearer {forged}"}).status_code == 401


def test_throttling_fault_then_recovery(sb, http):
    token = monitor_token(sb)
    sb.control.add_fault("/v1.0/applications", status=429, count=2, retry_after=7)
    for _ in range(2):
        r = http.get(app_url(sb, MONITOR_APP), headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 429 and r.headers["Retry-After"] == "7"
        assert r.json()["error"]["code"] == "TooManyRequests"
    assert http.get(app_url(sb, MONITOR_APP), headers={"Authorization": f"Bearer {token}"}).status_code == 200
    sb.control.add_fault(f"/{TENANT}/oauth2/v2.0/token", count=1, retry_after=3)
    r = http.post(f"{sb.base_url}/{TENANT}/oauth2/v2.0/token", data={
        "grant_type": "client_credentials", "client_id": MONITOR_APP, "client_secret": MONITOR_SECRET,
        "scope": GRAPH_DEFAULT[0]})
    assert r.status_code == 429 and r.headers["Retry-After"] == "3"
    assert "access_token" in cca(sb, MONITOR_APP, MONITOR_SECRET).acquire_token_for_client(GRAPH_DEFAULT)


def test_latency_fault(sb, http):
    fault = sb.control.add_fault("/v1.0/", status=None, count=None, latency_ms=300)
    token = monitor_token(sb)
    try:
        started = time.monotonic()
        assert http.get(app_url(sb, MONITOR_APP), headers={"Authorization": f"Bearer {token}"}).status_code == 200
        assert time.monotonic() - started >= 0.3
    finally:
        sb.control.clear_faults(fault)
    started = time.monotonic()
    http.get(app_url(sb, MONITOR_APP), headers={"Authorization": f"Bearer {token}"})
    assert time.monotonic() - started < 0.3


def test_stats_count_token_requests(sb):
    sb.control.reset_stats()
    app = cca(sb, MONITOR_APP, MONITOR_SECRET)
    for _ in range(3):
        app.acquire_token_for_client(GRAPH_DEFAULT)  # MSAL reuses its cached token: one request
    cca(sb, MONITOR_APP, MONITOR_SECRET).acquire_token_for_client(GRAPH_DEFAULT)
    stats = sb.control.stats()
    assert stats["token"]["client_credentials"][MONITOR_APP] == 2 and stats["token_total"] == 2
    assert stats["requests"][f"POST /{TENANT}/oauth2/v2.0/token"] == 2
    sb.control.reset_stats()
    assert sb.control.stats()["token_total"] == 0


class _MsalCredential:
    """An azure.core TokenCredential backed by MSAL (as a product would write it)."""

    def __init__(self, app):
        self.app = app

    def get_token(self, *scopes, **kwargs):
        from azure.core.credentials import AccessToken

        result = self.app.acquire_token_for_client(list(scopes))
        return AccessToken(result["access_token"], int(time.time()) + result["expires_in"])


async def test_msgraph_sdk_parses_application(sb):
    from kiota_abstractions.base_request_configuration import RequestConfiguration
    from kiota_authentication_azure.azure_identity_authentication_provider import (
        AzureIdentityAuthenticationProvider,
    )
    from msgraph import GraphRequestAdapter, GraphServiceClient
    from msgraph.generated.applications_with_app_id.applications_with_app_id_request_builder import (
        ApplicationsWithAppIdRequestBuilder,
    )
    from msgraph_core import GraphClientFactory

    app_id, _ = new_app(sb, secrets=[{"display_name": "sdk", "value": "xyz8Q~sdk", "end": "+5d"}])
    cert = sb.control.add_certificate(app_id, end="+50d")
    auth = AzureIdentityAuthenticationProvider(_MsalCredential(cca(sb, MONITOR_APP, MONITOR_SECRET)),
                                               scopes=GRAPH_DEFAULT, allowed_hosts=["127.0.0.1"],
                                               is_cae_enabled=False)
    async with httpx.AsyncClient(verify=ssl.create_default_context(cafile=str(sb.ca_path)), trust_env=False) as raw:
        adapter = GraphRequestAdapter(auth, client=GraphClientFactory.create_with_default_middleware(client=raw))
        adapter.base_url = sb.endpoints["graph"]
        client = GraphServiceClient(request_adapter=adapter)
        query = ApplicationsWithAppIdRequestBuilder.ApplicationsWithAppIdRequestBuilderGetQueryParameters(
            select=["id", "displayName", "passwordCredentials", "keyCredentials"])
        config = RequestConfiguration(query_parameters=query)
        application = await client.applications_with_app_id(app_id).get(request_configuration=config)
        full = await client.applications_with_app_id(app_id).get()
    assert application.display_name == full.display_name and full.app_id == app_id
    [pw] = application.password_credentials
    assert pw.hint == "xyz" and pw.end_date_time.year >= 2000 and pw.key_id is not None
    [kc] = application.key_credentials
    assert str(kc.key_id) == cert["keyId"] and kc.type == "AsymmetricX509Cert"


def test_cli_runs_and_stops_on_sigterm(tmp_path):
    scenario = Path(__file__).resolve().parents[2] / "sandbox" / "scenarios" / "minimal.yaml"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "mailwarden_sandbox", "--scenario", str(scenario), "--port", "0",
                             "--workdir", str(tmp_path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env, cwd=Path(__file__).resolve().parents[2])
    try:
        lines = []
        while not lines or lines[-1] != "}\n":
            line = proc.stdout.readline()
            assert line, proc.stderr.read()
            lines.append(line)
        info = json.loads("".join(lines))
        assert info["base_url"].startswith("https://127.0.0.1:") and Path(info["ca_path"]).exists()
        r = httpx.get(info["base_url"] + "/contoso.onmicrosoft.com/v2.0/.well-known/openid-configuration",
                      verify=ssl.create_default_context(cafile=info["ca_path"]), trust_env=False)
        assert r.status_code == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
