"""Column types every stored record shares: timestamps are timezone-aware UTC in Python whatever the backend.

Kernel: imports nothing of mailwarden (the alerts layer's records and the application's tables both use it).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import DateTime
from sqlalchemy.types import TypeDecorator
from sqlmodel import Field


class UTCDateTime(TypeDecorator):
    """DateTime(timezone=True) that always hands back aware UTC datetimes and refuses naive ones.

    SQLite stores no offset, so values are normalised to UTC on the way in and labelled UTC on the
    way out; PostgreSQL returns them in the session time zone, converted back to UTC here.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value.isoformat()}: pass a timezone-aware UTC datetime")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def ts(*, nullable: bool = False, index: bool = False, default: Any = ...) -> Any:
    kw: dict[str, Any] = {"sa_type": UTCDateTime, "nullable": nullable, "index": index}
    if default is not ...:
        kw["default"] = default
    return Field(**kw)
