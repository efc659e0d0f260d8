"""EWS and Graph mail as Exchange Online answers them, through the real checks against the sandbox.

Each test names, in its docstring, the public source of the reply it replays (M365_FACTS.md and the captures in
/tmp/research_m365_replies.md, sections 5 to 7), then asserts the result's status and code and the key words of its
rendered fix. A throttled or transient reply is never a permission problem: its fix gives no permission advice.
"""

from __future__ import annotations

import pytest

from mailwarden.checks.base import Status, mailbox_target, token_target
from mailwarden.checks.diagnoses import render_fix
from mailwarden.checks.facts import facts

PERMISSION_ADVICE = ("Add-MailboxPermission", "API permissions", "Grant admin consent", "Application.Read.All")
POLICY_WORDS = ("EWSEnabled", "EWSAllowedAppIDs", "Test-ApplicationAccessPolicy")
SHUTDOWN = "1 April 2027"


def fix_of(w, outcome, integration: str = "subject") -> str:
    config = w.runtime.config
    return " ".join(render_fix(outcome.code, **facts(config, config.integration(integration), outcome)))


def mailbox_of(w) -> str:
    return (w.runtime or w.open()).config.integration("subject").mailbox


def assert_no_permission_advice(w, outcome) -> str:
    fix = fix_of(w, outcome)
    for words in PERMISSION_ADVICE:
        assert words not in fix, (outcome.code, words, fix)
    return fix


def ews_world(world, *, tenant=None, box=None):
    """An Agiloft-style integration: app-only EWS (full_access_as_app) on a shared mailbox, in a tenant that set
    EWSEnabled (since 1 October 2026 a tenant that never set it is blocked)."""
    def build(ids):
        return {"ews_enabled": True, **(tenant or {}),
                "mailboxes": [{"address": f"box@{ids['domain']}", "type": "shared", **(box or {})}]}
    return world("app", app_permissions={"exchange": ["full_access_as_app"]}, exchange=build,
                 checks={"token": {}, "ews": {}})


def graph_world(world, *, box=None):
    """A Sinch-style integration: app-only Graph Mail.ReadWrite on a shared mailbox."""
    def build(ids):
        return {"mailboxes": [{"address": f"box@{ids['domain']}", "type": "shared", **(box or {})}]}
    return world("app", app_permissions={"graph": ["Mail.ReadWrite"]}, exchange=build,
                 checks={"token": {}, "graph_mail": {}})


def exchange_is(w, where: str) -> None:
    """Whose Exchange the sandbox stands in for (endpoints.exchange): online, or on_premises."""
    w.rewrite(lambda d: d["endpoints"].update(exchange=where))


def assert_ews_forbidden(w, outcome) -> str:
    assert (outcome.status, outcome.code) == (Status.FAIL, "ews_forbidden"), outcome.summary
    assert "403" in outcome.summary and outcome.metrics["http_status"] == 403
    assert outcome.retry_after_s is None and outcome.backoff_target is None
    fix = fix_of(w, outcome)
    for words in POLICY_WORDS:
        assert words in fix, (words, fix)
    assert mailbox_of(w) in fix and w.app_id in fix
    return fix


# --- EWS refused by policy: a bare HTTP 403 -------------------------------------------------------------------


def test_ews_off_for_the_organisation_is_ews_forbidden(world):
    """Set-OrganizationConfig -EWSEnabled $false: Exchange answers a bare HTTP 403 with no SOAP body (decompiled
    EWS: EWSAuthorizationManager.Return403ForbiddenResponse; captured as "(403) Forbidden." in
    https://github.com/David-Barrett-MS/PowerShell-EWS-Scripts/issues/62, where the maintainer says "403 is policy
    block", and https://github.com/OfficeDev/ews-java-api/issues/729)."""
    w = ews_world(world, tenant={"ews_enabled": False})
    assert_ews_forbidden(w, w.run("ews"))


def test_ews_never_set_is_blocked_since_october_2026(world):
    """A tenant that never set EWSEnabled: blocked from 1 October 2026 (Microsoft's EWS retirement plan,
    M365_FACTS.md "Platform dates"), with the same bare 403
    (https://github.com/David-Barrett-MS/PowerShell-EWS-Scripts/issues/62)."""
    w = ews_world(world, tenant={"ews_enabled": None})
    fix = assert_ews_forbidden(w, w.run("ews"))
    assert "1 October 2026" in fix


def test_app_not_on_the_ews_allow_list_is_ews_forbidden(world):
    """EWSAllowedAppIDs holds other apps only: Exchange refuses this app with a bare 403 (M365_FACTS.md "Library
    facts"; https://github.com/David-Barrett-MS/PowerShell-EWS-Scripts/issues/62)."""
    w = ews_world(world, tenant={"ews_allowed_app_ids": ["00000000-0000-0000-0000-00000000abcd"]})
    assert_ews_forbidden(w, w.run("ews"))
    w.ctl.set_tenant_exchange(w.tenant_id, ews_allowed_app_ids=[w.app_id])
    assert w.run("ews").status == Status.OK


def test_access_policy_blocking_ews_is_ews_forbidden(world):
    """An application access policy that leaves the mailbox out scopes EWS too: a bare 403, "likely an app policy is
    applied" (https://github.com/David-Barrett-MS/PowerShell-EWS-Scripts/issues/62)."""
    w = ews_world(world)
    w.ctl.add_access_policy(w.tenant_id, w.app_id, "RestrictAccess", [])
    assert_ews_forbidden(w, w.run("ews"))


def test_mailbox_ews_disabled_is_ews_forbidden(world):
    """Set-CASMailbox -EwsEnabled $false on the mailbox: the same bare 403 (decompiled EWS CallerHasAccess; the
    setting is described in https://github.com/microsoftgraph/msgraph-sdk-powershell/issues/3551)."""
    w = ews_world(world, box={"ews_enabled": False})
    fix = assert_ews_forbidden(w, w.run("ews"))
    assert "Get-CASMailbox" in fix


def test_the_shutdown_date_only_for_exchange_online(world):
    """Exchange Online shuts EWS down on 1 April 2027 with no exceptions; on-premises Exchange keeps it (Microsoft's
    retirement announcement, M365_FACTS.md "Platform dates"). The date is in the result and in the fix against
    Exchange Online only."""
    w = ews_world(world, tenant={"ews_enabled": False})
    exchange_is(w, "online")
    online = w.run("ews")
    assert online.code == "ews_forbidden"
    assert SHUTDOWN in online.metrics["notice"] and "1 October 2026" in online.metrics["notice"]
    assert SHUTDOWN in fix_of(w, online) and "Microsoft Graph" in fix_of(w, online)
    exchange_is(w, "on_premises")
    on_premises = w.run("ews")
    assert on_premises.code == "ews_forbidden"
    assert "notice" not in on_premises.metrics and SHUTDOWN not in fix_of(w, on_premises)
    w.ctl.set_tenant_exchange(w.tenant_id, ews_enabled=True)
    healthy = w.run("ews")  # a healthy on-premises EWS: no notice, not retiring
    assert healthy.status == Status.OK and "notice" not in healthy.metrics
    exchange_is(w, "online")
    answered = w.run("ews")  # Exchange Online answers, within 180 days of the shutdown: warn ews_retiring
    assert (answered.status, answered.code) == (Status.WARN, "ews_retiring") and SHUTDOWN in answered.metrics["notice"]
    assert SHUTDOWN in answered.summary and answered.metrics["days_words"] in answered.summary
    assert SHUTDOWN in fix_of(w, answered) and "Microsoft Graph > Application permissions > Mail.ReadWrite" in \
        fix_of(w, answered)


# --- EWS throttled or unavailable ------------------------------------------------------------------------------


def test_ews_server_busy_waits_as_asked_and_holds_the_mailbox(world):
    """ErrorServerBusy with the wait in MessageXml, <t:Value Name="BackOffMilliseconds">, as an SOAP fault (HTTP 500)
    from Office 365 (https://github.com/mguessan/davmail/issues/161). The wait covers the mailbox: a second EWS
    integration on it is not run until it is over."""
    w = ews_world(world, box={"budget": {"limit": 3, "window_s": 300}})
    w.rewrite(lambda d: d["integrations"].append(dict(d["integrations"][0], name="second")))
    box = mailbox_of(w)
    w.ctl.use_budget(box, w.app_id, 3)  # the consuming system spent the app's budget on the mailbox
    w.ctl.reset_stats()
    first = w.run("ews")
    assert (first.status, first.code) == (Status.WARN, "throttled"), first.summary
    assert "ErrorServerBusy" in first.summary and first.metrics["response_code"] == "ErrorServerBusy"
    assert 280 < first.retry_after_s <= 300, first.retry_after_s  # BackOffMilliseconds / 1000
    assert first.backoff_target == mailbox_target("ews", box)
    assert_no_permission_advice(w, first)
    second = w.run("ews", integration="second")
    assert (second.status, second.code) == (Status.WARN, "throttled"), second.summary
    assert second.summary.startswith("not run") and 250 < second.retry_after_s <= 300
    posts = sum(n for key, n in w.ctl.stats()["requests"].items() if key.upper().startswith("POST /EWS/"))
    assert posts == 1, w.ctl.stats()["requests"]


def test_ews_exceeded_connection_count_is_throttled(world):
    """ErrorExceededConnectionCount at EWS's MaxConcurrency of 27, "Suggested backoff time 0 ms"
    (https://github.com/OfficeDev/ews-managed-api/issues/293): throttled, waiting 30 s since no wait is suggested."""
    w = ews_world(world, box={"load": {"ews": 27}})
    outcome = w.run("ews")
    assert (outcome.status, outcome.code) == (Status.WARN, "throttled"), outcome.summary
    assert "ErrorExceededConnectionCount" in outcome.summary and outcome.retry_after_s == 30
    assert outcome.backoff_target == mailbox_target("ews", mailbox_of(w))
    assert_no_permission_advice(w, outcome)
    w.ctl.patch_mailbox(mailbox_of(w), load={})
    w.open()  # a new runner: no wait left from the reply above
    assert w.run("ews").status == Status.OK


def test_ews_503_during_an_exchange_incident_is_service_unavailable(world, sandbox):
    """An Exchange Online incident: HTTP 503 with an empty body and Retry-After, no SOAP reply to read (M365_FACTS.md
    "Throttling and transient replies"; Graph's side of such an incident is captured in
    https://github.com/microsoftgraph/microsoft-graph-docs/issues/5288)."""
    w = ews_world(world)
    incident = sandbox.control.open_incident("exchange", retry_after=30)
    try:
        outcome = w.run("ews")
    finally:
        sandbox.control.close_incident(incident)
    assert (outcome.status, outcome.code) == (Status.ERROR, "service_unavailable"), outcome.summary
    assert "HTTP 503" in outcome.summary and outcome.retry_after_s == 30
    assert outcome.backoff_target == mailbox_target("ews", mailbox_of(w))
    fix = assert_no_permission_advice(w, outcome)
    assert "Service health" in fix and "EWSEnabled" not in fix


# --- Graph mail throttled or unavailable -------------------------------------------------------------------------


def test_graph_mailbox_concurrency_is_throttled_not_a_permission(world):
    """429 ApplicationThrottled "Application is over its MailboxConcurrency limit." (at most 4 concurrent requests
    per app and mailbox; https://github.com/magodo/terraform-provider-outlook/issues/21), with "retry-after":"1" as
    in https://github.com/microsoftgraph/msgraph-sdk-javascript/issues/297."""
    w = graph_world(world, box={"load": {"graph": 4}})
    outcome = w.run("graph_mail")
    assert (outcome.status, outcome.code) == (Status.WARN, "throttled"), outcome.summary
    assert "MailboxConcurrency" in outcome.summary and outcome.metrics["graph_code"] == "ApplicationThrottled"
    assert outcome.retry_after_s == 1
    assert outcome.backoff_target == mailbox_target("graph", mailbox_of(w), w.app_id)
    assert_no_permission_advice(w, outcome)


def test_graph_budget_spent_is_throttled_with_its_wait(world):
    """429 ApplicationThrottled once the app's requests on the mailbox pass Graph's budget (10,000 per 10 minutes per
    app and mailbox, M365_FACTS.md), Retry-After in seconds (https://github.com/microsoftgraph/msgraph-sdk-javascript/
    issues/297; the sibling message "Application is over its IncomingBytes limit." in
    https://github.com/O365/python-o365/issues/500)."""
    w = graph_world(world, box={"budget": {"limit": 2, "window_s": 120}})
    w.ctl.use_budget(mailbox_of(w), w.app_id, 2)
    outcome = w.run("graph_mail")
    assert (outcome.status, outcome.code) == (Status.WARN, "throttled"), outcome.summary
    assert 100 < outcome.retry_after_s <= 121, outcome.retry_after_s
    assert outcome.backoff_target == mailbox_target("graph", mailbox_of(w), w.app_id)
    assert_no_permission_advice(w, outcome)


def test_graph_503_is_service_unavailable(world, sandbox):
    """503 UnknownError with an empty message during an Exchange incident
    (https://github.com/microsoftgraph/microsoft-graph-docs/issues/5288), with Retry-After."""
    w = graph_world(world)
    incident = sandbox.control.open_incident("exchange", retry_after=30)
    try:
        outcome = w.run("graph_mail")
    finally:
        sandbox.control.close_incident(incident)
    assert (outcome.status, outcome.code) == (Status.ERROR, "service_unavailable"), outcome.summary
    assert outcome.metrics["http_status"] == 503 and outcome.retry_after_s == 30
    fix = assert_no_permission_advice(w, outcome)
    assert "Service health" in fix


# --- the monitor app's read of the app's credentials (secret_expiry) ---------------------------------------------


def test_credential_read_throttled_is_not_graph_unreadable(world):
    """Graph throttles the monitor app's directory read: 429 TooManyRequests with Retry-After
    (https://github.com/jsa2/AADAppAudit/issues/9). The monitor app's access is not in question."""
    w = world("app")
    w.ctl.add_fault("/v1.0/applications", status=429, count=1, retry_after=42)
    try:
        outcome = w.run("secret_expiry")
    finally:
        w.ctl.clear_faults()
    assert (outcome.status, outcome.code, outcome.retry_after_s) == (Status.WARN, "throttled", 42), outcome.summary
    assert outcome.backoff_target == token_target(w.tenant_id, w.monitor_app_id)
    assert "Application.Read.All" not in outcome.summary
    assert_no_permission_advice(w, outcome)


def test_credential_read_unavailable_is_not_graph_unreadable(world):
    """Graph answers the monitor app's read with a 503 (https://github.com/microsoftgraph/microsoft-graph-docs/issues/
    5288); with secret_expires_on configured, the config date stands in and the result says why."""
    w = world("app")
    w.ctl.add_fault("/v1.0/applications", status=503, count=1, retry_after=30)
    try:
        outcome = w.run("secret_expiry")
    finally:
        w.ctl.clear_faults()
    assert (outcome.status, outcome.code) == (Status.ERROR, "service_unavailable"), outcome.summary
    assert outcome.retry_after_s == 30 and "503" in outcome.summary
    assert_no_permission_advice(w, outcome)
    w = world("app", secret_expires_on="2099-01-01")
    w.ctl.add_fault("/v1.0/applications", status=503, count=1, retry_after=30)
    try:
        outcome = w.run("secret_expiry")
    finally:
        w.ctl.clear_faults()
    assert outcome.status == Status.OK and outcome.metrics["source"] == "config"
    assert outcome.metrics["graph_error"] == "service_unavailable"


@pytest.mark.parametrize(("effect", "source"), [
    # a 503 with AADSTS90033 "A transient error has occurred" (https://github.com/Azure/azure-sdk-for-python/
    # issues/14241)
    ("busy", "azure-sdk-for-python#14241"),
    # the same incident as a page that is not JSON: MSAL raises, the HTTP status decides (M365_FACTS.md)
    ("html", "M365_FACTS.md"),
])
def test_monitor_token_unavailable_is_service_unavailable(world, sandbox, effect, source):
    """The monitor app's token request during an Entra ID incident: 503 with AADSTS90033
    (https://github.com/Azure/azure-sdk-for-python/issues/14241) or a body that is not JSON."""
    w = world("app")
    w.open()
    incident = sandbox.control.open_incident("entra", effect=effect, retry_after=30)
    try:
        outcome = w.run("secret_expiry")
    finally:
        sandbox.control.close_incident(incident)
    assert (outcome.status, outcome.code) == (Status.ERROR, "service_unavailable"), (source, outcome.summary)
    assert_no_permission_advice(w, outcome)


def test_monitor_token_throttled_is_throttled(world):
    """The token endpoint throttles the monitor app: HTTP 429 with the plain-text body "Too Many Requests" and
    Retry-After (https://github.com/AzureAD/microsoft-authentication-library-for-dotnet/issues/2855)."""
    w = world("app")
    w.ctl.set_tenant(w.tenant_id, token_requests_per_app_minute=0)
    outcome = w.run("secret_expiry")
    assert (outcome.status, outcome.code) == (Status.WARN, "throttled"), outcome.summary
    assert outcome.retry_after_s and outcome.backoff_target == token_target(w.tenant_id, w.monitor_app_id)
    assert_no_permission_advice(w, outcome)


def test_unreachable_login_host_is_idp_unreachable(world):
    """The monitor app cannot reach the sign-in host at all (no reply to cite: the connection is refused). That is
    idp_unreachable, not the monitor app's access."""
    w = world("app")
    w.rewrite(lambda d: d["endpoints"].update(authority="https://127.0.0.1:9"))
    outcome = w.run("secret_expiry")
    assert (outcome.status, outcome.code) == (Status.ERROR, "idp_unreachable"), outcome.summary
    assert_no_permission_advice(w, outcome)


def test_graph_denied_is_still_graph_unreadable(world):
    """The monitor app without Application.Read.All: Graph's 403 Authorization_RequestDenied (M365_FACTS.md,
    "Graph errors"). This one, and only this kind, is graph_unreadable."""
    w = world("app", monitor_roles=[])
    outcome = w.run("secret_expiry")
    assert (outcome.status, outcome.code) == (Status.ERROR, "graph_unreadable"), outcome.summary
    assert "Application.Read.All" in fix_of(w, outcome)


def test_graph_and_ews_checks_keep_their_connection_and_survive_the_server_dropping_it(world, sandbox, monkeypatch):
    """The Graph and EWS checks of one event loop share kept-alive connections (checks.graph_client.SharedHttp): a
    second check opens no new TLS connection. Exchange Online closes idle connections after a while; the sandbox
    dropping every connection between two checks must not fail the next one (a false alert): it connects again."""
    import asyncio
    import ssl

    client_tls: list[str] = []
    wrap_bio = ssl.SSLContext.wrap_bio

    def counting(self, incoming, outgoing, server_side=False, server_hostname=None, session=None):
        if not server_side:  # the sandbox's own side of each connection runs in this process too
            client_tls.append(server_hostname or "")
        return wrap_bio(self, incoming, outgoing, server_side, server_hostname, session)

    def build(ids):
        return {"ews_enabled": True, "mailboxes": [{"address": f"box@{ids['domain']}", "type": "shared"}]}

    w = world("app", app_permissions={"graph": ["Mail.ReadWrite"], "exchange": ["full_access_as_app"]},
              exchange=build, checks={"token": {}, "graph_mail": {}, "ews": {}})
    runner = w.open().runner

    async def go() -> list[tuple[str, Status, int]]:
        seen = []
        assert (await runner.run_one("subject", "token")).outcome.status == Status.OK
        monkeypatch.setattr(ssl.SSLContext, "wrap_bio", counting)
        for step in ("first", "second", "dropped"):
            if step == "dropped":
                server = sandbox._server  # noqa: SLF001 - the sandbox's uvicorn, in a thread of this process
                server.loop.call_soon_threadsafe(server.drop_connections)
                await asyncio.sleep(0.3)
            for kind in ("graph_mail", "ews"):
                seen.append((f"{step} {kind}", (await runner.run_one("subject", kind)).outcome.status,
                             len(client_tls)))
        return seen

    seen = asyncio.run(go())
    assert [s[1] for s in seen] == [Status.OK] * 6, seen
    # one connection per client (Graph's, and EWS's with its TLS 1.2 context) for the first two checks each, then
    # one each again after the drop
    assert [s[2] for s in seen] == [1, 2, 2, 2, 3, 4], seen


def test_the_graph_check_expands_its_request_url_once(world, monkeypatch):
    """kiota expands a request's URL template each time its URL is read (three times per request: a quarter of a
    graph_mail check's CPU, bench/): the check expands it once and sends that URL, which the sandbox answers as
    Graph does (the inbox counts, $select kept)."""
    import asyncio

    from stduritemplate import StdUriTemplate

    expanded: list[str] = []
    real = StdUriTemplate.expand

    def counting(template, substitutions):
        url = real(template, substitutions)
        expanded.append(url)
        return url

    w = graph_world(world)
    runner = w.open().runner

    async def go():
        assert (await runner.run_one("subject", "token")).outcome.status == Status.OK
        monkeypatch.setattr(StdUriTemplate, "expand", staticmethod(counting))
        return await runner.run_one("subject", "graph_mail")

    result = asyncio.run(go())
    assert result.outcome.status == Status.OK, result.outcome.summary
    assert isinstance(result.outcome.metrics["message_count"], int)
    assert len(expanded) == 1, expanded
    assert "/mailFolders/inbox?%24select=id,totalItemCount,unreadItemCount" in expanded[0], expanded
