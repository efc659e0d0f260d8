"""The secret_expiry check against the sandbox's Graph: days left of the credential in use."""

from __future__ import annotations

import asyncio

from mailwarden.checks.base import Status
from mailwarden.monitor.runner import select


def test_ok_warn_fail_by_days_left(world):
    w = world("app", secret_end="+200d")
    outcome = w.run("secret_expiry")
    assert outcome.status == Status.OK
    assert outcome.metrics["days_left"] in (199, 200) and outcome.metrics["source"] == "graph"
    assert outcome.metrics["key_id"] == w.key_id and outcome.metrics["hint"] == w.secret[:3]

    w.ctl.set_secret_end(w.app_id, w.key_id, "+250h")
    w.open()  # a new cycle: an app's credentials are read once per cycle (60 s)
    outcome = w.run("secret_expiry")
    assert (outcome.status, outcome.code, outcome.metrics["days_left"]) == (Status.WARN, "secret_expiring", 10)
    assert "10 days left" in outcome.summary

    w.ctl.expire_secret(w.app_id, w.key_id)
    w.open()
    outcome = w.run("secret_expiry")
    assert (outcome.status, outcome.code) == (Status.FAIL, "secret_expired")
    assert w.secret not in outcome.summary


def test_warning_days_option_and_default(world):
    w = world("app", secret_end="+40d", checks={"secret_expiry": {"warning_days": 45}})
    assert w.run("secret_expiry").code == "secret_expiring"
    w = world("app", secret_end="+40d", checks={"secret_expiry": {}})
    assert w.run("secret_expiry").status == Status.OK  # default warning: 30 days


def test_finds_the_credential_in_use_among_several(world):
    w = world("app", secret_end="+300d")
    # a newer secret exists (a rotation started) but the integration still uses the old one
    w.ctl.add_secret(w.app_id, display_name="new", end="+700d")
    w.ctl.add_secret(w.app_id, display_name="other", value="zzz" + "x" * 30, end="+5d")
    outcome = w.run("secret_expiry")
    assert outcome.status == Status.OK and outcome.metrics["key_id"] == w.key_id
    assert outcome.metrics["credentials_on_app"] == 3 and outcome.metrics["newer_credentials"] == 1


def test_deleted_secret_is_credential_not_found(world):
    w = world("app")
    w.ctl.add_secret(w.app_id, display_name="someone else's", end="+100d")
    w.ctl.delete_secret(w.app_id, w.key_id)
    outcome = w.run("secret_expiry")
    assert (outcome.status, outcome.code) == (Status.FAIL, "credential_not_found")


def test_certificate_by_thumbprint(world):
    w = world("app", certificate=True, secret_end="+20d")
    outcome = w.run("secret_expiry")
    assert (outcome.status, outcome.code) == (Status.WARN, "certificate_expiring")
    assert outcome.metrics["kind"] == "certificate" and len(outcome.metrics["thumbprint"]) == 40


def test_graph_denied_falls_back_to_config_date_and_says_so(world):
    w = world("app", monitor_roles=[], secret_expires_on="2026-12-01")
    outcome = w.run("secret_expiry")
    assert outcome.metrics["source"] == "config"
    assert "Graph could not be read" in outcome.summary and "secret_expires_on" in outcome.summary
    assert "Application.Read.All" in outcome.summary
    assert outcome.metrics["graph_error"] == "graph_unreadable"


def test_graph_denied_without_fallback_is_an_error(world):
    w = world("app", monitor_roles=[])
    outcome = w.run("secret_expiry")
    assert (outcome.status, outcome.code) == (Status.ERROR, "graph_unreadable")


def test_graph_throttled_is_warn_with_retry_after(world):
    w = world("app")
    w.ctl.add_fault("/v1.0/applications", status=429, count=1, retry_after=42)
    outcome = w.run("secret_expiry")
    w.ctl.clear_faults()
    assert (outcome.status, outcome.code, outcome.retry_after_s) == (Status.WARN, "throttled", 42)


def test_app_read_once_per_cycle_for_many_integrations(world):
    w = world("app")

    def five(doc):
        base = doc["integrations"][0]
        doc["integrations"] = [dict(base, name=f"box{i}", mailbox=f"box{i}@contoso.com") for i in range(5)]
    w.rewrite(five)
    w.ctl.reset_stats()
    rt = w.runtime
    results = asyncio.run(rt.runner.run_many(select(rt.config, check="secret_expiry")))
    assert {r.outcome.status for r in results} == {Status.OK}
    graph_reads = sum(n for path, n in w.ctl.stats()["requests"].items() if "/v1.0/applications" in path)
    assert graph_reads == 1


def test_credentials_are_stored_as_metadata_only(world):
    w = world("app")
    w.ctl.add_secret(w.app_id, display_name="spare", end="+400d")
    assert w.run("secret_expiry").status == Status.OK
    creds = w.runtime.store.inventory.credentials(w.app_id)
    assert len(creds) == 2
    in_use = [c for c in creds if c.reference]
    assert [c.key_id for c in in_use] == [w.key_id] and in_use[0].reference == "file:secrets/subject"
    raw = (w.dir / "mailwarden.db").read_bytes() + (w.dir / "mailwarden.db-wal").read_bytes()
    assert w.secret.encode() not in raw
