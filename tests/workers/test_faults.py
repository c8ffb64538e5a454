"""Faults with a real, supervised embedded worker (SQLite broker): kill -9 mid-run twice, then
a clean stop. (kill -9 with Redis and lost messages: test_e2e.py.)"""
from __future__ import annotations

import pytest

import service
from workers.reaper import broker_queue_size

from .conftest import SLOW

pytestmark = pytest.mark.timeout(240)


def running(install, run_id: int, attempt: int = 1) -> dict:
    """Wait until the run is running (its ``attempt``-th execution) and has made progress."""
    return install.wait(run_id, ("running",), attempts=attempt, step=lambda s: (s or 0) >= 1)


def test_embedded_worker_crashes_restarts_and_stops_cleanly(open_installation):
    with open_installation("sqlite", "sqlite") as install:
        worker = install.start_worker(preload="tiny")
        worker.supervise(interval=0.2)
        slow = service.submit_run("a slow red circle", seed=1, **SLOW)
        running(install, slow["id"])
        first_pid = worker.pid
        worker.kill()

        # The supervisor sees the exit, re-queues the run at once and starts a new process,
        # which claims it (and is killed in turn, before it even loaded the model).
        row = install.wait(slow["id"], ("running",), attempts=2)
        assert row["requeues"] == 1
        assert worker.pid != first_pid and worker.restarts == 1
        worker.kill()

        # A second crash on the same run: failed, with a message a person can act on.
        row = install.wait(slow["id"], timeout=30)
        assert row["status"] == "failed"
        assert "exited unexpectedly" in row["error"] and "Re-run" in row["error"]

        assert worker.wait_ready(90) and worker.restarts == 2

        # The third process works. A clean stop: the running run stops at its next step and
        # goes back to the queue, with a message for the next worker, without using up its
        # re-queue.
        again = service.submit_run("stopped by the app", seed=4, **SLOW)
        running(install, again["id"])
        worker.stop(timeout=30)
        assert not worker.alive
        row = service.get_run(again["id"])
        assert (row["status"], row["attempts"], row["requeues"]) == ("queued", 1, 0)
        assert broker_queue_size("infer") >= 1
