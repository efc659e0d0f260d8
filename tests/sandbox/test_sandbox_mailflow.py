"""What the mail-flow checks (checks.mailflow: backlog_age) ask of the sandbox, answered as Exchange does: POP's TOP
(the headers, the blank line that ends them, n body lines), EWS FindItem (the inbox's oldest unread message), and
Graph's rule that a sort on receivedDateTime needs receivedDateTime first in the filter."""

from __future__ import annotations

import datetime as dt
import imaplib
import ssl
import xml.etree.ElementTree as ET

import httpx
import pytest

from tests.sandbox.mail_helpers import (
    GRAPH_DEFAULT,
    app_token,
    delegated_token,
    imap_login,
    new_mailbox,
    pop,
    pop_auth,
    user_with_mailbox,
)
from tests.sandbox.test_sandbox_ews import M, T, response_code

FIND_OLDEST_UNREAD = """<?xml version="1.0" encoding="utf-8"?>
<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/"
  xmlns:t="http://schemas.microsoft.com/exchange/services/2006/types"
  xmlns:m="http://schemas.microsoft.com/exchange/services/2006/messages">
  <soap:Header><t:RequestServerVersion Version="Exchange2016"/>
    <t:ExchangeImpersonation><t:ConnectingSID><t:PrimarySmtpAddress>{box}</t:PrimarySmtpAddress></t:ConnectingSID>
    </t:ExchangeImpersonation></soap:Header>
  <soap:Body><m:FindItem Traversal="Shallow">
    <m:ItemShape><t:BaseShape>IdOnly</t:BaseShape>
      <t:AdditionalProperties><t:FieldURI FieldURI="item:DateTimeReceived"/></t:AdditionalProperties></m:ItemShape>
    <m:IndexedPageItemView MaxEntriesReturned="1" Offset="0" BasePoint="Beginning"/>
    {restriction}
    <m:SortOrder><t:FieldOrder Order="Ascending"><t:FieldURI FieldURI="item:DateTimeReceived"/></t:FieldOrder>
    </m:SortOrder>
    <m:ParentFolderIds><t:DistinguishedFolderId Id="inbox"/></m:ParentFolderIds>
  </m:FindItem></soap:Body></soap:Envelope>"""
UNREAD = ('<m:Restriction><t:IsEqualTo><t:FieldURI FieldURI="message:IsRead"/><t:FieldURIOrConstant>'
          '<t:Constant Value="false"/></t:FieldURIOrConstant></t:IsEqualTo></m:Restriction>')
SUBJECT = ('<m:Restriction><t:Contains ContainmentMode="Substring" ContainmentComparison="IgnoreCase">'
           '<t:FieldURI FieldURI="item:Subject"/><t:Constant Value="x"/></t:Contains></m:Restriction>')


def find(sb, token: str, box: str, restriction: str = UNREAD) -> httpx.Response:
    with httpx.Client(verify=ssl.create_default_context(cafile=str(sb.ca_path)), trust_env=False) as c:
        return c.post(sb.endpoints["ews"], content=FIND_OLDEST_UNREAD.format(box=box, restriction=restriction),
                      headers={"Authorization": f"Bearer {token}", "X-AnchorMailbox": box,
                               "Content-Type": "text/xml; charset=utf-8"})


def test_pop_top_sends_the_headers_and_the_blank_line_and_changes_nothing(sb):
    upn = user_with_mailbox(sb, messages=[{"subject": "first", "received": "-3h", "body": "line 1\r\nline 2"},
                                          {"subject": "second", "received": "-1h"}])
    p = pop(sb)
    pop_auth(p, upn, delegated_token(sb, upn))
    reply, lines, _ = p.top(1, 0)
    assert reply.startswith(b"+OK")
    assert lines[-1] == b"" and b"Subject: first" in lines and not any(b"line 1" in ln for ln in lines)
    date = next(ln for ln in lines if ln.startswith(b"Date: "))
    sent = dt.datetime.strptime(date[6:].decode(), "%a, %d %b %Y %H:%M:%S %z")
    assert 2.9 * 3600 < (dt.datetime.now(dt.UTC) - sent).total_seconds() < 3.1 * 3600
    _, lines, _ = p.top(1, 1)
    assert lines[-2:] == [b"", b"line 1"]
    p.quit()
    p = pop(sb)
    pop_auth(p, upn, delegated_token(sb, upn))
    assert p.stat()[0] == 2  # TOP took nothing away
    p.quit()


def test_ews_finditem_oldest_unread(sb):
    box = new_mailbox(sb, messages=[{"subject": "read", "received": "-9h", "seen": True},
                                    {"subject": "oldest unread", "received": "-4h"},
                                    {"subject": "newer", "received": "-1h"}])
    _, token = app_token(sb, ["full_access_as_app"], service_principal=False)
    r = find(sb, token, box)
    assert r.status_code == 200 and response_code(r) == "NoError", r.text
    root = ET.fromstring(r.content).find(f".//{M}FindItemResponseMessage/{M}RootFolder")
    assert (root.get("TotalItemsInView"), root.get("IndexedPagingOffset"), root.get("IncludesLastItemInRange")) == \
        ("2", "1", "false")
    [item] = root.find(f"{T}Items")
    assert item.tag == f"{T}Message" and item.find(f"{T}ItemId").get("Id")
    received = dt.datetime.fromisoformat(item.find(f"{T}DateTimeReceived").text.replace("Z", "+00:00"))
    assert 3.9 * 3600 < (dt.datetime.now(dt.UTC) - received).total_seconds() < 4.1 * 3600
    sb.control.mark_all_seen(box)
    root = ET.fromstring(find(sb, token, box).content).find(f".//{M}RootFolder")
    assert root.get("TotalItemsInView") == "0" and len(root.find(f"{T}Items")) == 0
    # a restriction the sandbox does not model is refused, never answered as if it matched everything
    assert response_code(find(sb, token, box, SUBJECT)) == "ErrorInvalidRequest"


def test_graph_refuses_a_sort_its_filter_does_not_name_first(sb):
    box = new_mailbox(sb, messages=[{"subject": "a", "received": "-2h"}])
    _, token = app_token(sb, graph_roles=("Mail.Read",), service_principal=False, scope=GRAPH_DEFAULT)
    with httpx.Client(base_url=sb.endpoints["graph"], headers={"Authorization": f"Bearer {token}"},
                      verify=ssl.create_default_context(cafile=str(sb.ca_path)), trust_env=False) as c:
        path = f"/users/{box}/mailFolders/inbox/messages"
        r = c.get(path, params={"$filter": "isRead eq false", "$orderby": "receivedDateTime asc", "$top": "1"})
        assert r.status_code == 400 and r.json()["error"]["code"] == "InefficientFilter"
        assert r.json()["error"]["message"] == "The restriction or sort order is too complex for this operation."
        r = c.get(path, params={"$filter": "receivedDateTime ge 1900-01-01T00:00:00Z and isRead eq false",
                                "$orderby": "receivedDateTime asc", "$top": "1"})
        assert r.status_code == 200 and len(r.json()["value"]) == 1
        assert c.get(path, params={"$filter": "isRead eq false"}).status_code == 200  # no sort: no rule


def test_imap_search_subject_and_fetch_header_fields(sb):
    upn = user_with_mailbox(sb, messages=[{"subject": "[mailwarden canary] hd-send 0123abcd", "received": "-2m"},
                                          {"subject": "[mailwarden canary] hd-sender ffff", "received": "-1m"},
                                          {"subject": "ticket", "received": "-1m"}])
    im = imap_login(sb, upn, delegated_token(sb, upn))
    im.select("INBOX", readonly=True)
    typ, [hits] = im.uid("SEARCH", "SUBJECT", '"[MAILWARDEN canary] hd-send"')  # a substring, any case (RFC 3501)
    assert typ == "OK" and len(hits.split()) == 2
    typ, [hits] = im.uid("SEARCH", "SUBJECT", '"hd-send 0123"', "UNSEEN")
    assert typ == "OK" and len(hits.split()) == 1
    typ, data = im.uid("FETCH", hits.decode(), "(FLAGS INTERNALDATE BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    head, fields = data[0]
    assert b"INTERNALDATE" in head and b"BODY[HEADER.FIELDS (SUBJECT)]" in head
    assert fields == b"Subject: [mailwarden canary] hd-send 0123abcd\r\n\r\n"  # that field only
    typ, [hits] = im.search(None, "UNSEEN")
    assert len(hits.split()) == 3  # BODY.PEEK: nothing marked seen
    with pytest.raises(imaplib.IMAP4.error, match="Command Argument Error"):  # SUBJECT without its string
        im.uid("SEARCH", "SUBJECT")
    im.logout()


def test_graph_startswith_subject_after_received_and_quarantine(sb):
    box = new_mailbox(sb, messages=[{"subject": "[mailwarden canary] hd-send 0123abcd", "received": "-2m"},
                                    {"subject": "[mailwarden canary] hd-send old", "received": "-3d"},
                                    {"subject": "ticket", "received": "-1m"}])
    _, token = app_token(sb, graph_roles=("Mail.ReadWrite", "Mail.Send"), service_principal=False,
                         scope=GRAPH_DEFAULT)
    since = (dt.datetime.now(dt.UTC) - dt.timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    with httpx.Client(base_url=sb.endpoints["graph"], headers={"Authorization": f"Bearer {token}"},
                      verify=ssl.create_default_context(cafile=str(sb.ca_path)), trust_env=False) as c:
        r = c.get(f"/users/{box}/messages", params={
            "$filter": f"receivedDateTime ge {since} and startswith(subject,'[mailwarden canary] hd-send ')",
            "$select": "subject,receivedDateTime,isRead,parentFolderId"})
        assert r.status_code == 200, r.text
        assert [m["subject"] for m in r.json()["value"]] == ["[mailwarden canary] hd-send 0123abcd"]
        sb.control.patch_mailbox(box, quarantine_senders=[box])  # Exchange quarantines mail from the box itself
        r = c.post(f"/users/{box}/sendMail", json={"message": {"subject": "[mailwarden canary] hd-send q1",
                                                               "toRecipients": [{"emailAddress": {"address": box}}]}})
        assert r.status_code == 202  # accepted, as Exchange accepts what it then quarantines
        assert not any(m["subject"].endswith(" q1") for m in sb.control.get_mailbox(box)["messages"])
        assert sb.control.stats()["delivered"][-1] == {**sb.control.stats()["delivered"][-1], "delivered": False}
