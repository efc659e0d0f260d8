"""No secret anywhere it should not be: after a demo cycle with every failure kind, a reauthorisation,
alerts sent and a report written, search the database files, the logs, the report, every alert body and
every stored transcript for each client secret, refresh token, access token, SASL string, authorisation
code, the token-store key and the admin password — raw, base64, URL-encoded and JSON-escaped. The only
place a token may live is the encrypted token cache (ciphertext), which the raw search cannot match."""

from __future__ import annotations

import base64
import json
import logging
import re
from urllib.parse import quote, quote_plus

import pytest
import yaml
from typer.testing import CliRunner

from mailwarden.checks.mailbox import xoauth2
from mailwarden.monitor import demo as demo_mod
from mailwarden.monitor import logs, reauth
from mailwarden.monitor.alerting import make_dispatcher
from mailwarden.monitor.cli import app
from mailwarden.monitor.tokenstore import load_cipher
from mailwarden_sandbox.browser import sign_in

SCENARIO = demo_mod.demo_scenario()


def forms(secret: str) -> set[str]:
    raw = secret.encode()
    out = {secret, base64.b64encode(raw).decode(), base64.urlsafe_b64encode(raw).decode().rstrip("="),
           quote(secret, safe=""), quote_plus(secret), json.dumps(secret)[1:-1]}
    return {f for f in out if len(f) >= 8}


NOISY = ("msal", "urllib3", "httpx", "httpcore", "apscheduler", "uvicorn.access", "kiota")


@pytest.fixture
def restored_log_levels():
    """logs.setup("debug") turns the libraries' loggers up: later tests of the same session must not inherit it."""
    levels = {name: logging.getLogger(name).level for name in ("", *NOISY)}
    yield
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)


def test_no_secret_in_db_logs_report_or_alerts(tmp_path, capfd, restored_log_levels):
    log_file = tmp_path / "mailwarden.log"
    with log_file.open("w") as stream:
        logs.setup("debug", stream=stream, json_lines=True)
        env = demo_mod.prepare(tmp_path / "demo", quiet=True)
        try:
            rt = env.runtime
            env.run_once()
            # a reauthorisation, as the on-call engineer does after the revocation
            integ = rt.config.integration("oracle-b2c-support")
            scenario = yaml.safe_load(SCENARIO.read_text())
            passwords = {u["upn"]: u["password"] for u in scenario["tenants"][0]["users"]}
            flow = reauth.start(rt.tokens, integ, "http://127.0.0.1:8080/auth/callback")
            back = sign_in(flow["auth_uri"], integ.account, passwords[integ.account], env.sandbox.ca_path)
            code = re.search(r"[?&]code=([^&]+)", back).group(1)
            reauth.complete(rt.tokens, integ, flow, reauth.parse_redirect(back))
            env.run_once()
            make_dispatcher(rt.config, rt.store).run_once()
            report = tmp_path / "status.html"
            res = CliRunner().invoke(app, ["report", "-c", str(env.config_path), "-o", str(report)])
            assert res.exit_code == 0, res.output
            cipher = load_cipher(rt.config)
            cache_blobs = [rt.tokens.stored_row(i.name) for i in rt.config.integrations if i.flow == "delegated"]
        finally:
            env.close()
            logging.getLogger().handlers.clear()
    console = capfd.readouterr()

    # what must never appear
    secrets: dict[str, str] = {}
    for tenant in scenario["tenants"]:
        for application in tenant["apps"]:
            for s in application.get("secrets", []):
                secrets[f"client secret of {application['display_name']}"] = s["value"]
        for user in tenant["users"]:
            secrets[f"password of {user['upn']}"] = user["password"]
    secrets["authorisation code"] = code
    key_file = tmp_path / "demo" / "mailwarden.key"
    secrets["token-store key"] = key_file.read_text().strip()
    if env.web_password:
        secrets["admin password"] = env.web_password
    for row in cache_blobs:
        cache = json.loads(cipher.decrypt(row.ciphertext))
        for kind in ("RefreshToken", "AccessToken", "IdToken"):
            for entry in cache.get(kind, {}).values():
                secrets[f"{kind} of {row.integration}"] = entry["secret"]
                if kind == "AccessToken":
                    sasl = base64.b64encode(xoauth2(row.account or "", entry["secret"])).decode()
                    secrets[f"SASL string of {row.integration}"] = sasl
    assert any(k.startswith("RefreshToken") for k in secrets) and any(k.startswith("SASL") for k in secrets)

    haystacks = {"log": log_file.read_text(errors="replace"), "report": report.read_text(),
                 "console (alerts, demo output)": console.out + console.err}
    for db_file in (tmp_path / "demo").glob("mailwarden.db*"):
        haystacks[db_file.name] = db_file.read_bytes().decode("latin-1")
    assert "FAILING" in haystacks["console (alerts, demo output)"], "the alerts were sent to the console route"
    # the consent alert's fix names the permission the failing token lacked, not "the needed permission"
    assert "check Mail.ReadWrite is listed" in haystacks[
        "console (alerts, demo output)"]
    assert len(haystacks["log"]) > 1000

    hits = [f"{what} in {where}" for what, value in secrets.items() for form in forms(value)
            for where, text in haystacks.items() if form in text]
    assert hits == []
