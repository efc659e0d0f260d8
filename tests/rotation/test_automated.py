"""Automated rotation through the sandbox's Graph: addPassword -> hook -> reference -> verify -> removePassword."""

from __future__ import annotations

import logging
import sqlite3
from datetime import timedelta

import pytest

from tests.rotation.conftest import automated, cycle, dispatch

OWNED_BY = ["Application.Read.All", "Application.ReadWrite.OwnedBy"]


def secrets_on_app(w):
    app = next(a for t in w.ctl.state()["tenants"] for a in t["apps"] if a["app_id"] == w.app_id)
    return [s["keyId"] for s in app["secrets"]]


def rotated_world(world, receiver, **rotation):
    w = world("app", secret_end="+20d", monitor_roles=OWNED_BY)
    w.ctl.add_owner(w.app_id, w.monitor_app_id)  # mailwarden's app is an owner of the subject app

    def mutate(doc):
        automated(hook_out=str(w.dir / "hook.out"), **rotation)(doc)
        doc["alerts"] = {"routes": [{"name": "team", "url": receiver.url}]}
    w.rewrite(mutate)
    return w


def test_automated_rotation_end_to_end_and_the_secret_stays_private(world, receiver, clock, caplog):
    caplog.set_level(logging.DEBUG)
    w = rotated_world(world, receiver)
    report = cycle(w, clock)
    assert report.steps == ["subject: auto_add_password", "subject: auto_hook_command", "subject: auto_reference",
                            "subject: auto_verified"], report
    new_secret = (w.dir / "hook.out").read_text().strip()
    assert new_secret and new_secret != w.secret
    assert (w.dir / "secrets" / "subject").read_text().strip() == new_secret  # mailwarden's own reference
    assert (w.dir / "secrets" / "subject").stat().st_mode & 0o777 == 0o600
    [row] = w.runtime.store.rotation.rotations()
    assert len(secrets_on_app(w)) == 2 and row.auto_step == "verified" and row.new_hint == new_secret[:3]

    cycle(w, clock)  # the configured secret now matches the new credential
    [row] = w.runtime.store.rotation.rotations()
    assert row.state == "in_use"
    assert w.run("token").status.value == "ok"
    clock.advance(days=8)
    report = cycle(w, clock)
    assert "subject: auto_remove_password" in report.steps, report
    assert secrets_on_app(w) == [row.new_key_id]
    cycle(w, clock)
    assert w.runtime.store.rotation.rotations()[0].state == "old_removed"
    assert w.run("token").status.value == "ok"

    # nothing but the hook and the reference file ever saw the value: logs, database, alerts
    dispatch(w, clock)
    logged = "\n".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records)
    assert new_secret not in logged
    with sqlite3.connect(w.dir / "mailwarden.db") as db:
        tables = [t for (t,) in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        dump = "\n".join(str(row) for t in tables for row in db.execute(f'SELECT * FROM "{t}"'))  # noqa: S608
    assert new_secret not in dump and new_secret[:3] in dump  # the hint is metadata, the value is not
    assert new_secret not in str(receiver.bodies)
    steps = [e.step for e in w.runtime.store.rotation.rotation_events()]
    assert steps[:5] == ["expiring", "auto_add_password", "auto_hook_command", "auto_reference", "auto_verified"]


def test_removing_the_old_secret_while_in_use_is_refused(world, receiver, clock):
    w = rotated_world(world, receiver)
    cycle(w, clock)
    cycle(w, clock)
    w.run("token")
    # someone restores the old value in mailwarden's reference: the old credential is in use again
    (w.dir / "secrets" / "subject").write_text(w.secret)
    clock.advance(days=8)
    report = cycle(w, clock)
    assert "subject: auto_remove_refused" in report.steps
    assert w.key_id in secrets_on_app(w)  # not removed
    [ev] = [e for e in w.runtime.store.rotation.rotation_events() if e.step == "auto_remove_refused"]
    assert not ev.ok and "still the one mailwarden's configured secret matches" in ev.detail
    assert w.run("token").status.value == "ok"
    dispatch(w, clock)
    assert any("removal of the old secret refused" in b["message"] for b in receiver.bodies)


def test_a_failing_hook_rolls_the_new_secret_back(world, clock):
    w = world("app", secret_end="+20d", monitor_roles=OWNED_BY)
    w.ctl.add_owner(w.app_id, w.monitor_app_id)

    def failing(doc):
        automated()(doc)
        doc["apps"]["subject"]["rotation"]["hook_command"] = ["false"]
    w.rewrite(failing)
    report = cycle(w, clock)
    assert report.steps == ["subject: auto_add_password", "subject: auto_hand_over", "subject: auto_rollback"]
    assert secrets_on_app(w) == [w.key_id]
    assert (w.dir / "secrets" / "subject").read_text().strip() == w.secret
    assert cycle(w, clock).steps == []  # retried a day later, not every cycle
    clock.advance(days=1, minutes=1)
    assert "subject: auto_add_password" in cycle(w, clock).steps


def test_not_an_owner_is_a_failed_step_with_the_reason(world, clock):
    w = world("app", secret_end="+20d", monitor_roles=OWNED_BY)  # no add_owner
    w.rewrite(automated())
    report = cycle(w, clock)
    assert report.steps == ["subject: auto_add_password"]
    [row] = w.runtime.store.rotation.rotations()
    assert row.auto_step == "failed" and "403" in row.auto_error and "owner" in row.auto_error
    assert clock() - timedelta(days=1) < row.updated_at


def test_the_https_webhook_hook_receives_the_new_secret_and_only_it(world, sandbox, receiver, clock, monkeypatch):
    """hook_url instead of hook_command: one POST of {app, client_id, key_id, end, secret} over verified TLS
    (a receiver with a certificate from the sandbox's CA, trusted through SSL_CERT_FILE as httpx reads it)."""
    import http.server
    import json
    import ssl
    import threading

    got: list[dict] = []

    class Hook(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            got.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(str(sandbox.tls.cert_path), str(sandbox.tls.key_path))
    server.socket = tls.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("SSL_CERT_FILE", str(sandbox.tls.ca_path))
    try:
        url = f"https://127.0.0.1:{server.server_address[1]}/rotate"
        w = rotated_world(world, receiver)
        w.rewrite(lambda doc: doc["apps"]["subject"]["rotation"].update(hook_command=None, hook_url=url))
        report = cycle(w, clock)
        assert report.steps == ["subject: auto_add_password", "subject: auto_hook_url", "subject: auto_reference",
                                "subject: auto_verified"], report
        [body] = got
        assert body["client_id"] == w.app_id and body["app"] == "subject" and body["key_id"] and body["end"]
        new_secret = body["secret"]
        assert new_secret != w.secret
        assert (w.dir / "secrets" / "subject").read_text().strip() == new_secret
        assert w.run("token").status.value == "ok"
        assert not (w.dir / "hook.out").exists()  # the command hook was not run
    finally:
        server.shutdown()
        server.server_close()


def test_a_hook_url_that_is_not_https_is_a_config_error():
    from pydantic import ValidationError

    from mailwarden.monitor.config import RotationConfig

    with pytest.raises(ValidationError, match="must be an https:// URL"):
        RotationConfig(automated=True, hook_url="http://hooks.example/rotate")
    assert RotationConfig(automated=True, hook_url="https://hooks.example/rotate").hook_url


def test_verification_waits_while_the_new_secret_replicates(world, receiver, clock):
    """Entra ID refuses a new secret for seconds to about two minutes while it replicates (M365_FACTS.md): the
    rotation waits it out instead of reporting a failed step (an alert after every rotation)."""
    w = rotated_world(world, receiver)
    w.ctl.set_tenant(w.tenant_id, secret_replication_s=2)
    report = cycle(w, clock)
    assert report.steps == ["subject: auto_add_password", "subject: auto_hook_command", "subject: auto_reference",
                            "subject: auto_verified"], report
    [row] = w.runtime.store.rotation.rotations()
    assert row.auto_step == "verified" and row.auto_error is None
