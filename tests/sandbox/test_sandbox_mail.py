"""The sandbox's Exchange IMAP, POP3 and SMTP servers, driven with imaplib, poplib and smtplib only."""

from __future__ import annotations

import imaplib
import poplib
import smtplib
import socket
import ssl
import time

import pytest

from tests.sandbox.helpers import MONITOR_APP, MONITOR_SECRET, TENANT, cca
from tests.sandbox.mail_helpers import (
    app_token,
    b64,
    delegated_token,
    imap,
    imap_login,
    new_mailbox,
    pop,
    pop_auth,
    smtp,
    smtp_auth,
    user_with_mailbox,
    xoauth2,
)

NOT_CONNECTED = "User is authenticated but not connected."


def _imap_refused(sb, address, token):
    im = imap(sb)
    with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATE failed."):
        im.authenticate("XOAUTH2", lambda _: xoauth2(address, token).encode())
    im.logout()


def _imap_not_connected(sb, address, token):
    """AUTHENTICATE OK, then BAD on every command; the second BAD is followed by BYE and the server closes
    (captured: email-oauth2-proxy#74, MailKit#1496)."""
    im = imap_login(sb, address, token)
    assert im.capability()[0] == "OK"  # CAPABILITY still answers
    tag = im._new_tag().decode()
    im.send(f"{tag} SELECT INBOX\r\n".encode())
    assert im.readline() == f"{tag} BAD {NOT_CONNECTED}\r\n".encode()
    tag = im._new_tag().decode()
    im.send(f"{tag} EXPUNGE\r\n".encode())
    assert im.readline() == f"{tag} BAD {NOT_CONNECTED}\r\n".encode()
    assert im.readline() == b"* BYE Connection closed. 14\r\n"
    assert im.readline() == b""  # closed
    im.shutdown()


def test_imap_delegated_examine_search_fetch_read_only(sb):
    upn = user_with_mailbox(sb, messages=[{"subject": "new", "received": "-1h"},
                                          {"subject": "old", "received": "-3h"},
                                          {"subject": "read", "received": "-5h", "seen": True}])
    token = delegated_token(sb, upn)
    sb.control.reset_stats()
    im = imap(sb)
    assert im.welcome.startswith(b"* OK The Microsoft Exchange IMAP4 service is ready.")
    assert "AUTH=XOAUTH2" in im.capabilities and "SASL-IR" in im.capabilities
    assert im.authenticate("XOAUTH2", lambda _: xoauth2(upn, token).encode()) == ("OK", [b"AUTHENTICATE completed."])
    typ, data = im.select("INBOX", readonly=True)
    assert typ == "OK" and data == [b"3"]
    assert im.untagged_responses.get("READ-ONLY") == [b""]
    assert im.untagged_responses["UIDVALIDITY"] and im.untagged_responses["RECENT"] == [b"0"]
    typ, [hits] = im.search(None, "UNSEEN")
    assert hits == b"2 3"  # sequence numbers in received order: "old" (2) and "new" (3) are unseen
    typ, [line] = im.fetch("2", "(INTERNALDATE)")
    when = imaplib.Internaldate2tuple(line)
    assert when is not None and time.mktime(when) < time.time() - 2.5 * 3600
    typ, data = im.store("2", "+FLAGS", "\\Seen")  # EXAMINE: nothing may change
    assert typ == "NO"
    assert im.fetch("2:3", "(BODY[])")[0] == "OK"  # BODY[] in read-only mode does not set \Seen either
    assert im.search(None, "UNSEEN")[1] == [b"2 3"]
    assert im.logout()[0] == "BYE"
    commands = sb.control.stats()["mail"]["imap"]["commands"][upn.lower()]
    assert {"EXAMINE", "SEARCH", "FETCH", "LOGOUT"} <= set(commands)
    assert sb.control.get_mailbox(upn)["messages"][1]["seen"] is False


def test_imap_sasl_ir_one_line_and_failures(sb):
    upn = user_with_mailbox(sb)
    token = delegated_token(sb, upn)
    im = imap(sb)
    typ, data = im._simple_command("AUTHENTICATE", "XOAUTH2", b64(upn, token))
    assert (typ, data) == ("OK", [b"AUTHENTICATE completed."])
    im.logout()
    _imap_refused(sb, upn, token.replace(token[-10:], "A" * 10))  # bad signature
    _imap_refused(sb, upn, cca(sb, MONITOR_APP, MONITOR_SECRET).acquire_token_for_client(
        ["https://graph.microsoft.com/.default"])["access_token"])  # Graph audience
    sb.control.set_token_lifetime(-60)
    try:
        expired = delegated_token(sb, upn)
    finally:
        sb.control.set_token_lifetime(3600)
    _imap_refused(sb, upn, expired)
    no_scope = delegated_token(sb, upn, scopes=["https://outlook.office.com/SMTP.Send"], exchange=["SMTP.Send"])
    _imap_refused(sb, upn, no_scope)
    other = user_with_mailbox(sb)
    _imap_not_connected(sb, other, token)  # another user's mailbox without FullAccess: login works, access not
    sb.control.patch_mailbox(upn, imap_enabled=False)
    _imap_refused(sb, upn, token)


def test_imap_shared_mailbox_delegation(sb):
    delegate = user_with_mailbox(sb)
    shared = new_mailbox(sb, type="shared", messages=[{"subject": "q", "received": "-2h"}])
    token = delegated_token(sb, delegate)
    _imap_not_connected(sb, shared, token)  # the delegate without FullAccess
    sb.control.grant_mailbox_permission(shared, "full_access", delegate)
    im = imap_login(sb, shared, token)
    assert im.select("INBOX", readonly=True) == ("OK", [b"1"])
    im.logout()
    sb.control.patch_mailbox(shared, not_connected=True)
    im = imap_login(sb, shared, token)
    with pytest.raises(imaplib.IMAP4.error, match=NOT_CONNECTED):
        im.select("INBOX", readonly=True)
    im.logout()


def test_imap_app_only_service_principal_role_full_access(sb):
    box = new_mailbox(sb, messages=[{"subject": "x"}])
    app_id, token = app_token(sb, ["IMAP.AccessAsApp"], service_principal=False)
    _imap_refused(sb, box, token)  # no New-ServicePrincipal
    sb.control.add_service_principal(TENANT, app_id)
    im = imap_login(sb, box, token)  # login works, the mailbox does not
    with pytest.raises(imaplib.IMAP4.error, match=NOT_CONNECTED):
        im.select("INBOX", readonly=True)
    sb.control.grant_mailbox_permission(box, "full_access", app_id)
    assert im.select("INBOX", readonly=True)[0] == "OK"
    im.logout()
    _, no_role = app_token(sb, ["POP.AccessAsApp"])
    _imap_refused(sb, box, no_role)


def test_pop_two_step_stat_quit_and_refusals(sb):
    upn = user_with_mailbox(sb, messages=[{"subject": "a"}, {"subject": "b"}])
    token = delegated_token(sb, upn)
    sb.control.reset_stats()
    p = pop(sb)
    assert p.getwelcome().startswith(b"+OK The Microsoft Exchange POP3 service is ready.")
    assert pop_auth(p, upn, token) == b"+OK User successfully authenticated."
    count, size = p.stat()
    assert count == 2 and size > 0
    assert p.quit().startswith(b"+OK")
    commands = sb.control.stats()["mail"]["pop"]["commands"][upn.lower()]
    assert set(commands) == {"STAT", "QUIT"}
    p = pop(sb)
    with pytest.raises(poplib.error_proto, match="Authentication failure: unknown user name or bad password."):
        pop_auth(p, upn, token[:-4] + "AAAA")
    p.close()
    p = pop(sb)  # the one-line form: Exchange drops the connection
    with pytest.raises(poplib.error_proto, match=r"Protocol error. Connection is closed. 10"):
        p._shortcmd("AUTH XOAUTH2 " + b64(upn, token))
    with pytest.raises((poplib.error_proto, OSError, EOFError)):
        p._shortcmd("NOOP")
    p.close()
    sb.control.patch_mailbox(upn, pop_enabled=False)
    p = pop(sb)
    with pytest.raises(poplib.error_proto, match="Authentication failure"):
        pop_auth(p, upn, token)
    p.close()
    app_id, app_tok = app_token(sb, ["POP.AccessAsApp"])
    box = new_mailbox(sb, full_access=[app_id])
    p = pop(sb)
    assert pop_auth(p, box, app_tok).startswith(b"+OK")
    assert p.stat() == (0, 0)
    p.quit()


def test_smtp_starttls_auth_and_ordering(sb):
    upn = user_with_mailbox(sb)
    token = delegated_token(sb, upn)
    s = smtp(sb, tls=False)
    assert s.has_extn("starttls") and not s.has_extn("auth")
    assert s.docmd("AUTH", "XOAUTH2")[0] == 504
    code, msg = s.docmd("MAIL", f"FROM:<{upn}>")
    assert code == 530 and msg.startswith(b"5.7.57 Client not authenticated to send mail.")
    s.starttls(context=ssl.create_default_context(cafile=str(sb.ca_path)))
    s.ehlo()
    assert "XOAUTH2" in s.esmtp_features["auth"] and not s.has_extn("starttls")
    assert smtp_auth(s, upn, token) == (235, b"2.7.0 Authentication successful")
    assert s.noop()[0] == 250
    s.quit()
    s = smtp(sb)
    with pytest.raises(smtplib.SMTPAuthenticationError) as err:
        smtp_auth(s, upn, token[:-4] + "AAAA")
    assert err.value.smtp_code == 535 and err.value.smtp_error.startswith(b"5.7.3 Authentication unsuccessful")
    s.close()


def test_smtp_auth_disabled_tenant_and_mailbox(sb):
    upn = user_with_mailbox(sb)
    token = delegated_token(sb, upn)

    def refusal() -> bytes:
        s = smtp(sb)
        try:
            smtp_auth(s, upn, token)
        except smtplib.SMTPAuthenticationError as exc:
            assert exc.smtp_code == 535
            return exc.smtp_error
        finally:
            s.close()
        return b""

    sb.control.set_tenant_exchange(TENANT, smtp_auth_enabled=False)
    try:
        assert refusal().startswith(b"5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled "
                                    b"for the Tenant. Visit https://aka.ms/smtp_auth_disabled")
        sb.control.patch_mailbox(upn, smtp_auth_enabled=True)  # the mailbox override wins
        assert refusal() == b""
    finally:
        sb.control.set_tenant_exchange(TENANT, smtp_auth_enabled=True)
    sb.control.patch_mailbox(upn, smtp_auth_enabled=False)
    assert b"is disabled for the Mailbox." in refusal()


def test_smtp_send_as_and_canary_delivery(sb):
    delegate = user_with_mailbox(sb)
    shared = new_mailbox(sb, type="shared", full_access=[delegate], send_as=[])
    token = delegated_token(sb, delegate)
    sb.control.reset_stats()
    s = smtp(sb)
    # a delegate's token authenticates SMTP as the delegate only: user=<shared mailbox> is 535 5.7.3 even with
    # FullAccess (M365_FACTS.md; MailKit#1770, nextcloud/mail#13667)
    with pytest.raises(smtplib.SMTPAuthenticationError) as refused:
        smtp_auth(s, shared, token)
    assert refused.value.smtp_code == 535 and refused.value.smtp_error.startswith(b"5.7.3 Authentication unsuccessful")
    s.close()
    s = smtp(sb)
    smtp_auth(s, delegate, token)
    with pytest.raises(smtplib.SMTPDataError) as err:
        s.sendmail(shared, [delegate], "Subject: canary 1\r\n\r\nping")
    assert err.value.smtp_code == 554
    assert err.value.smtp_error.startswith(f"5.2.252 SendAsDenied; {delegate} not allowed to send as {shared}; "
                                           "STOREDRV.Submission.Exception:SendAsDeniedException".encode())
    s.sendmail(delegate, [shared], "Subject: canary 2\r\n\r\nping")  # own address: allowed
    sb.control.grant_mailbox_permission(shared, "send_as", delegate)
    s.sendmail(shared, [delegate, "nobody@example.org"], "Subject: canary 3\r\n\r\nping")
    s.quit()
    assert [m["subject"] for m in sb.control.get_mailbox(shared)["messages"]] == ["canary 2"]
    assert [m["subject"] for m in sb.control.get_mailbox(delegate)["messages"]] == ["canary 3"]
    delivered = sb.control.stats()["delivered"]
    assert [(d["to"], d["delivered"]) for d in delivered] == [(shared, True), (delegate, True),
                                                            ("nobody@example.org", False)]


def test_smtp_app_only_needs_role_sp_and_mailbox_permission(sb):
    app_id, token = app_token(sb, ["SMTP.SendAsApp"])
    box = new_mailbox(sb)
    s = smtp(sb)
    with pytest.raises(smtplib.SMTPAuthenticationError):
        smtp_auth(s, box, token)  # no FullAccess
    s.close()
    sb.control.grant_mailbox_permission(box, "full_access", app_id)
    s = smtp(sb)
    assert smtp_auth(s, box, token)[0] == 235
    s.sendmail(box, [box], "Subject: app canary\r\n\r\nok")
    s.quit()
    sb.control.remove_service_principal(TENANT, app_id)
    s = smtp(sb)
    with pytest.raises(smtplib.SMTPAuthenticationError):
        smtp_auth(s, box, token)
    s.close()


@pytest.mark.parametrize("protocol", ["imap", "pop", "smtp"])
def test_hang_fault_times_out_then_recovers(sb, protocol):
    host, port = sb.endpoints[protocol].rsplit(":", 1)
    sb.control.set_protocol_fault(protocol, "hang")
    try:
        connect = {"imap": lambda: imap(sb, timeout=0.5), "pop": lambda: pop(sb, timeout=0.5),
                   "smtp": lambda: smtp(sb, timeout=0.5, tls=False)}[protocol]
        started = time.monotonic()
        with pytest.raises((socket.timeout, TimeoutError, smtplib.SMTPServerDisconnected)):
            connect()
        assert time.monotonic() - started < 3
    finally:
        sb.control.set_protocol_fault(protocol, "none")
    s = socket.create_connection((host, int(port)), timeout=5)
    s.close()
    if protocol == "smtp":
        smtp(sb).quit()


def test_latency_fault_delays_replies(sb):
    sb.control.set_protocol_fault("imap", "latency", latency_ms=300)
    try:
        started = time.monotonic()
        im = imap(sb)
        im.noop()
        assert time.monotonic() - started >= 0.6  # greeting + NOOP
        im.logout()
    finally:
        sb.control.set_protocol_fault("imap", "none")
    assert sb.control.state()["protocol_faults"]["imap"] == {"mode": "none", "latency_ms": 0}


def test_scenario_exchange_section(tmp_path):
    from mailwarden_sandbox import scenario
    from mailwarden_sandbox.control import snapshot

    spec = {"tenants": [{"id": TENANT, "domain": "contoso.onmicrosoft.com",
                         "users": [{"upn": "a@contoso.com", "password": "x"}],
                         "exchange": {"smtp_auth_enabled": False, "service_principals": [MONITOR_APP],
                                      "access_policies": [{"app_id": MONITOR_APP, "access_right": "RestrictAccess",
                                                           "members": ["a@contoso.com"]}],
                                      "mailboxes": [{"address": "a@contoso.com", "owner": "a@contoso.com",
                                                     "smtp_auth_enabled": True,
                                                     "messages": [{"subject": "s", "received": "-2h"}]},
                                                    {"address": "shared@contoso.com", "type": "shared",
                                                     "full_access": ["a@contoso.com"], "send_as": [MONITOR_APP]}]}}]}
    ex = snapshot(scenario.build_state(spec, tmp_path))["tenants"][0]["exchange"]
    assert ex["smtp_auth_enabled"] is False and ex["ews_enabled"] is None  # never set
    assert ex["service_principals"] == [MONITOR_APP] and ex["access_policies"][0]["members"] == ["a@contoso.com"]
    a, shared = ex["mailboxes"]
    assert a["smtp_auth_enabled"] is True and a["messages"][0]["subject"] == "s" and not a["messages"][0]["seen"]
    assert shared["owner"] is None and shared["full_access"] == ["a@contoso.com"]
    with pytest.raises(scenario.ScenarioError):
        scenario.build_state({"tenants": [{"exchange": {"mailboxes": [{"address": "x@y", "bogus": 1}]}}]}, tmp_path)
