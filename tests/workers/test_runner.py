"""The generate task's body, in-process with a stand-in pipeline: every way a run can end."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

import service
from db import queue
from db.models import Run
from workers.models import ModelCache
from workers.progress import SHUTDOWN
from workers.reaper import broker_queue_size
from workers.runner import execute_run

pytestmark = pytest.mark.timeout(60)

QUICK = dict(model="tiny", schedule="1-1", frames=9, height=32, width=32, seed=1)
WORKER = "test@host:1"


class FakePipeline:
    """Calls the callback like core's sampler (two stages of ``steps``), with hooks."""

    fps = 8

    def __init__(self, steps=3, on_step=None, error=None, preview=None):
        self.steps, self.on_step, self.error, self.preview = steps, on_step, error, preview

    def generate(self, request, callback=None):
        from core import Cancelled

        total = 2 * self.steps
        for stage in range(2):
            for step in range(1, self.steps + 1):
                if self.on_step is not None:
                    self.on_step(stage, step)
                if self.error is not None:
                    raise self.error
                last_of_lowest = stage == 0 and step == self.steps
                info = {"stage": stage, "stages": 2, "step": step, "steps": self.steps,
                        "fraction": (stage * self.steps + step) / total, "sigma": 0.5,
                        "preview": self.preview if last_of_lowest else None}
                if callback is not None and callback(info):
                    raise Cancelled("stopped")
        frames = np.zeros((request.frames, request.height, request.width, 3), np.uint8)
        report = {"seconds": {"encode": 0.1, "denoise": 0.2, "decode": 0.1, "total": 0.4,
                              "stages": [0.1, 0.1]},
                  "tflops": np.float64(0.25), "tflops_per_stage": (0.05, 0.2),
                  "peak_memory_mb": 10.0}
        return SimpleNamespace(frames=frames, fps=self.fps, report=report)


def cache_with(pipe) -> ModelCache:
    return ModelCache(size=1, loader=lambda preset, checkpoint: pipe)


@pytest.fixture(autouse=True)
def no_shutdown():
    SHUTDOWN.clear()
    yield
    SHUTDOWN.clear()


def test_done_then_idempotent(pwan_env):
    run = service.submit_run("a red circle", **QUICK)
    assert execute_run(run["id"], WORKER, cache_with(FakePipeline())) == "done"
    row = service.get_run(run["id"])
    assert row["status"] == "done" and row["worker"] == WORKER and row["fraction"] == 1.0
    assert (row["stage"], row["step"]) == (1, 3)
    assert row["tflops"] == 0.25 and row["report"]["tflops_per_stage"] == [0.05, 0.2]
    assert row["report"]["queue_seconds"] >= 0 and row["load_seconds"] >= 0
    # Re-delivered or duplicated messages change nothing.
    assert execute_run(run["id"], WORKER, cache_with(FakePipeline())) == "skipped: done"
    assert service.get_run(run["id"])["attempts"] == 1
    assert execute_run(run["id"] + 50, WORKER, cache_with(FakePipeline())) == "missing"


def test_preview_is_on_the_row_while_the_run_is_still_running(pwan_env):
    run = service.submit_run("a red circle", **QUICK)
    seen = []

    def look(stage, step):
        if stage == 1 and step == 1:  # the lowest stage has ended, the run goes on
            row = service.get_run(run["id"])
            seen.append((row["status"], row["preview_path"]))

    frames = np.full((5, 16, 16, 3), 128, np.uint8)
    assert execute_run(run["id"], WORKER, cache_with(FakePipeline(on_step=look, preview=frames))) == "done"
    (status, path), = seen
    assert status == "running" and path and path.endswith(f"{run['id']}.preview.mp4")
    assert service.get_run(run["id"])["preview_path"] == path


def test_model_load_error_fails_with_its_message(pwan_env):
    from core import ModelLoadError

    def loader(preset, checkpoint):
        raise ModelLoadError("Wan2.1 weights not found; set PWAN_WAN_PATH")

    run = service.submit_run("a red circle", **QUICK)
    assert execute_run(run["id"], WORKER, ModelCache(loader=loader)) == "failed"
    error = service.get_run(run["id"])["error"]
    assert error.startswith("The model could not be loaded") and "PWAN_WAN_PATH" in error


def test_crash_fails_with_a_clear_error(pwan_env):
    run = service.submit_run("a red circle", **QUICK)
    pipe = FakePipeline(error=RuntimeError("CUDA out of memory. Tried to allocate 2 GiB"))
    assert execute_run(run["id"], WORKER, cache_with(pipe)) == "failed"
    assert "ran out of memory" in service.get_run(run["id"])["error"]


def test_checkpoint_deleted_after_queueing(pwan_env, tmp_path):
    service.register_checkpoint(tmp_path, "tiny", "cats")
    from db import checkpoints

    settings = {k: v for k, v in QUICK.items() if k != "model"}
    run = service.submit_run("a cat", checkpoint="cats", **settings)
    # The API refuses while a queued run uses it; another process may still have deleted it.
    checkpoints.delete_checkpoint(run["checkpoint_id"])
    assert execute_run(run["id"], WORKER, cache_with(FakePipeline())) == "failed"
    assert "'cats' was deleted" in service.get_run(run["id"])["error"]


def test_cancel_stops_at_the_next_step(pwan_env):
    run = service.submit_run("a red circle", **QUICK)

    def on_step(stage, step):
        if (stage, step) == (0, 2):
            service.cancel_run(run["id"], run["cancel_token"])

    assert execute_run(run["id"], WORKER, cache_with(FakePipeline(on_step=on_step))) == "cancelled"
    row = service.get_run(run["id"])
    assert row["status"] == "cancelled" and row["fraction"] < 1 and row["output_path"] is None


def test_a_reaped_run_is_not_overwritten(pwan_env):
    run = service.submit_run("a red circle", **QUICK)

    def on_step(stage, step):
        if (stage, step) == (0, 2):  # the reaper gave up on this worker meanwhile
            queue.release_worker(Run, WORKER, max_requeues=1)

    assert execute_run(run["id"], WORKER, cache_with(FakePipeline(on_step=on_step))) == "lost"
    row = service.get_run(run["id"])
    assert row["status"] == "queued" and row["requeues"] == 1 and row["output_path"] is None


def test_shutdown_puts_the_run_back_with_a_message(pwan_env):
    run = service.submit_run("a red circle", **QUICK)
    assert broker_queue_size() == 1

    def on_step(stage, step):
        if (stage, step) == (1, 1):
            SHUTDOWN.set()

    assert execute_run(run["id"], WORKER, cache_with(FakePipeline(on_step=on_step))) == "requeued"
    row = service.get_run(run["id"])
    assert (row["status"], row["attempts"], row["requeues"]) == ("queued", 1, 0)
    assert broker_queue_size() == 2  # (nothing consumed the first message in this test)

    # A message delivered while shutting down is sent again and the run is not started.
    assert execute_run(run["id"], WORKER, cache_with(FakePipeline())) == "deferred"
    assert service.get_run(run["id"])["attempts"] == 1 and broker_queue_size() == 3


def test_lost_messages_are_sent_again(pwan_env):
    from db import jobs
    from workers.celery_app import app
    from workers.reaper import recover_queue, resend_lost_messages
    from workers.enqueue import enqueue_jobs

    run = service.submit_run("a red circle", **QUICK)
    job = jobs.add_job(name="cats", base="tiny")
    assert enqueue_jobs([job["id"]]) == [job["id"]] and broker_queue_size("train") == 1
    assert resend_lost_messages(0) == []  # messages are waiting: nothing was lost
    with app.connection_for_write() as connection:
        for name in ("infer", "train"):
            connection.default_channel.queue_purge(name)  # a broker that lost its data
    assert resend_lost_messages(0) == [run["id"]]
    assert broker_queue_size("infer") == 1 and broker_queue_size("train") == 1
    assert recover_queue() == [run["id"]]  # at start-up: everything queued, duplicates are fine
    assert broker_queue_size("infer") == 2


@pytest.fixture(scope="module")
def tiny_pipeline():
    from core import load_pipeline

    return load_pipeline("tiny", device="cpu")


@pytest.mark.timeout(240)  # loads the real tiny pipeline: slow on a busy 2-core machine
def test_phases_are_written_in_order_and_the_fraction_covers_decoding_and_writing(
        pwan_env, tiny_pipeline, monkeypatch):
    """The real tiny pipeline: loading -> denoising -> decoding -> writing video, each written
    when it starts; the fraction grows over all of them and is below 1 while decoding; the first
    run splits by FLOPs (writing counts 0), the next by the first one's measured seconds (writing
    gets its share). A small still is written, and deleted with its run."""
    from PIL import Image

    from db import queue as db_queue

    writes = []
    real = db_queue.heartbeat

    def recording(model, item_id, attempt, **progress):
        if "phase" in progress or "fraction" in progress:
            writes.append((item_id, progress.get("phase"), progress.get("fraction")))
        return real(model, item_id, attempt, **progress)

    monkeypatch.setattr(db_queue, "heartbeat", recording)
    cache = cache_with(tiny_pipeline)
    first = service.submit_run("a red circle", **QUICK)
    assert execute_run(first["id"], WORKER, cache) == "done"
    phases = [p for i, p, _ in writes if i == first["id"] and p is not None]
    assert [p for n, p in enumerate(phases) if n == 0 or p != phases[n - 1]] == [
        "loading", "denoising", "decoding", "writing video"]
    fractions = [f for i, _, f in writes if i == first["id"] and f is not None]
    assert fractions == sorted(fractions) and fractions[-1] <= 1.0
    decoding = next(f for i, p, f in writes if i == first["id"] and p == "decoding")
    assert 0.0 < decoding < 1.0
    row = service.get_run(first["id"])
    assert row["status"] == "done" and row["fraction"] == 1.0 and row["phase"] == "writing video"
    assert row["report"]["phase_shares"]["source"] == "FLOPs"
    assert row["report"]["seconds"]["write"] > 0
    with Image.open(row["still_path"]) as still:
        assert still.format == "JPEG" and still.width <= 160 and still.size == (32, 32)
    assert row["still_path"].endswith(f"{first['id']}.still.jpg")

    second = service.submit_run("a blue square", **QUICK)
    assert execute_run(second["id"], WORKER, cache) == "done"
    shares = service.get_run(second["id"])["report"]["phase_shares"]
    assert shares["source"] == f"measured seconds of run #{first['id']}"
    at_start = {p: f for i, p, f in writes if i == second["id"] and p in ("decoding", "writing video")}
    assert 0.0 < at_start["decoding"] < at_start["writing video"] < 1.0  # writing has its share now
    assert shares["writing"] > 0 and abs(shares["denoising"] + shares["decoding"] + shares["writing"] - 1) < 1e-9
    service.delete_run(second["id"])
    assert not Path(service.get_run(first["id"])["still_path"]).with_name(f"{second['id']}.still.jpg").exists()
