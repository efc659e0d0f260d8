"""Alert messages from the Jinja2 templates in dashboards/templates/alerts: a title, a plain-text body and a
markdown body per notice. Every rendered string goes through ``mailwarden.redact.redact``.

What a message says: the integrations and checks, the diagnosis title and cause, the fix steps (the
catalog's, with the integration's facts), since when, the last success, the dashboard link, the
reauthorisation link when one is given and the diagnosis needs one, and the stable key
``<incident>/<kind>/<sequence>`` so that a receiver can drop a duplicate.

The fix steps are chosen by the facts of the failing result (``checks.facts.facts`` with the incident's checks and
the stored summary and metrics, as the dashboard reads them). Two notices say only what mailwarden knows: the
recovery of a delegated integration is mailwarden's own token working again, with the consuming system's own sign-in
still to do where the failure reached it too (``diagnoses.after_recovery``); a flapping notice keyed on a recovery
names no diagnosis unless a failure of the check is on record in it.

Outside text is inert in every body (``alerts.inert``): the Jinja environment escapes every value for the template's
format (``.txt.j2`` plain text, ``.md.j2`` markdown), as ``autoescape`` does for HTML, and the values this module
composes are built per format from escaped parts. Each body is rendered from its own values; the only links are
mailwarden's own (``web.base_url``, the reauthorisation links).

The reauthorisation links are never stored: ``render(..., link_slots=True)`` (what the dispatcher queues in its outbox)
writes a link slot where each link goes, holding both wordings (with the link, and without it, as when no request is
open), and ``fill`` puts the link in at send time, from the requests open then; a request closed by then gets the
wording without a link, and a section left with no link is left out. The slots are private-use characters, which
``inert.clean`` removes from every value: outside text can neither forge one nor make one hold anything else than a
link of mailwarden's own (``inert.own_url``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined, pass_context
from jinja2.runtime import Context as TemplateContext

from mailwarden.alerts import inert
from mailwarden.alerts.inert import MARKDOWN, TEXT
from mailwarden.alerts.policy import BAD, Notice
from mailwarden.alerts.ports import AlertConfig
from mailwarden.alerts.records import Incident
from mailwarden.checks import diagnoses
from mailwarden.checks.base import Outcome, Status
from mailwarden.checks.facts import facts
from mailwarden.redact import redact

LABELS = {"opened": "FAILING", "reminder": "STILL FAILING", "resolved": "RESOLVED", "grouped": "OUTAGE",
          "flapping": "FLAPPING"}
REASONS = {"recovered": "recovered", "removed": "closed: the integration left the configuration",
           "paused": "closed: the integration was paused", "stable": "stable again after flapping"}


@dataclass
class Message:
    title: str
    text: str
    markdown: str
    notify_type: str  # apprise NotifyType value


@dataclass
class CheckFacts:
    """What the store knows about one (integration, check) beyond the incident."""

    summary: str | None = None
    last_ok_at: datetime | None = None
    details: dict = field(default_factory=dict)  # the latest result's metrics (permission, days_left, ...)


@dataclass
class Context:
    config: AlertConfig
    checks: dict[tuple[str, str], CheckFacts] = field(default_factory=dict)
    reauth_urls: dict[str, str] = field(default_factory=dict)  # filled by the reauthorisation feature
    # tenant name -> the latest read of its Microsoft 365 service health (monitor.service_health.load)
    service_health: dict[str, dict] = field(default_factory=dict)
    # incident id -> (integration, directory change) that explain its failures (monitor.audits.incident_evidence)
    directory_audits: dict[int, list] = field(default_factory=dict)


def _directory_audits(inc: Incident, ctx: Context, fmt: str) -> list[str]:
    """Who changed what in the directory, and when, where a stored directory audit event explains the failure: the
    event as the directory wrote it (its text is outside text). Nothing where none matched, or none could be read."""
    return [inert.say(fmt, "Directory audit: {what} by {who} at {at} (tenant {tenant}, \"{activity}\", app of "
                      "{integration}).", what=e.what(), who=e.who(), at=_when(e.at), tenant=e.tenant,
                      activity=e.activity, integration=inert.config_text(name, fmt))
            for name, e in ctx.directory_audits.get(inc.id or 0, [])]


def _service_health(inc: Incident, names: list[str], ctx: Context, fmt: str) -> list[str]:
    """What Microsoft's service health said at its latest read, for a failure that can be Microsoft's (the network
    and service codes): its open incidents on Exchange Online and Microsoft Entra, or that none was open. Nothing
    where it was never read (no monitor app, or no ServiceHealth.Read.All: said once per tenant, not here)."""
    from mailwarden.alerts.policy import NETWORK_CODES

    if _code_of(inc) not in NETWORK_CODES:
        return []
    cfg = ctx.config
    named = {cfg.tenant_name_of(i) for i in cfg.integrations if i.name in names and i.app in cfg.apps}
    tenants = sorted(named | {inc.tenant} if inc.tenant is not None else named)
    lines = []
    for tenant in tenants:
        doc = ctx.service_health.get(tenant)
        if not doc or not doc.get("read_at"):
            continue
        read = _when(doc["read_at"])
        issues = doc.get("issues") or []
        if not issues:
            lines.append(inert.say(fmt, "Microsoft 365 service health (tenant {tenant}, read {read}) listed no open "
                                   "incident on Exchange Online or Microsoft Entra (Microsoft may post one later); "
                                   "look first between mailwarden and Microsoft (network, DNS, proxy, TLS "
                                   "inspection).", tenant=tenant, read=read))
            continue
        for i in issues:
            lines.append(inert.say(fmt, "Microsoft 365 service health (tenant {tenant}, read {read}): {id} "
                                   "\"{title}\" ({service}, {status}, since {since}): Microsoft's own {kind} may be "
                                   "the cause; its posts are in the Microsoft 365 admin center > Health > Service "
                                   "health.", tenant=tenant, read=read, id=i.get("id"), title=i.get("title"),
                                   service=i.get("service"), status=i.get("status"),
                                   since=_when(i.get("since")) if i.get("since") else "unknown",
                                   kind=i.get("classification") or "incident"))
    return lines


def _fmt(ctx: TemplateContext) -> str:
    """The body format of the template being rendered: markdown for ``*.md.j2``, plain text for the rest."""
    return MARKDOWN if (ctx.name or "").endswith(".md.j2") else TEXT


@pass_context
def _autoescape(ctx: TemplateContext, value: object) -> str:
    """Every ``{{ value }}``: inert for the template's format unless it already is (``inert.Text`` / ``Markdown``)."""
    return inert.escape(value, _fmt(ctx))


@pass_context
def _join(ctx: TemplateContext, items: object, sep: str = "", attribute: str | None = None) -> str:
    """``join`` that escapes each item (the separator is the template's own text), as autoescape's join does."""
    fmt = _fmt(ctx)
    values = [getattr(i, attribute) if attribute else i for i in items]  # type: ignore[attr-defined]
    return inert.SAFE[fmt](sep.join(inert.escape(v, fmt) for v in values))


@pass_context
def _url(ctx: TemplateContext, value: object) -> str:
    """A link target mailwarden composed (``[label]({{ url|url }})``): percent-encoded; a non-http(s) one is no link."""
    return inert.SAFE[_fmt(ctx)](inert.own_url(value) or "#")


@pass_context
def _code(ctx: TemplateContext, value: object) -> str:
    """A value shown as a code span in markdown (``{{ code|code }}``), backticks inside neutralised."""
    return inert.code(value, _fmt(ctx))


@pass_context
def _strong(ctx: TemplateContext, value: object) -> str:
    """A value in bold in markdown (``{{ value|strong }}``): nothing at all when it is empty ("****" is a rule)."""
    fmt = _fmt(ctx)
    shown = inert.escape(value, fmt)
    return inert.SAFE[fmt](f"**{shown}**" if fmt == MARKDOWN and shown else shown)


@lru_cache(maxsize=1)
def _env() -> Environment:
    # Jinja's own autoescape is HTML's (markupsafe): the bodies are plain text and markdown, so every output value
    # goes through ``finalize``, which escapes it for the template's format. Markup around a value only through
    # filters: |url (a link target), |code (a code span), |strong (bold), |join (escapes each item).
    env = Environment(loader=PackageLoader("mailwarden.dashboards", "templates"), autoescape=False,  # noqa: S701 - finalize escapes
                      finalize=_autoescape, undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True,
                      keep_trailing_newline=True)
    env.filters.update(join=_join, url=_url, code=_code, strong=_strong)
    return env


def _when(value: datetime | str | None) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def _title_of(inc: Incident) -> str:
    if inc.kind == "flapping":
        code = _code_of(inc)
        flapping = f"{inc.members[0]['check'] if inc.members else 'check'} is flapping"
        return f"{flapping} ({diagnoses.get(code).title})" if code else flapping
    return diagnoses.get(inc.code).title


def _names(inc: Incident) -> list[str]:
    return list(inc.affected) or sorted({m["integration"] for m in inc.members})


def render(notice: Notice, ctx: Context, *, route: str = "", link_slots: bool = False) -> Message:
    """The notice's title, plain-text body and markdown body; each body from values made for its format.

    The reauthorisation links are those of ``ctx.reauth_urls``; with ``link_slots`` the bodies hold a link slot for
    each instead (for the outbox: the link is put in at send time by ``fill``, never stored)."""
    text, notify_type = _values(notice, ctx, route, TEXT)
    md, _ = _values(notice, ctx, route, MARKDOWN)
    msg = _finish(text, md, notify_type)
    if not link_slots:
        msg.text, msg.markdown = fill(msg.text, TEXT, ctx.reauth_urls), fill(msg.markdown, MARKDOWN, ctx.reauth_urls)
    return msg


# -- link slots ----------------------------------------------------------------------------------------------------
# A slot: OPEN <integration name, hex> ALT <wording with the link at LINK> ALT <wording without a link> CLOSE; a
# section (the "Re-authorise:" list): SECTION <...> END, left out when none of its slots gets a link. Private use
# characters (``inert.clean`` drops them from every value), none of them ever inside a wording.
_OPEN, _ALT, _CLOSE, _LINK, _SECTION, _END = "\ue002", "\ue003", "\ue004", "\ue005", "\ue006", "\ue007"
_MARKS = _OPEN + _ALT + _CLOSE + _LINK + _SECTION + _END
_WORDING = f"[^{_OPEN}{_ALT}{_CLOSE}{_SECTION}{_END}]*"
_SLOT_RE = re.compile(f"{_OPEN}([0-9a-f]*){_ALT}({_WORDING}){_ALT}({_WORDING}){_CLOSE}")
_SECTION_RE = re.compile(f"{_SECTION}([^{_SECTION}{_END}]*){_END}")
_STRAY = re.compile(f"[{_MARKS}]")


def _slot(name: str, linked: str, unlinked: str, fmt: str) -> str:
    """A link slot for ``name``'s reauthorisation link: ``linked`` (``_LINK`` where the URL goes) when its request is
    open at send time, else ``unlinked``."""
    return inert.SAFE[fmt](f"{_OPEN}{name.encode().hex()}{_ALT}{linked}{_ALT}{unlinked}{_CLOSE}")


def has_slots(body: str) -> bool:
    """Whether ``body`` has a link slot for ``fill`` (an outbox body of an incident notice that needs a sign-in)."""
    return _OPEN in body


def fill(body: str, fmt: str, urls: dict[str, str]) -> str:
    """``body`` with each link slot filled: the link of the integration's open request (``urls``: integration name ->
    link, what ``monitor.reauth_links.open_urls`` gives at send time), written as mailwarden's own URL
    (``inert.own_url``), or the wording without a link when its request is no longer open; a section none of whose
    slots got a link is left out. ``fmt`` is the body's format (the slots hold that format's wording already)."""
    if not _STRAY.search(body):
        return body

    def slot(m: re.Match[str], linked: list[bool]) -> str:
        try:
            name = bytes.fromhex(m.group(1)).decode()
        except ValueError:
            return m.group(3)
        url = inert.own_url(urls[name]) if urls.get(name) else None
        if url is None:
            return m.group(3)
        linked.append(True)
        return m.group(2).replace(_LINK, url)

    def section(m: re.Match[str]) -> str:
        linked: list[bool] = []
        inner = _SLOT_RE.sub(lambda s: slot(s, linked), m.group(1))
        return inner if linked else ""

    out = _SECTION_RE.sub(section, body)
    out = _SLOT_RE.sub(lambda s: slot(s, []), out)
    return inert.SAFE[fmt](_STRAY.sub("", out))


def _values(notice: Notice, ctx: Context, route: str, fmt: str) -> tuple[dict, str]:
    """The template values of ``notice`` for one body format, and the Apprise notify type."""
    cfg = ctx.config
    base = cfg.web.base_url.rstrip("/")
    names_of = lambda names: [inert.config_text(n, fmt) for n in names]  # noqa: E731 - config's own names
    common: dict[str, Any] = {"kind": notice.kind, "key": notice.key, "base_url": base, "route": route}
    if notice.kind == "maintenance_summary":
        incs = [{"id": i.id, "title": _title_of(i), "names": names_of(_names(i)), "opened_at": _when(i.opened_at),
                 "resolved_at": _when(i.resolved_at)} for i in notice.incidents]
        values: dict[str, Any] = {**common, "window": notice.window, "window_end": _when(notice.window_end),
                                  "incidents": incs,
                                  "still_open": sum(1 for i in notice.incidents if i.status == "open")}
        return values, "warning"
    if notice.kind == "test":
        return common, "info"
    inc = notice.incident
    assert inc is not None
    members = inc.members or []
    code = _code_of(inc)
    diag = diagnoses.get(code) if code else None
    names = _names(inc)
    shown = names_of(names)
    items = []
    for m in sorted(members, key=lambda m: (m["integration"], m["check"])):
        known = ctx.checks.get((m["integration"], m["check"]), CheckFacts())
        items.append({"integration": inert.config_text(m["integration"], fmt), "check": m["check"],
                      "status": m["status"], "summary": known.summary, "since": _when(m.get("since")),
                      "last_success": _when(known.last_ok_at),
                      "dashboard": f"{base}/integrations/{m['integration']}"})
    # the reauthorisation links are mailwarden's own (monitor.reauth_links: base_url/reauth/<signed token>)
    reauth = [(n, ctx.reauth_urls[n]) for n in names if diag and diag.needs_reauth and n in ctx.reauth_urls
              and inert.own_url(ctx.reauth_urls[n])]
    if inc.kind == "account":  # one refresh token for all of them: one sign-in, through any one link, fixes all
        reauth = reauth[:1]
    fact = _facts(cfg, ctx, inc, names[0] if names else None, failing=notice.kind != "resolved")
    if diag is not None:
        fix = _catalog(diagnoses.render_fix, code, fact, fmt, None)
        if reauth:  # the steps that name the link: a slot with both wordings, the link put in at send time
            linked = _catalog(diagnoses.render_fix, code, fact, fmt, _LINK)
            if len(linked) == len(fix):
                fix = [step if with_link == step else _slot(reauth[0][0], with_link, step, fmt)
                       for with_link, step in zip(linked, fix, strict=True)]
    else:  # flapping with no failure on record in this incident: nothing to diagnose, only where to look
        where = items[0]["dashboard"] if items else base + "/"
        fix = [inert.say(fmt, "Open {where}: the check's recent results list each failure with its own diagnosis "
                         "and fix.", where=inert.link(where, fmt)),
               inert.say(fmt, "mailwarden sends no further notice for this check until it has not changed state for "
                         "{window}; then one notice says whether it settled working or failing, and with which "
                         "diagnosis.", window=_dur(cfg.alerts.flapping.window))]
    # a delegated integration's recovery is mailwarden's own token: the consuming system holds its own
    still = _still_to_do(cfg, ctx, inc, names, fmt) \
        if notice.kind == "resolved" and inc.resolve_reason == "recovered" else []
    title = _title_of(inc)
    label = LABELS.get(notice.kind, notice.kind.upper())
    joined = inert.SAFE[fmt](", ".join(shown))
    if still:
        label = "RESOLVED (mailwarden's own token only)"
        headline = inert.say(fmt, "mailwarden's own token works again ({title}): {names}, open since {since}. The "
                             "consuming system's own sign-in is still to do, below.", title=title, names=joined,
                             since=_when(inc.opened_at))
    elif notice.kind == "resolved":
        headline = inert.say(fmt, "Resolved ({reason}): {title} - {names}, open since {since}",
                             reason=REASONS.get(inc.resolve_reason or "", inc.resolve_reason), title=title,
                             names=joined, since=_when(inc.opened_at))
    elif notice.kind == "flapping":
        headline = inert.say(fmt, "{names}: {check} keeps changing state ({n}+ changes within {window}); no further "
                             "notices until it is stable", names=joined,
                             check=items[0]["check"] if items else "a check", n=cfg.alerts.flapping.transitions,
                             window=_dur(cfg.alerts.flapping.window))
    elif notice.kind == "reminder":
        headline = inert.say(fmt, "Still failing since {since} (reminder {n}): {title}", since=_when(inc.opened_at),
                             n=inc.reminders, title=title)
    elif notice.kind == "grouped":
        headline = inert.say(fmt, "{n} integrations failing: {title}", n=len(names), title=title)
    else:
        headline = inert.say(fmt, "{title}: {names}", title=title, names=joined)
    note = None
    if inc.kind == "credential" and len(names) > 1:
        note = inert.say(fmt, "One credential of app {app} ({client_id}) is shared by {n} integrations, all "
                         "affected: {names}.", app=fact.get("app"), client_id=inc.client_id, n=len(names),
                         names=joined)
    elif inc.kind == "account" and len(names) > 1:
        note = inert.say(fmt, "{n} integrations sign in as the same account with app {app} and share mailwarden's "
                         "token of it: {names}. One reauthorisation fixes all of them.", n=len(names),
                         app=fact.get("app"), names=joined)
    if diag is None:
        cause = inert.say(fmt, "this notice holds no failure of the check, which changed state {n} or more times "
                          "within {window}; its latest result is {status}.", n=cfg.alerts.flapping.transitions,
                          window=_dur(cfg.alerts.flapping.window),
                          status=items[0]["status"] if items else "unknown")
    else:
        cause = _catalog(diagnoses.render_cause, code, fact, fmt, None)
    values = {**common, "label": label, "title": title, "diagnosis": diag, "code": code,
              "cause": cause, "items": items, "names": shown, "fix": fix, "still_to_do": still,
              "headline": headline, "affected_note": note, "tenant": inc.tenant,
              "service_health": _service_health(inc, names, ctx, fmt) if notice.kind != "resolved" else [],
              "directory_audits": _directory_audits(inc, ctx, fmt) if notice.kind != "resolved" else [],
              "reauth_links": [(n, _template_slot(n, fmt)) for n, _ in reauth],
              "reauth_section": {"open": inert.SAFE[fmt](_SECTION), "end": inert.SAFE[fmt](_END)},
              "ack": f"{inc.ack_by} at {_when(inc.ack_at)}" if inc.ack_by else None, "incident_id": inc.id}
    kind = {"resolved": "success", "flapping": "warning"}.get(notice.kind)
    return values, kind or ("warning" if diag and diag.severity == "warning" else "failure")


def _template_slot(name: str, fmt: str) -> dict[str, str]:
    """The marks of one link slot for a template (``{{ s.open }}...{{ s.url }}...{{ s.alt }}{{ s.close }}``: the
    wording between ``open`` and ``alt`` shows with the link, nothing without)."""
    safe = inert.SAFE[fmt]
    return {"open": safe(f"{_OPEN}{name.encode().hex()}{_ALT}"), "url": safe(_LINK), "alt": safe(_ALT),
            "close": safe(_CLOSE)}


# The facts (checks.facts.facts) the catalog chooses steps by and never shows: passed as they are.
_CHOOSERS = frozenset({"flow", "check", "reauth_after_rotation", "token_checked", "ews_retirement", "graph_reason",
                       "monitor_code"})
# Facts mailwarden derives itself (permission names, dates, counts) or the configuration names: escaped, not defanged
# (``Mail.ReadWrite`` stays as written). Every other fact (a result's summary, the address a server reported, the
# monitor app's refusal) is outside text: defanged too.
_OWN = frozenset({"permission", "permission_path", "days_left", "days_words", "expires_on", "retires_on", "system",
                  "integration", "mailbox", "account", "client_id", "app", "tenant_id", "tenant", "secret_field",
                  "sender", "monitor_app", "monitor_client_id"})
# mailwarden's own links among the facts: shown as links, through a placeholder the escaping leaves alone
_LINKS = ("reauth_url", "callback_url")
_SLOT = "\ue000{}\ue001"  # private use: ``inert.clean`` removes these from every fact, so none can forge a slot


def _catalog(fn, code: str | None, fact: dict, fmt: str, reauth_url: str | None):
    """``diagnoses.render_fix`` / ``render_cause`` / ``after_recovery`` for one body format: each fact made inert
    before it is filled in (for markdown with no backtick left, so the catalog's own code spans stay whole), the
    catalog's text escaped around its code spans, mailwarden's links put back as links. ``reauth_url`` ``_LINK``: the
    place of the link in a slot (``_slot``), written as the link is (an autolink in markdown)."""
    given: dict[str, str | None] = {}
    for k, v in fact.items():
        if v is None or k in _CHOOSERS or k in _LINKS:
            given[k] = v
            continue
        value = redact(inert.clean(v))
        value = value if k in _OWN else inert.defang(value)
        given[k] = value.replace("`", inert.NEUTRAL_BACKTICK) if fmt == MARKDOWN else value
    links = {"reauth_url": reauth_url, "callback_url": fact.get("callback_url")}
    for i, name in enumerate(_LINKS):
        if links[name]:
            given[name] = _SLOT.format(i)

    def finish(text: str) -> str:
        out = inert.trusted(text, fmt)
        for i, name in enumerate(_LINKS):
            if links[name] == _LINK:
                out = out.replace(_SLOT.format(i), f"<{_LINK}>" if fmt == MARKDOWN else _LINK)
            elif links[name]:
                out = out.replace(_SLOT.format(i), inert.link(links[name], fmt))
        return inert.SAFE[fmt](out)

    result = fn(code, **given)
    return [finish(step) for step in result] if isinstance(result, list) else finish(result)


def _code_of(inc: Incident) -> str | None:
    """The diagnosis an incident is about. A flapping one is keyed on the change that made it flap, which may be a
    recovery ("ok"): its diagnosis is its failing member's, when one is on record, else none."""
    if inc.kind != "flapping":
        return inc.code
    failing = next((m for m in inc.members or [] if m.get("status") in BAD and m.get("code") in diagnoses.CATALOG),
                   None)
    if failing is not None:
        return failing["code"]
    return inc.code if inc.code in diagnoses.CATALOG else None


def _facts(cfg: AlertConfig, ctx: Context, inc: Incident, name: str | None, *, failing: bool) -> dict:
    """The facts of ``name``'s part in the incident: its checks, and what its failing result recorded (the summary,
    the missing permission, the days left), as the dashboard reads them from that result."""
    integ = _integration(cfg, name)
    if integ is None:
        return {}
    mine = [m for m in inc.members or [] if m["integration"] == integ.name]
    kinds = sorted({m["check"] for m in mine}) or None
    lead = next((m for m in mine if m.get("status") in BAD), None) or \
        next((m for m in mine if m.get("status") == "warn"), None)
    outcome = None
    if lead is not None and failing:
        known = ctx.checks.get((integ.name, lead["check"]), CheckFacts())
        outcome = Outcome(Status(lead["status"]), lead.get("code") or inc.code, known.summary or "",
                          metrics=dict(known.details or {}))
    return facts(cfg, integ, outcome, check=kinds)


def _still_to_do(cfg: AlertConfig, ctx: Context, inc: Incident, names: list[str], fmt: str) -> list[str]:
    """The consuming systems' own sign-ins after mailwarden's token recovered (``diagnoses.after_recovery``), for
    each delegated integration of the incident, once per system."""
    steps: list[str] = []
    for name in names:
        integ = _integration(cfg, name)
        if integ is None or integ.flow != "delegated":
            continue
        facts = _facts(cfg, ctx, inc, name, failing=False)
        for step in _catalog(diagnoses.after_recovery, inc.code, facts, fmt, None):
            if step not in steps:
                steps.append(step)
    return steps


def _dur(seconds: float) -> str:
    return f"{seconds / 3600:g} h" if seconds >= 3600 else f"{seconds / 60:g} min"


def _integration(cfg: AlertConfig, name: str | None):
    try:
        return cfg.integration(name) if name else None
    except KeyError:  # left the config: the message still names it
        return None


def _finish(text_values: dict, md_values: dict, notify_type: str) -> Message:
    env = _env()
    title = env.get_template("alerts/title.txt.j2").render(**text_values).strip()
    text = env.get_template("alerts/body.txt.j2").render(**text_values)
    md = env.get_template("alerts/body.md.j2").render(**md_values)
    return Message(redact(title), redact(text).strip() + "\n", inert.fix_masks(redact(md)).strip() + "\n",
                   notify_type)
