"""Runs, comparisons, checkpoints and jobs round-trip on SQLite and PostgreSQL."""
from __future__ import annotations

import pytest

from db import checkpoints, jobs, runs
from db.models import Run, Status

pytestmark = pytest.mark.timeout(60)


def spec(**overrides):
    base = dict(
        prompt="a red circle moves to the right", negative_prompt="", model="tiny",
        mode="pyramidal", schedule="2-2-1", guidance=[5.0, 5.0, 4.0], seed=7, frames=17,
        height=128, width=128,
    )
    return {**base, **overrides}


def test_run_round_trip_is_plain_json(pwan_env):
    (row,) = runs.add_runs([spec()])
    assert row["id"] >= 1 and row["status"] == "queued" and row["attempts"] == 0
    again = runs.get_run(row["id"])
    assert again["guidance"] == [5.0, 5.0, 4.0]
    assert again["created_at"].endswith("Z")
    assert again["seed"] == 7 and again["report"] is None
    assert runs.get_run(row["id"] + 1000) is None
    with pytest.raises(TypeError, match="status"):
        runs.add_runs([spec(status="done")])


def test_big_seed_and_report_json(pwan_env):
    from db import queue

    (row,) = runs.add_runs([spec(seed=2**32 - 1)])
    claim, _ = queue.claim(Run, row["id"], "w:1")
    report = {"seconds": {"total": 1.5, "stages": [0.1, 0.2]}, "tflops": 0.5}
    assert queue.finish(Run, row["id"], claim.attempt, "done", report=report, tflops=0.5)
    done = runs.get_run(row["id"])
    assert done["seed"] == 2**32 - 1
    assert done["report"]["seconds"]["stages"] == [0.1, 0.2]
    assert done["status"] == "done" and done["finished_at"]


def test_list_filters_search_and_pages(pwan_env):
    from db import queue

    runs.add_runs([spec(prompt=f"a cat number {i}") for i in range(5)])
    runs.add_runs([spec(prompt="50% blue_box", model="other")])
    claim, _ = queue.claim(Run, 1, "w:1")
    queue.finish(Run, 1, claim.attempt, "done")

    page = runs.list_runs(limit=2)
    assert page.total == 6 and [r["id"] for r in page.items] == [6, 5]
    assert [r["id"] for r in runs.list_runs(limit=2, offset=4).items] == [2, 1]
    assert runs.list_runs(status="done").total == 1
    assert runs.list_runs(status=["done", "queued"]).total == 6
    assert runs.list_runs(model="other").total == 1
    assert runs.list_runs(search="CAT").total == 5  # case-insensitive
    assert runs.list_runs(search="50%").total == 1  # % is literal
    assert runs.list_runs(search="e_b").total == 1  # _ is literal
    assert runs.list_runs(search="0%").total == 1
    assert runs.list_runs(search="x%y").total == 0
    assert runs.count_runs() == 6


def test_comparison_groups_runs_and_goes_with_the_last(pwan_env):
    a, b = runs.add_runs(
        [spec(mode="original", schedule="0-0-5"), spec()], comparison={"prompt": "p", "seed": 7}
    )
    assert a["comparison_id"] == b["comparison_id"] is not None
    group = runs.get_comparison(a["comparison_id"])
    assert [r["id"] for r in group["runs"]] == [a["id"], b["id"]]
    assert runs.list_runs(comparison_id=a["comparison_id"]).total == 2
    runs.delete_run(a["id"])
    assert runs.get_comparison(a["comparison_id"]) is not None
    runs.delete_run(b["id"])
    assert runs.get_comparison(a["comparison_id"]) is None


def test_running_run_cannot_be_deleted(pwan_env):
    from db import queue

    (row,) = runs.add_runs([spec()])
    queue.claim(Run, row["id"], "w:1")
    with pytest.raises(runs.RunIsRunning, match="cancel"):
        runs.delete_run(row["id"])
    assert runs.get_run(row["id"])["status"] == "running"
    assert runs.delete_run(row["id"] + 99) is None
    assert runs.active_run_ids() == [row["id"]]


def test_checkpoints_unique_names_and_runs_keep_their_name(pwan_env, tmp_path):
    ck = checkpoints.add_checkpoint(name="cats", path=str(tmp_path), base="tiny", card={"kind": "full"})
    with pytest.raises(checkpoints.NameTaken, match="cats"):
        checkpoints.add_checkpoint(name="cats", path=str(tmp_path), base="tiny")
    other = checkpoints.add_checkpoint(name="dogs", path=str(tmp_path), base="tiny", kind="lora")
    with pytest.raises(checkpoints.NameTaken):
        checkpoints.rename_checkpoint(other["id"], "cats")
    assert checkpoints.rename_checkpoint(other["id"], "birds")["name"] == "birds"
    assert checkpoints.find_checkpoint("birds")["kind"] == "lora"
    assert [c["name"] for c in checkpoints.list_checkpoints()] == ["birds", "cats"]
    assert checkpoints.list_checkpoints(base="nope") == []

    (row,) = runs.add_runs([spec(checkpoint_id=ck["id"], checkpoint_name="cats")])
    assert runs.active_run_ids(checkpoint_id=ck["id"]) == [row["id"]]
    assert checkpoints.delete_checkpoint(ck["id"])["name"] == "cats"
    assert checkpoints.get_checkpoint(ck["id"]) is None
    kept = runs.get_run(row["id"])
    assert kept["checkpoint_id"] is None and kept["checkpoint_name"] == "cats"
    assert checkpoints.delete_checkpoint(ck["id"]) is None


def test_finetune_jobs(pwan_env):
    from db import queue
    from db.models import FinetuneJob

    job = jobs.add_job(name="cats-v1", base="tiny", config={"steps": 100})
    assert job["status"] == Status.QUEUED.value and job["losses"] == []
    claim, _ = queue.claim(FinetuneJob, job["id"], "w:1")
    assert jobs.append_losses(job["id"], claim.attempt, [{"step": 1, "loss": 0.5}])
    assert jobs.append_losses(job["id"], claim.attempt, [{"step": 2, "loss": 0.4}])
    assert not jobs.append_losses(job["id"], claim.attempt + 1, [{"step": 3, "loss": 0.3}])
    assert [p["loss"] for p in jobs.get_job(job["id"])["losses"]] == [0.5, 0.4]
    assert jobs.list_jobs().total == 1
    assert jobs.list_jobs(status="done").total == 0
