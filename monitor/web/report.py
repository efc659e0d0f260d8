"""`mailwarden report`: one self-contained HTML file (inline CSS and SVG, no script, no external request) for
e-mail or a file share, from the same templates as the web app.

What it holds: a compact row for every integration (tenant, name, worst status with its diagnosis, a chip per
check, since when, last success, 24 h availability), the open incidents, the secrets and certificates expiring
within 90 days, and the full page (availability and run bars, diagnosis, fix steps, latency, credentials,
incidents, transitions) of each integration that is not ok: fail, error, blocked, warn, or stale (a check without
a new result for twice its interval while the monitor itself runs). Ok, paused and pending integrations get their
row only, so the file stays small at any number of integrations.

It is read later than it is written, so its times are absolute UTC ("2026-12-02 14:03 UTC"), never "3 min ago".
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from markupsafe import Markup

from mailwarden.monitor.config import Config
from mailwarden.monitor.web import views
from mailwarden.monitor.web.app import STATIC_DIR, WebState, templates
from mailwarden.monitor.web.auth import Access
from mailwarden.monitor.web.pages import overview_context, page_context

DETAILED = ("fail", "error", "blocked", "warn")


def needs_detail(view: views.IntegrationView, monitor_stalled: bool) -> bool:
    """Not ok: a failing, unanswered, blocked or warning status, or stale checks. When the whole monitor has
    stalled every integration is stale; the banner says so, and only the statuses select details."""
    return view.status in DETAILED or (view.stale and not monitor_stalled)


def render_report(cfg: Config, store: Any, now: datetime | None = None) -> str:
    now = now or datetime.now(UTC)
    # idempotent: the report shows the hours up to now
    store.history.rollup_history(now, maintenance=cfg.alerts.maintenance)
    state = WebState(lambda: cfg, lambda: store, Access(mode="none"), cfg.web, env=templates())
    ctx = overview_context(state, now, hourly=False)
    chosen = [v for v in ctx["integrations"] if needs_detail(v, ctx["fresh"]["stale"])]
    details = views.details(cfg, store, chosen, now, compact=True)
    # our own stylesheet, inlined as it is: escaped, its quotes became &#34; and the fonts fell back to serif
    css = Markup((STATIC_DIR / "app.css").read_text(encoding="utf-8"))  # noqa: S704 - a file of the package
    return state.env.get_template("report.html").render(
        **page_context(None, state, now, css=css, details=details, detailed_names={v.name for v in chosen}, **ctx))
