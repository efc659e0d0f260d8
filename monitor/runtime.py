"""Wiring: from a validated config to a store, token provider, credential reader and runner."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from mailwarden.monitor.config import Config
from mailwarden.monitor.credentials import CredentialReader
from mailwarden.monitor.db import Store, open_store
from mailwarden.monitor.runner import Runner
from mailwarden.monitor.signins import SignInEvidence
from mailwarden.monitor.tokens import TokenProvider
from mailwarden.monitor.tokenstore import TokenCipher, load_cipher, verify_fingerprint


@dataclass
class Runtime:
    config: Config
    store: Store
    cipher: TokenCipher
    tokens: TokenProvider
    credentials: CredentialReader
    runner: Runner
    signins: SignInEvidence | None = None  # the sign-in poller and the consumer check's port

    def close(self) -> None:
        self.runner.close()
        self.store.close()

    async def credential_use(self, app_name: str, key_id: str, moved_at: datetime | None):
        """Whether the consuming system still signs in with credential ``key_id`` of the app, within the app's
        ``rotation.remove_old_after_days`` (``monitor.credential_use``): the port the rotation uses."""
        from mailwarden.monitor import credential_use

        days = self.config.apps[app_name].rotation.remove_old_after_days
        return await credential_use.verdict(self.config, self.store, self.signins, app_name, key_id,
                                            datetime.now(UTC), window_days=days, moved_at=moved_at)


def integration_rows(config: Config) -> list[dict]:
    return [
        {"name": i.name, "tenant": config.tenant_name_of(i), "app": i.app, "flow": i.flow, "mailbox": i.mailbox,
         "account": i.account, "system": i.system, "tags": list(i.tags), "owners": list(i.owners),
         "checks": list(i.checks), "paused": i.paused,
         "config_hash": hashlib.sha256(i.model_dump_json().encode()).hexdigest()[:16]}
        for i in config.integrations
    ]


def open_runtime(config: Config, *, migrate: bool = True) -> Runtime:
    """Raises StorageError / TokenStoreError with a message for a person."""
    store = open_store(config.database_url(), migrate=migrate)
    store.reauth.reauth_link_ttl = timedelta(seconds=float(config.web.reauth_link_ttl))
    try:
        cipher = load_cipher(config)
        verify_fingerprint(store, cipher)
        store.inventory.sync_integrations(integration_rows(config), datetime.now(UTC))
    except Exception:
        store.close()
        raise
    tokens = TokenProvider(config, store, cipher, timeout_s=config.defaults.timeout)
    credentials = CredentialReader(config, tokens, store, timeout_s=config.defaults.timeout)
    runner = Runner(config, store, tokens, credentials)
    if config.execution.mode == "queue":  # several processes run checks: what one learns, every one reads
        from mailwarden.monitor.backoff import SharedBackoff

        runner.backoff = SharedBackoff(store)  # a Retry-After holds every worker (the backoff_waits table)
        runner.remembers = False  # a dependency's state as stored, whoever ran it last
    # the poller waits on the same back-off as the checks: a 429 of the monitor app's token endpoint is one wait
    runner.signins = signins = SignInEvidence(config, store, tokens, backoff=runner.backoff)
    return Runtime(config, store, cipher, tokens, credentials, runner, signins)

