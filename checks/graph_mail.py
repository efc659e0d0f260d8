"""`graph_mail`: read the mailbox's inbox folder through Microsoft Graph (msgraph-sdk), as a Graph-based
consuming system (the Sinch kind) does; optionally the oldest unread message and a sendMail canary.

Three refusals are told apart: an ApplicationAccessPolicy that leaves the mailbox out (403 "Access to OData is
disabled"), a missing permission (403), and a mailbox that does not exist (404). Throttling is not a refusal: a
429 (``ApplicationThrottled``, whether the message names MailboxConcurrency, at most 4 concurrent requests per app
and mailbox, or the request budget) is `throttled` (warn), and a 5xx (503/504 ``UnknownError`` during an
incident) is `service_unavailable` (error). The client runs without kiota's retry middleware, and every Graph
check of the app on the mailbox waits for Retry-After. ``classify`` / ``classify_reply`` are pure and
table-tested (tests/checks).
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar, NamedTuple

from pydantic import BaseModel, ConfigDict

from mailwarden.checks import TOKEN_KIND, graph_client, mailflow
from mailwarden.checks.base import CheckContext, Flow, Outcome, Permission, Status, mailbox_target
from mailwarden.checks.mailbox import Probe, fetch_token
from mailwarden.checks.network import network_outcome
from mailwarden.checks.permissions import GRAPH
from mailwarden.durations import retry_after
from mailwarden.redact import redact


class GraphMailOptions(mailflow.RenamedBacklogOptions):
    model_config = ConfigDict(extra="forbid")
    # backlog_age / backlog_grace (checks.mailflow): the oldest unread message of the inbox; backlog_warn: old name
    # the canaries another integration sends here: found by subject in every folder (checks.mailflow)
    canary: mailflow.CanaryOptions | None = None
    canary_to: str | None = None  # sendMail a tagged test message here on every run (needs Mail.Send)


MAX_CANARIES = 100  # the canaries read per run: more than a day of them at one a run
EPOCH = "1900-01-01T00:00:00Z"  # receivedDateTime ge this: every message (see _oldest_unread_age)
THROTTLE_DEFAULT_S = 60.0  # a 429 without Retry-After (seen: outlook-dev-docs#144, msgraph-sdk-dotnet#250)


class Verdict(NamedTuple):
    """What a Graph reply means: status, diagnosis code, and how long the app's Graph checks on the mailbox wait
    (seconds; None when the reply asks for no wait)."""

    status: Status
    code: str
    wait_s: float | None


def _header(headers: Mapping[str, str] | None, name: str) -> str:
    for key, value in (headers or {}).items():
        if key.lower() == name:
            return value
    return ""


def classify(status: int | None, code: str | None, message: str,
             headers: Mapping[str, str] | None = None) -> Verdict:
    """A Graph error (HTTP status, ``error.code``, ``error.message``, headers) as a verdict."""
    low = (message or "").lower()
    wait = retry_after(_header(headers, "retry-after"))
    if status == 429:
        return Verdict(Status.WARN, "throttled", wait or THROTTLE_DEFAULT_S)
    if status is not None and status >= 500:
        return Verdict(Status.ERROR, "service_unavailable", wait)
    if status == 403 and ("odata is disabled" in low or "accesspolicy" in low):
        return Verdict(Status.FAIL, "access_policy_denied", None)
    if status == 403:
        return Verdict(Status.FAIL, "permission_missing", None)
    if status == 404 or code in ("ErrorInvalidUser", "ResourceNotFound", "MailboxNotEnabledForRESTAPI"):
        return Verdict(Status.FAIL, "mailbox_not_found", None)
    if status == 401:
        return Verdict(Status.FAIL, "auth_failed", None)
    return Verdict(Status.FAIL, "unexpected_reply", None)


def classify_reply(status: int, headers: Mapping[str, str], body: str) -> Verdict:
    """``classify`` of a raw reply: the body is Graph's ``{"error": {"code": ..., "message": ...}}``, or anything
    else (an empty body, an HTML page), which leaves the status alone to decide."""
    try:
        parsed = json.loads(body) if body.strip() else None
    except ValueError:
        parsed = None
    error = parsed.get("error") if isinstance(parsed, dict) else None
    if not isinstance(error, dict):
        error = {}
    return classify(status, error.get("code"), str(error.get("message") or ""), headers)


class InboxCounts:
    """The two counts the check reads from the inbox folder, as a kiota model. msgraph-sdk's MailFolder builds
    the deserializers of all its properties (about 60, an import statement each) for every parse: over half
    of a graph_mail check's CPU (bench/). Same request pipeline, same error model; a narrower result."""

    def __init__(self) -> None:
        self.id: str | None = None
        self.total_item_count: int | None = None
        self.unread_item_count: int | None = None
        self.additional_data: dict[str, Any] = {}

    @staticmethod
    def create_from_discriminator_value(parse_node: Any) -> InboxCounts:
        return InboxCounts()

    def get_field_deserializers(self) -> dict[str, Any]:
        return {"id": lambda n: setattr(self, "id", n.get_str_value()),
                "totalItemCount": lambda n: setattr(self, "total_item_count", n.get_int_value()),
                "unreadItemCount": lambda n: setattr(self, "unread_item_count", n.get_int_value())}

    def serialize(self, writer: Any) -> None:  # pragma: no cover - a reply model, never sent
        raise NotImplementedError


async def _inbox_counts(users: Any) -> InboxCounts | None:
    """GET /users/{mailbox}/mailFolders/inbox?$select=id,totalItemCount,unreadItemCount through msgraph-sdk."""
    from kiota_abstractions.base_request_configuration import RequestConfiguration
    from msgraph.generated.models.o_data_errors.o_data_error import ODataError
    from msgraph.generated.users.item.mail_folders.item.mail_folder_item_request_builder import (
        MailFolderItemRequestBuilder,
    )

    builder = users.mail_folders.by_mail_folder_id("inbox")
    query = MailFolderItemRequestBuilder.MailFolderItemRequestBuilderGetQueryParameters(
        select=["id", "totalItemCount", "unreadItemCount"])
    info = builder.to_get_request_information(RequestConfiguration(query_parameters=query))
    # expanded once: kiota expands the URL template each time the request's URL is read, three times per request
    # (stduritemplate: a quarter of a graph_mail check's CPU; bench/); the expanded URL is kept as the request's. The
    # base URL is the adapter's, as send_async would set it.
    info.path_parameters["baseurl"] = builder.request_adapter.base_url
    info.url = info.url
    return await builder.request_adapter.send_async(info, InboxCounts, {"XXX": ODataError})


def preload(endpoints: Any) -> None:
    """Import now what a first Graph check would (msgraph-sdk, kiota, azure-core, opentelemetry: about 650 modules,
    52,000 objects), by building a client and the requests the check sends, without sending any. A long-running
    process does it before it freezes its heap (``monitor.freeze_heap``), so that those objects are frozen too and
    the full garbage collections of its first interval do not walk them (bench/)."""
    client, _http = graph_client.build(endpoints, "", 30.0)  # no request sent: no connection to close
    users = client.users.by_user_id("preload@example.invalid")
    from kiota_abstractions.base_request_configuration import RequestConfiguration
    from msgraph.generated.models.o_data_errors.o_data_error import ODataError  # noqa: F401 - the import is the point
    from msgraph.generated.users.item.mail_folders.item.mail_folder_item_request_builder import (
        MailFolderItemRequestBuilder,
    )
    from msgraph.generated.users.item.mail_folders.item.messages.messages_request_builder import (
        MessagesRequestBuilder,
    )

    query = MailFolderItemRequestBuilder.MailFolderItemRequestBuilderGetQueryParameters(select=["id"])
    users.mail_folders.by_mail_folder_id("inbox").to_get_request_information(RequestConfiguration(
        query_parameters=query))
    users.mail_folders.by_mail_folder_id("inbox").messages.to_get_request_information(RequestConfiguration(
        query_parameters=MessagesRequestBuilder.MessagesRequestBuilderGetQueryParameters(top=1)))


class GraphMailCheck:
    kind: ClassVar[str] = "graph_mail"
    config_model: ClassVar[type[BaseModel]] = GraphMailOptions
    depends_on: ClassVar[tuple[str, ...]] = (TOKEN_KIND,)
    needs: ClassVar[Mapping[Flow, tuple[Permission, ...]]] = {
        "app": ((GRAPH, ("Mail.ReadWrite",)),),
        # .Shared reaches the signed-in user's own mailbox and the shared ones; plain Mail.ReadWrite only its own
        "delegated": ((GRAPH, ("Mail.ReadWrite.Shared", "Mail.ReadWrite")),)}
    uses_app_token: ClassVar[bool] = True
    needs_credential: ClassVar[bool] = True
    endpoint: ClassVar[str | None] = "graph"

    async def run(self, ctx: CheckContext) -> Outcome:
        token = await asyncio.to_thread(fetch_token, ctx, self.kind)
        if isinstance(token, Outcome):
            return token
        options: GraphMailOptions = ctx.options  # type: ignore[assignment]
        probe = Probe()
        client, http = graph_client.build(ctx.endpoints, token, ctx.timeout_s, ctx.http, ctx.integration.mailbox)
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
            status, code = Status.OK, None
            if options.backlog_age and folder.unread_item_count:
                step = "backlog"
                age = await self._oldest_unread_age(users, probe)
                metrics["oldest_unread_age_s"] = age
                if age is not None:
                    summary += f", the oldest unread {mailflow.age_words(age)} old"
                status, code, words = mailflow.judge(age, options, ctx.integration.system)
                summary += words
            if options.canary is not None:
                step = "canary"
                canary = await self._canaries(ctx, users, options.canary, folder.id, probe)
                status, code = mailflow.worse((status, code), (canary.status, canary.code))
                summary += canary.words
                metrics.update(canary.metrics)
            if options.canary_to:
                step = "sendMail"
                tag = await self._canary(ctx, users, options.canary_to, probe)
                metrics.update(send_verified=True, canary_tag=tag, canary_sent_at=ctx.now().isoformat(),
                               canary_to=options.canary_to)
                summary += f"; canary {tag} sent"
            return probe.outcome(status, code, summary, **metrics)
        except Exception as exc:  # noqa: BLE001 - every failure gets a diagnosis
            return self._failure(ctx, exc, step, probe)
        finally:
            if ctx.http is None:  # a client of its own; a shared one stays open for the next check
                await http.aclose()

    @staticmethod
    async def _oldest_unread_age(users: Any, probe: Probe) -> float | None:
        from kiota_abstractions.base_request_configuration import RequestConfiguration
        from msgraph.generated.users.item.mail_folders.item.messages.messages_request_builder import (
            MessagesRequestBuilder,
        )

        # Graph refuses $orderby on a property its $filter does not name first (400 InefficientFilter, "The
        # restriction or sort order is too complex for this operation": Microsoft Graph team, "Update to Filtering
        # and Sorting in the Mail, Calendar and Contacts REST API", devblogs.microsoft.com/microsoft365dev)
        query = MessagesRequestBuilder.MessagesRequestBuilderGetQueryParameters(
            filter=f"receivedDateTime ge {EPOCH} and isRead eq false", orderby=["receivedDateTime asc"], top=1,
            select=["receivedDateTime"])
        t0 = time.perf_counter()
        page = await users.mail_folders.by_mail_folder_id("inbox").messages.get(
            request_configuration=RequestConfiguration(query_parameters=query))
        probe.phases["backlog"] = round((time.perf_counter() - t0) * 1000, 1)
        if not page or not page.value or not page.value[0].received_date_time:
            return None
        received = page.value[0].received_date_time
        received = received if received.tzinfo else received.replace(tzinfo=UTC)
        return max(0.0, (datetime.now(UTC) - received).total_seconds())

    async def _canaries(self, ctx: CheckContext, users: Any, watch: mailflow.CanaryOptions, inbox_id: str | None,
                        probe: Probe) -> mailflow.CanaryVerdict:
        """The canaries another integration sent here, looked for in every folder of the mailbox (Deleted Items and
        wherever a rule or the consumer moved them): GET /users/{mailbox}/messages filtered on receivedDateTime and
        the subject's prefix, no $orderby (Graph refuses a sort on a property the filter does not name first;
        startswith on subject combines with a receivedDateTime filter: Rexezuge-CloudflareWorkers/Mail-Otter#168)."""
        from kiota_abstractions.base_request_configuration import RequestConfiguration
        from msgraph.generated.users.item.messages.messages_request_builder import MessagesRequestBuilder

        if ctx.canaries is None:
            return mailflow.no_log(watch)
        now = ctx.now()
        since = watch.since(now)
        sent = (await asyncio.to_thread(ctx.canaries.sent, watch.from_, since))[-mailflow.RECENT:]
        seen_before = await asyncio.to_thread(ctx.canaries.seen, ctx.integration.name, self.kind, since)
        found: dict[str, mailflow.Found] = {}
        if sent:
            prefix = mailflow.PREFIX.format(integration=watch.from_).replace("'", "''")
            oldest = sent[0].sent_at.astimezone(UTC) - timedelta(minutes=5)  # clocks differ by a little
            clause = f"receivedDateTime ge {oldest.strftime('%Y-%m-%dT%H:%M:%SZ')}"
            query = MessagesRequestBuilder.MessagesRequestBuilderGetQueryParameters(
                filter=f"{clause} and startswith(subject,'{prefix}')",
                select=["subject", "receivedDateTime", "isRead", "parentFolderId"], top=MAX_CANARIES)
            t0 = time.perf_counter()
            try:
                page = await users.messages.get(request_configuration=RequestConfiguration(query_parameters=query))
            except Exception as exc:
                err = graph_client.graph_error(exc)
                if err is None or err[0] != 400:
                    raise  # throttled, refused, unreachable: the check's failure, read as any other step's
                # a search Graph does not take is no evidence that the canary is absent: no verdict, said so
                return mailflow.CanaryVerdict(Status.OK, None, f"; canaries from {watch.from_} not looked for: "
                                              f"Graph answered 400 {err[1] or ''} {redact(err[2])}".rstrip(), {})
            probe.phases["canary"] = round((time.perf_counter() - t0) * 1000, 1)
            for msg in (page.value if page and page.value else []):
                tag = mailflow.tag_of(" ".join((msg.subject or "").split()), watch.from_)
                if tag is None or msg.received_date_time is None:
                    continue
                received = msg.received_date_time
                received = received if received.tzinfo else received.replace(tzinfo=UTC)
                state = "moved" if inbox_id and msg.parent_folder_id and msg.parent_folder_id != inbox_id else \
                    "read" if msg.is_read else "unread"
                found[tag] = mailflow.Found(tag, received, state)
        return mailflow.judge_canaries(sent, found, seen_before, watch, now,
                                       where=f"any folder of {ctx.integration.mailbox}",
                                       system=ctx.integration.system)

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
            message=Message(subject=mailflow.SUBJECT.format(integration=ctx.integration.name, tag=tag),
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
        result, diag, wait = classify(status, code, message, headers)
        summary = f"Graph {step} for {ctx.integration.mailbox} answered {status} {code or ''}: {redact(message)}"
        summary = summary.replace("  ", " ").rstrip(": ")
        if wait:
            summary = summary.rstrip(".") + f"; Graph checks of this app on the mailbox wait {wait:g} s as asked"
        outcome = probe.outcome(result, diag, summary, http_status=status, graph_code=code)
        if wait:
            outcome.retry_after_s = wait
            outcome.backoff_target = mailbox_target("graph", ctx.integration.mailbox, ctx.app.client_id)
        return outcome


