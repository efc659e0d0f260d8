"""Alert messages from the Jinja2 templates in dashboards/templates/alerts: a title, a plain-text body and a
markdown body per notice. Every rendered string goes through ``monitor.redact.redact``.

What a message says: the integrations and checks, the diagnosis title and cause, the fix steps (the
catalog's, with the integration's facts), since when, the last success, the dashboard link, the
reauthorisation link when one is given and the diagnosis needs one, and the stable key
``<incident>/<kind>/<sequence>`` so that a receiver can drop a duplicate.

The fix steps are chosen by the facts of the failing result (``monitor.runner.facts`` with the incident's checks and
the stored summary and metrics, as the dashboard reads them). Two notices say only what mailwarden knows: the
recovery of a delegated integration is mailwarden's own token working again, with the consuming system's own sign-in
still to do where the failure reached it too (``diagnoses.after_recovery``); a flapping notice keyed on a recovery
names no diagnosis unless a failure of the check is on record in it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache

from jinja2 import Environment, PackageLoader, StrictUndefined

from mailwarden.alerts.policy import BAD, Notice
from mailwarden.checks import diagnoses
from mailwarden.checks.base import Outcome, Status
from mailwarden.monitor.config import Config
from mailwarden.monitor.models import Incident
from mailwarden.monitor.runner import facts
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
    config: Config
    checks: dict[tuple[str, str], CheckFacts] = field(default_factory=dict)
    reauth_urls: dict[str, str] = field(default_factory=dict)  # filled by the reauthorisation feature


@lru_cache(maxsize=1)
def _env() -> Environment:
    env = Environment(loader=PackageLoader("mailwarden.dashboards", "templates"), autoescape=False,  # noqa: S701 - text/markdown
                      undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
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


def render(notice: Notice, ctx: Context, *, route: str = "") -> Message:
    cfg = ctx.config
    base = cfg.web.base_url.rstrip("/")
    common = {"kind": notice.kind, "key": notice.key, "base_url": base, "route": route}
    if notice.kind == "maintenance_summary":
        incs = [{"id": i.id, "title": _title_of(i), "names": _names(i), "opened_at": _when(i.opened_at),
                 "resolved_at": _when(i.resolved_at)} for i in notice.incidents]
        values = {**common, "window": notice.window, "window_end": _when(notice.window_end), "incidents": incs,
                  "still_open": sum(1 for i in notice.incidents if i.status == "open")}
        return _finish(values, "warning")
    if notice.kind == "test":
        return _finish(common, "info")
    inc = notice.incident
    assert inc is not None
    members = inc.members or []
    code = _code_of(inc)
    diag = diagnoses.get(code) if code else None
    names = _names(inc)
    fact = _facts(cfg, ctx, inc, names[0] if names else None, failing=notice.kind != "resolved")
    items = []
    for m in sorted(members, key=lambda m: (m["integration"], m["check"])):
        known = ctx.checks.get((m["integration"], m["check"]), CheckFacts())
        items.append({"integration": m["integration"], "check": m["check"], "status": m["status"],
                      "summary": known.summary, "since": _when(m.get("since")),
                      "last_success": _when(known.last_ok_at), "dashboard": f"{base}/integrations/{m['integration']}"})
    reauth = [(n, ctx.reauth_urls[n]) for n in names if diag and diag.needs_reauth and n in ctx.reauth_urls]
    if inc.kind == "account":  # one refresh token for all of them: one sign-in, through any one link, fixes all
        reauth = reauth[:1]
    if diag is not None:
        fix = diagnoses.render_fix(code, **fact, **({"reauth_url": reauth[0][1]} if reauth else {}))
    else:  # flapping with no failure on record in this incident: nothing to diagnose, only where to look
        fix = [f"Open {items[0]['dashboard'] if items else base + '/'}: the check's recent results list each "
               "failure with its own diagnosis and fix.",
               f"mailwarden sends no further notice for this check until it has not changed state for "
               f"{_dur(cfg.alerts.flapping.window)}; then one notice says whether it settled working or failing, "
               "and with which diagnosis."]
    # a delegated integration's recovery is mailwarden's own token: the consuming system holds its own
    still = _still_to_do(cfg, ctx, inc, names) if notice.kind == "resolved" and inc.resolve_reason == "recovered" \
        else []
    title = _title_of(inc)
    label = LABELS.get(notice.kind, notice.kind.upper())
    if still:
        label = "RESOLVED (mailwarden's own token only)"
        headline = (f"mailwarden's own token works again ({title}): {', '.join(names)}, open since "
                    f"{_when(inc.opened_at)}. The consuming system's own sign-in is still to do, below.")
    elif notice.kind == "resolved":
        headline = f"Resolved ({REASONS.get(inc.resolve_reason or '', inc.resolve_reason)}): {title}"
        headline += f" - {', '.join(names)}, open since {_when(inc.opened_at)}"
    elif notice.kind == "flapping":
        headline = (f"{', '.join(names)}: {items[0]['check'] if items else 'a check'} keeps changing state "
                    f"({cfg.alerts.flapping.transitions}+ changes within {_dur(cfg.alerts.flapping.window)}); "
                    "no further notices until it is stable")
    elif notice.kind == "reminder":
        headline = f"Still failing since {_when(inc.opened_at)} (reminder {inc.reminders}): {title}"
    elif notice.kind == "grouped":
        headline = f"{len(names)} integrations failing: {title}"
    else:
        headline = f"{title}: {', '.join(names)}"
    note = None
    if inc.kind == "credential" and len(names) > 1:
        note = (f"One credential of app {fact.get('app')} ({inc.client_id}) is shared by {len(names)} integrations, "
                f"all affected: {', '.join(names)}.")
    elif inc.kind == "account" and len(names) > 1:
        note = (f"{len(names)} integrations sign in as the same account with app {fact.get('app')} and share "
                f"mailwarden's token of it: {', '.join(names)}. One reauthorisation fixes all of them.")
    if diag is None:
        cause = (f"this notice holds no failure of the check, which changed state {cfg.alerts.flapping.transitions} or "
                 f"more times within {_dur(cfg.alerts.flapping.window)}; its latest result is "
                 f"{items[0]['status'] if items else 'unknown'}.")
    else:
        cause = diagnoses.render_cause(code, **fact)
    values = {**common, "label": label, "title": title, "diagnosis": diag, "code": code,
              "cause": cause, "items": items, "names": names, "fix": fix, "still_to_do": still,
              "headline": headline, "affected_note": note, "reauth_links": reauth, "tenant": inc.tenant,
              "ack": f"{inc.ack_by} at {_when(inc.ack_at)}" if inc.ack_by else None, "incident_id": inc.id}
    kind = {"resolved": "success", "flapping": "warning"}.get(notice.kind)
    return _finish(values, kind or ("warning" if diag and diag.severity == "warning" else "failure"))


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


def _facts(cfg: Config, ctx: Context, inc: Incident, name: str | None, *, failing: bool) -> dict:
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


def _still_to_do(cfg: Config, ctx: Context, inc: Incident, names: list[str]) -> list[str]:
    """The consuming systems' own sign-ins after mailwarden's token recovered (``diagnoses.after_recovery``), for
    each delegated integration of the incident, once per system."""
    steps: list[str] = []
    for name in names:
        integ = _integration(cfg, name)
        if integ is None or integ.flow != "delegated":
            continue
        for step in diagnoses.after_recovery(inc.code, **_facts(cfg, ctx, inc, name, failing=False)):
            if step not in steps:
                steps.append(step)
    return steps


def _dur(seconds: float) -> str:
    return f"{seconds / 3600:g} h" if seconds >= 3600 else f"{seconds / 60:g} min"


def _integration(cfg: Config, name: str | None):
    try:
        return cfg.integration(name) if name else None
    except KeyError:  # left the config: the message still names it
        return None


def _finish(values: dict, notify_type: str) -> Message:
    env = _env()
    title = env.get_template("alerts/title.txt.j2").render(**values).strip()
    text = env.get_template("alerts/body.txt.j2").render(**values)
    md = env.get_template("alerts/body.md.j2").render(**values)
    return Message(redact(title), redact(text).strip() + "\n", redact(md).strip() + "\n", notify_type)
