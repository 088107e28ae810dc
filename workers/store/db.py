"""Opening the job store: the URL, the engine, migrations under a lock, and sessions.

SQLite (the embedded default, ``<data_dir>/mipgw.sqlite3``) runs in WAL mode with foreign keys on,
``synchronous=NORMAL`` and a busy timeout. SQLAlchemy, not the ``sqlite3`` module, emits BEGIN: a
writing session begins ``IMMEDIATE`` (it takes the write lock up front and waits for it, so two
writers serialise instead of failing on a stale WAL snapshot); ``session(readonly=True)`` begins
``DEFERRED``. PostgreSQL connections are pre-pinged; readonly sessions are ``READ ONLY`` there.

``Store.migrate`` runs Alembic on one connection inside one transaction that first takes the
migration lock: ``pg_advisory_xact_lock`` on PostgreSQL, ``BEGIN IMMEDIATE`` on SQLite. Concurrent
openers queue on it; the later ones find the schema at head and do nothing.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any

import structlog
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import URL, Connection, Engine, create_engine, event, make_url, text
from sqlalchemy.orm import Session, sessionmaker

from config.settings import Settings
from workers.store.errors import SchemaVersionError

__all__ = ["MIGRATIONS_DIR", "Store", "alembic_config", "database_url", "open_store"]

MIGRATIONS_DIR = Path(__file__).resolve().with_name("migrations")
SQLITE_FILE = "mipgw.sqlite3"
# pg_advisory_xact_lock key: the first 8 bytes of "mipgw-db" read as a signed 64-bit integer
MIGRATION_LOCK_KEY = int.from_bytes(b"mipgw-db", "big", signed=True)
_READONLY = "mipgw_readonly"

log = structlog.get_logger(__name__)


def database_url(settings: Settings) -> str:
    """``settings.database_url`` when set (PostgreSQL in production), else SQLite under the data dir."""
    if settings.database_url:
        return settings.database_url
    path = (settings.data_dir / SQLITE_FILE).absolute()
    return f"sqlite+pysqlite:///{path.as_posix()}"


def alembic_config(*, connection: Connection | None = None, url: str | URL | None = None) -> Config:
    """An Alembic ``Config`` built in code (no alembic.ini): the packaged migrations, one connection."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("path_separator", "os")
    if url is not None:
        rendered = url.render_as_string(hide_password=False) if isinstance(url, URL) else url
        config.set_main_option("sqlalchemy.url", rendered.replace("%", "%%"))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


class Store:
    """An engine and its sessions. Open with :func:`open_store`; close with :meth:`close` (or ``with``)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._sessions = sessionmaker(engine, expire_on_commit=False)
        self._readonly_sessions = sessionmaker(
            engine.execution_options(**{_READONLY: True}), expire_on_commit=False
        )

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @contextmanager
    def session(self, *, readonly: bool = False) -> Iterator[Session]:
        """A session in one transaction: committed when the block ends, rolled back if it raises.

        Keep it short: on SQLite a writing session holds the database's only write lock throughout.
        """
        factory = self._readonly_sessions if readonly else self._sessions
        with factory.begin() as session:
            yield session

    def migrate(self, revision: str = "head") -> None:
        """``alembic upgrade`` under the migration lock (safe with concurrent openers)."""
        self._alembic(command.upgrade, revision)

    def downgrade(self, revision: str) -> None:
        self._alembic(command.downgrade, revision)

    def revision(self) -> str | None:
        with self.engine.connect() as connection:
            connection.execution_options(**{_READONLY: True})
            return MigrationContext.configure(connection).get_current_revision()

    def check_schema(self) -> None:
        """Raise :class:`SchemaVersionError` unless the database is at this code's head revision."""
        head = ScriptDirectory.from_config(alembic_config()).get_current_head()
        current = self.revision()
        if head is None or current != head:
            raise SchemaVersionError(current, head or "none")

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _alembic(self, verb: Callable[[Config, str], None], revision: str) -> None:
        with self.engine.connect() as connection:
            connection.begin()  # SQLite: BEGIN IMMEDIATE, the lock
            if self.dialect == "postgresql":
                connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
            before = MigrationContext.configure(connection).get_current_revision()
            verb(alembic_config(connection=connection), revision)
            after = MigrationContext.configure(connection).get_current_revision()
            connection.commit()  # one transaction (DDL is transactional on both backends)
        if after != before:
            log.info("job store migrated", dialect=self.dialect, from_revision=before, to_revision=after)


def open_store(
    url: str | URL,
    *,
    migrate: bool = False,
    busy_timeout_s: float = 30.0,
    echo: bool = False,
) -> Store:
    """Create the engine for ``url`` (see :func:`database_url`) and, with ``migrate``, upgrade to head.

    ``postgresql://`` and ``postgres://`` URLs get the psycopg 3 driver.
    """
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        engine = _sqlite_engine(parsed, busy_timeout_s=busy_timeout_s, echo=echo)
    elif backend == "postgresql":
        engine = create_engine(
            parsed,
            pool_pre_ping=True,
            echo=echo,
            connect_args={"application_name": "mip-gateway", "connect_timeout": 10},
        )
        event.listen(engine, "begin", _postgresql_begin)
    else:
        raise ValueError(f"the job store supports PostgreSQL and SQLite, not {backend!r}")
    store = Store(engine)
    if migrate:
        try:
            store.migrate()
        except BaseException:
            store.close()
            raise
    return store


def _sqlite_engine(url: URL, *, busy_timeout_s: float, echo: bool) -> Engine:
    database = url.database or ""
    if database and database != ":memory:" and not database.startswith("file:"):
        Path(database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, echo=echo, connect_args={"timeout": busy_timeout_s})
    busy_ms = int(busy_timeout_s * 1000)

    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # SQLAlchemy emits BEGIN (see _sqlite_begin)
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {busy_ms}")
        _set_wal(cursor, busy_timeout_s)
        cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.close()

    event.listen(engine, "connect", on_connect)
    event.listen(engine, "begin", _sqlite_begin)
    return engine


def _set_wal(cursor: Any, for_s: float) -> None:
    """``PRAGMA journal_mode = WAL``, tried again while another connection holds the lock it needs:
    switching a new file to WAL can answer "database is locked" at once, busy timeout or not."""
    deadline = time.monotonic() + for_s
    while True:
        try:
            cursor.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def _sqlite_begin(connection: Connection) -> None:
    readonly = connection.get_execution_options().get(_READONLY, False)
    connection.exec_driver_sql("BEGIN DEFERRED" if readonly else "BEGIN IMMEDIATE")


def _postgresql_begin(connection: Connection) -> None:
    if connection.get_execution_options().get(_READONLY, False):
        connection.exec_driver_sql("SET TRANSACTION READ ONLY")
