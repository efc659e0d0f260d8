"""The sign-in evidence tables, on SQLite and PostgreSQL: mailwarden's own token requests recorded before they are
sent and kept across a restart for 72 hours, events stored once by id, labels, poll states and retention."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import requests

from mailwarden.checks.replies import CLIENT_REQUEST_ID, TokenRequest, record_token_requests
from mailwarden.errors import StorageError
from mailwarden.monitor.db import open_store
from mailwarden.monitor.db_signins import OwnRequestRecorder

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
TENANT, APP = "11111111-2222-3333-4444-555555555555", "66666666-7777-8888-9999-000000000000"


@pytest.fixture
def url(database_url):
    return database_url


@pytest.fixture
def store(url):
    s = open_store(url)
    yield s
    s.close()


def own(cid: str, at: datetime = T0) -> TokenRequest:
    return TokenRequest(cid, TENANT, APP, at)


def event(sid: str, at: datetime, *, cid: str | None = None, upn: str | None = "helpdesk@contoso.com",
          event_type: str = "nonInteractiveUser", origin: str = "consumer") -> dict:
    return dict(signin_id=sid, tenant_id=TENANT, app_id=APP, event_type=event_type, created_at=at,
                user_principal_name=upn, error_code=0, failure_reason="Other.", credential_key_id=None,
                correlation_id=cid or f"c-{sid}", origin=origin, read_at=at)


class _Answer(requests.adapters.BaseAdapter):
    """The token endpoint, in-process: it asks the store whether the request was recorded before it arrived."""

    def __init__(self, store):
        super().__init__()
        self.store, self.seen = store, []

    def send(self, request, **kwargs):
        rid = request.headers.get(CLIENT_REQUEST_ID)
        self.seen.append((rid, rid in self.store.signins.own_correlation_ids([rid])))
        resp = requests.Response()
        resp.status_code, resp._content, resp.url = 200, b"{}", request.url
        return resp

    def close(self):
        pass


def test_a_token_request_is_in_the_database_before_it_is_sent_and_survives_a_restart(url, store):
    recorder = OwnRequestRecorder(store)
    session = record_token_requests(requests.Session(), recorder)
    answer = _Answer(store)
    session.mount("https://", answer)
    token_url = f"https://login.microsoftonline.com/{TENANT}/oauth2/v2.0/token"
    session.post(token_url, data={"client_id": APP.upper(), "grant_type": "client_credentials"},
                 headers={CLIENT_REQUEST_ID: "msal-made-this"})
    session.post(token_url, data={"client_id": APP})  # no client-request-id: mailwarden gives it one
    session.get(token_url.replace("/token", "/authorize"))  # not a token request
    session.post("https://graph.microsoft.com/v1.0/users/x/sendMail", data="{}")  # not a token request
    assert [seen for _, seen in answer.seen[:2]] == [True, True] and len(answer.seen) == 4
    store.close()

    again = open_store(url)  # a restart: a new Store on the same database
    try:
        rows = again.signins.own_requests()
        assert [(r.correlation_id, r.tenant, r.client_id, r.generated) for r in rows] == [
            ("msal-made-this", TENANT, APP, False), (answer.seen[1][0], TENANT, APP, True)]
        assert again.signins.own_correlation_ids(["msal-made-this", "someone-elses"]) == {"msal-made-this"}
    finally:
        again.close()


def test_own_requests_are_kept_48_hours_and_pruned_after_72(store):
    store.signins.record_own_requests([own("a", T0), own("b", T0 + timedelta(hours=30))])
    store.signins.record_own_requests([own("a", T0)])  # once per correlation id
    assert store.signins.prune_signin_evidence(T0 + timedelta(hours=48), keep=timedelta(days=14))["own_requests"] == 0
    assert store.signins.own_correlation_ids(["a", "b"]) == {"a", "b"}
    assert store.signins.prune_signin_evidence(T0 + timedelta(hours=73), keep=timedelta(days=14))["own_requests"] == 1
    assert store.signins.own_correlation_ids(["a", "b"]) == {"b"}


def test_events_are_stored_once_by_id_and_pruned_after_keep(store):
    assert store.signins.save_signins([event("1", T0), event("2", T0 + timedelta(minutes=5))]) == 2
    assert store.signins.save_signins([event("2", T0 + timedelta(minutes=5)), event("3", T0 + timedelta(days=2))]) == 1
    assert store.signins.count_signins() == 3
    newest = store.signins.signins_of(TENANT, APP, ["nonInteractiveUser"], account="HelpDesk@Contoso.com")
    assert [r.signin_id for r in newest] == ["3", "2", "1"]  # newest first; the account case-insensitively
    assert store.signins.signins_of(TENANT, APP, ["servicePrincipal"]) == []
    removed = store.signins.prune_signin_evidence(T0 + timedelta(days=15), keep=timedelta(days=14))
    assert removed["signins"] == 2
    assert [r.signin_id for r in store.signins.signins_of(TENANT, APP, ["nonInteractiveUser"])] == ["3"]


def test_relabel_makes_late_recorded_own_requests_and_windows_count(store):
    store.signins.save_signins([event("mine", T0, cid="c-late"), event("browser", T0 + timedelta(minutes=1),
                                                                 event_type="interactiveUser"),
                        event("theirs", T0 + timedelta(hours=2)),
                        event("daemon", T0 + timedelta(minutes=1), upn=None, event_type="servicePrincipal")])
    store.signins.record_own_requests([own("c-late")])  # written after the poll stored its sign-in (database was down)
    wid = store.signins.open_reauth_window(integration="helpdesk", tenant_id=TENANT, client_id=APP,
                                   account="HelpDesk@contoso.com", source="web", now=T0 - timedelta(minutes=1),
                                   ttl=timedelta(hours=1))
    store.signins.close_reauth_window(T0 + timedelta(minutes=3), window_id=wid)
    windows = store.signins.reauth_windows(T0 - timedelta(hours=1))
    assert [(w.account, w.ends_at) for w in windows] == [("helpdesk@contoso.com", T0 + timedelta(minutes=3))]
    assert store.signins.relabel_signins(T0 - timedelta(hours=1), windows) == 2
    origins = {r.signin_id: r.origin for r in store.signins.signins_of(
        TENANT, APP, ["interactiveUser", "nonInteractiveUser", "servicePrincipal"])}
    assert origins == {"mine": "own", "browser": "unconfirmed", "theirs": "consumer", "daemon": "consumer"}


def test_poll_states_upsert_and_coverage_follows_retention(store):
    key = dict(tenant_id=TENANT, event_type="servicePrincipal", app_id=APP)
    store.signins.save_signin_polls([dict(**key, state="ok", note=None, checked_at=T0, last_success_at=T0,
                                  covered_from=T0 - timedelta(days=1), read_until=T0)])
    store.signins.save_signin_polls([dict(**key, state="error", note="429", checked_at=T0 + timedelta(minutes=5))])
    [poll] = store.signins.signin_polls().values()
    assert (poll.state, poll.note, poll.read_until, poll.last_success_at) == ("error", "429", T0, T0)  # kept
    store.signins.prune_signin_evidence(T0 + timedelta(days=14), keep=timedelta(days=14))
    assert store.signins.signin_polls(TENANT)[(TENANT, "servicePrincipal", APP)].covered_from == T0


def test_the_recorder_keeps_requests_in_memory_while_the_database_is_down(store):
    recorder = OwnRequestRecorder(_Down())
    recorder(own("kept"))
    assert recorder.pending_ids() == {"kept"}  # the poller matches these from memory meanwhile
    recorder.store = store
    recorder(own("next"))  # the database was down just now: not tried again from a token request at once
    assert recorder.pending_ids() == {"kept", "next"}
    recorder._retry_at = 0.0  # RETRY_S later
    recorder(own("later"))  # writes all three
    assert recorder.pending_ids() == set()
    assert store.signins.own_correlation_ids(["kept", "next", "later"]) == {"kept", "next", "later"}


class _DownSignIns:
    def record_own_requests(self, rows):
        raise StorageError("database down")


class _Down:
    """A store whose database is down."""

    signins = _DownSignIns()
