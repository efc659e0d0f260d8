"""`ews`: EWS GetFolder on the inbox with the app's bearer token, `ExchangeImpersonation` and
`X-AnchorMailbox`, as an EWS-based consuming system (the Agiloft kind) does.

Exchange Online is retiring EWS (Microsoft's plan: off by default from October 2026 unless allowed for
the tenant or app, shut down in 2027), so every EWS result carries a standing notice with the Graph
migration as the fix. The exact reply of a tenant where EWS is switched off is not known: a 403 or an
access-denied answer that says EWS is disabled is read as ``ews_disabled``.
"""

from __future__ import annotations

import asyncio
import time
from typing import ClassVar
from xml.etree import ElementTree  # noqa: S405 - stdlib expat limits entity expansion (3.7.1+)
from xml.sax.saxutils import escape

import httpx

from checks import graph_client
from checks.base import CheckContext, NoOptions, Outcome, Status
from checks.mailbox import Probe, fetch_token, tls_context
from checks.network import network_outcome
from monitor.redact import redact

NOTICE = ("EWS in Exchange Online is being retired: off by default from October 2026 unless allowed for the "
          "tenant or app, shut down in 2027. Move this integration to Microsoft Graph.")
NS = {"s": "http://schemas.xmlsoap.org/soap/envelope/",
      "m": "http://schemas.microsoft.com/exchange/services/2006/messages",
      "t": "http://schemas.microsoft.com/exchange/services/2006/types"}

REQUEST = """<?xml version="1.0" encoding="utf-8"?>
<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/"
  xmlns:t="http://schemas.microsoft.com/exchange/services/2006/types"
  xmlns:m="http://schemas.microsoft.com/exchange/services/2006/messages">
  <soap:Header>
    <t:RequestServerVersion Version="Exchange2016"/>
    <t:ExchangeImpersonation><t:ConnectingSID><t:PrimarySmtpAddress>{mailbox}</t:PrimarySmtpAddress>
    </t:ConnectingSID></t:ExchangeImpersonation>
  </soap:Header>
  <soap:Body>
    <m:GetFolder>
      <m:FolderShape><t:BaseShape>Default</t:BaseShape></m:FolderShape>
      <m:FolderIds><t:DistinguishedFolderId Id="inbox"/></m:FolderIds>
    </m:GetFolder>
  </soap:Body>
</soap:Envelope>"""

CODES = {
    "ErrorNonExistentMailbox": "mailbox_not_found",
    "ErrorImpersonateUserDenied": "permission_missing",
    "ErrorAccessDenied": "permission_missing",
    "ErrorServerBusy": "throttled",
}


def _disabled(text: str) -> bool:
    low = text.lower()
    return "disabled" in low and ("ews" in low or "exchange web services" in low)


def parse(body: str) -> tuple[str, str, str, dict[str, int]]:
    """(ResponseClass, ResponseCode, MessageText, counts) of a GetFolder response."""
    root = ElementTree.fromstring(body)  # noqa: S314 - see the import note
    msg = root.find(".//m:GetFolderResponseMessage", NS)
    if msg is None:
        # EWS answers header-level errors (impersonation, unknown mailbox) as a SOAP fault with a ResponseCode
        code = next((el.text or "" for el in root.iter() if el.tag.endswith("}ResponseCode")), "")
        fault = root.findtext(".//faultstring") or ""
        if code:
            return "Error", code.strip(), fault.strip(), {}
        raise ValueError(fault or "no GetFolderResponseMessage in the reply")
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


class EwsCheck:
    kind: ClassVar[str] = "ews"
    config_model: ClassVar[type[NoOptions]] = NoOptions
    depends_on_token: ClassVar[bool] = True

    async def run(self, ctx: CheckContext) -> Outcome:
        token = await asyncio.to_thread(fetch_token, ctx, self.kind)
        if isinstance(token, Outcome):
            return self._noted(token)
        mailbox = ctx.integration.mailbox
        probe = Probe()
        headers = {"Authorization": f"Bearer {token}", "X-AnchorMailbox": mailbox,
                   "Content-Type": "text/xml; charset=utf-8"}
        verify = tls_context(ctx.endpoints.ca_bundle)
        try:
            async with graph_client.capped_client(verify=verify, timeout=ctx.timeout_s,
                                                  trust_env=not ctx.endpoints.ca_bundle) as http:
                t0 = time.perf_counter()
                resp = await http.post(ctx.endpoints.ews, content=REQUEST.format(mailbox=escape(mailbox)),
                                       headers=headers)
                probe.phases["getfolder"] = round((time.perf_counter() - t0) * 1000, 1)
        except Exception as exc:  # noqa: BLE001 - DNS, refused, TLS, timeout, a reply past the cap
            big = graph_client.too_large(exc)
            if big is not None:
                return self._noted(probe.outcome(Status.ERROR, "reply_too_large", f"EWS GetFolder for {mailbox}: "
                                                 f"{big}", reply_cap_bytes=big.cap))
            outcome = network_outcome(exc, ctx.endpoints.ews) or Outcome(
                Status.ERROR, "unexpected_reply", f"EWS: {type(exc).__name__}: {redact(exc)}")
            return self._noted(outcome)
        return self._noted(self._judge(ctx, resp, probe))

    def _judge(self, ctx: CheckContext, resp: httpx.Response, probe: Probe) -> Outcome:
        mailbox = ctx.integration.mailbox
        diag_header = resp.headers.get("x-ms-diagnostics", "")
        probe.say(f"S: HTTP {resp.status_code} {redact(diag_header)}".strip())
        if resp.status_code == 401:
            return probe.outcome(Status.FAIL, "auth_failed", f"EWS refused the token for {mailbox} (401"
                                 f"{': ' + redact(diag_header) if diag_header else ''})", http_status=401)
        if resp.status_code in (429, 503):
            outcome = probe.outcome(Status.WARN, "throttled", f"EWS throttled ({resp.status_code})")
            retry = resp.headers.get("retry-after", "")
            outcome.retry_after_s = float(retry) if retry.isdigit() else 60.0
            return outcome
        try:
            klass, code, text, counts = parse(resp.text)
        except (ValueError, ElementTree.ParseError) as exc:
            if resp.status_code == 403 and _disabled(resp.text + diag_header):
                return probe.outcome(Status.FAIL, "ews_disabled", f"EWS is disabled for this tenant or app "
                                     f"(HTTP 403): {redact(resp.text[:200])}", http_status=403)
            status = Status.ERROR if resp.status_code >= 500 else Status.FAIL
            outcome = probe.outcome(status, "unexpected_reply", f"EWS answered HTTP {resp.status_code} without a "
                                    f"GetFolder response ({redact(exc)})", http_status=resp.status_code)
            outcome.raw = redact(resp.text[:2000])
            return outcome
        probe.say(f"S: {klass} {code} {text}".strip())
        if klass == "Success" or code == "NoError":
            return probe.outcome(Status.OK, None, f"EWS GetFolder inbox of {mailbox}: "
                                 f"{counts.get('message_count', '?')} message(s), {counts.get('unread_count', '?')} "
                                 "unread", **counts)
        if _disabled(text) or resp.status_code == 403 and code == "ErrorAccessDenied" and _disabled(resp.text):
            return probe.outcome(Status.FAIL, "ews_disabled", f"EWS refused: {code}: {text}", response_code=code)
        diag = CODES.get(code, "unexpected_reply")
        status = Status.WARN if diag == "throttled" else Status.FAIL
        return probe.outcome(status, diag, f"EWS GetFolder for {mailbox} answered {code}: {redact(text)}",
                             response_code=code)

    @staticmethod
    def _noted(outcome: Outcome) -> Outcome:
        outcome.metrics["notice"] = NOTICE
        return outcome
