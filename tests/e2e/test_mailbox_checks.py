"""The mailbox checks against the sandbox's Exchange: each scenario switch gives its own diagnosis, and no
check ever changes a mailbox."""

from __future__ import annotations

import asyncio

import pytest

from mailwarden.checks.base import Status
from mailwarden.checks.diagnoses import get, render_fix
from mailwarden.checks.facts import facts
from mailwarden.monitor.runner import select

MAIL = {"token": {}, "imap": {}, "pop": {}, "smtp": {}}


def shared_mailbox(**box):
    """A House-on-the-Hill layout: a licensed delegate with FullAccess and SendAs on a shared mailbox."""
    def build(ids):
        return {"mailboxes": [
            {"address": f"box@{ids['domain']}", "type": "shared", "full_access": [ids["upn"]],
             "send_as": [ids["upn"]], **box},
            {"address": ids["upn"], "type": "user"},
        ]}
    return build


def app_mailbox(sp=True, full_access=True, **tenant):
    def build(ids):
        return {"service_principals": [ids["app_id"]] if sp else [],
                "mailboxes": [{"address": f"box@{ids['domain']}", "type": "shared",
                               "full_access": [ids["app_id"]] if full_access else []}], **tenant}
    return build


@pytest.fixture
def hoth(world):
    def make(checks=None, **box):
        w = world("delegated", checks=checks or MAIL, exchange=shared_mailbox(**box))
        w.sign_in()
        return w
    return make


def test_delegated_shared_mailbox_healthy(hoth):
    w = hoth(messages=[{"subject": "ticket", "from": "c@example.com", "received": "-3h", "seen": False}])
    imap, pop, smtp = w.run("imap"), w.run("pop"), w.run("smtp")
    assert (imap.status, pop.status, smtp.status) == (Status.OK,) * 3, (imap.summary, pop.summary, smtp.summary)
    assert imap.metrics["message_count"] == 1 and 3 * 3600 - 120 < imap.metrics["oldest_unseen_age_s"] < 3 * 3600 + 120
    assert pop.metrics["message_count"] == 1
    assert "send permission not verified" in smtp.summary and smtp.metrics["send_verified"] is False
    # SMTP signs in as the delegate, not as the shared mailbox (M365_FACTS.md, corrected 2026-12-02)
    assert smtp.metrics["login_as"] == w.upn and f"SMTP AUTH as {w.upn} accepted" in smtp.summary
    for o in (imap, pop, smtp):
        assert {"connect", "tls", "auth"} <= set(o.metrics["phases_ms"])


def test_checks_never_change_the_mailbox(hoth):
    w = hoth(messages=[{"subject": "a", "from": "c@example.com", "received": "-1h", "seen": False}])
    w.ctl.reset_stats()
    for kind in ("imap", "pop", "imap"):
        assert w.run(kind).status == Status.OK
    mail = w.ctl.stats()["mail"]
    box = f"box@{w.upn.split('@')[1]}"
    pop_cmds = set(mail["pop"]["commands"][box])
    assert pop_cmds <= {"STAT", "QUIT"}, pop_cmds
    imap_cmds = set(mail["imap"]["commands"][box])
    assert not imap_cmds & {"STORE", "EXPUNGE", "SELECT", "COPY", "MOVE", "DELETE"}, imap_cmds
    assert w.run("imap").metrics["oldest_unseen_age_s"] is not None, "still unseen"


def test_lost_full_access(hoth):
    """A delegate without FullAccess: POP refuses the login; IMAP accepts it and answers "not connected", which
    mailwarden confirms on a second connection before calling it a permission problem (M365_FACTS.md)."""
    w = hoth()
    w.ctl.revoke_mailbox_permission(f"box@{w.upn.split('@')[1]}", permission="full_access", trustee=w.upn)
    outcome = w.run("pop")
    assert (outcome.status, outcome.code) == (Status.FAIL, "auth_failed"), outcome.summary
    assert "FullAccess" in outcome.summary and w.upn in outcome.summary
    assert get("auth_failed").fix
    outcome = w.run("imap")
    assert (outcome.status, outcome.code) == (Status.FAIL, "authenticated_not_connected"), outcome.summary
    assert outcome.metrics["confirmed_on_second_connection"] is True


def test_protocol_disabled_on_the_mailbox(hoth):
    w = hoth(pop_enabled=False)
    assert w.run("pop").code == "auth_failed"
    assert w.run("imap").status == Status.OK


def test_not_connected(hoth):
    w = hoth(not_connected=True)
    outcome = w.run("imap")
    assert (outcome.status, outcome.code) == (Status.FAIL, "authenticated_not_connected")
    assert "not connected" in outcome.summary


def test_smtp_auth_disabled_tenant_vs_mailbox(world):
    def build(tenant_smtp, box_smtp):
        def b(ids):
            spec = shared_mailbox(smtp_auth_enabled=box_smtp)(ids)
            return {"smtp_auth_enabled": tenant_smtp, **spec}
        return b

    w = world("delegated", checks=MAIL, exchange=build(False, None))
    w.sign_in()
    outcome = w.run("smtp")
    assert (outcome.status, outcome.code) == (Status.FAIL, "smtp_auth_disabled"), outcome.summary
    assert "5.7.139" in outcome.summary and "Tenant" in outcome.summary
    # the shared mailbox's own switch does not matter: a delegate signs in to SMTP as itself
    w = world("delegated", checks=MAIL, exchange=build(True, False))
    w.sign_in()
    assert w.run("smtp").status == Status.OK
    w.ctl.patch_mailbox(w.upn, smtp_auth_enabled=False)  # the delegate's own mailbox
    outcome = w.run("smtp")
    assert (outcome.status, outcome.code) == (Status.FAIL, "smtp_auth_disabled_mailbox"), outcome.summary
    fix = " ".join(render_fix(outcome.code, **facts(w.runtime.config, w.runtime.config.integration("subject"),
                                                   outcome)))
    assert f"Set-CASMailbox -Identity {w.upn} -SmtpClientAuthenticationDisabled $false" in fix, fix


def test_canary_send_as_denied_and_delivered(hoth):
    w = hoth(checks={"token": {}, "smtp": {"canary_to": "ops@example.test"}})
    ok = w.run("smtp")
    assert ok.status == Status.OK and ok.metrics["send_verified"] is True
    delivered = w.ctl.stats()["delivered"]
    assert any(ok.metrics["canary_tag"] in d["subject"] for d in delivered)
    w.ctl.revoke_mailbox_permission(f"box@{w.upn.split('@')[1]}", permission="send_as", trustee=w.upn)
    denied = w.run("smtp")
    assert (denied.status, denied.code) == (Status.FAIL, "send_as_denied"), denied.summary
    assert "5.2.252" in denied.summary


def test_backlog_warns(hoth):
    old = [{"subject": f"t{i}", "from": "c@example.com", "received": "-90m", "seen": False} for i in range(3)]
    w = hoth(checks={"token": {}, "imap": {"backlog_age": "1h"}, "pop": {"backlog_warn": 2}}, messages=old)
    imap, pop = w.run("imap"), w.run("pop")
    assert (imap.status, imap.code) == (Status.WARN, "inbox_backlog"), imap.summary
    assert (pop.status, pop.code) == (Status.WARN, "inbox_backlog"), pop.summary


def test_app_only_imap_service_principal_and_permission(world):
    checks = {"token": {}, "imap": {}}
    w = world("app", app_permissions={"exchange": ["IMAP.AccessAsApp"]}, checks=checks,
              exchange=app_mailbox(sp=False))
    outcome = w.run("imap")
    assert outcome.code == "auth_failed" and "New-ServicePrincipal" in outcome.summary
    w = world("app", app_permissions={"exchange": ["IMAP.AccessAsApp"]}, checks=checks,
              exchange=app_mailbox(full_access=False))
    assert w.run("imap").code == "authenticated_not_connected"
    w = world("app", app_permissions={"exchange": ["IMAP.AccessAsApp"]}, checks=checks, exchange=app_mailbox())
    assert w.run("imap").status == Status.OK


def test_mailbox_checks_blocked_while_token_fails(hoth):
    w = hoth()
    w.ctl.revoke_user_sessions(w.upn)
    results = asyncio.run(w.runtime.runner.run_many(select(w.runtime.config)))
    by = {r.check: r.outcome for r in results}
    assert by["token"].code == "refresh_token_revoked"
    assert {by[k].status for k in ("imap", "pop", "smtp")} == {Status.BLOCKED}


def graph_world(world, roles=("Mail.ReadWrite",), policy=None, checks=None):
    def build(ids):
        spec = {"mailboxes": [{"address": f"box@{ids['domain']}", "type": "shared",
                               "messages": [{"subject": "q", "from": "c@example.com", "received": "-2h",
                                             "seen": False}]}]}
        if policy:
            spec["access_policies"] = [{"app_id": ids["app_id"], **policy}]
        return spec
    return world("app", app_permissions={"graph": list(roles)}, exchange=build,
                 checks=checks or {"token": {}, "graph_mail": {}})


def test_graph_mail_ok_and_policy_and_permission(world):
    w = graph_world(world)
    ok = w.run("graph_mail")
    assert ok.status == Status.OK and (ok.metrics["message_count"], ok.metrics["unread_count"]) == (1, 1)
    w = graph_world(world, policy={"access_right": "RestrictAccess", "members": []})
    denied = w.run("graph_mail")
    assert (denied.status, denied.code) == (Status.FAIL, "access_policy_denied"), denied.summary
    w = graph_world(world, roles=("User.Read.All",))
    assert w.run("graph_mail").code == "permission_missing"


def test_graph_mail_mailbox_not_found_and_throttled(world):
    w = graph_world(world)
    w.rewrite(lambda d: d["integrations"][0].update(mailbox="nobody@example.test"))
    assert w.run("graph_mail").code == "mailbox_not_found"
    w = graph_world(world)
    w.ctl.add_fault("/v1.0/users", status=429, count=1, retry_after=30)
    outcome = w.run("graph_mail")
    w.ctl.clear_faults()
    assert (outcome.status, outcome.code, outcome.retry_after_s) == (Status.WARN, "throttled", 30)


def test_graph_mail_backlog_and_canary(world):
    w = graph_world(world, roles=("Mail.ReadWrite", "Mail.Send"),
                    checks={"graph_mail": {"backlog_age": "1h", "backlog_grace": "4h",
                                           "canary_to": "ops@example.test"}})
    outcome = w.run("graph_mail")
    assert (outcome.status, outcome.code) == (Status.WARN, "inbox_backlog"), outcome.summary
    w = graph_world(world, roles=("Mail.ReadWrite", "Mail.Send"),
                    checks={"graph_mail": {"canary_to": "ops@example.test"}})
    outcome = w.run("graph_mail")
    assert outcome.status == Status.OK and outcome.metrics["send_verified"]


def ews_world(world, roles=("full_access_as_app",), **box):
    def build(ids):
        # EWSEnabled set: since 1 October 2026 a tenant that never set it is blocked
        return {"ews_enabled": True, "mailboxes": [{"address": f"box@{ids['domain']}", "type": "shared", **box}]}
    return world("app", app_permissions={"exchange": list(roles)}, exchange=build,
                 checks={"token": {}, "ews": {}})


def test_ews_ok_carries_the_retirement_notice(world):
    w = ews_world(world)
    w.rewrite(lambda d: d["endpoints"].update(exchange="online"))  # the sandbox stands in for Exchange Online
    outcome = w.run("ews")  # it works, and it is retiring: warn ews_retiring within 180 days of the shutdown
    assert (outcome.status, outcome.code) == (Status.WARN, "ews_retiring"), outcome.summary
    assert "1 April 2027" in outcome.metrics["notice"] and "Graph" in outcome.metrics["notice"]
    w.rewrite(lambda d: d["endpoints"].update(exchange="on_premises"))  # on-premises EWS is not retired
    on_premises = w.run("ews")
    assert on_premises.status == Status.OK and "notice" not in on_premises.metrics


def test_ews_failures(world):
    w = ews_world(world)
    w.rewrite(lambda d: d["integrations"][0].update(mailbox="nobody@example.test"))
    assert w.run("ews").code == "mailbox_not_found"
    w = ews_world(world)
    w.ctl.patch_mailbox(w.open().config.integration("subject").mailbox,
                        ews_impersonation_denied=[w.app_id])
    assert w.run("ews").code == "permission_missing"
    w = ews_world(world)
    w.rewrite(lambda d: d["endpoints"].update(exchange="online"))
    w.ctl.set_tenant_exchange(w.tenant_id, ews_enabled=False)
    outcome = w.run("ews")  # a bare 403: which policy blocks is not said (tests/fidelity/test_ews_graph.py)
    assert outcome.code == "ews_forbidden" and "notice" in outcome.metrics
    w = ews_world(world, roles=())
    assert w.run("ews").code == "auth_failed"


def test_server_that_never_answers_is_a_timeout(hoth, sandbox):
    w = hoth()
    w.rewrite(lambda d: d["defaults"].update(timeout="2s"))
    sandbox.control.set_protocol_fault("imap", mode="hang")
    try:
        outcome = w.run("imap")
    finally:
        sandbox.control.set_protocol_fault("imap", mode="none")
    assert (outcome.status, outcome.code) == (Status.ERROR, "timeout"), outcome.summary


def test_untrusted_certificate_is_tls_error(hoth, tmp_path):
    from tests.e2e.dovecot import _self_signed

    w = hoth()
    other_ca, _ = _self_signed(tmp_path)  # trusts a CA that signed nothing the server presents
    w.rewrite(lambda d: d["endpoints"].update(ca_bundle=str(other_ca)))
    outcome = w.run("pop")
    assert (outcome.status, outcome.code) == (Status.ERROR, "tls_error"), outcome.summary


def test_unknown_host_is_dns_error(hoth):
    w = hoth()
    w.rewrite(lambda d: d["endpoints"].update(imap="mail.invalid:993"))
    outcome = w.run("imap")
    assert (outcome.status, outcome.code) == (Status.ERROR, "dns_error"), outcome.summary


def test_a_reauthorisation_stored_by_another_instance_is_picked_up(hoth):
    """Two instances share the database: the leader runs the checks with the token cache it holds in memory,
    and the admin's sign-in completes on the other one (a follower serving the dashboard). The leader's next
    refusal makes it read the stored cache again instead of failing until it restarts."""
    from mailwarden.monitor import config as config_mod
    from mailwarden.monitor import reauth
    from mailwarden.monitor.runtime import open_runtime
    from mailwarden_sandbox.browser import sign_in
    from tests.e2e.conftest import REDIRECT

    w = hoth()
    leader = w.runtime
    assert w.run("pop").status == Status.OK
    w.ctl.revoke_user_sessions(w.upn)
    assert w.run("token").code == "refresh_token_revoked"  # the leader's in-memory refresh token is dead

    follower = open_runtime(config_mod.load(w.config_path))
    try:
        integ = follower.config.integration("subject")
        flow = reauth.start(follower.tokens, integ, REDIRECT)
        back = sign_in(flow["auth_uri"], w.upn, w.password, w.sb.ca_path)
        reauth.complete(follower.tokens, integ, flow, reauth.parse_redirect(back))
    finally:
        follower.close()

    assert w.runtime is leader
    assert w.run("token").status == Status.OK  # the stored cache, read again after the refusal
    assert w.run("pop").status == Status.OK


def test_mailbox_checks_reuse_the_delegated_access_token(hoth):
    w = hoth()
    assert w.run("pop").status == Status.OK
    w.ctl.reset_stats()
    for kind in ("pop", "imap", "smtp", "pop"):
        assert w.run(kind).status == Status.OK
    assert not w.ctl.stats()["token"].get("refresh_token"), "a cached access token was refreshed"
