"""Sign-in evidence against the sandbox: the consuming systems (sandbox actors) and mailwarden sign in to the same
apps, the poller reads Graph beta auditLogs/signIns with the tenant's monitor app, and the window a `consumer`
check reads holds the consuming system's sign-ins only."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from mailwarden.monitor.signins import NON_INTERACTIVE, SERVICE_PRINCIPAL
from tests.monitor.signin_world import sb, world  # noqa: F401 - the module's sandbox and its worlds
from tests.sandbox.log_helpers import SP_FILTER, reader_token, signins


def test_own_token_requests_are_recorded_with_the_logged_correlation_id_and_left_out_of_the_window(world):  # noqa: F811
    w = world(integrations=("daemon",))
    assert w.check("token", "daemon").status == "ok"  # mailwarden's own client-credentials request
    consumer = w.tick("daemon")
    assert consumer["ok"], consumer
    own = [r for r in w.rt.store.signins.own_requests() if r.client_id == w.apps["daemon"]]
    assert len(own) == 1 and own[0].tenant == w.tenant_id and not own[0].generated
    # the sandbox's log names both sign-ins by their client-request-id: mailwarden's and the consumer's
    logged = signins(w.sb, reader_token(w.sb, tenant=w.tenant_id), f"{SP_FILTER} and appId eq '{w.apps['daemon']}'")
    assert {e["correlationId"] for e in logged} == {own[0].correlation_id, consumer["correlation_id"]}

    report = w.poll()
    assert report.states == {"t": "ok"} and report.requests == 1  # one event type, one app: one request
    window = w.window("daemon")
    assert window.state == "ok" and window.note is None
    assert [(s.event_type, s.error_code, s.origin) for s in window.signins] == [(SERVICE_PRINCIPAL, 0, "consumer")]
    [mine] = w.rows(origin="own")
    assert mine.correlation_id == own[0].correlation_id
    [theirs] = w.rows(origin="consumer")
    assert theirs.correlation_id == consumer["correlation_id"] and window.signins[0].id == theirs.signin_id
    assert window.signins[0].credential_key_id  # app-only: the keyId of the secret the consumer presented
    assert window.since is not None and window.read_until is not None and window.since < window.read_until


def test_delegated_window_has_the_accounts_consumer_sign_ins_and_none_of_mailwardens_refreshes(world):  # noqa: F811
    w = world(integrations=("helpdesk",))
    consumer = w.tick("helpdesk")
    assert consumer["ok"], consumer
    w.ctl.record_signin(w.tenant_id, w.apps["helpdesk"], upn="someone-else@" + w.domain)  # another account
    w.sign_in()
    out = w.check("token", "helpdesk")
    assert out.status == "ok", out.summary  # mailwarden's refresh: a non-interactive sign-in
    assert w.poll().requests == 2  # interactive and non-interactive: one request each
    window = w.window("helpdesk")
    assert window.state == "ok"
    # the consumer's refresh is there; mailwarden's code redemption and refresh are not, nor the other account's
    ours = {r.correlation_id for r in w.rt.store.signins.own_requests()}
    assert [(s.event_type, s.account) for s in window.signins if s.event_type == NON_INTERACTIVE] == [
        (NON_INTERACTIVE, w.upn)]
    assert all(r.correlation_id in ours for r in w.rows(origin="own")) and len(w.rows(origin="own")) >= 2
    assert {r.correlation_id for r in w.rows(event_type=NON_INTERACTIVE, origin="consumer",
                                             user_principal_name=w.upn)} == {consumer["correlation_id"]}
    # the browser sign-in mailwarden's setup made above is outside any reauthorisation window: nothing tells it
    # apart from the consuming system's, so it is the consumer's (the web and CLI flows open a window: see
    # test_signins_reauth)
    assert [s.event_type for s in window.signins].count("interactiveUser") == 1


def test_late_logs_are_read_in_the_overlap_and_stored_once(world):  # noqa: F811
    w = world(integrations=("helpdesk",), noninteractive_log_delay_s=1200)
    w.rt.signins.clock = lambda: datetime.now(UTC) + timedelta(minutes=2)  # each read ends after the refresh below
    late = w.tick("helpdesk")  # the consuming system refreshes; its event reaches the log 20 minutes late
    assert late["ok"], late
    assert w.poll().stored == 0  # not in the log yet; this read covers until two minutes after the refresh
    w.ctl.ingest_logs(w.tenant_id)
    assert w.poll().stored == 1  # read though it was created before the last read ended: the overlap
    again = w.poll()
    assert (again.read, again.stored) == (1, 0)  # read again, stored once
    [row] = w.rows()
    assert row.correlation_id == late["correlation_id"] and row.origin == "consumer"
    assert [s.id for s in w.window("helpdesk").signins] == [row.signin_id]


def test_an_unlicensed_tenant_is_one_note_and_one_request(world):  # noqa: F811
    w = world(licence="free")
    report = w.poll()
    assert report.states == {"t": "unlicensed"} and report.requests == 1  # the rest would answer the same
    notes = w.rt.signins.tenant_notes()
    assert list(notes) == ["t"] and "P1 or P2" in notes["t"] and "NonPremium" in notes["t"]
    for name in ("daemon", "helpdesk"):
        window = w.window(name)
        assert (window.state, window.note, window.signins) == ("unlicensed", notes["t"], ())
    w.ctl.set_tenant(w.tenant_id, entra_licence="p1")
    w.tick("daemon")
    assert w.poll().states == {"t": "ok"}
    assert w.rt.signins.tenant_notes() == {} and len(w.window("daemon").signins) == 1


def test_a_monitor_app_without_the_permission_is_forbidden_with_how_to_grant_it(world):  # noqa: F811
    w = world(monitor_roles=["Application.Read.All"])
    report = w.poll()
    assert report.states == {"t": "forbidden"} and report.requests == 1
    window = w.window("helpdesk")
    assert window.state == "forbidden"
    assert "Authorization_RequestDenied" in window.note and "AuditLog.Read.All and Directory.Read.All" in window.note
    assert list(w.rt.signins.tenant_notes()) == ["t"]


def test_paging_follows_the_next_link(world):  # noqa: F811
    w = world(integrations=("daemon",), actors=False)
    made = {w.ctl.record_signin(w.tenant_id, w.apps["daemon"], event_type=SERVICE_PRINCIPAL)["id"]
            for _ in range(1003)}
    report = w.poll()
    assert (report.requests, report.read, report.stored) == (2, 1003, 1003)  # 1,000 a page
    assert {s.id for s in w.window("daemon").signins} == made


def test_a_throttled_read_keeps_what_was_read_and_waits_as_asked(world):  # noqa: F811
    w = world(integrations=("daemon",))
    w.tick("daemon")
    assert w.poll().stored == 1
    fault = w.ctl.add_fault("/beta/auditLogs/signIns", status=429, retry_after=120, count=1)
    try:
        report = w.poll()
        assert report.states == {"t": "error"} and report.requests == 1
        window = w.window("daemon")
        assert window.state == "error" and "429" in window.note and "are kept" in window.note
        assert len(window.signins) == 1  # the previous data
        assert w.poll().requests == 0  # Retry-After: 120 s
    finally:
        w.ctl.clear_faults(fault)


def test_check_reads_the_logs_first_only_when_the_last_read_is_stale(world):  # noqa: F811
    from mailwarden.monitor.cli import _read_signins

    w = world(integrations=("daemon",))
    w.tick("daemon")
    _read_signins(w.rt, [("daemon", ["token"])])  # no consumer check: nothing read
    assert w.rt.store.signins.signin_polls() == {}
    _read_signins(w.rt, [("daemon", ["consumer"])])
    [poll] = w.rt.store.signins.signin_polls().values()
    assert poll.state == "ok" and len(w.window("daemon").signins) == 1
    _read_signins(w.rt, [("daemon", ["consumer"])])  # read within poll_every: not again
    assert w.rt.store.signins.signin_polls()[poll.tenant_id, poll.event_type, poll.app_id].checked_at == poll.checked_at


def test_the_first_read_starts_when_own_requests_began_to_be_recorded(world):  # noqa: F811
    w = world(integrations=("daemon",), actors=False)
    began = w.rt.store.signins.recorded_from()  # the upgrade to this version (migration 0010)
    assert began is not None and datetime.now(UTC) - began < timedelta(minutes=1)
    # an hour ago: perhaps mailwarden's own token check, from before its requests were recorded
    w.ctl.record_signin(w.tenant_id, w.apps["daemon"], event_type=SERVICE_PRINCIPAL, at="-1h")
    assert w.poll().read == 0  # the backfill (a day) stops where recording began
    window = w.window("daemon")
    assert window.signins == () and window.since == began.replace(microsecond=0)

