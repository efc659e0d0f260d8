"""The CLI against the sandbox: `check --check pop` after a revocation, and `reauth` when the login side fails
(an unreachable login host, an unknown tenant, a refused token, a file without a refresh token). Each refusal is a
sentence and exit 1, never a traceback, and stores nothing."""

from __future__ import annotations

import json
import socket
import uuid

import pytest
from typer.testing import CliRunner

from mailwarden.monitor.cli import app
from tests.e2e import conftest as e2e
from tests.e2e.test_mailbox_checks import shared_mailbox
from tests.e2e.test_reauth import browser, msal_refresh_token, reauth

sandbox, world = e2e.sandbox, e2e.world  # the e2e fixtures: one sandbox for the session, a tenant per test
runner = CliRunner()
POP = {"token": {}, "pop": {}}


def closed_port() -> int:
    """A local port nothing listens on: connecting to it is refused at once."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def check(w, *args):
    res = runner.invoke(app, ["check", "-c", str(w.config_path), "--format", "json", "--no-alerts", *args])
    assert res.exception is None or isinstance(res.exception, SystemExit), repr(res.exception)
    return res, {r["check"]: r for r in json.loads(res.stdout)}


def stored_token(w):
    return w.open().tokens.stored_token("subject")


def refused(result, code: str, *needles: str):
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mailwarden: ") and lines[0].endswith(f"[{code}]"), result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert "nothing was stored" in lines[0]


# -- check --check pop -------------------------------------------------------------------------------------

def test_pop_alone_after_the_refresh_token_was_revoked_is_not_ok(world):
    w = world("delegated", checks=POP, exchange=shared_mailbox())
    w.sign_in()
    res, rows = check(w, "--check", "pop")
    assert res.exit_code == 0, res.output
    assert {k: r["status"] for k, r in rows.items()} == {"token": "ok", "pop": "ok"}
    w.ctl.revoke_user_sessions(w.upn)
    # the access token stored at the last run is still within its lifetime: only a refresh proves the grant
    res, rows = check(w, "--check", "pop")
    assert (rows["token"]["status"], rows["token"]["code"]) == ("fail", "refresh_token_revoked"), rows
    assert (rows["pop"]["status"], rows["pop"]["code"]) == ("blocked", "blocked_by_token"), rows
    assert res.exit_code == 2, res.output
    latest = {r.check: r.status for r in w.open().store.checks.latest_results()}
    assert latest == {"token": "fail", "pop": "blocked"}


# -- reauth: the login side fails --------------------------------------------------------------------------

def unreachable(w):
    port = closed_port()
    w.rewrite(lambda doc: doc["endpoints"].update(authority=f"https://127.0.0.1:{port}"))
    return f"https://127.0.0.1:{port}"


def unknown_tenant(w):
    tid = str(uuid.uuid4())
    w.rewrite(lambda doc: doc["tenants"]["t"].update(tenant_id=tid))
    return tid


@pytest.mark.parametrize("mode", ["import", "sign-in", "device-code"])
def test_unreachable_login_host_is_refused_with_a_sentence(world, tmp_path, mode):
    w = world("delegated")
    rt = msal_refresh_token(w, w.upn, w.password) if mode == "import" else None
    if mode == "device-code":
        w.rewrite(lambda doc: doc["apps"]["subject"].update(public_client=True))
    authority = unreachable(w)
    f = tmp_path / "rt.txt"
    f.write_text(rt or "")
    args = {"import": ["--import", str(f)], "sign-in": [], "device-code": ["--device-code"]}[mode]
    result = reauth(w, None, *args)
    refused(result, "idp_unreachable", f"failed: the login host {authority} refused the connection; nothing was "
            f"stored. Check that this host reaches {authority} over HTTPS")
    assert "oauth2/v2.0/authorize" not in result.output
    assert stored_token(w) is None


def test_untrusted_login_host_certificate_is_refused_with_a_sentence(world, tmp_path):
    w = world("delegated")
    rt = msal_refresh_token(w, w.upn, w.password)
    w.rewrite(lambda doc: doc["endpoints"].pop("ca_bundle"))  # the sandbox's CA is in no system store
    f = tmp_path / "rt.txt"
    f.write_text(rt)
    result = reauth(w, None, "--import", str(f))
    refused(result, "tls_error", "presented a certificate mailwarden does not trust", "endpoints.ca_bundle")
    assert stored_token(w) is None


@pytest.mark.parametrize("effect", ["html", "empty"])
@pytest.mark.parametrize("mode", ["import", "sign-in"])
def test_login_host_answering_with_a_server_error_is_refused_with_a_sentence(world, tmp_path, mode, effect):
    """Entra ID has an incident (HTTP 5xx, an HTML page or nothing): for the sign-in, between the browser's sign-in
    and the redemption of its code."""
    w = world("delegated")
    f = tmp_path / "rt.txt"
    incident = []
    try:
        if mode == "import":
            f.write_text(msal_refresh_token(w, w.upn, w.password))
            incident.append(w.ctl.open_incident("entra", effect=effect))
            result = reauth(w, None, "--import", str(f))
        else:
            def sign_in_then_incident(url):
                back = browser(w)(url)
                incident.append(w.ctl.open_incident("entra", effect=effect))
                return back
            result = reauth(w, sign_in_then_incident)
    finally:
        for i in incident:
            w.ctl.close_incident(i)
    body = {"html": "an HTML page", "empty": "an empty body"}[effect]
    refused(result, "service_unavailable", "the identity provider answered HTTP 5", body, "Service health")
    assert stored_token(w) is None


@pytest.mark.parametrize("mode", ["import", "sign-in"])
def test_unknown_tenant_is_refused_with_a_sentence(world, tmp_path, mode):
    w = world("delegated")
    rt = msal_refresh_token(w, w.upn, w.password) if mode == "import" else None
    tid = unknown_tenant(w)
    f = tmp_path / "rt.txt"
    f.write_text(rt or "")
    result = reauth(w, None, *(["--import", str(f)] if mode == "import" else []))
    refused(result, "tenant_not_found", f"Entra ID (tenant {tid}) refused: AADSTS90002: Tenant '{tid}' not found",
            f"Entra ID knows no tenant {tid}", "tenants.t.tenant_id")
    assert stored_token(w) is None


def test_revoked_refresh_token_is_refused_with_its_aadsts_code(world, tmp_path):
    w = world("delegated")
    rt = msal_refresh_token(w, w.upn, w.password)
    w.ctl.revoke_user_sessions(w.upn)
    f = tmp_path / "rt.txt"
    f.write_text(rt)
    result = reauth(w, None, "--import", str(f))
    assert result.exit_code == 1, result.output
    assert "Entra ID refused the sign-in: AADSTS50173" in result.stderr and "[refresh_token_revoked]" in result.stderr
    assert rt not in result.output and stored_token(w) is None


@pytest.mark.parametrize("content,says", [
    (b"", "is empty"),
    (b"  \n", "is empty"),
    (b'{"access_token": "x", "token_type": "Bearer"}', "JSON without a refresh_token (its fields: access_token, "
                                                       "token_type)"),
    (b'{"refresh_token": null}', "JSON without a refresh_token"),
    (b'{"refresh_token": ', "not valid JSON"),
    (b"\xff\xfe\x00\x01binary", "not a text file"),
    (b"eyJhbGciOiJSUzI1NiJ9.eyJzY3AiOiJQT1AuQWNjZXNzQXNVc2VyLkFsbCJ9.c2ln", "a JWT: an access or ID token"),
    (b"refresh_token = 1.Aabc\nexpires_in = 3600\n", "spaces or line breaks"),
])
def test_a_file_without_a_refresh_token_is_refused(world, tmp_path, content, says):
    w = world("delegated")
    f = tmp_path / "rt.txt"
    f.write_bytes(content)
    result = reauth(w, None, "--import", str(f))
    assert result.exit_code == 1, result.output
    line = result.stderr.strip()
    assert len(line.splitlines()) == 1 and says in line and str(f) in line and "nothing was stored" in line, line
    assert line.endswith("[no_refresh_token]") and "Traceback" not in result.output
    assert stored_token(w) is None


def test_a_file_that_cannot_be_read_is_exit_3(world, tmp_path):
    w = world("delegated")
    result = reauth(w, None, "--import", str(tmp_path / "missing.txt"))
    assert result.exit_code == 3, result.output
    assert "cannot be read" in result.stderr and "missing.txt" in result.stderr
