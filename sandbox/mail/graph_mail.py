"""Graph mail: `users/{id|upn}/mailFolders/inbox`, its messages, `sendMail` (and the `/me` forms).

Authorisation as Exchange Online applies it behind Graph: the token's roles/scp, then the mailbox,
then (app-only) the tenant's ApplicationAccessPolicy, then (delegated) the mailbox permission.
"""

from __future__ import annotations

import datetime as dt
import json
import re

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ..errors import graph_error
from ..state import utcnow
from .model import GRAPH_CONCURRENCY, Mailbox, Message, exchange_of, find_mailbox, in_use, resolve_user_id, spend

_PATH = re.compile(r"^(?:users/([^/]+)|me)/(.*)$", re.I)
_FOLDER = re.compile(r"^mailFolders(?:/([^/()]+)|\('([^']*)'\))(/messages)?/?$", re.I)
# `isRead eq <bool>` or `startswith(subject,'<text>')`, optionally after `receivedDateTime ge|gt <time> and` (what
# a sort on receivedDateTime needs); or that receivedDateTime clause alone
_FILTER = re.compile(r"^\s*(?:receivedDateTime\s+(ge|gt)\s+(\d{4}-\d\d-\d\dT[\d:.]+Z)\s*(?:\s+and\s+|$))?"
                     r"(?:isRead\s+eq\s+(true|false)|startswith\(\s*subject\s*,\s*'((?:[^']|'')*)'\s*\))?\s*$", re.I)
# Graph refuses $orderby on a property that $filter does not name first, in the same order (Microsoft Graph team,
# "Update to Filtering and Sorting in the Mail, Calendar and Contacts REST API", devblogs.microsoft.com/microsoft365dev)
INEFFICIENT = "The restriction or sort order is too complex for this operation."
_ORDER = re.compile(r"^\s*receivedDateTime(?:\s+(asc|desc))?\s*$", re.I)
_MESSAGE = re.compile(r"^(?:mailFolders(?:/[^/()]+|\('[^']*'\))/)?messages/([^/]+)/?$", re.I)
APP_READ = {"Mail.Read", "Mail.ReadWrite", "Mail.ReadBasic.All", "Mail.ReadBasic"}
USER_READ_OWN = {"Mail.Read", "Mail.ReadWrite", "Mail.ReadBasic", "Mail.Read.Shared", "Mail.ReadWrite.Shared"}
USER_READ_SHARED = {"Mail.Read.Shared", "Mail.ReadWrite.Shared"}
# PATCH a message (isRead): Mail.ReadWrite; a delegate on another's mailbox needs Mail.ReadWrite.Shared
APP_WRITE = {"Mail.ReadWrite"}
USER_WRITE_OWN = {"Mail.ReadWrite", "Mail.ReadWrite.Shared"}
USER_WRITE_SHARED = {"Mail.ReadWrite.Shared"}
DENIED = "Access is denied. Check credentials and try again."
POLICY = "Access to OData is disabled: Blocked by tenant configured AppOnly AccessPolicy settings."


def gtime(v) -> str:
    return v.strftime("%Y-%m-%dT%H:%M:%SZ")


def inbox_id(mb: Mailbox) -> str:
    return "AAMkAGI2Inbox" + mb.id.replace("-", "")


def message_json(mb: Mailbox, m: Message) -> dict:
    t = gtime(m.received)
    preview = (m.body or "").strip()[:255]
    return {
        "@odata.etag": f'W/"CQAAABYAAAC{m.uid:08d}"', "id": m.id, "createdDateTime": t,
        "lastModifiedDateTime": t, "changeKey": f"CQAAABYAAAC{m.uid:08d}", "categories": [],
        "receivedDateTime": t, "sentDateTime": t, "hasAttachments": False,
        "internetMessageId": f"<{m.id[4:20]}@sandbox.mailwarden>", "subject": m.subject,
        "bodyPreview": preview, "importance": "normal", "parentFolderId": inbox_id(mb),
        "conversationId": "AAQk" + m.id[4:20], "isDeliveryReceiptRequested": False,
        "isReadReceiptRequested": False, "isRead": m.seen, "isDraft": False,
        "webLink": f"https://outlook.office365.com/owa/?ItemID={m.id}", "inferenceClassification": "focused",
        "body": {"contentType": "text", "content": m.body or ""},
        "sender": {"emailAddress": {"name": m.sender, "address": m.sender}},
        "from": {"emailAddress": {"name": m.sender, "address": m.sender}},
        "toRecipients": [{"emailAddress": {"name": a, "address": a}} for a in m.to],
        "ccRecipients": [], "bccRecipients": [], "replyTo": [], "flag": {"flagStatus": "notFlagged"},
    }


class GraphMail:
    def __init__(self, state, base: str):
        self.state, self.base = state, base

    async def dispatch(self, request: Request, claims: dict, tenant, rest: str) -> Response | None:
        m = _PATH.match(rest)
        if not m:
            return None
        crid = request.headers.get("client-request-id")
        ident, tail = m.group(1), m.group(2)
        app_only = claims.get("idtyp") == "app" or "scp" not in claims
        fm = _FOLDER.match(tail)
        if request.method == "GET" and fm:
            op = "messages" if fm.group(3) else "folder"
            folder = fm.group(1) or fm.group(2)
        elif request.method == "GET" and tail.rstrip("/").lower() == "messages":
            op, folder = "messages", None
        elif request.method == "POST" and tail.rstrip("/").lower() == "sendmail":
            op, folder = "send", None
        elif request.method == "PATCH" and _MESSAGE.match(tail):
            op, folder = "update", None
        else:
            return None
        if ident is None and app_only:
            return graph_error(400, "BadRequest", "/me request is only valid with delegated authentication flow.",
                               crid)
        granted = set(claims.get("roles") or []) if app_only else set((claims.get("scp") or "").split())
        if op == "send":
            if not granted & ({"Mail.Send"} if app_only else {"Mail.Send", "Mail.Send.Shared"}):
                return graph_error(403, "ErrorAccessDenied", DENIED, crid)
        elif op == "update":
            if not granted & (APP_WRITE if app_only else USER_WRITE_OWN):
                return graph_error(403, "ErrorAccessDenied", DENIED, crid)
        elif not granted & (APP_READ if app_only else USER_READ_OWN):
            return graph_error(403, "ErrorAccessDenied", DENIED, crid)
        upn = (claims.get("upn") or claims.get("preferred_username") or "").lower()
        raw = await request.body() if op == "update" else b""  # read before the state lock is taken
        incident = self.state.incident("exchange")
        if incident is not None:
            return graph_error(503, "UnknownError", "", crid,  # as captured (microsoft-graph-docs#5288)
                               {"Retry-After": str(incident.retry_after)})
        with self.state.lock:
            mb = resolve_user_id(self.state, tenant.id, ident if ident is not None else upn)
            if mb is None:
                shown = ident if ident is not None else upn
                return graph_error(404, "ErrorInvalidUser", f"The requested user '{shown}' is invalid.", crid)
            if app_only:
                app_id = str(claims.get("appid", "")).lower()
                for p in exchange_of(self.state, mb.tenant_id).access_policies:
                    if p.app_id == app_id and p.blocks(mb.address):
                        return graph_error(403, "ErrorAccessDenied", POLICY, crid)
            elif mb.owner != upn:
                if op == "send":
                    ok = "Mail.Send.Shared" in granted and upn in mb.send_as
                elif op == "update":
                    ok = bool(granted & USER_WRITE_SHARED) and upn in mb.full_access
                else:
                    ok = bool(granted & USER_READ_SHARED) and upn in mb.full_access
                if not ok:
                    return graph_error(403, "ErrorAccessDenied", DENIED, crid)
            busy = self._throttle(claims, mb, app_only, upn, crid)
            if busy is not None:
                return busy
            if folder is not None and folder.lower() not in ("inbox", inbox_id(mb).lower()):
                return graph_error(404, "ErrorItemNotFound", "The specified object was not found in the store.",
                                   crid)
            self.state.count_mail("graph", {"folder": "GET_INBOX", "messages": "LIST_MESSAGES",
                                            "send": "SENDMAIL", "update": "UPDATE_MESSAGE"}[op], mb.address)
            ctx = f"{self.base}/$metadata#users('{ident or upn}')"
            if op == "folder":
                return self.folder(request, mb, ctx, crid)
            if op == "update":
                return self.update(raw, mb, _MESSAGE.match(tail).group(1), ctx, crid)
            if op == "messages":
                return self.messages(request, mb, ctx, crid)
        return await self.send(request, mb, crid)

    def _throttle(self, claims: dict, mb: Mailbox, app_only: bool, upn: str, crid) -> Response | None:
        """Graph's limits per app and mailbox: 4 concurrent requests (MailboxConcurrency) and its request budget
        (ApplicationThrottled), both 429 with Retry-After (M365_FACTS.md, "Throttling and transient replies")."""
        if in_use(self.state, "graph", mb) >= GRAPH_CONCURRENCY:
            # captured: code ApplicationThrottled, the limit named in the message (terraform-provider-outlook#21)
            return graph_error(429, "ApplicationThrottled", "Application is over its MailboxConcurrency limit.", crid,
                               {"Retry-After": "1"})
        principal = str(claims.get("appid", "")).lower() if app_only else upn
        wait = spend(self.state, principal, mb)
        if wait is not None:
            return graph_error(429, "ApplicationThrottled", "Application is over its resource limit.", crid,
                               {"Retry-After": str(int(wait) + 1)})
        return None

    def _ok(self, body: dict, crid: str | None, status: int = 200) -> JSONResponse:
        headers = {"OData-Version": "4.0", "Content-Type": "application/json;odata.metadata=minimal;"
                   "odata.streaming=true;IEEE754Compatible=false;charset=utf-8"}
        if crid:
            headers.update({"client-request-id": crid, "request-id": crid})
        return JSONResponse(body, status_code=status, headers=headers)

    def folder(self, request: Request, mb: Mailbox, ctx: str, crid) -> Response:
        unread = sum(1 for m in mb.messages if not m.seen)
        body = {"id": inbox_id(mb), "displayName": "Inbox", "parentFolderId": "AAMkAGI2Root" + mb.id.replace("-", ""),
                "childFolderCount": 0, "unreadItemCount": unread, "totalItemCount": len(mb.messages),
                "sizeInBytes": mb.size(), "isHidden": False}
        select = [s.strip() for s in (request.query_params.get("$select") or "").split(",") if s.strip()]
        context = f"{ctx}/mailFolders/$entity"
        if select:  # as Graph: the selected properties and the id; an unknown name is a 400
            by_lower = {k.lower(): k for k in body}
            unknown = [s for s in select if s.lower() not in by_lower]
            if unknown:
                return graph_error(400, "RequestBroker--ParseUri", f"Could not find a property named "
                                   f"'{unknown[0]}' on type 'microsoft.graph.mailFolder'.", crid)
            names = ["id"] + [by_lower[s.lower()] for s in select if by_lower[s.lower()] != "id"]
            body = {k: body[k] for k in names}
            context = f"{ctx}/mailFolders({','.join(names[1:])})/$entity"
        return self._ok({"@odata.context": context, **body}, crid)

    def messages(self, request: Request, mb: Mailbox, ctx: str, crid) -> Response:
        q = request.query_params
        msgs = list(mb.messages)
        if q.get("$filter"):
            fm = _FILTER.match(q["$filter"])
            if not fm:
                return graph_error(400, "BadRequest", "Invalid filter clause", crid)
            if q.get("$orderby") and not fm.group(1):
                return graph_error(400, "InefficientFilter", INEFFICIENT, crid)
            if not fm.group(1) and not fm.group(3) and fm.group(4) is None:
                return graph_error(400, "BadRequest", "Invalid filter clause", crid)
            if fm.group(1):
                since = dt.datetime.fromisoformat(fm.group(2).replace("Z", "+00:00"))
                msgs = [m for m in msgs if m.received > since or fm.group(1).lower() == "ge" and m.received == since]
            if fm.group(3):
                want = fm.group(3).lower() == "true"
                msgs = [m for m in msgs if m.seen == want]
            if fm.group(4) is not None:  # the subject starts with the text (compared case-insensitively here)
                prefix = fm.group(4).replace("''", "'").lower()
                msgs = [m for m in msgs if m.subject.lower().startswith(prefix)]
        if q.get("$orderby"):
            om = _ORDER.match(q["$orderby"])
            if not om:
                return graph_error(400, "BadRequest", "Invalid orderby clause", crid)
            msgs.sort(key=lambda m: m.received, reverse=(om.group(1) or "asc").lower() == "desc")
        else:
            msgs.sort(key=lambda m: m.received, reverse=True)  # Graph's default: newest first
        try:
            top = int(q.get("$top", "10"))
            skip = int(q.get("$skip", "0"))
        except ValueError:
            return graph_error(400, "BadRequest", "Invalid $top or $skip value.", crid)
        page = msgs[skip:skip + top]
        items = [message_json(mb, m) for m in page]
        select = [s.strip() for s in (q.get("$select") or "").split(",") if s.strip()]
        suffix = ""
        if select:
            known = {k.lower(): k for k in message_json(mb, Message(0, "", "", utcnow()))}
            bad = [s for s in select if s.lower() not in known]
            if bad:
                return graph_error(400, "RequestBroker--ParseUri", f"Could not find a property named '{bad[0]}' "
                                   "on type 'microsoft.graph.message'.", crid)
            names = [known[s.lower()] for s in select]
            items = [{k: v for k, v in it.items() if k in names or k in ("id", "@odata.etag")} for it in items]
            suffix = "(" + ",".join(names) + ")"
        body = {"@odata.context": f"{ctx}/mailFolders('Inbox')/messages{suffix}", "value": items}
        if skip + top < len(msgs):
            body["@odata.nextLink"] = str(request.url.include_query_params(**{"$skip": str(skip + top)}))
        return self._ok(body, crid)

    def update(self, raw: bytes, mb: Mailbox, message_id: str, ctx: str, crid) -> Response:
        """PATCH a message: isRead (what a consuming system sets once it has taken the message)."""
        msg = next((m for m in mb.messages if m.id == message_id), None)
        if msg is None:
            return graph_error(404, "ErrorItemNotFound", "The specified object was not found in the store.", crid)
        try:
            payload = json.loads(raw or b"{}")
        except ValueError:
            payload = None
        if not isinstance(payload, dict) or not isinstance(payload.get("isRead", False), bool):
            return graph_error(400, "ErrorInvalidRequest", "Cannot process the request because it is malformed or "
                               "incorrect.", crid)
        if "isRead" in payload:
            msg.seen = payload["isRead"]
        return self._ok({"@odata.context": f"{ctx}/messages/$entity", **message_json(mb, msg)}, crid)

    async def send(self, request: Request, mb: Mailbox, crid) -> Response:
        try:
            payload = json.loads(await request.body() or b"null")
        except ValueError:
            payload = None
        # Graph matches action parameter names case-insensitively (msgraph-sdk sends "Message")
        params = {str(k).lower(): v for k, v in payload.items()} if isinstance(payload, dict) else {}
        message = params.get("message")
        if not isinstance(message, dict):
            return graph_error(400, "ErrorInvalidParameter", "Empty Payload. JSON content expected.", crid)
        rcpts = [r.get("emailAddress", {}).get("address", "") for r in message.get("toRecipients") or []]
        rcpts = [r for r in rcpts if r]
        if not rcpts:
            return graph_error(400, "ErrorInvalidRecipients",
                               "At least one recipient is not valid., Recipient is missing.", crid)
        subject = str(message.get("subject") or "")
        body = message.get("body") or {}
        with self.state.lock:
            for r in rcpts:
                target = find_mailbox(self.state, r)
                if target is not None and not target.delivers_from(mb.address):
                    target = None  # quarantined: accepted, never delivered
                if target is not None:
                    target.add_message(subject=subject, sender=mb.address, received=utcnow(), to=rcpts,
                                       body=str(body.get("content") or ""))
                self.state.record_delivery("graph", mb.address, r, subject, target is not None)
        headers = {"client-request-id": crid, "request-id": crid} if crid else {}
        return Response(status_code=202, headers=headers)
