"""A protocol check's transcript is redacted when it leaves the probe: in a failed outcome, and in a connection
failure's (the probe keeps the lines as said, and an ok outcome keeps none)."""

from __future__ import annotations

from mailwarden.checks.base import Status
from mailwarden.checks.mailbox import Probe, connect_failure
from mailwarden.redact import MASK, register_secret

SECRET = "Zp4Q~probeSecretValue0123456789abcd"
JWT = "eyJhbGciOiJSUzI1NiJ9.eyJhdWQiOiJodHRwczovL291dGxvb2sifQ.c2lnbmF0dXJl"


def said() -> Probe:
    register_secret(SECRET)
    probe = Probe()
    probe.say("S: * OK ready")
    probe.say(f"S: NO {SECRET} refused")
    probe.say(f"C: AUTHENTICATE Bearer {JWT}")
    probe.say("S: " + "x" * 600 + SECRET)  # past 500 characters: redacted before it is cut
    return probe


def test_a_failed_outcome_carries_the_transcript_redacted():
    outcome = said().outcome(Status.FAIL, "auth_failed", "refused")
    text = "\n".join(outcome.transcript)
    assert SECRET[:12] not in text and JWT[:20] not in text and MASK in text
    assert outcome.transcript[0] == "S: * OK ready" and all(len(line) <= 500 for line in outcome.transcript)


def test_an_ok_outcome_carries_no_transcript():
    assert said().outcome(Status.OK, None, "fine").transcript == []


def test_a_connection_failure_carries_the_transcript_redacted():
    outcome = connect_failure(ConnectionResetError("reset by peer"), "outlook.office365.com:993", said())
    text = "\n".join(outcome.transcript)
    assert outcome.status != Status.OK and SECRET[:12] not in text and JWT[:20] not in text and MASK in text
