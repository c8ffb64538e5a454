"""Queue names and the folders workers use. Every ``PWAN_*`` setting lives in :mod:`settings`."""
from __future__ import annotations

from db.config import (  # noqa: F401  (re-exported: the folders workers write to)
    checkpoints_dir,
    data_dir,
    outputs_dir,
)

INFER_QUEUE = "infer"
TRAIN_QUEUE = "train"


def workers_dir():
    """Where workers announce themselves (``<node>.<pid>.json``) and write logs."""
    path = data_dir() / "workers"
    path.mkdir(parents=True, exist_ok=True)
    return path
