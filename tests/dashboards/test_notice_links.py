"""Every link in every kind of notice mailwarden sends resolves in its web app.

In the demo world (the sandbox tenant, one cycle of checks, one dispatch: tests/dashboards/conftest.py) this
renders each notice kind the way mailwarden renders it (alerts.messages for incident notices and the
maintenance summary, alerts.expiry for expiry reminders and rotation notices, the reauthorisation link slot
filled as the scheduler fills it), adds what the demo really queued in its outbox, extracts every URL that points
at mailwarden's ``web.base_url`` and follows it, signed in, through the web app. A link a person follows from an
alert must never answer 404 (the maintenance summary's ``/incidents`` did) or 500.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from starlette.testclient import TestClient

from mailwarden.alerts import expiry, messages
from mailwarden.alerts.policy import Notice
from mailwarden.monitor.models import Rotation
from mailwarden.monitor.reauth_links import open_urls
from mailwarden.monitor.secrets import NOTICE_TEXT, SecretsCycle
from mailwarden.monitor.web.auth import Access
from tests.dashboards.conftest import login, make_app

URL = re.compile(r"https?://[^\s<>\"'`)\]]+")
KINDS = {"opened", "reminder", "resolved", "grouped", "flapping", "maintenance_summary", "expiry", "rotation",
         "reauth"}


def _notices(env, now: datetime) -> list[tuple[str, str]]:
    """(kind, text and markdown of one message) for every kind of notice, from the demo's own state."""
    rt = env.runtime
    cfg, store = rt.config, rt.store
    out: list[tuple[str, str]] = []

    def add(kind: str, msg) -> None:
        out.append((kind, "\n".join((msg.title, msg.text, msg.markdown))))

    # what the demo really queued: its opening notices and the expiry reminders of the first secrets cycle
    for d in store.alerts.deliveries():
        out.append((d.kind, "\n".join((d.title, d.body_text or "", d.body_markdown or ""))))

    open_incidents = store.alerts.incidents("open")
    assert open_incidents, "the demo opens incidents"
    reauth = open_urls(cfg, store, rt.cipher, now)  # what the scheduler's dispatcher puts in the link slot
    assert reauth, "the demo's revoked delegated integration has an open reauthorisation request"
    ctx = messages.Context(cfg, reauth_urls=reauth)
    for inc in open_incidents:
        for kind in ("opened", "reminder", "grouped", "flapping"):
            add(kind, messages.render(Notice(kind, inc, 1), ctx))
        names = set(inc.affected) | {m["integration"] for m in inc.members}
        if names & set(reauth):
            add("reauth", messages.render(Notice("opened", inc, 1), ctx))
        resolved = inc.model_copy(update={"status": "resolved", "resolved_at": now, "resolve_reason": "recovered"})
        add("resolved", messages.render(Notice("resolved", resolved, 2), ctx))
    closed = open_incidents[0].model_copy(update={"status": "resolved", "resolved_at": now,
                                                  "resolve_reason": "recovered"})
    add("maintenance_summary", messages.render(
        Notice("maintenance_summary", None, 1, window="patch", window_end=now, incidents=[*open_incidents, closed]),
        ctx))
    add("test", messages.render(Notice("test", None, window="console", window_end=now), ctx))

    # an expiry reminder and every rotation notice for each app an integration uses
    cycle = SecretsCycle(cfg, store, rt.tokens, rt.credentials, lambda: now)
    for name, app in cfg.apps.items():
        users = [i for i in cfg.integrations if i.app == name]
        creds = [c for c in store.inventory.credentials(app.client_id) if c.reference and c.expires_at]
        if not users or not creds:
            continue
        c = creds[0]
        facts = expiry.CredentialFacts(name, app.client_id, c.kind, c.key_id or "", c.display_name, c.hint,
                                       c.expires_at)
        for stage in (60, 14, 0):
            add("expiry", expiry.render_reminder(cfg, facts, users, stage, now, f"expiry/{app.client_id}/x/{stage}"))
        row = Rotation(client_id=app.client_id, key_id=c.key_id or "", app=name, tenant=app.tenant, hint=c.hint,
                       old_expires_at=c.expires_at, reference=app.secret, started_at=now, updated_at=now)
        for notice, (title, notify_type) in NOTICE_TEXT.items():
            add("rotation", expiry.render_rotation(
                cfg, app_name=name, event=notice, headline=title.format(app=app.display_name or name),
                detail="detail", steps=cycle._steps_for(notice, name, row, users), key=f"rotation/x/{notice}",
                notify_type=notify_type))
    return out


def test_every_link_in_every_notice_answers(demo, admin_hash):
    from mailwarden.monitor.scheduler import Monitor

    env, _ = demo
    cfg = env.runtime.config
    base = cfg.web.base_url.rstrip("/")
    now = datetime.now(UTC) + timedelta(seconds=1)
    notices = _notices(env, now)
    assert KINDS <= {kind for kind, _ in notices}, {kind for kind, _ in notices}

    links: dict[str, set[str]] = {}  # path -> the notice kinds it appears in
    for kind, text in notices:
        for url in URL.findall(text):
            url = url.rstrip(".,;:")
            if url == base or url.startswith(base + "/"):
                links.setdefault(url[len(base):] or "/", set()).add(kind)
    assert "/incidents" in links and "/" in links and any(p.startswith("/integrations/") for p in links)
    assert any(p.startswith("/reauth/") for p in links), "a reauthorisation link was rendered"

    # With the scheduler's runtime at hand, as in `serve`: the reauthorisation links are checked against it.
    app = make_app(env, Access(mode="password", user="admin", password_hash=admin_hash), monitor=Monitor(env.runtime))
    with TestClient(app, base_url=base) as client:
        assert login(client).status_code == 303
        answers = {path: client.get(path, follow_redirects=False).status_code for path in sorted(links)}
    for path, status in answers.items():
        if path.startswith("/reauth/"):
            # a reauthorisation link is single-use: once its sign-in succeeded it answers 410 Gone, by design
            assert status in (200, 410), (path, status, links[path])
        else:
            assert status == 200, (path, status, links[path])
