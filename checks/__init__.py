"""The check registry: one explicit dict. Adding a kind = one module + one line here + a table of tests."""

from __future__ import annotations

from checks.base import Check
from checks.ews import EwsCheck
from checks.graph_mail import GraphMailCheck
from checks.imap import ImapCheck
from checks.pop import PopCheck
from checks.secret_expiry import SecretExpiryCheck
from checks.smtp import SmtpCheck
from checks.token import TokenCheck

REGISTRY: dict[str, Check] = {
    TokenCheck.kind: TokenCheck(),
    SecretExpiryCheck.kind: SecretExpiryCheck(),
    ImapCheck.kind: ImapCheck(),
    PopCheck.kind: PopCheck(),
    SmtpCheck.kind: SmtpCheck(),
    GraphMailCheck.kind: GraphMailCheck(),
    EwsCheck.kind: EwsCheck(),
}
