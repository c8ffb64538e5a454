"""End to end with real worker processes, real SQLite files, Redis and PostgreSQL.

The SQLite-broker tests share one worker (started once for the module); the Redis tests run
against PostgreSQL, the multi-machine setup, and end with a kill -9.
"""
from __future__ import annotations

import threading
from pathlib import Path

import pytest

import service

from .conftest import SLOW

#: A three-stage pyramid (per-stage seconds and TFLOPs for three stages).
TINY = dict(model="tiny", schedule="2-2-1", frames=17, height=64, width=64)
#: The smallest run: one step, one frame.
QUICK = dict(model="tiny", schedule="1", frames=1, height=16, width=16, guidance=1.0)

pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module")
def sqlite_install(open_installation):
    """One installation with the default SQLite broker and SQLite database, one worker."""
    with open_installation("sqlite", "sqlite") as install:
        install.start_worker()
        yield install


def check_done_run(install, row: dict, stages: int) -> None:
    from core.video import read_frames

    assert row["status"] == "done", row["error"]
    assert row["attempts"] == 1 and row["error"] is None and row["fraction"] == 1.0
    path = Path(row["output_path"])
    assert path == install.data_dir / "outputs" / f"{row['id']}.mp4" and path.is_file()
    assert read_frames(path).shape == (row["frames"], row["height"], row["width"], 3)
    report = row["report"]
    assert len(report["seconds"]["stages"]) == stages
    assert all(s > 0 for s in report["seconds"]["stages"])
    assert report["seconds"]["total"] > 0 and report["seconds"]["load"] == row["load_seconds"]
    assert row["tflops"] == report["tflops"] > 0 and len(report["tflops_per_stage"]) == stages
    assert row["peak_memory_mb"] > 0 and row["total_seconds"] > 0
    assert row["started_at"] and row["finished_at"] and row["worker"]


def test_tiny_run_is_done_and_a_warm_worker_loads_nothing(sqlite_install):
    first = service.submit_run("a red circle moves to the right", seed=1, **TINY)
    second = service.submit_run("a blue square moves to the left", seed=2, **TINY)
    first = sqlite_install.wait(first["id"])
    second = sqlite_install.wait(second["id"])
    check_done_run(sqlite_install, first, stages=3)
    check_done_run(sqlite_install, second, stages=3)
    assert first["load_seconds"] > 0
    assert second["load_seconds"] == 0.0 and second["report"]["load_seconds"] == 0.0
    assert Path(first["preview_path"]).is_file()  # the lowest stage's preview


def test_a_run_decoded_both_ways_writes_both_videos(sqlite_install):
    from core.video import read_frames

    run = service.submit_run("a red circle moves to the right", seed=1, decoder="both", **TINY)
    row = sqlite_install.wait(run["id"])
    check_done_run(sqlite_install, row, stages=3)
    report = row["report"]
    assert row["decoder"] == report["decoder"] == "both" and report["preview_decoder"] == "tiny"
    tiny = Path(report["tiny_video_path"])
    assert tiny == sqlite_install.data_dir / "outputs" / f"{row['id']}.tiny.mp4" and tiny.is_file()
    assert read_frames(tiny).shape == read_frames(row["output_path"]).shape
    assert report["seconds"]["decode"] > 0 and report["seconds"]["decode_tiny"] > 0
    assert 0 < report["decode_psnr_db"] <= 100
    assert Path(row["preview_path"]).is_file()  # previews keep working (by the tiny decoder)

    fast = sqlite_install.wait(service.submit_run("a blue box", seed=2, decoder="tiny", **TINY)["id"])
    check_done_run(sqlite_install, fast, stages=3)
    assert fast["report"]["decoder"] == "tiny" and fast["report"]["tiny_video_path"] is None
    assert "decode_tiny" not in fast["report"]["seconds"]
    service.delete_run(row["id"])
    assert not tiny.exists() and not Path(row["output_path"]).exists()


def test_cancel_a_queued_and_a_running_run(sqlite_install):
    slow = service.submit_run("a slow red circle", seed=3, **SLOW)
    waiting = service.submit_run("a waiting blue box", seed=4, **QUICK)
    sqlite_install.wait(slow["id"], ("running",), step=lambda s: (s or 0) >= 1)

    cancelled = service.cancel_run(waiting["id"], waiting["cancel_token"])
    assert cancelled["status"] == "cancelled"  # at once, no worker involved

    requested = service.cancel_run(slow["id"], slow["cancel_token"])
    assert requested["status"] == "running" and requested["cancel_requested"]
    slow = sqlite_install.wait(slow["id"], timeout=20)
    assert slow["status"] == "cancelled" and slow["fraction"] < 1.0
    assert slow["output_path"] is None and slow["error"] is None

    after = service.submit_run("the worker is still fine", seed=5, **QUICK)
    assert sqlite_install.wait(after["id"])["status"] == "done"
    waiting = service.get_run(waiting["id"])
    assert waiting["status"] == "cancelled" and waiting["attempts"] == 0  # never started


def test_burst_of_50_submissions_from_5_threads_runs_each_once(sqlite_install):
    before = service.list_runs(limit=1)["total"]
    ids: list[int] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def submit(thread: int) -> None:
        try:
            for i in range(10):
                row = service.submit_run(f"burst {thread} {i}", seed=thread * 100 + i, **QUICK)
                with lock:
                    ids.append(row["id"])
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=submit, args=(t,)) for t in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(set(ids)) == 50
    assert service.list_runs(limit=1)["total"] == before + 50
    rows = [sqlite_install.wait(run_id, timeout=150) for run_id in sorted(ids)]
    assert [r["status"] for r in rows] == ["done"] * 50, [r["error"] for r in rows]
    assert [r["attempts"] for r in rows] == [1] * 50  # each executed exactly once
    assert all(Path(r["output_path"]).is_file() for r in rows)

    # kombu keeps delivered messages in the SQLite broker; the reaper's cleanup removes them.
    from db.broker import prune_delivered_messages

    assert prune_delivered_messages(sqlite_install.env["PWAN_BROKER_URL"], older_than_s=0) >= 50
    after = service.submit_run("after the cleanup", seed=999, **QUICK)
    assert sqlite_install.wait(after["id"])["status"] == "done"


@pytest.fixture(scope="module")
def redis_install(open_installation):
    """The multi-machine setup: Redis broker, PostgreSQL database; one worker to begin with."""
    with open_installation("redis", "postgresql") as install:
        install.start_worker()
        yield install


def test_redis_broker_with_postgresql(redis_install):
    first = service.submit_run("a red circle moves to the right", seed=1, **TINY)
    second = service.submit_run("a green ball", seed=2, **TINY)
    first, second = redis_install.wait(first["id"]), redis_install.wait(second["id"])
    check_done_run(redis_install, first, stages=3)
    check_done_run(redis_install, second, stages=3)
    assert first["load_seconds"] > 0 and second["load_seconds"] == 0.0


def test_kill_9_mid_run_then_a_new_worker_finishes_it(redis_install):
    """kill -9 mid-run, and Redis restarts empty meanwhile: the new worker re-sends the queued
    run's lost message at start, and its reaper re-queues the run whose heartbeat went stale.
    (The SQLite-broker kill -9 path is in test_faults.py.)"""
    import redis

    (first,) = [w for w in redis_install.workers if w.alive]
    slow = service.submit_run("a slow red circle", seed=11, **SLOW)
    behind = service.submit_run("queued behind it", seed=12, **QUICK)
    redis_install.wait(slow["id"], ("running",), step=lambda s: (s or 0) >= 1)
    first.kill()  # SIGKILL: no cleanup at all
    assert service.get_run(slow["id"])["status"] == "running"  # until someone notices
    redis.Redis.from_url(redis_install.env["PWAN_BROKER_URL"]).flushdb()

    redis_install.start_worker(preload="tiny")
    slow = redis_install.wait(slow["id"], timeout=120)
    behind = redis_install.wait(behind["id"], timeout=60)
    assert slow["status"] == "done", slow["error"]
    assert slow["attempts"] == 2 and slow["requeues"] == 1
    assert behind["status"] == "done" and behind["attempts"] == 1  # nothing else lost
    assert service.list_runs(status="running")["total"] == 0
