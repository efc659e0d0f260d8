"""The notice policy, pure, walked with a fake clock: what opens, what repeats, what stays quiet."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from mailwarden import state as sm
from mailwarden.alerts.policy import Change, CheckInfo, Policy, PolicyConfig
from mailwarden.alerts.windows import Maintenance
from mailwarden.monitor.config import MaintenanceWindow

T0 = datetime(2030, 1, 7, 9, 0, tzinfo=UTC)
APP = "66666666-7777-8888-9999-000000000000"


def infos(*names: str, checks=("token", "pop", "smtp"), client_id=APP, tenant="t", tags=()) -> dict:
    return {(n, c): CheckInfo(n, c, tenant, client_id, tuple(tags)) for n in names for c in checks}


class Sim:
    """Feeds raw outcomes through the real state machine and the policy, as the dispatcher does."""

    def __init__(self, checks: dict, cfg: PolicyConfig | None = None, threshold: int = 2):
        self.checks = checks
        self.cfg = cfg or PolicyConfig()
        self.th = sm.Thresholds(failure_threshold=threshold)
        self.states: dict = {}
        self.transitions: list[Change] = []
        self.pending: list[Change] = []
        self.incidents: list = []
        self.notices: list = []
        self.now = T0
        self._ids = 0

    def at(self, minutes: float) -> Sim:
        self.now = T0 + timedelta(minutes=minutes)
        return self

    def result(self, integration: str, check: str, status: str, code: str | None = None) -> Sim:
        st = self.states.get((integration, check), sm.StateSnapshot())
        new, ev = sm.advance(st, status, self.th, self.now)
        self.states[(integration, check)] = new
        if ev is not None:
            self._ids += 1
            ch = Change(self._ids, integration, check, ev.from_status, ev.to_status, code, ev.at, ev.silent)
            self.transitions.append(ch)
            self.pending.append(ch)
        return self

    def pause(self, integration: str, check: str) -> Sim:
        new, ev = sm.pause(self.states.get((integration, check), sm.StateSnapshot()), self.now)
        self.states[(integration, check)] = new
        if ev is not None:
            self._ids += 1
            self.pending.append(Change(self._ids, integration, check, ev.from_status, ev.to_status, None, ev.at))
        return self

    def dispatch(self) -> list[tuple[str, int | None]]:
        live = [i for i in self.incidents if i.status == "open" or i.held_window]
        recent = {}
        for ch in self.transitions:
            if not ch.silent:
                recent.setdefault((ch.integration, ch.check), []).append(ch.at)
        touched, notices = Policy(self.cfg, self.checks, self.now).apply(live, self.pending, recent)
        self.pending = []
        for inc in touched:
            if inc.id is None:
                self._ids += 1
                inc.id = 1000 + self._ids
                self.incidents.append(inc)
        self.notices += notices
        return [(n.kind, n.incident.id if n.incident else None) for n in notices]

    def open(self):
        return [i for i in self.incidents if i.status == "open"]


def kinds(notices):
    return [k for k, _ in notices]


def test_failures_up_to_the_threshold_give_exactly_one_alert_then_silence_then_recovery():
    s = Sim(infos("helpdesk"))
    assert s.at(0).result("helpdesk", "token", "ok").dispatch() == []  # new -> ok is silent
    assert s.at(5).result("helpdesk", "token", "fail", "consent_missing").dispatch() == []  # 1 of 2
    got = s.at(10).result("helpdesk", "token", "fail", "consent_missing").dispatch()
    assert kinds(got) == ["opened"]
    inc = s.open()[0]
    assert inc.key == "int:helpdesk:consent_missing" and inc.sequence == 1
    for m in range(15, 60, 5):
        assert s.at(m).result("helpdesk", "token", "fail", "consent_missing").dispatch() == []
    assert s.at(70).result("helpdesk", "token", "ok").dispatch() == [("resolved", inc.id)]
    assert inc.status == "resolved" and inc.resolve_reason == "recovered" and inc.sequence == 2
    assert s.at(80).result("helpdesk", "token", "ok").dispatch() == []


def test_warn_and_blocked_open_nothing_and_new_or_paused_to_ok_is_silent():
    s = Sim(infos("a"), threshold=1)
    assert s.at(0).result("a", "token", "warn", "secret_expiring").dispatch() == []
    assert s.at(1).result("a", "pop", "blocked", "blocked_by_token").dispatch() == []
    s.at(2).pause("a", "smtp").dispatch()
    assert s.at(3).result("a", "smtp", "ok").dispatch() == []
    assert s.incidents == []


def test_reminder_only_after_the_interval_and_ack_stops_them():
    s = Sim(infos("a"), threshold=1)
    assert kinds(s.at(0).result("a", "token", "fail", "secret_invalid").dispatch()) == ["opened"]
    assert s.at(3 * 60 + 59).dispatch() == []
    assert kinds(s.at(4 * 60).dispatch()) == ["reminder"]
    assert s.at(6 * 60).dispatch() == []
    assert kinds(s.at(8 * 60).dispatch()) == ["reminder"]
    inc = s.open()[0]
    assert inc.reminders == 2 and inc.sequence == 3
    inc.ack_by, inc.ack_at = "alice", s.now
    assert s.at(30 * 60).dispatch() == []
    assert kinds(s.at(31 * 60).result("a", "token", "ok").dispatch()) == ["resolved"]  # recovery still said


def test_snooze_holds_reminders_until_its_end():
    s = Sim(infos("a"), threshold=1)
    s.at(0).result("a", "token", "fail", "consent_missing").dispatch()
    s.open()[0].snoozed_until = T0 + timedelta(hours=10)
    assert s.at(4 * 60).dispatch() == [] and s.at(9 * 60).dispatch() == []
    assert kinds(s.at(10 * 60).dispatch()) == ["reminder"]


def test_one_expired_secret_shared_by_three_integrations_is_one_incident_naming_all_three():
    s = Sim(infos("a", "b", "c", checks=("token", "secret_expiry")), threshold=1)
    s.at(0)
    for n in ("a", "b", "c"):
        s.result(n, "token", "fail", "secret_expired").result(n, "secret_expiry", "fail", "secret_expired")
    assert kinds(s.dispatch()) == ["opened"]
    [inc] = s.open()
    assert inc.key == f"cred:{APP}:*:secret_expired" and inc.affected == ["a", "b", "c"] and len(inc.members) == 6
    # integrations dispatched one by one (right after each result) still give one incident
    s2 = Sim(infos("a", "b", "c", checks=("token",)), threshold=1)
    got = [k for n in ("a", "b", "c") for k in kinds(s2.at(0).result(n, "token", "fail", "secret_expired").dispatch())]
    assert got == ["opened"] and s2.open()[0].affected == ["a", "b", "c"]
    for n in ("a", "b"):
        assert s2.at(5).result(n, "token", "ok").dispatch() == []
    assert kinds(s2.at(6).result("c", "token", "ok").dispatch()) == ["resolved"]


def test_the_affected_list_comes_from_the_credential_in_use():
    """Two config entries on one app registration, each with its own secret: the expired one's incident lists only
    the integrations that use it (issue 14: it was built from the client id)."""
    checks = {**{(n, "token"): CheckInfo(n, "token", "t", APP, credential="hint:old") for n in ("a", "b")},
              **{(n, "token"): CheckInfo(n, "token", "t", APP, credential="hint:new") for n in ("c",)}}
    s = Sim(checks, threshold=1)
    assert kinds(s.at(0).result("a", "token", "fail", "secret_expired").dispatch()) == ["opened"]
    [inc] = s.open()
    assert inc.key == f"cred:{APP}:hint:old:secret_expired" and inc.affected == ["a", "b"]


def test_a_revoked_account_is_one_incident_across_its_integrations():
    """The integrations of one delegated account share its refresh token (the token store is keyed on tenant, app
    and account): one revocation is one incident naming them all, resolved when they all recover."""
    checks = {(n, k): CheckInfo(n, k, "t", APP, flow="delegated", account="b2c@contoso.com")
              for n in ("support", "billing") for k in ("token", "pop")}
    checks[("other", "token")] = CheckInfo("other", "token", "t", APP, flow="delegated", account="x@contoso.com")
    s = Sim(checks, threshold=1)
    got = kinds(s.at(0).result("support", "token", "fail", "refresh_token_revoked").dispatch())
    got += kinds(s.at(1).result("billing", "token", "fail", "refresh_token_revoked").dispatch())
    assert got == ["opened"]
    [inc] = s.open()
    assert inc.key == f"acct:t:{APP}:b2c@contoso.com:refresh_token_revoked" and inc.affected == ["billing", "support"]
    assert kinds(s.at(5).result("other", "token", "fail", "refresh_token_revoked").dispatch()) == ["opened"]
    s.at(9).result("support", "token", "ok").result("billing", "token", "ok")
    assert kinds(s.dispatch()) == ["resolved"]


def test_an_unreachable_login_host_is_one_outage_across_tenants_and_checks():
    """The sign-in service is one host: token checks and the monitor apps' credential reads failing with
    idp_unreachable in any tenant are one incident and one notice."""
    checks = {**infos("a1", "a2", checks=("token", "secret_expiry"), tenant="A"),
              **infos("b1", checks=("token", "secret_expiry"), tenant="B", client_id="x")}
    s = Sim(checks, threshold=1)
    s.at(0)
    for n in ("a1", "a2", "b1"):
        s.result(n, "token", "error", "idp_unreachable").result(n, "secret_expiry", "error", "idp_unreachable")
    assert kinds(s.dispatch()) == ["grouped"]
    [inc] = s.open()
    assert inc.key == "net:*:idp_unreachable" and inc.affected == ["a1", "a2", "b1"] and inc.tenant is None


def test_a_blind_monitor_app_is_one_incident_per_tenant():
    s = Sim(infos("a", "b", "c", checks=("secret_expiry",)), threshold=1)
    s.at(0)
    for n in ("a", "b", "c"):
        s.result(n, "secret_expiry", "error", "graph_unreadable")
    assert kinds(s.dispatch()) == ["opened"]
    assert [i.key for i in s.open()] == ["monitor:t:graph_unreadable"]


def test_revoked_refresh_token_is_one_alert_not_one_per_protocol():
    s = Sim(infos("hd"), threshold=1)
    s.at(0).result("hd", "token", "fail", "refresh_token_revoked")
    s.result("hd", "pop", "blocked", "blocked_by_token").result("hd", "smtp", "blocked", "blocked_by_token")
    assert kinds(s.dispatch()) == ["opened"] and len(s.incidents) == 1
    s.at(10).result("hd", "token", "ok").result("hd", "pop", "ok").result("hd", "smtp", "ok")
    assert kinds(s.dispatch()) == ["resolved"]


def test_maintenance_window_holds_opening_and_reminders_then_summarises():
    window = MaintenanceWindow(name="patch", cron="0 10 * * *", duration="2h", timezone="Europe/Berlin")
    # 10:00 Berlin = 09:00 UTC in January: T0 is inside the window until 11:00 UTC
    s = Sim(infos("a", "b"), PolicyConfig(maintenance=Maintenance([window])), threshold=1)
    assert s.at(5).result("a", "token", "fail", "consent_missing").dispatch() == []
    assert s.at(10).result("b", "token", "fail", "auth_failed").dispatch() == []
    assert s.at(30).result("b", "token", "ok").dispatch() == []  # opened and resolved inside: no notice
    assert s.at(119).dispatch() == []
    got = s.at(120).dispatch()
    assert kinds(got) == ["maintenance_summary"]
    summary = s.notices[-1]
    assert [i.key for i in summary.incidents] == ["int:a:consent_missing", "int:b:auth_failed"]
    assert summary.window == "patch" and summary.key.startswith("maintenance/patch/20300107T110000Z")
    assert s.at(121).dispatch() == []
    # reminders resume from the summary, and the next day's window holds one back
    assert kinds(s.at(120 + 4 * 60).dispatch()) == ["reminder"]
    assert s.at(24 * 60 + 5).dispatch() == []
    assert kinds(s.at(24 * 60 + 120).dispatch()) == ["maintenance_summary"]


def test_one_off_window_scoped_by_tag_leaves_others_alone():
    window = MaintenanceWindow(name="migration", start=T0, end=T0 + timedelta(hours=1), tags=["crm"])
    checks = {**infos("crm1", tags=["crm"]), **infos("other", client_id="1" * 8 + "-1111-1111-1111-" + "1" * 12)}
    s = Sim(checks, PolicyConfig(maintenance=Maintenance([window])), threshold=1)
    s.at(1).result("crm1", "token", "fail", "consent_missing").result("other", "token", "fail", "consent_missing")
    s.dispatch()
    opened = [n.incident.key for n in s.notices if n.kind == "opened"]
    assert opened == ["int:other:consent_missing"]
    assert kinds(s.at(60).dispatch()) == ["maintenance_summary"]


def test_flapping_sends_one_notice_then_quiet_until_stable():
    s = Sim(infos("f"), PolicyConfig(flap_transitions=4, flap_window=timedelta(hours=1)), threshold=1)
    seq = []
    for m, status in enumerate(["fail", "ok", "fail", "ok", "fail", "ok", "fail", "ok", "fail"]):
        seq += kinds(s.at(m * 5).result("f", "token", status, "timeout" if status == "fail" else None)
                     .dispatch())
    # fail (held for correlation), ok: nothing; fail/ok again: nothing; 4th change: flapping, then quiet
    assert seq == ["flapping"]
    assert [i.kind for i in s.open()] == ["flapping"]
    # stable (no change for a whole window) while failing: the flapping incident gives way to one alert
    assert s.at(40 + 59).dispatch() == []
    assert kinds(s.at(40 + 60).dispatch()) == ["opened"]
    assert [i.key for i in s.open()] == ["int:f:timeout"]


def test_flapping_that_settles_ok_is_resolved():
    s = Sim(infos("f"), PolicyConfig(flap_transitions=4, correlation_window=timedelta(0)), threshold=1)
    got = []
    for m, status in enumerate(["fail", "ok", "fail", "ok"]):
        got += kinds(s.at(m).result("f", "token", status, "auth_failed" if status == "fail" else None).dispatch())
    assert got == ["opened", "resolved", "opened", "flapping"]
    assert kinds(s.at(3 + 60).dispatch()) == ["resolved"]


def test_integration_leaving_the_config_closes_its_incident_with_a_notice():
    s = Sim(infos("gone", "stay"), threshold=1)
    s.at(0).result("gone", "token", "fail", "consent_missing").dispatch()
    s.checks = infos("stay")
    assert kinds(s.at(5).dispatch()) == ["resolved"]
    assert s.incidents[0].resolve_reason == "removed"


def test_pausing_closes_the_incident():
    s = Sim(infos("p"), threshold=1)
    s.at(0).result("p", "token", "fail", "consent_missing").dispatch()
    assert kinds(s.at(5).pause("p", "token").dispatch()) == ["resolved"]
    assert s.incidents[0].resolve_reason == "paused"


def test_network_outage_of_most_of_a_tenant_is_one_grouped_alert():
    names = [f"i{n}" for n in range(5)]
    s = Sim(infos(*names, checks=("token",)), threshold=1)
    got = []
    for n, name in enumerate(names[:4]):
        got += kinds(s.at(n).result(name, "token", "error", "idp_unreachable").dispatch())
    assert got == ["grouped"]
    [group] = s.open()
    assert group.key == "net:*:idp_unreachable" and group.affected == names[:4]  # one sign-in service
    assert s.at(10).result("i4", "token", "error", "idp_unreachable").dispatch() == []
    assert s.open()[0].affected == names
    for n, name in enumerate(names):
        got = s.at(20 + n).result(name, "token", "ok").dispatch()
    assert kinds(got) == ["resolved"]


def test_a_lone_network_failure_alerts_after_the_correlation_window():
    s = Sim(infos("a", "b", "c", checks=("token",)), threshold=1)
    assert s.at(0).result("a", "token", "error", "dns_error").dispatch() == []
    assert s.at(4).dispatch() == []
    assert kinds(s.at(5).dispatch()) == ["opened"]


def test_failures_across_tenants_group_into_one():
    checks = {**infos("a1", "a2", checks=("token",), tenant="A"),
              **infos("b1", "b2", checks=("token",), tenant="B", client_id="x")}
    s = Sim(checks, threshold=1)
    s.at(0).result("a1", "token", "error", "tls_error").result("b1", "token", "error", "tls_error")
    got = s.dispatch() + s.at(1).result("b2", "token", "error", "tls_error").dispatch()
    assert kinds(got) == ["grouped"] and s.open()[0].key == "net:*:tls_error"


def test_a_new_diagnosis_supersedes_the_old_incident():
    s = Sim(infos("a"), threshold=1, cfg=PolicyConfig(flap_transitions=10))
    s.at(0).result("a", "token", "fail", "consent_missing").dispatch()
    got = s.at(5).result("a", "token", "error", "unclassified").dispatch()
    assert kinds(got) == ["opened"]
    assert [(i.key, i.status, i.resolve_reason) for i in s.incidents] == [
        ("int:a:consent_missing", "resolved", "superseded"), ("int:a:unclassified", "open", None)]
