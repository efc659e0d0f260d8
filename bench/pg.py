"""The local PostgreSQL server (127.0.0.1:5432, trust auth) the bench and the tests use: an admin connection."""

from __future__ import annotations

import getpass

import psycopg

PG_HOST, PG_PORT = "127.0.0.1", 5432


def admin_connect(**params: object) -> tuple[psycopg.Connection, str]:
    """An autocommit connection as a user who may create databases (postgres, else the login user; on database
    postgres, else test), and that user's name; ``params`` go to psycopg.connect (application_name). Raises
    ConnectionError with the last attempt's reason."""
    errors = []
    for user in dict.fromkeys(["postgres", getpass.getuser()]):
        for db in ("postgres", "test"):
            try:
                return psycopg.connect(host=PG_HOST, port=PG_PORT, user=user, dbname=db, connect_timeout=3,
                                       autocommit=True, **params), user  # type: ignore[arg-type]
            except psycopg.Error as exc:
                errors.append(f"{user}@{db}: {' '.join(str(exc).split())}")
    raise ConnectionError(errors[-1])
