"""Mail-flow evidence, phase 2 (issue 16 item 2): the canary found. A sending check (smtp, graph_mail with canary_to)
records each canary; the reading check of the mailbox it goes to (imap, graph_mail with `canary`) finds it by its
subject through the stored results (monitor.canaries), stores the delay, fails canary_not_delivered when it does not
arrive within deliver_within, and with collect_within fails consumer_not_collecting while it stays unread."""

from __future__ import annotations

import time

from mailwarden.checks.base import Status
from tests.e2e.test_mailbox_checks import shared_mailbox

SHORT = 1.5  # deliver_within / collect_within of these tests, in seconds; the tests wait past it


def hoth(world, **watch):
    w = world("delegated", exchange=shared_mailbox(), checks={
        "token": {}, "smtp": {}, "imap": {"canary": {"from": "subject", "deliver_within": f"{SHORT}s", **watch}}})
    w.sign_in()
    box = w.runtime.config.integration("subject").mailbox
    w.rewrite(lambda d: d["integrations"][0]["checks"]["smtp"].update(canary_to=box))
    return w, box


def stored(w, check: str) -> dict:
    return w.runtime.store.checks.results("subject", check, limit=1)[0].details


def test_imap_finds_the_smtp_canary_and_stores_the_delay(world):
    w, box = hoth(world)
    assert "no canary from subject" in w.run("imap").summary  # nothing sent yet: said, no verdict
    sent = w.run("smtp")
    assert sent.status == Status.OK and stored(w, "smtp")["canary_sent_at"], sent.summary
    found = w.run("imap")
    tag = sent.metrics["canary_tag"]
    assert found.status == Status.OK and f"canary {tag} from subject delivered after" in found.summary
    details = stored(w, "imap")
    assert details["canary_tag"] == tag and details["canary_state"] == "delivered"
    assert 0 <= details["canary_delay_s"] < 60 and tag in details["canaries_seen"]


def quarantine(w, box):
    """Exchange quarantines the canary (an anti-spam or mail flow rule): accepted by SMTP, never in the mailbox."""
    w.ctl.patch_mailbox(box, quarantine_senders=[box])


def test_a_canary_not_delivered_fails(world):
    w, box = hoth(world)
    quarantine(w, box)
    sent = w.run("smtp")
    assert sent.status == Status.OK, sent.summary
    assert w.run("imap").status == Status.OK  # not due yet
    time.sleep(SHORT + 0.5)
    outcome = w.run("imap")
    assert (outcome.status, outcome.code) == (Status.FAIL, "canary_not_delivered"), outcome.summary
    assert f"canary {sent.metrics['canary_tag']} from subject, sent " in outcome.summary
    assert f"sent to {box} " in outcome.summary and f"is not in INBOX of {box}" in outcome.summary
    assert "canary_delay_s" not in stored(w, "imap")


def test_a_canary_left_unread_is_a_consumer_not_collecting(world):
    w, box = hoth(world, collect_within=f"{SHORT}s")
    w.run("smtp")
    waiting = w.run("imap")
    assert waiting.status == Status.OK and "not due yet" in waiting.summary, waiting.summary
    time.sleep(SHORT + 0.5)
    outcome = w.run("imap")
    assert (outcome.status, outcome.code) == (Status.FAIL, "consumer_not_collecting"), outcome.summary
    assert "is still unread in the inbox" in outcome.summary and "Test helpdesk is not collecting" in outcome.summary
    assert stored(w, "imap")["canary_delay_s"] is not None
    w.ctl.mark_all_seen(box)  # the consuming system collects
    collected = w.run("imap")
    assert collected.status == Status.OK and "collected (read in the inbox)" in collected.summary, collected.summary


def test_a_canary_gone_before_it_was_seen_is_not_called_delivered(world):
    w, box = hoth(world, collect_within=f"{SHORT}s")
    quarantine(w, box)
    w.run("smtp")
    time.sleep(SHORT + 0.5)
    outcome = w.run("imap")
    assert outcome.status == Status.OK and "delivery not observed" in outcome.summary, outcome.summary


def graph_canary(world, **canary):
    """An app-only Graph integration that sends its canary to its own shared mailbox and looks for it there."""
    w = world("app", app_permissions={"graph": ["Mail.ReadWrite", "Mail.Send"]},
              exchange=lambda ids: {"mailboxes": [{"address": f"box@{ids['domain']}", "type": "shared"}]},
              checks={"graph_mail": {}})
    w.open()
    box = w.runtime.config.integration("subject").mailbox
    w.rewrite(lambda d: d["integrations"][0]["checks"].update(graph_mail={
        "canary_to": box, "canary": {"from": "subject", **canary}}))
    return w, box


def test_graph_sends_and_finds_its_canary_in_any_folder(world):
    w, box = graph_canary(world, deliver_within="1m", collect_within=f"{SHORT}s")
    first = w.run("graph_mail")  # looks for earlier canaries (none), then sends one
    assert first.status == Status.OK and "no canary from subject" in first.summary, first.summary
    assert first.metrics["canary_sent_at"]
    w.run("graph_mail")
    time.sleep(SHORT + 0.5)
    unread = w.run("graph_mail")
    assert (unread.status, unread.code) == (Status.FAIL, "consumer_not_collecting"), unread.summary
    assert unread.metrics["canary_delay_s"] is not None
    w.ctl.mark_all_seen(box)
    collected = w.run("graph_mail")
    assert collected.status == Status.OK and "collected (read in the inbox)" in collected.summary, collected.summary


def test_a_graph_search_refused_with_400_is_no_verdict(world):
    w, box = graph_canary(world, deliver_within="1s")
    w.run("graph_mail")  # sends the first canary
    time.sleep(1.5)
    w.ctl.add_fault(f"/v1.0/users/{box}/messages", status=400, count=1)
    outcome = w.run("graph_mail")
    assert outcome.status == Status.OK and "canaries from subject not looked for: Graph answered 400" in \
        outcome.summary, outcome.summary
    assert "canary_state" not in outcome.metrics
    found = w.run("graph_mail")  # answered again: judged
    assert found.status == Status.OK and found.metrics["canary_state"] == "delivered", found.summary
