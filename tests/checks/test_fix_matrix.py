"""The fix-step matrix: every diagnosis code x flow x (account is the mailbox or not) x check kind that can return it
x each consuming system of /work/shared/seeds (+ one unknown), rendered as users read it: the alert body through
alerts.messages (as the dispatcher renders it) and the dashboard's fix (monitor.web.views.result_json: render_fix
with the result's facts, the path of `mailwarden check --format json` too).

Each test is one class of wrong text, asserted over the whole matrix, with its own oracle (the seeds, Microsoft's
pages as quoted in M365_FACTS.md), never the catalog's own tables:
- nothing left unfilled (a ``<placeholder>``, a ``{name}``) or mangled by redaction (``code=[redacted]``);
- no other system's words (its menu paths and field names) in a system's alert, none of the five for an unknown one;
- no step the result's own facts contradict (FullAccess on one's own mailbox, a permission the token check found in
  the token, Application.Read.All when the monitor app got no token at all, a step labelled for the other flow);
- the right API (Microsoft Graph or Office 365 Exchange Online) and type (Application or Delegated) of a permission;
- never a weaker permission than the one needed (no Mail.ReadBasic.All when Mail.ReadWrite is needed).
"""

from __future__ import annotations

import itertools
import re
from datetime import UTC, datetime
from functools import cache
from types import SimpleNamespace

from mailwarden.alerts import messages
from mailwarden.alerts.policy import Notice
from mailwarden.alerts.records import Incident
from mailwarden.checks import diagnoses
from mailwarden.checks.smtp import login_identity
from mailwarden.monitor.config import Config
from mailwarden.monitor.web.views import result_json

NOW = datetime(2026, 12, 2, 9, 0, tzinfo=UTC)
TENANT_ID = "11111111-2222-3333-4444-555555555555"
HOME_TENANT_ID = "99999999-8888-7777-6666-555555555555"  # a multitenant app's own tenant
CLIENT_ID = "66666666-7777-8888-9999-000000000000"
MONITOR_ID = "12121212-3434-5656-7878-909090909090"
SHARED, ACCOUNT, FROM = "support@contoso.com", "svc-mail@contoso.com", "notices@contoso.com"

# Each system's own screens and fields, from its guide in /work/shared/seeds: only its own alerts may name them.
SYSTEM_WORDS = {
    "House-on-the-Hill helpdesk": ("House-on-the-Hill", "HotH", "OAuth Scripts", "oauth:", "More Tools",
                                   "Outbound Email Settings", "Email Settings"),
    "Oracle B2C Service": ("Oracle", "CUSTOM_CFG_", "mailbox editor", "Pop Account", "'Authenticated'"),
    "Sinch Contact Center": ("Sinch", "System Configurator", "queue"),
    "Agiloft": ("Agiloft", "Configure Inbound Email", "Email and SMS", "Additional Users"),
    "enaio": ("enaio", "OfficeClientSecret", "OfficeTenantID", "OfficeClientID", "osweb-prod.yml", "SMTPUserName",
              "MailSender", "enterprise-manager", "featureSwitches"),
    "Acme Ticketing": (),  # a system mailwarden knows nothing about: neutral steps only
}

# The mailbox check each system's guide implies: an integration whose token or secret_expiry check fails has it too.
NATURAL = {"House-on-the-Hill helpdesk": "pop", "Oracle B2C Service": "pop", "Sinch Contact Center": "graph_mail",
           "Agiloft": "ews", "enaio": "smtp", "Acme Ticketing": "imap"}

# Which check kinds can return each code (read from the check modules), and the codes only a delegated sign-in has.
TOKEN_USERS = ("token", "imap", "pop", "smtp", "graph_mail", "ews")
MAILBOX = ("imap", "pop", "smtp", "graph_mail", "ews")
ALL = ("token", "secret_expiry", *MAILBOX, "consumer")
KINDS = {
    "secret_expired": (*TOKEN_USERS, "secret_expiry"), "certificate_invalid": (*TOKEN_USERS, "secret_expiry"),
    "app_not_found": (*TOKEN_USERS, "secret_expiry"),
    "app_not_in_tenant": TOKEN_USERS,  # the integration's token in another tenant; credentials are read at home
    "secret_expiring": ("secret_expiry",), "certificate_expiring": ("secret_expiry",),
    "credential_not_found": ("secret_expiry",), "graph_unreadable": ("secret_expiry",),
    "redirect_uri_mismatch": ("token",),
    "auth_failed": MAILBOX, "authenticated_not_connected": ("imap", "pop"), "smtp_auth_disabled": ("smtp",),
    "smtp_auth_disabled_mailbox": ("smtp",), "send_as_denied": ("smtp",), "sending_quota_exceeded": ("smtp",),
    "outbound_blocked": ("smtp",), "smtp_basic_auth_retired": ("smtp",), "token_too_long": ("pop",),
    "access_policy_denied": ("graph_mail",), "permission_missing": ("graph_mail", "ews"),
    "mailbox_not_found": ("graph_mail", "ews"), "ews_forbidden": ("ews",), "ews_disabled": ("ews",),
    "ews_retiring": ("ews",), "inbox_backlog": ("imap", "pop", "graph_mail", "ews"), "blocked_by_token": MAILBOX,
    "consumer_not_collecting": ("imap", "pop", "graph_mail", "ews"),
    "canary_not_delivered": ("imap", "graph_mail"),
    "consumer_signin_failed": ("consumer",), "consumer_silent": ("consumer",), "consumer_unknown": ("consumer",),
    "unexpected_reply": MAILBOX, "reply_too_large": ("graph_mail", "ews"),
    **{c: TOKEN_USERS for c in (
        "secret_invalid", "app_disabled", "tenant_not_found", "refresh_token_revoked", "refresh_token_expired",
        "refresh_token_invalid", "public_client_token", "no_refresh_token", "wrong_account", "consent_missing",
        "resource_not_found", "user_not_assigned", "user_disabled", "user_locked", "password_expired",
        "mfa_required", "conditional_access_blocked", "security_defaults_blocked", "signin_frequency",
        "secret_replicating")},
}
DELEGATED_ONLY = {"refresh_token_revoked", "refresh_token_expired", "refresh_token_invalid", "public_client_token",
                  "no_refresh_token", "wrong_account", "user_not_assigned", "user_disabled", "user_locked",
                  "password_expired", "mfa_required", "security_defaults_blocked", "signin_frequency",
                  "redirect_uri_mismatch"}
# Where an admin adds each check's permission (M365_FACTS.md "Scopes"; Microsoft's IMAP/POP/SMTP and EWS OAuth
# pages: the delegated protocol scopes are listed under Microsoft Graph, the app roles under Office 365 Exchange
# Online): (API, permission the consuming system needs). Graph consumers (Sinch) read and write.
NEEDED = {
    ("app", "imap"): ("Office 365 Exchange Online", "IMAP.AccessAsApp"),
    ("app", "pop"): ("Office 365 Exchange Online", "POP.AccessAsApp"),
    ("app", "smtp"): ("Office 365 Exchange Online", "SMTP.SendAsApp"),
    ("app", "ews"): ("Office 365 Exchange Online", "full_access_as_app"),
    ("app", "graph_mail"): ("Microsoft Graph", "Mail.ReadWrite"),
    ("delegated", "imap"): ("Microsoft Graph", "IMAP.AccessAsUser.All"),
    ("delegated", "pop"): ("Microsoft Graph", "POP.AccessAsUser.All"),
    ("delegated", "smtp"): ("Microsoft Graph", "SMTP.Send"),
    ("delegated", "ews"): ("Microsoft Graph", "EWS.AccessAsUser.All"),
    ("delegated", "graph_mail"): ("Microsoft Graph", "Mail.ReadWrite.Shared"),
}
# Graph mail permissions weaker than what each flow's consumer needs (read-only, or without other users' mailboxes)
WEAKER = {"app": ("Mail.Read", "Mail.ReadBasic", "Mail.ReadBasic.All"),
          "delegated": ("Mail.Read", "Mail.Read.Shared", "Mail.ReadBasic")}
# graph_unreadable: what secret_expiry records when Graph cannot be read (monitor.credentials' reasons)
GRAPH_UNREADABLE = {
    "monitor_token": "Graph could not be read (the monitor app mailwarden got no Graph token (AADSTS7000222: "
                     "secret_expired)), and no secret_expires_on is configured: expiry unknown",
    "forbidden": "Graph could not be read (Graph answered 403 Authorization_RequestDenied: Insufficient privileges "
                 "to complete the operation (monitor app mailwarden needs Application.Read.All)), and no "
                 "secret_expires_on is configured: expiry unknown",
    "no_monitor_app": "Graph could not be read (tenant contoso names no monitor_app to read Graph with), and no "
                      "secret_expires_on is configured: expiry unknown",
}
WARN_CODES = {"secret_expiring", "certificate_expiring", "throttled", "inbox_backlog", "secret_replicating",
              "ews_retiring"}
ERROR_CODES = {"idp_unreachable", "dns_error", "connection_refused", "tls_error", "timeout", "service_unavailable",
               "config_error", "reply_too_large", "graph_unreadable"}


def _variants(code: str) -> list[tuple[str, str, str, bool, str | None, str]]:
    """(flow, own, kind, token check on, canary From, graph_unreadable reason) of one code."""
    out = []
    for flow in ("app", "delegated"):
        if flow == "app" and code in DELEGATED_ONLY:
            continue
        for own, kind in itertools.product(("none",) if flow == "app" else ("own", "shared"),
                                           KINDS.get(code, ALL)):
            tokens = (True, False) if kind in MAILBOX and KINDS.get(code) is not None and \
                set(KINDS[code]) <= set(MAILBOX) else (True,)
            froms = (FROM, None) if kind == "smtp" else (None,)
            reasons = tuple(GRAPH_UNREADABLE) if code == "graph_unreadable" else ("",)
            for token, sender, reason in itertools.product(tokens, froms, reasons):
                out.append((flow, own, kind, token, sender, reason))
    return out


CASES = [(code, system, *v) for code in sorted(diagnoses.CATALOG) for v in _variants(code) for system in SYSTEM_WORDS]


@cache
def config(system: str, flow: str, own: str, kind: str, token: bool, sender: str | None, monitor: bool,
           foreign: bool = False) -> Config:
    """``foreign``: the app is a multitenant registration of another tenant, used in this one."""
    checks: dict[str, dict] = {"token": {}} if token else {}
    for k in (kind,) if kind in MAILBOX else (kind, NATURAL[system]):
        checks[k] = {"canary_to": "canary@contoso.com", **({"canary_from": sender} if sender else {})} \
            if k == "smtp" else {}
    checks.setdefault("secret_expiry", {})
    integration = {"name": "subject", "app": "app", "flow": flow, "system": system, "checks": checks,
                   "mailbox": ACCOUNT if own == "own" else SHARED}
    if flow == "delegated":
        integration["account"] = ACCOUNT
    tenants = {"contoso": {"tenant_id": TENANT_ID, **({"monitor_app": "mailwarden"} if monitor else {})}}
    if foreign:
        tenants["vendor"] = {"tenant_id": HOME_TENANT_ID}
        integration["tenant"] = "contoso"
    return Config.model_validate({
        "database": "sqlite:///:memory:", "web": {"base_url": "https://mailwarden.contoso.com"},
        "tenants": tenants,
        "apps": {"app": {"tenant": "vendor" if foreign else "contoso", "client_id": CLIENT_ID,
                         "secret": "env:APP_SECRET", "display_name": "Mail connector"},
                 "mailwarden": {"tenant": "contoso", "client_id": MONITOR_ID, "secret": "env:MONITOR_SECRET"}},
        "integrations": [integration]})


def result(cfg: Config, code: str, kind: str, reason: str) -> tuple[str, str, dict]:
    """(status, summary, details) as the check of ``kind`` records a result with ``code``."""
    from mailwarden.checks import permissions

    integ = cfg.integrations[0]
    status = "warn" if code in WARN_CODES else "error" if code in ERROR_CODES else "fail"
    summary, details = f"{kind} check: {code}", {}
    if kind in ("imap", "pop", "smtp", "graph_mail", "ews"):
        details["phases_ms"] = {"connect": 3.0, "tls": 5.0, "auth": 20.0}
    if kind == "smtp":
        details["login_as"] = login_identity(integ.flow, integ.mailbox, integ.account)
    if kind == "graph_mail":
        details.update(http_status=403, graph_code="ErrorAccessDenied")
    if kind == "ews":
        details.update(http_status=403, notice="EWS in Exchange Online is being retired")
    if code == "consent_missing" and kind == "token":  # what the token check records (checks.token)
        need = next(n for n in permissions.needs(integ.flow, list(integ.checks)))
        summary = f"the token lacks {need.label}, needed by the {need.why} check"
        details.update(tokens={}, permission=need.label, needed_by=need.why)
    if code == "auth_failed" and kind in ("imap", "pop", "smtp"):  # checks.mailbox.login_refused
        need = permissions.needs(integ.flow, [kind])[0]
        summary = (f"{kind.upper()} login as {details.get('login_as', integ.mailbox)} refused: NO AUTHENTICATE "
                   f"failed. (likely: the token lacks {need.label}, or {kind.upper()} is disabled for the mailbox)")
    if code == "ews_retiring":
        details.update(http_status=200, retires_on="2027-04-01", days_left=120, days_words="120 days left")
    if code in ("secret_expiring", "certificate_expiring"):
        details.update(source="graph", days_left=10, expires_at="2026-12-12T00:00:00+00:00")
    if code == "graph_unreadable":
        summary, details = GRAPH_UNREADABLE[reason], {"source": None}
    return status, summary, details


@cache
def rendered(code: str, system: str, flow: str, own: str, kind: str, token: bool, sender: str | None,
             reason: str) -> SimpleNamespace:
    """The alert (text and markdown) and the dashboard's fix of one case."""
    cfg = config(system, flow, own, kind, token, sender, reason != "no_monitor_app", code == "app_not_in_tenant")
    integ = cfg.integrations[0]
    status, summary, details = result(cfg, code, kind, reason)
    row = SimpleNamespace(id=1, integration=integ.name, check=kind, status=status, code=code, summary=summary,
                          latency_ms=12.0, details=details, checked_at=NOW)
    dashboard = result_json(cfg, row)["fix"]
    inc = Incident(id=7, key=f"int:{integ.name}:{code}", kind="single", code=code, members=[
        {"integration": integ.name, "check": kind, "status": status, "code": code, "since": NOW.isoformat()}],
        affected=[integ.name], opened_at=NOW, status="open")
    ctx = messages.Context(cfg, {(integ.name, kind): messages.CheckFacts(summary, None, details)})
    alert = messages.render(Notice("opened", inc, 1), ctx)
    return SimpleNamespace(cfg=cfg, integ=integ, dashboard=dashboard, alert=alert,
                           alert_steps=_steps_of(alert.text), cause=_line(alert.text, "Cause: "))


def _steps_of(text: str) -> list[str]:
    """The numbered steps under "How to fix:" in a plain-text alert."""
    lines = text.splitlines()
    if "How to fix:" not in lines:
        return []
    out = []
    for line in lines[lines.index("How to fix:") + 1:]:
        found = re.match(r"\d+\. (.*)", line)
        if not found:
            break
        out.append(found.group(1))
    return out


def _line(text: str, prefix: str) -> str:
    return next((line[len(prefix):] for line in text.splitlines() if line.startswith(prefix)), "")


def _fixes(case: SimpleNamespace) -> list[tuple[str, str]]:
    """(where, step) of every fix step a user reads for the case, and the cause."""
    return ([("dashboard", s) for s in case.dashboard] + [("alert", s) for s in case.alert_steps]
            + [("cause", case.cause)])


def _check(predicate) -> None:
    """Run ``predicate(code, system, flow, own, kind, token, sender, reason, case)`` over the matrix; it returns the
    problems of one case; the test fails listing the first of them and how many cases have any."""
    problems = []
    for code, system, *rest in CASES:
        case = rendered(code, system, *rest)
        for problem in predicate(code, system, *rest, case):
            problems.append(f"{code} / {system} / {rest}: {problem}")
    assert not problems, f"{len(problems)} problem(s), e.g.:\n" + "\n".join(problems[:8])


def test_the_matrix_covers_every_code_flow_mailbox_kind_and_system():
    codes = {c[0] for c in CASES}
    assert codes == set(diagnoses.CATALOG)
    assert {(c[2], c[3]) for c in CASES} == {("app", "none"), ("delegated", "own"), ("delegated", "shared")}
    assert {c[1] for c in CASES} == set(SYSTEM_WORDS)
    assert len(CASES) > 3000, len(CASES)


def test_the_catalog_knows_which_checks_return_each_code():
    """The catalog narrows a result whose check is not known to the checks that can have returned its code."""
    assert {code: set(diagnoses.kinds_of(code)) for code in diagnoses.CATALOG} == \
        {code: set(KINDS.get(code, ALL)) for code in diagnoses.CATALOG}


UNFILLED = re.compile(r"<(?!https?:)[^<>@\s][^<>@]*>|\{[a-z_]+\}")


def test_nothing_is_left_unfilled_or_mangled():
    """A fix names what it acts on: no ``<signing-in account>`` in an app-only runbook, no ``-ObjectId <enterprise
    app Object ID>``, no ``<tenant>``, and no URL whose query the redaction of authorisation codes eats."""
    def problems(code, system, flow, own, kind, token, sender, reason, case):
        for where, text in [*_fixes(case), ("alert title", case.alert.title), ("alert", case.alert.text),
                            ("alert markdown", case.alert.markdown)]:
            found = UNFILLED.search(text)
            if found:
                yield f"{where}: unfilled {found.group(0)!r} in {text[:160]!r}"
            if "[redacted]" in text:
                yield f"{where}: redacted text in {text[:160]!r}"
    _check(problems)


def test_no_other_systems_words():
    """A system's alert names its own screens only; an unknown system gets none of the five's."""
    def problems(code, system, flow, own, kind, token, sender, reason, case):
        texts = [case.alert.title, case.alert.text, *case.dashboard]
        for other, words in SYSTEM_WORDS.items():
            if other == system:
                continue
            for word in words:
                if word not in system and any(word in t for t in texts):
                    yield f"{other}'s {word!r}"
    _check(problems)


def test_no_step_contradicts_the_results_own_facts():
    def problems(code, system, flow, own, kind, token, sender, reason, case):
        integ = case.integ
        for where, step in _fixes(case):
            for identity, user in re.findall(r"Add-MailboxPermission -Identity (\S+) -User (\S+)", step):
                if identity.lower() == user.lower():
                    yield f"{where}: FullAccess on its own mailbox: {step[:140]!r}"
                if flow == "delegated" and kind == "smtp" and user == integ.account:
                    yield f"{where}: SMTP signs in as the delegate itself, FullAccess is not it: {step[:140]!r}"
            if own == "own" and "FullAccess" in step and integ.account in step and "-User $" not in step:
                yield f"{where}: FullAccess for {integ.account} on its own mailbox: {step[:140]!r}"
            if token and kind in MAILBOX and set(KINDS.get(code, ())) <= set(MAILBOX) and code != "consent_missing":
                needed = NEEDED[(flow, kind)][1]
                asks = any(w in step for w in ("roles/scp", "Check the token", "must carry", "lacks", "add " + needed,
                                               "> " + needed))
                if needed in step and asks and f"found {needed} in the token" not in step:
                    yield f"{where}: blames {needed}, which the token check found in the token: {step[:140]!r}"
            other = "Delegated:" if flow == "app" else "App-only:"
            if step.startswith(other):
                yield f"{where}: a step for the other flow: {step[:100]!r}"
            if flow == "app" and code == "send_as_denied" and "-Trustee" in step:
                if f"-Identity {sender or integ.mailbox}" not in step or "-Trustee $objectId" not in step:
                    yield f"{where}: Send As must be on the From address for the app's service principal: {step!r}"
            if code == "graph_unreadable" and reason == "monitor_token" and "Application.Read.All" in step:
                yield f"{where}: the monitor app got no token, its permissions never came into play: {step[:120]!r}"
    _check(problems)


def test_the_permission_to_add_has_the_right_api_and_type():
    """consent_missing: the permission, under its API (Microsoft Graph or APIs my organization uses > Office 365
    Exchange Online) and type (Application permissions for app-only, Delegated for a signed-in user); and no
    runbook of an integration names the other flow's permission type (the monitor app's own is application)."""
    def problems(code, system, flow, own, kind, token, sender, reason, case):
        kind_words = "Application permissions" if flow == "app" else "Delegated permissions"
        other_words = "Delegated permissions" if flow == "app" else "Application permissions"
        for where, step in _fixes(case):
            if other_words in step and code != "graph_unreadable" and "sendMail" not in step:
                yield f"{where}: {other_words} for a {flow} integration: {step[:140]!r}"
        if code != "consent_missing" or kind == "secret_expiry":
            return
        api, needed = NEEDED[(flow, kind)] if kind in MAILBOX else \
            next(NEEDED[(flow, k)] for k in case.integ.checks if k in MAILBOX)
        where_api = "Microsoft Graph" if api == "Microsoft Graph" else "APIs my organization uses > " + api
        path = f"{where_api} > {kind_words} > {needed}"
        for where, steps in (("dashboard", case.dashboard), ("alert", case.alert_steps)):
            text = " ".join(steps)
            if path not in text:
                yield f"{where}: {path!r} missing from {text[:300]!r}"
            wrong_api = "Office 365 Exchange Online" if api == "Microsoft Graph" else "Microsoft Graph"
            if wrong_api in text:
                yield f"{where}: {wrong_api} named for {needed}: {text[:300]!r}"
    _check(problems)


def test_never_a_weaker_permission_than_the_one_needed():
    """A Graph consumer (Sinch) needs Mail.ReadWrite: offering Mail.ReadBasic.All (or Mail.Read) would turn
    mailwarden green while the consuming system still cannot work."""
    def problems(code, system, flow, own, kind, token, sender, reason, case):
        for where, step in _fixes(case):
            for weaker in WEAKER[flow]:
                if re.search(re.escape(weaker) + r"(?![\w.])", step):
                    yield f"{where}: offers {weaker}: {step[:160]!r}"
    _check(problems)
