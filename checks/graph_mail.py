"""`graph_mail`: read the mailbox's inbox folder through Microsoft Graph (msgraph-sdk), as a Graph-based
consuming system (the Sinch kind) does; optionally the oldest unread message and a sendMail canary.

Three 403s are told apart: an ApplicationAccessPolicy that leaves the mailbox out ("Access to OData is
disabled"), a missing permission, and (404) a mailbox that does not exist. A 429 is `throttled` (warn):
the client runs without kiota's retry middleware and the next run waits for Retry-After.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

from checks import graph_client
from checks.base import CheckContext, Outcome, Status
from checks.mailbox import Probe, fetch_token
from checks.network import network_outcome
from monitor.config import Duration
from monitor.redact import redact


class GraphMailOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    backlog_warn: Duration | None = None  # oldest unread message older than this -> warn inbox_backlog
    canary_to: str | None = None  # sendMail a tagged test message here on every run (needs Mail.Send)


def classify(status: int | None, code: str | None, message: str) -> tuple[Status, str]:
    low = (message or "").lower()
    if status == 429:
        return Status.WARN, "throttled"
    if status == 403 and "odata is disabled" in low:
        return Status.FAIL, "access_policy_denied"
    if status == 403:
        return Status.FAIL, "permission_missing"
    if status == 404 or code in ("ErrorInvalidUser", "ResourceNotFound", "MailboxNotEnabledForRESTAPI"):
        return Status.FAIL, "mailbox_not_found"
    if status == 401:
        return Status.FAIL, "auth_failed"
    if status is not None and status >= 500:
        return Status.ERROR, "unexpected_reply"
    return Status.FAIL, "unexpected_reply"


def _retry_after(headers: dict[str, str]) -> float | None:
    for key, value in headers.items():
        if key.lower() == "retry-after":
            try:
                return float(value)
            except ValueError:
                return None
    return None


class InboxCounts:
    """The two counts the check reads from the inbox folder, as a kiota model. msgraph-sdk's MailFolder builds
    the deserializers of all its properties (about 60, an import statement each) for every parse: over half
    of a graph_mail check's CPU (bench/). Same request pipeline, same error model; a narrower result."""

    def __init__(self) -> None:
        self.total_item_count: int | None = None
        self.unread_item_count: int | None = None
        self.additional_data: dict[str, Any] = {}

    @staticmethod
    def create_from_discriminator_value(parse_node: Any) -> InboxCounts:
        return InboxCounts()

    def get_field_deserializers(self) -> dict[str, Any]:
        return {"totalItemCount": lambda n: setattr(self, "total_item_count", n.get_int_value()),
                "unreadItemCount": lambda n: setattr(self, "unread_item_count", n.get_int_value())}

    def serialize(self, writer: Any) -> None:  # pragma: no cover - a reply model, never sent
        raise NotImplementedError


async def _inbox_counts(users: Any) -> InboxCounts | None:
    """GET /users/{mailbox}/mailFolders/inbox?$select=totalItemCount,unreadItemCount through msgraph-sdk."""
    from kiota_abstractions.base_request_configuration import RequestConfiguration
    from msgraph.generated.models.o_data_errors.o_data_error import ODataError
    from msgraph.generated.users.item.mail_folders.item.mail_folder_item_request_builder import (
        MailFolderItemRequestBuilder,
    )

    builder = users.mail_folders.by_mail_folder_id("inbox")
    query = MailFolderItemRequestBuilder.MailFolderItemRequestBuilderGetQueryParameters(
        select=["totalItemCount", "unreadItemCount"])
    info = builder.to_get_request_information(RequestConfiguration(query_parameters=query))
    return await builder.request_adapter.send_async(info, InboxCounts, {"XXX": ODataError})


class GraphMailCheck:
    kind: ClassVar[str] = "graph_mail"
    config_model: ClassVar[type[BaseModel]] = GraphMailOptions
    depends_on_token: ClassVar[bool] = True

    async def run(self, ctx: CheckContext) -> Outcome:
        token = await asyncio.to_thread(fetch_token, ctx, self.kind)
        if isinstance(token, Outcome):
            return token
        options: GraphMailOptions = ctx.options  # type: ignore[assignment]
        probe = Probe()
        client, http = graph_client.build(ctx.endpoints, lambda: {"access_token": token}, ctx.timeout_s)
        users = client.users.by_user_id(ctx.integration.mailbox)
        step = "inbox"
        try:
            t0 = time.perf_counter()
            folder = await _inbox_counts(users)
            probe.phases["inbox"] = round((time.perf_counter() - t0) * 1000, 1)
            if folder is None or folder.total_item_count is None:  # not a mail folder (a hostile or broken server)
                return probe.outcome(Status.FAIL, "unexpected_reply", f"Graph answered the inbox request for "
                                     f"{ctx.integration.mailbox} without a mail folder's item counts")
            metrics: dict[str, Any] = {"message_count": folder.total_item_count,
                                       "unread_count": folder.unread_item_count}
            summary = (f"inbox of {ctx.integration.mailbox}: {folder.total_item_count} message(s), "
                       f"{folder.unread_item_count} unread")
            if options.backlog_warn and folder.unread_item_count:
                step = "backlog"
                age = await self._oldest_unread_age(users, probe)
                metrics["oldest_unread_age_s"] = age
                if age is not None and age > options.backlog_warn:
                    system = ctx.integration.system or "the consuming system"
                    return probe.outcome(Status.WARN, "inbox_backlog", f"{summary}; the oldest unread is "
                                         f"{age / 3600:.1f} h old: is {system} still reading mail?", **metrics)
            if options.canary_to:
                step = "sendMail"
                tag = await self._canary(ctx, users, options.canary_to, probe)
                metrics.update(send_verified=True, canary_tag=tag)
                summary += f"; canary {tag} sent"
            return probe.outcome(Status.OK, None, summary, **metrics)
        except Exception as exc:  # noqa: BLE001 - every failure gets a diagnosis
            return self._failure(ctx, exc, step, probe)
        finally:
            await http.aclose()

    @staticmethod
    async def _oldest_unread_age(users: Any, probe: Probe) -> float | None:
        from kiota_abstractions.base_request_configuration import RequestConfiguration
        from msgraph.generated.users.item.mail_folders.item.messages.messages_request_builder import (
            MessagesRequestBuilder,
        )

        query = MessagesRequestBuilder.MessagesRequestBuilderGetQueryParameters(
            filter="isRead eq false", orderby=["receivedDateTime asc"], top=1, select=["receivedDateTime"])
        t0 = time.perf_counter()
        page = await users.mail_folders.by_mail_folder_id("inbox").messages.get(
            request_configuration=RequestConfiguration(query_parameters=query))
        probe.phases["backlog"] = round((time.perf_counter() - t0) * 1000, 1)
        if not page or not page.value or not page.value[0].received_date_time:
            return None
        received = page.value[0].received_date_time
        received = received if received.tzinfo else received.replace(tzinfo=UTC)
        return max(0.0, (datetime.now(UTC) - received).total_seconds())

    @staticmethod
    async def _canary(ctx: CheckContext, users: Any, to: str, probe: Probe) -> str:
        from msgraph.generated.models.body_type import BodyType
        from msgraph.generated.models.email_address import EmailAddress
        from msgraph.generated.models.item_body import ItemBody
        from msgraph.generated.models.message import Message
        from msgraph.generated.models.recipient import Recipient
        from msgraph.generated.users.item.send_mail.send_mail_post_request_body import SendMailPostRequestBody

        tag = uuid.uuid4().hex[:12]
        body = SendMailPostRequestBody(
            message=Message(subject=f"[mailwarden canary] {ctx.integration.name} {tag}",
                            body=ItemBody(content_type=BodyType.Text,
                                          content="mailwarden send check. Safe to delete."),
                            to_recipients=[Recipient(email_address=EmailAddress(address=to))]),
            save_to_sent_items=False)
        t0 = time.perf_counter()
        await users.send_mail.post(body)
        probe.phases["sendMail"] = round((time.perf_counter() - t0) * 1000, 1)
        return tag

    @staticmethod
    def _failure(ctx: CheckContext, exc: BaseException, step: str, probe: Probe) -> Outcome:
        if isinstance(exc, graph_client.TokenRefused):
            from checks.token import refused_outcome

            return refused_outcome(exc.result, "Graph token")
        big = graph_client.too_large(exc)
        if big is not None:
            return probe.outcome(Status.ERROR, "reply_too_large",
                                 f"Graph {step} for {ctx.integration.mailbox}: {big}", reply_cap_bytes=big.cap)
        err = graph_client.graph_error(exc)
        if err is None:
            outcome = network_outcome(exc, ctx.endpoints.graph) or Outcome(
                Status.ERROR, "unclassified", f"Graph {step}: {type(exc).__name__}: {redact(exc)}")
            outcome.latency_ms = probe.elapsed_ms
            return outcome
        status, code, message, headers = err
        result, diag = classify(status, code, message)
        summary = f"Graph {step} for {ctx.integration.mailbox} answered {status} {code or ''}: {redact(message)}"
        outcome = probe.outcome(result, diag, summary.replace("  ", " "), http_status=status, graph_code=code)
        outcome.retry_after_s = _retry_after(headers) if diag == "throttled" else None
        return outcome
