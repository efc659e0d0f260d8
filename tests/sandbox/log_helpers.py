"""Helpers of the sandbox's log, report and actor tests: a Graph reader app, MSAL clients whose client-request-id
we can see, and GETs of Graph's audit-log endpoints with requests."""

from __future__ import annotations

import uuid

import msal
import requests

from tests.sandbox.helpers import TENANT, new_app, session_for

GRAPH_DEFAULT = ["https://graph.microsoft.com/.default"]
READER_ROLES = ["AuditLog.Read.All", "Directory.Read.All", "ServiceHealth.Read.All"]
SP_FILTER = "signInEventTypes/any(t: t eq 'servicePrincipal')"
NI_FILTER = "signInEventTypes/any(t: t eq 'nonInteractiveUser')"


class RecordingSession(requests.Session):
    """A requests.Session for MSAL that remembers the client-request-id of every request MSAL sends."""

    def __init__(self, ca_path):
        super().__init__()
        self.verify, self.trust_env = str(ca_path), False
        self.request_ids: list[str] = []

    def request(self, method, url, *args, **kwargs):
        rid = (kwargs.get("headers") or {}).get("client-request-id")
        if rid:
            self.request_ids.append(rid)
        return super().request(method, url, *args, **kwargs)


def recording_cca(sb, app_id: str, credential, tenant: str = TENANT):
    http = RecordingSession(sb.ca_path)
    app = msal.ConfidentialClientApplication(app_id, client_credential=credential,
                                             authority=f"{sb.base_url}/{tenant}", instance_discovery=False,
                                             http_client=http)
    return app, http


def reader_token(sb, roles=READER_ROLES, tenant: str = TENANT) -> str:
    """An app-only Graph token of a fresh monitor app holding `roles`."""
    app_id, secret = new_app(sb, tenant=tenant, application_permissions={"graph": list(roles)})
    app, _ = recording_cca(sb, app_id, secret, tenant)
    return app.acquire_token_for_client(GRAPH_DEFAULT)["access_token"]


def graph_get(sb, path: str, token: str, version: str = "beta", **params) -> requests.Response:
    """GET {base}/{version}/{path}; `path` may also be a full nextLink."""
    url = path if path.startswith("https://") else f"{sb.base_url}/{version}/{path}"
    with session_for(sb) as s:
        return s.get(url, params=params or None, headers={"Authorization": f"Bearer {token}",
                                                          "client-request-id": str(uuid.uuid4())})


def signins(sb, token: str, filter: str | None = None, version: str = "beta", **params) -> list[dict]:  # noqa: A002
    if filter:
        params["$filter"] = filter
    r = graph_get(sb, "auditLogs/signIns", token, version, **params)
    assert r.status_code == 200, r.text
    return r.json()["value"]


def audits(sb, token: str, filter: str | None = None, **params) -> list[dict]:  # noqa: A002
    if filter:
        params["$filter"] = filter
    r = graph_get(sb, "auditLogs/directoryAudits", token, "v1.0", **params)
    assert r.status_code == 200, r.text
    return r.json()["value"]


def new_tenant(sb, **fields) -> tuple[str, str]:
    """A tenant of its own (for settings that would disturb other tests): its id and a reader token in it."""
    tid = str(uuid.uuid4())
    sb.control.add_tenant(id=tid, domain=f"t{tid[:8]}.onmicrosoft.com", **fields)
    return tid, reader_token(sb, tenant=tid)

