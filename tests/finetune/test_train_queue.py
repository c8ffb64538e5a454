"""Finetune jobs through the queue: a real Celery worker on ``train`` runs them, writes progress
and losses into the row, registers the checkpoint; a cancel stops a job and leaves a usable
checkpoint; bad configs are refused by the API before anything is stored."""
import os
import shutil
from pathlib import Path

import pytest

from core import load_pipeline

from .conftest import SCHEDULE, SHAPE


def _config(world_cache, **extra):
    """Job settings over a copy of the shared cache inside the data folder (the API refuses
    server paths outside it)."""
    cache = Path(os.environ["PWAN_DATA_DIR"]) / "cache" / "world"
    if not cache.exists():
        shutil.copytree(world_cache, cache)
    return {**dict(data="world:2", schedule=SCHEDULE, lr=1e-2, cache_dir=str(cache), device="cpu",
                   **SHAPE), **extra}


def test_submit_refuses_bad_configs_before_storing(sqlite_env, world_cache):
    import service

    for config, field in [(dict(steps=0), "steps"), (dict(lr=2.0), "lr"), (dict(data="/nope"), "data"),
                          (dict(schedule="5"), "schedule")]:
        with pytest.raises(service.ValidationError) as info:
            service.submit_job("bad", "tiny", _config(world_cache, **config))
        assert info.value.field == field
    with pytest.raises(service.ValidationError) as info:
        service.submit_job("bad", "no-such-model", _config(world_cache))
    assert info.value.field == "base"
    assert service.list_jobs()["total"] == 0


def test_job_reports_progress_registers_its_checkpoint_and_can_be_cancelled(train_worker, world_cache):
    import service

    job = service.submit_job("pyr-queue", "tiny", _config(world_cache, steps=3))
    row = train_worker.wait_job(job["id"], lambda r: r["status"] in ("done", "failed", "cancelled"))
    assert row["status"] == "done", (row, train_worker.logs())
    assert row["step"] == 3 and row["steps"] == 3 and row["fraction"] == 1.0
    assert [p["step"] for p in row["losses"]] == [1, 2, 3] and all(len(p["stages"]) == 3 for p in row["losses"])
    listed = {c["name"]: c for c in service.list_checkpoints()}
    assert "pyr-queue" in listed and listed["pyr-queue"]["id"] == row["checkpoint_id"]
    assert listed["pyr-queue"]["card"]["steps"] == 3
    load_pipeline("tiny", checkpoint_dir=listed["pyr-queue"]["path"])
    with pytest.raises(service.ValidationError):  # the name is taken now
        service.submit_job("pyr-queue", "tiny", _config(world_cache, steps=3))

    long = service.submit_job("pyr-cancel", "tiny", _config(world_cache, steps=100_000))
    train_worker.wait_job(long["id"], lambda r: r["status"] == "running" and (r["step"] or 0) >= 2)
    service.cancel_job(long["id"])
    row = train_worker.wait_job(long["id"], lambda r: r["status"] in ("done", "failed", "cancelled"))
    assert row["status"] == "cancelled", (row, train_worker.logs())
    assert 2 <= row["step"] < 100_000 and row["losses"]
    pipe = load_pipeline("tiny", checkpoint_dir=row["output_dir"])  # the last checkpoint is usable
    assert pipe.info["checkpoint"]["complete"] is False
