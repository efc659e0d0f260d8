"""The minimal EWS: GetFolder(inbox) with ExchangeImpersonation, driven with httpx."""

from __future__ import annotations

import ssl
import xml.etree.ElementTree as ET

import httpx

from tests.sandbox.helpers import TENANT
from tests.sandbox.mail_helpers import app_token, delegated_token, new_mailbox, user_with_mailbox

T = "{http://schemas.microsoft.com/exchange/services/2006/types}"
M = "{http://schemas.microsoft.com/exchange/services/2006/messages}"
E = "{http://schemas.microsoft.com/exchange/services/2006/errors}"


def get_folder(address: str | None) -> str:
    header = ("<t:ExchangeImpersonation><t:ConnectingSID><t:PrimarySmtpAddress>"
              f"{address}</t:PrimarySmtpAddress></t:ConnectingSID></t:ExchangeImpersonation>") if address else ""
    return ('<?xml version="1.0" encoding="utf-8"?>'
            '<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/" '
            'xmlns:t="http://schemas.microsoft.com/exchange/services/2006/types" '
            'xmlns:m="http://schemas.microsoft.com/exchange/services/2006/messages">'
            f'<soap:Header><t:RequestServerVersion Version="Exchange2016"/>{header}</soap:Header>'
            "<soap:Body><m:GetFolder><m:FolderShape><t:BaseShape>Default</t:BaseShape></m:FolderShape>"
            '<m:FolderIds><t:DistinguishedFolderId Id="inbox"/></m:FolderIds></m:GetFolder></soap:Body>'
            "</soap:Envelope>")


def ews(sb, token: str | None, address: str | None, anchor: str | None = None) -> httpx.Response:
    headers = {"Content-Type": "text/xml; charset=utf-8"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    if anchor or address:
        headers["X-AnchorMailbox"] = anchor or address
    with httpx.Client(verify=ssl.create_default_context(cafile=str(sb.ca_path)), trust_env=False) as c:
        return c.post(sb.endpoints["ews"], content=get_folder(address).encode(), headers=headers)


def response_code(r: httpx.Response) -> str:
    root = ET.fromstring(r.content)
    el = root.find(f".//{M}ResponseCode")
    if el is None:
        el = root.find(f".//{E}ResponseCode")
    return el.text


def test_get_folder_success_and_token_errors(sb):
    box = new_mailbox(sb, messages=[{"subject": "a"}, {"subject": "b", "seen": True}])
    _, token = app_token(sb, ["full_access_as_app"], service_principal=False)
    r = ews(sb, token, box)
    assert r.status_code == 200, r.text
    msg = ET.fromstring(r.content).find(f".//{M}GetFolderResponseMessage")
    assert msg.get("ResponseClass") == "Success" and response_code(r) == "NoError"
    folder = msg.find(f"{M}Folders/{T}Folder")
    assert folder.find(f"{T}DisplayName").text == "Inbox" and folder.find(f"{T}FolderId").get("Id")
    assert (folder.find(f"{T}TotalCount").text, folder.find(f"{T}UnreadCount").text) == ("2", "1")
    assert folder.find(f"{T}ChildFolderCount").text == "0"
    assert sb.control.stats()["mail"]["ews"]["commands"][box.lower()]["GETFOLDER"] >= 1
    sb.control.set_token_lifetime(-60)
    try:
        _, expired = app_token(sb, ["full_access_as_app"], service_principal=False)
    finally:
        sb.control.set_token_lifetime(3600)
    r = ews(sb, expired, box)
    assert r.status_code == 401 and r.content == b""
    assert r.headers["x-ms-diagnostics"] == '2000008;reason="The token has expired.";error_category="invalid_token"'
    _, no_role = app_token(sb, ["IMAP.AccessAsApp"], service_principal=False)
    r = ews(sb, no_role, box)
    assert r.status_code == 401 and "no permissions" in r.headers["x-ms-diagnostics"]
    assert ews(sb, None, box).status_code == 401


def test_mailbox_errors(sb):
    box = new_mailbox(sb)
    app_id, token = app_token(sb, ["full_access_as_app"], service_principal=False)
    r = ews(sb, token, "nobody@contoso.com")
    assert r.status_code == 500 and response_code(r) == "ErrorNonExistentMailbox"
    r = ews(sb, token, None)
    assert response_code(r) == "ErrorInvalidExchangeImpersonationHeaderData"
    sb.control.patch_mailbox(box, ews_impersonation_denied=[app_id])
    r = ews(sb, token, box)
    assert response_code(r) == "ErrorImpersonateUserDenied"
    # EWS refused by policy is a bare 403 (M365_FACTS.md; "403 is policy block": PowerShell-EWS-Scripts#62)
    sb.control.patch_mailbox(box, ews_impersonation_denied=[], ews_enabled=False)
    r = ews(sb, token, box)
    assert r.status_code == 403 and r.content == b""
    sb.control.patch_mailbox(box, ews_enabled=True)
    for setting in ({"ews_enabled": False}, {"ews_enabled": None}, {"ews_allowed_app_ids": ["someone-else"]}):
        sb.control.set_tenant_exchange(TENANT, **setting)
        try:
            r = ews(sb, token, box)
            assert (r.status_code, r.content) == (403, b""), setting
        finally:
            sb.control.set_tenant_exchange(TENANT, ews_enabled=True, ews_allowed_app_ids=None)
    sb.control.set_tenant_exchange(TENANT, ews_allowed_app_ids=[app_id])
    try:
        assert ews(sb, token, box).status_code == 200
        policy = sb.control.add_access_policy(TENANT, app_id, "RestrictAccess", ["someone@contoso.com"])
        assert (ews(sb, token, box).status_code, ews(sb, token, box).content) == (403, b"")
        sb.control.remove_access_policy(TENANT, id=policy)
    finally:
        sb.control.set_tenant_exchange(TENANT, ews_allowed_app_ids=None)
    assert ews(sb, token, box).status_code == 200


def test_delegated_own_mailbox_only(sb):
    upn = user_with_mailbox(sb)
    other = new_mailbox(sb)
    token = delegated_token(sb, upn, scopes=["https://outlook.office.com/EWS.AccessAsUser.All"])
    r = ews(sb, token, None, anchor=upn)
    assert r.status_code == 200 and response_code(r) == "NoError"
    r = ews(sb, token, other)
    assert r.status_code == 200 and response_code(r) == "ErrorAccessDenied"
