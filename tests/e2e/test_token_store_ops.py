"""Token store operations a person runs: rotating its key, and the device-code sign-in."""

from __future__ import annotations

import threading

import pytest
from cryptography.fernet import Fernet
from typer.testing import CliRunner

from mailwarden.checks.base import Status
from mailwarden.errors import TokenStoreError
from mailwarden.monitor import reauth
from mailwarden.monitor.cli import app

runner = CliRunner()


def test_token_key_rotate_keeps_tokens_usable(world, monkeypatch):
    w = world("delegated")
    w.sign_in()
    w.runtime.close()
    w.runtime = None
    new_key = Fernet.generate_key().decode()
    monkeypatch.setenv("MW_NEW_TOKEN_KEY", new_key)
    res = runner.invoke(app, ["token-key", "rotate", "--new", "env:MW_NEW_TOKEN_KEY", "-c", str(w.config_path)])
    assert res.exit_code == 0, res.output
    assert "re-encrypted 1 token cache(s)" in res.output and new_key not in res.output
    # the old key (the generated key file) no longer opens this database
    with pytest.raises(TokenStoreError, match="does not match"):
        w.open()
    w.rewrite(lambda d: d.update(token_key="env:MW_NEW_TOKEN_KEY"))
    assert w.run("token").status == Status.OK


def test_device_code_only_for_public_client_apps(world):
    w = world("delegated")
    rt = w.open()
    with pytest.raises(reauth.ReauthError, match="public client flows"):
        reauth.device_code(rt.tokens, rt.config.integration("subject"), print)


def test_device_code_sign_in(world):
    w = world("delegated")
    w.ctl.patch_app(w.app_id, public_client=True)
    w.rewrite(lambda d: d["apps"]["subject"].update(public_client=True))
    rt = w.runtime
    shown: list[str] = []
    result: dict = {}

    def sign_in():
        result["r"] = reauth.device_code(rt.tokens, rt.config.integration("subject"), shown.append)

    t = threading.Thread(target=sign_in)
    t.start()
    for _ in range(200):
        if shown:
            break
        t.join(0.05)
    assert shown and "devicelogin" in shown[0]
    user_code = shown[0].split("enter the code ")[1].split()[0]
    w.ctl.approve_device_code(user_code, w.upn)
    t.join(30)
    assert result["r"].account == w.upn
    assert w.run("token").status == Status.OK
