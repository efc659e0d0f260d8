"""Reauthorisation through the web app against the sandbox: a delegated world whose refresh token was
revoked, a Monitor (not started) whose runner the callback uses, and a TestClient on the app's base URL."""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import apprise
import pytest
from starlette.testclient import TestClient

from mailwarden.monitor.alerting import make_dispatcher
from mailwarden.monitor.reauth_links import for_runtime
from mailwarden.monitor.scheduler import Monitor
from mailwarden.monitor.web.app import create_app
from mailwarden.monitor.web.auth import Access, hash_password

BASE = "http://127.0.0.1:8080"
CAPTURED: list[dict] = []


@apprise.decorators.notify(on="mwreauth", name="reauth test capture")
def _capture(body, title, notify_type, *args, **kwargs):
    CAPTURED.append({"title": title, "body": body})
    return True


def csrf_of(html: str) -> str:
    m = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert m, "no CSRF token in the page"
    return m.group(1)


def outcome_of(html: str) -> str:
    m = re.search(r'data-outcome="([^"]+)"', html)
    assert m, html[:2000]
    return m.group(1)


@dataclass
class Env:
    w: Any
    monitor: Monitor
    client: TestClient
    user: tuple[str, str] | None = None  # (upn, password) of who signs in, when not the world's own user

    @property
    def rt(self):
        return self.monitor.runtime

    def dispatch(self):
        return make_dispatcher(self.rt.config, self.rt.store, reauth_urls=for_runtime(self.rt)).run_once()

    def link(self) -> str:
        urls = for_runtime(self.rt)()
        assert "subject" in urls, "no open reauthorisation request"
        return urls["subject"]

    def start(self, link: str | None = None) -> str:
        """Open the link, press the button; returns the authorize URL the browser is sent to."""
        page = self.client.get(link or self.link())
        assert page.status_code == 200, page.text
        r = self.client.post(link or self.link(), data={"csrf_token": csrf_of(page.text)}, follow_redirects=False)
        assert r.status_code == 303, r.text
        return r.headers["location"]


def run(w, kind: str):
    """``w.run`` in a worker thread: Playwright's sync API keeps an event loop running in this one."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(w.run, kind).result()


@pytest.fixture
def revoked(world):
    """A delegated integration signed in once, then its sessions revoked: token check failing, incident open."""
    made: list[Env] = []

    def make(base_url: str = BASE, prepare=None, **kw) -> Env:
        """``prepare(w)``, when given, sets the world up further (another user, another account) and returns
        the (upn, password) that signs in for the integration."""
        w = world("delegated", **kw)
        user = prepare(w) if prepare is not None else None
        upn, password = user or (w.upn, w.password)
        if base_url != BASE:  # what an admin registers: <base_url>/auth/callback on the Web platform
            w.ctl.patch_app(w.app_id, redirect_uris=[BASE + "/auth/callback", base_url + "/auth/callback"])
        w.rewrite(lambda doc: doc.update(alerts={"routes": [{"name": "capture", "url": "mwreauth://"}]},
                                         web={"base_url": base_url}))
        w.sign_in(as_user=upn, password=password)
        assert run(w, "token").status == "ok"
        w.ctl.revoke_user_sessions(upn)
        outcome = run(w, "token")
        assert (outcome.status, outcome.code) == ("fail", "refresh_token_revoked"), outcome
        monitor = Monitor(w.runtime)
        app = create_app(lambda: monitor.runtime.config, lambda: monitor.runtime.store, monitor=monitor,
                         access=Access(mode="password", user="admin", password_hash=hash_password("x", n=2**4)))
        client = TestClient(app, base_url=base_url)
        client.__enter__()
        env = Env(w, monitor, client, user)
        made.append(env)
        CAPTURED.clear()
        return env

    yield make
    for env in made:
        env.client.__exit__(None, None, None)
