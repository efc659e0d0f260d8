"""Who changed it (issue 16): the sign-in poll reads each tenant's directory audit log (Graph auditLogs/directoryAudits,
every edition) once per poll, keeps the changes to monitored apps (consent, credentials, the service principal,
owners) once by event id, and hands the ones that explain a diagnosis to the alerts, from the stored rows, on SQLite
and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import yaml
from cryptography.fernet import Fernet

from mailwarden.monitor import audits
from mailwarden.monitor.models import DirectoryAuditRecord
from tests.monitor.signin_world import make_world, sb, world  # noqa: F401 - the module's sandbox and its worlds

TENANT, APP = "11111111-2222-3333-4444-555555555555", "66666666-7777-8888-9999-000000000000"
T0 = datetime(2026, 12, 1, 9, 14, tzinfo=UTC)


def _stored(w) -> list[DirectoryAuditRecord]:
    return w.rt.store.signins.directory_audits_of([w.tenant_id], w.apps["daemon"]) + \
        w.rt.store.signins.directory_audits_of([w.tenant_id], w.apps["helpdesk"])


def _key_of(w, app: str) -> str:
    [tenant] = [t for t in w.ctl.state()["tenants"] if t["id"] == w.tenant_id]
    [entry] = [a for a in tenant["apps"] if a["app_id"] == w.apps[app]]
    return entry["secrets"][0]["keyId"]


@pytest.fixture
def stored_world(sb, tmp_path, database_url):  # noqa: F811
    """A world on SQLite or PostgreSQL (which needs a shared token key)."""
    w = make_world(sb, tmp_path, database=database_url, actors=False)
    (w.dir / "secrets" / "token_key").write_text(Fernet.generate_key().decode())
    doc = yaml.safe_load(w.config_path.read_text())
    w.config_path.write_text(yaml.safe_dump({**doc, "token_key": "file:secrets/token_key"}))
    w.open()
    yield w
    w.runtime.close()


def test_the_poll_stores_changes_to_monitored_apps_once_and_counts_its_request_apart(stored_world):
    w = stored_world
    other = w.ctl.add_app(w.tenant_id, display_name="payroll", application_permissions={"graph": ["Mail.Send"]})
    w.ctl.remove_app_permission(w.apps["daemon"], "graph", "Mail.ReadWrite", actor="admin@contoso.com")
    w.ctl.delete_secret(w.apps["helpdesk"], _key_of(w, "helpdesk"), actor=w.apps["monitor"])  # an app did it
    w.ctl.remove_app_permission(other["app_id"], "graph", "Mail.Send", actor="admin@contoso.com")
    w.ctl.disable_app(other["app_id"], actor="admin@contoso.com")

    first = w.poll()
    assert first.requests == 3  # the sign-in log's: daemon's app-only, helpdesk's two event types
    # the directory audit log: one read, and the object ids of the two monitored apps looked up once (two GETs each)
    assert first.audit_requests == 1 + 2 * 2
    rows = _stored(w)
    assert first.audits_stored == 2 and len(rows) == 2
    consent = next(r for r in rows if r.app_id == w.apps["daemon"])
    assert (consent.change, consent.subject, consent.initiator_upn, consent.target) == \
        ("consent_removed", "Mail.ReadWrite (application permission)", "admin@contoso.com", "service_principal")
    secret = next(r for r in rows if r.app_id == w.apps["helpdesk"])
    assert secret.change == "credential_removed" and _key_of(w, "daemon") not in (secret.subject or "")
    assert (secret.initiator_app_id, secret.initiator_name, secret.target) == \
        (w.apps["monitor"], "mailwarden monitor", "application")
    assert not w.rt.store.signins.directory_audits_of([w.tenant_id], other["app_id"])  # not a monitored app

    second = w.poll()  # the overlap is read again: nothing stored twice, one request (the ids are known)
    assert second.audit_requests == 1 and second.audits_read >= 2 and second.audits_stored == 0
    assert len(_stored(w)) == 2
    assert second.requests == 3


def test_an_unlicensed_tenant_gets_the_directory_changes_without_its_sign_ins(world):  # noqa: F811
    w = world(licence="free", integrations=("daemon",), actors=False)
    w.ctl.remove_app_permission(w.apps["daemon"], "graph", "Mail.ReadWrite", actor="admin@contoso.com")
    report = w.poll()
    assert report.states == {"t": "unlicensed"}  # the sign-in log needs Entra ID P1/P2, as before
    assert "P1 or P2" in w.rt.signins.tenant_notes()["t"]
    integ = w.rt.config.integration("daemon")
    [found] = audits.evidence(w.rt.store, w.rt.config, integ, "consent_missing", datetime.now(UTC))
    assert (found.who(), found.what()) == ("admin@contoso.com", "Admin consent to Mail.ReadWrite (application "
                                                                "permission) removed")


def test_without_auditlog_read_the_tenant_keeps_its_one_note(world):  # noqa: F811
    w = world(integrations=("daemon",), monitor_roles=["Application.Read.All", "Directory.Read.All"], actors=False)
    w.ctl.remove_app_permission(w.apps["daemon"], "graph", "Mail.ReadWrite", actor="admin@contoso.com")
    w.poll()
    notes = w.rt.signins.tenant_notes()
    assert list(notes) == ["t"] and "AuditLog.Read.All" in notes["t"] and "directory audit" not in notes["t"].lower()
    assert not _stored(w)
    assert audits.load_poll(w.rt.store, w.tenant_id).state == "forbidden"


def _row(audit_id: str, at: datetime, change: str = "consent_removed", target: str = "service_principal",
         tenant: str = TENANT, app: str = APP) -> dict:
    return dict(audit_id=audit_id, tenant_id=tenant, app_id=app, target=target, change=change,
                activity="Remove delegated permission grant", activity_at=at, subject="Mail.Read (delegated "
                "permission)", initiator_upn="admin@contoso.com", initiator_name=None, initiator_app_id=None,
                read_at=at)


def test_stored_changes_are_kept_once_read_by_window_and_pruned(store):
    assert store.signins.save_directory_audits([_row("a", T0), _row("b", T0 - timedelta(hours=50))]) == 2
    assert store.signins.save_directory_audits([_row("a", T0), _row("c", T0 + timedelta(minutes=1), "owner_removed",
                                                             "application")]) == 1
    assert store.signins.stored_audit_ids(["a", "x"]) == {"a"}
    newest = store.signins.directory_audits_of([TENANT.upper()], APP.upper(), ["consent_removed"],
                                               T0 - timedelta(hours=48), T0 + timedelta(minutes=2))
    assert [r.audit_id for r in newest] == ["a"]  # "b" is from before the window, "c" another change
    assert newest[0].activity_at == T0 and newest[0].activity_at.tzinfo is not None
    removed = store.signins.prune_signin_evidence(T0 + timedelta(days=13, hours=23), keep=timedelta(days=14))
    assert removed["directory_audits"] == 1 and store.signins.stored_audit_ids(["a", "b", "c"]) == {"a", "c"}


EVENT = {
    "id": "Directory_x_ABCDE_1", "result": "success", "activityDateTime": "2026-12-01T09:14:05.1234567Z",
    "initiatedBy": {"user": None, "app": {"appId": "app-9", "displayName": "Automation", "servicePrincipalId": "s9"}},
}


def _event(activity: str, targets: list[dict]) -> dict:
    return {**EVENT, "activityDisplayName": activity, "targetResources": targets}


def _prop(name: str, old: str | None, new: str | None) -> dict:
    return {"displayName": name, "oldValue": old, "newValue": new}


APPS = [audits.AppIds(APP, "obj-app", "obj-sp")]


@pytest.mark.parametrize("dash", ["\u2013", "-"], ids=["en dash (captured events)", "hyphen (reference table)"])
def test_a_removed_secret_is_classified_whichever_dash_the_activity_has(dash):
    keys = ('["[KeyIdentifier=k1,KeyType=Password,KeyUsage=Verify,DisplayName=prod]",'
            '"[KeyIdentifier=k2,KeyType=Password,KeyUsage=Verify,DisplayName=]"]')
    event = _event(f"Update application {dash} Certificates and secrets management", [
        {"id": "obj-app", "type": "Application", "modifiedProperties": [
            _prop("KeyDescription", keys, '["[KeyIdentifier=k2,KeyType=Password,KeyUsage=Verify,DisplayName=]"]')]}])
    row = audits.classify(event, APPS, TENANT, T0)
    assert (row["change"], row["subject"], row["target"]) == \
        ("credential_removed", 'Client secret "prod" (k1)', "application")
    assert (row["initiator_app_id"], row["initiator_name"], row["initiator_upn"]) == ("app-9", "Automation", None)
    assert row["activity_at"] == datetime(2026, 12, 1, 9, 14, 5, 123456, tzinfo=UTC)


def test_only_changes_that_change_something_of_a_monitored_app_are_kept():
    disabled = _event("Update service principal", [{"id": "obj-sp", "type": "ServicePrincipal", "modifiedProperties": [
        _prop("AccountEnabled", "[true]", "[false]"), _prop("Included Updated Properties", None, '"AccountEnabled"')]}])
    assert audits.classify(disabled, APPS, TENANT, T0)["change"] == "sp_disabled"
    assert audits.classify({**disabled, "result": "failure"}, APPS, TENANT, T0) is None  # nothing changed
    assert audits.classify(disabled, [audits.AppIds("another", "o2", "s2")], TENANT, T0) is None  # another app
    bare = _event("Update application", [{"id": "obj-app", "type": "Application", "modifiedProperties": []}])
    assert audits.classify(bare, APPS, TENANT, T0) is None  # the companion of a credential change
    # a grant removed from the resource's service principal names the client by a property, not as a target
    removed = _event("Remove app role assignment from service principal", [
        {"id": "graph-sp", "type": "ServicePrincipal", "modifiedProperties": [
            _prop("AppRole.Value", '"Mail.ReadWrite"', None), _prop("ServicePrincipal.ObjectID", '"obj-sp"', None)]}])
    assert audits.classify(removed, APPS, TENANT, T0)["subject"] == "Mail.ReadWrite (application permission)"
    assert audits.classify(removed, [audits.AppIds(APP)], TENANT, T0) is None  # its object ids not known
    # a monitored app as the resource of another client's grant is not the app whose consent changed
    assert audits.classify(removed, [audits.AppIds("res", None, "graph-sp")], TENANT, T0) is None
