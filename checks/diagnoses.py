"""The diagnosis catalog: every failure a check can name, what it means and how to fix it.

Data, not code paths: a check returns a code, and the alerts, the report and ``mailwarden check --format
json`` look the code up here. Codes are stable: add new ones, never rename one.

Templates (``cause`` and ``fix``) use ``str.format`` names from one fixed set (``PLACEHOLDERS``);
``render_cause`` / ``render_fix`` fill missing facts with defaults, so their output never holds a
literal ``{...}`` and they never raise. No template takes a secret value: facts are names, ids,
addresses and dates only.

Steps are chosen by the facts of the result (``Step``): the flow (app-only or delegated), whether the signing-in
account is the mailbox itself, the check that failed, whether the integration's token check verified the
permission, who sends as whom, the consuming system. A step whose fact is unknown (a caller that passed no flow)
is kept with a label naming what it is for ("App-only: ..."); a step whose fact contradicts it is left out. A
system's own screens and fields (``SYSTEMS``, from the guides in /work/shared/seeds) appear only for that system;
any other system gets a neutral step.

Flags:
- ``needs_reauth``: a person must sign in again as the configured account (mailwarden's own token and,
  separately, the consuming system's).
- ``needs_rotation``: a new client secret or certificate is the fix.
- ``needs_admin``: an Entra or Exchange admin must change a directory, policy, consent or mailbox
  setting. Creating a new secret on the app is covered by ``needs_rotation`` (an app owner can do it).

Decisions:
- SMTP AUTH disabled is two codes, because the two replies need different fixes:
  ``smtp_auth_disabled`` is the tenant-wide switch (``... disabled for the Tenant``) and the generic
  fallback when the reply names neither; ``smtp_auth_disabled_mailbox`` is the per-mailbox switch
  (``... disabled for the Mailbox``).
- ``secret_invalid`` is a configuration fix (paste the Value, not the Secret ID), so it does not set
  ``needs_rotation``; its steps fall back to a new secret when nobody has the Value any more.
- ``user_disabled`` / ``user_locked`` / ``password_expired`` set ``needs_reauth`` (DESIGN.md: "admin,
  then reauth"). ``conditional_access_blocked`` and ``user_not_assigned`` do not: once the policy or
  the assignment is fixed the existing refresh token works again.
- A code whose fix signs the consuming system in again (``SYSTEM_SIGN_IN`` steps) leaves that step to do when
  mailwarden's own token recovers: ``after_recovery`` gives it to the recovery notice.
- ``ews_retiring`` (warn) is EWS answering in Exchange Online within 180 days of its shutdown on 1 April 2027, or
  after it: the date alone never makes a failure; a refusal is ``ews_forbidden`` / ``ews_disabled``.
- The consuming system's own sign-ins (``checks.consumer``, issue 16): ``consumer_signin_failed`` takes its cause
  and steps from the AADSTS code that system got (situation ``consumer``: ``AADSTS_CODES``' diagnosis of it, read
  from the result's summary or a ``consumer_aadsts`` fact), and acts where that system signs in or keeps its secret
  (``SYSTEMS``) or in Entra ID, never on mailwarden's own token: it sets no flag (``needs_reauth`` would open a
  reauthorisation of mailwarden's token, which may be fine). ``consumer_silent``: the system stopped signing in.
  ``consumer_unknown`` (info, a ``warn`` result that opens no incident): its sign-ins cannot be read; the steps
  follow why (situation ``signin_state``: the window's state as the summary names it).
- Extra codes beyond DESIGN.md's table: ``smtp_auth_disabled_mailbox``, ``config_error``,
  ``graph_unreadable``, ``no_refresh_token``, ``certificate_expiring``, ``credential_not_found``,
  ``wrong_account`` (a delegated sign-in by another account than the configured one), ``reply_too_large``
  (an HTTP reply past ``checks.graph_client.MAX_REPLY_BYTES``), ``ews_retiring``.
- Mail-flow evidence (``checks.mailflow``, issue 16 item 2): ``inbox_backlog`` (warn) is mail older than the check's
  ``backlog_age``; past ``backlog_grace`` more it is ``consumer_not_collecting`` (critical: the consuming system's
  outage, an incident), whose steps act in that system, never on mailwarden's token (no flag). The canary: a
  reading check that does not find a canary within ``deliver_within`` is ``canary_not_delivered`` (critical); a canary
  left unread past ``collect_within`` is ``consumer_not_collecting`` too (same cause).
"""

from __future__ import annotations

import re
import string
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "AADSTS_CODES",
    "CATALOG",
    "PLACEHOLDERS",
    "PRODUCED_BY",
    "SYSTEMS",
    "Diagnosis",
    "Step",
    "after_recovery",
    "classify_aadsts",
    "consumer_aadsts",
    "consumer_cause",
    "get",
    "render_cause",
    "render_fix",
    "system_of",
]

SEVERITIES = ("critical", "warning", "info")
CATEGORIES = ("credential", "consent", "user", "mailbox", "network", "throttling", "consumer", "internal")


@dataclass(frozen=True)
class Diagnosis:
    code: str
    title: str
    cause: str
    fix: tuple[str, ...]
    needs_reauth: bool
    needs_rotation: bool
    needs_admin: bool
    severity: str
    category: str


class Step(str):
    """A fix step (its template text) that applies only where the result's facts match ``when``.

    ``when`` maps a situation key (see ``_situation``) to the values it accepts; ``tag`` names a step other code
    looks for (``SYSTEM_SIGN_IN``)."""

    when: tuple[tuple[str, frozenset[str]], ...]
    tag: str

    def __new__(cls, text: str, *, tag: str = "", **when: str | Iterable[str]) -> Step:
        step = super().__new__(cls, text)
        step.when = tuple((key, frozenset([value] if isinstance(value, str) else value)) for key, value in when.items())
        step.tag = tag
        return step

    def _again(self, text: str, when: Mapping[str, frozenset[str]]) -> Step:
        step = str.__new__(Step, text)
        step.when, step.tag = tuple(when.items()), self.tag
        return step

    def plus(self, text: str, *, before: bool = False) -> Step:
        """The same step with ``text`` added after it (or before it), under the same conditions."""
        return self._again(text + self if before else self + text, dict(self.when))

    def only(self, **when: str | Iterable[str]) -> Step:
        """The same step under narrower conditions (``when`` replaces the named ones)."""
        narrowed = dict(self.when)
        narrowed.update({k: frozenset([v] if isinstance(v, str) else v) for k, v in when.items()})
        return self._again(str(self), narrowed)


SYSTEM_SIGN_IN = "system_sign_in"  # Step.tag: the consuming system signs in again as the account

# ---------------------------------------------------------------------------------------------------
# The check kinds that can return each code (the others: every kind). Narrows the steps of a result whose check is
# not known to the integration's kinds that can have produced it, and drives the fix-step matrix test.

_TOKEN_USERS = ("token", "imap", "pop", "smtp", "graph_mail", "ews")  # every check that asks for the app's token
_MAILBOX = ("imap", "pop", "smtp", "graph_mail", "ews")
PRODUCED_BY: dict[str, tuple[str, ...]] = {
    **{code: _TOKEN_USERS for code in (
        "secret_invalid", "app_disabled", "tenant_not_found", "refresh_token_revoked", "refresh_token_expired",
        "refresh_token_invalid", "public_client_token", "no_refresh_token", "wrong_account", "consent_missing",
        "resource_not_found", "user_not_assigned", "user_disabled", "user_locked", "password_expired", "mfa_required",
        "conditional_access_blocked", "security_defaults_blocked", "signin_frequency", "secret_replicating")},
    "secret_expired": (*_TOKEN_USERS, "secret_expiry"),
    "certificate_invalid": (*_TOKEN_USERS, "secret_expiry"),
    "app_not_found": (*_TOKEN_USERS, "secret_expiry"),
    "app_not_in_tenant": _TOKEN_USERS,
    "secret_expiring": ("secret_expiry",),
    "certificate_expiring": ("secret_expiry",),
    "credential_not_found": ("secret_expiry",),
    "graph_unreadable": ("secret_expiry",),
    "redirect_uri_mismatch": ("token",),  # the reauthorisation's sign-in, recorded against the token check
    "auth_failed": _MAILBOX,
    "authenticated_not_connected": ("imap", "pop"),
    "smtp_auth_disabled": ("smtp",),
    "smtp_auth_disabled_mailbox": ("smtp",),
    "send_as_denied": ("smtp",),
    "sending_quota_exceeded": ("smtp",),
    "outbound_blocked": ("smtp",),
    "smtp_basic_auth_retired": ("smtp",),
    "token_too_long": ("pop",),
    "access_policy_denied": ("graph_mail",),
    "permission_missing": ("graph_mail", "ews"),
    "mailbox_not_found": ("graph_mail", "ews"),
    "ews_forbidden": ("ews",),
    "ews_disabled": ("ews",),
    "ews_retiring": ("ews",),
    "inbox_backlog": ("imap", "pop", "graph_mail", "ews"),
    "consumer_not_collecting": ("imap", "pop", "graph_mail", "ews"),
    "canary_not_delivered": ("imap", "graph_mail"),
    "blocked_by_token": _MAILBOX,
    "unexpected_reply": _MAILBOX,
    "reply_too_large": ("graph_mail", "ews"),
    "consumer_signin_failed": ("consumer",),
    "consumer_silent": ("consumer",),
    "consumer_unknown": ("consumer",),
}
ALL_KINDS = ("token", "secret_expiry", *_MAILBOX, "consumer")


def kinds_of(code: str | None) -> tuple[str, ...]:
    return PRODUCED_BY.get(code or "", ALL_KINDS)


# ---------------------------------------------------------------------------------------------------
# The consuming systems of /work/shared/seeds: their own screens and fields, said only to their own admins


@dataclass(frozen=True)
class System:
    key: str
    needles: tuple[str, ...]  # lower-case parts of a configured ``system`` name
    secret_field: str  # where it takes the client secret
    sign_in: str = ""  # how a person signs it in again as the account (delegated)
    ids: str = ""  # where it keeps the tenant and client ID
    mailbox_field: str = ""  # where it keeps the mailbox address
    sender: str = ""  # where its From address and SMTP login are set
    after_secret: str = ""  # what it needs after a new client secret besides the value (delegated)
    access_group: str = ""  # what its guide says about the access policy's group
    not_connected: str = ""  # what it shows while login works and mailbox access does not


_SYSTEM_LIST: tuple[System, ...] = (
    System(
        "hoth", ("house-on-the-hill", "hoth"),
        secret_field="Settings cog > More Tools > OAuth Scripts > the oauth: script > Client Secret",
        sign_in="In House-on-the-Hill, log in as a Supervisor in a private (InPrivate/Incognito) window, open "
                "Settings cog > More Tools > OAuth Scripts > the oauth: script > Auth, sign in as {account} and OK the "
                "script (if another Microsoft account is picked, log out of Microsoft 365 in that browser and click "
                "Auth again).",
        ids="In House-on-the-Hill, Settings cog > More Tools > OAuth Scripts > the oauth: script: correct the "
            "Application (client) ID and the OAuth 2.0 Auth and Token Endpoints (v2), which carry the tenant ID; "
            "then click Auth again.",
        mailbox_field="In House-on-the-Hill, Settings cog > Email Settings > Outbound Email Settings (or the folder's "
                      "email settings): the SMTP Account, and the From address of the email templates.",
        sender="In House-on-the-Hill, Settings cog > Email Settings > Outbound Email Settings > Modify: SMTP Account "
               "must be {login}, and the From address of the email templates {sender}."),
    System(
        "oracle", ("oracle",),
        secret_field="the CUSTOM_CFG_MAILBOX_OA_CLIENT_SECRET configuration",
        sign_in="In Oracle B2C Service, open the mailbox in the mailbox editor > Authenticate and sign in as "
                "{account} in the tab that opens (an Office 365 admin may be asked for first), then scroll down and "
                "click OK: without OK the authentication is not complete. The mailbox then shows a green "
                "'Authenticated'.",
        ids="In Oracle B2C Service, correct CUSTOM_CFG_MAILBOX_OA_TENANT and CUSTOM_CFG_MAILBOX_OA_CLIENT_ID, then "
            "authenticate each mailbox again (mailbox editor > Authenticate, then OK).",
        mailbox_field="In Oracle B2C Service's mailbox editor, the Pop Account on the incoming tab.",
        after_secret="Oracle B2C Service asks for it: after a new client secret, authenticate each mailbox again "
                     "(mailbox editor > Authenticate, sign in as {account}, then OK), so that it uses the new "
                     "secret.",
        not_connected="In Oracle B2C Service a green 'Authenticated' does not prove mailbox access (the mailbox then "
                      "reports a password error): after the fix, authenticate the mailbox again only if it still "
                      "reports one."),
    System(
        "sinch", ("sinch",),
        secret_field="System Configurator > the MS365 mail server's OAuth settings > client secret",
        ids="In Sinch Contact Center's System Configurator, correct the Application registration ID and the "
            "directory (tenant) ID of the MS365 mail server.",
        mailbox_field="In Sinch Contact Center's System Configurator, the email queue's address (the shared "
                      "mailbox's full address).",
        access_group="Sinch Contact Center's guide creates this mail-enabled security group for the queues' shared "
                     "mailboxes: every queue mailbox must be a member."),
    System(
        "agiloft", ("agiloft",),
        secret_field="Setup > Email and SMS > Configure Inbound Email > the account > Account tab > Client Secret",
        ids="In Agiloft, Setup > Email and SMS > Configure Inbound Email > the account > Account tab: correct the "
            "Tenant ID and Client ID.",
        mailbox_field="In Agiloft, Setup > Email and SMS > Configure Inbound Email > the account > Account tab: the "
                      "email address, or the Additional Users field for the other mailboxes."),
    System(
        "enaio", ("enaio",),
        secret_field="OfficeClientSecret (enterprise-manager) and featureSwitches.sendEmail.oAuthClientSecret "
                     "(osweb-prod.yml)",
        ids="In enaio, correct OfficeTenantID / OfficeClientID (enterprise-manager) and "
            "featureSwitches.sendEmail.oAuthTenantId / oAuthClientId (osweb-prod.yml).",
        mailbox_field="In enaio, the SMTP user name (SMTPUserName; featureSwitches.sendEmail.smtpUsername) and the "
                      "E-mail sender (MailSender).",
        sender="In enaio, the E-mail sender (MailSender) must equal the SMTP user name (SMTPUserName), {login}; the "
               "webclient sends as each of its users, and each needs Send as permission for {login} (Microsoft 365 "
               "admin center > Active users > the user > Mail > Send as permissions)."),
)
_OTHER = System(
    "other", (),
    secret_field="its client secret setting",
    sign_in="In {system}, sign in again as {account} where it connects to Microsoft 365, in a private window too.",
    ids="Correct the same value where {system} keeps the tenant ID and client ID.",
    mailbox_field="Correct the address where {system} keeps it too.",
    sender="In {system}, check that it signs in as {login} and sends with the From address {sender}.",
)
SYSTEMS: dict[str, System] = {s.key: s for s in (*_SYSTEM_LIST, _OTHER)}


def system_of(name: str | None) -> System:
    """The known consuming system a configured ``system`` name is, or the neutral one."""
    lowered = (name or "").lower()
    return next((s for s in _SYSTEM_LIST if any(n in lowered for n in s.needles)), _OTHER)


# ---------------------------------------------------------------------------------------------------
# Placeholders and their defaults (what a reader sees when the fact is unknown)

PLACEHOLDERS: dict[str, str] = {
    "system": "the consuming system",
    "integration": "<integration>",
    "mailbox": "<mailbox address>",
    "account": "<signing-in account>",
    "client_id": "<application (client) ID>",
    "app": "<app registration>",
    "tenant_id": "<directory (tenant) ID>",
    "tenant": "<tenant>",  # the tenant's key in mailwarden's config
    # a multitenant app used outside its home tenant: the tenant it is registered in, and the admin-consent link of
    # the integration's tenant (the sign-in host of the configured cloud)
    "home_tenant_id": "<the app's home tenant ID>",
    "consent_url": "https://login.microsoftonline.com/<tenant ID>/adminconsent?client_id=<application (client) ID>",
    "permission": "the needed permission",
    "permission_path": "the API (Microsoft Graph or Office 365 Exchange Online) and type (Application or "
                       "Delegated permissions) the consuming system's setup guide names",
    "secret_field": "its client secret setting",
    "days_left": "a few",
    "days_words": "",
    "expires_on": "the date shown in Certificates & secrets",
    "retires_on": "1 April 2027",
    "reauth_url": "",  # derived from integration, see _fill
    "callback_url": "mailwarden's web.base_url followed by /auth/callback",
    "detail": "",  # optional: " ({detail})" disappears when empty, see _render
    "login": "",  # the address that signed in to SMTP (a delegate signs in as itself); default: see _fill
    "sender": "",  # the From address the SMTP check sends with; default: the mailbox
    "signer": "",  # who signs in: the account (delegated) or the app's service principal; see _fill
    "ews_retirement": "",  # Exchange Online endpoints only: the shutdown date and the move to Graph
    "monitor_app": "the tenant's monitor app",
    "monitor_client_id": "its application (client) ID",
    "monitor_problem": "",  # why the monitor app got no token: "AADSTS7000222: Client secret expired"
    # the consuming system's own screens (SYSTEMS), filled from ``system``
    "system_sign_in": "", "system_ids": "", "system_mailbox": "", "system_sender": "", "system_after_secret": "",
    "system_access_group": "", "system_not_connected": "",
    # the consumer check: the AADSTS code the consuming system itself got, and what the catalog calls it
    "consumer_code": "an AADSTS code",
    "consumer_problem": "the sign-in log names it",
}
# Exchange Online shuts EWS down on 1 April 2027 (M365_FACTS.md, "Platform dates"); on-premises EWS stays.
EWS_SHUTDOWN = "2027-04-01"
EWS_RETIREMENT = (
    "Exchange Online shuts EWS down on 1 April 2027, with no exceptions: plan the move of {system} to "
    "Microsoft Graph rather than re-enabling EWS for long."
)
_YES = "yes"


def _fill(facts: Mapping[str, Any]) -> dict[str, str]:
    """Every placeholder with a value: the fact when given, else its default."""
    given = {k: str(v).strip() for k, v in facts.items() if v is not None and str(v).strip()}
    values = {name: given.get(name, default) for name, default in PLACEHOLDERS.items()}
    system = system_of(given.get("system"))
    if "secret_field" not in given:
        values["secret_field"] = system.secret_field
    flow = given.get("flow")
    if "login" not in given:  # SMTP: a delegate signs in as itself, an app as the mailbox
        values["login"] = values["account"] if flow != "app" and "account" in given else values["mailbox"]
    if "sender" not in given:
        values["sender"] = values["mailbox"]
    if "signer" not in given:
        values["signer"] = (f"the service principal of {values['app']} ({values['client_id']})" if flow == "app"
                            else values["account"])
    if given.get("ews_retirement"):  # a flag: the endpoint is Exchange Online's
        values["ews_retirement"] = EWS_RETIREMENT.replace("{system}", values["system"])
    if "reauth_url" not in given:
        values["reauth_url"] = f"run `mailwarden reauth {values['integration']}` (or open the link in the alert)"
    else:
        values["reauth_url"] = f"open {given['reauth_url']}"
    aadsts = consumer_aadsts(facts)
    if aadsts is not None:
        values["consumer_code"] = f"AADSTS{aadsts}"
        cause = classify_aadsts([aadsts])
        values["consumer_problem"] = get(cause).title if cause != "unclassified" else "not in mailwarden's catalog"
    # a system's own words are rendered with the facts (a value is not formatted again), the neutral ones else
    for name, text in (("system_sign_in", system.sign_in or _OTHER.sign_in), ("system_ids", system.ids),
                       ("system_mailbox", system.mailbox_field), ("system_sender", system.sender or _OTHER.sender),
                       ("system_after_secret", system.after_secret), ("system_access_group", system.access_group),
                       ("system_not_connected", system.not_connected)):
        values[name] = _render(text, values) if text else ""
    return values


def _situation(code: str, facts: Mapping[str, Any], values: Mapping[str, str]) -> dict[str, Any]:
    """What the steps are chosen by. None: not known (a step that depends on it is kept, labelled)."""
    given = {k: str(v).strip() for k, v in facts.items() if v is not None and str(v).strip()}
    flow = given.get("flow") if given.get("flow") in ("app", "delegated") else None
    kinds = None
    if given.get("check"):
        kinds = frozenset(k.strip() for k in given["check"].split(",") if k.strip())
        kinds = (kinds & frozenset(kinds_of(code))) or kinds  # a result's check can only be one that returns it
    own = "none" if flow == "app" else None  # "none": no account signs in (app-only)
    if flow == "delegated" and given.get("account") and given.get("mailbox"):
        own = _YES if given["account"].lower() == given["mailbox"].lower() else "no"
    system = system_of(given.get("system")).key
    return {
        "flow": flow, "check": kinds, "own": own, "system": system,
        "token_checked": _YES if given.get("token_checked") == _YES else "no",
        "rotate_reauth": _YES if given.get("reauth_after_rotation") == _YES or system == "oracle" else "no",
        "same_sender": _YES if values["sender"].lower() == values["login"].lower() else "no",
        "graph_reason": given.get("graph_reason") or "unknown",
        "monitor_code": given.get("monitor_code") or "unknown",
        "consumer": consumer_cause(facts),
        "signin_state": _signin_state(given),
        # does mailwarden hold a copy of the app's credential (no: apps.<name>.observe_only)
        "copy": given.get("copy") if given.get("copy") in ("held", "none") else None,
    }


# The consumer check (checks.consumer) says the consuming system's own AADSTS code in its summary, which the
# dashboard and the alerts pass as ``detail``; a caller may pass it as ``consumer_aadsts`` instead.
_CONSUMER_AADSTS = re.compile(r"\bAADSTS(\d{5,7})\b")
_SIGNIN_STATE = re.compile(r"own sign-ins are unknown \((\w+)\)")


def consumer_aadsts(facts: Mapping[str, Any]) -> int | None:
    """The AADSTS code the consuming system itself got (the ``consumer`` check's result), if the facts name one."""
    given = str(facts.get("consumer_aadsts") or "").strip()
    if given.isdigit():
        return int(given)
    found = _CONSUMER_AADSTS.search(str(facts.get("detail") or ""))
    return int(found.group(1)) if found else None


def consumer_cause(facts: Mapping[str, Any]) -> str:
    """The diagnosis of the consuming system's own AADSTS code ("unclassified" for a code the catalog does not know),
    or "unknown" when the facts name none."""
    aadsts = consumer_aadsts(facts)
    return "unknown" if aadsts is None else classify_aadsts([aadsts])


def _signin_state(given: Mapping[str, str]) -> str:
    """Why the consuming system's sign-ins are unknown (``SignInWindow.state``), as the consumer check says it."""
    if given.get("signin_state"):
        return given["signin_state"]
    found = _SIGNIN_STATE.search(given.get("detail", ""))
    return found.group(1) if found else "unknown"


_KIND_NAMES = {"imap": "IMAP", "pop": "POP", "smtp": "SMTP", "graph_mail": "Graph", "ews": "EWS",
               "token": "Token check", "secret_expiry": "Secret expiry"}
_UNKNOWN_LABELS = {("flow", "app"): "App-only", ("flow", "delegated"): "Delegated",
                   ("own", "no"): "Shared mailbox", ("own", _YES): "Own mailbox", ("own", "none"): "App-only",
                   ("copy", "held"): "Where mailwarden holds a copy of the secret"}


def _label(step: Step, where: Mapping[str, Any]) -> str | None:
    """None: the step does not apply; else the label it needs ("" for none): what it is for, where a fact it depends
    on is unknown, or where the result may come from several checks and the step is for some of them."""
    words = []
    for key, allowed in step.when:
        have = where.get(key)
        if key == "check":
            candidates = have if have is not None else frozenset(ALL_KINDS)
            if not candidates & allowed:
                return None
            if candidates - allowed:
                words.append("/".join(_KIND_NAMES.get(k, k) for k in sorted(candidates & allowed)))
        elif have is None:
            words.append(" or ".join(_UNKNOWN_LABELS.get((key, v), v) for v in sorted(allowed)))
        elif have not in allowed:
            return None
    return ", ".join(words)


class _Defaulting(dict):
    # A name outside PLACEHOLDERS would be a catalog bug; render it readable rather than raise.
    def __missing__(self, key: str) -> str:
        return f"<{key}>"


_FORMATTER = string.Formatter()


def _render(template: str, values: Mapping[str, str]) -> str:
    text = _FORMATTER.vformat(template, (), _Defaulting(values))
    return text.replace(" ()", "").strip() if not values.get("detail") else text


# ---------------------------------------------------------------------------------------------------
# Reused steps

_ENTRA = "Entra admin center (entra.microsoft.com) > Identity > Applications"
_APP_REG = f"{_ENTRA} > App registrations > {{app}}"
_ENTERPRISE = f"{_ENTRA} > Enterprise applications > {{app}}"
_USER = "Entra admin center > Identity > Users > All users > {account}"
_EXO = "Exchange Online PowerShell (Connect-ExchangeOnline as an Exchange admin): "
_OBJECT_ID = (f"$objectId = the Object ID on {_ENTERPRISE} > Overview (the enterprise application's, not the app "
              "registration's)")
_APP_ONLY, _DELEGATED = "app", "delegated"
_PROTOCOLS = ("imap", "pop", "smtp")

_NEW_SECRET = (
    f"{_APP_REG} > Certificates & secrets > Client secrets > New client secret; choose an expiry "
    "(24 months at most, Microsoft recommends under 12), Add, and copy the Value at once (it is shown only "
    "once), not the Secret ID."
)
_MAILWARDEN_SECRET = Step(  # an observe_only app: mailwarden holds no copy to update
    "Put the new Value where mailwarden's secret reference for {app} points (its env: variable or file: "
    "path), then run `mailwarden validate --resolve`.", copy="held")
_SYSTEM_SECRET = "In {system}, paste the new Value into {secret_field} and save."
_SECRET_SURVIVES = Step(  # an app-only integration has no sign-in to survive
    "Refresh tokens belong to the app, not to one secret, so existing sign-ins survive the new secret: {system} need "
    "not sign in again as {account} unless it asks for it after a secret change.",
    flow=_DELEGATED, rotate_reauth="no")
_SECRET_REAUTH = Step("{system_after_secret}", flow=_DELEGATED, rotate_reauth=_YES)
_REMOVE_OLD = (
    "When {system} works with the new secret, delete the old one in Certificates & secrets so only the "
    "secret in use remains."
)
# The consuming system's side of mail waiting uncollected (inbox_backlog, consumer_not_collecting): mailwarden's access
# works, so the system's service, its own sign-in or its own copy of the secret is where to look.
_COLLECTOR = (
    "Check that {system}'s mail service, poller or scheduled job runs, and read its mail or connector log.",
    Step("If that log shows an authentication error, {system}'s own OAuth connection failed (mailwarden's token is "
         "separate and works): {system_sign_in}", flow=_DELEGATED),
    Step("If that log shows an authentication error: in {system}, paste the Value of a current client secret of {app} "
         "into {secret_field}.", flow=_APP_ONLY),
)
_MAILWARDEN_REAUTH = Step(
    "Re-authorise mailwarden's own token: {reauth_url}, signing in as {account} in a private "
    "(InPrivate/Incognito) window so no other Microsoft session is reused.", flow=_DELEGATED)
_SYSTEM_REAUTH = Step("mailwarden's token is separate from {system}'s: {system_sign_in}", flow=_DELEGATED,
                      tag=SYSTEM_SIGN_IN)
_SYSTEM_RETRY = (
    "Nothing to re-enter in {system}: it recovers on its next poll or send; confirm it in its mail log "
    "(changes in Exchange can take up to an hour to apply)."
)
_SYSTEM_IDS = "{system_ids}"
_SIGNIN_LOG = Step(
    "Entra admin center > Identity > Monitoring & health > Sign-in logs, filter on {account} to see the failing "
    "sign-in and the policy involved.", flow=_DELEGATED)
_SIGNIN_LOG_APP = Step(
    "Entra admin center > Identity > Monitoring & health > Sign-in logs > Service principal sign-ins, filter on "
    "{client_id} to see the failing sign-in and the policy involved.", flow=_APP_ONLY)
_NETWORK_SYSTEM = (
    "If {system} fails the same way, the same fix applies to its network path; if it works, the problem "
    "is on mailwarden's host."
)
_SERVICE_PRINCIPAL = Step(
    "Register the app in Exchange and give it the mailbox: set " + _OBJECT_ID + "; then " + _EXO +
    "Get-ServicePrincipal -Identity {client_id} (if it finds nothing: New-ServicePrincipal -AppId {client_id} "
    "-ObjectId $objectId -DisplayName '{app}'), then Add-MailboxPermission -Identity {mailbox} -User $objectId "
    "-AccessRights FullAccess.", flow=_APP_ONLY, check=_PROTOCOLS)
_FULL_ACCESS = Step(
    "{account} needs FullAccess on the shared mailbox {mailbox}: " + _EXO + "Add-MailboxPermission -Identity "
    "{mailbox} -User {account} -AccessRights FullAccess -AutoMapping $false.",
    flow=_DELEGATED, own="no", check=("imap", "pop", "graph_mail", "ews"))


# The consumer check: the consuming system's own AADSTS code (situation ``consumer``: the diagnosis the catalog gives
# that code, "unclassified", or "unknown" when the result names none) chooses the steps. They act where that system
# signs in or keeps its credential (``SYSTEMS``), or in Entra ID; never on mailwarden's own token, which may be fine.
_C_SIGN_IN_AGAIN = ("refresh_token_revoked", "refresh_token_expired", "refresh_token_invalid", "signin_frequency",
                    "mfa_required", "password_expired", "user_disabled", "user_locked", "security_defaults_blocked",
                    "redirect_uri_mismatch", "consent_missing")
_C_RETRY = ("conditional_access_blocked", "user_not_assigned", "app_disabled", "resource_not_found")
_C_UNKNOWN = ("unclassified", "unknown")
_C_SECRET = ("secret_expired", "secret_invalid")
_SIGNINS = "Entra admin center > Identity > Monitoring & health > Sign-in logs"
_CONSUMER_STEPS: tuple[str, ...] = (
    Step(f"{_USER} > Audit logs: find who reset the password of {{account}} or revoked its sessions, and why "
         "(offboarding, a compromise response, a scheduled password change), before signing {system} in again.",
         consumer="refresh_token_revoked", flow=_DELEGATED),
    Step("{system} holds a refresh token that expired: unused for 90 days, or {system} did not save the new refresh "
         "token each refresh returns. After signing it in again, check that it stores the rotated token.",
         consumer="refresh_token_expired", flow=_DELEGATED),
    Step("{system} presents a refresh token that was not issued to {app} ({client_id}) in this tenant: check the "
         "client ID and tenant in its settings. {system_ids}", consumer="refresh_token_invalid", flow=_DELEGATED),
    Step(f"{_USER} > Edit properties > Settings: tick 'Account enabled' (first confirm that disabling it was not an "
         "intended offboarding).", consumer="user_disabled", flow=_DELEGATED),
    Step(f"{_SIGNINS}, filter on {{account}}: find where the failed attempts come from (often a device or system "
         "with an old password) and stop them; the lockout ends by itself after its period.", consumer="user_locked",
         flow=_DELEGATED),
    Step(f"{_USER} > Reset password (or sign in once as {{account}} and change it): a password change also revokes "
         "{system}'s refresh token, so sign it in again afterwards.", consumer="password_expired", flow=_DELEGATED),
    Step("The sign-in needs multi-factor authentication: complete the MFA prompt when signing {system} in again "
         "(for AADSTS50079 register a method first at https://aka.ms/mysecurityinfo), and review the policy with the "
         "admin: a service account that must pass MFA breaks again.", consumer="mfa_required", flow=_DELEGATED),
    Step("Entra admin center > Protection > Conditional Access > Policies > the policy's Session > Sign-in "
         "frequency: exclude the service account {account}, or {system} must be signed in again every period.",
         consumer="signin_frequency", flow=_DELEGATED),
    Step("Entra admin center > Identity > Overview > Properties > Manage security defaults: they blocked the sign-in "
         "of {system}; security defaults cannot exclude one account, so a tenant that needs an exception replaces "
         "them with Conditional Access policies.", consumer="security_defaults_blocked"),
    Step(f"{_SIGNINS}, filter on {{account}} and application {{client_id}}: the Conditional Access tab names the "
         "policy that blocks {system}; exclude the service account or allow the network {system} signs in from.",
         consumer="conditional_access_blocked", flow=_DELEGATED),
    Step(f"{_SIGNINS} > Service principal sign-ins, filter on {{client_id}}: the Conditional Access tab names the "
         "policy that blocks {system}; exclude the workload identity {app} or allow the network {system} signs in "
         "from.", consumer="conditional_access_blocked", flow=_APP_ONLY),
    Step(f"{_ENTERPRISE} > Users and groups > Add user/group > {{account}} > Assign (or set Properties > 'Assignment "
         "required?' to No).", consumer="user_not_assigned", flow=_DELEGATED),
    Step(f"{_APP_REG} > API permissions: Grant admin consent (the button names the tenant) and confirm {{permission}} "
         f"reads 'Granted'; {_ENTERPRISE} > Permissions shows a revoked grant.", consumer="consent_missing"),
    Step(f"{_ENTERPRISE} > Properties: set 'Enabled for users to sign-in?' to Yes and Save; its audit logs say who "
         "disabled it, or Microsoft's notice why.", consumer="app_disabled"),
    Step("{system} signs in with an application or tenant Entra ID does not know: compare the client ID and tenant in "
         "its settings with {client_id} and {tenant_id} on the app's Overview (a deleted app registration can be "
         "restored for 30 days). {system_ids}", consumer=("app_not_found", "tenant_not_found")),
    Step("{system} asks for a resource the tenant lacks: Office 365 Exchange Online's service principal is missing "
         "(a tenant without Exchange Online), or the scope in its settings names the wrong host.",
         consumer="resource_not_found"),
    Step(f"{_APP_REG} > Authentication: the redirect URI {{system}} signs in with must be listed exactly (scheme, "
         "host, path, as its guide gives it); add it and Save.", consumer="redirect_uri_mismatch"),
    Step(f"{{system}} presents a certificate {{app}} does not accept (not uploaded, expired, or another key): compare "
         f"its thumbprint with {_APP_REG} > Certificates & secrets > Certificates, and install the current "
         "certificate and key in {system}.", consumer="certificate_invalid"),
    Step(f"{{system}} still presents a client secret that has expired: {_APP_REG} > Certificates & secrets lists "
         "the app's secrets and their end dates. If one is current and someone holds its Value (the one mailwarden "
         "uses, if mailwarden's own checks pass), give {system} that Value; otherwise create one: " + _NEW_SECRET,
         consumer="secret_expired"),
    Step(f"{{system}} presents a client secret {{app}} does not know (often the Secret ID pasted instead of the "
         f"Value, or a deleted secret): {_APP_REG} > Certificates & secrets. Give {{system}} the Value of a current "
         "secret, or create one: " + _NEW_SECRET, consumer="secret_invalid"),
    Step("In {system}, paste that Value into {secret_field} and save.", consumer=_C_SECRET),
    Step("{system_after_secret}", flow=_DELEGATED, rotate_reauth=_YES, consumer=_C_SECRET),
    Step("{system} refreshes a public-client token (a device-code sign-in) with its client secret: it must refresh "
         "without the secret (its vendor's setting for a public client), or sign in again the way it normally does.",
         consumer="public_client_token", flow=_DELEGATED),
    Step(f"{_SIGNINS} > User sign-ins (non-interactive), filter on application {{client_id}} and {{account}}: the "
         "failing sign-ins of {system} give {consumer_code} with Microsoft's explanation (Microsoft's list of Entra "
         "error codes: learn.microsoft.com/entra/identity-platform/reference-error-codes).", consumer=_C_UNKNOWN,
         flow=_DELEGATED),
    Step(f"{_SIGNINS} > Service principal sign-ins, filter on {{client_id}}: the failing sign-ins of {{system}} give "
         "{consumer_code} with Microsoft's explanation (Microsoft's list of Entra error codes: "
         "learn.microsoft.com/entra/identity-platform/reference-error-codes).", consumer=_C_UNKNOWN, flow=_APP_ONLY),
    Step("{system_sign_in}", flow=_DELEGATED, consumer=_C_SIGN_IN_AGAIN),
    Step("If the explanation asks for a new sign-in (a revoked or expired token, MFA, a changed password): "
         "{system_sign_in}", flow=_DELEGATED, consumer=_C_UNKNOWN),
    Step("If the explanation names the client secret: in {system}, paste the Value of a current secret of {app} into "
         "{secret_field}.", flow=_APP_ONLY, consumer=_C_UNKNOWN),
    Step(_SYSTEM_RETRY, consumer=_C_RETRY),
    Step(_SYSTEM_RETRY, consumer="consent_missing", flow=_APP_ONLY),
    "mailwarden's consumer check turns ok at the next successful sign-in of {system}, once Entra ID's sign-in log "
    "shows it (minutes; up to half an hour for non-interactive sign-ins).",
)


def _d(code: str, title: str, cause: str, fix: Iterable[str], *, severity: str = "critical",
       category: str, reauth: bool = False, rotation: bool = False, admin: bool = False) -> Diagnosis:
    return Diagnosis(code, title, cause, tuple(fix), reauth, rotation, admin, severity, category)


# ---------------------------------------------------------------------------------------------------
# The catalog

_ENTRIES: tuple[Diagnosis, ...] = (
    # --- app credentials -------------------------------------------------------------------------
    _d("secret_expired", "Client secret expired",
       "The client secret of {app} ({client_id}) has expired (AADSTS7000222), so no token can be issued "
       "and {system} stopped reading or sending mail for {mailbox}.",
       (_NEW_SECRET, _MAILWARDEN_SECRET, _SYSTEM_SECRET, _SECRET_SURVIVES, _SECRET_REAUTH, _REMOVE_OLD),
       category="credential", rotation=True),
    _d("secret_expiring", "Client secret expires soon",
       "The client secret of {app} ({client_id}) that {system} uses ends in {days_left} days "
       "(on {expires_on}); after that every token request fails.",
       (_NEW_SECRET, _MAILWARDEN_SECRET, _SYSTEM_SECRET, _SECRET_SURVIVES, _SECRET_REAUTH, _REMOVE_OLD),
       severity="warning", category="credential", rotation=True),
    _d("secret_invalid", "Client secret invalid",
       "Entra ID rejected the client secret of {app} ({client_id}) (AADSTS7000215): usually the Secret ID "
       "was pasted instead of the Value, or the secret was replaced or deleted.",
       (f"{_APP_REG} > Certificates & secrets: compare the Secret ID column with what was configured; "
        "a value shaped like a GUID is the Secret ID, not the secret.",
        "If someone still holds the Value, configure that; otherwise create a new one: " + _NEW_SECRET,
        _MAILWARDEN_SECRET, _SYSTEM_SECRET, _SECRET_SURVIVES, _SECRET_REAUTH),
       category="credential"),
    _d("certificate_invalid", "Certificate rejected",
       "Entra ID rejected the certificate assertion of {app} ({client_id}) (AADSTS700027 / 700024): the "
       "certificate is not uploaded to the app, the private key does not match it, it is outside its "
       "validity dates, or the clock of the signing host is wrong. {detail}",
       (f"{_APP_REG} > Certificates & secrets > Certificates: check that the thumbprint of the "
        "configured certificate is listed and within its start/end dates.",
        "If it is missing or expired, create a new key pair and certificate and Upload certificate there "
        "(the public .cer/.pem only; the private key stays with the signer).",
        "Check the clock of mailwarden's host and of {system}'s host (NTP): an assertion is only valid "
        "for a few minutes around its issue time.",
        "Point mailwarden's certificate reference for {app} at the new key and certificate, then run "
        "`mailwarden validate --resolve`.",
        "Install the same certificate and key in {system}."),
       category="credential", rotation=True),
    _d("certificate_expiring", "Certificate expires soon",
       "The certificate of {app} ({client_id}) ends in {days_left} days (on {expires_on}); after that "
       "every token request fails.",
       ("Create a new key pair and certificate, then " + _APP_REG + " > Certificates & secrets > "
        "Certificates > Upload certificate (the old one keeps working until it ends).",
        "Point mailwarden's certificate reference for {app} at the new files and run "
        "`mailwarden validate --resolve`.",
        "Install the new certificate and key in {system}.",
        "When {system} works with it, delete the old certificate from the app registration."),
       severity="warning", category="credential", rotation=True),
    _d("credential_not_found", "Configured secret not found on the app",
       "The hint (first three characters) of the configured secret matches no credential of {app} "
       "({client_id}) in Graph: the secret was deleted, or the configuration points at the wrong app. Its "
       "expiry cannot be tracked.",
       (f"{_APP_REG} > Certificates & secrets: compare the Hint column with the configured secret's "
        "first characters and the Application (client) ID on Overview with {client_id}.",
        "If the configuration points at the wrong app, correct client_id in mailwarden's config and run "
        "`mailwarden validate --resolve`.",
        "If the secret was deleted, create a new one: " + _NEW_SECRET,
        _MAILWARDEN_SECRET, _SYSTEM_SECRET),
       severity="warning", category="credential"),
    _d("app_not_found", "Application not found",
       "Entra ID knows no application {client_id} in tenant {tenant_id} (AADSTS700016): the client ID or "
       "the tenant is wrong, or the app registration was deleted.",
       (f"{_ENTRA} > App registrations > All applications: search {{client_id}}; compare it with the "
        "Application (client) ID and Directory (tenant) ID on the app's Overview.",
        f"If it was deleted in the last 30 days, restore it: {_ENTRA} > App registrations > Deleted "
        "applications > {app} > Restore app registration (an admin of the app or the tenant).",
        "Fix client_id / tenant in mailwarden's config and run `mailwarden validate --resolve`.",
        _SYSTEM_IDS),
       category="credential"),
    _d("app_not_in_tenant", "Application not set up in this tenant",
       "{app} ({client_id}) is a multitenant app registered in tenant {home_tenant_id}, and tenant {tenant_id} has no "
       "service principal (enterprise application) for it (AADSTS700016): nobody in that tenant consented to the app, "
       "or its enterprise application there was deleted. Its credentials are fine: they are read in the home tenant.",
       (Step("An admin of tenant {tenant_id} opens {consent_url}, signs in and accepts: this creates the enterprise "
             "application there and grants the permissions the app asks for.", flow=_APP_ONLY),
        Step("An admin of tenant {tenant_id} opens {consent_url} and grants consent for the organisation, or "
             "{account} signs in to {system} once and consents (if the tenant lets users consent).", flow=_DELEGATED),
        "If it should be there: Entra admin center of tenant {tenant_id} > Identity > Applications > Enterprise "
        "applications, search {client_id}; a deleted one is under Deleted applications (restorable for 30 days).",
        "If {app} is not meant to be used in that tenant, the integration's `tenant` in mailwarden's config is "
        "wrong: fix it and run `mailwarden validate --resolve`.",
        "Run `mailwarden check -i {integration} --check token` to confirm."),
       category="credential", admin=True),
    _d("app_disabled", "Application disabled",
       "The enterprise application (service principal) of {app} ({client_id}) is disabled for sign-in "
       "(AADSTS7000112 / 70001), by an admin or by Microsoft.",
       (f"{_ENTERPRISE} > Properties: set 'Enabled for users to sign-in?' to Yes and Save.",
        f"If it stays disabled, check {_ENTERPRISE} > Overview and the audit logs for a Microsoft "
        "disablement notice (e.g. a suspicious-app action), and resolve that first.",
        _SYSTEM_RETRY),
       category="credential", admin=True),
    _d("tenant_not_found", "Tenant not found",
       "Entra ID knows no tenant '{tenant_id}' (AADSTS90002): the tenant ID or domain is wrong, or the "
       "endpoints point at another cloud (global, US Gov, China).",
       ("Entra admin center > Identity > Overview: copy the Tenant ID (or the app's Directory (tenant) ID "
        "on its Overview).",
        "Fix tenant_id (and cloud) in mailwarden's config and run `mailwarden validate --resolve`.",
        _SYSTEM_IDS),
       category="credential"),
    # --- delegated tokens ------------------------------------------------------------------------
    _d("refresh_token_revoked", "Refresh token revoked",
       "The refresh token of {account} was revoked (AADSTS50173): its password was reset by an admin or "
       "changed, or an admin ran Revoke-MgUserSignInSession / 'Revoke sessions' on the user, or the user "
       "signed out everywhere. Every refresh token of {account} from a password sign-in is void, including "
       "the one {system} holds.",
       (f"{_USER} > Audit logs: find the password reset or the session revocation, who did it and why "
        "(offboarding, a compromise response, a scheduled password change) before signing in again.",
        _MAILWARDEN_REAUTH, _SYSTEM_REAUTH),
       category="credential", reauth=True),
    _d("refresh_token_expired", "Refresh token expired",
       "The refresh token of {account} expired or was revoked (AADSTS70008 / 700082): unused for 90 days, "
       "or a rotated token was not saved and the first one aged out.",
       (_MAILWARDEN_REAUTH, _SYSTEM_REAUTH,
        "Refresh tokens last 90 days from their last use and are replaced on each use: make sure "
        "{system} saves the new refresh token every time it refreshes, and keep mailwarden's token check "
        "enabled so its own token stays in use."),
       category="credential", reauth=True),
    _d("refresh_token_invalid", "Refresh token not valid for this app",
       "Entra ID does not accept the stored refresh token of {account} for {app} ({client_id}) (AADSTS70000 / "
       "9002313): it was issued to another app or tenant, or it is not a refresh token at all (often a token "
       "imported from another tool).",
       ("Check that the integration's app and tenant in mailwarden's config are the ones the token was issued "
        "for (the client ID and tenant ID on the app's Overview).",
        _MAILWARDEN_REAUTH,
        "This only concerns mailwarden's copy; {system} keeps its own sign-in."),
       category="credential", reauth=True),
    _d("public_client_token", "Public-client token presented with a secret",
       "Entra ID refused to refresh the token of {account} because it was issued to a public client (a "
       "device-code sign-in, 'Allow public client flows') and the request carried the app's client secret "
       "(AADSTS700025). Such a token is refreshed without a secret.",
       (_MAILWARDEN_REAUTH.plus("mailwarden refreshes public-client tokens without the secret and retries an imported "
                                "one that way: if this persists, re-authorise: ", before=True),
        "If {system} signs in with a device code, it must refresh without its client secret too (its "
        "vendor's setting for a public client)."),
       category="credential", reauth=True),
    _d("no_refresh_token", "Not authorised yet",
       "The delegated integration {integration} has no refresh token in mailwarden's store yet, so "
       "mailwarden cannot check it.",
       (_MAILWARDEN_REAUTH,
        "Or import a refresh token obtained elsewhere: `mailwarden reauth {integration} --import FILE`.",
        "This only authorises mailwarden; {system} keeps its own sign-in."),
       category="credential", reauth=True),
    _d("wrong_account", "Signed in as the wrong account",
       "The token belongs to another account than {account} ({detail}): someone signed in with their own "
       "Microsoft session instead of the service account.",
       (_MAILWARDEN_REAUTH,
        "If a browser session of another user keeps being picked, sign out of Microsoft 365 in that "
        "browser first, or use a private window.",
        _SYSTEM_REAUTH),
       category="user", reauth=True),
    # --- consent and assignment ------------------------------------------------------------------
    _d("consent_missing", "Admin consent missing",
       "{app} ({client_id}) lacks admin consent for {permission} (AADSTS65001 / 90094, or a token without it): "
       "consent was never granted or was removed.",
       (f"{_APP_REG} > API permissions: check {{permission}} is listed; if it is not, Add a permission > "
        "{permission_path} > Add permissions.",
        "Click Grant admin consent (the button names the tenant) and confirm: the Status column of {permission} "
        "must read 'Granted'.",
        f"Or review {_ENTERPRISE} > Permissions for a revoked grant.",
        "New tokens carry the permission; cached tokens end within about an hour.",
        _SYSTEM_RETRY),
       category="consent", admin=True),
    _d("resource_not_found", "Resource not found in the tenant",
       "Entra ID found no service principal for the requested resource in tenant {tenant_id} (AADSTS500011): "
       "Office 365 Exchange Online (00000002-0000-0ff1-ce00-000000000000) or Microsoft Graph is missing there "
       "(a tenant without an Exchange Online licence, or its service principal was deleted), or the scope names "
       "the wrong resource. {detail}",
       ("Microsoft 365 admin center > Billing > Licenses: the tenant needs a licence that includes Exchange "
        "Online for mailbox access.",
        "Entra admin center > Identity > Applications > Enterprise applications > All applications, filter "
        "Application type 'Microsoft Applications', search 'Office 365 Exchange Online' (app ID "
        "00000002-0000-0ff1-ce00-000000000000): it must be listed and enabled.",
        "Check the scope the integration requests: app-only Exchange uses https://outlook.office365.com/"
        ".default, delegated https://outlook.office.com/ followed by the scope name; a typo in the host is this "
        "error.",
        _SYSTEM_RETRY),
       category="consent", admin=True),
    _d("graph_unreadable", "Monitor app cannot read app credentials",
       "mailwarden's monitor app cannot read {app}'s credentials in Graph, so the secret expiry comes from "
       "secret_expires_on in the config, or is unknown. {detail}",
       (Step("mailwarden's monitor app {monitor_app} ({monitor_client_id}) got no token itself ({monitor_problem}): "
             "Graph never saw its permissions, so adding one changes nothing. Fix the monitor app's own sign-in "
             "first.", graph_reason="monitor_token"),
        Step(f"{_ENTRA} > App registrations > {{monitor_app}} > Certificates & secrets > New client secret "
             "(copy the Value, not the Secret ID); put it where mailwarden's secret reference for {monitor_app} "
             "points and run `mailwarden validate --resolve`.", graph_reason="monitor_token",
             monitor_code=("secret_expired", "secret_invalid")),
        Step("Fix what {monitor_problem} says about {monitor_app} as for any app with that refusal: Entra admin "
             "center > Identity > Applications > App registrations and Enterprise applications > {monitor_app}.",
             graph_reason="monitor_token",
             monitor_code=("certificate_invalid", "app_not_found", "app_disabled", "tenant_not_found",
                           "conditional_access_blocked", "security_defaults_blocked", "resource_not_found",
                           "consent_missing", "unclassified", "unknown")),
        Step("No monitor app is configured for tenant {tenant}: add one to mailwarden's config "
             "(tenants.{tenant}.monitor_app, an app registration of that tenant with a client secret or "
             "certificate) and give it the permission below.", graph_reason="no_monitor_app"),
        Step(f"{_ENTRA} > App registrations > {{monitor_app}} > API permissions > Add a permission > Microsoft Graph "
             "> Application permissions > Application.Read.All (add Application.ReadWrite.OwnedBy only if "
             "mailwarden should rotate), then Grant admin consent and confirm Status reads 'Granted'.",
             graph_reason=("forbidden", "no_monitor_app", "unknown")),
        "Until then, keep secret_expires_on for {app} in the config up to date."),
       severity="warning", category="consent", admin=True),
    _d("redirect_uri_mismatch", "Redirect URI not registered",
       "Entra ID refused mailwarden's sign-in for {app} ({client_id}) because the redirect URI does not match the "
       "app's registration (AADSTS50011 at the sign-in page, AADSTS500112 when the code is redeemed). {detail}",
       (f"{_APP_REG} > Authentication > Add a platform > Web > Redirect URI: add {{callback_url}} exactly "
        "(scheme, host, port, path), and Save.",
        "Check that web.base_url in mailwarden's config is the address the browser reaches mailwarden at.",
        "Open the reauthorisation link again."),
       category="consent", admin=True),
    _d("user_not_assigned", "User not assigned to the app",
       "{account} is not assigned to {app} while the enterprise application requires assignment "
       "(AADSTS50105).",
       (f"{_ENTERPRISE} > Users and groups > Add user/group > {{account}} > Assign (or assign a group "
        "that contains it).",
        "Or, if assignment is not wanted, Properties > 'Assignment required?' = No.",
        _SYSTEM_RETRY),
       category="consent", admin=True),
    # --- the signing-in user ---------------------------------------------------------------------
    _d("user_disabled", "User account disabled",
       "The account {account} is disabled (AADSTS50057), so it can no longer sign in for {system}.",
       (f"{_USER} > Edit properties > Settings: tick 'Account enabled' (or the M365 admin center > Users "
        "> Active users > Unblock sign-in); confirm first that disabling it was not intended offboarding.",
        _MAILWARDEN_REAUTH.plus("If sessions were revoked when it was disabled: ", before=True), _SYSTEM_REAUTH),
       category="user", reauth=True, admin=True),
    _d("user_locked", "User account locked",
       "The account {account} is locked (AADSTS50053) after too many failed sign-ins, or sign-ins from a "
       "blocked IP address.",
       (_SIGNIN_LOG.plus(" Find where the failed attempts come from (often a device or system with an old "
                         "password) and stop it."),
        # never "password:" followed by a word: redaction takes that for a password value
        "Smart lockout ends by itself after the lockout period; if the account is compromised, reset "
        f"its password ({_USER} > Reset password).",
        _MAILWARDEN_REAUTH.plus("If the check still fails after the lockout: ", before=True), _SYSTEM_REAUTH),
       category="user", reauth=True, admin=True),
    _d("password_expired", "Password expired",
       "The password of {account} has expired (AADSTS50055), so it cannot sign in interactively. Expiry "
       "alone revokes no refresh token: existing sign-ins keep working until the password is changed, which "
       "revokes them (AADSTS50173).",
       (f"{_USER} > Reset password (or sign in once as {{account}} and change it).",
        "For a service account consider a password that does not expire: "
        "Update-MgUser -UserId {account} -PasswordPolicies DisablePasswordExpiration.",
        _MAILWARDEN_REAUTH, _SYSTEM_REAUTH),
       category="user", reauth=True, admin=True),
    _d("mfa_required", "MFA required",
       "Sign-in of {account} needs multi-factor authentication (AADSTS50076 / 50079 / 50074 / 50078): MFA "
       "is required and was not done, the MFA of the last sign-in has expired under the admin's policy, or "
       "the account has no MFA method registered.",
       ("For 50079, register a method first: sign in as {account} at https://aka.ms/mysecurityinfo.",
        _MAILWARDEN_REAUTH.plus(" Complete the MFA prompt."),
        _SYSTEM_REAUTH,
        "Review the policy (Entra admin center > Protection > Conditional Access, or security defaults) "
        "with the admin: a service account that must pass MFA breaks again; an app-only flow avoids it "
        "where {system} supports one."),
       category="user", reauth=True, admin=True),
    _d("conditional_access_blocked", "Blocked by Conditional Access",
       "A Conditional Access policy blocks this sign-in (AADSTS53003 / 53000) of {signer}.",
       (_SIGNIN_LOG.plus(" The Conditional Access tab names the policy."),
        _SIGNIN_LOG_APP.plus(" The Conditional Access tab names the policy."),
        Step("Entra admin center > Protection > Conditional Access > Policies > that policy: exclude the "
             "service account {account}, or allow the network or device it signs in from.", flow=_DELEGATED),
        Step("Entra admin center > Protection > Conditional Access > Policies > that policy: exclude the workload "
             "identity {app} ({client_id}), or allow the network it signs in from.", flow=_APP_ONLY),
        _MAILWARDEN_REAUTH.plus("Once the policy lets it through the existing token works again; sign in again only "
                                "if the check still fails: ", before=True),
        _SYSTEM_RETRY),
       category="user", admin=True),
    _d("security_defaults_blocked", "Blocked by security defaults",
       "Entra ID's security defaults blocked the sign-in of {account} to {app} (AADSTS530035): the request "
       "used legacy authentication or was deemed unsafe by the security defaults policies.",
       (_SIGNIN_LOG.plus(" The sign-in's Basic info and Authentication details say what was deemed unsafe."),
        "Entra admin center > Identity > Overview > Properties > Manage security defaults: security defaults "
        "cannot exclude one account; a tenant that needs exceptions replaces them with Conditional Access "
        "policies (Entra ID P1), and then excludes or scopes the service account.",
        _MAILWARDEN_REAUTH.plus("Once the sign-in is allowed: ", before=True), _SYSTEM_REAUTH),
       category="user", reauth=True, admin=True),
    _d("signin_frequency", "Sign-in frequency reached",
       "A Conditional Access sign-in frequency policy demands a fresh interactive sign-in of {account} "
       "(AADSTS70043); refresh tokens no longer work until then.",
       (_MAILWARDEN_REAUTH, _SYSTEM_REAUTH,
        "Entra admin center > Protection > Conditional Access > Policies > the policy's Session > "
        "Sign-in frequency: exclude the service account, or this repeats every period."),
       category="user", reauth=True, admin=True),
    # --- mailbox protocols -----------------------------------------------------------------------
    _d("auth_failed", "Mailbox login refused",
       "The mail server refused the OAuth login for {mailbox} ({detail}) although a token was issued.",
       (_SERVICE_PRINCIPAL,
        _FULL_ACCESS.only(check=("imap", "pop")),
        Step("Check POP is on for the mailbox: " + _EXO + "Get-CASMailbox -Identity {mailbox} | Format-List "
             "PopEnabled; if False: Set-CASMailbox -Identity {mailbox} -PopEnabled $true.", check="pop"),
        Step("Check IMAP is on for the mailbox: " + _EXO + "Get-CASMailbox -Identity {mailbox} | Format-List "
             "ImapEnabled; if False: Set-CASMailbox -Identity {mailbox} -ImapEnabled $true.", check="imap"),
        Step("SMTP signs in as {login} itself (Exchange refuses a delegate's token for another address): {login} "
             "needs an Exchange Online licence (Microsoft 365 admin center > Users > Active users > {login} > "
             "Licenses and apps), and the token must be {login}'s own: if another account signed in, re-authorise "
             "as {login}.", flow=_DELEGATED, check="smtp"),
        Step("Check that {mailbox} exists in Exchange Online: " + _EXO + "Get-EXOMailbox -Identity {mailbox} (a "
             "user mailbox needs a licence with Exchange Online, a shared mailbox does not).",
             check=("imap", "pop"), own=("no", "none")),
        Step("Check that {mailbox} exists in Exchange Online: " + _EXO + "Get-EXOMailbox -Identity {mailbox}.",
             flow=_APP_ONLY, check="smtp"),
        Step("{account} signs in to its own mailbox, so no mailbox permission is missing: it needs a licence with "
             "Exchange Online (Microsoft 365 admin center > Users > Active users > {account} > Licenses and apps), "
             "and the token must be {account}'s own: if another account signed in, re-authorise as {account}.",
             own=_YES, check=("imap", "pop")),
        Step("mailwarden's token check is not enabled for {integration}, so the token's permissions were not "
             "verified: the token must carry {permission} ({permission_path}), with admin consent.",
             token_checked="no", check=_PROTOCOLS),
        Step("Not the permission: mailwarden's token check found {permission} in the token (a mailbox check does "
             "not run while the token check fails).", token_checked=_YES, check=_PROTOCOLS),
        Step("Graph refused the access token itself (HTTP 401): it was issued for another cloud or tenant, or had "
             "expired. Compare cloud and endpoints in mailwarden's config with the tenant's cloud (global, US Gov, "
             "China), and check the clock of mailwarden's host.", check="graph_mail"),
        Step("EWS refused the access token itself (HTTP 401; the x-ms-diagnostics text in the result says why): EWS "
             "takes a token for Exchange Online carrying {permission}. Compare cloud and endpoints in mailwarden's "
             "config with the tenant's cloud, and check the clock of mailwarden's host.", check="ews"),
        _SYSTEM_RETRY),
       category="mailbox", admin=True),
    _d("authenticated_not_connected", "Logged in but no mailbox access",
       "The mail server accepted the login but refused the mailbox ('User is authenticated but not connected'), "
       "on two connections in a row: the token is good, access to {mailbox} is not (while {system} may still "
       "report a successful sign-in).",
       (_FULL_ACCESS,
        _SERVICE_PRINCIPAL,
        Step("Check that {mailbox} exists and is licensed (Get-EXOMailbox -Identity {mailbox}).", own=("no", "none")),
        Step("{account} signs in to its own mailbox, so no mailbox permission is missing: check that {mailbox} "
             "exists and has a licence with Exchange Online (Get-EXOMailbox -Identity {mailbox}; Microsoft 365 "
             "admin center > Users > Active users > {account} > Licenses and apps).", own=_YES),
        Step("Exchange answers the same when about 20 IMAP connections to the mailbox are open: if access is in "
             "place, count them (phones, {system}, old sessions) and stop the extra ones.", check="imap"),
        Step("{system_not_connected}", system="oracle"),
        Step(_SYSTEM_RETRY, system=tuple(k for k in SYSTEMS if k != "oracle"))),
       category="mailbox", admin=True),
    _d("smtp_auth_disabled", "SMTP AUTH disabled for the tenant",
       "Exchange Online refused SMTP AUTH because SmtpClientAuthentication is disabled for the tenant "
       "(535 5.7.139).",
       ("Preferred, enable it only for the mailbox that signs in (overrides the tenant setting): " + _EXO +
        "Set-CASMailbox -Identity {login} -SmtpClientAuthenticationDisabled $false.",
        "Or for the whole tenant: Set-TransportConfig -SmtpClientAuthenticationDisabled $false (a "
        "mailbox set to $null follows the tenant; $true on a mailbox still blocks it there).",
        _SYSTEM_RETRY),
       category="mailbox", admin=True),
    _d("smtp_auth_disabled_mailbox", "SMTP AUTH disabled for the mailbox",
       "Exchange Online refused SMTP AUTH because SmtpClientAuthentication is disabled for the mailbox "
       "{login} that signed in (535 5.7.139).",
       (_EXO + "Set-CASMailbox -Identity {login} -SmtpClientAuthenticationDisabled $false "
        "(Get-CASMailbox -Identity {login} | Format-List SmtpClientAuthenticationDisabled to check).",
        "Or Microsoft 365 admin center > Users > Active users > {login} > Mail > Manage email apps: "
        "tick Authenticated SMTP.",
        _SYSTEM_RETRY),
       category="mailbox", admin=True),
    _d("send_as_denied", "Send As denied",
       "Exchange refused the message from {sender} (554 5.2.252 SendAsDenied): {signer} signed in as {login} and "
       "may not send as {sender}, or the From address {system} uses is not the one it should be.",
       (Step(_EXO + "Add-RecipientPermission -Identity {sender} -Trustee {login} -AccessRights SendAs (or Microsoft "
             "365 admin center: the mailbox {sender} > Send as permissions > add {login}).",
             flow=_DELEGATED, same_sender="no"),
        Step("The app's service principal needs Send As on {sender}: set " + _OBJECT_ID + "; then " + _EXO +
             "Add-RecipientPermission -Identity {sender} -Trustee $objectId -AccessRights SendAs.",
             flow=_APP_ONLY, same_sender="no"),
        Step("{login} signed in and sent as itself, so Send As on another address is not what is missing: find the "
             "refused message (Exchange admin center > Mail flow > Message trace, sender {sender}) and compare its "
             "From address with {sender}.", same_sender=_YES),
        "{system_sender}",
        _SYSTEM_RETRY),
       category="mailbox", admin=True),
    _d("access_policy_denied", "Blocked by application access policy",
       "An Exchange ApplicationAccessPolicy restricts {app} ({client_id}) to a group that does not contain "
       "{mailbox} (Graph 403 'Access to OData is disabled.').",
       (_EXO + "Test-ApplicationAccessPolicy -Identity {mailbox} -AppId {client_id} shows the verdict; "
        "Get-ApplicationAccessPolicy | Where-Object AppId -eq {client_id} shows the scope group.",
        "Add {mailbox} to that mail-enabled security group (Exchange admin center > Recipients > Groups > "
        "the group > Members, or Add-DistributionGroupMember -Identity $group -Member {mailbox}, with $group the "
        "PolicyScopeGroupId that Get-ApplicationAccessPolicy shows).",
        "{system_access_group}",
        "Policy changes can take over an hour to apply: run Test-ApplicationAccessPolicy again before "
        "changing more.",
        _SYSTEM_RETRY),
       category="mailbox", admin=True),
    _d("permission_missing", "Permission missing",
       "Access to {mailbox} was denied with HTTP 403 ({detail}): {signer} lacks a permission, a right on the "
       "mailbox, or a place in the app's scope.",
       (Step(f"{_APP_REG} > API permissions: add {{permission}} ({{permission_path}}) and Grant admin consent (the "
             "button names the tenant).", token_checked="no"),
        Step("Not the permission in the token: mailwarden's token check found {permission} in it; the 403 is about "
             "the mailbox or a scope on the app.", token_checked=_YES),
        Step("If the 403 came from the sendMail canary (the result's summary says sendMail), the app also needs "
             "Mail.Send: Add a permission > Microsoft Graph > Application permissions > Mail.Send, and Grant admin "
             "consent.", check="graph_mail", flow=_APP_ONLY),
        Step("If the 403 came from the sendMail canary (the result's summary says sendMail), the token also needs "
             "Mail.Send.Shared: Add a permission > Microsoft Graph > Delegated permissions > Mail.Send.Shared, and "
             "Grant admin consent.", check="graph_mail", flow=_DELEGATED),
        _FULL_ACCESS,
        Step("If RBAC for Applications or an application access policy scopes the app: " + _EXO +
             "Test-ServicePrincipalAuthorization -Identity {client_id} -Resource {mailbox} and "
             "Test-ApplicationAccessPolicy -Identity {mailbox} -AppId {client_id} say whether {mailbox} is in its "
             "scope.", flow=_APP_ONLY),
        _SYSTEM_RETRY),
       category="mailbox", admin=True),
    _d("mailbox_not_found", "Mailbox not found",
       "Exchange Online has no mailbox {mailbox} (Graph 404 ErrorInvalidUser / EWS ErrorNonExistentMailbox):"
       " the address is wrong, the mailbox was deleted, or the user has no Exchange Online license.",
       (_EXO + "Get-EXOMailbox -Identity {mailbox} (and Get-EXOMailbox -SoftDeletedMailbox for a deleted "
        "one).",
        "Microsoft 365 admin center > Users > Active users > the user > Licenses and apps: a user mailbox "
        "needs a license with Exchange Online (a shared mailbox does not).",
        "Fix the address in mailwarden's config (the integration's mailbox) and run `mailwarden validate`.",
        "{system_mailbox}"),
       category="mailbox", admin=True),
    _d("ews_forbidden", "EWS refused by policy (HTTP 403)",
       "Exchange answered the EWS request for {mailbox} with a bare HTTP 403: a policy blocks EWS for this app "
       "or mailbox. Exchange says no more, so the cause is one of three: EWS is off for the organisation or the "
       "mailbox (EWSEnabled), {app} is not on the organisation's EWS app allow-list (EWSAllowedAppIDs), or an "
       "application access policy or RBAC for Applications scope leaves {mailbox} out. {detail}",
       ("Tell the three apart in Exchange Online PowerShell (Connect-ExchangeOnline as an Exchange admin): "
        "Get-OrganizationConfig | Format-List EWSEnabled,EWSAllowedAppIDs (EWSEnabled must be True; a tenant "
        "that never set it is blocked since 1 October 2026; if EWSAllowedAppIDs holds IDs, {client_id} must be "
        "one of them), and Get-CASMailbox -Identity {mailbox} | Format-List EwsEnabled.",
        "Then the app's scope: Test-ApplicationAccessPolicy -Identity {mailbox} -AppId {client_id} and "
        "Test-ServicePrincipalAuthorization -Identity {client_id} -Resource {mailbox}: either must allow "
        "the mailbox.",
        "Fix the one that blocks: Set-OrganizationConfig -EWSEnabled $true; add {client_id} to the org's "
        "EWSAllowedAppIDs with Set-OrganizationConfig (keep the IDs already listed); Set-CASMailbox -Identity "
        "{mailbox} -EwsEnabled $true; or add {mailbox} to the policy's group. Changes can take up to an hour to "
        "apply.",
        "{ews_retirement}",
        _SYSTEM_RETRY),
       category="mailbox", admin=True),
    _d("ews_disabled", "EWS refused",
       "Exchange refused EWS for {mailbox} or {app} and said that EWS is disabled. {detail}",
       ("{ews_retirement}",
        Step("To move: ask the vendor of {system} for its Microsoft Graph (or IMAP/SMTP OAuth) connector; then "
             f"{_APP_REG} > API permissions > Microsoft Graph > Application permissions > Mail.ReadWrite (and "
             "Mail.Send if it sends) > Grant admin consent, scoped to the needed mailboxes with RBAC for "
             "Applications.", flow=_APP_ONLY),
        Step("To move: ask the vendor of {system} for its Microsoft Graph (or IMAP/SMTP OAuth) connector; then "
             f"{_APP_REG} > API permissions > Microsoft Graph > Delegated permissions > Mail.ReadWrite.Shared (and "
             "Mail.Send.Shared if it sends) > Grant admin consent.", flow=_DELEGATED),
        "To re-enable EWS meanwhile: " + _EXO + "Get-OrganizationConfig | Format-List EWSEnabled,EWSAllowedAppIDs "
        "and Get-CASMailbox -Identity {mailbox} | Format-List EwsEnabled; Set-OrganizationConfig -EWSEnabled "
        "$true (with {client_id} among EWSAllowedAppIDs when that list is set) or Set-CASMailbox -Identity "
        "{mailbox} -EwsEnabled $true."),
       category="mailbox", admin=True),
    # --- throttling, network ---------------------------------------------------------------------
    _d("throttled", "Throttled",
       "Microsoft asked mailwarden to slow down and wait before asking again ({detail}). Nothing is known to "
       "be broken: mailwarden waits as long as it was asked before the next check on the same app or mailbox.",
       ("Nothing to do for one throttled reply: it is not a failure of {system}'s access.",
        "If it repeats, find who else uses the same app or mailbox: Microsoft's limits are shared with {system} "
        "and every other client. Graph allows 4 concurrent requests and 10,000 requests per 10 minutes per app "
        "and mailbox; IMAP about 20 connections per mailbox; EWS 27 concurrent requests; SMTP submission 3 "
        "concurrent connections per mailbox. Lower {system}'s polling frequency, or mailwarden's interval.",
        "An identity-provider reply (HTTP 429, AADSTS50196 'client request loop', AADSTS90055) means the app "
        "asks for tokens too often: a client must cache its token until it nears expiry."),
       severity="warning", category="throttling"),
    _d("service_unavailable", "Microsoft service temporarily unavailable",
       "Microsoft's service answered with a temporary error instead of an answer ({detail}): nothing is known "
       "about the integration, and nothing in it needs changing for this.",
       ("Check Microsoft 365 service health (admin.microsoft.com > Health > Service health: Exchange Online, "
        "Microsoft Entra) for an open incident.",
        "mailwarden tries again at the next run (after the wait the service asked for, if any); {system} "
        "retries the same way.",
        "If it lasts for hours without an incident in service health, open a support case with Microsoft and "
        "quote the time and the reply in the result's details."),
       category="network"),
    _d("idp_unreachable", "Entra ID unreachable",
       "mailwarden got no answer from the sign-in service (login.microsoftonline.com or the configured "
       "authority). {detail}",
       ("Check Microsoft 365 service health (admin.microsoft.com > Health > Service health).",
        "Check mailwarden's outbound HTTPS (port 443): firewall, proxy, and the cloud/endpoints in its "
        "config.",
        _NETWORK_SYSTEM),
       category="network"),
    _d("dns_error", "DNS lookup failed",
       "A host name of the mail or sign-in service did not resolve from mailwarden's host. {detail}",
       ("Check the resolver on mailwarden's host (e.g. resolve outlook.office365.com and "
        "login.microsoftonline.com) and the host names under cloud/endpoints in its config.",
        _NETWORK_SYSTEM),
       category="network"),
    _d("connection_refused", "Connection refused",
       "The mail or sign-in host refused the connection or the route was blocked. {detail}",
       ("Check that mailwarden's host may connect out to the port in use (IMAP 993, POP3 995, SMTP 587, "
        "HTTPS 443): firewall and proxy rules.",
        "Check host and port under endpoints in mailwarden's config.",
        _NETWORK_SYSTEM),
       category="network"),
    _d("tls_error", "TLS handshake failed",
       "The TLS handshake with the mail or sign-in host failed: an intercepting proxy, a missing CA, a "
       "wrong clock, or an old TLS version. {detail}",
       ("If a proxy inspects TLS, exempt the Microsoft 365 hosts or add its CA via endpoints.ca_bundle.",
        "Check the clock of mailwarden's host (NTP) and that it offers TLS 1.2 or newer.",
        _NETWORK_SYSTEM),
       category="network"),
    _d("timeout", "Timed out",
       "The mail or sign-in host did not answer within the check's timeout. {detail}",
       ("Check Microsoft 365 service health and mailwarden's network path (latency, proxy, packet loss).",
        "If the service is only slow, raise the check's timeout in the config.",
        _NETWORK_SYSTEM),
       category="network"),
    _d("sending_quota_exceeded", "Sending limit reached",
       "Exchange Online refused to send from {login}: the mailbox reached its sending limit (554 5.2.0 "
       "SubmissionQuotaExceededException; 10,000 recipients a day per mailbox). {system} cannot send from it "
       "until the 24-hour window moves on.",
       ("Find what sent so much: Exchange admin center > Mail flow > Message trace, sender {login}, the last "
        "24 hours (a loop of auto-replies or a compromised account sends like this).",
        "Stop the source; sending resumes by itself as the oldest messages leave the 24-hour window.",
        "If the volume is legitimate, spread it over several mailboxes or use a service made for bulk mail: "
        "the limit cannot be raised per mailbox."),
       category="throttling"),
    _d("outbound_blocked", "Sending blocked for spam",
       "Exchange Online refused mail from {login} because outbound mail is blocked ({detail}): 550 5.7.705, "
       "the tenant exceeded its threshold of suspicious outbound mail, or 550 5.7.708, the sending IP has a "
       "poor reputation.",
       ("Microsoft Defender portal (security.microsoft.com) > Email & collaboration > Review > Restricted "
        "entities: find the blocked user or tenant; for a tenant block, open a support case (only Microsoft "
        "lifts it).",
        "Before asking for the block to be lifted, find the compromised account or the source of the spam "
        "(Message trace, sign-in logs) and stop it.",
        _SYSTEM_RETRY),
       category="mailbox", admin=True),
    _d("smtp_basic_auth_retired", "SMTP Basic authentication retired",
       "Exchange Online refused SMTP AUTH with a password (550 5.7.30 'Basic authentication is not supported "
       "for Client Submission'): Basic authentication for SMTP AUTH is being switched off (disabled by default "
       "for existing tenants at the end of December 2026). OAuth (XOAUTH2) is not affected.",
       ("Move {system} to OAuth 2.0 (XOAUTH2) for SMTP with an app registration: delegated SMTP.Send, or "
        "app-only SMTP.SendAsApp with New-ServicePrincipal and Add-MailboxPermission.",
        "Until the final date Microsoft announces, an admin can re-enable Basic for SMTP AUTH: Exchange admin "
        "center > Settings > Mail flow; this only buys time."),
       category="mailbox", admin=True),
    _d("token_too_long", "Token too long for POP3",
       "Exchange's POP3 service refused the XOAUTH2 line and closed the connection ('Protocol error ... 10'): "
       "the access token for {mailbox} is longer than POP3 accepts on one command line (about 4 KB of base64). "
       "{detail}",
       (f"{_APP_REG} > Token configuration: if a groups claim is configured, remove it or limit it to 'Groups "
        "assigned to the application' (each group adds about 40 characters to every token).",
        "Or use IMAP (which accepts longer lines) or Microsoft Graph for this mailbox, if {system} offers it."),
       category="mailbox", admin=True),
    _d("secret_replicating", "New client secret not active yet",
       "Entra ID refused the client secret of {app} ({client_id}) that Graph shows as added moments ago: a new "
       "secret is refused for seconds to about two minutes while it replicates. {detail}",
       ("Nothing to do yet: mailwarden checks again within seconds and only calls it a failure once the grace "
        "period has passed.",
        "If it is still refused after a few minutes, compare the configured value with the secret's Value "
        "(not its Secret ID) in Certificates & secrets."),
       severity="warning", category="credential"),
    # --- the consuming system, mailwarden itself -------------------------------------------------
    _d("ews_retiring", "EWS in Exchange Online retires soon",
       "Exchange Online shuts EWS down on {retires_on} ({days_words}), with no exceptions: {system} reads {mailbox} "
       "through EWS, which then refuses every request. EWS answered this check.",
       ("Ask the vendor of {system} for its Microsoft Graph connector (or IMAP/SMTP with OAuth) and switch before "
        "{retires_on}.",
        Step(f"{_APP_REG} > API permissions > Add a permission > Microsoft Graph > Application permissions > "
             "Mail.ReadWrite (and Mail.Send if {system} sends mail) > Add permissions, then Grant admin consent.",
             flow=_APP_ONLY),
        Step(f"{_APP_REG} > API permissions > Add a permission > Microsoft Graph > Delegated permissions > "
             "Mail.ReadWrite.Shared (and Mail.Send.Shared if {system} sends mail) > Add permissions, then Grant "
             "admin consent.", flow=_DELEGATED),
        Step("Scope the app to the mailboxes {system} serves with RBAC for Applications (application access "
             "policies take no new entries): a management scope holding {mailbox} and New-ManagementRoleAssignment "
             "-Role 'Application Mail.ReadWrite' for the app's service principal; " + _EXO +
             "Test-ServicePrincipalAuthorization -Identity {client_id} -Resource {mailbox} shows the result.",
             flow=_APP_ONLY),
        "In mailwarden, replace the integration's ews check with graph_mail once {system} reads through Graph, so "
        "the path in use is the one checked.",
        Step("When nothing uses EWS any more, remove full_access_as_app from {app} (API permissions > the "
             "permission > Remove permission): it reaches every mailbox of the tenant.", flow=_APP_ONLY)),
       severity="warning", category="mailbox", admin=True),
    _d("inbox_backlog", "Mail not being processed",
       "Mail waits unprocessed in {mailbox} longer than its threshold ({detail}): mailwarden's own access "
       "works, so {system} has probably stopped reading.",
       (*_COLLECTOR,
        Step("For POP, check that {system} deletes or marks what it has fetched, or the backlog keeps growing.",
             check="pop")),
       severity="warning", category="consumer"),
    _d("consumer_not_collecting", "Consuming system stopped collecting mail",
       "Mail has waited uncollected in {mailbox} past the check's backlog_age and backlog_grace ({detail}). "
       "mailwarden's own access to the mailbox works, so {system} has stopped collecting: its mail service or "
       "poller is down or stuck, or its own sign-in or copy of the secret fails, which mailwarden does not hold. "
       "Mail sent to {mailbox} meanwhile is not being processed.",
       (*_COLLECTOR,
        Step("For POP, check that {system} deletes what it has fetched (a leave-on-server setting keeps the oldest "
             "message in place, and it counts as uncollected).", check="pop"),
        Step("Check that {system} marks what it has taken as read, or moves or deletes it: mail it processed but "
             "left unread in the inbox counts as uncollected.", check=("imap", "graph_mail", "ews")),
        "Once {system} collects again the backlog drains and the check recovers at its next run; answer the mail "
        "that waited, and if {system} needs more time per run, raise backlog_grace of the check in mailwarden's "
        "config."),
       category="consumer"),
    _d("canary_not_delivered", "Canary not delivered",
       "A canary another integration sent to {mailbox} (its subject starts with '[mailwarden canary]' and ends "
       "with its tag) did not arrive within the check's deliver_within ({detail}). Mail sent to {mailbox} is not "
       "reaching it, or reaches it late: the messages {system} should collect may be missing too.",
       ("Exchange admin center > Mail flow > Message trace: search for messages to {mailbox} with the canary's subject "
        "(the tag is in the summary): the trace says whether Exchange delivered, delayed, quarantined or rejected it.",
        "If it was quarantined or sent to Junk: Microsoft Defender portal > Email & collaboration > Review > "
        "Quarantine; release it, and let messages whose subject starts with '[mailwarden canary]' through (a mail "
        "flow rule that sets the spam confidence level to -1 for that subject).",
        "Check the mail flow rules (Exchange admin center > Mail flow > Rules) and the mailbox's inbox rules (" + _EXO +
        "Get-InboxRule -Mailbox {mailbox}) that move, forward or delete mail before it reaches the inbox.",
        Step("The imap check looks only in the folder it opens: a rule that moves the canary elsewhere looks like a "
             "canary never delivered.", check="imap"),
        "Check the sending integration's own result: its smtp or graph_mail check records each canary it sent; a "
        "canary it could not send is that check's failure, not this one's.",
        "Check Microsoft 365 service health (admin center > Health > Service health > Exchange Online) for delivery "
        "delays."),
       category="mailbox", admin=True),
    # --- the consuming system's own sign-ins (checks.consumer) -------------------------------------
    _d("consumer_signin_failed", "Consuming system fails to sign in",
       "Entra ID refuses the sign-ins of {system} itself to {app} ({client_id}) with {consumer_code} "
       "({consumer_problem}), and {system} has not signed in successfully since. {system} signs in with its own "
       "refresh token or its own copy of the credential, which mailwarden does not hold: mailwarden's own checks may "
       "pass meanwhile, and nothing done to mailwarden's token fixes {system}.",
       _CONSUMER_STEPS, category="consumer"),
    _d("consumer_silent", "Consuming system stopped signing in",
       "{system} has not signed in to {app} ({client_id}) for longer than the consumer check expects: it has "
       "probably stopped polling or sending mail (its service is down or stuck, or it was moved to another app "
       "registration). mailwarden's own checks do not show this: they use mailwarden's own sign-in.",
       ("Check that {system}'s mail service, poller or scheduled job runs, and read its mail or connector log.",
        Step("If that log shows an authentication error: {system_sign_in}", flow=_DELEGATED),
        Step("If that log shows an authentication error: in {system}, paste the Value of a current client secret "
             "of {app} into {secret_field}.", flow=_APP_ONLY),
        "Check that {system} still signs in with {app} ({client_id}); if it now uses another app registration, "
        "point the integration in mailwarden's config at that app.",
        "If {system} now signs in less often on purpose, raise expect_every of the integration's consumer check in "
        "mailwarden's config (the check's result suggests a value from the cadence it observed)."),
       category="consumer"),
    _d("consumer_unknown", "Consuming system's sign-ins unknown",
       "mailwarden cannot read the sign-ins of {system} itself in tenant {tenant_id}, so whether {system} signs in "
       "is unknown; mailwarden's own checks run as before. The result's note says why.",
       (Step("Sign-in logs of service principals and non-interactive sign-ins need Microsoft Entra ID P1 or P2, "
             "which tenant {tenant_id} lacks (Graph answers 403 Authentication_RequestFromNonPremiumTenantOrB2CTenant)."
             " With a P1 or P2 licence in the tenant mailwarden reads them at its next poll; without one, {system}'s "
             "own sign-ins stay unknown.", signin_state="unlicensed"),
        Step(f"{_ENTRA} > App registrations > {{monitor_app}} > API permissions > Add a permission > Microsoft Graph "
             "> Application permissions > AuditLog.Read.All and Directory.Read.All > Add permissions, then Grant "
             "admin consent and confirm their Status reads 'Granted' (the tenant also needs Microsoft Entra ID P1 or "
             "P2).", signin_state="forbidden"),
        Step("The sign-in log mailwarden reads (Graph beta auditLogs/signIns, with service principal and "
             "non-interactive sign-ins) is not offered in this tenant's cloud: {system}'s own sign-ins stay unknown "
             "there.", signin_state="unsupported"),
        Step("Nothing to do: mailwarden has not read tenant {tenant}'s sign-in log yet; its first poll fills this "
             "in.", signin_state="pending"),
        Step("mailwarden's last read of tenant {tenant}'s sign-in log failed (the note says why); it reads again at "
             "its next poll. If this lasts, check the sign-in of mailwarden's monitor app ({monitor_app}) and "
             "Microsoft 365 service health.", signin_state="error"),
        Step("No sign-in log is collected where this check ran: the consumer check is judged by the mailwarden "
             "process that polls the tenants' sign-in logs (mailwarden serve).", signin_state="none"),
        Step("The tenant needs Microsoft Entra ID P1 or P2, and mailwarden's monitor app ({monitor_app}) the "
             "Microsoft Graph permissions AuditLog.Read.All and Directory.Read.All with admin consent; the result's "
             "note says which is missing.", signin_state="unknown"),
        Step("To stop this note for an integration whose tenant cannot give sign-in logs, remove the consumer check "
             "from {integration} in mailwarden's config.", signin_state=("unlicensed", "unsupported"))),
       severity="info", category="consumer", admin=True),
    _d("blocked_by_token", "Waiting for the token check",
       "This check did not run because the token check of {integration} fails.",
       ("Fix the token check's failure first (see its diagnosis); this check runs again once it passes.",),
       severity="info", category="internal"),
    _d("storage_unavailable", "Not run: mailwarden's database is unavailable",
       "This check of {integration} needs what mailwarden stores (its delegated token cache), and mailwarden's "
       "database could not be read; nothing about {integration} is known from this run, and no state changed. "
       "It runs again at its next interval.",
       ("Bring mailwarden's database back: the log's `storage unavailable` and `check deferred` lines name it and "
        "the error; results taken meanwhile are written once it returns.",),
       severity="info", category="internal"),
    _d("worker_lost", "Not finished: the worker running it stopped twice",
       "Queue mode: the worker process running this check of {integration} stopped sending heartbeats twice while "
       "running it (killed, out of memory, its machine stopped, or cut off from mailwarden's database), so nothing "
       "about {integration} is known from this run. mailwarden does not run it a third time; it runs again at its "
       "next interval.",
       ("Read the workers' logs and their hosts' (the kernel's out-of-memory killer, container restarts) around the "
        "time of this result: `mailwarden worker` logs the check jobs it skips and every check it finishes.",
        "If the same check stops its worker every time, run it alone in the foreground: `mailwarden check "
        "--integration {integration}`, and report what it prints to the mailwarden maintainers."),
       category="internal"),
    _d("config_error", "Configuration error",
       "The configuration of {integration} is invalid or a credential reference (env:/file:) does not "
       "resolve. {detail}",
       ("Set the referenced environment variable or create the file (readable by mailwarden only), or fix "
        "the key named in the error.",
        "Run `mailwarden validate --resolve` until it reports no error, then restart or reload mailwarden."),
       category="internal"),
    _d("unexpected_reply", "Unexpected reply from the mail server",
       "The mail server answered in a way Exchange Online does not for this step ({detail}): a proxy, a "
       "different server, or a server-side problem.",
       ("Compare the configured host and port with Microsoft's (outlook.office365.com:993 IMAP, :995 POP3, "
        "smtp.office365.com:587 SMTP) and check that no proxy or TLS inspection sits in between.",
        "Check Microsoft 365 service health (admin center > Health > Service health > Exchange Online).",
        "If it persists, the redacted reply in the result's details says what the server said."),
       category="mailbox"),
    _d("reply_too_large", "Reply larger than mailwarden reads",
       "The server's HTTP reply was larger than mailwarden reads for this step, so mailwarden stopped "
       "reading and knows nothing about the mailbox ({detail}). Microsoft Graph and EWS answer these "
       "requests in a few KB: the configured endpoint or something in between answered instead.",
       ("Compare the configured cloud and endpoints (graph, ews) with Microsoft's "
        "(https://graph.microsoft.com/v1.0, https://outlook.office365.com/EWS/Exchange.asmx) and check "
        "that no proxy, captive portal or TLS inspection sits in between.",
        "Open the URL named in the result's summary from mailwarden's host and look at what answers.",
        "Check Microsoft 365 service health (admin center > Health > Service health)."),
       category="network"),
    _d("unclassified", "Unrecognised failure",
       "mailwarden could not match the reply to a known failure; the redacted reply is kept with the "
       "result ({detail}).",
       ("Read the reply in the result's details; look an AADSTS number up in Microsoft's list of Entra error "
        "codes (learn.microsoft.com/entra/identity-platform/reference-error-codes).",
        Step("Check Microsoft 365 service health and Entra sign-in logs for {account} / {client_id}.", flow=_DELEGATED),
        Step("Check Microsoft 365 service health and Entra's service principal sign-in logs for {client_id}.",
             flow=_APP_ONLY),
        "Report the reply (redacted) to the mailwarden maintainers so it gets its own code."),
       category="internal"),
)


CATALOG: dict[str, Diagnosis] = {d.code: d for d in _ENTRIES}

AADSTS_CODES: dict[int, str] = {
    7000222: "secret_expired",
    7000215: "secret_invalid",
    700027: "certificate_invalid",
    700024: "certificate_invalid",
    700016: "app_not_found",
    7000112: "app_disabled",
    70001: "app_disabled",
    90002: "tenant_not_found",
    50173: "refresh_token_revoked",
    70008: "refresh_token_expired",
    700082: "refresh_token_expired",
    65001: "consent_missing",
    65004: "consent_missing",  # the user declined the consent prompt
    90094: "consent_missing",
    50057: "user_disabled",
    50053: "user_locked",
    50055: "password_expired",
    50105: "user_not_assigned",
    50076: "mfa_required",
    50079: "mfa_required",
    50074: "mfa_required",
    53003: "conditional_access_blocked",
    53000: "conditional_access_blocked",
    70043: "signin_frequency",
    50078: "mfa_required",
    530035: "security_defaults_blocked",
    70000: "refresh_token_invalid",
    9002313: "refresh_token_invalid",
    700025: "public_client_token",
    500011: "resource_not_found",
    50196: "throttled",  # a client request loop: the app asks for the same token too often
    90055: "throttled",  # the tenant's token requests are throttled
    90033: "service_unavailable",  # a transient error in Entra ID
    7000218: "secret_invalid",  # a confidential app sent no secret or assertion
    50011: "redirect_uri_mismatch",
    500112: "redirect_uri_mismatch",
}
# AADSTS codes that are not a refusal of the credential: the status they get (M365_FACTS.md, "Throttling")
AADSTS_STATUS: dict[int, str] = {50196: "warn", 90055: "warn", 90033: "error"}


def get(code: str | None) -> Diagnosis:
    """The diagnosis for ``code``; an unknown code or None gives ``unclassified``."""
    return CATALOG.get(code or "", CATALOG["unclassified"])


def classify_aadsts(error_codes: Iterable[int] | None) -> str:
    """The diagnosis code of the first known AADSTS code (token endpoint ``error_codes``)."""
    for raw in error_codes or ():
        try:
            code = int(raw)
        except (TypeError, ValueError):
            continue
        if code in AADSTS_CODES:
            return AADSTS_CODES[code]
    return "unclassified"


def _steps(code: str, facts: Mapping[str, Any], tag: str | None = None) -> list[str]:
    values = _fill(facts)
    where = _situation(code, facts, values)
    out = []
    for step in get(code).fix:
        if tag is not None and getattr(step, "tag", "") != tag:
            continue
        label = _label(step, where) if isinstance(step, Step) else ""
        if label is None:
            continue
        text = _render(step, values)
        if text:  # a step made of an absent optional fact (ews_retirement, a system's own step) is left out
            out.append(f"{label}: {text}" if label else text)
    return out


def render_fix(code: str, **facts: str | None) -> list[str]:
    """The fix steps of ``code`` that apply to the result's facts (``checks.facts.facts``), filled in (defaults
    for the missing ones). A step for a flow, a check or a mailbox kind that the facts do not name is kept with a
    label saying what it is for."""
    return _steps(code, facts)


def render_cause(code: str, **facts: str | None) -> str:
    """The cause of ``code`` with the facts filled in (defaults for the missing ones)."""
    return _render(get(code).cause, _fill(facts))


def after_recovery(code: str | None, **facts: str | None) -> list[str]:
    """What is still to do in the consuming system once mailwarden's own token works again: the steps of ``code``
    that sign the system in again as the account (delegated integrations only; empty otherwise). mailwarden holds
    its own token, not the system's, so its recovery says nothing about the system's."""
    if str(facts.get("flow") or "") != _DELEGATED:
        return []
    return _steps(code or "", facts, SYSTEM_SIGN_IN)
