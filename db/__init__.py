"""The database: SQLAlchemy models and the only code that writes SQL.

``PWAN_DATABASE_URL`` picks the database (SQLite file in ``$PWAN_DATA_DIR`` by default,
PostgreSQL for several machines). Functions open their own short transactions and return
plain dicts (see :func:`db.models.to_dict`), so callers never hold a session.
"""
from db import config
from db.models import (
    ALL_STATUSES,
    FINAL_STATUSES,
    Base,
    Checkpoint,
    Comparison,
    FinetuneJob,
    Run,
    Status,
    to_dict,
    utcnow,
)
from db.session import (
    dispose_engines,
    get_engine,
    init_db,
    prepare_sqlite_file,
    read_session,
    write_session,
)

__all__ = [
    "ALL_STATUSES",
    "FINAL_STATUSES",
    "Base",
    "Checkpoint",
    "Comparison",
    "FinetuneJob",
    "Run",
    "Status",
    "config",
    "dispose_engines",
    "get_engine",
    "init_db",
    "prepare_sqlite_file",
    "read_session",
    "to_dict",
    "utcnow",
    "write_session",
]
