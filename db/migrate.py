"""Schema migrations (Alembic, scripts in ``db/migrations/versions``).

Every engine that :mod:`db.session` creates calls :func:`upgrade` first, so a process always
works on the schema of the models it runs:

* an empty database gets every revision;
* a database made by the ``create_all`` of releases before migrations existed (tables, but no
  ``alembic_version``) is stamped at :data:`RELEASED` and upgraded from there;
* processes starting at once take turns: the migration runs in one transaction that holds a
  lock (SQLite: ``BEGIN IMMEDIATE``; PostgreSQL: an advisory transaction lock), and whoever
  comes second finds the database at head and does nothing.

By hand (e.g. before starting new PostgreSQL workers): ``python -m db.migrate`` migrates the
database of ``PWAN_DATABASE_URL`` (or ``--url``) and prints its revision.
"""
from __future__ import annotations

import argparse
import contextlib
from collections.abc import Iterator
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, inspect, text

SCRIPTS = Path(__file__).resolve().parent / "migrations"
#: The schema of the last release made with ``create_all`` (before migrations).
RELEASED = "0001"
#: PostgreSQL advisory lock key of migrations (any constant shared by every process).
LOCK_KEY = 0x7057414E  # "pWAN"


def alembic_config(connection: Connection | None = None) -> Config:
    """An Alembic config built in code (no ini file); ``connection`` is what env.py migrates."""
    config = Config()
    config.set_main_option("script_location", str(SCRIPTS))
    config.attributes["connection"] = connection
    return config


def head() -> str:
    """The newest revision."""
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def current(connection: Connection) -> str | None:
    """The revision the database is at (None: not under migrations, or empty)."""
    return MigrationContext.configure(connection).get_current_revision()


def lock(connection: Connection) -> None:
    """Take the migration lock for the rest of ``connection``'s transaction (PostgreSQL; on
    SQLite the transaction's ``BEGIN IMMEDIATE`` is the lock)."""
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": LOCK_KEY})


@contextlib.contextmanager
def locked_connection(engine: Engine) -> Iterator[Connection]:
    """One transaction holding the migration lock; committed when the block exits.

    ``engine`` must come from :mod:`db.session` (on SQLite its ``pwan_begin`` option makes the
    transaction start with ``BEGIN IMMEDIATE``, the write lock, taken before anything is read).
    """
    with engine.execution_options(pwan_begin="IMMEDIATE").begin() as connection:
        lock(connection)
        yield connection


def upgrade(engine: Engine, revision: str = "head") -> str | None:
    """Bring the database to ``revision`` (stamping a pre-migration database first); returns
    the revision it is at afterwards."""
    target = head() if revision == "head" else revision
    with engine.connect() as connection:  # the usual case, without waiting on the lock
        if current(connection) == target:
            return target
    with locked_connection(engine) as connection:
        config = alembic_config(connection)
        tables = set(inspect(connection).get_table_names())
        if "alembic_version" not in tables and "runs" in tables:
            command.stamp(config, RELEASED)
        command.upgrade(config, revision)
        return current(connection)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m db.migrate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="SQLAlchemy URL (default: PWAN_DATABASE_URL, else the SQLite file in PWAN_DATA_DIR)")
    args = parser.parse_args(argv)
    from sqlalchemy import create_engine, make_url

    from settings import get_settings

    # a plain engine (not db.session's tuned pair): a one-off command needs no pool, and db.session
    # itself imports this module to migrate every engine it makes
    url = args.url or get_settings().database_url
    if url.startswith("sqlite") and make_url(url).database not in (None, "", ":memory:"):
        Path(make_url(url).database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"timeout": 30} if url.startswith("sqlite") else {})
    try:
        upgrade(engine)
        with engine.connect() as connection:
            print(f"{engine.url.render_as_string(hide_password=True)}: at revision {current(connection)} (head {head()})")
    finally:
        engine.dispose()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
