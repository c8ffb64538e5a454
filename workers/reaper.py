"""Recovery: runs whose worker died, and queued runs whose broker message was lost.

* :func:`reap_once`: running items with no heartbeat for ``PWAN_STALE_SECONDS`` are re-queued
  (once, ``PWAN_MAX_REQUEUES``) with a fresh message, then failed with a clear error.
* :func:`release_dead_worker`: the same, at once, for a worker whose exit was seen.
* :func:`recover_queue`: on start-up, send a message for every queued item (a Redis restart
  or a crash may have lost them). Duplicates are harmless: tasks skip rows that are not queued.
* :func:`resend_lost_messages`: periodically, if the broker queue is empty while runs have
  waited long in ``queued``, their messages were lost: send them again.
* SQL broker only: delivered messages (kept forever by kombu) are deleted after an hour.

Every worker runs a :class:`Reaper` thread; all of them may race, the conditional updates in
:mod:`db.queue` let exactly one win per row.
"""
from __future__ import annotations

import datetime as dt
import logging
import threading
import time

from db import queue
from db.broker import prune_delivered_messages
from db.models import FinetuneJob, Run, utcnow
from settings import get_settings
from workers import config
from workers.enqueue import enqueue_jobs, enqueue_runs

log = logging.getLogger(__name__)

PRUNE_EVERY_S = 600.0  # how often the SQL broker's delivered messages are cleaned up
PRUNE_AFTER_S = 3600.0  # ... once they are this old


def _enqueue_released(runs: queue.Released, jobs: queue.Released) -> None:
    if runs.requeued:
        enqueue_runs(runs.requeued)
    if jobs.requeued:
        enqueue_jobs(jobs.requeued)
    for kind, released in (("run", runs), ("finetune job", jobs)):
        if released:
            log.warning(
                "lost worker: %s(s) re-queued %s, failed %s, cancelled %s",
                kind, released.requeued, released.failed, released.cancelled,
            )


def reap_once() -> dict[str, queue.Released]:
    """Release running items whose heartbeat is stale; send messages for the re-queued ones."""
    stale, limit = get_settings().stale_seconds, get_settings().max_requeues
    runs = queue.release_stale(Run, stale, limit)
    jobs = queue.release_stale(FinetuneJob, stale, limit)
    _enqueue_released(runs, jobs)
    return {"runs": runs, "jobs": jobs}


def release_dead_worker(worker: str, crashed: bool = True) -> dict[str, queue.Released]:
    """Release the items of a worker process known to be gone. A crash uses up one re-queue;
    a deliberate stop (``crashed=False``) does not."""
    limit = get_settings().max_requeues
    runs = queue.release_worker(Run, worker, limit, count_requeue=crashed)
    jobs = queue.release_worker(FinetuneJob, worker, limit, count_requeue=crashed)
    _enqueue_released(runs, jobs)
    return {"runs": runs, "jobs": jobs}


def recover_queue() -> list[int]:
    """Send a message for every queued run (and job); returns the run ids sent."""
    run_ids = enqueue_runs(queue.queued_ids(Run))
    enqueue_jobs(queue.queued_ids(FinetuneJob))
    if run_ids:
        log.info("start-up: re-sent messages for %d queued run(s)", len(run_ids))
    return run_ids


def broker_queue_size(name: str = config.INFER_QUEUE) -> int:
    """Messages waiting in a broker queue (0 when the broker does not know the queue)."""
    from workers.celery_app import app

    with app.connection_for_read() as connection:
        try:
            return connection.default_channel.queue_declare(queue=name, passive=True).message_count
        except Exception:  # noqa: BLE001 - a queue that does not exist holds nothing
            return 0


def resend_lost_messages(min_age_s: float) -> list[int]:
    """If no message waits in ``infer`` but runs have been queued for ``min_age_s`` since their
    last message, those messages were lost: send them again (the same for jobs on ``train``).
    Returns the run ids sent."""
    cutoff = utcnow() - dt.timedelta(seconds=min_age_s)
    sent = []
    for model, queue_name, send in (
        (Run, config.INFER_QUEUE, enqueue_runs),
        (FinetuneJob, config.TRAIN_QUEUE, enqueue_jobs),
    ):
        waiting = queue.queued_ids(model, enqueued_before=cutoff)
        if waiting and broker_queue_size(queue_name) == 0:
            log.warning("queue %s is empty but %s wait: re-sending", queue_name, waiting)
            ids = send(waiting)
            if model is Run:
                sent = ids
    return sent


class Reaper:
    """A daemon thread calling :func:`reap_once` (and :func:`resend_lost_messages`) regularly."""

    def __init__(self, interval: float | None = None):
        self.interval = interval or get_settings().reap_seconds
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="pwan-reaper", daemon=True)

    def start(self) -> "Reaper":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def _loop(self) -> None:
        lost_after = max(get_settings().stale_seconds, 30.0)
        next_prune = 0.0
        while not self._stop.wait(self.interval):
            try:
                reap_once()
                resend_lost_messages(lost_after)
                if time.monotonic() >= next_prune:
                    next_prune = time.monotonic() + PRUNE_EVERY_S
                    prune_delivered_messages(get_settings().broker_url, older_than_s=PRUNE_AFTER_S)
            except Exception:  # database or broker briefly away: try next round
                log.exception("reaper round failed")
