"""The `consumer` check: the consuming system judged from its own sign-ins (issue 16, "what counts").

A table over sign-in sequences read through a fake SignInLog: each row is a sequence of (minutes ago, AADSTS code,
origin), the check's options and flow, and the status, code and summary fragments expected."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest

from mailwarden.checks import REGISTRY
from mailwarden.checks.base import CheckContext, SignIn, SignInWindow, Status
from mailwarden.checks.consumer import ConsumerCheck, ConsumerOptions, config_duration, judge, suggest_every
from mailwarden.checks.credentials import AppCredential, CredentialRead

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
KEY_NEW, KEY_OLD = "aaaaaaaa-0000-0000-0000-000000000001", "bbbbbbbb-0000-0000-0000-000000000002"
C, U = "consumer", "unconfirmed"


def ago(minutes: float) -> datetime:
    return NOW - timedelta(minutes=minutes)


def signins(rows, flow="delegated", key_id=KEY_NEW):
    out = []
    for i, row in enumerate(sorted(rows, key=lambda r: -r[0])):
        minutes, code, origin = (*row, C)[:3]
        out.append(SignIn(f"id{i}", ago(minutes), "servicePrincipal" if flow == "app" else "nonInteractiveUser",
                          code, None if code == 0 else f"reason {code}", key_id if flow == "app" else None,
                          None if flow == "app" else "b2c-support@contoso.com", origin))
    return tuple(out)


@dataclass
class FakeLog:
    window_: SignInWindow
    asked: list[str] = field(default_factory=list)

    def window(self, integration):
        self.asked.append(integration.name)
        return self.window_


@dataclass
class FakeCredentials:
    result: CredentialRead
    reads: int = 0

    async def read(self, app_name):
        self.reads += 1
        return self.result


def integration(flow="delegated", system="Oracle B2C Service"):
    return SimpleNamespace(name="b2c-support", app="b2c", flow=flow, mailbox="support@contoso.com",
                           account="b2c-support@contoso.com" if flow == "delegated" else None, system=system,
                           checks={"consumer": {}})


def context(log, options=None, flow="delegated", system="Oracle B2C Service", credentials=None):
    return CheckContext(
        config=SimpleNamespace(), integration=integration(flow, system),
        app=SimpleNamespace(tenant="contoso", client_id="66666666-7777-8888-9999-000000000000", secret="env:X",
                            secret_expires_on=None),
        tenant=SimpleNamespace(tenant_id="11111111-2222-3333-4444-555555555555", monitor_app="mailwarden"),
        options=ConsumerOptions.model_validate(options or {}), tokens=SimpleNamespace(),
        credentials=credentials or FakeCredentials(CredentialRead("b2c", False, code="graph_unreadable")),
        endpoints=SimpleNamespace(), timeout_s=30.0, clock=lambda: NOW, signins=log)


def window(rows, flow="delegated", read_lag=0.0, since_minutes=48 * 60, key_id=KEY_NEW):
    return SignInWindow("ok", None, ago(since_minutes), ago(read_lag), signins(rows, flow, key_id))


def run(ctx):
    return asyncio.run(ConsumerCheck().run(ctx))


# (id, sign-ins [(minutes ago, code[, origin])], options, flow, read lag in minutes, status, code, summary fragments)
CASES = [
    ("interrupts then success", [(50.2, 50058), (50.1, 50140), (50, 0)], {}, "delegated", 0,
     "ok", None, ["signed in successfully at 11:10 UTC", "credential it uses is unknown"]),
    ("interrupts after a success", [(60, 0), (10, 50074), (9, 50076)], {}, "delegated", 0,
     "ok", None, ["signed in successfully at 11:00 UTC", "2 interrupts since, not failures"]),
    ("interrupts only: not a failure", [(30, 50074), (20, 50140), (10, 50058), (5, 16000)], {}, "delegated", 0,
     "warn", "consumer_signin_failed", ["only interrupts since 11:30 UTC", "not failures on their own"]),
    ("MFA prompts only: not a failure", [(30, 50076), (20, 50079)], {}, "delegated", 0,
     "warn", "consumer_signin_failed", ["only interrupts since 11:30 UTC (2: AADSTS50076, AADSTS50079; the latest "
                                        "AADSTS50079)"]),
    ("fatal then silence", [(600, 0), (598, 50173), (597, 50173), (596, 50173)], {"expect_every": "1h"},
     "delegated", 0, "fail", "consumer_signin_failed",
     ["Oracle B2C Service itself fails to sign in: AADSTS50173, 3 times since 02:02 UTC", "last attempt 02:04 UTC",
      "last success 02:00 UTC"]),
    ("fatal beyond the lookback, no retry since: still failed", [(40 * 60, 50173)], {"lookback": "24h"}, "delegated",
     0, "fail", "consumer_signin_failed", ["AADSTS50173, once since 2026-11-30 20:00 UTC",
                                           "no success in the stored log"]),
    ("fatal then success", [(30, 70008), (20, 70008), (10, 0)], {}, "delegated", 0,
     "ok", None, ["signed in successfully at 11:50 UTC"]),
    ("fatal with interrupts between", [(30, 50173), (29, 50058), (20, 50173), (19, 50140)], {}, "delegated", 0,
     "fail", "consumer_signin_failed", ["AADSTS50173, 2 times since 11:30 UTC"]),
    ("a transient answer does not interrupt a failure", [(30, 7000222), (25, 90033), (20, 7000222)], {}, "app", 0,
     "fail", "consumer_signin_failed", ["AADSTS7000222, 2 times since 11:30 UTC"]),
    ("two fatal codes: the latest named, the other counted", [(30, 70008), (20, 50173), (10, 50173)], {},
     "delegated", 0, "fail", "consumer_signin_failed",
     ["AADSTS50173, 2 times since 11:40 UTC", "and 1 other refusal (AADSTS70008)"]),
    ("a code not in the catalog: not known to be fatal", [(30, 50173), (20, 99999)], {}, "delegated", 0,
     "warn", "consumer_signin_failed", ["AADSTS99999, once", "AADSTS99999 not in mailwarden's catalog"]),
    ("unconfirmed only: not counted, mentioned", [(30, 50173, U), (20, 50173, U)], {}, "delegated", 0,
     "ok", None, ["no sign-in of Oracle B2C Service in the last 24 h", "2 unconfirmed sign-ins during a "
                  "reauthorisation, not counted"]),
    ("an unconfirmed failure after a success", [(60, 0), (10, 50173, U)], {}, "delegated", 0,
     "ok", None, ["signed in successfully at 11:00 UTC", "1 unconfirmed sign-in"]),
    ("an unconfirmed success does not end a failure", [(60, 50173), (50, 50173), (10, 0, U)], {}, "delegated", 0,
     "fail", "consumer_signin_failed", ["AADSTS50173, 2 times since 11:00 UTC", "1 unconfirmed sign-in"]),
    ("unconfirmed sign-ins do not break a silence", [(200, 0), (10, 0, U)], {"expect_every": "1h"}, "app", 0,
     "fail", "consumer_silent", ["last sign-in 08:40 UTC", "1 unconfirmed sign-in"]),
    ("silent: warn within the grace", [(90, 0)], {"expect_every": "1h", "silent_grace": "1h"}, "app", 0,
     "warn", "consumer_silent", ["has not signed in for over 1 h 25 min", "expected at least every 1 h",
                                 "as of 12:00 UTC"]),
    ("silent: fail past the grace", [(200, 0)], {"expect_every": "1h", "silent_grace": "1h"}, "app", 0,
     "fail", "consumer_silent", ["has not signed in for over 3 h 15 min", "last sign-in 08:40 UTC"]),
    ("a failure counts as a sign-in for silence", [(400, 0), (30, 99999)], {"expect_every": "1h"}, "app", 0,
     "warn", "consumer_signin_failed", ["AADSTS99999"]),
    ("never silent without expect_every", [(600, 0)], {}, "app", 0,
     "ok", None, ["signed in successfully at 02:00 UTC with credential " + KEY_NEW]),
    ("nothing in the log at all, expect_every set", [], {"expect_every": "1h"}, "app", 0,
     "fail", "consumer_silent", ["none in the log since 2026-11-30 12:00 UTC"]),
    ("nothing in the log, no expect_every", [], {}, "app", 0,
     "ok", None, ["no sign-in of Oracle B2C Service in the last 24 h"]),
    # logs arrive late: a gap ending in the minutes the log may still fill in is not silence
    ("late log, app-only: the last 5 minutes do not count", [(64, 0)], {"expect_every": "1h"}, "app", 0,
     "ok", None, ["as of 12:00 UTC"]),
    ("late log, app-only: measured from read_until", [(72, 0)], {"expect_every": "1h"}, "app", 10,
     "ok", None, ["as of 11:50 UTC"]),
    ("late log, app-only: past it, silent as of read_until", [(80, 0)], {"expect_every": "1h"}, "app", 10,
     "warn", "consumer_silent", ["over 1 h 5 min", "as of 11:50 UTC"]),
    ("late log, delegated: non-interactive sign-ins may take 30 minutes", [(85, 0)], {"expect_every": "1h"},
     "delegated", 0, "ok", None, ["signed in successfully at 10:35 UTC"]),
]


@pytest.mark.parametrize(("rows", "options", "flow", "lag", "status", "code", "fragments"),
                         [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_what_counts(rows, options, flow, lag, status, code, fragments):
    log = FakeLog(window(rows, flow, lag))
    out = run(context(log, options, flow))
    assert (out.status.value, out.code) == (status, code), out.summary
    for fragment in fragments:
        assert fragment in out.summary, (fragment, out.summary)
    assert log.asked == ["b2c-support"]


def test_a_failure_names_the_consumers_own_code_count_and_times_in_metrics():
    rows = [(120, 0), *[(100 - i, 50173) for i in range(14)]]
    out = run(context(FakeLog(window(rows))))
    assert out.summary.startswith("Oracle B2C Service itself fails to sign in: AADSTS50173, 14 times since 10:20 UTC")
    m = out.metrics
    assert (m["consumer_code"], m["consumer_aadsts"], m["consumer_count"]) == (50173, "AADSTS50173", 14)
    assert m["consumer_first_at"] == ago(100).isoformat() and m["consumer_last_at"] == ago(87).isoformat()
    assert (m["cause"], m["cause_account"], m["consumer_fatal"]) == ("refresh_token_revoked",
                                                                     "b2c-support@contoso.com", True)
    assert m["last_success_at"] == ago(120).isoformat()


def test_the_system_name_falls_back_to_the_integration():
    out = run(context(FakeLog(window([(10, 50173)])), system=None))
    assert out.summary.startswith("b2c-support itself fails to sign in")


@pytest.mark.parametrize(("flow", "key_id", "in_use"), [("app", KEY_NEW, KEY_NEW), ("app", None, "unknown"),
                                                        ("delegated", KEY_NEW, "unknown")])
def test_ok_names_the_credential_in_use_for_app_only_only(flow, key_id, in_use):
    creds = FakeCredentials(CredentialRead("b2c", True, []))
    out = run(context(FakeLog(window([(10, 0)], flow, key_id=key_id)), flow=flow, credentials=creds))
    assert out.status == Status.OK
    assert out.metrics["credential_in_use"] == in_use
    assert out.metrics["credential_key_id"] == (key_id if flow == "app" else None)
    assert out.metrics["last_success_at"] == ago(10).isoformat()
    assert creds.reads == 0  # a passing run reads no credentials from Graph


def _secret(key_id, hint, name, end):
    return AppCredential("client_secret", key_id, name, hint, None, None, end)


def test_an_expired_secret_is_named_by_the_keyid_the_consumer_presented():
    read = CredentialRead("agiloft", True, [_secret(KEY_OLD, "Old", "Agiloft 2024", ago(60 * 24)),
                                             _secret(KEY_NEW, "New", "Agiloft 2026", NOW + timedelta(days=300))])
    creds = FakeCredentials(read)
    out = run(context(FakeLog(window([(30, 7000222), (20, 7000222)], "app", key_id=KEY_OLD)), flow="app",
                      system="Agiloft", credentials=creds))
    assert out.status == Status.FAIL and creds.reads == 1
    assert "AADSTS7000222, 2 times since 11:30 UTC, with credential 'Agiloft 2024' (ended 2026-12-01 12:00 UTC)" \
        in out.summary
    assert (out.metrics["cause"], out.metrics["cause_credential"]) == ("secret_expired", "hint:Old")


def test_an_expired_secret_without_keyid_is_the_apps_only_secret_if_that_has_expired():
    only = FakeCredentials(CredentialRead("a", True, [_secret(KEY_OLD, "Old", None, ago(60))]))
    out = run(context(FakeLog(window([(20, 7000222)], "delegated")), credentials=only))
    assert out.metrics["cause_credential"] == "hint:Old"
    two = FakeCredentials(CredentialRead("a", True, [_secret(KEY_OLD, "Old", None, ago(60)),
                                                     _secret(KEY_NEW, "New", None, NOW + timedelta(days=9))]))
    out = run(context(FakeLog(window([(20, 7000222)], "delegated")), credentials=two))
    assert out.metrics["cause_credential"] is None and out.status == Status.FAIL


def test_an_unreadable_credential_list_leaves_the_credential_unknown():
    out = run(context(FakeLog(window([(20, 7000222)], "app", key_id=KEY_OLD)), flow="app"))
    assert out.status == Status.FAIL and out.metrics["cause_credential"] is None


@pytest.mark.parametrize(("state", "note"), [
    ("pending", "Consuming systems' own sign-ins in tenant contoso: unknown. The first read runs within 5 minutes."),
    ("unlicensed", "Consuming systems' own sign-ins in tenant contoso: unknown: Microsoft Graph answered 403 "
                   "Authentication_RequestFromNonPremiumTenantOrB2CTenant. Entra ID keeps sign-in logs readable ..."),
    ("forbidden", "... grant the monitor app mailwarden the Microsoft Graph application permissions ..."),
    ("unsupported", "... set tenants.<name>.monitor_app on a global-cloud tenant."),
    ("error", "... mailwarden reads again at the next poll."),
    ("pending", None),
])
def test_an_unreadable_log_is_a_warning_that_relays_the_note(state, note):
    log = FakeLog(SignInWindow(state, note, None, None))
    out = run(context(log))
    assert (out.status, out.code) == (Status.WARN, "consumer_unknown")
    assert out.summary.startswith(f"Oracle B2C Service's own sign-ins are unknown ({state}): ")
    assert (note or "has not read the tenant's sign-in log yet") in out.summary
    assert out.metrics["signin_state"] == state


def test_no_sign_in_log_at_all():
    out = run(context(None))
    assert (out.status, out.code) == (Status.WARN, "consumer_unknown")
    assert "(none)" in out.summary and out.metrics["signin_state"] == "none"


@pytest.mark.parametrize(("every_min", "expected"), [(20, "1h"), (7, "25m"), (60, "3h"), (8 * 60, "1d"),
                                                     (20 * 60, "3d")])
def test_the_suggested_expect_every_follows_the_observed_cadence(every_min, expected):
    times = [NOW - timedelta(minutes=every_min * i) for i in range(12)]
    assert config_duration(suggest_every(times)) == expected


def test_the_suggestion_ignores_bursts_and_needs_a_few_gaps():
    burst = [NOW - timedelta(minutes=20 * i, seconds=s) for i in range(8) for s in (0, 1, 2)]  # interrupt + success
    assert config_duration(suggest_every(burst)) == "1h"
    assert suggest_every([NOW, NOW - timedelta(hours=1)]) is None


def test_the_suggestion_is_in_the_metrics_of_a_run_without_expect_every():
    rows = [(20 * i, 0) for i in range(10)]
    out = run(context(FakeLog(window(rows, "app")), flow="app"))
    assert out.metrics["suggested_expect_every"] == "1h" and out.metrics["suggested_expect_every_s"] == 3600


def test_options_reject_unknown_keys_and_parse_durations():
    with pytest.raises(ValueError):
        ConsumerOptions.model_validate({"expect_evry": "1h"})
    opts = ConsumerOptions.model_validate({"expect_every": "90m", "silent_grace": "2h", "lookback": "2d"})
    assert (opts.expect_every, opts.silent_grace, opts.lookback) == (5400.0, 7200.0, 172800.0)
    default = ConsumerOptions()
    assert (default.expect_every, default.silent_grace, default.lookback) == (None, 3600.0, 86400.0)


def test_registered_and_independent_of_the_token():
    check = REGISTRY["consumer"]
    assert isinstance(check, ConsumerCheck) and check.depends_on == () and check.uses_app_token is False


def test_judge_is_pure_and_takes_naive_times_as_utc():
    naive = SignInWindow("ok", None, None, NOW.replace(tzinfo=None),
                         (SignIn("x", ago(10).replace(tzinfo=None), "servicePrincipal", 0, None, KEY_NEW, None),))
    out = judge(naive, ConsumerOptions(), NOW, system="enaio", flow="app")
    assert out.status == Status.OK and out.metrics["last_success_at"] == ago(10).isoformat()
