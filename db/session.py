"""Engines and short transactions.

SQLite is tuned so the page and several worker processes can share one file: WAL journal
(readers never block the writer), a 30 s busy timeout, and write transactions that start with
``BEGIN IMMEDIATE`` so a read-then-write never fails half way with "database is locked".
PostgreSQL needs nothing special: state changes are conditional ``UPDATE``s that are atomic
under its default READ COMMITTED isolation.

Use :func:`write_session` for anything that changes rows and :func:`read_session` otherwise.
Both commit (or roll back) on exit and keep loaded attributes readable after the block.
"""
from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError, ProgrammingError, IntegrityError
from sqlalchemy.orm import Session

from settings import get_settings

BUSY_TIMEOUT_S = 30.0

_lock = threading.RLock()
_engines: dict[str, tuple[Engine, Engine]] = {}  # url -> (read engine, write engine)


def _sqlite_file(url: str) -> Path | None:
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database or parsed.database == ":memory:":
        return None
    return Path(parsed.database)


def _tune_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record):  # pragma: no cover - exercised by every test
        # Let SQLAlchemy's "begin" event below decide how each transaction starts.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_S * 1000)}")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection):
        mode = connection.get_execution_options().get("pwan_begin", "DEFERRED")
        connection.exec_driver_sql(f"BEGIN {mode}")


def build_engines(url: str) -> tuple[Engine, Engine]:
    """A new (read engine, write engine) pair for ``url``, tuned, not migrated (use
    :func:`get_engine`; the Alembic command line uses this)."""
    sqlite_path = _sqlite_file(url)
    if sqlite_path is not None:
        sqlite_path.parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url, connect_args={"timeout": BUSY_TIMEOUT_S, "check_same_thread": False}
        )
        _tune_sqlite(engine)
        writer = engine.execution_options(pwan_begin="IMMEDIATE")
    else:
        engine = create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=10)
        writer = engine
    return engine, writer


def _create(url: str) -> tuple[Engine, Engine]:
    engine, writer = build_engines(url)
    _create_schema(engine)
    return engine, writer


def _create_schema(engine: Engine) -> None:
    """Run pending migrations (see :mod:`db.migrate`): every process starts on the models' schema."""
    from db import migrate

    # The migration lock serializes start-ups; a retry covers what a lock cannot (e.g. a
    # connection dropped by a database that is itself just starting).
    for attempt in range(5):
        try:
            migrate.upgrade(engine)
            return
        except (OperationalError, ProgrammingError, IntegrityError):
            if attempt == 4:
                raise
            time.sleep(0.2 * (attempt + 1))


def _engines_for(url: str | None) -> tuple[Engine, Engine]:
    url = url or get_settings().database_url
    pair = _engines.get(url)
    if pair is None:
        with _lock:
            pair = _engines.get(url)
            if pair is None:
                pair = _engines[url] = _create(url)
    return pair


def get_engine(url: str | None = None) -> Engine:
    """The engine for ``url`` (default: ``PWAN_DATABASE_URL``), migrated on first use."""
    return _engines_for(url)[0]


def init_db(url: str | None = None) -> Engine:
    """Migrate the database to the current schema if needed and return the engine. Safe to
    call from many processes."""
    return get_engine(url)


def dispose_engines() -> None:
    """Close every pooled connection (tests; and after ``fork``)."""
    with _lock:
        for reader, _writer in _engines.values():
            reader.dispose()
        _engines.clear()


@contextlib.contextmanager
def read_session(url: str | None = None) -> Iterator[Session]:
    """A session for reading; its transaction ends (rolled back) when the block exits."""
    reader, _ = _engines_for(url)
    with Session(reader, expire_on_commit=False) as session:
        yield session


@contextlib.contextmanager
def write_session(url: str | None = None) -> Iterator[Session]:
    """A short write transaction: committed on success, rolled back on error.

    On SQLite it takes the write lock up front (``BEGIN IMMEDIATE``), waiting up to the busy
    timeout for other writers instead of failing.
    """
    _, writer = _engines_for(url)
    with Session(writer, expire_on_commit=False) as session:
        with session.begin():
            yield session


def prepare_sqlite_file(url: str) -> None:
    """Switch an SQLite file used by someone else (the Celery broker) to WAL mode.

    WAL is a property of the file, so setting it once lets the page, submitters and workers
    use the broker file at the same time with fewer "database is locked" waits.
    Does nothing for other databases.
    """
    path = _sqlite_file(url)
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    connection = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S)
    try:
        connection.execute("PRAGMA journal_mode=WAL")
    finally:
        connection.close()
