"""One count and one wording of days left for every surface (issue 14: the same expired secret read "expired 3 d
ago", "expired 2 d ago" and "0 day(s) left" in three places)."""

from datetime import UTC, datetime, timedelta

import pytest

from mailwarden.days import days_left, expired, expiry_words, words_for

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(("delta", "left", "words"), [
    (timedelta(days=9.9), 9, "9 days left"),
    (timedelta(days=1.2), 1, "1 day left"),
    (timedelta(hours=5), 0, "less than a day left"),
    (timedelta(0), 0, "expired today"),
    (timedelta(hours=-5), 0, "expired today"),
    (timedelta(days=-1.5), -1, "expired 1 day ago"),
    (timedelta(days=-2.5), -2, "expired 2 days ago"),
])
def test_days_and_their_words(delta, left, words):
    end = NOW + delta
    assert days_left(end, NOW) == left
    assert expiry_words(end, NOW) == words
    assert words_for(left, expired(end, NOW)) == words  # the same words from a stored count


def test_never_zero_days_left_once_expired():
    for hours in range(0, 72):
        end = NOW - timedelta(hours=hours, minutes=1)
        assert "left" not in expiry_words(end, NOW)
