"""Table tests of the pure reply classifiers of the mail protocols and the token endpoint, without servers.

Each captured row names its public source: the reply as Exchange Online or Entra ID sent it, seen in a mail
client's issue tracker (see /work/shared/M365_FACTS.md and tests/fidelity for the same replies played by the
sandbox). A row marked "Dovecot" is the real Dovecot's answer (REAL_MAIL_SERVER.md)."""

from __future__ import annotations

import pytest

from mailwarden.checks.base import Status
from mailwarden.checks.diagnoses import CATALOG
from mailwarden.checks.imap import classify_login as imap_login
from mailwarden.checks.imap import classify_reply as imap_reply
from mailwarden.checks.pop import classify_login as pop_login
from mailwarden.checks.smtp import classify_auth, classify_submit, login_identity
from mailwarden.checks.token import refused_outcome, reply_outcome
from mailwarden.monitor.tokens import TokenReply, retry_after

W, F, E = Status.WARN, Status.FAIL, Status.ERROR

IMAP_REPLIES = [
    # imapsync/imapsync#198 (NO at APPEND)
    ("Request is throttled. Suggested Backoff Time: 299609 milliseconds", (W, "throttled", 299.609)),
    # simonrob/email-oauth2-proxy#191 (BAD, then BYE)
    ("BAD Request is throttled. Suggested Backoff Time: 89117 milliseconds", (W, "throttled", 89.117)),
    # email-oauth2-proxy README: no unit
    ("NO Request is throttled. Suggested Backoff Time: 256625", (W, "throttled", 256.625)),
    ("NO Request is throttled.", (W, "throttled", 60.0)),
    # simonrob/email-oauth2-proxy#74, jstedfast/MailKit#1496
    ("BAD User is authenticated but not connected.", (F, "authenticated_not_connected", None)),
    # owncloud-archive/mail#721
    ("NO Server Unavailable. 15", (E, "service_unavailable", None)),
    ("NO EXAMINE failed.", None),
]


@pytest.mark.parametrize(("reply", "expected"), IMAP_REPLIES)
def test_imap_replies(reply, expected):
    assert imap_reply(reply) == expected


IMAP_LOGINS = [
    ("AUTHENTICATE failed.", (F, "auth_failed")),  # Exchange, M365_FACTS.md
    ("[AUTHENTICATIONFAILED] Authentication failed.", (F, "auth_failed")),  # Dovecot
    ("[UNAVAILABLE] Temporary authentication failure.", (E, "unexpected_reply")),  # Dovecot: temporary
    ("Request is throttled. Suggested Backoff Time: 5000 milliseconds", (W, "throttled")),
    ("Command Error. 10", (F, "unexpected_reply")),
]


@pytest.mark.parametrize(("reply", "expected"), IMAP_LOGINS)
def test_imap_login_replies(reply, expected):
    assert imap_login(reply) == expected


POP_LOGINS = [
    ("-ERR Authentication failure: unknown user name or bad password.", 2900, (F, "auth_failed")),  # Exchange
    ("-ERR [AUTH] Authentication failed.", 2900, (F, "auth_failed")),  # Dovecot
    ("-ERR [SYS/TEMP] Temporary authentication failure.", 2900, (E, "unexpected_reply")),  # Dovecot
    # getmail6/getmail6#256: Exchange refuses a command line past its limit and closes the connection
    ("-ERR Protocol error. Connection is closed. 10", 9000, (F, "token_too_long")),
    ("-ERR Protocol error. Connection is closed. 10", 2900, (F, "unexpected_reply")),
    ("-ERR User is authenticated but not connected.", 2900, (F, "authenticated_not_connected")),
    ("-ERR Request is throttled.", 2900, (W, "throttled")),
]


@pytest.mark.parametrize(("reply", "length", "expected"), POP_LOGINS)
def test_pop_login_replies(reply, length, expected):
    assert pop_login(reply, length) == expected


SMTP_AUTH = [
    # jstedfast/MailKit#1770: a shared mailbox as the XOAUTH2 user
    (535, "535 5.7.3 Authentication unsuccessful [AM0PR02CA0134.eurprd02.prod.outlook.com "
          "2024-07-11T11:46:49.042Z 08DCA18218166FB4]", (F, "auth_failed")),
    # simonrob/email-oauth2-proxy#193
    (535, "535 5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled for the Tenant. Visit "
          "https://aka.ms/smtp_auth_disabled for more information. [MN2PR05CA0004.namprd05.prod.outlook.com]",
     (F, "smtp_auth_disabled")),
    (535, "535 5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled for the Mailbox. Visit "
          "https://aka.ms/smtp_auth_disabled for more information.", (F, "smtp_auth_disabled_mailbox")),
    # rpremraj/mailR#107 (a password, not XOAUTH2)
    (535, "535 5.7.139 Authentication unsuccessful, basic authentication is disabled. "
          "[BM1P287CA0015.INDP287.PROD.OUTLOOK.COM]", (F, "smtp_basic_auth_retired")),
    # Microsoft's announcement of Basic auth's retirement
    (550, "550 5.7.30 Basic authentication is not supported for Client Submission.", (F, "smtp_basic_auth_retired")),
    # jstedfast/MailKit#1106
    (421, "421 4.3.2 Service not active [TYAPR01CA0229.jpnprd01.prod.outlook.com]", (E, "service_unavailable")),
    (421, "421 4.3.2 Service not available", (E, "service_unavailable")),
    (454, "454 4.7.0 Temporary authentication failure", (E, "unexpected_reply")),  # Dovecot
    (535, "535 5.7.8 Authentication failed.", (F, "auth_failed")),  # Dovecot
]


@pytest.mark.parametrize(("code", "reply", "expected"), SMTP_AUTH)
def test_smtp_auth_replies(code, reply, expected):
    assert classify_auth(code, reply) == expected


SMTP_SUBMIT = [
    # gophish/gophish#2900
    (554, "554 5.2.252 SendAsDenied; a@outlook.com not allowed to send as security@sfb.com; "
          "STOREDRV.Submission.Exception:SendAsDeniedException.MapiExceptionSendAsDenied; Failed to process message",
     (F, "send_as_denied")),
    # rss2email/rss2email#147 (the older 5.2.0 form)
    (554, "554 5.2.0 STOREDRV.Submission.Exception:SendAsDeniedException.MapiExceptionSendAsDenied; Failed to "
          "process message due to a permanent exception with message Cannot submit message.", (F, "send_as_denied")),
    # gophish/gophish#1600
    (550, "550 5.7.60 SMTP; Client does not have permissions to send as this sender", (F, "send_as_denied")),
    # Microsoft: continuous-error throttling
    (550, "550 5.2.252 Sender throttled due to continuous send as denied errors.", (F, "send_as_denied")),
    # Microsoft's SMTP submission page (the per-day limit)
    (554, "554 5.2.0 STOREDRV.Submission.Exception:SubmissionQuotaExceededException", (F, "sending_quota_exceeded")),
    # sabuhish/fastapi-mail#75 and timeoff-management#308
    (432, "432 4.3.2 Concurrent connections limit exceeded. Visit https://aka.ms/concurrent_sending for more "
          "information. [Hostname=OS0PR01MB6099.jpnprd01.prod.outlook.com]", (W, "throttled")),
    (432, "432 4.3.2 STOREDRV.ClientSubmit; sender thread limit exceeded [Hostname=DM5SPR00MB2471]", (W, "throttled")),
    # Microsoft KB 4498191; microsoftgraph/microsoft-graph-docs#6698 (seen in NDRs)
    (550, "550 5.7.705 Access denied, tenant has exceeded threshold", (F, "outbound_blocked")),
    (550, "550 5.7.708 Service unavailable. Access denied, traffic not accepted from this IP.",
     (F, "outbound_blocked")),
    (421, "421 4.3.2 Service not available", (E, "service_unavailable")),
    (550, "550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address lookup",
     (F, "unexpected_reply")),
]


@pytest.mark.parametrize(("code", "reply", "expected"), SMTP_SUBMIT)
def test_smtp_submit_replies(code, reply, expected):
    assert classify_submit(code, reply) == expected


def test_smtp_signs_in_as_the_delegate():
    """M365_FACTS.md (corrected): a delegate's token authenticates SMTP as the delegate, not the shared mailbox."""
    assert login_identity("delegated", "support@contoso.com", "agent@contoso.com") == "agent@contoso.com"
    assert login_identity("app", "support@contoso.com", None) == "support@contoso.com"


TOKEN_REPLIES = [
    # AzureAD/microsoft-authentication-library-for-dotnet#2855: 429 with a plain-text body and Retry-After
    (429, {"retry-after": "60"}, "Too Many Requests", (W, "throttled", 60.0)),
    (429, {}, "Too Many Requests", (W, "throttled", 60.0)),
    # the token endpoint during an incident: an HTML page, an empty body (M365_FACTS.md)
    (503, {"retry-after": "30"}, "<!DOCTYPE html><html><body>Service Unavailable</body></html>",
     (E, "service_unavailable", 30.0)),
    (500, {}, "", (E, "service_unavailable", None)),
    # Azure/azure-sdk-for-python#14241: AADSTS90033 in JSON with HTTP 503
    (503, {}, '{"error":"temporarily_unavailable","error_description":"AADSTS90033: A transient error has '
              'occurred. Please try again.","error_codes":[90033]}', (E, "service_unavailable", None)),
    (400, {}, "<html>Bad Request</html>", (E, "unclassified", None)),
]


@pytest.mark.parametrize(("status", "headers", "text", "expected"), TOKEN_REPLIES)
def test_token_endpoint_replies_msal_cannot_read(status, headers, text, expected):
    out = reply_outcome(TokenReply(status, headers, text, "https://login/t/oauth2/v2.0/token"), "Token request", "t")
    assert (out.status, out.code, out.retry_after_s) == expected
    assert out.code in CATALOG


ERROR_DICTS = [
    # AzureAD/microsoft-authentication-library-for-dotnet#2353 (HTTP 400), azure-sdk-for-net#23324 (text)
    ({"error": "invalid_grant", "error_codes": [50196], "error_description": "AADSTS50196: The server terminated an "
      "operation because it encountered a client request loop."}, (W, "throttled")),
    ({"error": "temporarily_unavailable", "error_codes": [90055]}, (W, "throttled")),
    ({"error": "temporarily_unavailable", "error_codes": [90033]}, (E, "service_unavailable")),
    ({"error": "temporarily_unavailable"}, (W, "throttled")),
    # the public-client refresh token presented with a secret (M365_FACTS.md)
    ({"error": "invalid_client", "error_codes": [700025]}, (F, "public_client_token")),
    ({"error": "invalid_resource", "error_codes": [500011]}, (F, "resource_not_found")),
    ({"error": "invalid_grant", "error_codes": [530035]}, (F, "security_defaults_blocked")),
    # api-management-developer-portal#1310
    ({"error": "interaction_required", "error_codes": [50078], "suberror": "basic_action"}, (F, "mfa_required")),
    ({"error": "invalid_grant", "error_codes": [70000]}, (F, "refresh_token_invalid")),
    ({"error": "invalid_grant", "error_codes": [50173]}, (F, "refresh_token_revoked")),
]


@pytest.mark.parametrize(("result", "expected"), ERROR_DICTS)
def test_token_error_dicts(result, expected):
    out = refused_outcome(result, "Token request", "token:t:c", reply=None)
    assert (out.status, out.code) == expected
    if out.status == Status.WARN:
        assert out.retry_after_s and out.backoff_target == "token:t:c"


M365_FACTS_CODES = [7000222, 7000215, 700016, 7000112, 70001, 90002, 70008, 700082, 50173, 70043, 65001, 90094,
                    50057, 50055, 50053, 53003, 50076, 50079, 50074, 50105, 700027, 700024, 500011, 700025, 500112,
                    530035, 50078, 70000, 50196, 90055, 90033]


@pytest.mark.parametrize("code", M365_FACTS_CODES)
def test_no_code_in_m365_facts_is_unclassified(code):
    """Every AADSTS code M365_FACTS.md names maps to a diagnosis with a cause and a fix."""
    from mailwarden.checks.diagnoses import AADSTS_CODES, classify_aadsts, render_cause, render_fix

    assert code in AADSTS_CODES and classify_aadsts([code]) != "unclassified"
    diagnosis = classify_aadsts([code])
    assert render_cause(diagnosis) and render_fix(diagnosis)


@pytest.mark.parametrize(("value", "seconds"), [("30", 30.0), ("0", 0.0), ("bogus", None), (None, None)])
def test_retry_after_values(value, seconds):
    assert retry_after(value) == seconds
