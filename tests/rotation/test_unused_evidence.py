"""Once mailwarden's own copy of a secret moves on, the old secret is not "unused": the consuming system keeps its
own copy. The inventory (the dashboard's /secrets, /api/secrets, `mailwarden secrets` as a table and as JSON) says
what is known (mailwarden's configuration no longer uses it; what the sign-in log shows of the system's app-only
sign-ins by credential key) and what is not (a delegated system's sign-ins do not name the secret: where to check
before deleting it); "nothing uses it" needs that evidence (tests/rotation/test_credential_in_use.py)."""

from __future__ import annotations

import asyncio
import html
import json
import re
from datetime import timedelta

from starlette.testclient import TestClient
from typer.testing import CliRunner

from mailwarden.monitor import demo
from mailwarden.monitor.cli import app as cli_app
from mailwarden.monitor.cli_secrets import _read_all
from mailwarden.monitor.secrets import api_secrets
from mailwarden.monitor.web.app import create_app
from mailwarden.monitor.web.auth import Access

AGILOFT = "agiloft-application-for-oauth2"
HOTH = "hoth-email-integration"
SINCH = "sinch-escalations-queue"
SIGNINS = "Entra admin center > Identity > Monitoring & health > Sign-in logs"
runner = CliRunner()


def flat(text: str) -> str:
    """The words a person reads: tags dropped, entities decoded, white space (and terminal wrapping) folded."""
    return " ".join(html.unescape(re.sub(r"<[^>]+>", "", text)).split())


def test_an_old_secret_mailwarden_moved_off_is_not_called_unused(tmp_path):
    env = demo.prepare(tmp_path / "demo", quiet=True)
    try:
        cfg, store, ctl = env.runtime.config, env.runtime.store, env.sandbox.control
        agiloft, hoth, sinch = (cfg.apps[a].client_id for a in (AGILOFT, HOTH, SINCH))
        web = TestClient(create_app(cfg, store, access=Access(mode="none")), base_url="http://127.0.0.1:8080")

        def cli(*args: str):
            return runner.invoke(cli_app, [*args, "-c", str(env.config_path)], env={"COLUMNS": "200"})

        [old_key] = [c.key_id for c in store.inventory.credentials(agiloft) if c.reference]
        # The admin adds a secret and gives it to mailwarden only (Agiloft is not changed: it is the outage case).
        new = ctl.add_secret(agiloft, display_name="Agiloft 2027", end="+300d")
        (env.config_path.parent / "secrets" / f"{AGILOFT}.secret").write_text(new["value"] + "\n")
        assert cli("check", "--integration", "agiloft-inbound", "--check", "token").exit_code == 0
        cli("secrets", "run")
        # Secrets added to a delegated and an app-only app, not (yet) given to mailwarden.
        extra = ctl.add_secret(hoth, display_name="HotH 2027", end="+300d")
        other = ctl.add_secret(sinch, display_name="escalations 2027", end="+300d")
        listed = cli("secrets", "--format", "json")  # reads Graph first, as a person would run it

        doc = web.get("/api/secrets").json()
        assert json.loads(listed.output)["credentials"] == doc["credentials"]
        creds = {c["key_id"]: c for c in doc["credentials"]}
        old, current = creds[old_key], creds[new["keyId"]]
        assert old["unused"] is False and old["integrations"] == []
        assert current["usage"]["mailwarden"] == "uses" and current["integrations"] == ["agiloft-inbound",
                                                                                        "agiloft-contracts"]
        assert old["usage"]["mailwarden"] == "does_not_use"
        # the demo's Agiloft (a sandbox actor) still signs in with the old secret: the sign-in log names its key
        evidence = old["usage"]["evidence"]
        assert (evidence["state"], evidence["attempts"], evidence["source"]) == ("used", 1, "Entra ID sign-in log")
        known = ("mailwarden's own configuration no longer uses it; Agiloft signed in with it 1 time(s) since "
                 f"{evidence['since'][:16].replace('T', ' ')} UTC, last at "
                 f"{evidence['last_used_at'][:16].replace('T', ' ')} UTC (Entra ID sign-in log)")
        assert old["usage"]["known"] == known
        assert old["usage"]["unknown"] is None  # app-only, every integration covered by the log

        delegated = creds[extra["keyId"]]
        assert delegated["unused"] is False
        assert delegated["usage"]["known"] == "mailwarden's own configuration does not use it"
        said = delegated["usage"]["unknown"]
        assert said.startswith("whether House-on-the-Hill helpdesk (hoth-support, hoth-it, hoth-sales, "
                               "hoth-facilities) uses it is not known: check House-on-the-Hill helpdesk's "
                               "configuration (")
        assert "configuration (OAuth Scripts > oauth:email > Client Secret)" in said  # its secret_field
        # its sign-ins are the user's (delegated): no service-principal sign-in shows which secret it used
        assert "hoth-mail@contoso-demo.onmicrosoft.com" in said and "User sign-ins (non-interactive)" in said
        assert "Service principal sign-ins" not in said

        # no secret_field configured: where the seeds say Sinch takes it
        assert creds[other["keyId"]]["usage"]["unknown"] == (
            "whether Sinch Contact Center (sinch-escalations) uses it is not known: check Sinch Contact Center's "
            "configuration (System Configurator > the MS365 mail server's OAuth settings > client secret) or "
            f"{SIGNINS} > Service principal sign-ins for the app ({sinch}), filtered by credential key ID "
            f"{other['keyId']}, before deleting it; Sinch Contact Center has not signed in since "
            f"{creds[other['keyId']]['usage']['evidence']['since'][:16].replace('T', ' ')} UTC (Entra ID sign-in log), "
            "so which credential it uses is not known")

        page = flat(web.get("/secrets").text)
        assert "nothing uses it" not in page
        assert f"{known}." in page
        assert f"mailwarden's own configuration does not use it; {said}." in page

        table = cli("secrets", "--cached")
        out = flat(table.output)
        assert "nothing uses it" not in out
        assert f"Agiloft Application for OAuth2 {old_key}: {known}." in out  # under the table, whole
        assert known in out
        for value in (new["value"], extra["value"], other["value"]):
            assert value not in out and value not in page and value not in json.dumps(doc)
    finally:
        env.close()


def test_when_mailwarden_matches_none_of_an_apps_secrets_its_own_use_is_unknown_too(world, clock):
    w = world("app", secret_end="+200d")
    (w.dir / "secrets" / "subject").write_text("Xy9~a-value-that-is-on-no-credential-of-the-app")  # a wrong copy
    asyncio.run(_read_all(w.open()))
    rows = api_secrets(w.runtime.config, w.runtime.store, clock() + timedelta(seconds=1))["credentials"]
    [row] = [r for r in rows if r["key_id"] == w.key_id]
    assert row["unused"] is False and row["integrations"] == []
    # not "does not use it": mailwarden cannot tell which secret its own copy is
    assert row["usage"]["mailwarden"] == "unknown"
    assert row["usage"]["known"].startswith("mailwarden's configured secret matched none of this app's credentials")
    assert row["usage"]["unknown"].startswith("whether Test helpdesk (subject) uses it is not known")
