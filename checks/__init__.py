"""The check registry: one explicit dict. Adding a kind = one module + one line here + a table of tests."""

from __future__ import annotations

from checks.base import Check
from checks.secret_expiry import SecretExpiryCheck
from checks.token import TokenCheck

REGISTRY: dict[str, Check] = {
    TokenCheck.kind: TokenCheck(),
    SecretExpiryCheck.kind: SecretExpiryCheck(),
}
