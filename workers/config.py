"""Worker settings from the environment (read on call). Paths and URLs come from :mod:`db.config`.

=============================  =========  ==================================================
``PWAN_HEARTBEAT_SECONDS``     5          how often a running run's heartbeat is written
``PWAN_STALE_SECONDS``         60         no heartbeat for this long: the worker is lost
``PWAN_REAP_SECONDS``          stale / 4  how often each worker looks for lost runs
``PWAN_MAX_REQUEUES``          1          re-enqueues after a lost worker, then ``failed``
``PWAN_PROGRESS_SECONDS``      0.25       least time between two progress writes
``PWAN_MODEL_CACHE``           2          resident pipelines per worker, keyed (preset, checkpoint)
``PWAN_VISIBILITY_TIMEOUT``    86400      Redis: seconds before an unacked message is re-delivered
``PWAN_BROKER_POLL_SECONDS``   0.1        SQL broker: how often an idle worker polls
``PWAN_PRELOAD``               (none)     presets a worker loads at start, e.g. ``mini``
=============================  =========  ==================================================
"""
from __future__ import annotations

from db.config import (  # noqa: F401  (re-exported: one place to import settings from)
    broker_url,
    checkpoints_dir,
    data_dir,
    database_url,
    env_float,
    env_int,
    outputs_dir,
)

INFER_QUEUE = "infer"
TRAIN_QUEUE = "train"


def heartbeat_seconds() -> float:
    return env_float("PWAN_HEARTBEAT_SECONDS", 5.0)


def stale_seconds() -> float:
    stale = env_float("PWAN_STALE_SECONDS", 60.0)
    if stale < 2 * heartbeat_seconds():
        raise ValueError(
            f"PWAN_STALE_SECONDS ({stale:g}) must be at least twice PWAN_HEARTBEAT_SECONDS "
            f"({heartbeat_seconds():g}), or healthy runs would be declared lost"
        )
    return stale


def reap_seconds() -> float:
    return env_float("PWAN_REAP_SECONDS", stale_seconds() / 4)


def max_requeues() -> int:
    return env_int("PWAN_MAX_REQUEUES", 1, minimum=0)


def progress_seconds() -> float:
    return env_float("PWAN_PROGRESS_SECONDS", 0.25)


def model_cache_size() -> int:
    return env_int("PWAN_MODEL_CACHE", 2, minimum=1)


def visibility_timeout() -> int:
    return env_int("PWAN_VISIBILITY_TIMEOUT", 24 * 3600, minimum=60)


def broker_poll_seconds() -> float:
    return env_float("PWAN_BROKER_POLL_SECONDS", 0.1)


def workers_dir():
    """Where workers announce themselves (``<node>.<pid>.json``) and write logs."""
    path = data_dir() / "workers"
    path.mkdir(parents=True, exist_ok=True)
    return path
