"""The base of the store's repositories (``monitor.db``): each repository implements one port over its own tables
and shares one ``Database`` (the engine, its sessions and connections). Storage holds no business rule: what a
result, a fold or a sign-in means is decided by the caller (``monitor.pipeline``, ``alerts``, ``monitor.signins``),
the repository only reads and writes rows, one short transaction per method."""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from mailwarden.monitor.db import Database


class Repository:
    """The tables of one port, over the shared ``Database``."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._sqlite = db._sqlite

    def _session(self, write: bool = False) -> AbstractContextManager[Any]:  # a Session, typed loosely as before
        return self.db._session(write)

    def _connection(self, write: bool = False) -> AbstractContextManager[Any]:
        return self.db._connection(write)

    def _insert(self) -> Any:
        return self.db._insert()
