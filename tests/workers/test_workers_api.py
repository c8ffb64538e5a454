"""The Python API the page uses, without a worker: validation, storage, enqueue, admin helpers.

Runs on SQLite and PostgreSQL. Messages go to a real SQLite broker file; nothing consumes them,
so the broker's queue size counts what was enqueued.
"""
from __future__ import annotations

import json

import pytest

from db import jobs as db_jobs
from db import queue
from db.models import Run
from workers import api
from workers.reaper import broker_queue_size

pytestmark = pytest.mark.timeout(120)

TINY = dict(model="tiny", schedule="2-2-1", frames=17, height=128, width=128, seed=3)


def counts() -> tuple[int, int]:
    """(rows in runs, messages waiting in the infer queue)."""
    return api.list_runs(limit=1)["total"], broker_queue_size("infer")


@pytest.fixture
def checkpoint_dir(tmp_path):
    folder = tmp_path / "ck-cats"
    folder.mkdir()
    (folder / "card.json").write_text(json.dumps({"base": "tiny", "kind": "lora", "steps": 10}))
    return folder


BAD_INPUTS = [
    ("empty prompt", dict(prompt=""), "prompt", "empty"),
    ("blank prompt", dict(prompt="   \n"), "prompt", "empty"),
    ("5,000-character prompt", dict(prompt="a" * 5000), "prompt", "5,000 characters"),
    ("prompt not text", dict(prompt=42), "prompt", "text"),
    ("long negative prompt", dict(negative_prompt="b" * 5000), "negative_prompt", "at most"),
    ("unknown preset", dict(model="giant-99b"), "model", "giant-99b"),
    ("unknown checkpoint name", dict(checkpoint="no-such-thing"), "checkpoint", "no-such-thing"),
    ("unknown checkpoint id", dict(checkpoint=999), "checkpoint", "999"),
    ("checkpoint id beyond the database", dict(checkpoint=2**70), "checkpoint", str(2**70)),
    ("schedule text", dict(schedule="fast please"), "schedule", "20-20-10"),
    ("too many stages", dict(schedule="1-1-1-1-1"), "schedule", "at most"),
    ("original with stages", dict(mode="original"), "schedule", "0-0-5"),
    ("unknown mode", dict(mode="sideways"), "mode", "pyramidal"),
    ("frames off the grid", dict(frames=10), "frames", "nearest valid"),
    ("height off the grid", dict(height=100), "height", "multiple of 64"),
    ("zero width", dict(width=0), "width", "multiple of 64"),
    ("negative seed", dict(seed=-1), "seed", "0 to"),
    ("huge seed", dict(seed=2**40), "seed", "0 to"),
    ("fractional seed", dict(seed=1.5), "seed", "whole number"),
    ("guidance too high", dict(guidance=50.0), "guidance", "out of range"),
    ("guidance per stage count", dict(guidance=[5.0, 4.0]), "guidance", "one per stage"),
]


@pytest.mark.parametrize("case", BAD_INPUTS, ids=[c[0] for c in BAD_INPUTS])
def test_bad_input_is_refused_and_writes_nothing(pwan_env, case):
    _name, overrides, field, words = case
    api.submit_run("a warm-up run", **TINY)  # the stores are not empty
    before = counts()
    kwargs = {"prompt": "a red circle moves to the right", **TINY, **overrides}
    prompt = kwargs.pop("prompt")
    with pytest.raises(api.ValidationError) as info:
        api.submit_run(prompt, **kwargs)
    assert info.value.field == field
    assert words in str(info.value)
    if "mode" not in overrides:  # a comparison picks the modes itself
        with pytest.raises(api.ValidationError):
            api.submit_comparison(prompt, **{k: v for k, v in kwargs.items() if k != "mode"})
    assert counts() == before == (1, 1)


def test_submit_stores_a_normalised_run_and_enqueues_it(pwan_env):
    row = api.submit_run("  a red circle moves to the right ", guidance=[5, 4, 3], **TINY)
    assert row["status"] == "queued" and row["prompt"] == "a red circle moves to the right"
    assert row["guidance"] == [5.0, 4.0, 3.0] and row["schedule"] == "2-2-1"
    assert counts() == (1, 1)
    assert api.get_run(row["id"])["enqueued_at"] is not None

    single = api.submit_run("a cat", **{**TINY, "seed": None})
    assert single["guidance"] == [5.0, 5.0, 5.0]
    assert 0 <= single["seed"] <= api.MAX_SEED


def test_comparison_shares_prompt_and_seed(pwan_env):
    group = api.submit_comparison("a cat walks", model="tiny", schedule="2-2-1", seed=11,
                                  guidance=[6.0, 5.0, 4.0])
    original, pyramid = group["runs"]
    assert (original["mode"], pyramid["mode"]) == ("original", "pyramidal")
    assert original["seed"] == pyramid["seed"] == group["seed"] == 11
    assert original["schedule"] == "0-0-5" and pyramid["schedule"] == "2-2-1"
    assert original["guidance"] == [4.0]
    assert counts() == (2, 2)
    assert api.list_runs(comparison_id=group["id"])["total"] == 2


def test_get_list_cancel_delete_rerun(pwan_env, tmp_path):
    a = api.submit_run("a red ball", **TINY)
    b = api.submit_run("a blue box", **TINY)
    with pytest.raises(api.NotFoundError, match="no run 99"):
        api.get_run(99)
    with pytest.raises(api.ValidationError) as info:
        api.get_run(0)
    assert info.value.field == "id"
    with pytest.raises(api.ValidationError, match="from 1 to"):
        api.get_run(2**70)

    assert [r["id"] for r in api.list_runs(search="BLUE")["items"]] == [b["id"]]
    assert api.list_runs(model="tiny", status=["queued"])["total"] == 2
    for bad, field in ((dict(status="lost"), "status"), (dict(limit=0), "limit"),
                       (dict(offset=-1), "offset")):
        with pytest.raises(api.ValidationError) as info:
            api.list_runs(**bad)
        assert info.value.field == field

    assert api.cancel_run(a["id"], a["cancel_token"])["status"] == "cancelled"  # queued: at once
    assert api.queue_counts()["cancelled"] == 1

    claim, _ = queue.claim(Run, b["id"], "w:1")
    assert api.cancel_run(b["id"], b["cancel_token"])["cancel_requested"] is True
    with pytest.raises(api.ConflictError, match="running"):
        api.delete_run(b["id"])
    video = tmp_path / "a.mp4"
    video.write_bytes(b"x")
    queue.finish(Run, b["id"], claim.attempt, "cancelled", output_path=str(video))
    assert api.delete_run(b["id"])["id"] == b["id"]
    assert not video.exists()
    with pytest.raises(api.NotFoundError):
        api.delete_run(b["id"])

    again = api.rerun(a["id"])
    assert again["id"] != a["id"] and again["status"] == "queued"
    for key in ("prompt", "model", "mode", "schedule", "guidance", "seed", "frames"):
        assert again[key] == a[key]


def test_cancel_needs_the_runs_token_or_admin(pwan_env):
    import hashlib

    from db import runs as db_runs
    from db.session import read_session

    a = api.submit_run("a red ball", **TINY)
    b = api.submit_run("a blue box", **TINY)
    token = a["cancel_token"]
    assert isinstance(token, str) and len(token) >= 32 and token != b["cancel_token"]
    # the token is returned once: never by reads, and stored only as its SHA-256
    assert "cancel_token" not in api.get_run(a["id"]) and "cancel_token_hash" not in api.get_run(a["id"])
    assert all("cancel_token" not in r and "cancel_token_hash" not in r for r in api.list_runs()["items"])
    with read_session() as session:
        stored = session.get(Run, a["id"]).cancel_token_hash
    assert stored == hashlib.sha256(token.encode()).hexdigest()

    with pytest.raises(api.UnauthorizedError, match="cancel token") as info:
        api.cancel_run(a["id"])
    assert info.value.field == "cancel_token"
    for wrong in ("guess", b["cancel_token"], token + "x", 42):
        with pytest.raises(api.ForbiddenError) as info:
            api.cancel_run(a["id"], wrong)
        assert info.value.field == "cancel_token"
    assert api.get_run(a["id"])["status"] == "queued"  # nothing changed
    with pytest.raises(api.NotFoundError):
        api.cancel_run(99_999, token)
    assert api.cancel_run(a["id"], token)["status"] == "cancelled"
    assert api.cancel_run(b["id"], admin=True)["status"] == "cancelled"  # the admin cancels any run

    # a comparison: a token per run, each cancels its own run only
    original, pyramid = api.submit_comparison("a cat", schedule="2-2-1", seed=1, model="tiny")["runs"]
    assert original["cancel_token"] != pyramid["cancel_token"]
    with pytest.raises(api.ForbiddenError):
        api.cancel_run(original["id"], pyramid["cancel_token"])
    assert api.cancel_run(original["id"], original["cancel_token"])["status"] == "cancelled"
    assert api.cancel_run(pyramid["id"], pyramid["cancel_token"])["status"] == "cancelled"
    again = api.rerun(a["id"])
    assert api.cancel_run(again["id"], again["cancel_token"])["status"] == "cancelled"

    # a run made before tokens existed: the admin only
    (old,) = db_runs.add_runs([{k: a[k] for k in db_runs.RUN_INPUT_FIELDS}])
    with pytest.raises(api.ForbiddenError, match="only the admin"):
        api.cancel_run(old["id"], token)
    assert api.cancel_run(old["id"], admin=True)["status"] == "cancelled"


def test_checkpoints(pwan_env, checkpoint_dir, tmp_path):
    names = [c["name"] for c in api.list_checkpoints()]
    assert "tiny" in names
    ck = api.register_checkpoint(checkpoint_dir, "tiny", "cats")
    assert ck["kind"] == "lora" and ck["card"]["steps"] == 10
    listed = api.list_checkpoints()
    assert {"name": "cats", "builtin": False}.items() <= listed[-1].items()
    assert all(c["builtin"] for c in listed[:-1])

    for args, field in (
        ((tmp_path / "nowhere", "tiny", "x"), "path"),
        ((checkpoint_dir, "giant", "x"), "base"),
        ((checkpoint_dir, "tiny", "cats"), "name"),
        ((checkpoint_dir, "tiny", " "), "name"),
    ):
        with pytest.raises(api.ValidationError) as info:
            api.register_checkpoint(*args)
        assert info.value.field == field

    run = api.submit_run("a cat", checkpoint="cats", model=None, schedule="2-2-1", seed=1)
    assert run["model"] == "tiny" and run["checkpoint_id"] == ck["id"]
    # a comparison sets the finetuned checkpoint against its pretrained base
    original, pyramid = api.submit_comparison("a cat", checkpoint="cats", schedule="2-2-1", seed=1)["runs"]
    assert (pyramid["checkpoint_id"], pyramid["model"]) == (ck["id"], "tiny")
    assert (original["checkpoint_id"], original["model"], original["mode"]) == (None, "tiny", "original")
    with pytest.raises(api.ConflictError, match=str(run["id"])):
        api.delete_checkpoint(ck["id"])
    api.cancel_run(run["id"], run["cancel_token"])
    api.cancel_run(pyramid["id"], pyramid["cancel_token"])

    assert api.rename_checkpoint(ck["id"], "cats-v2")["name"] == "cats-v2"
    assert api.delete_checkpoint(ck["id"])["name"] == "cats-v2"
    with pytest.raises(api.NotFoundError):
        api.get_checkpoint(ck["id"])
    with pytest.raises(api.ValidationError) as info:
        api.rerun(run["id"])
    assert info.value.field == "checkpoint"


def test_finetune_job_helpers(pwan_env):
    job = db_jobs.add_job(name="cats-v1", base="tiny", config={"steps": 10})
    assert api.list_jobs()["total"] == 1
    assert api.get_job(job["id"])["name"] == "cats-v1"
    assert api.cancel_job(job["id"])["status"] == "cancelled"
    with pytest.raises(api.NotFoundError):
        api.get_job(job["id"] + 1)
    with pytest.raises(api.ValidationError):
        api.list_jobs(status="weird")


def test_pruning_the_sql_broker_keeps_waiting_messages(pwan_env):
    from db.broker import prune_delivered_messages

    assert prune_delivered_messages("redis://127.0.0.1:6379/15") == 0  # not an SQL broker
    api.submit_run("a waiting run", **TINY)
    assert prune_delivered_messages(pwan_env["PWAN_BROKER_URL"], older_than_s=0) == 0
    assert broker_queue_size("infer") == 1


def test_shipped_checkpoints_are_registered_once(pwan_env, tmp_path):
    models = tmp_path / "models"
    good, wrong_base, no_card = models / "mini-pyr", models / "other", models / "half-written"
    for folder in (good, wrong_base, no_card):
        folder.mkdir(parents=True)
    (good / "card.json").write_text(json.dumps({"base": "tiny", "kind": "full", "steps": 5}))
    (wrong_base / "card.json").write_text(json.dumps({"base": "no-such-preset", "kind": "full"}))
    added = api.register_shipped_checkpoints(models)
    assert [(r["name"], r["base"]) for r in added] == [("mini-pyr", "tiny")]
    assert api.register_shipped_checkpoints(models) == []  # already there
    names = [c["name"] for c in api.list_checkpoints()]
    assert "mini-pyr" in names and "other" not in names and "half-written" not in names
    assert api.register_shipped_checkpoints(tmp_path / "missing") == []


def test_the_page_defaults_to_the_pyramidal_finetune_shipped_for_the_default_preset(pwan_env, checkpoint_dir,
                                                                                   monkeypatch):
    from ui.tabs import common
    from workers import api

    monkeypatch.setenv("PWAN_MODEL", "tiny")
    api.register_checkpoint(checkpoint_dir, "tiny", "tiny-lora")
    assert common.initial_model(common.model_choices()) == "tiny"  # another name: not the shipped pyramidal one
    ck = api.register_checkpoint(checkpoint_dir, "tiny", "tiny-pyramidal")
    assert common.initial_model(common.model_choices()) == f"{common.CHECKPOINT_PREFIX}{ck['id']}"
    # so does the API when a request names no model: pyramidal plans run the shipped finetune
    run = api.submit_run("a cat", schedule="2-2-1", seed=1)
    assert (run["model"], run["checkpoint_id"]) == ("tiny", ck["id"])
    assert api.submit_run("a cat", mode="original", schedule="0-0-5", seed=1)["checkpoint_id"] is None
    assert api.submit_run("a cat", model="tiny", schedule="2-2-1", seed=1)["checkpoint_id"] is None


def test_requests_without_guidance_get_the_models_recommended_one(pwan_env, checkpoint_dir, monkeypatch):
    from ui.tabs.common import CHECKPOINT_PREFIX, model_guidance

    monkeypatch.setenv("PWAN_MODEL", "tiny")
    card = json.loads((checkpoint_dir / "card.json").read_text())
    (checkpoint_dir / "card.json").write_text(json.dumps({**card, "guidance": 2.5}))
    ck = api.register_checkpoint(checkpoint_dir, "tiny", "tuned")
    assert api.submit_run("a cat", checkpoint="tuned", schedule="2-2-1", seed=1)["guidance"] == [2.5] * 3
    assert api.submit_run("a cat", checkpoint="tuned", schedule="2-2-1", seed=1, guidance=6)["guidance"] == [6.0] * 3
    assert api.submit_run("a cat", model="tiny", schedule="2-2-1", seed=1)["guidance"] == [5.0] * 3
    original, pyramid = api.submit_comparison("a cat", checkpoint="tuned", schedule="2-2-1", seed=1)["runs"]
    assert pyramid["guidance"] == [2.5] * 3 and original["guidance"] == [5.0]  # the base preset's own
    assert model_guidance(f"{CHECKPOINT_PREFIX}{ck['id']}") == "2.5"
    assert model_guidance("tiny") == "5" and model_guidance("checkpoint:999") == "5"


def test_a_per_stage_recommendation_applies_to_plans_with_that_many_stages(pwan_env, checkpoint_dir, monkeypatch):
    from ui.tabs.common import CHECKPOINT_PREFIX, model_guidance
    from ui.tabs.generate import submit

    monkeypatch.setenv("PWAN_MODEL", "tiny")
    card = {**json.loads((checkpoint_dir / "card.json").read_text()), "stages": 3}
    stages = card["stages"]
    per_stage = [1.0] * (stages - 1) + [2.5]
    (checkpoint_dir / "card.json").write_text(json.dumps({**card, "guidance": 2.0, "guidance_per_stage": per_stage}))
    ck = api.register_checkpoint(checkpoint_dir, "tiny", "tuned")
    plan = "-".join(["2"] * stages)
    assert api.submit_run("a cat", checkpoint="tuned", schedule=plan, seed=1)["guidance"] == per_stage
    fewer = "-".join(["2"] * (stages - 1))  # another stage count: the single value
    assert api.submit_run("a cat", checkpoint="tuned", schedule=fewer, seed=1)["guidance"] == [2.0] * (stages - 1)
    assert api.submit_run("a cat", checkpoint="tuned", schedule=plan, seed=1, guidance=3)["guidance"] == [3.0] * stages
    box = model_guidance(f"{CHECKPOINT_PREFIX}{ck['id']}")
    assert box == ", ".join(f"{g:g}" for g in per_stage)
    # the page leaves an untouched recommendation to the server, which fits it to the plan that runs
    common = dict(negative_prompt="", model=f"{CHECKPOINT_PREFIX}{ck['id']}", seed=1, random_seed=False,
                  size=None, compare=False)
    out = submit("a cat", mode="original", schedule="0-0-4", guidance=box, **common)
    assert api.get_run(out["run_ids"][0])["guidance"] == [2.0]
    out = submit("a cat", mode="pyramidal", schedule=plan, guidance=box, **common)
    assert api.get_run(out["run_ids"][0])["guidance"] == per_stage
    out = submit("a cat", mode="pyramidal", schedule=plan, guidance="4", **common)
    assert api.get_run(out["run_ids"][0])["guidance"] == [4.0] * stages
