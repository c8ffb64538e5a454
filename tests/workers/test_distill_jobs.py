"""Distillation jobs through the queue: a real Celery worker on ``train`` distils a tiny pyramidal
teacher into a few-step student, writes progress and the generator's and the critic's losses into
the row, registers the student (its card locks the recipe, and runs use it); a cancel stops the job
after a checkpoint that stays usable."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.finetune.conftest import sqlite_env, train_worker  # noqa: F401  (fixtures: a real train worker)

pytestmark = pytest.mark.timeout(300)

#: The smallest distillation: tiny shapes, two clips of the mini world, one critic step per generator step.
TINY_DISTILL = dict(kind="distill", data="world:2", critic_steps=1, batch=1, pairs=0, ot_steps=1, frames=17,
                    height=64, width=64, device="cpu")


def _teacher(data_dir: Path) -> dict:
    """A tiny pyramidal teacher saved inside the data folder and registered as ``tiny-teacher``."""
    import service
    from core.checkpoints import save_checkpoint
    from core.presets import build_components

    folder = data_dir / "teachers" / "tiny-teacher"
    save_checkpoint(folder, build_components("tiny", "cpu").transformer,
                    {"base": "tiny", "kind": "full", "trained_for": "pyramidal", "boundaries": [0.8, 0.5]})
    return service.register_checkpoint(folder, "tiny", "tiny-teacher")


def _config(data_dir: Path, **extra) -> dict:
    return {**TINY_DISTILL, "cache_dir": str(data_dir / "cache" / "world"), **extra}


def _final(row: dict) -> bool:
    return row["status"] in ("done", "failed", "cancelled")


def test_a_distillation_job_trains_reports_its_losses_and_registers_a_few_step_student(train_worker):
    import service
    from core import load_pipeline

    teacher = _teacher(train_worker.data_dir)
    job = service.submit_job("tiny-student", "tiny", _config(train_worker.data_dir, method="dmd-pt-star",
                                                              teacher="tiny-teacher", steps=2))
    assert job["config"]["teacher"] == teacher["path"]
    row = train_worker.wait_job(job["id"], _final)
    assert row["status"] == "done", (row, train_worker.logs())
    assert (row["step"], row["steps"], row["fraction"]) == (2, 2, 1.0)
    assert [p["step"] for p in row["losses"]] == [1, 2]
    for point in row["losses"]:
        assert point["generator_loss"] >= 0 and point["critic_loss"] > 0, point
    report = row["report"]
    assert report["kind"] == "distill" and report["method"] == "dmd-pt-star"
    assert report["label"] == "2-2-1, 5 steps, guidance baked in, DMD-PT*"
    listed = {c["name"]: c for c in service.list_checkpoints()}
    student = listed["tiny-student"]
    assert student["id"] == row["checkpoint_id"] and student["base"] == "tiny"
    assert student["card"]["trained_for"] == "few-step" and student["card"]["recipe"]["schedule"] == "2-2-1"
    assert student["card"]["steps"] == 2 and student["card"]["complete"] is True
    pipe = load_pipeline("tiny", checkpoint_dir=student["path"], device="cpu")
    assert pipe.recipe is not None and pipe.recipe.describe() == "2-2-1, 5 steps, guidance baked in"
    # the studio runs the registered student with its recipe, and refuses another plan
    run = service.submit_run("a red circle", checkpoint="tiny-student", seed=1, frames=17, height=64, width=64)
    assert (run["schedule"], run["guidance"]) == ("2-2-1", [1.0, 1.0, 1.0])
    with pytest.raises(service.ValidationError, match="trained for schedule 2-2-1"):
        service.submit_run("a red circle", checkpoint="tiny-student", schedule="20-20-10", seed=1)


def test_a_cancelled_distillation_keeps_a_usable_checkpoint(train_worker):
    import service
    from core import load_pipeline

    _teacher(train_worker.data_dir)
    job = service.submit_job("tiny-cancelled", "tiny", _config(train_worker.data_dir, method="dmd-pt",
                                                                teacher="tiny-teacher", steps=100_000))
    train_worker.wait_job(job["id"], lambda r: r["status"] == "running" and (r["step"] or 0) >= 2)
    service.cancel_job(job["id"])
    row = train_worker.wait_job(job["id"], _final)
    assert row["status"] == "cancelled", (row, train_worker.logs())
    assert 2 <= row["step"] < 100_000 and len(row["losses"]) >= 2 and row["fraction"] < 1
    assert all("generator_loss" in p and "critic_loss" in p for p in row["losses"])
    card = json.loads((Path(row["output_dir"]) / "card.json").read_text())
    assert card["trained_for"] == "few-step" and card["complete"] is False and card["steps"] == row["step"]
    assert card["recipe"]["conversion"] == "exact"  # dmd-pt's
    pipe = load_pipeline("tiny", checkpoint_dir=row["output_dir"], device="cpu")  # the last checkpoint is usable
    assert pipe.recipe.schedule == "2-2-1"
    assert service.get_checkpoint(row["checkpoint_id"])["path"] == str(Path(row["output_dir"]).resolve())
