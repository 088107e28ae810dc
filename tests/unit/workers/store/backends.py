"""The databases the store's tests run on: a SQLite file, or a throwaway PostgreSQL database.

PostgreSQL comes from ``$MIPGW_TEST_POSTGRES_URL`` (a role allowed to CREATE DATABASE; default: the
local ``postgres`` superuser over TCP). Each use creates ``mipgw_test_<random>`` and drops it after;
when the server cannot be reached the test is skipped with the reason.
"""

from __future__ import annotations

import os
import secrets
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import create_engine, make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.pool import NullPool

__all__ = ["BACKENDS", "database_url_for", "new_uid", "temporary_postgres_database"]

POSTGRES_ADMIN_URL = os.environ.get(
    "MIPGW_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)

BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.integration)]


def new_uid() -> str:
    """A fresh DICOM UID (2.25 + a random UUID), so tests sharing a database never see each other."""
    return f"2.25.{uuid.uuid4().int}"


@contextmanager
def temporary_postgres_database() -> Iterator[str]:
    admin_url = make_url(POSTGRES_ADMIN_URL)
    admin = create_engine(
        admin_url, isolation_level="AUTOCOMMIT", poolclass=NullPool, connect_args={"connect_timeout": 3}
    )
    name = f"mipgw_test_{secrets.token_hex(6)}"
    try:
        with admin.connect() as connection:
            connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
    except OperationalError as exc:
        admin.dispose()
        where = admin_url.render_as_string(hide_password=True)
        reason = str(exc.orig).splitlines()[0]
        pytest.skip(f"PostgreSQL not reachable at {where} (set MIPGW_TEST_POSTGRES_URL): {reason}")
    try:
        yield admin_url.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


@contextmanager
def database_url_for(backend: str, folder: Path) -> Iterator[str]:
    """A URL of an empty database on ``backend``, gone after the block."""
    if backend == "sqlite":
        yield f"sqlite+pysqlite:///{folder / 'mipgw.sqlite3'}"
    else:
        with temporary_postgres_database() as url:
            yield url
