"""The pop check's backlog_age against a real Dovecot: message 1 dated by its topmost Received header (the receiving
server's clock), not by its Date header (the sender's); a message with neither has an unknown age, said so, and
no warning. Dovecot answers TOP n 0 with the headers and the blank line that ends them, as the sandbox now does."""

from __future__ import annotations

import datetime as dt
import poplib
import shutil
from email.utils import format_datetime

from mailwarden.checks.base import Status
from mailwarden.checks.mailbox import tls_context, xoauth2_b64
from tests.e2e.dovecot import HOST
from tests.e2e.test_dovecot import dovecot_for, sink  # noqa: F401 - fixtures


def deliver(dc, user: str, name: str, raw: bytes) -> None:
    """Put a message in the user's Maildir as a delivery agent does (owned by the dovecot user)."""
    home = dc.mail / user.lower()
    for sub in ("new", "cur", "tmp"):
        (home / "Maildir" / sub).mkdir(parents=True, exist_ok=True)
    (home / "Maildir" / "new" / f"{name}.mailwarden").write_bytes(raw)
    for path in (home, *home.rglob("*")):
        shutil.chown(path, "dovecot", "dovecot")


def message(*headers: str) -> bytes:
    return ("\r\n".join([*headers, "Subject: ticket", "", "body line", ""])).encode()


def pop_world(world, dovecot_for):  # noqa: F811 - the fixture, passed on
    w = world("delegated", own_mailbox=True, checks={"token": {}, "pop": {"backlog_age": "150m"}})
    dc = dovecot_for(w)
    w.sign_in()
    return w, dc


def test_pop_backlog_age_by_the_received_header(world, dovecot_for):  # noqa: F811
    w, dc = pop_world(world, dovecot_for)
    now = dt.datetime.now(dt.UTC)  # the module is imported minutes before this runs on a busy machine
    received = format_datetime(now - dt.timedelta(hours=3))
    deliver(dc, w.upn, "1", message(f"Received: from mx.example.test by dovecot.test; {received}",
                                    f"Received: from a.example by mx.example.test; {format_datetime(now)}",
                                    f"Date: {format_datetime(now - dt.timedelta(days=2))}"))
    outcome = w.run("pop")
    assert (outcome.status, outcome.code) == (Status.WARN, "inbox_backlog"), outcome.summary
    assert "3.0 h old by its Received header" in outcome.summary
    assert 3 * 3600 - 120 < outcome.metrics["oldest_message_age_s"] < 3 * 3600 + 120


def test_pop_backlog_age_unknown_without_a_date(world, dovecot_for):  # noqa: F811
    w, dc = pop_world(world, dovecot_for)
    deliver(dc, w.upn, "1", message("Received: from mx.example.test by dovecot.test", "Date: someday"))
    outcome = w.run("pop")
    assert outcome.status == Status.OK and outcome.metrics["oldest_message_age_s"] is None, outcome.summary
    assert "message 1's age unknown: neither its Received nor its Date header holds a date" in outcome.summary


def test_dovecot_top_sends_the_blank_line_after_the_headers(world, dovecot_for):  # noqa: F811
    """What the sandbox's TOP copies (sandbox/mail/pop.py)."""
    w, dc = pop_world(world, dovecot_for)
    deliver(dc, w.upn, "1", message(f"Date: {format_datetime(dt.datetime.now(dt.UTC))}"))
    integ = w.runtime.config.integration("subject")
    token = w.runtime.tokens.delegated_token(integ, ["https://outlook.office.com/POP.AccessAsUser.All"])
    conn = poplib.POP3_SSL(HOST, dc.pop_port, context=tls_context(w.runtime.tokens.endpoints.ca_bundle), timeout=10)
    try:
        assert conn._shortcmd("AUTH XOAUTH2").startswith(b"+")
        assert conn._shortcmd(xoauth2_b64(w.upn, token["access_token"])).startswith(b"+OK")
        _, lines, _ = conn.top(1, 0)
        assert lines[-1] == b"" and b"Subject: ticket" in lines and b"body line" not in lines
        _, lines, _ = conn.top(1, 1)
        assert lines[-2:] == [b"", b"body line"]
    finally:
        conn.quit()


def test_imap_finds_a_canary_in_dovecot(world, dovecot_for, sink):  # noqa: F811
    """IMAP's canary search (UID SEARCH SUBJECT, then FLAGS, INTERNALDATE and the Subject header by BODY.PEEK) as a
    real server answers it: the canary the smtp check sent (relayed to the sink) is put in the mailbox as delivered."""
    w = world("delegated", own_mailbox=True, checks={"token": {}, "smtp": {}, "imap": {}})
    dc = dovecot_for(w)
    w.rewrite(lambda d: d["integrations"][0]["checks"].update(
        smtp={"canary_to": w.upn}, imap={"canary": {"from": "subject", "deliver_within": "10m"}}))
    w.sign_in()
    sent = w.run("smtp")
    assert sent.status == Status.OK, sent.summary
    relayed = next(m for m in sink[0].messages if sent.metrics["canary_tag"].encode() in m)
    deliver(dc, w.upn, "canary", relayed.replace(b"\n", b"\r\n") if b"\r\n" not in relayed else relayed)
    deliver(dc, w.upn, "other", message(f"Date: {format_datetime(dt.datetime.now(dt.UTC))}"))
    outcome = w.run("imap")
    assert outcome.status == Status.OK, outcome.summary
    assert f"canary {sent.metrics['canary_tag']} from subject delivered after" in outcome.summary
    assert outcome.metrics["canary_state"] == "delivered" and outcome.metrics["canary_delay_s"] < 120
    assert w.run("imap").metrics["message_count"] == 2  # read with BODY.PEEK: nothing changed
