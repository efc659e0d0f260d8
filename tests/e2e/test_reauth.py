"""`mailwarden reauth NAME` end to end: the real CLI, a browser sign-in against the sandbox, the token store.

The headless flow prints a sign-in URL and waits for the redirected URL to be pasted back. CliRunner is
synchronous, so stdin is a stream that, when the prompt first reads it, takes the URL from what the
command has printed so far, signs in with the sandbox browser, and hands back the redirected URL: the
same order of events as an admin with a terminal and a private browser window.
"""

from __future__ import annotations

import io
import json
import re
import sys
import warnings
from collections.abc import Callable
from unittest import mock
from urllib.parse import parse_qs, urlsplit

import msal
import pytest
import requests
import typer.testing
from typer.testing import CliRunner

from mailwarden.checks.base import Status
from mailwarden.monitor.cli import app
from mailwarden_sandbox.browser import sign_in

from .conftest import REDIRECT

runner = CliRunner()
SCOPES = ["https://outlook.office.com/POP.AccessAsUser.All", "https://outlook.office.com/SMTP.Send"]


class _Paste(io.RawIOBase):
    """stdin whose first read answers the prompt with ``answer(printed stdout so far)`` + newline."""

    def __init__(self, answer: Callable[[str], str]):
        self.answer, self.data, self.printed, self.pasted = answer, None, "", ""

    def readable(self) -> bool:
        return True

    def readinto(self, buf) -> int:
        if self.data is None:
            sys.stdout.flush()  # CliRunner's captured stdout (a BytesIO) while the command runs
            self.printed = sys.stdout.buffer.getvalue().decode()
            self.pasted = self.answer(self.printed)
            self.data = (self.pasted + "\n").encode()
        n = min(len(buf), len(self.data))
        buf[:n], self.data = self.data[:n], self.data[n:]
        return n


def auth_url(printed: str) -> str:
    urls = re.findall(r"^(https://\S+/oauth2/v2\.0/authorize\?\S+)$", printed, re.M)
    assert len(urls) == 1, printed
    return urls[0]


def reauth(w, answer: Callable[[str], str] | None = None, *args: str):
    """Run `mailwarden reauth subject -c CFG [args]`; ``answer(auth_url)`` gives the pasted line."""
    argv = ["reauth", "subject", "-c", str(w.config_path), *args]
    if answer is None:
        result = runner.invoke(app, argv)
    else:
        paste = _Paste(lambda printed: answer(auth_url(printed)))
        stdin = io.BufferedReader(paste)
        # typer's CliRunner only takes str/bytes input: hand it our lazy stream instead
        with mock.patch.object(typer.testing, "make_input_stream", lambda _input, _charset: stdin):
            result = runner.invoke(app, argv)
        result.pasted = paste.pasted
    # exit codes only: a traceback (mailwarden's, or our browser's) must not pass for "refused, exit 1"
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    return result


def browser(w, upn=None, password=None, **kw) -> Callable[[str], str]:
    return lambda url: sign_in(url, upn or w.upn, password or w.password, w.sb.ca_path, **kw)


def token_ok(w) -> None:
    w.open()  # a fresh runtime reads what the CLI stored
    outcome = w.run("token")
    assert outcome.status == Status.OK, outcome.summary


def no_secrets(result, *secrets: str | None) -> None:
    """No token, code or client secret in what the command printed (stdout and stderr)."""
    pasted = getattr(result, "pasted", "")
    # CliRunner echoes the pasted line (as a terminal would): that is the admin's input, not mailwarden's output
    text = result.output.replace(pasted, "") if pasted else result.output
    code = re.search(r"[?&]code=([^&]+)", pasted)
    assert "eyJ" not in text, text
    for s in (*secrets, code and code.group(1)):
        if s:
            assert s not in text


def add_other_user(w) -> tuple[str, str]:
    upn, password = f"someone-else@{w.upn.split('@')[1]}", "Pw-other-123"
    w.ctl.add_user(w.tenant_id, upn=upn, password=password)
    return upn, password


def msal_refresh_token(w, upn: str, password: str) -> str:
    """A refresh token obtained outside mailwarden: the app's own secret, auth code + PKCE, straight MSAL."""
    http = requests.Session()
    http.verify, http.trust_env = w.sb.ca_path, False
    client = msal.ConfidentialClientApplication(
        w.app_id, client_credential=w.secret, authority=f"{w.sb.base_url}/{w.tenant_id}",
        instance_discovery=False, http_client=http)
    with warnings.catch_warnings():  # MSAL prefers form_post; the query carries the code as for a pasted URL
        warnings.simplefilter("ignore", UserWarning)
        flow = client.initiate_auth_code_flow(SCOPES, redirect_uri=REDIRECT)
    back = sign_in(flow["auth_uri"], upn, password, w.sb.ca_path)
    query = {k: v[0] for k, v in parse_qs(urlsplit(back).query).items()}
    result = client.acquire_token_by_auth_code_flow(flow, query)
    assert "refresh_token" in result, result
    return result["refresh_token"]


# -- the sign-in flow ------------------------------------------------------------------------------------

def test_sign_in_as_the_account_stores_an_encrypted_token(world):
    w = world("delegated")
    result = reauth(w, browser(w))
    assert result.exit_code == 0, result.output
    assert f"Sign in as {w.upn}" in result.output
    assert f"signed in as {w.upn}" in result.output and "Stored a refresh token for subject" in result.output
    assert "SMTP.Send" in result.output and "POP.AccessAsUser.All" in result.output
    assert "code=" in result.pasted
    no_secrets(result, w.secret)
    token_ok(w)
    # the database holds Fernet ciphertext only (url-safe base64: "eyJ" alone can occur by chance, a JWT cannot)
    raw = b"".join(p.read_bytes() for p in w.dir.glob("mailwarden.db*"))
    assert not re.search(rb"eyJ[\w-]+\.eyJ", raw), "a JWT (access or ID token) in the database file"
    assert b"refresh_token" not in raw.lower() and b"refreshtoken" not in raw.lower()
    cache = json.loads(w.runtime.tokens.load_cache("subject").serialize())
    stored = [c["secret"] for kind in ("RefreshToken", "AccessToken", "IdToken") for c in cache[kind].values()]
    assert len(stored) >= 3 and all(s.encode() not in raw for s in stored)
    assert [c["home_account_id"] for c in cache["RefreshToken"].values()], "a refresh token is stored"


def test_other_account_is_refused_and_the_stored_token_kept(world):
    w = world("delegated")
    assert reauth(w, browser(w)).exit_code == 0
    before = w.open().tokens.stored_row("subject").ciphertext
    other, other_pw = add_other_user(w)
    result = reauth(w, browser(w, other, other_pw))
    assert result.exit_code == 1, result.output
    assert f"signed in as {other}" in result.output
    assert f"must be authorised by {w.upn}" in result.output and "[wrong_account]" in result.output
    assert "previous token is kept" in result.output
    no_secrets(result, w.secret)
    assert w.open().tokens.stored_row("subject").ciphertext == before
    token_ok(w)


def test_other_account_on_an_empty_store_stores_nothing(world):
    w = world("delegated")
    other, other_pw = add_other_user(w)
    result = reauth(w, browser(w, other, other_pw))
    assert result.exit_code == 1 and "[wrong_account]" in result.output
    assert w.open().tokens.stored_row("subject") is None


def test_missing_delegated_permission_admin_consent_required(world):
    """Users may not consent: Entra refuses at the sign-in (90094), the CLI names the consent problem."""
    w = world("delegated", user_consent=False)
    w.ctl.remove_delegated_permission(w.app_id, "exchange", "SMTP.Send")
    result = reauth(w, browser(w))
    assert result.exit_code == 1, result.output
    assert "[consent_missing]" in result.output and "AADSTS90094" in result.output
    no_secrets(result, w.secret)
    assert w.open().tokens.stored_row("subject") is None


def test_a_sign_in_that_grants_fewer_scopes_than_needed_stores_nothing(world, monkeypatch):
    """Entra ID answers a successful sign-in with the scopes it granted. Should that answer leave out one the
    integration needs (SMTP.Send here), the sign-in is refused as consent_missing naming it, and the previous
    token is kept. The sandbox, like Entra ID, refuses such a sign-in outright, so the answer is trimmed."""
    w = world("delegated")
    assert reauth(w, browser(w)).exit_code == 0
    before = w.open().tokens.stored_row("subject").ciphertext
    real = msal.ClientApplication.acquire_token_by_auth_code_flow

    def fewer_scopes(self, *args, **kwargs):
        result = real(self, *args, **kwargs)
        result["scope"] = " ".join(s for s in result["scope"].split() if not s.endswith("SMTP.Send"))
        return result

    monkeypatch.setattr(msal.ClientApplication, "acquire_token_by_auth_code_flow", fewer_scopes)
    result = reauth(w, browser(w))
    assert result.exit_code == 1, result.output
    assert "[consent_missing]" in result.output and "did not grant" in result.output
    assert "SMTP.Send" in result.output and "Grant admin consent" in result.output
    no_secrets(result, w.secret)
    assert w.open().tokens.stored_row("subject").ciphertext == before
    token_ok(w)


def test_missing_delegated_permission_user_declines_consent(world):
    """Users may consent but the user does not tick the box: refused, nothing stored, previous token kept."""
    w = world("delegated")
    assert reauth(w, browser(w)).exit_code == 0
    before = w.open().tokens.stored_row("subject").ciphertext
    w.ctl.remove_delegated_permission(w.app_id, "exchange", "SMTP.Send")
    result = reauth(w, browser(w, consent=False))
    assert result.exit_code == 1, result.output
    assert "Entra ID refused the sign-in" in result.output and "AADSTS65004" in result.output
    no_secrets(result, w.secret)
    assert w.open().tokens.stored_row("subject").ciphertext == before


def test_pasted_url_without_code(world):
    w = world("delegated")
    result = reauth(w, lambda url: REDIRECT + "?state=abc")
    assert result.exit_code == 1, result.output
    assert "neither a code nor an error" in result.output and "paste the whole address" in result.output
    assert w.open().tokens.stored_row("subject") is None


def test_pasted_url_of_another_flow_is_refused(world):
    w = world("delegated")
    # an earlier, abandoned run of the command: its redirected URL carries that run's state
    stale = []
    first = reauth(w, lambda url: stale.append(browser(w)(url)) or "not a url")
    assert first.exit_code == 1
    result = reauth(w, lambda url: stale[0])
    assert result.exit_code == 1, result.output
    assert "does not belong to this request" in result.output and "paste the newest URL" in result.output
    no_secrets(result, w.secret)
    assert w.open().tokens.stored_row("subject") is None


# -- --import --------------------------------------------------------------------------------------------

def test_import_refresh_token_of_the_account(world, tmp_path):
    w = world("delegated")
    rt = msal_refresh_token(w, w.upn, w.password)
    f = tmp_path / "rt.txt"
    f.write_text(rt + "\n")
    result = reauth(w, None, "--import", str(f))
    assert result.exit_code == 0, result.output
    assert f"signed in as {w.upn}" in result.output
    no_secrets(result, rt, w.secret)
    token_ok(w)


def test_import_json_file(world, tmp_path):
    w = world("delegated")
    rt = msal_refresh_token(w, w.upn, w.password)
    f = tmp_path / "rt.json"
    f.write_text(json.dumps({"refresh_token": rt, "token_type": "Bearer"}))
    result = reauth(w, None, "--import", str(f))
    assert result.exit_code == 0, result.output
    no_secrets(result, rt, w.secret)
    token_ok(w)


def test_import_refresh_token_of_another_account_is_refused(world, tmp_path):
    w = world("delegated")
    assert reauth(w, browser(w)).exit_code == 0
    before = w.open().tokens.stored_row("subject").ciphertext
    other, other_pw = add_other_user(w)
    rt = msal_refresh_token(w, other, other_pw)
    f = tmp_path / "rt.txt"
    f.write_text(rt)
    result = reauth(w, None, "--import", str(f))
    assert result.exit_code == 1, result.output
    assert f"signed in as {other}" in result.output and f"must be authorised by {w.upn}" in result.output
    no_secrets(result, rt, w.secret)
    assert w.open().tokens.stored_row("subject").ciphertext == before
    token_ok(w)


def test_import_after_consent_removed_is_refused(world, tmp_path):
    """A token obtained while SMTP.Send was consented, imported after the permission was removed."""
    w = world("delegated")
    rt = msal_refresh_token(w, w.upn, w.password)
    w.ctl.remove_delegated_permission(w.app_id, "exchange", "SMTP.Send")
    f = tmp_path / "rt.txt"
    f.write_text(rt)
    result = reauth(w, None, "--import", str(f))
    assert result.exit_code == 1, result.output
    assert "[consent_missing]" in result.output and "AADSTS65001" in result.output
    no_secrets(result, rt, w.secret)
    assert w.open().tokens.stored_row("subject") is None


@pytest.mark.parametrize("content,message,code", [
    (None, "cannot be read", 3),  # the file itself: a usage error
    ("", "empty", 1), ("  \n", "empty", 1), ('{"access_token": "x"}', "without a refresh_token", 1),  # refused
])
def test_import_unusable_file(world, tmp_path, content, message, code):
    w = world("delegated")
    f = tmp_path / "rt.txt"
    if content is not None:
        f.write_text(content)
    result = reauth(w, None, "--import", str(f))
    assert result.exit_code == code, result.output
    assert message in result.output


def test_import_garbage_token_is_refused_by_entra(world, tmp_path):
    w = world("delegated")
    garbage = "1.AXkA-not-a-real-refresh-token-" + "x" * 40
    f = tmp_path / "rt.txt"
    f.write_text(garbage)
    result = reauth(w, None, "--import", str(f))
    assert result.exit_code == 1, result.output
    assert "Entra ID refused the sign-in: AADSTS" in result.output
    no_secrets(result, garbage, w.secret)
    assert w.open().tokens.stored_row("subject") is None


# -- what reauth is not for ------------------------------------------------------------------------------

def test_app_only_integration_is_refused(world, tmp_path):
    """flow: app has nobody to sign in: exit 1 ([config_error]) for both modes, before any prompt."""
    w = world("app")
    result = reauth(w)
    assert result.exit_code == 1, result.output
    assert "uses app-only tokens" in result.output and "nobody to sign in" in result.output
    assert "oauth2/v2.0/authorize" not in result.output
    f = tmp_path / "rt.txt"
    f.write_text("whatever")
    result = reauth(w, None, "--import", str(f))
    assert result.exit_code == 1 and "uses app-only tokens" in result.output


def test_unknown_integration_exits_3(world):
    w = world("delegated")
    result = runner.invoke(app, ["reauth", "nope", "-c", str(w.config_path)])
    assert result.exit_code == 3 and "no integration named 'nope'" in result.output

