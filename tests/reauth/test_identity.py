"""The identity check's decision (``monitor.reauth.judge``), a pure function: the whole table of evidence.

Graph's word decides when there is one (the configured account is the user's UPN, mail or a proxy address, and
the object id that signed in is that user's). Without it, strongest first: the object id recorded at the
integration's last accepted sign-in, the sign-in name (UPN), then the ID token's email, which never overrides
a recorded object id of someone else."""

from __future__ import annotations

import pytest

from mailwarden.monitor.reauth import DirectoryRead, DirectoryUser, SignedIn, judge

ANNA = DirectoryUser("oid-anna", "anna.smith@contoso.com", "anna@contoso.com",
                     ("SMTP:anna@contoso.com", "smtp:helpdesk@contoso.com", "SIP:anna.sip@contoso.com",
                      "X500:/o=ExchangeLabs/ou=Exchange Administrative Group/cn=Recipients/cn=anna"))
BOB = DirectoryUser("oid-bob", "bob@contoso.com", "bob@contoso.com", ("SMTP:bob@contoso.com",))
AS_ANNA = SignedIn("oid-anna", "anna.smith@contoso.com", "anna@contoso.com")
AS_BOB = SignedIn("oid-bob", "bob@contoso.com", "bob@contoso.com")
AS_ANNA_NO_EMAIL = SignedIn("oid-anna", "anna.smith@contoso.com", None)
NO_GRAPH = DirectoryRead(problem="the monitor app monitor lacks User.Read.All: Graph answered 403")


@pytest.mark.parametrize("account,signed,directory,recorded,accepted,evidence", [
    # Graph resolves the account by UPN: the object ids decide
    ("anna.smith@contoso.com", AS_ANNA, DirectoryRead(account_user=ANNA), None, True, "graph"),
    ("ANNA.SMITH@contoso.com", AS_ANNA, DirectoryRead(account_user=ANNA), None, True, "graph"),
    ("anna.smith@contoso.com", AS_BOB, DirectoryRead(account_user=ANNA), None, False, "graph"),
    ("anna.smith@contoso.com", AS_BOB, DirectoryRead(account_user=ANNA), "oid-bob", False, "graph"),
    # the account is no UPN: Graph's record of who signed in must list it (mail, proxy address; prefix stripped)
    ("anna@contoso.com", AS_ANNA, DirectoryRead(signed_in_user=ANNA), None, True, "graph"),
    ("Helpdesk@Contoso.com", AS_ANNA, DirectoryRead(signed_in_user=ANNA), None, True, "graph"),
    ("anna@contoso.com", AS_BOB, DirectoryRead(signed_in_user=BOB), None, False, "graph"),
    ("anna@contoso.com", AS_BOB, DirectoryRead(signed_in_user=BOB), "oid-bob", False, "graph"),
    # Graph's record must be of the object id that signed in
    ("anna@contoso.com", AS_BOB, DirectoryRead(signed_in_user=ANNA), None, False, "graph"),
    # only SMTP proxy addresses name the user: not its SIP address
    ("anna.sip@contoso.com", AS_ANNA, DirectoryRead(signed_in_user=ANNA), None, False, "graph"),
    ("anna@contoso.com", SignedIn(None, "anna.smith@contoso.com", "anna@contoso.com"),
     DirectoryRead(account_user=ANNA), None, False, "graph"),
    # no Graph: the recorded object id first
    ("anna@contoso.com", AS_ANNA_NO_EMAIL, NO_GRAPH, "oid-anna", True, "recorded_oid"),
    ("anna@contoso.com", AS_ANNA, NO_GRAPH, "OID-ANNA", True, "recorded_oid"),
    ("anna@contoso.com", AS_BOB, NO_GRAPH, "oid-anna", False, "recorded_oid"),
    # ... then the sign-in name (Entra's unique name: even against another recorded id, a recreated account)
    ("anna.smith@contoso.com", AS_ANNA, NO_GRAPH, None, True, "sign_in_name"),
    ("anna.smith@contoso.com", AS_ANNA, NO_GRAPH, "oid-old-anna", True, "sign_in_name"),
    ("anna.smith@contoso.com", AS_BOB, NO_GRAPH, None, False, "sign_in_name"),
    # ... then the ID token's email, never against a recorded id of another user
    ("anna@contoso.com", AS_ANNA, NO_GRAPH, None, True, "id_token_email"),
    ("anna@contoso.com", SignedIn("oid-mallory", "mallory@contoso.com", "anna@contoso.com"), NO_GRAPH, "oid-anna",
     False, "recorded_oid"),
    ("anna@contoso.com", AS_ANNA_NO_EMAIL, NO_GRAPH, None, False, "sign_in_name"),
    ("anna@contoso.com", AS_BOB, NO_GRAPH, None, False, "sign_in_name"),
    ("anna@contoso.com", SignedIn(None, "", None), NO_GRAPH, None, False, "sign_in_name"),
])
def test_judge(account, signed, directory, recorded, accepted, evidence):
    verdict = judge(account, signed, directory, recorded)
    assert (verdict.accepted, verdict.evidence) == (accepted, evidence), verdict.reason
    if evidence != "graph":
        assert verdict.reason.startswith(f"could not read the account from Graph ({directory.problem})")


def test_reasons_say_what_was_compared():
    assert judge("anna.smith@contoso.com", AS_ANNA, NO_GRAPH, None).reason == (
        "could not read the account from Graph (the monitor app monitor lacks User.Read.All: Graph answered 403): "
        "compared the sign-in name only")
    assert judge("anna@contoso.com", AS_ANNA, NO_GRAPH, None).reason.endswith(
        "compared the sign-in name and the ID token's email (anna@contoso.com) only")
    assert "may have been deleted and created again" in judge(
        "anna.smith@contoso.com", AS_ANNA, NO_GRAPH, "oid-old-anna").reason
    assert judge("helpdesk@contoso.com", AS_ANNA, DirectoryRead(signed_in_user=ANNA), None).reason == (
        "Entra ID (Graph) lists helpdesk@contoso.com as the proxy address of anna.smith@contoso.com (id oid-anna), "
        "the user who signed in")
    refused = judge("anna@contoso.com", AS_BOB, DirectoryRead(signed_in_user=BOB), None).reason
    assert "bob@contoso.com (id oid-bob)" in refused and "its addresses: bob@contoso.com" in refused


def test_directory_user_addresses():
    assert ANNA.addresses() == ["anna.smith@contoso.com", "anna@contoso.com", "helpdesk@contoso.com"]
    assert [ANNA.named_by(a) for a in ("Anna.Smith@contoso.com", "ANNA@contoso.com", "helpdesk@contoso.com",
                                       "x@contoso.com")] == ["UPN", "mail (primary SMTP address)", "proxy address",
                                                             None]
    bare = DirectoryUser.of({"id": "1", "userPrincipalName": "a@b.c", "mail": None, "proxyAddresses": None})
    assert (bare.mail, bare.proxy_addresses, bare.addresses()) == (None, (), ["a@b.c"])
