"""Mail-flow evidence judged without a server (checks.mailflow): the backlog's warn/fail boundaries, the date POP's
TOP headers give, and the canary's verdicts: delivered (the delay stored) or not delivered; collected or not."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from mailwarden.checks import ews, mailflow
from mailwarden.checks.base import CanarySent, Status
from mailwarden.checks.graph_mail import GraphMailOptions
from mailwarden.checks.imap import ImapOptions
from mailwarden.checks.pop import PopOptions

NOW = datetime(2026, 12, 3, 9, 0, tzinfo=UTC)


def ago(**kw) -> datetime:
    return NOW - timedelta(**kw)


@pytest.mark.parametrize(("age_min", "expected"), [
    (None, (Status.OK, None)), (59, (Status.OK, None)), (61, (Status.WARN, "inbox_backlog")),
    (119, (Status.WARN, "inbox_backlog")), (121, (Status.FAIL, "consumer_not_collecting")),
])
def test_backlog_warns_past_the_age_and_fails_past_the_grace(age_min, expected):
    options = ImapOptions(backlog_age="1h")
    status, code, words = mailflow.judge(None if age_min is None else age_min * 60.0, options, "Acme Ticketing")
    assert (status, code) == expected
    if code == "consumer_not_collecting":
        assert "over backlog_age 1.0 h plus backlog_grace 1.0 h: Acme Ticketing has not collected" in words


def test_no_backlog_age_judges_nothing():
    assert mailflow.judge(30 * 86400.0, ImapOptions(), None) == (Status.OK, None, "")


@pytest.mark.parametrize("model", [ImapOptions, GraphMailOptions])
def test_the_old_duration_name_is_backlog_age_warning_only(model):
    old = model.model_validate({"backlog_warn": "2h"})
    assert (old.backlog_age, old.backlog_grace) == (7200, None)
    assert mailflow.judge(40 * 3600.0, old, None)[:2] == (Status.WARN, "inbox_backlog")  # never an incident
    given = model.model_validate({"backlog_warn": "2h", "backlog_grace": "1h"})  # a grace asked for: it fails
    assert mailflow.judge(4 * 3600.0, given, None)[:2] == (Status.FAIL, "consumer_not_collecting")
    with pytest.raises(ValueError, match="backlog_warn is the old name of backlog_age"):
        model.model_validate({"backlog_warn": "2h", "backlog_age": "1h"})


def test_pop_keeps_its_count_and_takes_an_age():
    options = PopOptions.model_validate({"backlog_warn": 50, "backlog_age": "30m"})
    assert (options.backlog_warn, options.backlog_age, options.backlog_grace) == (50, 1800, 3600)
    assert ews.EwsOptions.model_validate({"backlog_age": "1h"}).backlog_age == 3600
    for model in (PopOptions, ews.EwsOptions):  # no canary search there: said plainly
        with pytest.raises(ValueError, match="canary is not supported by this check"):
            model.model_validate({"canary": {"from": "x"}})


def test_top_headers_date_by_received_then_date():
    head = (b"Received: from mx by mbx; Thu, 03 Dec 2026 06:00:00 +0000\r\n"
            b"Received: from a by mx; Thu, 03 Dec 2026 05:59:00 +0000\r\n"
            b"Date: Mon, 30 Nov 2026 10:00:00 +0100\r\nSubject: x\r\n\r\n")
    assert mailflow.header_date(head) == (datetime(2026, 12, 3, 6, 0, tzinfo=UTC), "Received")
    when, header = mailflow.header_date([b"Received: from mx by mbx", b"Date: Mon, 30 Nov 2026 10:00:00 +0100", b""])
    assert (when.astimezone(UTC), header) == (datetime(2026, 11, 30, 9, 0, tzinfo=UTC), "Date")
    assert mailflow.header_date([b"Subject: no date", b""]) == (None, None)


def test_ews_finditem_reply_gives_the_oldest_received():
    body = ('<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body>'
            f'<m:FindItemResponse xmlns:m="{ews.NS["m"]}" xmlns:t="{ews.NS["t"]}"><m:ResponseMessages>'
            '<m:FindItemResponseMessage ResponseClass="Success"><m:ResponseCode>NoError</m:ResponseCode>'
            '<m:RootFolder IndexedPagingOffset="1" TotalItemsInView="4" IncludesLastItemInRange="false"><t:Items>'
            '<t:Message><t:ItemId Id="AAMk1" ChangeKey="CQ"/><t:DateTimeReceived>2026-12-03T06:30:00Z'
            "</t:DateTimeReceived></t:Message></t:Items></m:RootFolder></m:FindItemResponseMessage>"
            "</m:ResponseMessages></m:FindItemResponse></s:Body></s:Envelope>")
    assert ews.oldest_received(body) == datetime(2026, 12, 3, 6, 30, tzinfo=UTC)
    assert ews.classify(200, {}, body) == (Status.OK, None, None)
    busy = body.replace('ResponseClass="Success"', 'ResponseClass="Error"').replace("NoError", "ErrorServerBusy")
    assert ews.classify(500, {}, busy).code == "throttled"


# -- the canary --------------------------------------------------------------------------------------------------

def watch(**kw) -> mailflow.CanaryOptions:
    return mailflow.CanaryOptions.model_validate({"from": "hd-send", "deliver_within": "10m", **kw})


def verdict(sent, found=(), seen=None, **kw):
    return mailflow.judge_canaries(list(sent), {f.tag: f for f in found}, seen or {}, watch(**kw), NOW,
                                   where="INBOX of support@contoso.com", system="Acme Ticketing")


def test_canary_delivered_with_its_delay_stored():
    v = verdict([CanarySent("aaa", ago(minutes=20), "support@contoso.com")],
                [mailflow.Found("aaa", ago(minutes=20) + timedelta(seconds=42), "unread")])
    assert (v.status, v.code) == (Status.OK, None) and "canary aaa from hd-send delivered after 42 s" in v.words
    assert (v.metrics["canary_delay_s"], v.metrics["canary_state"], v.metrics["canary_tag"]) == (42.0, "delivered",
                                                                                                "aaa")
    assert v.metrics["canaries_seen"] == {"aaa": (ago(minutes=20) + timedelta(seconds=42)).isoformat()}


def test_canary_not_delivered_names_the_tag_and_the_sent_time():
    v = verdict([CanarySent("aaa", ago(minutes=20), "support@contoso.com"), CanarySent("bbb", ago(minutes=3), None)])
    assert (v.status, v.code) == (Status.FAIL, "canary_not_delivered")  # bbb is not due yet: aaa decides
    assert ("canary aaa from hd-send, sent to support@contoso.com 2026-12-03 08:40:00 UTC, is not in INBOX of "
            "support@contoso.com") in v.words
    assert "canary_delay_s" not in v.metrics
    late = verdict([CanarySent("aaa", ago(minutes=30), None)], [mailflow.Found("aaa", ago(minutes=5), "unread")])
    assert (late.code, late.metrics["canary_delay_s"]) == ("canary_not_delivered", 1500.0)
    assert "arrived only after 25 min" in late.words


def test_a_canary_not_due_yet_is_no_verdict():
    v = verdict([CanarySent("bbb", ago(minutes=3), None)])
    assert (v.status, v.code) == (Status.OK, None) and "1 canary(ies) from hd-send not due yet" in v.words
    assert "no canary from hd-send" in verdict([]).words


def test_canary_collected_or_not():
    sent = [CanarySent("aaa", ago(minutes=50), None)]
    arrived = ago(minutes=50) + timedelta(seconds=5)
    v = verdict(sent, [mailflow.Found("aaa", arrived, "unread")], collect_within="30m")
    assert (v.status, v.code) == (Status.FAIL, "consumer_not_collecting")
    assert "still unread in the inbox 50 min later (over collect_within 30 min): Acme Ticketing" in v.words
    assert v.metrics["canary_delay_s"] == 5.0  # delivered: its delay is stored all the same
    for found, how in (([mailflow.Found("aaa", arrived, "read")], "read in the inbox"),
                       ([mailflow.Found("aaa", arrived, "moved")], "moved out of the inbox"),
                       ((), "gone from INBOX of support@contoso.com")):
        v = verdict(sent, found, {"aaa": arrived}, collect_within="30m")
        assert (v.status, v.code, v.metrics["canary_state"]) == (Status.OK, None, "collected"), how
        assert f"delivered after 5 s and collected ({how})" in v.words
    waiting = verdict(sent, [mailflow.Found("aaa", arrived, "unread")], collect_within="1h")
    assert (waiting.status, waiting.code) == (Status.OK, None) and "not due yet" in waiting.words


def test_a_canary_gone_and_never_seen_is_said_unobserved():
    v = verdict([CanarySent("aaa", ago(minutes=50), None)], collect_within="30m")
    assert (v.status, v.code, v.metrics["canary_state"]) == (Status.OK, None, "unobserved")
    assert "this check never saw it: delivery not observed" in v.words


def test_the_canary_option_is_checked():
    with pytest.raises(ValueError):
        mailflow.CanaryOptions.model_validate({"deliver_within": "10m"})  # from: which integration sends
    with pytest.raises(ValueError):
        mailflow.CanaryOptions.model_validate({"from": "x", "deliver_whithin": "10m"})
    assert ImapOptions.model_validate({"canary": {"from": "x"}}).canary.deliver_within == 600
    assert mailflow.tag_of("[mailwarden canary] hd-send 0123abcd", "hd-send") == "0123abcd"
    assert mailflow.tag_of("[mailwarden canary] hd-sender 0123abcd", "hd-send") is None
    assert mailflow.worse((Status.WARN, "inbox_backlog"), (Status.FAIL, "canary_not_delivered")) == \
        (Status.FAIL, "canary_not_delivered")


class _Conn:
    """imaplib's answers to the two commands the imap check's canary search sends."""

    def __init__(self, search, fetch=None):
        self.answers = {"SEARCH": search, "FETCH": fetch}

    def uid(self, command, *args):
        return self.answers[command]


def test_imap_reads_canaries_from_search_and_fetch_replies():
    from mailwarden.checks import imap

    fetched = ("OK", [(b'7 (UID 41 FLAGS (\\Seen) INTERNALDATE "03-Dec-2026 08:59:30 +0000" BODY[HEADER.FIELDS '
                       b"(SUBJECT)] {45}", b"Subject: [mailwarden canary] hd-send abc123\r\n\r\n"), b")",
                      (b'8 (UID 42 FLAGS () INTERNALDATE " 3-Dec-2026 09:59:00 +0100" BODY[HEADER.FIELDS (SUBJECT)] '
                       b"{45}", b"Subject: [mailwarden canary] hd-send def456\r\n\r\n"), b")"])
    found = imap._find_canaries(_Conn(("OK", [b"41 42"]), fetched), "hd-send")
    assert found == {"abc123": mailflow.Found("abc123", datetime(2026, 12, 3, 8, 59, 30, tzinfo=UTC), "read"),
                     "def456": mailflow.Found("def456", datetime(2026, 12, 3, 8, 59, tzinfo=UTC), "unread")}
    assert imap._find_canaries(_Conn(("OK", [b""])), "hd-send") == {}
    with pytest.raises(imap._Unanswered):  # a refused search is no evidence that the canary is absent
        imap._find_canaries(_Conn(("NO", [b"SEARCH failed"])), "hd-send")
