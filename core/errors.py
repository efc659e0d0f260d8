"""Errors a person reads: each says what was wrong, where, and what to do. Never a traceback."""

from __future__ import annotations

from dataclasses import dataclass


class MailwardenError(Exception):
    """Base of the errors the CLI turns into one paragraph and an exit code."""

    def __init__(self, what: str, *, where: str | None = None, hint: str | None = None):
        self.what, self.where, self.hint = what, where, hint
        super().__init__(self.message())

    def message(self) -> str:
        parts = [self.what if not self.where else f"{self.where}: {self.what}"]
        if self.hint:
            parts.append(self.hint)
        return " ".join(p.rstrip(".") + "." for p in parts)


class ConfigError(MailwardenError):
    """The configuration cannot be read or is invalid. Carries every problem found, not only the first."""

    def __init__(self, what: str, *, where: str | None = None, hint: str | None = None,
                 problems: list[str] | None = None):
        self.problems = problems or []
        super().__init__(what, where=where, hint=hint)

    def message(self) -> str:
        head = super().message()
        return head if not self.problems else head + "\n" + "\n".join(f"  - {p}" for p in self.problems)


class StorageError(MailwardenError):
    """The database cannot be reached, migrated or read.

    ``kind`` says what a write may expect: ``unavailable`` (no answer, or none that takes writes now: wait for it),
    ``refused`` (the database answered and refused this data, a constraint or a value it cannot store: writing it
    again fails again, and the writes beside it need not), ``conflict`` (a deadlock or serialization failure between
    two writers: the same write may succeed at once)."""

    def __init__(self, what: str, *, where: str | None = None, hint: str | None = None, kind: str = "unavailable"):
        self.kind = kind
        super().__init__(what, where=where, hint=hint)


class SecretReferenceError(MailwardenError):
    """A credential reference (env:NAME, file:PATH) does not resolve. Affects only its integrations."""


class TokenStoreError(MailwardenError):
    """The token store key is missing or is not the key the stored tokens were written with."""


@dataclass
class NoRefreshToken(Exception):
    """No delegated refresh token is stored for the integration's account yet."""

    integration: str

    def __str__(self) -> str:
        return f"no refresh token stored for {self.integration}"
