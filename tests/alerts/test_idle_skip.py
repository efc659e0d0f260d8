"""An idle dispatch cycle does not evaluate at all (issue 15, item 2): it skips while no transition is new and the
time ``dispatcher.next_due`` stored has not come. That must never cost a notice or delay one: here a dispatcher that
skips and one that folds every cycle, both walked through the real state machine and the real policy, send the same
notices at the same moments, whatever the results, acks and snoozes (reminders, correlation holds, maintenance
windows and their summaries, flapping and its verdict)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailwarden import state as sm
from mailwarden.alerts.dispatcher import next_due
from mailwarden.alerts.policy import Change, CheckInfo, Policy, PolicyConfig
from mailwarden.alerts.windows import Maintenance
from mailwarden.monitor.config import MaintenanceWindow

T0 = datetime(2030, 1, 7, 9, 0, tzinfo=UTC)
APP = "66666666-7777-8888-9999-000000000000"
NAMES = ("a", "b", "c")
CHECKS = ("token", "pop")
INFOS = {(n, c): CheckInfo(n, c, "t", APP, ("maint",) if n == "a" else (), flow="delegated", account="u@x.com")
         for n in NAMES for c in CHECKS}
CFG = PolicyConfig(reminder_interval=timedelta(hours=1), flap_transitions=3, flap_window=timedelta(minutes=50),
                   correlation_window=timedelta(minutes=10), correlation_min=2,
                   maintenance=Maintenance([MaintenanceWindow(name="patch", cron="20 */3 * * *", duration="40m",
                                                              tags=["maint"])]))
OUTCOMES = [("ok", None), ("warn", "throttled"), ("fail", "consent_missing"), ("error", "timeout"),
            ("fail", "secret_expired"), ("fail", "refresh_token_revoked"), ("blocked", "blocked_by_token")]


class Dispatch:
    """The dispatcher's evaluation over in-memory incidents: the policy on the pending changes, every cycle
    (``skip=False``) or only when something is new or due (``skip=True``, as ``Dispatcher.evaluate`` with
    ``Store.alerts.alerts_pending``)."""

    def __init__(self, skip: bool):
        self.skip = skip
        self.states: dict = {}
        self.changes: list[Change] = []
        self.pending: list[Change] = []
        self.incidents: list = []
        self.sent: list[tuple] = []
        self.due: datetime | None = None
        self.folded = False
        self._ids = 0

    def result(self, now, integration, check, status, code) -> None:
        new, ev = sm.advance(self.states.get((integration, check), sm.StateSnapshot()), status,
                             sm.Thresholds(failure_threshold=2), now)
        self.states[(integration, check)] = new
        if ev is not None:
            self._ids += 1
            ch = Change(self._ids, integration, check, ev.from_status, ev.to_status, code, ev.at, ev.silent)
            self.changes.append(ch)
            self.pending.append(ch)

    def live(self) -> list:
        return [i for i in self.incidents if i.status == "open" or i.held_window]

    def person(self, now, what, index, minutes) -> None:
        open_ = sorted((i for i in self.incidents if i.status == "open"), key=lambda i: i.key)
        if index < len(open_):
            if what == "ack":
                open_[index].ack_at, open_[index].ack_by = now, "someone"
            else:  # a new snooze replaces the last, shorter or longer
                open_[index].snoozed_until = now + timedelta(minutes=minutes)
            self.folded = False  # the store clears the stored due time with the change (ack_incident, snooze_incident)

    def cycle(self, now) -> None:
        if self.skip and self.folded and not self.pending and (self.due is None or now < self.due):
            return
        recent: dict = {}
        for ch in self.changes:
            if not ch.silent:
                recent.setdefault((ch.integration, ch.check), []).append(ch.at)
        live = self.live()
        touched, notices = Policy(CFG, INFOS, now).apply(live, self.pending, recent)
        self.pending = []
        for inc in touched:
            if inc.id is None:
                self._ids += 1
                inc.id = self._ids
                self.incidents.append(inc)
        self.folded = True
        self.due = next_due({id(i): i for i in [*live, *touched]}.values(), CFG, now)
        for n in notices:
            about = n.incident.key if n.incident else tuple(sorted(i.key for i in n.incidents))
            self.sent.append((now, n.kind, about, n.sequence))


event = st.one_of(
    st.tuples(st.just("result"), st.sampled_from(NAMES), st.sampled_from(CHECKS), st.sampled_from(OUTCOMES)),
    st.tuples(st.sampled_from(["ack", "snooze"]), st.integers(0, 3), st.sampled_from([5, 45, 130])))
steps = st.lists(st.tuples(st.integers(1, 90), st.lists(event, max_size=4)), min_size=1, max_size=25)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps)
def test_skipping_idle_cycles_sends_the_same_notices_at_the_same_moments(walk):
    """Events, then a dispatch cycle every minute until the next events (the scheduler's is every 15 s)."""
    every, skipping = Dispatch(skip=False), Dispatch(skip=True)
    now = T0
    for minutes, events in walk:
        for d in (every, skipping):
            for e in events:
                if e[0] == "result":
                    d.result(now, e[1], e[2], *e[3])
                else:
                    d.person(now, *e)
        for _ in range(minutes):
            for d in (every, skipping):
                d.cycle(now)
            assert skipping.sent == every.sent
            now += timedelta(minutes=1)


def test_reminders_held_notices_summaries_and_flapping_verdicts_are_each_due_on_time():
    """The walk above finds these by chance; here each is forced once."""
    d = Dispatch(skip=True)
    every = Dispatch(skip=False)
    script = [(0, ("b", "token", "fail", "consent_missing")), (1, ("b", "token", "fail", "consent_missing")),
              (2, ("c", "pop", "error", "timeout")), (3, ("c", "pop", "error", "timeout")),  # held 10 min
              (80, ("a", "token", "fail", "consent_missing")), (81, ("a", "token", "fail", "consent_missing")),
              (130, ("c", "token", "fail", "auth_failed")), (131, ("c", "token", "fail", "auth_failed")),
              (132, ("c", "token", "ok", None)), (133, ("c", "token", "fail", "auth_failed")),
              (134, ("c", "token", "fail", "auth_failed"))]
    for minute in range(0, 360):
        now = T0 + timedelta(minutes=minute)
        for at, (n, c, status, code) in script:
            if at == minute:
                d.result(now, n, c, status, code)
                every.result(now, n, c, status, code)
        d.cycle(now)
        every.cycle(now)
    kinds = {k for _, k, _, _ in every.sent}
    assert {"opened", "reminder", "flapping", "maintenance_summary"} <= kinds, kinds
    assert d.sent == every.sent
