"""Rotation tracking: a rotation done by hand through the sandbox moves the states in order."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from mailwarden.monitor.cli_secrets import _read_all
from mailwarden.monitor.secrets import api_secrets
from tests.rotation.conftest import cycle, dispatch, with_alerts


def states(w):
    return [(r.key_id, r.state) for r in w.runtime.store.rotation.rotations()]


def test_manual_rotation_moves_through_every_state(world, receiver, clock):
    w = world("app", secret_end="+20d")
    w.rewrite(with_alerts(receiver.url))
    cycle(w, clock)
    assert states(w) == [(w.key_id, "expiring")]

    new = w.ctl.add_secret(w.app_id, display_name="2026", end="+300d")  # App registrations > New client secret
    cycle(w, clock)
    [row] = w.runtime.store.rotation.rotations()
    assert (row.state, row.new_key_id, row.new_hint) == ("new_secret_created", new["keyId"], new["value"][:3])

    (w.dir / "secrets" / "subject").write_text(new["value"])  # mailwarden's reference updated
    assert w.run("token").status.value == "ok"  # works with the new secret
    cycle(w, clock)
    assert states(w) == [(w.key_id, "in_use")]

    clock.advance(days=3)
    w.run("token")
    assert cycle(w, clock).steps == []  # not yet: the new one has not worked for 7 days
    clock.advance(days=5)
    assert cycle(w, clock).steps == ["subject: remind_remove_old"]
    assert cycle(w, clock).steps == []  # once

    w.ctl.delete_secret(w.app_id, w.key_id)  # the admin deletes the old secret
    cycle(w, clock)
    assert states(w) == [(w.key_id, "old_removed")]
    steps = [e.step for e in w.runtime.store.rotation.rotation_events()]
    assert steps == ["expiring", "new_secret_created", "in_use", "remind_remove_old", "old_removed"]
    assert all(e.ok for e in w.runtime.store.rotation.rotation_events())

    dispatch(w, clock)
    remove = [b for b in receiver.bodies if "Remove the old secret" in b["message"]]
    assert remove and f"Secret ID {w.key_id}" in remove[0]["message"]
    doc = api_secrets(w.runtime.config, w.runtime.store, clock())
    assert doc["rotations"][0]["state"] == "old_removed"
    [cred] = [c for c in doc["credentials"] if c["key_id"] == new["keyId"]]
    assert cred["integrations"] == ["subject"] and cred["rotation"] is None


def test_new_secret_but_old_still_in_use_near_expiry_alerts_once(world, receiver, clock):
    w = world("app", secret_end="+5d")
    w.rewrite(with_alerts(receiver.url))
    w.ctl.add_secret(w.app_id, display_name="new, not yet configured", end="+300d")
    report = cycle(w, clock)
    assert report.steps == ["subject: new_secret_created", "subject: stuck"]
    assert cycle(w, clock).steps == []
    dispatch(w, clock)
    stuck = [b for b in receiver.bodies if "still uses the old one" in b["message"]]
    assert len(stuck) == 2  # the team route and the owner's
    assert "paste the new Value" in stuck[0]["message"]


def test_old_removed_while_still_in_use_is_an_alert(world, receiver, clock):
    w = world("app", secret_end="+20d")
    w.rewrite(with_alerts(receiver.url))
    cycle(w, clock)
    w.ctl.add_secret(w.app_id, end="+300d")
    w.ctl.delete_secret(w.app_id, w.key_id)
    report = cycle(w, clock)
    assert "subject: old_removed" in report.steps or any("old_removed" in s for s in report.steps)
    [ev] = [e for e in w.runtime.store.rotation.rotation_events() if e.step == "old_removed"]
    assert not ev.ok and "still used it" in ev.detail


def test_inventory_lists_credentials_mailwarden_does_not_use_and_long_lived(world, clock):
    w = world("app", secret_end="+200d")
    w.ctl.add_secret(w.app_id, display_name="forgotten", start="-10d", end="+700d")
    asyncio.run(_read_all(w.open()))  # as `mailwarden secrets` does: every app, the monitor app too
    rows = api_secrets(w.runtime.config, w.runtime.store, clock() + timedelta(seconds=1))["credentials"]
    forgotten = next(r for r in rows if r["name"] == "forgotten")
    assert forgotten["long_lived"] and forgotten["integrations"] == []
    # mailwarden's secret is another one, but whether the consuming system uses this one is not known: no
    # evidence of its sign-ins, so never "unused" (deleting a secret a system still uses is an outage)
    assert not forgotten["unused"] and forgotten["usage"]["mailwarden"] == "does_not_use"
    assert forgotten["usage"]["known"] == "mailwarden's own configuration does not use it"
    assert forgotten["usage"]["unknown"].startswith("whether Test helpdesk (subject) uses it is not known: check "
                                                    "Test helpdesk's configuration (its client secret setting) or ")
    assert f"filtered by credential key ID {forgotten['key_id']}, before deleting it" in forgotten["usage"]["unknown"]
    used = next(r for r in rows if r["key_id"] == w.key_id)
    assert used["integrations"] == ["subject"] and not used["unused"] and not used["long_lived"]
    monitor = next(r for r in rows if r["app"] == "monitor")
    assert monitor["used_by_mailwarden"] and not monitor["unused"]
