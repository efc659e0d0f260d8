"""The check registry: kind -> the class that runs it, as a dotted path, loaded on first use (so importing the
diagnosis catalog or one check does not load every protocol library). Adding a kind = one module + one line here +
a table of tests.

What the application needs to know of a kind (its options, the permission it needs per flow, the server it talks
to, the checks it depends on, whether it asks for the app's token) is declared on its class (``checks.base.Check``)
and read from here; ``tests/checks/test_declarations.py`` checks every registered kind's declarations."""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from mailwarden.checks.base import Check

# The kind of the token check: the one the mailbox checks depend on (their ``depends_on``), run first and blocked by.
TOKEN_KIND = "token"

CHECKS: dict[str, str] = {
    TOKEN_KIND: "mailwarden.checks.token:TokenCheck",
    "secret_expiry": "mailwarden.checks.secret_expiry:SecretExpiryCheck",
    "imap": "mailwarden.checks.imap:ImapCheck",
    "pop": "mailwarden.checks.pop:PopCheck",
    "smtp": "mailwarden.checks.smtp:SmtpCheck",
    "graph_mail": "mailwarden.checks.graph_mail:GraphMailCheck",
    "ews": "mailwarden.checks.ews:EwsCheck",
    "consumer": "mailwarden.checks.consumer:ConsumerCheck",
}


class _Registry(Mapping[str, "Check"]):
    """A read-only mapping whose values are made on first access (one instance per kind)."""

    def __init__(self, paths: dict[str, str]):
        self._paths = paths
        self._made: dict[str, Check] = {}

    def __getitem__(self, kind: str) -> Check:
        made = self._made.get(kind)
        if made is None:
            module, _, name = self._paths[kind].partition(":")
            made = self._made[kind] = getattr(importlib.import_module(module), name)()
            assert made.kind == kind, f"{self._paths[kind]} declares kind {made.kind!r}, registered as {kind!r}"
        return made

    def __iter__(self) -> Iterator[str]:
        return iter(self._paths)

    def __len__(self) -> int:
        return len(self._paths)

    def __contains__(self, kind: object) -> bool:
        return kind in self._paths


REGISTRY: Mapping[str, Check] = _Registry(CHECKS)


def dependencies(kinds: Iterable[str]) -> set[str]:
    """The kinds among ``kinds`` (one integration's checks) that another of them depends on (``Check.depends_on``):
    they run first (``Runner.run_many``), start first in the schedule and are fetched first from the queue."""
    kinds = list(kinds)
    return {dep for k in kinds if k in REGISTRY for dep in REGISTRY[k].depends_on if dep in kinds}
