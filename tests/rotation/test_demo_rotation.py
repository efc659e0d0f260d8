"""Rotating the demo's expiring Agiloft secret by hand, as an admin would in the Entra admin center (through the
sandbox's control API), with `mailwarden secrets run` after each step (what `serve` does hourly): the dashboard's
secrets page and `/api/secrets` follow it from expiring to the old secret removed. The `mailwarden secrets`
commands show the inventory (table, JSON; exit 1 while a credential in use expires within 30 days: the
demo's enaio secret has expired, so it stays 1) and the rotation's audit."""

from __future__ import annotations

import json

from starlette.testclient import TestClient
from typer.testing import CliRunner

from mailwarden.monitor import demo
from mailwarden.monitor.cli import app as cli_app
from mailwarden.monitor.web.app import create_app
from mailwarden.monitor.web.auth import Access

APP = "agiloft-application-for-oauth2"
runner = CliRunner()


def test_rotating_the_demo_secret_shows_each_step_on_the_dashboard(tmp_path):
    env = demo.prepare(tmp_path / "demo", quiet=True)
    try:
        cfg, store, ctl = env.runtime.config, env.runtime.store, env.sandbox.control
        client_id = cfg.apps[APP].client_id
        web = TestClient(create_app(cfg, store, access=Access(mode="none")), base_url="http://127.0.0.1:8080")

        def cli(*args: str):
            return runner.invoke(cli_app, [*args, "-c", str(env.config_path)], env={"COLUMNS": "220"})

        def step() -> str:
            assert cli("secrets", "run").exit_code == 0
            [rotation] = [r for r in web.get("/api/secrets").json()["rotations"] if r["client_id"] == client_id]
            assert rotation["state"] in web.get("/secrets").text
            return rotation["state"]

        inventory = cli("secrets", "--format", "json")
        assert inventory.exit_code == 1  # the Agiloft secret in use ends in 10 days
        rows = [r for r in json.loads(inventory.output)["credentials"] if r["client_id"] == client_id]
        [old] = [r for r in rows if r["integrations"]]
        assert old["days_left"] in (9, 10) and old["integrations"] == ["agiloft-inbound", "agiloft-contracts"]
        table = cli("secrets", "--cached")
        assert table.exit_code == 1 and "agiloft-inbound" in table.output and old["hint"] in table.output
        assert step() == "expiring"

        new = ctl.add_secret(client_id, display_name="Agiloft 2027", end="+300d")  # New client secret
        assert step() == "new_secret_created"
        refused = cli("secrets", "remove-old", APP)  # mailwarden itself still uses the old one
        assert refused.exit_code == 1 and "no rotation whose new secret is in use" in refused.output
        assert old["key_id"] in [r["key_id"] for r in json.loads(
            cli("secrets", "--cached", "--format", "json").output)["credentials"] if r["client_id"] == client_id]
        (env.config_path.parent / "secrets" / f"{APP}.secret").write_text(new["value"] + "\n")
        assert cli("check", "--integration", "agiloft-inbound", "--check", "token").exit_code == 0
        assert step() == "in_use"
        for name in ("agiloft-inbound", "agiloft-contracts"):  # every token check of the app, on the new secret
            assert cli("check", "--integration", name, "--check", "token").exit_code == 0
        # Agiloft itself (the demo's actor) still has the old secret, and the sign-in log shows it using it
        refused = cli("secrets", "remove-old", APP)
        said = " ".join(refused.output.split())
        assert refused.exit_code == 1, said
        assert f"refused: the old credential {old['key_id']} is still in use: Agiloft signed in with it" in said
        assert "(Entra ID sign-in log)" in said and "Inbound Email Accounts > Account > Client Secret" in said
        ctl.delete_secret(client_id, old["key_id"])  # the admin deletes the old secret anyway
        assert step() == "old_removed"

        history = cli("secrets", "history", "--app", APP, "--format", "json")
        assert history.exit_code == 0
        assert [e["step"] for e in json.loads(history.output)] == ["expiring", "new_secret_created", "in_use",
                                                                  "auto_remove_refused", "old_removed"]
        assert new["value"] not in history.output and new["value"] not in web.get("/secrets").text
        after = json.loads(cli("secrets", "--cached", "--format", "json").output)["credentials"]
        [in_use] = [r for r in after if r["client_id"] == client_id and r["integrations"]]
        assert in_use["key_id"] == new["keyId"] and in_use["days_left"] > 290
    finally:
        env.close()
