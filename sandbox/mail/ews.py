"""A minimal EWS: `POST /EWS/Exchange.asmx` GetFolder (inbox) and FindItem (inbox, Shallow) with a bearer token and
ExchangeImpersonation, answered in EWS's SOAP shapes (see sandbox/README.md for the assumptions)."""

from __future__ import annotations

import xml.etree.ElementTree as ET  # noqa: S405 - parses the test's own requests
from dataclasses import dataclass
from xml.sax.saxutils import escape

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from .model import EWS_CONCURRENCY, Mailbox, ews_org_enabled, exchange_of, find_mailbox, in_use, spend
from .xoauth2 import APP_ROLE, DELEGATED_SCOPE, TokenError, verify_bearer

NS = {"s": "http://schemas.xmlsoap.org/soap/envelope/",
      "t": "http://schemas.microsoft.com/exchange/services/2006/types",
      "m": "http://schemas.microsoft.com/exchange/services/2006/messages"}
WWW_AUTH = ('Bearer client_id="00000002-0000-0ff1-ce00-000000000000", '
            'trusted_issuers="00000001-0000-0000-c000-000000000000@*", '
            'token_types="app_asserted_user_v1 service_asserted_app_v1", '
            'authorization_uri="https://login.microsoftonline.com/common/oauth2/authorize", error="invalid_token"')
DIAG = {
    "missing": '2000000;reason="The bearer token is missing.";error_category="invalid_token"',
    "expired": '2000008;reason="The token has expired.";error_category="invalid_token"',
    "not_yet_valid": '2000008;reason="The token is not yet valid.";error_category="invalid_token"',
    "signature": '2000001;reason="The token has an invalid signature.";error_category="invalid_signature"',
    "malformed": '2000001;reason="The token is malformed.";error_category="invalid_token"',
    "issuer": '2000002;reason="The token issuer is invalid.";error_category="invalid_token"',
    "no_permission": ('2000008;reason="The token contains no permissions, or permissions can not be '
                      'understood.";error_category="invalid_grant"'),
}
XML = "text/xml; charset=utf-8"
HEAD = ('<?xml version="1.0" encoding="utf-8"?><s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/">'
        '<s:Header><h:ServerVersionInfo MajorVersion="15" MinorVersion="20" MajorBuildNumber="8" '
        'MinorBuildNumber="0" Version="V2018_01_08" '
        'xmlns:h="http://schemas.microsoft.com/exchange/services/2006/types" '
        'xmlns="http://schemas.microsoft.com/exchange/services/2006/types"/></s:Header>')
MESSAGES = {
    "ErrorNonExistentMailbox": "The SMTP address has no mailbox associated with it.",
    "ErrorImpersonateUserDenied": "The account does not have permission to impersonate the requested user.",
    "ErrorAccessDenied": "Access is denied. Check credentials and try again.",
    "ErrorInvalidExchangeImpersonationHeaderData":
        "ExchangeImpersonation SOAP header must be present for this type of OAuth token.",
    "ErrorFolderNotFound": "The specified folder could not be found in the store.",
    "ErrorSchemaValidation": "The request failed schema validation.",
    "ErrorServerBusy": "The server cannot service this request right now. Try again later.",
    "ErrorExceededConnectionCount": "You have exceeded the available concurrent connections for your account.  "
                                    "Try again once your other requests have completed.",
    "ErrorInvalidRequest": "The request is invalid.",
}


def unauthorized(kind: str, detail: str | None = None) -> Response:
    diag = DIAG.get(kind) or f'2000003;reason="{detail}";error_category="invalid_resource"'
    return Response(b"", status_code=401, headers={"WWW-Authenticate": WWW_AUTH, "x-ms-diagnostics": diag})


def fault(code: str, status: int = 500, text: str | None = None) -> Response:
    text = escape(text or MESSAGES[code])
    body = (f"{HEAD}<s:Body><s:Fault><faultcode xmlns:a=\"{NS['t']}\">a:{code}</faultcode>"
            f'<faultstring xml:lang="en-US">{text}</faultstring><detail>'
            f'<e:ResponseCode xmlns:e="http://schemas.microsoft.com/exchange/services/2006/errors">{code}'
            f'</e:ResponseCode><e:Message xmlns:e="http://schemas.microsoft.com/exchange/services/2006/errors">'
            f"{text}</e:Message></detail></s:Fault></s:Body></s:Envelope>")
    return Response(body.encode(), status_code=status, media_type=XML)


def forbidden() -> Response:
    """EWS refused by policy (EWSEnabled off, the app not on EWSAllowedAppIDs, an application access policy):
    a bare HTTP 403, no SOAP body to classify (M365_FACTS.md, "Library facts")."""
    return Response(b"", status_code=403)


def server_busy(backoff_ms: int) -> Response:
    """ErrorServerBusy with the back-off Exchange asks for in MessageXml."""
    body = (f"{HEAD}<s:Body><s:Fault><faultcode xmlns:a=\"{NS['t']}\">a:ErrorServerBusy</faultcode>"
            f'<faultstring xml:lang="en-US">{MESSAGES["ErrorServerBusy"]}</faultstring><detail>'
            '<e:ResponseCode xmlns:e="http://schemas.microsoft.com/exchange/services/2006/errors">ErrorServerBusy'
            '</e:ResponseCode><e:Message xmlns:e="http://schemas.microsoft.com/exchange/services/2006/errors">'
            f'{MESSAGES["ErrorServerBusy"]}</e:Message><t:MessageXml xmlns:t="{NS["t"]}">'
            f'<t:Value Name="BackOffMilliseconds">{int(backoff_ms)}</t:Value></t:MessageXml></detail></s:Fault>'
            "</s:Body></s:Envelope>")
    return Response(body.encode(), status_code=500, media_type=XML)


def _wrap(inner: str, op: str = "GetFolder") -> Response:
    body = (f"{HEAD}<s:Body><m:{op}Response xmlns:m=\"{NS['m']}\" xmlns:t=\"{NS['t']}\">"
            f"<m:ResponseMessages>{inner}</m:ResponseMessages></m:{op}Response></s:Body></s:Envelope>")
    return Response(body.encode(), status_code=200, media_type=XML)


def response_error(code: str, op: str = "GetFolder") -> Response:
    empty = "<m:Folders/>" if op == "GetFolder" else ""
    return _wrap(f'<m:{op}ResponseMessage ResponseClass="Error"><m:MessageText>{escape(MESSAGES[code])}'
                 f"</m:MessageText><m:ResponseCode>{code}</m:ResponseCode>"
                 f"<m:DescriptiveLinkKey>0</m:DescriptiveLinkKey>{empty}</m:{op}ResponseMessage>", op)


def folder_ok(mb: Mailbox) -> Response:
    unread = sum(1 for m in mb.messages if not m.seen)
    fid = "AAMkAGI2Inbox" + mb.id.replace("-", "")
    return _wrap('<m:GetFolderResponseMessage ResponseClass="Success"><m:ResponseCode>NoError</m:ResponseCode>'
                 f'<m:Folders><t:Folder><t:FolderId Id="{fid}" ChangeKey="AQAAABYAAAA"/>'
                 f"<t:DisplayName>Inbox</t:DisplayName><t:TotalCount>{len(mb.messages)}</t:TotalCount>"
                 f"<t:ChildFolderCount>0</t:ChildFolderCount><t:UnreadCount>{unread}</t:UnreadCount>"
                 "</t:Folder></m:Folders></m:GetFolderResponseMessage>")


@dataclass
class FindItem:
    """What the sandbox reads of a FindItem: the view (IndexedPageItemView), a Restriction on message:IsRead only,
    a SortOrder on item:DateTimeReceived only (the checks' use; any other restriction or sort is refused with
    ErrorInvalidRequest rather than answered wrongly)."""

    traversal: str = "Shallow"
    max_entries: int | None = None
    offset: int = 0
    from_end: bool = False
    is_read: bool | None = None
    ascending: bool | None = None
    unsupported: str | None = None


def _find_item(op: ET.Element) -> FindItem:
    find = FindItem(traversal=op.get("Traversal", ""))
    view = op.find("m:IndexedPageItemView", NS)
    if view is not None:
        raw_max = view.get("MaxEntriesReturned")
        find.max_entries = int(raw_max) if raw_max and raw_max.isdigit() else None
        find.offset = int(view.get("Offset", "0")) if view.get("Offset", "0").isdigit() else 0
        find.from_end = view.get("BasePoint") == "End"
    restriction = op.find("m:Restriction", NS)
    if restriction is not None:
        eq = restriction.find("t:IsEqualTo", NS)
        field = eq.find("t:FieldURI", NS) if eq is not None else None
        const = eq.find("t:FieldURIOrConstant/t:Constant", NS) if eq is not None else None
        if field is None or field.get("FieldURI") != "message:IsRead" or const is None or len(restriction) != 1:
            find.unsupported = "Restriction"
        else:
            find.is_read = (const.get("Value") or "").lower() == "true"
    order = op.find("m:SortOrder/t:FieldOrder", NS)
    if order is not None:
        field = order.find("t:FieldURI", NS)
        if field is None or field.get("FieldURI") != "item:DateTimeReceived":
            find.unsupported = "SortOrder"
        else:
            find.ascending = order.get("Order", "Ascending") == "Ascending"
    return find


def items_ok(mb: Mailbox, find: FindItem) -> Response:
    """A FindItem success as Exchange answers it (learn.microsoft.com/exchange/client-developer/web-service-reference/
    finditem-operation, and RootFolder (FindItemResponseMessage): IndexedPagingOffset is the next offset,
    TotalItemsInView the items passing the restriction, IncludesLastItemInRange whether the page reaches the last).
    IdOnly items with the DateTimeReceived the checks ask for as an additional property."""
    found = [m for m in mb.messages if not m.deleted and (find.is_read is None or m.seen == find.is_read)]
    if find.ascending is not None:
        found.sort(key=lambda m: (m.received, m.uid), reverse=not find.ascending)
    ordered = list(reversed(found)) if find.from_end else found
    page = ordered[find.offset:][:find.max_entries] if find.max_entries is not None else ordered[find.offset:]
    items = "".join(f'<t:Message><t:ItemId Id="{m.id}" ChangeKey="CQAAABYAAAA"/>'
                    f"<t:DateTimeReceived>{m.received.strftime('%Y-%m-%dT%H:%M:%SZ')}</t:DateTimeReceived>"
                    "</t:Message>" for m in page)
    end = find.offset + len(page)
    return _wrap('<m:FindItemResponseMessage ResponseClass="Success"><m:ResponseCode>NoError</m:ResponseCode>'
                 f'<m:RootFolder IndexedPagingOffset="{end}" TotalItemsInView="{len(found)}" '
                 f'IncludesLastItemInRange="{"true" if end >= len(found) else "false"}"><t:Items>{items}</t:Items>'
                 "</m:RootFolder></m:FindItemResponseMessage>", "FindItem")


def parse_request(raw: bytes) -> tuple[str | None, list[tuple[str, str | None]], FindItem | None] | None:
    """(impersonated address or None, [(distinguished folder id, mailbox address or None)], the FindItem or None
    for GetFolder); None: neither GetFolder nor FindItem."""
    root = ET.fromstring(raw)  # noqa: S314
    imp = root.find("s:Header/t:ExchangeImpersonation/t:ConnectingSID", NS)
    address = None
    if imp is not None:
        for tag in ("PrimarySmtpAddress", "SmtpAddress", "PrincipalName"):
            el = imp.find(f"t:{tag}", NS)
            if el is not None and (el.text or "").strip():
                address = el.text.strip()
                break
    op = root.find("s:Body/m:GetFolder", NS)
    find = None
    if op is None:
        op = root.find("s:Body/m:FindItem", NS)
        if op is None:
            return None
        find = _find_item(op)
    folders = []
    for d in op.findall(f"m:{'ParentFolderIds' if find else 'FolderIds'}/t:DistinguishedFolderId", NS):
        mbx = d.find("t:Mailbox/t:EmailAddress", NS)
        folders.append((d.get("Id", ""), mbx.text.strip() if mbx is not None and mbx.text else None))
    return address, folders, find


class Ews:
    def __init__(self, issuer):
        self.issuer = issuer
        self.state = issuer.state

    async def handle(self, request: Request) -> Response:
        value = request.headers.get("authorization", "")
        if not value.lower().startswith("bearer ") or not value[7:].strip():
            return unauthorized("missing")
        try:
            principal = verify_bearer(self.state, self.issuer.signer, value[7:].strip())
        except TokenError as exc:
            return unauthorized(exc.kind, str(exc))
        if principal.app_only and APP_ROLE["ews"] not in principal.roles or \
                not principal.app_only and DELEGATED_SCOPE["ews"] not in principal.scopes:
            return unauthorized("no_permission")
        try:
            parsed = parse_request(await request.body())
        except ET.ParseError:
            return fault("ErrorSchemaValidation")
        if parsed is None:
            return fault("ErrorInvalidRequest")
        impersonated, folders, find = parsed
        with self.state.lock:
            ex = exchange_of(self.state, principal.tenant_id)
            incident = self.state.incident("exchange")
            if incident is not None:
                return Response(b"", status_code=503, headers={"Retry-After": str(incident.retry_after)})
            if not ews_org_enabled(self.state, ex):
                return forbidden()  # EWSEnabled False, or never set after 1 October 2026
            if ex.ews_allowed_app_ids is not None and principal.app_id not in ex.ews_allowed_app_ids:
                return forbidden()  # not on EWSAllowedAppIDs
            if principal.app_only and not impersonated:
                return fault("ErrorInvalidExchangeImpersonationHeaderData")
            target = impersonated or next((a for _, a in folders if a), None) or principal.upn
            mb = find_mailbox(self.state, target or "", principal.tenant_id)
            if mb is None:
                return fault("ErrorNonExistentMailbox") if impersonated else response_error("ErrorNonExistentMailbox")
            if not mb.ews_enabled:
                return forbidden()  # Set-CASMailbox -EwsEnabled $false
            if principal.app_only and any(p.app_id == principal.app_id and p.blocks(mb.address)
                                          for p in ex.access_policies):
                return forbidden()  # application access policies scope EWS too
            if in_use(self.state, "ews", mb) >= EWS_CONCURRENCY:
                return fault("ErrorExceededConnectionCount")
            wait = spend(self.state, principal.name, mb)
            if wait is not None:
                return server_busy(int(wait * 1000))
            if principal.app_only and principal.app_id in mb.ews_impersonation_denied:
                return fault("ErrorImpersonateUserDenied")
            if not principal.app_only and not principal.has_full_access(mb):
                return response_error("ErrorAccessDenied")
            self.state.count_mail("ews", "FINDITEM" if find else "GETFOLDER", mb.address)
            if not folders or any(f.lower() != "inbox" for f, _ in folders):
                return response_error("ErrorFolderNotFound", "FindItem" if find else "GetFolder")
            if find is not None:
                if find.unsupported or find.traversal != "Shallow":
                    return response_error("ErrorInvalidRequest", "FindItem")
                return items_ok(mb, find)
            return folder_ok(mb)

    def routes(self) -> list[Route]:
        return [Route("/EWS/Exchange.asmx", self.handle, methods=["POST"]),
                Route("/ews/exchange.asmx", self.handle, methods=["POST"])]
