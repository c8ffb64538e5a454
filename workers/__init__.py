"""The run queue: Celery app, tasks, resident models, recovery, and the API the page uses.

Start a worker::

    celery -A workers worker -Q infer --pool solo --concurrency 1

or let ``app.py`` start one (:class:`workers.embedded.EmbeddedWorker`). Submit and follow runs
with :mod:`workers.api`.
"""
from workers.celery_app import app, configure

__all__ = ["app", "configure"]
