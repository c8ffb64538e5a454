"""Finetune jobs through the service: list, get, cancel."""
from __future__ import annotations

import pytest

import service
from db import jobs as db_jobs

pytestmark = pytest.mark.timeout(120)


def test_finetune_job_helpers(pwan_env):
    job = db_jobs.add_job(name="cats-v1", base="tiny", config={"steps": 10})
    assert service.list_jobs()["total"] == 1
    assert service.get_job(job["id"])["name"] == "cats-v1"
    assert service.cancel_job(job["id"])["status"] == "cancelled"
    with pytest.raises(service.NotFoundError):
        service.get_job(job["id"] + 1)
    with pytest.raises(service.ValidationError):
        service.list_jobs(status="weird")


# ---------------------------------------------------------------------------- distillation jobs
DISTILL = dict(kind="distill", method="dmd-pt-star", data="world:2", steps=2, critic_steps=1, batch=1,
               frames=17, height=64, width=64)


def stored() -> tuple[int, int]:
    """(finetune job rows, messages waiting on the train queue)."""
    from workers.reaper import broker_queue_size

    return service.list_jobs()["total"], broker_queue_size("train")


@pytest.mark.parametrize("change,field,words", [
    (dict(method="dmd-xl"), "method", "dmd-xl"),
    (dict(teacher=""), "teacher", "needs the pyramidal teacher"),
    (dict(method="dmd-pt", teacher=None), "teacher", "needs the pyramidal teacher"),
    (dict(method="dmd-ot"), "teacher", "leave teacher empty"),
    (dict(teacher="/etc"), "teacher", "outside the folders"),
    (dict(teacher="../../.."), "teacher", "outside the folders"),
    (dict(teacher=999), "teacher", "no checkpoint 999"),
    (dict(teacher="tiny-distilled"), "teacher", "few-step student"),
    (dict(teacher=True), "teacher", "name or id"),
    (dict(student_plan="0-0-2"), "student_plan", "one stage"),
    (dict(steps=0), "steps", "steps"),
    (dict(kind="sculpt"), "kind", "pyramidal, distill"),
    (dict(out="/tmp/elsewhere"), "out", "outside the folders"),
], ids=["method", "empty teacher", "no teacher for dmd-pt", "teacher for dmd-ot", "teacher /etc",
        "teacher up the tree", "teacher id unknown", "teacher distilled", "teacher not a name",
        "one-stage plan", "steps", "kind", "out"])
def test_a_bad_distillation_is_refused_before_anything_is_stored(pwan_env, teacher_dir, distilled_dir, change,
                                                                 field, words):
    service.register_checkpoint(teacher_dir, "tiny", "tiny-teacher")
    service.register_checkpoint(distilled_dir, "tiny", "tiny-distilled")
    config = {**DISTILL, "teacher": "tiny-teacher", **change}
    config = {k: v for k, v in config.items() if v is not None}
    with pytest.raises(service.ValidationError) as info:
        service.submit_job("student", "tiny", config)
    assert info.value.field == field and words in str(info.value), str(info.value)
    assert stored() == (0, 0)


def test_a_distillations_teacher_is_a_registered_checkpoint_or_a_folder_inside_the_roots(pwan_env, teacher_dir,
                                                                                        tmp_path):
    import shutil

    teacher = service.register_checkpoint(teacher_dir, "tiny", "tiny-teacher")
    by_name = service.submit_job("student-a", "tiny", {**DISTILL, "teacher": "tiny-teacher"})
    assert by_name["config"]["kind"] == "distill" and by_name["config"]["method"] == "dmd-pt-star"
    assert by_name["config"]["teacher"] == teacher["path"] == str(teacher_dir.resolve())
    assert by_name["config"]["student_plan"] == "2-2-1" and by_name["config"]["steps"] == 2
    data_dir = tmp_path / "data"
    assert by_name["config"]["out"] == str((data_dir / "checkpoints" / "student-a").resolve())
    by_id = service.submit_job("student-b", "tiny", {**DISTILL, "method": "dmd-pt", "teacher": teacher["id"]})
    assert by_id["config"]["teacher"] == teacher["path"]
    inside = data_dir / "uploads" / "teacher"  # an unregistered folder inside the data folder
    shutil.copytree(teacher_dir, inside)
    by_path = service.submit_job("student-c", "tiny", {**DISTILL, "teacher": str(inside)})
    assert by_path["config"]["teacher"] == str(inside.resolve())
    over_mini = data_dir / "uploads" / "mini-teacher"
    shutil.copytree(teacher_dir, over_mini)
    (over_mini / "card.json").write_text('{"base": "mini", "kind": "full", "trained_for": "pyramidal"}')
    with pytest.raises(service.ValidationError, match="trained over 'mini', not 'tiny'"):
        service.submit_job("student-d", "tiny", {**DISTILL, "teacher": str(over_mini)})
    ot = service.submit_job("student-ot", "tiny", {**DISTILL, "method": "dmd-ot", "student_plan": "0-0-2"})
    assert ot["config"]["teacher"] == "" and ot["config"]["method"] == "dmd-ot"
    plain = service.submit_job("pyramid", "tiny", {"data": "world:2", "steps": 2, "schedule": "2-2-1"})
    assert plain["config"]["kind"] == "pyramidal" and "method" not in plain["config"]
    assert stored() == (5, 5)
