"""The `evidence.signins` section, what is polled, the notes of tenants whose log is not read, the one-filter-per-
event-type request shape, and the scheduler's poll job. No network: nothing here reaches a Graph."""

from __future__ import annotations

import textwrap
from datetime import UTC, datetime

import pytest

from mailwarden.errors import ConfigError
from mailwarden.monitor import config as config_mod
from mailwarden.monitor import signin_replies as replies
from mailwarden.monitor.runtime import open_runtime
from mailwarden.monitor.scheduler import SIGNINS_JOB, Monitor
from mailwarden.monitor.signins import beta_base, signin_filter, targets_of
from mailwarden_sandbox.odata import parse

BASE = """\
database: sqlite:///mailwarden.db
tenants:
  contoso: {tenant_id: 11111111-2222-3333-4444-555555555555, monitor_app: mon}
  fabrikam: {tenant_id: 22222222-3333-4444-5555-666666666666}
apps:
  mon: {tenant: contoso, client_id: 12121212-3434-5656-7878-909090909090, secret: env:MON_SECRET}
  helpdesk: {tenant: contoso, client_id: 66666666-7777-8888-9999-000000000000, secret: env:HD_SECRET}
  daemon: {tenant: contoso, client_id: 77777777-7777-8888-9999-000000000000, secret: env:D_SECRET}
  other: {tenant: fabrikam, client_id: 88888888-7777-8888-9999-000000000000, secret: env:O_SECRET}
integrations:
  - {name: support, app: helpdesk, flow: delegated, account: mail@contoso.com, mailbox: support@contoso.com}
  - {name: sales, app: helpdesk, flow: delegated, account: mail@contoso.com, mailbox: sales@contoso.com}
  - {name: daemon-1, app: daemon, flow: app, mailbox: d1@contoso.com}
  - {name: daemon-2, app: daemon, flow: app, mailbox: d2@contoso.com}
  - {name: elsewhere, app: other, flow: app, mailbox: x@fabrikam.com}
"""


def load(tmp_path, extra: str = "", base: str = BASE) -> config_mod.Config:
    path = tmp_path / "mailwarden.yaml"
    path.write_text(textwrap.dedent(base) + extra)
    return config_mod.load(path)


def problems(tmp_path, extra: str, base: str = BASE) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, extra, base)
    return info.value.problems


def test_polled_once_per_tenant_event_type_and_app_where_a_monitor_app_can_read(tmp_path):
    cfg = load(tmp_path)
    assert cfg.evidence.signins.poll_every == 300 and cfg.evidence.signins.overlap == 45 * 60
    assert cfg.evidence.signins.keep == 14 * 86400
    plan = targets_of(cfg)
    assert list(plan) == ["contoso"]  # fabrikam names no monitor_app
    assert sorted((t.app_id[:8], t.event_type) for t in plan["contoso"]) == [
        ("66666666", "interactiveUser"), ("66666666", "nonInteractiveUser"), ("77777777", "servicePrincipal")]
    off = load(tmp_path, "evidence: {signins: {enabled: false}}\n")
    assert targets_of(off) == {}


def test_the_section_is_validated_with_key_paths(tmp_path):
    assert any(p.startswith("evidence.signins.poll_every (line ") and "between 1m and 1d" in p
               for p in problems(tmp_path, "evidence:\n  signins: {poll_every: 10s}\n"))
    assert any(p.startswith("evidence.signins (line ") and "overlap (3d) must be shorter than keep (2d)" in p
               for p in problems(tmp_path, "evidence:\n  signins: {overlap: 3d, keep: 2d}\n"))
    assert any(p.startswith("evidence.signins.keep") and "between 1d and 30d" in p
               for p in problems(tmp_path, "evidence:\n  signins: {keep: 90d}\n"))
    assert any("evidence.signins.polls" in p and "unknown key" in p
               for p in problems(tmp_path, "evidence:\n  signins: {polls: 5m}\n"))
    no_monitor = BASE.replace(", monitor_app: mon}", "}")
    assert any(p.startswith("evidence.signins.enabled") and "no tenant names one" in p
               for p in problems(tmp_path, "evidence: {signins: {enabled: true}}\n", no_monitor))
    load(tmp_path, "", no_monitor)  # not asked for: nothing to complain about


def test_one_event_type_per_filter_as_the_sandbox_and_microsoft_accept(tmp_path):
    since = datetime(2026, 12, 1, 8, 30, 15, 999, tzinfo=UTC)
    text = signin_filter("nonInteractiveUser", "66666666-7777-8888-9999-000000000000", since)
    assert text == ("signInEventTypes/any(t: t eq 'nonInteractiveUser') and appId eq "
                    "'66666666-7777-8888-9999-000000000000' and createdDateTime ge 2026-12-01T08:30:15Z")
    clauses = parse(text)  # the sandbox's parser: what it refuses, Graph refuses too (sandbox/README.md)
    assert [type(c).__name__ for c in clauses] == ["AnyOf", "Cmp", "Cmp"] and clauses[0].values == [
        "nonInteractiveUser"]
    assert beta_base("https://graph.microsoft.com/v1.0") == "https://graph.microsoft.com/beta"
    assert beta_base("https://127.0.0.1:8443/v1.0/") == "https://127.0.0.1:8443/beta"


@pytest.mark.parametrize("cloud", ["usgov", "china"])
def test_a_national_cloud_is_unsupported_with_one_note_and_no_request(tmp_path, cloud):
    cfg = load(tmp_path, f"cloud: {cloud}\n")
    assert targets_of(cfg) == {}
    rt = open_runtime(cfg)
    try:
        window = rt.signins.window(cfg.integration("support"))
        assert (window.state, window.since, window.signins) == ("unsupported", None, ())
        assert f"the {cloud} cloud" in window.note and "Sign-in logs" in window.note
        notes = rt.signins.tenant_notes()
        assert list(notes) == ["contoso", "fabrikam"]  # one per tenant, whatever its integrations
    finally:
        rt.close()


def test_a_tenant_without_monitor_app_says_how_to_enable_it(tmp_path):
    cfg = load(tmp_path)
    rt = open_runtime(cfg)
    try:
        window = rt.signins.window(cfg.integration("elsewhere"))
        assert window.state == "unsupported" and "tenants.fabrikam.monitor_app" in window.note
        pending = rt.signins.window(cfg.integration("support"))
        assert pending.state == "pending" and "first read" in pending.note  # not polled yet
        assert rt.runner.signins is rt.signins  # the port every check's context carries
    finally:
        rt.close()


def test_notes_say_why_and_how_once_per_state():
    assert replies.note("ok", "contoso", None) is None
    unlicensed = replies.note("unlicensed", "contoso", "Microsoft Graph answered 403 " + replies.NON_PREMIUM)
    assert unlicensed.startswith("Consuming systems' own sign-ins in tenant contoso: unknown: Microsoft Graph")
    assert "P1 or P2" in unlicensed
    assert "AuditLog.Read.All and Directory.Read.All" in replies.note("forbidden", "contoso", "x", monitor_app="mon")
    assert replies.refusal(403, replies.NON_PREMIUM, "Neither tenant is B2C", None).state == "unlicensed"
    assert replies.refusal(403, "Authorization_RequestDenied", "Insufficient privileges", None).state == "forbidden"
    assert replies.refusal(429, None, None, "30") == replies.Refusal("error", "Microsoft Graph answered 429", 30.0)
    assert replies.refusal(503, "ServiceUnavailable", None, None).state == "error"
    assert replies.worst(["ok", "error", "forbidden"]) == "forbidden"


def test_the_scheduler_polls_every_poll_every_only_while_a_log_is_read(tmp_path):
    cfg = load(tmp_path, "evidence: {signins: {poll_every: 10m}}\n")
    monitor = Monitor(open_runtime(cfg))
    try:
        monitor.sync_jobs(first=True)
        job = monitor.scheduler.get_job(SIGNINS_JOB)
        assert job is not None and job.trigger.interval.total_seconds() == 600
    finally:
        monitor.runtime.close()
    off = Monitor(open_runtime(load(tmp_path, "evidence: {signins: {enabled: false}}\n")))
    try:
        off.sync_jobs(first=True)
        assert off.scheduler.get_job(SIGNINS_JOB) is None
    finally:
        off.runtime.close()
