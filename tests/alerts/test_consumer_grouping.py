"""Issue 16, item 5: the consuming system's own sign-in failure and mailwarden's own failure of the same cause are one
incident (alerts.policy keys ``consumer_signin_failed`` by its cause); a different cause is another incident; a
consuming system whose sign-ins cannot be read opens nothing and resolves nothing.

The consumer's results come from the real check (checks.consumer.judge) and reach the policy as the dispatcher hands
them over: their cause read from the stored metrics (``policy.cause_of``)."""

from __future__ import annotations

from datetime import timedelta

from mailwarden import state as sm
from mailwarden.alerts.policy import Cause, Change, CheckInfo, cause_of, incident_key
from mailwarden.checks.base import SignIn, SignInWindow
from mailwarden.checks.consumer import ConsumerOptions, judge
from mailwarden.checks.credentials import AppCredential
from tests.alerts.test_policy import APP, T0, Sim, kinds

ACCOUNT = "b2c-support@contoso.com"


def consumer_metrics(code: int, flow: str = "delegated", credential: AppCredential | None = None,
                     system: str = "Oracle B2C Service") -> dict:
    """The metrics the consumer check stores for a system that got ``code`` since its last success."""
    signins = tuple(SignIn(f"s{i}", T0 - timedelta(minutes=m), "servicePrincipal" if flow == "app" else
                           "nonInteractiveUser", c, None, "key-old" if flow == "app" else None,
                           ACCOUNT.upper() if flow == "delegated" else None)
                    for i, (m, c) in enumerate([(60, 0), (20, code), (10, code)]))
    out = judge(SignInWindow("ok", None, T0 - timedelta(days=1), T0, signins), ConsumerOptions(), T0,
                system=system, flow=flow, account=ACCOUNT if flow == "delegated" else None, credential=credential)
    assert out.code == "consumer_signin_failed"
    return out.metrics


class ConsumerSim(Sim):
    """The policy's simulator, with the consumer's cause handed over as the dispatcher does (``cause_of``)."""

    def result(self, integration, check, status, code=None, metrics=None):
        st = self.states.get((integration, check), sm.StateSnapshot())
        new, ev = sm.advance(st, status, self.th, self.now)
        self.states[(integration, check)] = new
        if ev is not None:
            self._ids += 1
            ch = Change(self._ids, integration, check, ev.from_status, ev.to_status, code, ev.at, ev.silent,
                        cause_of(code, metrics))
            self.transitions.append(ch)
            self.pending.append(ch)
        return self


def delegated(*names: str) -> dict:
    return {(n, k): CheckInfo(n, k, "t", APP, flow="delegated", account=ACCOUNT, credential="hint:New")
            for n in names for k in ("token", "pop", "consumer")}


def app_only(*names: str, credential: str = "hint:Old") -> dict:
    return {(n, k): CheckInfo(n, k, "t", APP, credential=credential)
            for n in names for k in ("token", "secret_expiry", "ews", "consumer")}


ACCT_KEY = f"acct:t:{APP}:{ACCOUNT}:refresh_token_revoked"


def test_a_revoked_account_is_one_incident_with_the_consumers_failure():
    """Both mailwarden's token and Oracle B2C Service's own fail with AADSTS50173 for the same account: one incident,
    one notice; it holds until the consumer signs in too, then names only the consumer's own fix."""
    s = ConsumerSim(delegated("b2c"), threshold=1)
    got = kinds(s.at(0).result("b2c", "token", "fail", "refresh_token_revoked").dispatch())
    got += kinds(s.at(1).result("b2c", "consumer", "fail", "consumer_signin_failed",
                                consumer_metrics(50173)).dispatch())
    assert got == ["opened"]
    [inc] = s.open()
    assert inc.key == ACCT_KEY and inc.code == "refresh_token_revoked"
    assert {(m["check"], m["code"]) for m in inc.members} == {("token", "refresh_token_revoked"),
                                                              ("consumer", "consumer_signin_failed")}
    # mailwarden re-authorised: its token works, Oracle's own sign-in is still to do
    assert kinds(s.at(5).result("b2c", "token", "ok").dispatch()) == []
    [inc] = s.open()
    assert inc.code == "consumer_signin_failed" and [m["check"] for m in inc.members] == ["consumer"]
    assert kinds(s.at(9).result("b2c", "consumer", "ok").dispatch()) == ["resolved"]
    assert s.open() == []


def test_the_consumer_first_then_mailwarden_is_still_one_incident():
    s = ConsumerSim(delegated("b2c"), threshold=1)
    got = kinds(s.at(0).result("b2c", "consumer", "fail", "consumer_signin_failed",
                               consumer_metrics(50173)).dispatch())
    [inc] = s.open()
    assert (inc.key, inc.kind, inc.code) == (ACCT_KEY, "account", "consumer_signin_failed")
    got += kinds(s.at(3).result("b2c", "token", "fail", "refresh_token_revoked").dispatch())
    assert got == ["opened"]
    [inc] = s.open()
    assert inc.code == "refresh_token_revoked"  # the cause's fix: mailwarden's reauthorisation and the system's


def test_only_the_consumer_failing_names_the_consumer():
    """Oracle B2C Service's own refresh token revoked while mailwarden's works (the demo's first case)."""
    s = ConsumerSim(delegated("b2c"), threshold=1)
    s.at(0).result("b2c", "token", "ok")
    assert kinds(s.at(1).result("b2c", "consumer", "fail", "consumer_signin_failed",
                                consumer_metrics(50173)).dispatch()) == ["opened"]
    [inc] = s.open()
    assert inc.code == "consumer_signin_failed" and inc.affected == ["b2c"]


def test_two_integrations_of_the_account_and_their_consumers_are_one_incident():
    s = ConsumerSim(delegated("support", "billing"), threshold=1)
    s.at(0)
    for n in ("support", "billing"):
        s.result(n, "token", "fail", "refresh_token_revoked")
        s.result(n, "consumer", "fail", "consumer_signin_failed", consumer_metrics(50173))
    assert kinds(s.dispatch()) == ["opened"]
    [inc] = s.open()
    assert inc.key == ACCT_KEY and inc.affected == ["billing", "support"] and len(inc.members) == 4


def test_a_different_cause_is_another_incident():
    s = ConsumerSim(delegated("b2c"), threshold=1)
    s.at(0).result("b2c", "token", "fail", "secret_expired")
    s.result("b2c", "consumer", "fail", "consumer_signin_failed", consumer_metrics(50173))
    assert kinds(s.dispatch()) == ["opened", "opened"]
    assert sorted(i.key for i in s.open()) == sorted([ACCT_KEY, f"cred:{APP}:hint:New:secret_expired"])


def _secret(hint: str) -> AppCredential:
    return AppCredential("client_secret", "key-old", f"Agiloft {hint}", hint, None, None, T0 - timedelta(days=1))


def test_the_same_expired_secret_is_one_incident():
    """Agiloft and mailwarden both present the secret whose hint is 'Old', and it expired: one credential incident,
    with mailwarden's own checks of it."""
    s = ConsumerSim(app_only("agiloft"), threshold=1)
    s.at(0).result("agiloft", "token", "fail", "secret_expired")
    s.result("agiloft", "secret_expiry", "fail", "secret_expired")
    s.result("agiloft", "consumer", "fail", "consumer_signin_failed",
             consumer_metrics(7000222, "app", _secret("Old"), "Agiloft"))
    assert kinds(s.dispatch()) == ["opened"]
    [inc] = s.open()
    assert inc.key == f"cred:{APP}:hint:Old:secret_expired" and inc.code == "secret_expired"
    assert {m["check"] for m in inc.members} == {"token", "secret_expiry", "consumer"}


def test_a_consumer_still_on_the_old_secret_after_a_rotation_is_its_own_incident():
    """mailwarden uses the new secret and works; Agiloft presents the old, expired one."""
    s = ConsumerSim(app_only("agiloft", credential="hint:New"), threshold=1)
    s.at(0).result("agiloft", "token", "ok")
    assert kinds(s.result("agiloft", "consumer", "fail", "consumer_signin_failed",
                          consumer_metrics(7000222, "app", _secret("Old"), "Agiloft")).dispatch()) == ["opened"]
    [inc] = s.open()
    assert inc.key == f"cred:{APP}:hint:Old:secret_expired" and inc.code == "consumer_signin_failed"
    assert inc.affected == ["agiloft"]
    # mailwarden's own secret expiring later is another credential, another incident
    assert kinds(s.at(2).result("agiloft", "secret_expiry", "fail", "secret_expired").dispatch()) == ["opened"]
    assert len(s.open()) == 2


def test_an_unknown_credential_is_not_guessed_the_same():
    s = ConsumerSim(app_only("agiloft"), threshold=1)
    s.at(0).result("agiloft", "token", "fail", "secret_expired")
    s.result("agiloft", "consumer", "fail", "consumer_signin_failed", consumer_metrics(7000222, "app"))
    assert kinds(s.dispatch()) == ["opened", "opened"]
    assert "int:agiloft:consumer_signin_failed" in {i.key for i in s.open()}


def test_the_consumers_consent_failure_joins_mailwardens():
    """A cause that is neither a credential's nor an account's is the integration's: the same key as mailwarden's."""
    s = ConsumerSim(app_only("agiloft"), threshold=1)
    s.at(0).result("agiloft", "token", "fail", "consent_missing")
    s.result("agiloft", "consumer", "fail", "consumer_signin_failed", consumer_metrics(65001, "app", None, "Agiloft"))
    assert kinds(s.dispatch()) == ["opened"]
    [inc] = s.open()
    assert inc.key == "int:agiloft:consent_missing"


def test_an_unlicensed_tenant_opens_nothing():
    """Every integration of a tenant without Entra ID P1/P2: the consumer check warns (consumer_unknown): no incident,
    no notice, however many integrations."""
    names = [f"i{n}" for n in range(20)]
    s = ConsumerSim(app_only(*names), threshold=1)
    s.at(0)
    for n in names:
        s.result(n, "consumer", "warn", "consumer_unknown")
    assert s.dispatch() == [] and s.open() == []


def test_not_knowing_or_not_knowing_it_is_fatal_resolves_nothing():
    """An open consumer incident stays open while its sign-ins cannot be read, or while its failures are not known to
    be fatal; only a success resolves it."""
    s = ConsumerSim(delegated("b2c"), threshold=1)
    s.at(0).result("b2c", "consumer", "fail", "consumer_signin_failed", consumer_metrics(50173)).dispatch()
    assert kinds(s.at(70).result("b2c", "consumer", "warn", "consumer_unknown").dispatch()) == []
    assert len(s.open()) == 1
    s.at(140).result("b2c", "consumer", "fail", "consumer_signin_failed", consumer_metrics(50173))
    assert kinds(s.at(210).result("b2c", "consumer", "warn", "consumer_signin_failed").dispatch()) == []
    assert len(s.open()) == 1 and s.open()[0].kind == "account"
    assert kinds(s.at(280).result("b2c", "consumer", "ok").dispatch()) == ["resolved"]


def test_a_flapping_consumer_settles_into_its_causes_incident():
    s = ConsumerSim(delegated("b2c"), threshold=1)
    metrics = consumer_metrics(50173)
    for minute, status in enumerate(("fail", "ok", "fail", "ok", "fail")):
        s.at(minute).result("b2c", "consumer", status, "consumer_signin_failed" if status == "fail" else None,
                            metrics if status == "fail" else None)
    s.dispatch()
    assert [i.kind for i in s.open()] == ["flapping"]
    s.at(70).dispatch()
    [inc] = s.open()
    assert inc.key == ACCT_KEY and inc.code == "consumer_signin_failed"


def test_the_cause_is_read_from_the_consumers_metrics():
    m = consumer_metrics(50173)
    assert cause_of("consumer_signin_failed", m) == Cause("refresh_token_revoked", None, ACCOUNT)
    assert cause_of("refresh_token_revoked", m) is None  # only the consumer's code is keyed by a cause
    assert cause_of("consumer_signin_failed", consumer_metrics(99999)) is None  # a code the catalog does not know
    assert cause_of("consumer_signin_failed", None) is None
    info = CheckInfo("b2c", "consumer", "t", APP, flow="delegated", account=ACCOUNT)
    assert incident_key(info, "b2c", "consumer_signin_failed", cause_of("consumer_signin_failed", m)) == \
        incident_key(CheckInfo("b2c", "token", "t", APP, flow="delegated", account=ACCOUNT), "b2c",
                     "refresh_token_revoked")
    assert incident_key(info, "b2c", "consumer_signin_failed") == ("int:b2c:consumer_signin_failed", "single")
