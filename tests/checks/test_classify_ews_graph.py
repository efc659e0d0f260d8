"""The pure reply classifiers of the EWS and Graph mail checks, row by row: a reply (HTTP status, headers, body)
and what it means (status, diagnosis code, wait in seconds). Rows taken from a public capture name it in a comment
(the captures are collected in /tmp/research_m365_replies.md, sections 5 and 7); the other rows are the shapes the
sandbox plays or the limits of a rule."""

from __future__ import annotations

import pytest

from mailwarden.checks import ews, graph_mail
from mailwarden.checks.base import Status
from mailwarden.checks.diagnoses import render_fix

OK, WARN, FAIL, ERROR = Status.OK, Status.WARN, Status.FAIL, Status.ERROR
PERMISSION_ADVICE = ("Add-MailboxPermission", "API permissions", "Grant admin consent", "Application.Read.All")

S = "http://schemas.xmlsoap.org/soap/envelope/"
T = "http://schemas.microsoft.com/exchange/services/2006/types"
E = "http://schemas.microsoft.com/exchange/services/2006/errors"
M = "http://schemas.microsoft.com/exchange/services/2006/messages"


def fault(code: str, text: str, message_xml: str = "") -> str:
    """A SOAP fault as Exchange Online sends it (structure of the davmail#161 capture)."""
    xml = f'<t:MessageXml xmlns:t="{T}">{message_xml}</t:MessageXml>' if message_xml else ""
    return (f'<?xml version="1.0" encoding="utf-8"?><s:Envelope xmlns:s="{S}"><s:Body><s:Fault>'
            f'<faultcode xmlns:a="{T}">a:{code}</faultcode><faultstring xml:lang="en-US">{text}</faultstring>'
            f'<detail><e:ResponseCode xmlns:e="{E}">{code}</e:ResponseCode><e:Message xmlns:e="{E}">{text}'
            f"</e:Message>{xml}</detail></s:Fault></s:Body></s:Envelope>")


def get_folder(klass: str, code: str, text: str = "", folder: str = "") -> str:
    return (f'<?xml version="1.0" encoding="utf-8"?><s:Envelope xmlns:s="{S}"><s:Body>'
            f'<m:GetFolderResponse xmlns:m="{M}" xmlns:t="{T}"><m:ResponseMessages>'
            f'<m:GetFolderResponseMessage ResponseClass="{klass}"><m:MessageText>{text}</m:MessageText>'
            f"<m:ResponseCode>{code}</m:ResponseCode><m:Folders>{folder}</m:Folders></m:GetFolderResponseMessage>"
            "</m:ResponseMessages></m:GetFolderResponse></s:Body></s:Envelope>")


BUSY = "The server cannot service this request right now. Try again later."
CONNECTIONS = ("You have exceeded the available concurrent connections for your account.  Try again once your other "
               "requests have completed.")
IIS_500 = ("<!DOCTYPE html PUBLIC \"-//W3C//DTD XHTML 1.0 Strict//EN\"><html><head><title>500 - Internal server "
           "error.</title></head><body><h2>500 - Internal server error.</h2></body></html>")

EWS_ROWS = [
    pytest.param(200, {}, get_folder("Success", "NoError", folder=f'<t:Folder xmlns:t="{T}"><t:TotalCount>3'
                                     "</t:TotalCount><t:UnreadCount>1</t:UnreadCount></t:Folder>"),
                 (OK, None, None), id="getfolder-ok"),
    pytest.param(401, {"x-ms-diagnostics": '2000008;reason="The token has expired.";error_category="invalid_token"'},
                 "", (FAIL, "auth_failed", None), id="401-token-expired"),
    # EWS refused by policy: a bare 403. Only the client's wording was captured ("The request failed. The remote
    # server returned an error: (403) Forbidden."), https://github.com/David-Barrett-MS/PowerShell-EWS-Scripts/
    # issues/62 (maintainer: "403 is policy block") and https://github.com/OfficeDev/ews-java-api/issues/729
    pytest.param(403, {}, "", (FAIL, "ews_forbidden", None), id="bare-403"),
    pytest.param(403, {"Content-Length": "0", "Server": "Microsoft-IIS/10.0"}, "   ", (FAIL, "ews_forbidden", None),
                 id="bare-403-whitespace"),
    pytest.param(403, {}, IIS_500.replace("500 - Internal server error.", "403 - Forbidden: Access is denied."),
                 (FAIL, "ews_forbidden", None), id="403-html-page"),
    # a refusal whose text says EWS is disabled stays ews_disabled
    pytest.param(403, {}, fault("ErrorAccessDenied", "Access is denied. EWS is disabled for this user."),
                 (FAIL, "ews_disabled", None), id="403-soap-ews-disabled"),
    pytest.param(403, {}, "Exchange Web Services are disabled for this organization.",
                 (FAIL, "ews_disabled", None), id="403-text-ews-disabled"),
    pytest.param(200, {}, get_folder("Error", "ErrorAccessDenied", "Access is denied. Check credentials and try "
                                     "again."), (FAIL, "permission_missing", None), id="delegated-access-denied"),
    pytest.param(500, {}, fault("ErrorImpersonateUserDenied", "The account does not have permission to impersonate "
                                "the requested user."), (FAIL, "permission_missing", None), id="impersonation-denied"),
    pytest.param(500, {}, fault("ErrorNonExistentMailbox", "The SMTP address has no mailbox associated with it."),
                 (FAIL, "mailbox_not_found", None), id="no-mailbox"),
    # https://github.com/mguessan/davmail/issues/161: ErrorServerBusy from Office 365, BackOffMilliseconds 178510 in
    # MessageXml (the excerpt is truncated there; DavMail's log names the value). A SOAP fault is HTTP 500
    # (https://github.com/ecederstrand/exchangelib/issues/354 shows an O365 fault's headers).
    pytest.param(500, {"X-BackEndHttpStatus": "500", "x-EwsHandler": "GetFolder", "Server": "Microsoft-IIS/10.0"},
                 fault("ErrorServerBusy", BUSY, '<t:Value Name="BackOffMilliseconds">178510</t:Value>'),
                 (WARN, "throttled", 178.51), id="davmail-161-server-busy"),
    # https://github.com/mustang-im/mustang/issues/121: the policy and the back-off in the message text only
    pytest.param(500, {}, fault("ErrorServerBusy", BUSY + ", This operation exceeds the throttling budget for "
                                "policy part 'ConcurrentSyncCalls', policy value '5',  Budget type: 'Ews'.  "
                                "Suggested backoff time 5000 ms."),
                 (WARN, "throttled", 5.0), id="mustang-121-busy-in-text"),
    pytest.param(500, {}, fault("ErrorServerBusy", BUSY), (WARN, "throttled", 60.0), id="server-busy-no-backoff"),
    pytest.param(500, {"Retry-After": "20"}, fault("ErrorServerBusy", BUSY), (WARN, "throttled", 20.0),
                 id="server-busy-retry-after-header"),
    # https://github.com/OfficeDev/ews-managed-api/issues/293 (XML as reconstructed by Thunderbird's ews-rs from
    # issuecomment-1506483638): MaxConcurrency 27, "Suggested backoff time 0 ms": no useful wait, so 30 s
    pytest.param(500, {}, fault("ErrorExceededConnectionCount", CONNECTIONS,
                                '<t:Value Name="Policy">MaxConcurrency</t:Value>'
                                '<t:Value Name="MaxConcurrencyLimit">27</t:Value>'
                                "<t:Value Name=\"ErrorMessage\">This operation exceeds the throttling budget for "
                                "policy part 'MaxConcurrency', policy value '27',  Budget type: 'Ews'.  Suggested "
                                "backoff time 0 ms.</t:Value>"),
                 (WARN, "throttled", 30.0), id="ews-managed-api-293-connection-count"),
    pytest.param(500, {}, fault("ErrorExceededConnectionCount", CONNECTIONS,
                                '<t:Value Name="BackOffMilliseconds">4000</t:Value>'),
                 (WARN, "throttled", 4.0), id="connection-count-with-backoff"),
    # https://github.com/gautamsi/ews-javascript-api/issues/357: "Too many concurrent connections opened."
    pytest.param(500, {}, fault("ErrorTooManyObjectsOpened", "Too many concurrent connections opened., Cannot open "
                                "mailbox.."), (WARN, "throttled", 30.0), id="ews-javascript-api-357-too-many-objects"),
    pytest.param(429, {"Retry-After": "10"}, "", (WARN, "throttled", 10.0), id="429-retry-after"),
    pytest.param(429, {}, "", (WARN, "throttled", 60.0), id="429-no-retry-after"),
    # 503 with an empty body: what the sandbox plays during an Exchange incident
    pytest.param(503, {"Retry-After": "30"}, "", (ERROR, "service_unavailable", 30.0), id="503-empty-retry-after"),
    pytest.param(503, {}, "", (ERROR, "service_unavailable", None), id="503-empty"),
    pytest.param(500, {"Content-Type": "text/html"}, IIS_500, (ERROR, "service_unavailable", None), id="500-html"),
    pytest.param(502, {}, "Bad Gateway", (ERROR, "service_unavailable", None), id="502-text"),
    pytest.param(500, {}, fault("ErrorInternalServerTransientError", "An internal server error occurred. Try again "
                                "later."), (ERROR, "service_unavailable", None), id="transient-soap-fault"),
    # a SOAP fault EWS answers to a bad request: not Microsoft's outage, mailwarden's or a proxy's problem
    pytest.param(500, {}, fault("ErrorSchemaValidation", "The request failed schema validation."),
                 (ERROR, "unexpected_reply", None), id="unknown-soap-fault"),
    pytest.param(200, {}, "<html><body>captive portal</body></html>", (FAIL, "unexpected_reply", None),
                 id="200-not-ews"),
    pytest.param(404, {}, "", (FAIL, "unexpected_reply", None), id="404-empty"),
]


@pytest.mark.parametrize(("status", "headers", "body", "expected"), EWS_ROWS)
def test_ews_classify(status, headers, body, expected):
    assert ews.classify(status, headers, body) == expected


def test_ews_classify_reads_a_capture_whatever_the_header_case():
    assert ews.classify(429, {"retry-after": "7"}, "") == (WARN, "throttled", 7.0)
    assert ews.classify(503, {"RETRY-AFTER": "3"}, "") == (ERROR, "service_unavailable", 3.0)


def test_ews_parse_stays_the_pure_reader_of_getfolder():
    folder = f'<t:Folder xmlns:t="{T}"><t:TotalCount>3</t:TotalCount><t:UnreadCount>1</t:UnreadCount></t:Folder>'
    assert ews.parse(get_folder("Success", "NoError", folder=folder)) == (
        "Success", "NoError", "", {"message_count": 3, "unread_count": 1})
    assert ews.parse(fault("ErrorServerBusy", BUSY))[:2] == ("Error", "ErrorServerBusy")
    with pytest.raises(ValueError):
        ews.parse("<x/>")


CONCURRENCY = '{"error":{"code":"ApplicationThrottled","message":"Application is over its MailboxConcurrency limit."}}'
UNKNOWN_504 = ('{"error":{"code":"UnknownError","message":"","innerError":{"request-id":"74f41ee5-0000-0000-0000-'
               '000000000000","date":"2019-07-25T20:05:19"}}}')

GRAPH_ROWS = [
    # https://github.com/magodo/terraform-provider-outlook/issues/21 (no headers shown there)
    pytest.param(429, {}, CONCURRENCY, (WARN, "throttled", 60.0), id="terraform-provider-outlook-21"),
    # the same, with the headers of a v1.0 mail 429 from https://github.com/microsoftgraph/msgraph-sdk-javascript/
    # issues/297 ("retry-after":"1")
    pytest.param(429, {"cache-control": "private", "content-type": "application/json", "retry-after": "1"},
                 CONCURRENCY, (WARN, "throttled", 1.0), id="msgraph-sdk-javascript-297-retry-after"),
    # decimals on $batch: https://github.com/microsoftgraph/microsoft-graph-docs/issues/3877
    pytest.param(429, {"Retry-After": "0.249"}, CONCURRENCY, (WARN, "throttled", 0.249), id="graph-docs-3877-decimal"),
    # https://github.com/O365/python-o365/issues/500: a sibling limit
    pytest.param(429, {"Retry-After": "5"}, '{"error":{"code":"ApplicationThrottled","message":"Application is over '
                 'its IncomingBytes limit."}}', (WARN, "throttled", 5.0), id="python-o365-500-incoming-bytes"),
    # the sandbox's budget reply
    pytest.param(429, {"Retry-After": "120"}, '{"error":{"code":"ApplicationThrottled","message":"Application is '
                 'over its resource limit."}}', (WARN, "throttled", 120.0), id="budget"),
    # https://github.com/jsa2/AADAppAudit/issues/9: directory throttling
    pytest.param(429, {}, '{"error":{"code":"TooManyRequests","message":"Too many requests from Identifier:x under '
                 'category:aadgraph.app.tenant_large. Please try again later."}}', (WARN, "throttled", 60.0),
                 id="aadappaudit-9-too-many-requests"),
    # https://github.com/microsoftgraph/microsoft-graph-docs/issues/5288: 504 and 503 UnknownError, empty message
    pytest.param(504, {}, UNKNOWN_504, (ERROR, "service_unavailable", None), id="graph-docs-5288-504"),
    pytest.param(503, {}, '{"error":{"code":"UnknownError","message":""}}', (ERROR, "service_unavailable", None),
                 id="graph-docs-5288-503"),
    pytest.param(503, {"Retry-After": "30"}, '{"error":{"code":"UnknownError","message":""}}',
                 (ERROR, "service_unavailable", 30.0), id="503-retry-after"),
    # https://github.com/microsoftgraph/microsoft-graph-explorer-v4/issues/3143
    pytest.param(503, {}, '{"error":{"code":"MailboxInfoStale","message":"Target resource \'00030000-ca28-936b-0000-'
                 '000000000000\' hosted on database \'8d02d25d\' is currently on backend \'Unknown\'"}}',
                 (ERROR, "service_unavailable", None), id="graph-explorer-3143-mailbox-info-stale"),
    pytest.param(500, {}, "<html><body>Internal Server Error</body></html>", (ERROR, "service_unavailable", None),
                 id="500-html"),
    # https://github.com/OfficeDev/office-js-docs-pr/issues/2808: the access policy's 403
    pytest.param(403, {}, '{"error":{"code":"ErrorAccessDenied","message":"Access to OData is disabled."}}',
                 (FAIL, "access_policy_denied", None), id="office-js-docs-pr-2808-odata-disabled"),
    pytest.param(403, {}, '{"error":{"code":"ErrorAccessDenied","message":"Access to OData is disabled: Blocked by '
                 'tenant configured AppOnly AccessPolicy settings."}}', (FAIL, "access_policy_denied", None),
                 id="access-policy-long"),
    pytest.param(403, {}, '{"error":{"code":"ErrorAccessDenied","message":"Access is denied. Check credentials and '
                 'try again."}}', (FAIL, "permission_missing", None), id="permission-missing"),
    pytest.param(404, {}, '{"error":{"code":"ErrorInvalidUser","message":"The requested user \'x@y\' is invalid."}}',
                 (FAIL, "mailbox_not_found", None), id="invalid-user"),
    pytest.param(401, {}, '{"error":{"code":"InvalidAuthenticationToken","message":"Access token has expired."}}',
                 (FAIL, "auth_failed", None), id="401"),
    pytest.param(400, {}, '{"error":{"code":"BadRequest","message":"Invalid filter clause"}}',
                 (FAIL, "unexpected_reply", None), id="400"),
]


@pytest.mark.parametrize(("status", "headers", "body", "expected"), GRAPH_ROWS)
def test_graph_classify_reply(status, headers, body, expected):
    assert graph_mail.classify_reply(status, headers, body) == expected


def test_graph_classify_takes_what_kiota_gives():
    assert graph_mail.classify(429, "ApplicationThrottled", "Application is over its MailboxConcurrency limit.",
                               {"Retry-After": "1"}) == (WARN, "throttled", 1.0)
    assert graph_mail.classify(503, "UnknownError", "") == (ERROR, "service_unavailable", None)


@pytest.mark.parametrize("code", ["throttled", "service_unavailable"])
def test_a_throttled_or_transient_reply_gets_no_permission_advice(code):
    fix = " ".join(render_fix(code, system="Agiloft", mailbox="box@contoso.com", flow="app"))
    for words in PERMISSION_ADVICE:
        assert words not in fix, (code, words)


def test_every_transient_row_maps_to_a_code_without_permission_advice():
    rows = [(r.values[3], "ews") for r in EWS_ROWS] + [(r.values[3], "graph") for r in GRAPH_ROWS]
    transient = {expected[1] for expected, _ in rows if expected[1] in ("throttled", "service_unavailable")}
    assert transient == {"throttled", "service_unavailable"}
    for expected, _ in rows:
        if expected[2] is not None:  # a wait is asked only by throttling and transient replies
            assert expected[1] in ("throttled", "service_unavailable"), expected
