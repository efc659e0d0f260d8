"""Crafted input: odd or oversized numbers, Unicode digits, long targets. The answer is a 4xx with the app's
security headers, never a 500 and never a traceback. Each attack below once gave a 500."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import pytest
from sqlmodel import Session
from starlette.routing import Route

from mailwarden.alerts.records import Incident
from mailwarden.monitor.web.auth import Access

HEADERS = ("content-security-policy", "x-frame-options", "x-content-type-options", "referrer-policy")


def refused_cleanly(r, *codes: int) -> None:
    assert r.status_code in codes, (r.status_code, r.text[:300])
    assert all(h in r.headers for h in HEADERS), dict(r.headers)
    assert "Traceback" not in r.text and 'File "' not in r.text


@pytest.fixture
def none_client(world):
    """`web.auth: none` (no login in the way) with one open incident (id 1)."""
    with Session(world.store.engine) as s:
        s.add(Incident(key="k", kind="single", code="token_failed", opened_at=datetime.now(UTC)))
        s.commit()
    with world.client(world.app(Access(mode="none")), raise_server_exceptions=False) as c:
        c.get("/")
        yield c


def token_of(client) -> str:
    import base64
    import json

    return json.loads(base64.b64decode(client.cookies["mailwarden_session"].split(".")[0]))["csrf"]


def test_an_unexpected_error_is_a_plain_500_with_the_security_headers(world, caplog):
    """Attacks the error path: an exception in a handler reached Starlette's own 500, sent outside the app's
    middleware (no CSP, no frame or sniffing protection). It is answered by the app: a plain 500 with every
    security header, the exception only in the service log."""

    async def boom(request):
        raise RuntimeError("internal detail that stays in the log")

    app = world.app(Access(mode="none"))
    app.router.routes.append(Route("/boom", boom))
    caplog.set_level(logging.ERROR, logger="mailwarden.web")
    with world.client(app, raise_server_exceptions=False) as c:
        r = c.get("/boom")
        refused_cleanly(r, 500)
        assert "internal detail" not in r.text
        r = c.get("/api/boom")  # under /api the refusal is JSON
        assert r.status_code == 404 and r.json()["error"]
    assert any("request failed" in rec.getMessage() for rec in caplog.records)


def test_a_non_ascii_csrf_token_is_refused_not_a_500(none_client):
    """Attacks the CSRF comparison: hmac.compare_digest raises TypeError on non-ASCII text, so a form with
    csrf_token=é gave a 500. It is a wrong token: 403."""
    refused_cleanly(none_client.post("/incidents/1/ack", data={"csrf_token": "é"}), 403)
    header = {"x-csrf-token": "é".encode("latin-1")}
    refused_cleanly(none_client.post("/incidents/1/ack", data={"csrf_token": ""}, headers=header), 403)


def test_oversized_request_targets_and_bad_lengths_are_refused(world):
    """Attacks the request line: a path or query string of any length was taken and parsed. Past 8 KiB: 414."""
    with world.client(world.app(Access(mode="none"))) as c:
        refused_cleanly(c.get("/?tag=" + "x" * 9000), 414)
        refused_cleanly(c.get("/api/results?integration=" + "x" * 9000), 414)


def test_bounded_parameter_helpers():
    """Attacks the number parsing other modules did with int()/float(): Unicode digits ('²' passes isdigit()
    and fails int()), 5,000-digit numbers (int() raises past 4,300), values no database or timedelta holds. The
    shared helpers take ASCII digits only, bounded in length and value, and answer 400."""
    from mailwarden.monitor.web import params

    assert params.integer("42", lo=1, hi=500, what="limit") == 42
    assert params.integer("-3", lo=-10, hi=10, what="x") == -3
    for bad in ("²", "٣", "9" * 5000, "501", "0", "-1", "1e3", " ", "", None, "+5"):
        with pytest.raises(params.BadParameter) as err:
            params.integer(bad, lo=1, hi=500, what="limit")
        assert err.value.status_code == 400 and "limit" in err.value.detail
    from datetime import UTC, datetime, timedelta

    from mailwarden.alerts.incidents import parse_until
    from mailwarden.monitor import reauth_links

    now = datetime(2030, 1, 1, tzinfo=UTC)
    assert parse_until(None, "4h", now) == now + timedelta(hours=4)
    assert parse_until(None, "1.5d", now) == now + timedelta(days=1.5)
    for bad in ("99999999999d", "9" * 400 + "d", "²h", "1e400d", "31d", "0m", "-1h", "h", "4 hours"):
        with pytest.raises(ValueError):
            parse_until(None, bad, now)
    assert reauth_links.parse("12.1767225600.c2ln") == (12, 1767225600)
    for bad in ("1.²3.x", "².3.x", "1." + "9" * 5000 + ".x", "1" * 13 + ".1.x", "1.2", "a.b.c", "-1.2.x"):
        assert reauth_links.parse(bad) is None, bad
    convertor = params.IdConvertor()
    assert convertor.convert("17") == 17 and convertor.to_string(17) == "17"
    import re

    assert re.fullmatch(convertor.regex, "9" * 18) and not re.fullmatch(convertor.regex, "9" * 19)


@pytest.mark.parametrize("token", ["1.²3.x", "².3.x", "1." + "9" * 5000 + ".x"])
def test_a_crafted_reauth_link_is_not_found_not_a_500(world, token):
    """Attacks /reauth/<token> (no login needed) with Unicode digits and a 5,000-digit expiry: 500. Expected:
    the invalid-link page (404)."""
    with world.client(raise_server_exceptions=False) as c:
        refused_cleanly(c.get(f"/reauth/{token}"), 404)


@pytest.mark.parametrize("digits", [30, 5000])
def test_a_huge_incident_id_is_not_found_not_a_500(none_client, digits):
    """Attacks /incidents/<id>/ack and /snooze with a 30-digit and a 5,000-digit id: 500. Expected: 404."""
    token = token_of(none_client)
    for action in ("ack", "snooze"):
        refused_cleanly(none_client.post(f"/incidents/{'9' * digits}/{action}", data={"csrf_token": token}), 404)


@pytest.mark.parametrize("duration", ["999999999h", "99999999999d"])
def test_a_huge_snooze_is_a_400_not_a_500(none_client, duration):
    """Attacks the snooze form with a duration no timedelta holds: 500. Expected: 400 saying the limit."""
    refused_cleanly(none_client.post("/incidents/1/snooze", data={"csrf_token": token_of(none_client),
                                                                  "for": duration}), 400)
