"""Task names and the functions that send them: what the service needs from the queue.

Messages carry only a row id and are sent by task name, so senders (the service, the reaper,
a worker putting a run back) never import the task bodies or the model code.
"""
from __future__ import annotations

from collections.abc import Iterable

from db import queue
from db.models import FinetuneJob, Run
from workers import config
from workers.celery_app import app

GENERATE_TASK = "workers.tasks.generate"
FINETUNE_TASK = "workers.tasks.finetune"


def _send(task: str, queue_name: str, ids: list[int]) -> None:
    with app.producer_or_acquire() as producer:
        for item_id in ids:
            app.send_task(task, args=(item_id,), queue=queue_name, producer=producer)


def enqueue_runs(run_ids: Iterable[int]) -> list[int]:
    """Send one ``generate`` message per run id (to the ``infer`` queue) and note the time.

    Rows must be committed first. Returns the ids sent.
    """
    ids = [int(i) for i in run_ids]
    _send(GENERATE_TASK, config.INFER_QUEUE, ids)
    queue.mark_enqueued(Run, ids)
    return ids


def enqueue_jobs(job_ids: Iterable[int]) -> list[int]:
    """Send one ``finetune`` message per job id (to the ``train`` queue) and note the time."""
    ids = [int(i) for i in job_ids]
    if not ids:
        return []
    _send(FINETUNE_TASK, config.TRAIN_QUEUE, ids)
    queue.mark_enqueued(FinetuneJob, ids)
    return ids
