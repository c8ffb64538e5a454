"""Shared fixtures: external services (PostgreSQL, Redis) and an isolated PWAN environment.

Services that are down make their tests skip with the reason, except with ``CI=true``, where
they fail: CI must never pass by skipping.

* ``postgres_url``: a fresh database (random name) created for the session and dropped after.
* ``redis_url``: Redis db 15 (``PWAN_TEST_REDIS_URL``), flushed before and after use.
* ``fresh_database``: factory for an empty SQLite or PostgreSQL database.
* ``db_url``: parametrized over ``sqlite`` and ``postgresql``; empty tables for every test.
* ``pwan_env``: ``PWAN_*`` variables pointing at a tmp data folder, the ``db_url`` database and
  an SQLite broker file; short heartbeat/stale times; the Celery app reconfigured.

The settings (:mod:`settings`) are read once per process and cached. So that a test sees the
environment it sets, the cache is cleared around every test, and ``monkeypatch`` is one whose
``setenv``/``delenv`` (and their undoing) clear it too.
"""
from __future__ import annotations

import os
import sys
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

POSTGRES_ADMIN_URL = os.environ.get(
    "PWAN_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
REDIS_URL = os.environ.get("PWAN_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")

from settings import reload_settings  # noqa: E402  (after the repo is on sys.path)

#: Fast timings for tests (seconds).
FAST_TIMINGS = {
    "PWAN_HEARTBEAT_SECONDS": "0.5",
    "PWAN_STALE_SECONDS": "3",
    "PWAN_REAP_SECONDS": "0.5",
    "PWAN_PROGRESS_SECONDS": "0.1",
}


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() == "true"


def service_missing(reason: str) -> None:
    """Skip (locally) or fail (``CI=true``) because a service the test needs is down."""
    if in_ci():
        pytest.fail(f"{reason} (CI=true: services are required)", pytrace=False)
    pytest.skip(reason)


# ---------------------------------------------------------------------------- settings
class SettingsMonkeyPatch(pytest.MonkeyPatch):
    """pytest's ``monkeypatch``; changing an environment variable makes the next
    :func:`settings.get_settings` read the environment again."""

    def setenv(self, name: str, value: str, prepend: str | None = None) -> None:
        super().setenv(name, value, prepend)
        reload_settings()

    def delenv(self, name: str, raising: bool = True) -> None:
        super().delenv(name, raising)
        reload_settings()

    def undo(self) -> None:
        super().undo()
        reload_settings()


@pytest.fixture
def monkeypatch():
    """Replaces pytest's own fixture of this name (same object, settings-aware)."""
    patch = SettingsMonkeyPatch()
    yield patch
    patch.undo()


def _pwan_environment() -> dict:
    return {k: v for k, v in os.environ.items() if k.startswith("PWAN_")}


@pytest.fixture(autouse=True)
def fresh_settings():
    """Every test starts (and leaves) with settings read from the environment as it is then, and
    leaves the ``PWAN_*`` variables as it found them (``monkeypatch`` undoes its own changes first):
    code that sets one for good would point every later test at its folders."""
    before = _pwan_environment()
    reload_settings()
    yield
    leaked = {k for k in before.keys() | _pwan_environment().keys() if before.get(k) != os.environ.get(k)}
    for name in leaked:
        if name in before:
            os.environ[name] = before[name]
        else:
            os.environ.pop(name, None)
    reload_settings()
    assert not leaked, f"the test left these variables changed: {sorted(leaked)}"


# ---------------------------------------------------------------------------- services
@pytest.fixture(scope="session")
def postgres_url():
    """URL of a database created for this test session (dropped at the end)."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT",
                          connect_args={"connect_timeout": 3})
    name = f"pwan_test_{uuid.uuid4().hex[:12]}"
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:  # noqa: BLE001
        admin.dispose()
        service_missing(f"PostgreSQL is not reachable at {POSTGRES_ADMIN_URL}: {exc}")
    url = make_url(POSTGRES_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    yield url
    from db.session import dispose_engines

    dispose_engines()
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(scope="session")
def redis_available():
    import redis

    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
    try:
        client.ping()
    except Exception as exc:  # noqa: BLE001
        service_missing(f"Redis is not reachable at {REDIS_URL}: {exc}")
    finally:
        client.close()
    return REDIS_URL


@pytest.fixture
def redis_url(redis_available):
    """The test Redis database, empty before and after the test."""
    import redis

    client = redis.Redis.from_url(redis_available)
    client.flushdb()
    yield redis_available
    client.flushdb()
    client.close()


# ---------------------------------------------------------------------------- databases
def _empty_tables(url: str) -> None:
    from db.models import Base
    from db.session import get_engine

    engine = get_engine(url)
    with engine.begin() as conn:
        for table in reversed(Base.metadata.sorted_tables):
            conn.execute(table.delete())
        if engine.dialect.name == "postgresql":
            for table in Base.metadata.sorted_tables:
                if "id" not in table.c:  # e.g. admin_failures (keyed by client): no sequence
                    continue
                conn.exec_driver_sql(
                    f"SELECT setval(pg_get_serial_sequence('{table.name}', 'id'), 1, false)"
                )


@pytest.fixture(scope="session")
def fresh_database(request):
    """``fresh_database(kind, folder) -> url``: an SQLite file in ``folder``, or the session's
    PostgreSQL database with its tables emptied (``kind`` is "sqlite" or "postgresql")."""

    def make(kind: str, folder: Path) -> str:
        if kind == "sqlite":
            folder.mkdir(parents=True, exist_ok=True)
            return f"sqlite:///{folder / 'pwan.sqlite3'}"
        url = request.getfixturevalue("postgres_url")
        _empty_tables(url)
        return url

    return make


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path, fresh_database):
    """A database with empty tables: an SQLite file, or the session's PostgreSQL database."""
    from db.session import dispose_engines

    yield fresh_database(request.param, tmp_path / "data")
    dispose_engines()


def make_env(data_dir: Path, database_url: str, broker_url: str | None = None) -> dict[str, str]:
    """The PWAN_* variables of an isolated installation in ``data_dir``."""
    return {
        "PWAN_DATA_DIR": str(data_dir),
        "PWAN_DATABASE_URL": database_url,
        "PWAN_BROKER_URL": broker_url or f"sqla+sqlite:///{data_dir / 'broker.sqlite3'}",
        **FAST_TIMINGS,
    }


@pytest.fixture(scope="session")
def env_for():
    """The :func:`make_env` function, for fixtures in sub-folders."""
    return make_env


@pytest.fixture
def pwan_env(db_url, tmp_path, monkeypatch):
    """Point this process at an isolated installation (database ``db_url``, SQLite broker)."""
    import workers

    env = make_env(tmp_path / "data", db_url)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    workers.configure()
    yield env
