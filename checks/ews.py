"""`ews`: EWS GetFolder on the inbox with the app's bearer token, `ExchangeImpersonation` and
`X-AnchorMailbox`, as an EWS-based consuming system (the Agiloft kind) does.

What EWS answers, and how it is read (``classify``, pure, table-tested in tests/checks):

- Refused by policy (EWS off for the organisation or the mailbox, the app not on EWSAllowedAppIDs, an application
  access policy): a bare HTTP 403 with no SOAP body (M365_FACTS.md, "Library facts"). Nothing in it says which
  policy, so it is ``ews_forbidden`` (the fix names the three and how to tell them apart), never a missing
  permission read from the status alone. A SOAP body whose text says EWS is disabled stays ``ews_disabled``.
- Throttled: the SOAP faults ``ErrorServerBusy`` (the wait in ``MessageXml`` as ``BackOffMilliseconds``) and
  ``ErrorExceededConnectionCount`` (27 concurrent requests), or HTTP 429: ``throttled`` (warn), and every EWS
  check on the mailbox waits as long as asked.
- A 5xx with no EWS reply in it (503 with an empty body during an incident, an HTML error page):
  ``service_unavailable`` (error), with the Retry-After honoured.

With ``backlog_age`` (``checks.mailflow``), a FindItem follows a GetFolder that counted unread mail: the inbox's
oldest unread message (Shallow traversal, a Restriction on message:IsRead, SortOrder item:DateTimeReceived
ascending, an IndexedPageItemView of one entry), its DateTimeReceived the age of the backlog. Its refusals read as
GetFolder's do.

Exchange Online retires EWS: blocked by default from 1 October 2026 in tenants that did not allow it, shut down on
1 April 2027 with no exceptions. Every result against Exchange Online carries that notice; on-premises Exchange
(``endpoints.exchange: on_premises``) keeps EWS and gets none. From 180 days before the shutdown, EWS answering in
Exchange Online is `warn` ``ews_retiring`` with the date and the days left (``retiring``); a refusal keeps its own
code (``ews_forbidden``, ``ews_disabled``), before the date or after it: the date alone never fails a check.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import ClassVar, NamedTuple
from xml.etree import ElementTree  # noqa: S405 - stdlib expat limits entity expansion (3.7.1+)
from xml.sax.saxutils import escape

import httpx
from pydantic import ConfigDict

from mailwarden import days
from mailwarden.checks import TOKEN_KIND, graph_client, mailflow
from mailwarden.checks.base import CheckContext, Flow, Outcome, Permission, Status, mailbox_target
from mailwarden.checks.mailbox import Probe, fetch_token, tls_context
from mailwarden.checks.network import network_outcome
from mailwarden.checks.permissions import EXCHANGE
from mailwarden.durations import retry_after
from mailwarden.redact import redact

# M365_FACTS.md, "Platform dates": Exchange Online only; on-premises EWS is not retired
NOTICE = ("EWS in Exchange Online is being retired: since 1 October 2026 it is blocked by default in tenants that "
          "did not allow it (EWSEnabled, EWSAllowedAppIDs), and on 1 April 2027 Microsoft shuts it down, with no "
          "exceptions. Move this integration to Microsoft Graph before then.")
SHUTDOWN = datetime(2027, 4, 1, tzinfo=UTC)  # EWS in Exchange Online ends (M365_FACTS.md, "Platform dates")
RETIRING_FROM = SHUTDOWN - timedelta(days=180)
NS = {"s": "http://schemas.xmlsoap.org/soap/envelope/",
      "m": "http://schemas.microsoft.com/exchange/services/2006/messages",
      "t": "http://schemas.microsoft.com/exchange/services/2006/types"}

# The envelope every request is sent in: the version, and the mailbox by ExchangeImpersonation ({mailbox}, escaped)
_HEAD = """<?xml version="1.0" encoding="utf-8"?>
<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/"
  xmlns:t="http://schemas.microsoft.com/exchange/services/2006/types"
  xmlns:m="http://schemas.microsoft.com/exchange/services/2006/messages">
  <soap:Header>
    <t:RequestServerVersion Version="Exchange2016"/>
    <t:ExchangeImpersonation><t:ConnectingSID><t:PrimarySmtpAddress>{mailbox}</t:PrimarySmtpAddress>
    </t:ConnectingSID></t:ExchangeImpersonation>
  </soap:Header>
  <soap:Body>
"""
_TAIL = """
  </soap:Body>
</soap:Envelope>"""

REQUEST = _HEAD + """    <m:GetFolder>
      <m:FolderShape><t:BaseShape>Default</t:BaseShape></m:FolderShape>
      <m:FolderIds><t:DistinguishedFolderId Id="inbox"/></m:FolderIds>
    </m:GetFolder>""" + _TAIL

# The inbox's oldest unread message: FindItem as Microsoft documents it (learn.microsoft.com/exchange/client-developer/
# web-service-reference/finditem-operation; IndexedPageItemView, Restriction, SortOrder, ParentFolderIds in that
# order, as Messages.xsd requires)
FIND_OLDEST = _HEAD + """    <m:FindItem Traversal="Shallow">
      <m:ItemShape><t:BaseShape>IdOnly</t:BaseShape>
        <t:AdditionalProperties><t:FieldURI FieldURI="item:DateTimeReceived"/></t:AdditionalProperties>
      </m:ItemShape>
      <m:IndexedPageItemView MaxEntriesReturned="1" Offset="0" BasePoint="Beginning"/>
      <m:Restriction><t:IsEqualTo><t:FieldURI FieldURI="message:IsRead"/>
        <t:FieldURIOrConstant><t:Constant Value="false"/></t:FieldURIOrConstant></t:IsEqualTo></m:Restriction>
      <m:SortOrder><t:FieldOrder Order="Ascending"><t:FieldURI FieldURI="item:DateTimeReceived"/></t:FieldOrder>
      </m:SortOrder>
      <m:ParentFolderIds><t:DistinguishedFolderId Id="inbox"/></m:ParentFolderIds>
    </m:FindItem>""" + _TAIL

CODES = {
    "ErrorNonExistentMailbox": (Status.FAIL, "mailbox_not_found"),
    "ErrorImpersonateUserDenied": (Status.FAIL, "permission_missing"),
    "ErrorAccessDenied": (Status.FAIL, "permission_missing"),
    # transient store errors named in Microsoft's EWS ResponseCode list ("try again later"); not captured live
    "ErrorInternalServerTransientError": (Status.ERROR, "service_unavailable"),
    "ErrorMailboxStoreUnavailable": (Status.ERROR, "service_unavailable"),
}
# EWS's throttling faults and the wait when the reply suggests none (or 0 ms, as ErrorExceededConnectionCount
# does: "Suggested backoff time 0 ms", ews-managed-api#293; the other requests hold the slots for a while)
THROTTLE_CODES = {
    "ErrorServerBusy": 60.0,
    "ErrorExceededConnectionCount": 30.0,
    "ErrorTooManyObjectsOpened": 30.0,  # "Too many concurrent connections opened." (ews-javascript-api#357)
}
HTTP_THROTTLE_DEFAULT_S = 60.0  # a 429 without Retry-After
_SUGGESTED = re.compile(r"suggested\s+back-?off\s+time\s*:?\s*(\d+)\s*ms", re.IGNORECASE)


class Verdict(NamedTuple):
    """What an EWS reply means: the result's status, its diagnosis code, and how long the mailbox's EWS checks
    wait (seconds; None when the reply asks for no wait)."""

    status: Status
    code: str | None
    wait_s: float | None


@dataclass(frozen=True)
class Reading:
    verdict: Verdict
    response_code: str = ""  # EWS's ResponseCode, when the reply carried one
    text: str = ""  # its MessageText or faultstring
    counts: dict[str, int] = field(default_factory=dict)
    body: str = ""  # what the body was, when it was no EWS reply: "an empty body", "an HTML page", ...


def _disabled(text: str) -> bool:
    low = text.lower()
    return "disabled" in low and ("ews" in low or "exchange web services" in low)


def _header(headers: Mapping[str, str], name: str) -> str:
    for key, value in headers.items():
        if key.lower() == name:
            return value
    return ""


class EwsOptions(mailflow.UnsearchedBacklogOptions):
    model_config = ConfigDict(extra="forbid")
    # backlog_age / backlog_grace (checks.mailflow): the inbox's oldest unread message, by FindItem


def _read_root(root: ElementTree.Element) -> tuple[str, str, str, dict[str, int]]:
    msg = root.find(".//m:GetFolderResponseMessage", NS)
    if msg is None:
        msg = root.find(".//m:FindItemResponseMessage", NS)
    if msg is None:
        # EWS answers header-level errors (impersonation, unknown mailbox) as a SOAP fault with a ResponseCode
        code = next((el.text or "" for el in root.iter() if el.tag.endswith("}ResponseCode")), "")
        fault = root.findtext(".//faultstring") or ""
        if code:
            return "Error", code.strip(), fault.strip(), {}
        raise ValueError(fault or "no GetFolder or FindItem response message in the reply")
    code = (msg.findtext("m:ResponseCode", "", NS) or "").strip()
    text = (msg.findtext("m:MessageText", "", NS) or "").strip()
    counts = {}
    folder = msg.find(".//t:Folder", NS)
    if folder is not None:
        for tag, key in (("TotalCount", "message_count"), ("UnreadCount", "unread_count")):
            value = folder.findtext(f"t:{tag}", None, NS)
            if value is not None and value.isdigit():
                counts[key] = int(value)
    return msg.get("ResponseClass", ""), code, text, counts


def oldest_received(body: str) -> datetime | None:
    """The DateTimeReceived of the one item a FindItem success returned; None when it found none (or gave none)."""
    root = ElementTree.fromstring(body)  # noqa: S314 - see the import note
    text = root.findtext(".//m:FindItemResponseMessage/m:RootFolder/t:Items/*/t:DateTimeReceived", None, NS)
    if not text:
        return None
    try:
        when = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def parse(body: str) -> tuple[str, str, str, dict[str, int]]:
    """(ResponseClass, ResponseCode, MessageText, counts) of a GetFolder response."""
    return _read_root(ElementTree.fromstring(body))  # noqa: S314 - see the import note


def message_values(root: ElementTree.Element) -> dict[str, str]:
    """The ``<t:Value Name="...">`` pairs of a fault's ``MessageXml`` (BackOffMilliseconds, Policy, ...)."""
    return {el.get("Name", ""): (el.text or "").strip() for el in root.iter()
            if el.tag.endswith("}Value") and el.get("Name")}


def suggested_wait(values: Mapping[str, str], text: str) -> float | None:
    """The back-off EWS suggests, in seconds: ``BackOffMilliseconds`` in MessageXml, else "Suggested backoff time
    N ms" in the message (mustang#121, ews-managed-api#293). None when absent or 0."""
    raw = values.get("BackOffMilliseconds", "")
    if raw.isdigit() and int(raw) > 0:
        return int(raw) / 1000
    for candidate in (*values.values(), text):
        found = _SUGGESTED.search(candidate or "")
        if found and int(found.group(1)) > 0:
            return int(found.group(1)) / 1000
    return None


def _body_kind(body: str) -> str:
    text = body.strip()
    if not text:
        return "an empty body"
    head = text[:300].lower()
    if "<html" in head or "<!doctype" in head:
        return "an HTML page"
    if text.startswith("<"):
        return "XML that is no EWS reply"
    return f"text '{redact(text[:60])}'"


def read(status: int, headers: Mapping[str, str], body: str) -> Reading:
    """Everything the check reports about one EWS reply. Pure: no I/O, no clock (a Retry-After given as an HTTP
    date is counted from now)."""
    header_wait = retry_after(_header(headers, "retry-after"))
    if status == 401:
        return Reading(Verdict(Status.FAIL, "auth_failed", None))
    try:
        root = ElementTree.fromstring(body)  # noqa: S314 - see the import note
        klass, code, text, counts = _read_root(root)
    except (ValueError, ElementTree.ParseError):
        root = None
    if root is None:  # no EWS reply in the body: only the status says what happened
        kind = _body_kind(body)
        if status == 403:
            disabled = _disabled(body + " " + _header(headers, "x-ms-diagnostics"))
            return Reading(Verdict(Status.FAIL, "ews_disabled" if disabled else "ews_forbidden", None), body=kind)
        if status == 429:
            return Reading(Verdict(Status.WARN, "throttled", header_wait or HTTP_THROTTLE_DEFAULT_S), body=kind)
        if status >= 500:
            return Reading(Verdict(Status.ERROR, "service_unavailable", header_wait), body=kind)
        return Reading(Verdict(Status.FAIL, "unexpected_reply", None), body=kind)
    if (klass == "Success" or code == "NoError") and status < 400:
        return Reading(Verdict(Status.OK, None, None), code, text, counts)
    if _disabled(text):
        return Reading(Verdict(Status.FAIL, "ews_disabled", None), code, text)
    if code in THROTTLE_CODES or status == 429:
        wait = suggested_wait(message_values(root), text)
        if status == 429:
            wait = header_wait or wait or HTTP_THROTTLE_DEFAULT_S
        else:
            wait = wait or header_wait or THROTTLE_CODES[code]
        return Reading(Verdict(Status.WARN, "throttled", wait), code, text)
    if code in CODES:
        result, diag = CODES[code]
        return Reading(Verdict(result, diag, header_wait if diag == "service_unavailable" else None), code, text)
    return Reading(Verdict(Status.ERROR if status >= 500 else Status.FAIL, "unexpected_reply", None), code, text)


def classify(status: int, headers: Mapping[str, str], body: str) -> Verdict:
    """(status, diagnosis code, wait in seconds) of an EWS reply; see the module's docstring."""
    return read(status, headers, body).verdict


class EwsCheck:
    kind: ClassVar[str] = "ews"
    config_model: ClassVar[type[EwsOptions]] = EwsOptions
    depends_on: ClassVar[tuple[str, ...]] = (TOKEN_KIND,)
    needs: ClassVar[Mapping[Flow, tuple[Permission, ...]]] = {
        "app": ((EXCHANGE, ("full_access_as_app",)),), "delegated": ((EXCHANGE, ("EWS.AccessAsUser.All",)),)}
    uses_app_token: ClassVar[bool] = True
    needs_credential: ClassVar[bool] = True
    endpoint: ClassVar[str | None] = "ews"

    async def run(self, ctx: CheckContext) -> Outcome:
        token = await asyncio.to_thread(fetch_token, ctx, self.kind)
        if isinstance(token, Outcome):
            return self._noted(ctx, token)
        options: EwsOptions = ctx.options  # type: ignore[assignment]
        mailbox = ctx.integration.mailbox
        probe = Probe()
        headers = {"Authorization": f"Bearer {token}", "X-AnchorMailbox": mailbox,
                   "Content-Type": "text/xml; charset=utf-8"}
        verify = tls_context(ctx.endpoints.ca_bundle)
        op = "GetFolder"
        trust_env = not ctx.endpoints.ca_bundle
        # GetFolder and FindItem only read: sent again if a kept-alive connection was dropped (graph_client._Resend)
        resend = {graph_client.RESEND: True}
        try:
            async with contextlib.AsyncExitStack() as own:
                http = ctx.http.client(verify=verify, timeout=ctx.timeout_s, trust_env=trust_env,
                                       spread=mailbox) if ctx.http \
                    else await own.enter_async_context(graph_client.capped_client(
                        verify=verify, timeout=ctx.timeout_s, trust_env=trust_env))
                t0 = time.perf_counter()
                resp = await http.post(ctx.endpoints.ews, content=REQUEST.format(mailbox=escape(mailbox)),
                                       headers=headers, extensions=resend)
                probe.phases["getfolder"] = round((time.perf_counter() - t0) * 1000, 1)
                outcome = self._judge(ctx, resp, probe)
                if outcome.status != Status.OK or not options.backlog_age or not outcome.metrics.get("unread_count"):
                    return self._noted(ctx, outcome)
                op = "FindItem"
                t0 = time.perf_counter()
                resp = await http.post(ctx.endpoints.ews, content=FIND_OLDEST.format(mailbox=escape(mailbox)),
                                       headers=headers, extensions=resend)
                probe.phases["finditem"] = round((time.perf_counter() - t0) * 1000, 1)
                return self._noted(ctx, self._backlog(ctx, options, outcome, resp, probe))
        except Exception as exc:  # noqa: BLE001 - DNS, refused, TLS, timeout, a reply past the cap
            big = graph_client.too_large(exc)
            if big is not None:
                return self._noted(ctx, probe.outcome(Status.ERROR, "reply_too_large", f"EWS {op} for "
                                                      f"{mailbox}: {big}", reply_cap_bytes=big.cap))
            outcome = network_outcome(exc, ctx.endpoints.ews) or Outcome(
                Status.ERROR, "unexpected_reply", f"EWS: {type(exc).__name__}: {redact(exc)}")
            return self._noted(ctx, outcome)

    def _backlog(self, ctx: CheckContext, options: EwsOptions, counted: Outcome, resp: httpx.Response,
                 probe: Probe) -> Outcome:
        """The GetFolder result with the FindItem's answer: the oldest unread message's age judged, or the FindItem's
        refusal read as any EWS reply is."""
        refused = self._judge(ctx, resp, probe, "FindItem")
        if refused.code is not None:
            return refused
        try:
            received = oldest_received(resp.text)
        except ElementTree.ParseError:
            received = None
        metrics = {k: v for k, v in counted.metrics.items() if k != "phases_ms"}
        summary = counted.summary
        age = None
        if received is None:
            summary += "; FindItem returned no unread message with a DateTimeReceived, so its age is unknown"
        else:
            age = max(0.0, (ctx.now() - received).total_seconds())
            summary += f", the oldest unread {mailflow.age_words(age)} old"
        metrics["oldest_unread_age_s"] = age
        status, code, words = mailflow.judge(age, options, ctx.integration.system)
        return probe.outcome(status, code, summary + words, **metrics)

    def _judge(self, ctx: CheckContext, resp: httpx.Response, probe: Probe, op: str = "GetFolder") -> Outcome:
        mailbox = ctx.integration.mailbox
        status = resp.status_code
        diag_header = resp.headers.get("x-ms-diagnostics", "")
        probe.say(f"S: HTTP {status} {redact(diag_header)}".strip())
        reading = read(status, resp.headers, resp.text)
        result, code, wait = reading.verdict
        if reading.response_code:
            probe.say(f"S: {reading.response_code} {reading.text}".strip())
        said = f"{reading.response_code}: {redact(reading.text).rstrip('. ')}" if reading.response_code \
            else f"HTTP {status} with {reading.body}"
        waits = f"; EWS checks on this mailbox wait {wait:g} s as asked" if wait else ""
        metrics: dict = {"http_status": status}
        if reading.response_code:
            metrics["response_code"] = reading.response_code
        if code is None:
            return probe.outcome(Status.OK, None, f"EWS GetFolder inbox of {mailbox}: "
                                 f"{reading.counts.get('message_count', '?')} message(s), "
                                 f"{reading.counts.get('unread_count', '?')} unread", **reading.counts)
        if code == "auth_failed":
            summary = (f"EWS refused the token for {mailbox} (401"
                       f"{': ' + redact(diag_header) if diag_header else ''})")
        elif code == "ews_forbidden":
            summary = (f"EWS refused {mailbox} with a bare HTTP 403 ({reading.body}): a policy blocks EWS for this "
                       "app or mailbox (EWSEnabled for the organisation or the mailbox, EWSAllowedAppIDs, or an "
                       "application access policy); Exchange does not say which")
        elif code == "ews_disabled":
            summary = f"EWS is disabled for this tenant, app or mailbox: {said}"
        elif code == "throttled":
            summary = f"EWS throttled the {op} for {mailbox}: {said}{waits}"
        elif code == "service_unavailable":
            summary = f"EWS is unavailable: the {op} for {mailbox} got {said} instead of a reply{waits}"
        elif reading.response_code:
            summary = f"EWS {op} for {mailbox} answered {said}"
        else:
            summary = f"EWS answered {said} without a {op} response"
        outcome = probe.outcome(result, code, summary, **metrics)
        if wait:
            outcome.retry_after_s = wait
            outcome.backoff_target = mailbox_target("ews", mailbox)
        if code == "unexpected_reply":
            outcome.raw = redact(resp.text[:2000])
        return outcome

    @staticmethod
    def _noted(ctx: CheckContext, outcome: Outcome) -> Outcome:
        if ctx.endpoints.exchange_online:
            outcome.metrics["notice"] = NOTICE
            outcome = retiring(outcome, ctx.now())
        return outcome


def retiring(outcome: Outcome, now: datetime) -> Outcome:
    """An EWS answer from Exchange Online as `warn` ``ews_retiring`` from ``RETIRING_FROM`` on, with the shutdown date
    and the days left (past it: how long ago, and EWS still answered). Anything but an answer is left as it is."""
    if outcome.status != Status.OK or now < RETIRING_FROM:
        return outcome
    words = days.expiry_words(SHUTDOWN, now)
    if days.expired(SHUTDOWN, now):
        words = words.replace("expired", "passed") + ", and EWS still answered"
    summary = (f"{outcome.summary}; Exchange Online shuts EWS down on 1 April 2027 ({words}): move this integration "
               "to Microsoft Graph")
    return Outcome(Status.WARN, "ews_retiring", summary, latency_ms=outcome.latency_ms,
                   metrics={**outcome.metrics, "retires_on": SHUTDOWN.date().isoformat(),
                            "days_left": days.days_left(SHUTDOWN, now), "days_words": words})
