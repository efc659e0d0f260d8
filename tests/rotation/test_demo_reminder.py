"""The demo: the Agiloft secret expiring in 10 days has sent its 14-day reminder with a runbook naming its
consuming systems (both agiloft-* integrations)."""

from __future__ import annotations

from mailwarden.monitor import demo


def test_demo_sent_the_agiloft_14_day_reminder(tmp_path, capsys):
    env = demo.prepare(tmp_path / "demo", quiet=True)
    try:
        store = env.runtime.store
        agiloft = env.runtime.config.apps["agiloft-application-for-oauth2"].client_id
        assert [r.stage for r in store.rotation.reminders(agiloft)] == [14]
        [rem] = store.rotation.reminders(agiloft)
        assert rem.integrations == ["agiloft-inbound", "agiloft-contracts"]
        [d] = [d for d in store.alerts.deliveries() if d.key.startswith(f"expiry/{agiloft}/")]
        assert d.state == "sent" and d.route == "console"
        for text in ("agiloft-inbound", "agiloft-contracts", "Agiloft", "Inbound Email Accounts > Account > "
                     "Client Secret", "New client secret", "not the Secret ID"):
            assert text in d.body_text, text
        assert "=== [mailwarden] EXPIRES IN" in capsys.readouterr().err  # printed on the console route
    finally:
        env.close()
