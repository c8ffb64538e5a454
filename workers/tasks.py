"""Celery tasks, keyed by row id, and the functions that enqueue them.

Tasks are idempotent: the row decides. A task whose row is not ``queued`` (finished, cancelled,
running elsewhere, deleted) returns at once, so a re-delivered or duplicated message never runs
a generation twice.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Iterable

from db import queue
from db.models import FinetuneJob, Run
from workers import config
from workers.celery_app import app

log = logging.getLogger(__name__)

GENERATE_TASK = "workers.tasks.generate"
#: The finetune task on the ``train`` queue lives in :mod:`workers.train` (same pattern as
#: ``generate``); it is sent by name, so senders need not import the training code.
FINETUNE_TASK = "workers.tasks.finetune"


def worker_id(hostname: str | None) -> str:
    """How a worker process is named in ``runs.worker``: ``<celery node name>:<pid>``."""
    return f"{hostname or 'worker'}:{os.getpid()}"


@app.task(name=GENERATE_TASK, bind=True, acks_late=True, reject_on_worker_lost=True)
def generate(self, run_id: int) -> str:
    from workers.runner import execute_run

    outcome = execute_run(int(run_id), worker=worker_id(self.request.hostname))
    log.info("run %s: %s", run_id, outcome)
    return outcome


def enqueue_runs(run_ids: Iterable[int]) -> list[int]:
    """Send one ``generate`` message per run id (to the ``infer`` queue) and note the time.

    Rows must be committed first. Returns the ids sent.
    """
    ids = [int(i) for i in run_ids]
    with app.producer_or_acquire() as producer:
        for run_id in ids:
            generate.apply_async(args=(run_id,), queue=config.INFER_QUEUE, producer=producer)
    queue.mark_enqueued(Run, ids)
    return ids


def enqueue_jobs(job_ids: Iterable[int]) -> list[int]:
    """Send one finetune message per job id (to the ``train`` queue) and note the time."""
    ids = [int(i) for i in job_ids]
    if not ids:
        return []
    with app.producer_or_acquire() as producer:
        for job_id in ids:
            app.send_task(FINETUNE_TASK, args=(job_id,), queue=config.TRAIN_QUEUE,
                          producer=producer)
    queue.mark_enqueued(FinetuneJob, ids)
    return ids
