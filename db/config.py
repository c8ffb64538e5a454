"""Where things live, read from the environment each time it is asked.

Every setting is read on call (not at import) so that a test, a worker started with a
different environment, or the page after ``os.environ`` changes all see the current value.

==========================  ==================================================
``PWAN_DATA_DIR``           ``./data``: database, broker file, outputs, checkpoints
``PWAN_DATABASE_URL``       ``sqlite:///$PWAN_DATA_DIR/pwan.sqlite3``
``PWAN_BROKER_URL``         ``sqla+sqlite:///$PWAN_DATA_DIR/broker.sqlite3``
==========================  ==================================================
"""
from __future__ import annotations

import os
from pathlib import Path


def data_dir() -> Path:
    """The data folder (created if missing), as an absolute path."""
    path = Path(os.environ.get("PWAN_DATA_DIR") or "./data").expanduser().resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path


def database_url() -> str:
    """SQLAlchemy URL of the run database; SQLite in the data folder by default."""
    return os.environ.get("PWAN_DATABASE_URL") or f"sqlite:///{data_dir() / 'pwan.sqlite3'}"


def broker_url() -> str:
    """Celery broker URL; the SQLite file broker in the data folder by default."""
    return os.environ.get("PWAN_BROKER_URL") or f"sqla+sqlite:///{data_dir() / 'broker.sqlite3'}"


def outputs_dir() -> Path:
    """Folder for finished videos (``<run id>.mp4``) and previews."""
    path = data_dir() / "outputs"
    path.mkdir(parents=True, exist_ok=True)
    return path


def checkpoints_dir() -> Path:
    """Default folder for checkpoints written by finetune jobs."""
    path = data_dir() / "checkpoints"
    path.mkdir(parents=True, exist_ok=True)
    return path


def env_float(name: str, default: float) -> float:
    """A positive number from the environment, with a clear error when it is not one."""
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not a number") from None
    if value <= 0:
        raise ValueError(f"{name}={raw!r} must be greater than 0")
    return value


def env_int(name: str, default: int, minimum: int = 0) -> int:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not a whole number") from None
    if value < minimum:
        raise ValueError(f"{name}={raw!r} must be at least {minimum}")
    return value
