"""Control ops of the consuming systems' actors (sandbox.actors), registered in `sandbox.ops.OPS`."""

from __future__ import annotations

import datetime as dt

from . import actors, logs
from .errors import AADError
from .grants import parse_scopes
from .ops import op, revoke_user_sessions
from .scenario import parse_when
from .state import State, new_id


def _actor(state: State, name: str) -> actors.Actor:
    actor = state.actors.get(name)
    if actor is None:
        raise KeyError(f"no actor {name}")
    return actor


def _runner(state: State) -> actors.ActorRunner:
    if state.actor_runner is None:
        raise ValueError("actors run only in a started Sandbox")
    return state.actor_runner


@op
def add_actor(state: State, tenant: str, **spec) -> dict:
    """A consuming system: name, app_id, flow (app | delegated), protocol (pop | imap | graph | ews), mailbox,
    account (delegated), secret / secret_key_id (default: the app's newest valid secret), interval_s (null: only
    tick_actors runs it), scopes, signed_in_at ('-30d'; null: not signed in), running, imap_action, source_address."""
    return actors.add_actor(state, state.require_tenant(tenant).id, spec).status()


@op
def remove_actor(state: State, name: str) -> dict:
    with state.lock:
        _actor(state, name)
        del state.actors[name]
    return {"removed": name}


@op
def get_actors(state: State, name: str | None = None) -> dict:
    with state.lock:
        if name is not None:
            return _actor(state, name).status()
        return {"actors": [a.status() for a in state.actors.values()]}


@op
def stop_actor(state: State, name: str) -> dict:
    """The consuming system is switched off: no more rounds (tick_actors with its name still runs one)."""
    with state.lock:
        actor = _actor(state, name)
        actor.running = False
        return actor.status()


@op
def start_actor(state: State, name: str) -> dict:
    with state.lock:
        actor = _actor(state, name)
        actor.running = True
        if actor.interval_s is not None:
            actor.next_run = state.now() + dt.timedelta(seconds=actor.interval_s)
        return actor.status()


@op
def set_actor_secret(state: State, name: str, value: str | None = None, key_id: str | None = None) -> dict:
    """What the consuming system has configured as its secret: a value (e.g. a stale one, or the Secret ID pasted
    by mistake), the value of one of the app's secrets (key_id), or, with neither, the app's newest valid secret
    (an admin updating the system after a rotation)."""
    with state.lock:
        actor = _actor(state, name)
        tenant = state.tenants[actor.tenant_id]
        if value is None and key_id is not None:
            app = tenant.apps[actor.app_id]
            secret = next((s for s in app.secrets if s.key_id == key_id), None)
            if secret is None:
                raise KeyError(f"no secret {key_id} on app {actor.app_id}")
            value = secret.value
        elif value is None:
            value = actors.newest_secret(state, tenant, actor.app_id)
        actor.secret = value
        return actor.status()


@op
def revoke_actor_token(state: State, name: str, how: str = "sessions", actor: str | None = None) -> dict:
    """The actor's refresh token stops working, as Entra decides: `sessions` revokes the account's sessions
    (revokeSignInSessions: 50173 on the next refresh, for every client of that account); `token` expires only this
    actor's refresh token (70008)."""
    with state.lock:
        who = _actor(state, name)
        if who.flow != "delegated" or who.refresh_token is None:
            raise ValueError(f"actor {name} holds no refresh token")
        if how == "sessions":
            revoke_user_sessions(state, who.account, actor=actor)
        elif how == "token":
            rt = state.refresh_tokens.get(who.refresh_token)
            if rt is not None:
                rt.expires_at = state.now() - dt.timedelta(seconds=1)
        else:
            raise ValueError("how must be sessions or token")
        return who.status()


@op
def actor_sign_in(state: State, name: str, at: str | None = None) -> dict:
    """Someone signs the consuming system in again (its reauthorisation): a new refresh token from an interactive
    sign-in now (or `at`), logged as one."""
    with state.lock:
        who = _actor(state, name)
        if who.flow != "delegated":
            raise ValueError(f"actor {name} is app-only: it has no sign-in")
        when = parse_when(at, state.now()) if at else state.now()
        actors.issue_refresh_token(state, who, when)
        tenant = state.tenants[who.tenant_id]
        ctx = logs.SignInContext(correlation_id=new_id(), event_type=logs.INTERACTIVE, tenant=tenant,
                                 app=tenant.apps.get(who.app_id), upn=who.account, client_app=logs.BROWSER)
        try:
            ctx.resource = parse_scopes(who.scopes, tenant).resource
        except AADError:
            pass
        user = tenant.users.get(who.account.lower())
        ctx.mfa = bool(user and user.mfa == "required")
        logs.record(state, ctx, created=when)
        return who.status()


@op
def tick_actors(state: State, name: str | None = None) -> dict:
    """One round of every running actor (or of the named one, running or not) now, synchronously: the results."""
    return {"results": _runner(state).tick(name)}
