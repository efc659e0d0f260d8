"""Reauthorisation windows: a person signing an account in again in a browser (the alert's link, `mailwarden
reauth`) makes interactive sign-ins mailwarden cannot tag. Inside the window they are "unconfirmed", never the
consuming system's; mailwarden's own code redemption and refreshes are recognised by their correlation ids."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from mailwarden.monitor.signins import INTERACTIVE, NON_INTERACTIVE
from mailwarden_sandbox.browser import sign_in
from tests.e2e.conftest import sandbox, world  # noqa: F401 - the sandbox and its worlds
from tests.e2e.test_reauth import browser
from tests.e2e.test_reauth import reauth as run_reauth
from tests.monitor.signin_world import READER
from tests.reauth.conftest import outcome_of, revoked  # noqa: F401 - the web reauthorisation fixture


def _window_of(rt):
    return rt.signins.window(rt.config.integration("subject"))


def test_a_web_reauthorisation_sign_in_is_unconfirmed_and_mailwardens_own_are_left_out(revoked):  # noqa: F811
    env = revoked(monitor_roles=READER)
    started = datetime.now(UTC)
    auth_uri = env.start()
    [opened] = env.rt.store.signins.reauth_windows(started - timedelta(seconds=5))
    assert (opened.source, opened.integration, opened.account) == ("web", "subject", env.w.upn.lower())
    assert opened.ends_at - opened.started_at == timedelta(hours=1)  # until the callback, or an hour
    back = sign_in(auth_uri, env.w.upn, env.w.password, env.w.sb.ca_path)
    page = env.client.get(back)
    assert outcome_of(page.text) == "ok"
    [closed] = env.rt.store.signins.reauth_windows(started - timedelta(seconds=5))
    assert closed.id == opened.id and closed.ends_at <= datetime.now(UTC)  # the callback ended it

    asyncio.run(env.rt.signins.poll())
    window = _window_of(env.rt)
    assert window.state == "ok"
    interactive = [s for s in window.signins if s.event_type == INTERACTIVE]
    # the browser sign-in through the link, and the fixture's own sign-in seconds before it (within the window's
    # two-minute clock margin): never the consumer's
    assert [s.origin for s in interactive] == ["unconfirmed", "unconfirmed"]
    assert interactive[-1].at >= started.replace(microsecond=0)
    # the code redemption, the checks after it, the refreshes and the revoked refresh of the setup: all mailwarden's
    assert [s for s in window.signins if s.event_type == NON_INTERACTIVE] == []


def test_a_command_line_reauthorisation_opens_and_closes_a_window(world):  # noqa: F811
    w = world("delegated", monitor_roles=READER)
    started = datetime.now(UTC)
    result = run_reauth(w, browser(w))
    assert result.exit_code == 0, result.output
    rt = w.open()
    [win] = rt.store.signins.reauth_windows(started - timedelta(seconds=5))
    assert (win.source, win.account, win.attempt_id) == ("cli", w.upn.lower(), None)
    assert started <= win.started_at <= win.ends_at <= datetime.now(UTC)
    asyncio.run(rt.signins.poll())
    signins = _window_of(rt).signins
    assert [(s.event_type, s.origin) for s in signins] == [(INTERACTIVE, "unconfirmed")]
