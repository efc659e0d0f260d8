"""Alert messages from the Jinja2 templates in dashboards/templates/alerts: a title, a plain-text body and a
markdown body per notice. Every rendered string goes through ``monitor.redact.redact``.

What a message says: the integrations and checks, the diagnosis title and cause, the fix steps (the
catalog's, with the integration's facts), since when, the last success, the dashboard link, the
reauthorisation link when one is given and the diagnosis needs one, and the stable key
``<incident>/<kind>/<sequence>`` so that a receiver can drop a duplicate.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache

from jinja2 import Environment, PackageLoader, StrictUndefined

from alerts.policy import Notice
from checks import diagnoses
from monitor.config import Config
from monitor.models import Incident
from monitor.redact import redact
from monitor.runner import facts

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
    env = Environment(loader=PackageLoader("dashboards", "templates"), autoescape=False,  # noqa: S701 - text/markdown
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
        return f"{inc.members[0]['check'] if inc.members else 'check'} is flapping"
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
    code = inc.code
    diag = diagnoses.get(code)
    members = inc.members or []
    first = _integration(cfg, members[0]["integration"] if members else (inc.affected or [None])[0])
    fact = facts(cfg, first) if first else {}
    for m in members:  # what the failing result itself says: the missing permission, the days left
        details = ctx.checks.get((m["integration"], m["check"]), CheckFacts()).details
        if details.get("permission") and not fact.get("permission"):
            fact["permission"] = str(details["permission"])
        if details.get("days_left") is not None and not fact.get("days_left"):
            fact["days_left"] = str(details["days_left"])
    items = []
    for m in sorted(members, key=lambda m: (m["integration"], m["check"])):
        known = ctx.checks.get((m["integration"], m["check"]), CheckFacts())
        items.append({"integration": m["integration"], "check": m["check"], "status": m["status"],
                      "summary": known.summary, "since": _when(m.get("since")),
                      "last_success": _when(known.last_ok_at), "dashboard": f"{base}/integrations/{m['integration']}"})
    names = _names(inc)
    reauth = [(n, ctx.reauth_urls[n]) for n in names if diag.needs_reauth and n in ctx.reauth_urls]
    fix = diagnoses.render_fix(code, **fact, **({"reauth_url": reauth[0][1]} if reauth else {}))
    if notice.kind == "resolved":
        headline = f"Resolved ({REASONS.get(inc.resolve_reason or '', inc.resolve_reason)}): {_title_of(inc)}"
        headline += f" - {', '.join(names)}, open since {_when(inc.opened_at)}"
    elif notice.kind == "flapping":
        headline = (f"{', '.join(names)}: {items[0]['check'] if items else 'a check'} keeps changing state "
                    f"({cfg.alerts.flapping.transitions}+ changes within {_dur(cfg.alerts.flapping.window)}); "
                    "no further notices until it is stable")
    elif notice.kind == "reminder":
        headline = f"Still failing since {_when(inc.opened_at)} (reminder {inc.reminders}): {diag.title}"
    elif notice.kind == "grouped":
        headline = f"{len(names)} integrations failing: {diag.title}"
    else:
        headline = f"{diag.title}: {', '.join(names)}"
    note = None
    if inc.kind == "credential" and len(names) > 1:
        note = (f"One credential of app {fact.get('app')} ({inc.client_id}) is shared by {len(names)} integrations, "
                f"all affected: {', '.join(names)}.")
    values = {**common, "label": LABELS.get(notice.kind, notice.kind.upper()), "diagnosis": diag, "code": code,
              "cause": diagnoses.render_cause(code, **fact), "items": items, "names": names, "fix": fix,
              "headline": headline, "affected_note": note, "reauth_links": reauth, "tenant": inc.tenant,
              "ack": f"{inc.ack_by} at {_when(inc.ack_at)}" if inc.ack_by else None, "incident_id": inc.id}
    kind = {"resolved": "success", "flapping": "warning"}.get(notice.kind)
    return _finish(values, kind or ("warning" if diag.severity == "warning" else "failure"))


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
