"""Alembic environment of the run database.

:func:`db.migrate.upgrade` hands over an open connection (``config.attributes["connection"]``)
whose transaction already holds the migration lock; migrations run inside that transaction.
From the ``alembic`` command line (``alembic -c db/alembic.ini ...``, e.g. ``revision
--autogenerate`` when a model changes) it connects to ``PWAN_DATABASE_URL`` itself.
"""
from __future__ import annotations

from alembic import context

from db.models import Base

config = context.config


def _run(connection) -> None:
    context.configure(connection=connection, target_metadata=Base.metadata,
                      render_as_batch=connection.dialect.name == "sqlite")
    with context.begin_transaction():
        context.run_migrations()


if config.attributes.get("connection") is not None:
    _run(config.attributes["connection"])
else:  # the alembic command line: the database of PWAN_DATABASE_URL, under the migration lock
    from db.migrate import locked_connection
    from db.session import build_engines
    from settings import get_settings

    engine, _ = build_engines(get_settings().database_url)
    with locked_connection(engine) as connection:
        _run(connection)
    engine.dispose()
