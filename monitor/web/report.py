"""`mailwarden report`: one self-contained HTML file (inline CSS and SVG, no script, no external request),
rendered from the same templates as the web app, for e-mail or a file share."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from monitor.config import Config
from monitor.web import views
from monitor.web.app import STATIC_DIR, WebState, templates
from monitor.web.auth import Access
from monitor.web.pages import overview_context, page_context


def render_report(cfg: Config, store: Any, now: datetime | None = None) -> str:
    now = now or datetime.now(UTC)
    store.rollup_history(now)  # idempotent: the report shows the hours up to now
    state = WebState(lambda: cfg, lambda: store, Access(mode="none"), cfg.web, env=templates())
    ctx = overview_context(state, now)
    details = [views.detail(cfg, store, v.name, now) for v in ctx["integrations"]]
    css = (STATIC_DIR / "app.css").read_text(encoding="utf-8")
    return state.env.get_template("report.html").render(
        **page_context(None, state, now, css=css, details=[d for d in details if d], **ctx))
