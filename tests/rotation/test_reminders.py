"""Staged expiry reminders: a fake clock walks a secret from 90 days to expiry."""

from __future__ import annotations

from datetime import timedelta

from mailwarden.days import days_left
from mailwarden.monitor.models import ExpiryReminder
from mailwarden.monitor.rotation import current_stage
from tests.rotation.conftest import cycle, dispatch, with_alerts

STAGES = [60, 30, 14, 7, 3, 1, 0]


def test_current_stage_is_the_most_urgent_due(clock):
    now = clock()
    assert current_stage(now + timedelta(days=90), now, STAGES) is None
    assert current_stage(now + timedelta(days=60, hours=5), now, STAGES) == 60
    assert current_stage(now + timedelta(days=10), now, STAGES) == 14
    assert current_stage(now + timedelta(hours=5), now, STAGES) == 1
    assert current_stage(now - timedelta(seconds=1), now, STAGES) == 0
    assert current_stage(now - timedelta(days=3), now, [30, 7]) is None  # no "on expiry" stage configured
    assert days_left(now + timedelta(days=9, hours=23), now) == 9


def test_each_stage_once_none_after_restart_one_reminder_for_shared_app(world, receiver, clock):
    w = world("app", secret_end="+90d")
    w.rewrite(with_alerts(receiver.url, names=("sub-a", "sub-b"), secret_field="Settings > Client Secret"))
    sent: list[int] = []
    for day in range(0, 93):
        clock.now = clock.now.replace() if day == 0 else clock.now + timedelta(days=1)
        report = cycle(w, clock, restart=day % 5 == 0)  # a restart (new runtime and store) every 5 days
        assert not report.errors, report.errors
        sent += [int(k.rsplit("/", 1)[1]) for k in report.reminders]
        if day in (31, 80):  # and the same day again, twice: nothing more
            assert cycle(w, clock).reminders == [] and cycle(w, clock).reminders == []
    assert sent == STAGES
    rows = w.runtime.store.rotation.reminders()
    assert sorted(r.stage for r in rows) == sorted(STAGES)
    assert all(r.integrations == ["sub-a", "sub-b"] for r in rows)
    assert w.runtime.store.count(ExpiryReminder) == 7

    report = dispatch(w, clock)
    # one message per stage and route: the team route and one owner route per owner of the two integrations
    assert report.sent == 7 * 3 and report.failed == 0
    bodies = [b["message"] for b in receiver.bodies]
    fourteen = next(b for b in bodies if "14 days before expiry" in b)
    for text in ("sub-a", "sub-b", "Certificates & secrets > New client secret", "not the Secret ID",
                 "'Settings > Client Secret'", "Update mailwarden's own copy, apps.subject.secret",
                 "Verify in mailwarden", f"delete the old secret (Secret ID {w.key_id}", "expiry/"):
        assert text in fourteen, text
    assert w.secret not in "".join(bodies)


def test_reauth_systems_are_told_to_sign_in_again(world, receiver, clock):
    w = world("app", secret_end="+10d")
    w.rewrite(with_alerts(receiver.url, system="Oracle B2C Service", reauth_after_rotation=True,
                          secret_field="CUSTOM_CFG_MAILBOX_OA_CLIENT_SECRET"))
    assert [k.rsplit("/", 1)[1] for k in cycle(w, clock).reminders] == ["14"]
    dispatch(w, clock)
    body = receiver.bodies[0]["message"]
    assert "CUSTOM_CFG_MAILBOX_OA_CLIENT_SECRET" in body and "authenticate each mailbox again" in body
    assert "Oracle B2C Service requires a new sign-in" in body


def test_custom_stages_per_app(world, receiver, clock):
    w = world("app", secret_end="+40d")

    def stages(doc):
        with_alerts(receiver.url)(doc)
        doc["apps"]["subject"]["reminder_days"] = [45, 5]
    w.rewrite(stages)
    assert [k.rsplit("/", 1)[1] for k in cycle(w, clock).reminders] == ["45"]
    clock.advance(days=36)
    assert [k.rsplit("/", 1)[1] for k in cycle(w, clock).reminders] == ["5"]
    clock.advance(days=10)
    assert cycle(w, clock).reminders == []  # expired, and 0 is not one of this app's stages
