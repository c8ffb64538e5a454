"""The queue state machine on SQLite and PostgreSQL: claims, fencing, cancel, the reaper."""
from __future__ import annotations

import threading
import time

import pytest

from db import queue, runs
from db.models import Run

pytestmark = pytest.mark.timeout(60)


def new_run(**overrides) -> int:
    fields = dict(
        prompt="a red circle", model="tiny", mode="pyramidal", schedule="1-1",
        guidance=[5.0, 5.0], seed=1, frames=9, height=32, width=32,
    )
    (row,) = runs.add_runs([{**fields, **overrides}])
    return row["id"]


def test_a_run_is_claimed_once(pwan_env):
    run_id = new_run()
    claim, row = queue.claim(Run, run_id, "a:1")
    assert claim is not None and claim.attempt == 1
    assert row["status"] == "running" and row["worker"] == "a:1" and row["heartbeat_at"]
    again, row = queue.claim(Run, run_id, "b:2")
    assert again is None and row["worker"] == "a:1"
    assert queue.claim(Run, 999, "a:1") == (None, None)
    assert queue.finish(Run, run_id, claim.attempt, "done")
    assert queue.claim(Run, run_id, "b:2")[0] is None  # finished: never again


def test_concurrent_claims_have_one_winner(pwan_env):
    run_ids = [new_run() for _ in range(5)]
    wins: list[tuple[int, str]] = []
    barrier = threading.Barrier(6)

    def contender(name: str) -> None:
        barrier.wait()
        for run_id in run_ids:
            claim, _ = queue.claim(Run, run_id, name)
            if claim is not None:
                wins.append((run_id, name))

    threads = [threading.Thread(target=contender, args=(f"w{i}:{i}",)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(r for r, _ in wins) == run_ids
    assert all(runs.get_run(r)["attempts"] == 1 for r in run_ids)


def test_heartbeat_progress_and_fencing(pwan_env):
    run_id = new_run()
    claim, _ = queue.claim(Run, run_id, "a:1")
    assert queue.heartbeat(Run, run_id, claim.attempt, stage=1, stages=2, step=3, steps=4,
                           fraction=0.6) == (True, False)
    row = runs.get_run(run_id)
    assert (row["stage"], row["step"], row["fraction"]) == (1, 3, 0.6)
    # A stale token (an older attempt) owns nothing and cannot finish the run.
    assert queue.heartbeat(Run, run_id, claim.attempt + 1) == (False, False)
    assert not queue.finish(Run, run_id, claim.attempt + 1, "done")
    with pytest.raises(ValueError):
        queue.finish(Run, run_id, claim.attempt, "running")
    queue.request_cancel(Run, run_id)
    assert queue.heartbeat(Run, run_id, claim.attempt) == (True, True)
    assert queue.finish(Run, run_id, claim.attempt, "cancelled")
    assert queue.heartbeat(Run, run_id, claim.attempt) == (False, False)


def test_cancel_queued_is_immediate_running_is_a_request(pwan_env):
    queued, running, done = new_run(), new_run(), new_run()
    claim, _ = queue.claim(Run, running, "a:1")
    finished, _ = queue.claim(Run, done, "a:1")
    queue.finish(Run, done, finished.attempt, "done")

    row = queue.request_cancel(Run, queued)
    assert row["status"] == "cancelled" and row["finished_at"]
    assert queue.claim(Run, queued, "a:1")[0] is None  # its message is skipped later

    row = queue.request_cancel(Run, running)
    assert row["status"] == "running" and row["cancel_requested"]

    row = queue.request_cancel(Run, done)
    assert row["status"] == "done" and not row["cancel_requested"]
    assert queue.request_cancel(Run, 999) is None


def test_reaper_requeues_once_then_fails_with_a_clear_error(pwan_env):
    run_id, healthy = new_run(), new_run()
    first, _ = queue.claim(Run, run_id, "dead:1")
    queue.claim(Run, healthy, "alive:2")
    time.sleep(0.3)
    queue.heartbeat(Run, healthy, 1)

    released = queue.release_stale(Run, stale_after_s=0.2, max_requeues=1)
    assert released.requeued == [run_id] and not released.failed
    row = runs.get_run(run_id)
    assert row["status"] == "queued" and row["requeues"] == 1 and row["worker"] is None
    assert runs.get_run(healthy)["status"] == "running"
    # The dead worker's late writes are refused.
    assert not queue.finish(Run, run_id, first.attempt, "done")

    second, _ = queue.claim(Run, run_id, "dead-again:3")
    assert second.attempt == 2
    time.sleep(0.3)
    queue.heartbeat(Run, healthy, 1)
    released = queue.release_stale(Run, stale_after_s=0.2, max_requeues=1)
    assert released.failed == [run_id] and not released.requeued
    row = runs.get_run(run_id)
    assert row["status"] == "failed" and row["finished_at"]
    assert "dead-again:3" in row["error"] and "stopped responding" in row["error"]
    assert "Re-run" in row["error"]
    assert runs.get_run(healthy)["status"] == "running"


def test_reaper_ends_a_cancelled_run_cancelled(pwan_env):
    run_id = new_run()
    queue.claim(Run, run_id, "dead:1")
    queue.request_cancel(Run, run_id)
    time.sleep(0.3)
    assert queue.release_stale(Run, stale_after_s=0.2).cancelled == [run_id]
    assert runs.get_run(run_id)["status"] == "cancelled"


def test_release_worker_and_give_back(pwan_env):
    a, b, c = new_run(), new_run(), new_run()
    queue.claim(Run, a, "gone:1")
    queue.claim(Run, b, "other:2")
    released = queue.release_worker(Run, "gone:1", max_requeues=1, count_requeue=False)
    assert released.requeued == [a]
    assert runs.get_run(a)["requeues"] == 0 and runs.get_run(b)["status"] == "running"

    claim, _ = queue.claim(Run, c, "stopping:3")
    assert queue.give_back(Run, c, claim.attempt)
    row = runs.get_run(c)
    assert row["status"] == "queued" and row["requeues"] == 0 and row["attempts"] == 1
    assert not queue.give_back(Run, c, claim.attempt)


def test_queued_ids_and_counts(pwan_env):
    from db.models import utcnow

    a, b = new_run(), new_run()
    queue.mark_enqueued(Run, [a])
    assert queue.queued_ids(Run) == [a, b]
    cutoff = utcnow()
    assert queue.queued_ids(Run, enqueued_before=cutoff) == [a, b]  # b never had a message
    queue.mark_enqueued(Run, [a, b])
    assert queue.queued_ids(Run, enqueued_before=cutoff) == []
    queue.request_cancel(Run, a)
    counts = queue.counts_by_status(Run)
    assert counts == {"queued": 1, "running": 0, "done": 0, "failed": 0, "cancelled": 1}
