"""The Celery tasks, keyed by row id: ``generate`` (``infer`` queue) and ``finetune`` (``train``).

Tasks are idempotent: the row decides. A task whose row is not ``queued`` (finished, cancelled,
running elsewhere, deleted) returns at once, so a re-delivered or duplicated message never runs
a generation twice. Messages are sent by :mod:`workers.enqueue`.
"""
from __future__ import annotations

import logging
import os

from workers.celery_app import app
from workers.enqueue import FINETUNE_TASK, GENERATE_TASK
from workers.runner import execute_run
from workers.train import execute_job

log = logging.getLogger(__name__)


def worker_id(hostname: str | None) -> str:
    """How a worker process is named in ``runs.worker``: ``<celery node name>:<pid>``."""
    return f"{hostname or 'worker'}:{os.getpid()}"


@app.task(name=GENERATE_TASK, bind=True, acks_late=True, reject_on_worker_lost=True)
def generate(self, run_id: int) -> str:
    outcome = execute_run(int(run_id), worker=worker_id(self.request.hostname))
    log.info("run %s: %s", run_id, outcome)
    return outcome


@app.task(name=FINETUNE_TASK, bind=True, acks_late=True, reject_on_worker_lost=True)
def finetune(self, job_id: int) -> str:
    outcome = execute_job(int(job_id), worker=worker_id(self.request.hostname))
    log.info("finetune job %s: %s", job_id, outcome)
    return outcome
