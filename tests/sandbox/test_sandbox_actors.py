"""Consuming systems (actors): they sign in with their own secret or refresh token, collect mail the way their
protocol does, and the control API breaks them as admins do. Driven through tick_actors (no sleeping); what they
did is read back through the sign-in logs (requests) and the mailboxes."""

from __future__ import annotations

import uuid

from tests.sandbox.helpers import TENANT, new_app, new_user
from tests.sandbox.log_helpers import NI_FILTER, SP_FILTER, reader_token, signins
from tests.sandbox.mail_helpers import new_mailbox


def unread(sb, address: str) -> int:
    return sum(1 for m in sb.control.get_mailbox(address)["messages"] if not m["seen"])


def name() -> str:
    return f"actor-{uuid.uuid4().hex[:6]}"


def test_graph_actor_marks_mail_read_and_signs_in_under_its_own_correlation_ids(sb):
    app_id, _ = new_app(sb, application_permissions={"graph": ["Mail.ReadWrite"]})
    box = new_mailbox(sb, type="shared", messages=[{"subject": "order 1"}, {"subject": "order 2"},
                                                    {"subject": "old", "seen": True}])
    # a consuming system on a host of its own: it connects from another loopback address
    actor = sb.control.add_actor(TENANT, name=name(), app_id=app_id, protocol="graph", mailbox=box, interval_s=None,
                                 source_address="127.0.0.2")
    assert actor["secret_hint"] and actor["running"] and actor["next_run"] is None
    [result] = sb.control.tick_actors(actor["name"])
    assert result["ok"] and result["collected"] == 2, result
    assert unread(sb, box) == 0 and len(sb.control.get_mailbox(box)["messages"]) == 3
    [again] = sb.control.tick_actors(actor["name"])
    assert again["ok"] and again["collected"] == 0
    status = sb.control.get_actors(actor["name"])
    assert (status["rounds"], status["failures"], status["collected"]) == (2, 0, 2)
    events = signins(sb, reader_token(sb), f"{SP_FILTER} and appId eq '{app_id}'")
    assert [e["correlationId"] for e in events] == [again["correlation_id"], result["correlation_id"]]
    assert set(status["correlation_ids"]) == {e["correlationId"] for e in events}
    assert events[0]["userAgent"].startswith(actor["name"]) and events[0]["ipAddress"] == "127.0.0.2"


def test_delegated_pop_actor_retrieves_and_deletes_then_its_refresh_fails_when_sessions_are_revoked(sb):
    app_id, _ = new_app(sb)
    upn = new_user(sb)
    new_mailbox(sb, address=upn, owner=upn, messages=[{"subject": "a"}, {"subject": "b"}])
    actor = sb.control.add_actor(TENANT, name=name(), app_id=app_id, flow="delegated", protocol="pop", mailbox=upn,
                                 account=upn, interval_s=None, signed_in_at="-20d")
    [ok] = sb.control.tick_actors(actor["name"])
    assert ok["ok"] and ok["collected"] == 2, ok
    assert sb.control.get_mailbox(upn)["messages"] == []  # RETR + DELE, applied at QUIT
    sb.control.revoke_actor_token(actor["name"])  # revoke sessions of its account
    [failed] = sb.control.tick_actors(actor["name"])
    assert (failed["ok"], failed["step"], failed["error_code"]) == (False, "token", 50173), failed
    token = reader_token(sb)
    events = signins(sb, token, f"{NI_FILTER} and appId eq '{app_id}'")
    assert [(e["correlationId"], e["status"]["errorCode"]) for e in events] == [
        (failed["correlation_id"], 50173), (ok["correlation_id"], 0)]
    assert events[0]["userPrincipalName"] == upn
    sb.control.actor_sign_in(actor["name"])  # someone signs the system in again
    [back] = sb.control.tick_actors(actor["name"])
    assert back["ok"] and back["collected"] == 0
    assert [e["userPrincipalName"] for e in signins(sb, token, f"appId eq '{app_id}'", version="v1.0")] == [upn]


def test_only_this_actors_token_expires(sb):
    app_id, _ = new_app(sb)
    upn = new_user(sb)
    new_mailbox(sb, address=upn, owner=upn)
    actor = sb.control.add_actor(TENANT, name=name(), app_id=app_id, flow="delegated", protocol="imap", mailbox=upn,
                                 account=upn, interval_s=None)
    sb.control.revoke_actor_token(actor["name"], how="token")
    [result] = sb.control.tick_actors(actor["name"])
    assert result["error_code"] == 70008


def test_app_only_imap_actor_with_a_stale_secret_after_rotation(sb):
    made = sb.control.add_app(TENANT, secrets=[{"display_name": "2025", "end": "+10d"}],
                              application_permissions={"exchange": ["IMAP.AccessAsApp"]})
    app_id, old_key = made["app_id"], made["secrets"][0]["keyId"]
    sb.control.add_service_principal(TENANT, app_id)
    box = new_mailbox(sb, type="shared", full_access=[app_id], messages=[{"subject": "ticket"}])
    actor = sb.control.add_actor(TENANT, name=name(), app_id=app_id, protocol="imap", mailbox=box,
                                 imap_action="delete", interval_s=None)
    # the admin rotates the secret in Entra but not in the consuming system
    new = sb.control.add_secret(app_id, display_name="2026")
    sb.control.delete_secret(app_id, old_key)
    [stale] = sb.control.tick_actors(actor["name"])
    assert (stale["ok"], stale["error_code"]) == (False, 7000215)
    assert sb.control.set_actor_secret(actor["name"])["secret_hint"] == new["hint"]  # the system gets the new one
    [ok] = sb.control.tick_actors(actor["name"])
    assert ok["ok"] and ok["collected"] == 1, ok["error"]
    assert sb.control.get_mailbox(box)["messages"] == []  # imap_action delete: \\Deleted + EXPUNGE
    events = signins(sb, reader_token(sb), f"{SP_FILTER} and appId eq '{app_id}'")
    assert [e["servicePrincipalCredentialKeyId"] for e in events] == [new["keyId"], ""]
    sb.control.set_actor_secret(actor["name"], key_id=new["keyId"])
    sb.control.expire_secret(app_id, new["keyId"])
    [expired] = sb.control.tick_actors(actor["name"])
    assert expired["error_code"] == 7000222


def test_ews_actor_and_stop_start(sb):
    app_id, _ = new_app(sb, application_permissions={"exchange": ["full_access_as_app"]})
    box = new_mailbox(sb, type="shared", messages=[{"subject": "x"}])
    actor = sb.control.add_actor(TENANT, name=name(), app_id=app_id, protocol="ews", mailbox=box, interval_s="10m")
    assert actor["next_run"] and actor["interval_s"] == 600
    [result] = sb.control.tick_actors(actor["name"])
    assert result["ok"] and result["collected"] == 0 and unread(sb, box) == 1  # EWS: nothing to mark
    sb.control.stop_actor(actor["name"])
    assert actor["name"] not in [r["name"] for r in sb.control.tick_actors()]  # every running actor: not it
    sb.control.start_actor(actor["name"])
    assert actor["name"] in [r["name"] for r in sb.control.tick_actors()]
    sb.control.remove_actor(actor["name"])
    assert actor["name"] not in [a["name"] for a in sb.control.get_actors()["actors"]]


def test_actors_from_a_scenario_section(sb):
    tid = str(uuid.uuid4())
    domain = f"t{tid[:8]}.onmicrosoft.com"
    app_id = str(uuid.uuid4())
    sb.control.add_tenant(
        id=tid, domain=domain,
        users=[{"upn": f"desk@{domain}", "password": "P@ss-demo-1"}],
        apps=[{"app_id": app_id, "display_name": "helpdesk", "secrets": [{"value": "hd1Q~scenario", "end": "+30d"}],
               "redirect_uris": ["https://127.0.0.1:8080/auth/callback"],
               "delegated_permissions": {"exchange": ["POP.AccessAsUser.All"]}}],
        exchange={"mailboxes": [{"address": f"desk@{domain}", "messages": [{"subject": "hi"}]}]},
        actors=[{"name": f"helpdesk-{tid[:6]}", "app_id": app_id, "flow": "delegated", "protocol": "pop",
                 "mailbox": f"desk@{domain}", "account": f"desk@{domain}", "interval_s": None,
                 "signed_in_at": "-3d"}])
    [result] = sb.control.tick_actors(f"helpdesk-{tid[:6]}")
    assert result["ok"] and result["collected"] == 1, result
    state = sb.control.state()
    assert any(a["name"] == f"helpdesk-{tid[:6]}" and a["secret_hint"] == "hd1" for a in state["actors"])
