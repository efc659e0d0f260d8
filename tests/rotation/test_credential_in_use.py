"""The credential the consuming system itself uses (issue 16): after mailwarden moved to a new secret, `secrets
remove-old` is refused while the consuming system still signed in with the old one within `remove_old_after_days`
(Agiloft still configured with the old secret the day before it is deleted), and allowed, saying on what evidence,
once its sign-ins in that window all used other credentials. The inventory (/api/secrets, the secrets page,
`mailwarden secrets`) says the same from the stored sign-in log. Sign-ins by key: the sandbox's Graph beta sign-in
log carries `servicePrincipalCredentialKeyId` for app-only sign-ins (M365_FACTS.md)."""

from __future__ import annotations

import asyncio

from typer.testing import CliRunner

from mailwarden.monitor.cli import app as cli_app
from mailwarden.monitor.secrets import SecretsCycle, api_secrets
from tests.monitor.signin_world import READER, sb, world  # noqa: F401 - the module sandbox and its tenants

WRITER = [*READER, "Application.ReadWrite.All"]  # removePassword needs it (or ReadWrite.OwnedBy as an owner)
runner = CliRunner()


def _old_key(w) -> str:
    rt = w.rt
    asyncio.run(SecretsCycle.of(rt).run())  # reads the app's credentials into the inventory
    [old] = [c.key_id for c in rt.store.inventory.credentials(w.apps["daemon"]) if c.reference]
    return old


def _rotate(w, *, start: str = "-1m") -> dict:
    """An admin adds a secret and gives it to mailwarden; mailwarden's token check passes with it and a secrets
    cycle records the rotation as in use; the token check passes again after that (what remove-old waits for)."""
    new = w.ctl.add_secret(w.apps["daemon"], display_name="2027", start=start, end="+700d")
    w.rt.credentials._cache.clear()
    asyncio.run(SecretsCycle.of(w.rt).run())  # a new secret on the app: the rotation of the old one is tracked
    (w.dir / "secrets" / "daemon").write_text(new["value"])
    rt = w.open()
    assert w.check("token", "daemon").status.value == "ok"
    asyncio.run(SecretsCycle.of(rt).run())  # mailwarden's configured secret is the new one
    assert w.check("token", "daemon").status.value == "ok"
    [row] = [r for r in rt.store.rotation.rotations(w.apps["daemon"], open_only=True)]
    assert row.state == "in_use", row
    return new


def _signed_in(w, key_id: str, *ats: str | None) -> None:
    for at in ats:
        w.ctl.record_signin(w.tenant_id, w.apps["daemon"], event_type="servicePrincipal", key_id=key_id, at=at)


def _installed(w, days: int) -> None:
    """mailwarden has run (recording its own token requests) for ``days``: the sign-in log is read that far back
    (sign-ins from before cannot be told apart from mailwarden's own, so they are never read: monitor.signins)."""
    from datetime import UTC, datetime, timedelta

    from mailwarden.monitor.db_signins import RECORDED_FROM

    w.rt.store.meta.set_meta(RECORDED_FROM, (datetime.now(UTC) - timedelta(days=days)).isoformat())


def _on_app(w) -> set[str]:
    """The keyIds of the daemon app's secrets in the sandbox's directory."""
    [tenant] = [t for t in w.sb.control.state()["tenants"] if t["id"] == w.tenant_id]
    [app] = [a for a in tenant["apps"] if a["app_id"] == w.apps["daemon"]]
    return {c["keyId"] for c in app["secrets"]}


def _usage(w, key_id: str) -> dict:
    [row] = [c for c in api_secrets(w.rt.config, w.rt.store)["credentials"] if c["key_id"] == key_id]
    return row


def test_remove_old_is_refused_while_the_consuming_system_still_signs_in_with_the_old_secret(world):  # noqa: F811 - the fixture imported above
    w = world(integrations=("daemon",), monitor_roles=WRITER, actors=False)
    old = _old_key(w)
    new = _rotate(w)
    _signed_in(w, old, None, None)  # Sinch still has the old secret
    w.poll()
    result = runner.invoke(cli_app, ["secrets", "remove-old", "daemon", "-c", str(w.config_path)])
    assert result.exit_code == 1, result.output
    said = " ".join(result.output.split())
    assert f"refused: the old credential {old} is still in use: Sinch signed in with it 2 time(s) since" in said
    assert "(Entra ID sign-in log)" in said and "Put the new secret in the consuming system" in said
    assert old in _on_app(w)  # nothing was removed
    usage = _usage(w, old)
    assert usage["unused"] is False and usage["usage"]["evidence"]["state"] == "used"
    assert usage["usage"]["evidence"]["attempts"] == 2 and usage["usage"]["unknown"] is None
    assert new["value"] not in result.output


def test_remove_old_goes_ahead_once_every_sign_in_in_the_window_used_another_secret(world):  # noqa: F811 - the fixture imported above
    w = world(integrations=("daemon",), monitor_roles=WRITER, actors=False, evidence={"backfill": "10d"})
    _installed(w, 10)
    old = _old_key(w)
    new = _rotate(w, start="-9d")  # created 9 days ago and put in Sinch at once; in mailwarden only now
    _signed_in(w, old, "-8d")  # Sinch's last sign-in with the old one: before remove_old_after_days (7)
    _signed_in(w, new["keyId"], "-6d", "-2d", "-10m")
    w.poll()
    usage = _usage(w, old)  # what the inventory says before anyone removes anything
    assert usage["unused"] is True and usage["usage"]["evidence"]["state"] == "unused", usage["usage"]
    assert "none of Sinch's 3 sign-in(s) since" in usage["usage"]["known"]
    result = runner.invoke(cli_app, ["secrets", "remove-old", "daemon", "-c", str(w.config_path)])
    assert result.exit_code == 0, result.output
    said = " ".join(result.output.split())
    assert f"removePassword removed the old credential {old}" in said
    assert "the consuming system: none of Sinch's 3 sign-in(s) since" in said and "Entra ID sign-in log" in said
    assert old not in _on_app(w) and new["keyId"] in _on_app(w)


def test_without_sign_in_evidence_nothing_is_called_unused(world):  # noqa: F811 - the fixture imported above
    """No sign-in in the window (a system that polls rarely, or stopped): which secret it uses is not known."""
    w = world(integrations=("daemon",), monitor_roles=WRITER, actors=False)
    old = _old_key(w)
    _rotate(w)
    w.poll()
    usage = _usage(w, old)
    assert usage["unused"] is False and usage["usage"]["evidence"]["state"] == "unknown"
    assert "Sinch has not signed in since" in usage["usage"]["unknown"]


def test_before_the_sign_in_log_is_read_it_is_not_evidence(world):  # noqa: F811 - the fixture imported above
    """No poll has read the tenant's sign-in log yet: the log says nothing (not "Sinch has not signed in since ..."),
    and the inventory says why it is unknown."""
    from datetime import UTC, datetime, timedelta

    from mailwarden.monitor import credential_use

    w = world(integrations=("daemon",), actors=False)
    old = _old_key(w)  # no w.poll(): nothing read
    now = datetime.now(UTC)
    log, why = credential_use.from_log(w.rt.config, w.rt.store, "daemon", now - timedelta(days=7))
    assert log is None and len(why) == 1 and why[0].endswith("has not been read yet"), (log, why)
    said = credential_use.summary(w.rt.config, w.rt.store, "daemon", now, 7)
    assert said == {"known": False, "keys": {}, "note": why[0]}, said
    usage = _usage(w, old)["usage"]
    assert usage["evidence"] is None and "has not signed in since" not in str(usage), usage
