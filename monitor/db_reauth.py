"""The reauthorisation tables' repository (``store.reauth``, ``monitor.db``).

When a request opens and closes with a result is the result pipeline's rule (``monitor.pipeline.ReauthRequests``),
applied inside the transaction that records the result through ``open_reauth_in`` / ``close_reauth_in``. One
request is open per integration (the unique ``open_key``). It closes when the sign-in succeeds (the callback), when
the next token check is good again, or when its link expires and a new failing result opens the next one.
ReauthAttempt rows are the audit, and hold a started sign-in's MSAL flow (encrypted) until the callback claims it,
once.
"""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select as core_select
from sqlalchemy import update as core_update
from sqlmodel import col, select

from mailwarden.monitor.db_repository import Repository
from mailwarden.monitor.models import Integration, ReauthAttempt, ReauthRequest, table_of
from mailwarden.redact import redact

_REQ = table_of(ReauthRequest)
_INTEG = table_of(Integration)


class ReauthRepository(Repository):
    """Reauthorisation requests and attempts (``store.reauth``)."""

    reauth_link_ttl: timedelta = timedelta(days=7)  # runtime sets it from web.reauth_link_ttl

    # -- requests ------------------------------------------------------------------------------------
    def open_reauth_in(self, conn: Any, integration: str, code: str | None, now: datetime) -> int | None:
        """Open (or find the open) request of a delegated integration within the caller's transaction ``conn``; its id,
        or None for an app-only integration (nobody to sign in). A request whose link expired is closed and a new one
        opened, with a new link for the next alert."""
        row = conn.execute(core_select(_REQ.c.id, _REQ.c.expires_at).where(_REQ.c.open_key == integration)).first()
        if row is not None and row.expires_at > now:
            return row.id
        integ = conn.execute(core_select(_INTEG.c.flow, _INTEG.c.account)
                             .where(_INTEG.c.name == integration)).first()
        if integ is None or integ.flow != "delegated":
            return None  # app-only tokens: nobody to sign in
        if row is not None:  # its link expired: a new request, with a new link for the next alert
            conn.execute(core_update(_REQ).where(_REQ.c.id == row.id)
                         .values(open_key=None, closed_at=now, closed_by="expired"))
        conn.execute(self._insert()(ReauthRequest).values(
            integration=integration, open_key=integration, account=integ.account, code=code,
            nonce=secrets.token_urlsafe(24), opened_at=now, expires_at=now + self.reauth_link_ttl)
            .on_conflict_do_nothing(index_elements=["open_key"]))
        found = conn.execute(core_select(_REQ.c.id).where(_REQ.c.open_key == integration)).first()
        return found.id if found else None

    def close_reauth_in(self, conn: Any, integration: str, by: str, now: datetime) -> None:
        """Close the integration's open request, if any, within the caller's transaction ``conn``."""
        conn.execute(core_update(_REQ).where(_REQ.c.open_key == integration)
                     .values(open_key=None, closed_at=now, closed_by=by))

    def open_reauth_request(self, integration: str, code: str | None, now: datetime) -> ReauthRequest | None:
        """Open (or return the open) request of a delegated integration; None for an app-only one."""
        with self._connection(write=True) as conn:
            rid = self.open_reauth_in(conn, integration, code, now)
        return self.get_reauth_request(rid) if rid is not None else None

    def get_reauth_request(self, request_id: int) -> ReauthRequest | None:
        with self._session() as s:
            return s.get(ReauthRequest, request_id)

    def open_reauth_requests(self, integration: str | None = None) -> list[ReauthRequest]:
        stmt = select(ReauthRequest).where(col(ReauthRequest.open_key).is_not(None)).order_by(col(ReauthRequest.id))
        if integration is not None:
            stmt = stmt.where(ReauthRequest.integration == integration)
        with self._session() as s:
            return list(s.exec(stmt))

    def reauth_requests(self, integration: str | None = None) -> list[ReauthRequest]:
        stmt = select(ReauthRequest).order_by(col(ReauthRequest.id))
        if integration is not None:
            stmt = stmt.where(ReauthRequest.integration == integration)
        with self._session() as s:
            return list(s.exec(stmt))

    def close_reauth_request(self, request_id: int, by: str, now: datetime) -> bool:
        with self._session(write=True) as s:
            row = s.get(ReauthRequest, request_id)
            if row is None or row.open_key is None:
                return False
            row.open_key, row.closed_at, row.closed_by = None, now, by
            s.add(row)
        return True

    # -- attempts (the audit) ------------------------------------------------------------------------
    def start_reauth_attempt(self, req: ReauthRequest, *, client: str | None, state_hash: str, flow: bytes,
                             now: datetime) -> int:
        """A started sign-in; an earlier unfinished one of the same request can no longer complete."""
        with self._session(write=True) as s:
            for old in s.exec(select(ReauthAttempt).where(ReauthAttempt.request_id == req.id,
                                                          col(ReauthAttempt.flow).is_not(None))):
                old.flow, old.state_hash, old.result, old.finished_at = None, None, "superseded", now
                s.add(old)
            s.flush()
            row = ReauthAttempt(request_id=req.id, integration=req.integration, client=client,
                                state_hash=state_hash, flow=flow, result="started", started_at=now)
            s.add(row)
            s.flush()
            assert row.id is not None  # the flush inserted the row and set its id
            return row.id

    def claim_reauth_attempt(self, state_hash: str, now: datetime) -> ReauthAttempt | None:
        """The started sign-in this state belongs to, with its flow, at most once: the flow and the state are
        cleared in the same transaction, so a second callback with the same state finds nothing."""
        with self._session(write=True) as s:
            row = s.exec(select(ReauthAttempt).where(ReauthAttempt.state_hash == state_hash,
                                                     col(ReauthAttempt.flow).is_not(None))
                         .with_for_update()).first()
            if row is None:
                return None
            claimed = ReauthAttempt.model_validate(row.model_dump())
            row.flow, row.state_hash, row.result = None, None, "redeeming"
            s.add(row)
        return claimed

    def finish_reauth_attempt(self, attempt_id: int, result: str, now: datetime, *, signed_in_as: str | None = None,
                              detail: str = "") -> None:
        with self._session(write=True) as s:
            row = s.get(ReauthAttempt, attempt_id)
            if row is None:
                return
            row.result, row.signed_in_as, row.detail, row.finished_at = result, signed_in_as, redact(detail), now
            row.flow = row.state_hash = None
            s.add(row)

    def record_reauth_attempt(self, *, request_id: int | None, integration: str | None, client: str | None,
                              result: str, detail: str, now: datetime) -> None:
        """A refused visit (expired or used link, unknown state): audited, nothing started."""
        with self._session(write=True) as s:
            s.add(ReauthAttempt(request_id=request_id, integration=integration, client=client, result=result,
                                detail=redact(detail), started_at=now, finished_at=now))

    def reauth_attempts(self, integration: str | None = None) -> list[ReauthAttempt]:
        stmt = select(ReauthAttempt).order_by(col(ReauthAttempt.id))
        if integration is not None:
            stmt = stmt.where(ReauthAttempt.integration == integration)
        with self._session() as s:
            return list(s.exec(stmt))
