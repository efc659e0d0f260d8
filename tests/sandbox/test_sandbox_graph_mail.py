"""Graph mail endpoints: inbox folder, oldest unread, sendMail; permissions, access policies, faults."""

from __future__ import annotations

import ssl
import time

import httpx

from tests.sandbox.helpers import TENANT, cca, new_app
from tests.sandbox.mail_helpers import GRAPH_DEFAULT, app_token, delegated_token, new_mailbox, user_with_mailbox

# receivedDateTime in $filter first: Graph refuses a sort on a property its filter does not name (InefficientFilter)
OLDEST_UNREAD = {"$filter": "receivedDateTime ge 1900-01-01T00:00:00Z and isRead eq false",
                 "$orderby": "receivedDateTime asc", "$top": "1", "$select": "receivedDateTime"}
POLICY_MSG = "Access to OData is disabled: Blocked by tenant configured AppOnly AccessPolicy settings."


def client(sb, token: str) -> httpx.Client:
    return httpx.Client(base_url=sb.endpoints["graph"], headers={"Authorization": f"Bearer {token}"},
                        verify=ssl.create_default_context(cafile=str(sb.ca_path)), trust_env=False)


def graph_app(sb, *roles) -> tuple[str, str]:
    return app_token(sb, graph_roles=roles, service_principal=False, scope=GRAPH_DEFAULT)


def test_inbox_and_oldest_unread_app_only(sb):
    box = new_mailbox(sb, messages=[{"subject": "old read", "received": "-9h", "seen": True},
                                    {"subject": "oldest unread", "received": "-4h"},
                                    {"subject": "newer", "received": "-1h"}])
    _, token = graph_app(sb, "Mail.Read")
    with client(sb, token) as c:
        for path in (f"/users/{box}/mailFolders/inbox", f"/users/{box}/mailFolders('inbox')"):
            r = c.get(path)
            assert r.status_code == 200, r.text
            body = r.json()
            assert body["displayName"] == "Inbox" and body["unreadItemCount"] == 2 and body["totalItemCount"] == 3
            assert {"id", "parentFolderId", "childFolderCount", "sizeInBytes", "isHidden"} <= set(body)
        r = c.get(f"/users/{box}/mailFolders/inbox/messages", params=OLDEST_UNREAD)
        assert r.status_code == 200, r.text
        [msg] = r.json()["value"]
        assert set(msg) == {"@odata.etag", "id", "receivedDateTime"}
        received = time.mktime(time.strptime(msg["receivedDateTime"], "%Y-%m-%dT%H:%M:%SZ"))
        assert 3.5 * 3600 < time.mktime(time.gmtime()) - received < 4.5 * 3600
        sb.control.mark_all_seen(box)
        assert c.get(f"/users/{box}/mailFolders/inbox/messages", params=OLDEST_UNREAD).json()["value"] == []
        r = c.get("/users/nobody@contoso.com/mailFolders/inbox")
        assert r.status_code == 404 and r.json()["error"] == {**r.json()["error"], "code": "ErrorInvalidUser",
                                                               "message": "The requested user 'nobody@contoso.com' "
                                                                          "is invalid."}
    _, no_mail = graph_app(sb, "User.Read.All")
    with client(sb, no_mail) as c:
        r = c.get(f"/users/{box}/mailFolders/inbox")
        assert r.status_code == 403
        assert r.json()["error"]["code"] == "ErrorAccessDenied"
        assert r.json()["error"]["message"] == "Access is denied. Check credentials and try again."


def test_application_access_policy(sb):
    inside, outside = new_mailbox(sb), new_mailbox(sb)
    app_id, token = graph_app(sb, "Mail.ReadWrite")
    policy = sb.control.add_access_policy(TENANT, app_id, "RestrictAccess", [inside])
    with client(sb, token) as c:
        assert c.get(f"/users/{inside}/mailFolders/inbox").status_code == 200
        r = c.get(f"/users/{outside}/mailFolders/inbox")
        assert r.status_code == 403 and r.json()["error"]["message"] == POLICY_MSG
        sb.control.remove_access_policy(TENANT, id=policy)
        sb.control.add_access_policy(TENANT, app_id, "DenyAccess", [inside])
        assert c.get(f"/users/{inside}/mailFolders/inbox").status_code == 403
        assert c.get(f"/users/{outside}/mailFolders/inbox").status_code == 200


def test_send_mail_delivers_and_needs_mail_send(sb):
    sender, rcpt = new_mailbox(sb), new_mailbox(sb)
    _, token = graph_app(sb, "Mail.Send")
    payload = {"message": {"subject": "graph canary", "body": {"contentType": "Text", "content": "hi"},
                           "toRecipients": [{"emailAddress": {"address": rcpt}}]}, "saveToSentItems": False}
    with client(sb, token) as c:
        r = c.post(f"/users/{sender}/sendMail", json=payload)
        assert r.status_code == 202 and r.content == b""
    [m] = sb.control.get_mailbox(rcpt)["messages"]
    assert m["subject"] == "graph canary" and m["from"] == sender and m["seen"] is False
    _, read_only = graph_app(sb, "Mail.Read")
    with client(sb, read_only) as c:
        assert c.post(f"/users/{sender}/sendMail", json=payload).status_code == 403


def test_delegated_own_and_shared_mailbox(sb):
    upn = user_with_mailbox(sb)
    shared = new_mailbox(sb, type="shared")
    token = delegated_token(sb, upn, scopes=["Mail.Read", "Mail.Read.Shared"],
                            graph=["Mail.Read", "Mail.Read.Shared", "User.Read"])
    with client(sb, token) as c:
        assert c.get(f"/users/{upn}/mailFolders/inbox").status_code == 200
        assert c.get("/me/mailFolders/inbox").status_code == 200
        assert c.get(f"/users/{shared}/mailFolders/inbox").status_code == 403
        sb.control.grant_mailbox_permission(shared, "full_access", upn)
        assert c.get(f"/users/{shared}/mailFolders/inbox").status_code == 200


def test_throttling_fault_on_mail_path(sb):
    box = new_mailbox(sb)
    _, token = graph_app(sb, "Mail.Read")
    sb.control.add_fault(f"/v1.0/users/{box}/mailFolders", status=429, count=1, retry_after=7)
    with client(sb, token) as c:
        r = c.get(f"/users/{box}/mailFolders/inbox")
        assert r.status_code == 429 and r.headers["Retry-After"] == "7"
        assert r.json()["error"]["code"] == "TooManyRequests"
        assert c.get(f"/users/{box}/mailFolders/inbox").status_code == 200
    assert sb.control.stats()["mail"]["graph"]["commands"][box.lower()]["GET_INBOX"] == 1


class _Credential:
    def __init__(self, app):
        self.app = app

    def get_token(self, *scopes, **kwargs):
        from azure.core.credentials import AccessToken

        result = self.app.acquire_token_for_client(list(scopes))
        return AccessToken(result["access_token"], int(time.time()) + result["expires_in"])


async def test_msgraph_sdk_inbox_and_messages(sb):
    from kiota_abstractions.base_request_configuration import RequestConfiguration
    from kiota_authentication_azure.azure_identity_authentication_provider import (
        AzureIdentityAuthenticationProvider,
    )
    from msgraph import GraphRequestAdapter, GraphServiceClient
    from msgraph.generated.users.item.mail_folders.item.messages.messages_request_builder import (
        MessagesRequestBuilder,
    )
    from msgraph_core import GraphClientFactory

    box = new_mailbox(sb, messages=[{"subject": "b", "received": "-2h"}, {"subject": "a", "received": "-3h"}])
    app_id, secret = new_app(sb, application_permissions={"graph": ["Mail.Read"]})
    auth = AzureIdentityAuthenticationProvider(_Credential(cca(sb, app_id, secret)), scopes=GRAPH_DEFAULT,
                                               allowed_hosts=["127.0.0.1"], is_cae_enabled=False)
    async with httpx.AsyncClient(verify=ssl.create_default_context(cafile=str(sb.ca_path)), trust_env=False) as raw:
        adapter = GraphRequestAdapter(auth, client=GraphClientFactory.create_with_default_middleware(client=raw))
        adapter.base_url = sb.endpoints["graph"]
        gc = GraphServiceClient(request_adapter=adapter)
        folder = await gc.users.by_user_id(box).mail_folders.by_mail_folder_id("inbox").get()
        assert folder.display_name == "Inbox" and folder.unread_item_count == 2 and folder.total_item_count == 2
        query = MessagesRequestBuilder.MessagesRequestBuilderGetQueryParameters(
            filter="receivedDateTime ge 1900-01-01T00:00:00Z and isRead eq false", orderby=["receivedDateTime asc"],
            top=1, select=["receivedDateTime"])
        page = await gc.users.by_user_id(box).mail_folders.by_mail_folder_id("inbox").messages.get(
            request_configuration=RequestConfiguration(query_parameters=query))
        [oldest] = page.value
        assert oldest.received_date_time is not None and oldest.subject is None
