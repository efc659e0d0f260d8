"""Mail-flow evidence, phase 1 (issue 16 item 2): ``backlog_age`` on every receiving check. The oldest uncollected
message older than backlog_age is `warn` inbox_backlog; older than backlog_age + backlog_grace it is `fail`
consumer_not_collecting (an incident: the consuming system stopped collecting). IMAP and Graph's old ``backlog_warn``
(a duration) still works with its old meaning: a warning only."""

from __future__ import annotations

import pytest

from mailwarden.checks.base import Status
from mailwarden.checks.diagnoses import render_cause
from mailwarden.checks.facts import facts
from mailwarden.errors import ConfigError
from tests.e2e.test_mailbox_checks import app_mailbox, shared_mailbox


def unseen(age: str, subject: str = "ticket") -> dict:
    return {"subject": subject, "from": "c@example.com", "received": age, "seen": False}


@pytest.fixture
def hoth(world):
    def make(checks, messages):
        w = world("delegated", checks={"token": {}, **checks}, exchange=shared_mailbox(messages=messages))
        w.sign_in()
        return w
    return make


def box_of(w) -> str:
    return w.runtime.config.integration("subject").mailbox


def test_imap_backlog_warns_then_fails_after_the_grace(hoth):
    w = hoth({"imap": {"backlog_age": "1h"}}, [unseen("-90m")])
    warn = w.run("imap")
    assert (warn.status, warn.code) == (Status.WARN, "inbox_backlog"), warn.summary
    assert "oldest unseen 1.5 h old (over backlog_age 1.0 h" in warn.summary and "Test helpdesk" in warn.summary
    w.ctl.add_message(box_of(w), subject="older", received="-3h")  # unseen: past 1 h + the default 1 h grace
    fail = w.run("imap")
    assert (fail.status, fail.code) == (Status.FAIL, "consumer_not_collecting"), fail.summary
    assert "has not collected this mailbox's mail for 3.0 h" in fail.summary
    assert 3 * 3600 - 120 < fail.metrics["oldest_unseen_age_s"] < 3 * 3600 + 120
    cause = render_cause(fail.code, **facts(w.runtime.config, w.runtime.config.integration("subject"), fail))
    assert "Test helpdesk has stopped collecting" in cause and box_of(w) in cause
    w.rewrite(lambda d: d["integrations"][0]["checks"]["imap"].update(backlog_grace="3h"))
    assert w.run("imap").code == "inbox_backlog"  # within the longer grace: a warning again
    w.ctl.mark_all_seen(box_of(w))  # the consumer collected
    assert w.run("imap").status == Status.OK


def test_the_old_name_backlog_warn_is_still_taken_and_still_only_warns(hoth):
    """An upgrade opens no incident the configuration did not ask for: backlog_warn keeps warning, however old."""
    w = hoth({"imap": {"backlog_warn": "1h"}}, [unseen("-90m")])
    assert w.run("imap").code == "inbox_backlog"
    w.ctl.add_message(box_of(w), subject="older", received="-30h")
    old = w.run("imap")
    assert (old.status, old.code) == (Status.WARN, "inbox_backlog"), old.summary
    assert "over backlog_warn 1.0 h" in old.summary
    with pytest.raises(ConfigError) as info:  # both names at once: which one counts is not guessed
        w.rewrite(lambda d: d["integrations"][0]["checks"]["imap"].update(backlog_age="2h"))
    assert any("backlog_warn is the old name of backlog_age" in p for p in info.value.problems), info.value.problems


def test_pop_backlog_age_from_the_first_message_headers(hoth):
    w = hoth({"pop": {}}, [unseen("-3h", "first"), unseen("-10m", "second")])
    w.ctl.reset_stats()
    plain = w.run("pop")
    assert plain.status == Status.OK and "oldest_message_age_s" not in plain.metrics
    assert "TOP" not in w.ctl.stats()["mail"]["pop"]["commands"][box_of(w)]  # opt-in: nothing more asked
    w.rewrite(lambda d: d["integrations"][0]["checks"].update(pop={"backlog_age": "150m"}))
    warn = w.run("pop")
    assert (warn.status, warn.code) == (Status.WARN, "inbox_backlog"), warn.summary
    assert "message 1 (the oldest) 3.0 h old by its Date header" in warn.summary
    w.rewrite(lambda d: d["integrations"][0]["checks"].update(pop={"backlog_age": "1h", "backlog_grace": "30m"}))
    fail = w.run("pop")
    assert (fail.status, fail.code) == (Status.FAIL, "consumer_not_collecting"), fail.summary
    commands = w.ctl.stats()["mail"]["pop"]["commands"][box_of(w)]
    assert not set(commands) & {"RETR", "DELE"}, commands  # TOP reads headers, takes nothing
    assert w.run("pop").metrics["message_count"] == 2


def test_pop_count_threshold_keeps_its_meaning(hoth):
    w = hoth({"pop": {"backlog_warn": 1}}, [unseen("-1m"), unseen("-1m")])
    outcome = w.run("pop")
    assert (outcome.status, outcome.code) == (Status.WARN, "inbox_backlog") and "over 1" in outcome.summary


def ews_world(world, messages):
    def build(ids):
        return {"ews_enabled": True, "mailboxes": [{"address": f"box@{ids['domain']}", "type": "shared",
                                                    "messages": messages}]}
    return world("app", app_permissions={"exchange": ["full_access_as_app"]}, exchange=build,
                 checks={"token": {}, "ews": {"backlog_age": "1h"}})


def test_ews_backlog_age_by_finditem(world):
    w = ews_world(world, [{"subject": "read", "received": "-9h", "seen": True}, unseen("-90m")])
    w.ctl.reset_stats()
    warn = w.run("ews")
    assert (warn.status, warn.code) == (Status.WARN, "inbox_backlog"), warn.summary
    assert "2 message(s), 1 unread, the oldest unread 1.5 h old" in warn.summary
    assert set(warn.metrics["phases_ms"]) >= {"getfolder", "finditem"}
    w.ctl.add_message(box_of(w), subject="older", received="-150m")
    fail = w.run("ews")
    assert (fail.status, fail.code) == (Status.FAIL, "consumer_not_collecting"), fail.summary
    assert 150 * 60 - 120 < fail.metrics["oldest_unread_age_s"] < 150 * 60 + 120
    w.ctl.mark_all_seen(box_of(w))
    ok = w.run("ews")  # nothing unread: no FindItem needed
    assert ok.status == Status.OK and "finditem" not in ok.metrics["phases_ms"], ok.summary


def test_graph_backlog_age_with_a_filter_graph_accepts(world):
    w = world("app", app_permissions={"graph": ["Mail.ReadWrite"]}, checks={"graph_mail": {"backlog_age": "1h"}},
              exchange=lambda ids: {"mailboxes": [{"address": f"box@{ids['domain']}", "type": "shared",
                                                   "messages": [unseen("-90m")]}]})
    warn = w.run("graph_mail")
    assert (warn.status, warn.code) == (Status.WARN, "inbox_backlog"), warn.summary
    assert "the oldest unread 1.5 h old" in warn.summary
    w.ctl.add_message(box_of(w), subject="older", received="-5h")
    fail = w.run("graph_mail")
    assert (fail.status, fail.code) == (Status.FAIL, "consumer_not_collecting"), fail.summary


def test_app_only_imap_backlog(world):
    w = world("app", app_permissions={"exchange": ["IMAP.AccessAsApp"]},
              checks={"token": {}, "imap": {"backlog_age": "30m", "backlog_grace": "10m"}},
              exchange=app_mailbox())
    w.open()
    w.ctl.add_message(box_of(w), subject="stuck", received="-1h")
    outcome = w.run("imap")
    assert (outcome.status, outcome.code) == (Status.FAIL, "consumer_not_collecting"), outcome.summary
