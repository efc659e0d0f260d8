"""Automated rotation of an app's client secret (opt-in per app: ``apps.<name>.rotation.automated``).

Steps, each written to the rotation audit and alerted on failure:
1. ``addPassword`` on the app through the tenant's monitor_app (Application.ReadWrite.OwnedBy and an owner of
   the app, or Application.ReadWrite.All). The value is registered with the redactor the moment it arrives.
2. Hand it over: to the configured hook (a command reading it on stdin, and/or an HTTPS webhook), then to
   mailwarden's own ``file:`` reference (written atomically, 0600; references are re-read on every run).
   A hook that fails rolls the new secret back (``removePassword`` of it): nobody else holds it.
3. Verify a token with the new secret (Entra may take a moment to replicate: retried next cycle).
4. After ``remove_old_after_days``, and only when mailwarden's configured secret no longer matches the old
   credential and every token check of the app has passed since the switch: ``removePassword`` of the old.
The secret lives only in this process's memory, the hook and the reference file: never logs, DB or alerts.
"""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from mailwarden.monitor.config import Config
from mailwarden.monitor.credentials import CredentialReader, match
from mailwarden.monitor.models import Rotation
from mailwarden.monitor.rotation import Observation, Step
from mailwarden.monitor.tokens import TokenProvider
from mailwarden.redact import redact, register_secret

log = logging.getLogger("mailwarden.rotation")
RETRY_AFTER_FAILURE = timedelta(days=1)


class StepFailed(Exception):
    pass


class AutoRotator:
    def __init__(self, config: Config, tokens: TokenProvider, reader: CredentialReader,
                 clock: Callable[[], datetime], *, use: Callable[..., Any] | None = None):
        self.config = config
        self.tokens = tokens
        self.reader = reader
        self.clock = clock
        # the consuming system's own use of a credential: async (app, key_id, moved_at) -> a verdict with .state
        # (used | unused | unknown) and .text (monitor.credential_use); None: not known in this process
        self.use = use

    # -- Graph -----------------------------------------------------------------------------------
    async def _graph(self, app_name: str, action: str, body: dict[str, Any]) -> httpx.Response:
        app = self.config.apps[app_name]
        monitor_app = self.config.tenants[app.tenant].monitor_app
        if not monitor_app:
            raise StepFailed(f"tenant {app.tenant} names no monitor_app to call Graph with")
        ep = self.tokens.endpoints
        result = await asyncio.to_thread(self.tokens.app_token, monitor_app, ep.graph_resource, fresh=True)
        if "access_token" not in result:
            raise StepFailed(f"the monitor app {monitor_app} got no Graph token "
                             f"({(result.get('error_codes') or ['?'])[0]}: {result.get('error')})")
        url = f"{ep.graph.rstrip('/')}/applications(appId='{app.client_id}')/{action}"
        async with httpx.AsyncClient(verify=ep.verify, trust_env=not ep.ca_bundle, timeout=30.0) as http:
            try:
                r = await http.post(url, json=body, headers={"Authorization": f"Bearer {result['access_token']}"})
            except httpx.HTTPError as exc:
                raise StepFailed(f"Graph {action} failed: {type(exc).__name__}: {redact(exc)}") from None
        if r.status_code >= 300:
            try:
                err = r.json().get("error", {})
            except ValueError:
                err = {}
            hint = " (the monitor app needs Application.ReadWrite.OwnedBy and to be an owner of the app, or " \
                   "Application.ReadWrite.All)" if r.status_code == 403 else ""
            raise StepFailed(f"Graph {action} answered {r.status_code} {err.get('code', '')}: "
                             f"{redact(err.get('message', ''))}{hint}")
        return r

    # -- the steps -------------------------------------------------------------------------------
    async def start(self, app_name: str, row: Rotation) -> list[Step]:
        """addPassword, hand the value over, write mailwarden's reference. The row records what happened."""
        app = self.config.apps[app_name]
        now = self.clock()
        end = now + timedelta(days=app.rotation.lifetime_days)
        try:
            spec = {"displayName": f"mailwarden rotation {now:%Y-%m-%d}",
                    "endDateTime": end.strftime("%Y-%m-%dT%H:%M:%SZ")}
            r = await self._graph(app_name, "addPassword", {"passwordCredential": spec})
        except StepFailed as exc:
            return self._failed(row, "add_password", str(exc))
        created = r.json()
        secret = str(created.get("secretText") or "")
        register_secret(secret)  # before anything can print it
        key_id = str(created.get("keyId"))
        row.new_key_id, row.new_hint = key_id, created.get("hint")
        steps = [Step("auto_add_password", f"addPassword created keyId {key_id} (hint {row.new_hint}..., ends "
                      f"{end:%Y-%m-%d})")]
        try:
            steps += await self._hand_over(app_name, row, secret, end)
        except StepFailed as exc:
            del secret
            steps += self._failed(row, "hand_over", str(exc))
            try:
                await self._graph(app_name, "removePassword", {"keyId": key_id})
                steps.append(Step("auto_rollback", f"removed the new secret {key_id} again: nothing holds it"))
            except StepFailed as exc2:
                steps.append(Step("auto_rollback", f"the new secret {key_id} could not be removed: {exc2}; delete "
                                  "it in the portal", ok=False, notice="auto_failed"))
            row.new_key_id = row.new_hint = None
            return steps
        del secret
        row.automated, row.auto_step, row.auto_error, row.updated_at = True, "handed_over", None, now
        return steps + await self.verify(app_name, row)

    async def _hand_over(self, app_name: str, row: Rotation, secret: str, end: datetime) -> list[Step]:
        app = self.config.apps[app_name]
        cfg = app.rotation
        steps = []
        meta = {"app": app_name, "client_id": app.client_id, "key_id": row.new_key_id, "hint": row.new_hint,
                "end": end.isoformat()}
        if cfg.hook_command:
            env = {**os.environ, "MAILWARDEN_APP": app_name, "MAILWARDEN_CLIENT_ID": app.client_id,
                   "MAILWARDEN_KEY_ID": str(row.new_key_id), "MAILWARDEN_SECRET_END": end.isoformat()}
            try:
                done = await asyncio.to_thread(subprocess.run, cfg.hook_command, input=secret + "\n", text=True,
                                               capture_output=True, timeout=cfg.hook_timeout, env=env,
                                               cwd=self.config.base_dir)
            except (OSError, subprocess.SubprocessError) as exc:
                raise StepFailed(f"hook command {cfg.hook_command[0]} failed: {type(exc).__name__}: "
                                 f"{redact(exc)}") from None
            if done.returncode != 0:
                raise StepFailed(f"hook command {cfg.hook_command[0]} exited {done.returncode}: "
                                 f"{redact((done.stderr or done.stdout or '').strip())[-500:]}")
            steps.append(Step("auto_hook_command", f"hook command {cfg.hook_command[0]} took the new secret"))
        if cfg.hook_url:
            try:
                async with httpx.AsyncClient(timeout=cfg.hook_timeout) as http:
                    r = await http.post(cfg.hook_url, json={**meta, "secret": secret})
            except httpx.HTTPError as exc:
                raise StepFailed(f"hook URL failed: {type(exc).__name__}: {redact(exc)}") from None
            if r.status_code >= 300:
                raise StepFailed(f"hook URL answered HTTP {r.status_code}")
            steps.append(Step("auto_hook_url", f"hook URL {httpx.URL(cfg.hook_url).host} took the new secret"))
        path = self._reference_path(app_name)
        try:
            write_secret_file(path, secret)
        except OSError as exc:
            raise StepFailed(f"mailwarden's reference {path} cannot be written ({exc.strerror})") from None
        steps.append(Step("auto_reference", f"wrote the new secret to mailwarden's reference {app.secret}"))
        return steps

    def _reference_path(self, app_name: str) -> Path:
        ref = str(self.config.apps[app_name].secret)
        p = Path(ref.removeprefix("file:")).expanduser()
        return p if p.is_absolute() else self.config.base_dir / p

    async def verify(self, app_name: str, row: Rotation) -> list[Step]:
        """A token with the new secret, read from the reference as every run does. A new secret is refused
        (AADSTS7000215, rarely 7000222) for seconds to about two minutes while it replicates (M365_FACTS.md): within
        ``defaults.replication_grace`` of the hand-over such a refusal is waited out here, not reported."""
        ep = self.tokens.endpoints
        grace = timedelta(seconds=float(self.config.defaults.replication_grace))
        handed_over = row.updated_at if row.updated_at.tzinfo else row.updated_at.replace(tzinfo=UTC)
        # measured on the monotonic clock from here on: the wait is real time, whatever the policy clock says
        deadline = time.monotonic() + (handed_over + grace - self.clock()).total_seconds()
        while True:
            try:
                result = await asyncio.to_thread(self.tokens.app_token, app_name, ep.graph_resource, fresh=True)
            except Exception as exc:  # noqa: BLE001 - a reference that cannot be read is a failed step
                return self._failed(row, "verify", f"{type(exc).__name__}: {redact(exc)}", keep_step=True)
            if "access_token" in result:
                break
            codes = result.get("error_codes") or ["?"]
            left = deadline - time.monotonic()
            if codes[0] in REPLICATING and left > 0:
                await asyncio.sleep(min(REPLICATION_POLL_S, left))
                continue
            return self._failed(row, "verify", f"no token with the new secret (AADSTS{codes[0]}); retried next "
                                "cycle", keep_step=True)
        now = self.clock()
        row.auto_step, row.auto_error, row.updated_at = "verified", None, now
        row.remove_after = now + timedelta(days=self.config.apps[app_name].rotation.remove_old_after_days)
        return [Step("auto_verified", f"a token was issued with the new secret; removal of the old one "
                     f"({row.key_id}) scheduled after {row.remove_after:%Y-%m-%d %H:%M} UTC")]

    async def remove_old(self, app_name: str, row: Rotation, obs: Observation) -> list[Step]:
        """removePassword of the old credential, refused while anything mailwarden knows still uses it."""
        refusal, evidence = await self.refusal(app_name, row, obs)
        if refusal:
            row.auto_error, row.updated_at = refusal, self.clock()
            return [Step("auto_remove_refused", refusal, ok=False, notice="auto_refused")]
        try:
            await self._graph(app_name, "removePassword", {"keyId": row.key_id})
        except StepFailed as exc:
            return self._failed(row, "remove_password", str(exc), keep_step=True)
        row.auto_step, row.auto_error, row.updated_at = "removed", None, self.clock()
        said = f"; the consuming system: {evidence}" if evidence else ""
        return [Step("auto_remove_password", f"removePassword removed the old credential {row.key_id}{said}")]

    async def refusal(self, app_name: str, row: Rotation, obs: Observation) -> tuple[str | None, str | None]:
        """(why the old credential is not removed, or None; what is known of the consuming system's use of it)."""
        why = await self._refused(app_name, row, obs)
        if why is not None or self.use is None:
            return why, None
        verdict = await self.use(app_name, row.key_id, row.in_use_at)
        if verdict.state == "used":
            field = next((i.secret_field for i in self.config.integrations if i.app == app_name and i.secret_field),
                         None)
            where = f" (its {field})" if field else ""
            return (f"refused: the old credential {row.key_id} is still in use: {verdict.text}. Put the new secret "
                    f"in the consuming system{where} first; removing it now would stop it"), verdict.text
        return None, verdict.text

    async def _refused(self, app_name: str, row: Rotation, obs: Observation) -> str | None:
        self.reader._cache.pop(app_name, None)  # a decision to delete is taken on a fresh read
        read = await self.reader.read(app_name)
        if not read.ok:
            return f"the app's credentials cannot be read ({read.reason}): not removing anything"
        try:
            configured = self.tokens.client_credential(app_name)
        except Exception as exc:  # noqa: BLE001
            return f"mailwarden's reference cannot be read ({redact(exc)}): not removing anything"
        if any(c.key_id == row.key_id for c in match(read.credentials, configured)):
            return (f"refused: the old credential {row.key_id} is still the one mailwarden's configured secret "
                    "matches, so an integration still uses it")
        if row.in_use_at is None or row.state != "in_use":
            return "refused: the new credential is not yet seen in use"
        if obs.last_ok_at is None or obs.last_ok_at < row.in_use_at:
            return "waiting: mailwarden's own token checks have not all passed with the new secret yet"
        return None

    def _failed(self, row: Rotation, step: str, why: str, *, keep_step: bool = False) -> list[Step]:
        if not keep_step:
            row.auto_step = "failed"
        row.auto_error, row.updated_at = f"{step}: {why}", self.clock()
        log.error("automated rotation step failed", extra={"app": row.app, "step": step, "error": redact(why)})
        return [Step(f"auto_{step}", why, ok=False, notice="auto_failed")]

    def due(self, row: Rotation, left_days: int | None, now: datetime) -> str | None:
        """Which step to run now, if any."""
        cfg = self.config.apps[row.app].rotation
        if not cfg.automated or row.state == "old_removed":
            return None
        if row.auto_step in (None, "failed") and row.state == "expiring" and left_days is not None \
                and left_days <= cfg.start_days:
            if row.auto_step == "failed" and now - row.updated_at < RETRY_AFTER_FAILURE:
                return None
            return "start"
        if row.auto_step == "handed_over":
            return "verify"
        if row.auto_step == "verified" and row.remove_after is not None and now >= row.remove_after:
            return "remove_old"
        return None


REPLICATING = (7000215, 7000222)  # how Entra ID refuses a secret it has not replicated yet
REPLICATION_POLL_S = 5.0


def write_secret_file(path: Path, value: str) -> None:
    """Replace the file atomically, readable by mailwarden's user only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".mailwarden-", suffix=".tmp")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(value + "\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
