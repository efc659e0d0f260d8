"""The imap, pop and smtp checks against a real, unmodified Dovecot that validates the sandbox's tokens
itself: a valid token passes; expired, wrong-audience and another user's tokens fail with an auth
diagnosis. Dovecot answers unlike Exchange (a SASL error challenge first), so this proves the checks
handle both."""

from __future__ import annotations

import re
import socket

import pytest

from mailwarden.checks.base import Status
from tests.conftest import require_service
from tests.e2e.dovecot import HOST, Dovecot, unusable_reason

MAIL_CHECKS = {"token": {}, "imap": {}, "pop": {}, "smtp": {}}


@pytest.fixture
def sink():
    from aiosmtpd.controller import Controller

    class Handler:
        def __init__(self):
            self.messages: list[bytes] = []

        async def handle_DATA(self, server, session, envelope):
            self.messages.append(envelope.content)
            return "250 OK"

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    handler = Handler()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    yield handler, port
    controller.stop()


@pytest.fixture
def dovecot_for(sandbox, tmp_path, sink):
    reason = unusable_reason()
    if reason:
        require_service("dovecot", reason)
    started: list[Dovecot] = []

    def start(w, *, audience: str = "https://outlook.office.com"):
        dc = Dovecot(tmp_path / f"dovecot{len(started)}", f"https://sts.windows.net/{w.tenant_id}/",
                     sandbox.signing_kid, sandbox.signing_key_pem, sink[1], audience=audience).start()
        started.append(dc)
        dc.trust_client(w.app_id)
        bundle = w.dir / "ca-bundle.pem"
        bundle.write_text(open(sandbox.ca_path).read() + dc.cert.read_text())

        def point(doc):
            doc["endpoints"].update(imap=f"{HOST}:{dc.imap_port}", pop=f"{HOST}:{dc.pop_port}",
                                    smtp=f"{HOST}:{dc.smtp_port}", ca_bundle=str(bundle))
        w.rewrite(point)
        return dc

    yield start
    for dc in started:
        dc.stop()


def test_valid_token_passes_imap_pop_smtp(world, dovecot_for, sink):
    w = world("delegated", own_mailbox=True,
              checks={**MAIL_CHECKS, "smtp": {"canary_to": "ops@example.test"}})
    dovecot_for(w)
    w.sign_in()
    for kind in ("token", "imap", "pop", "smtp"):
        outcome = w.run(kind)
        assert outcome.status == Status.OK, (kind, outcome.summary, outcome.transcript)
    imap = w.run("imap")
    assert imap.metrics["message_count"] == 0 and set(imap.metrics["phases_ms"]) >= {"connect", "tls", "auth"}
    smtp = w.run("smtp")
    assert smtp.metrics["send_verified"] is True
    assert any(smtp.metrics["canary_tag"].encode() in m for m in sink[0].messages)


def test_expired_token_fails_with_auth_diagnosis(world, dovecot_for, sandbox):
    w = world("delegated", own_mailbox=True, checks=MAIL_CHECKS)
    dovecot_for(w)
    sandbox.control.set_token_lifetime(-600)
    try:
        w.sign_in()
        for kind in ("imap", "pop", "smtp"):
            outcome = w.run(kind)
            assert (outcome.status, outcome.code) == (Status.FAIL, "auth_failed"), (kind, outcome.summary)
            assert "likely:" in outcome.summary
            # Dovecot's SASL error challenge was answered and recorded, the token never was
            text = "\n".join(outcome.transcript)
            assert "schemes" in text and "dXNlcj" not in text  # the XOAUTH2 blob is never recorded
            assert not re.search(r"eyJ[\w-]+\.[\w-]+\.", text)  # nor any JWT
    finally:
        sandbox.control.set_token_lifetime(3600)


def test_wrong_audience_fails(world, dovecot_for):
    # an app-only token (aud https://outlook.office365.com) shown to a server expecting outlook.office.com
    w = world("app", app_permissions={"exchange": ["IMAP.AccessAsApp"]}, checks={"imap": {}})
    dovecot_for(w)
    outcome = w.run("imap")
    assert (outcome.status, outcome.code) == (Status.FAIL, "auth_failed"), outcome.summary
    assert "service principal" in outcome.summary  # the app-only causes are named


def test_another_users_token_fails(world, dovecot_for):
    w = world("delegated", checks=MAIL_CHECKS)  # mailbox box@... is not the signed-in account
    dovecot_for(w)
    w.sign_in()
    for kind in ("imap", "pop"):
        outcome = w.run(kind)
        assert (outcome.status, outcome.code) == (Status.FAIL, "auth_failed"), (kind, outcome.summary)
    # SMTP signs in as the token's own user, whatever the mailbox (M365_FACTS.md): Dovecot accepts that
    outcome = w.run("smtp")
    assert outcome.status == Status.OK and outcome.metrics["login_as"] == w.upn, outcome.summary


def test_server_gone_is_connection_refused(world, dovecot_for):
    w = world("delegated", own_mailbox=True, checks=MAIL_CHECKS)
    dc = dovecot_for(w)
    w.sign_in()
    dc.stop()
    outcome = w.run("imap")
    assert (outcome.status, outcome.code) == (Status.ERROR, "connection_refused")
