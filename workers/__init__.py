"""The run queue: the Celery app, its tasks, resident models and recovery.

Start a worker (solo pool and concurrency 1 are the configured defaults)::

    celery -A workers worker -Q infer

or let ``app.py`` start one (:class:`workers.embedded.EmbeddedWorker`). Submit and follow runs
with :mod:`service`.
"""
import sys
from pathlib import Path

# The project is not an installed package. The ``celery`` command puts the working folder on
# sys.path only while it loads this app (and removes it afterwards), so the lazy
# ``import core`` inside tasks would fail: keep our own entry for the life of the process.
_ROOT = str(Path(__file__).resolve().parent.parent)
if sys.path[-1:] != [_ROOT]:
    sys.path.append(_ROOT)

from workers.celery_app import app, configure  # noqa: E402

__all__ = ["app", "configure"]
