"""`ews_retiring`: EWS answering in Exchange Online is `warn` from 180 days before its shutdown on 1 April 2027
(M365_FACTS.md "Platform dates"), with the date and the days left; on-premises EWS is not retired; a refusal keeps
its own code before and after the date (the date alone never fails a check)."""

from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace

import pytest

from mailwarden.checks.base import Outcome, Status
from mailwarden.checks.diagnoses import render_cause, render_fix
from mailwarden.checks.ews import EwsCheck, retiring

ANSWER = Outcome(Status.OK, None, "EWS GetFolder inbox of records@contoso.com: 12 message(s), 3 unread",
                 latency_ms=80.0, metrics={"message_count": 12, "unread_count": 3})


def at(day: str) -> datetime:
    return datetime.fromisoformat(day).replace(tzinfo=UTC)


@pytest.mark.parametrize(("now", "expected"), [
    ("2026-10-01", None),  # 182 days before: not yet
    ("2026-10-02", None),  # 181 days before
    ("2026-10-03", (180, "180 days left")),
    ("2026-12-02", (120, "120 days left")),  # today in the brief
    ("2027-03-31T12:00:00", (0, "less than a day left")),
    ("2027-04-01", (0, "passed today, and EWS still answered")),
    ("2027-04-04", (-3, "passed 3 days ago, and EWS still answered")),
])
def test_an_answer_from_exchange_online_is_warn_ews_retiring_with_the_days_left(now, expected):
    got = retiring(Outcome(ANSWER.status, None, ANSWER.summary, 80.0, dict(ANSWER.metrics)), at(now))
    if expected is None:
        assert (got.status, got.code) == (Status.OK, None)
        return
    left, words = expected
    assert (got.status, got.code) == (Status.WARN, "ews_retiring")
    assert got.metrics["days_left"] == left and got.metrics["days_words"] == words
    assert got.metrics["retires_on"] == "2027-04-01" and got.metrics["message_count"] == 12
    assert got.summary.startswith(ANSWER.summary) and "1 April 2027" in got.summary and words in got.summary


@pytest.mark.parametrize("now", ["2026-12-02", "2027-04-04"])
@pytest.mark.parametrize(("status", "code"), [(Status.FAIL, "ews_forbidden"), (Status.FAIL, "ews_disabled"),
                                              (Status.WARN, "throttled"), (Status.FAIL, "mailbox_not_found")])
def test_a_refusal_keeps_its_own_code_before_and_after_the_date(now, status, code):
    refused = Outcome(status, code, "EWS refused")
    assert retiring(refused, at(now)) is refused


@pytest.mark.parametrize(("online", "expected"), [(True, "ews_retiring"), (False, None)])
def test_only_exchange_online_retires_ews(online, expected):
    ctx = SimpleNamespace(endpoints=SimpleNamespace(exchange_online=online), now=lambda: at("2026-12-02"))
    got = EwsCheck._noted(ctx, Outcome(Status.OK, None, ANSWER.summary, metrics={}))
    assert got.code == expected and ("notice" in got.metrics) == online


def test_the_fix_gives_the_date_the_days_left_and_the_move_to_graph():
    facts = {"system": "Agiloft", "mailbox": "records@contoso.com", "app": "Agiloft Application for OAuth2",
             "client_id": "66666666-7777-8888-9999-000000000000", "retires_on": "1 April 2027",
             "days_words": "120 days left"}
    cause = render_cause("ews_retiring", **facts)
    assert "1 April 2027 (120 days left)" in cause and "Agiloft" in cause
    app = " ".join(render_fix("ews_retiring", flow="app", **facts))
    assert "Microsoft Graph > Application permissions > Mail.ReadWrite" in app
    assert "Test-ServicePrincipalAuthorization" in app and "graph_mail" in app and "full_access_as_app" in app
    delegated = " ".join(render_fix("ews_retiring", flow="delegated", account="a@contoso.com", **facts))
    assert "Delegated permissions > Mail.ReadWrite.Shared" in delegated and "Application permissions" not in delegated
