"""Runs and comparisons through the service, without a worker: validation, storage, enqueue,
cancel tokens, defaults.

Runs on SQLite and PostgreSQL. Messages go to a real SQLite broker file; nothing consumes them,
so the broker's queue size counts what was enqueued.
"""
from __future__ import annotations

import json

import pytest

import service
from db import queue
from db.models import Run
from workers.reaper import broker_queue_size

pytestmark = pytest.mark.timeout(120)

TINY = dict(model="tiny", schedule="2-2-1", frames=17, height=128, width=128, seed=3)


def counts() -> tuple[int, int]:
    """(rows in runs, messages waiting in the infer queue)."""
    return service.list_runs(limit=1)["total"], broker_queue_size("infer")


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
    ("unknown decoder", dict(decoder="fast"), "decoder", "full, tiny, both"),
    ("tiny decoder of a model without one", dict(model="wan2.1-1.3b", decoder="tiny"), "decoder",
     "no tiny decoder"),
]


@pytest.mark.parametrize("case", BAD_INPUTS, ids=[c[0] for c in BAD_INPUTS])
def test_bad_input_is_refused_and_writes_nothing(pwan_env, case):
    _name, overrides, field, words = case
    service.submit_run("a warm-up run", **TINY)  # the stores are not empty
    before = counts()
    kwargs = {"prompt": "a red circle moves to the right", **TINY, **overrides}
    prompt = kwargs.pop("prompt")
    with pytest.raises(service.ValidationError) as info:
        service.submit_run(prompt, **kwargs)
    assert info.value.field == field
    assert words in str(info.value)
    if "mode" not in overrides:  # a comparison picks the modes itself
        with pytest.raises(service.ValidationError):
            service.submit_comparison(prompt, **{k: v for k, v in kwargs.items() if k != "mode"})
    assert counts() == before == (1, 1)


def test_submit_stores_a_normalised_run_and_enqueues_it(pwan_env):
    row = service.submit_run("  a red circle moves to the right ", guidance=[5, 4, 3], **TINY)
    assert row["status"] == "queued" and row["prompt"] == "a red circle moves to the right"
    assert row["guidance"] == [5.0, 4.0, 3.0] and row["schedule"] == "2-2-1"
    assert counts() == (1, 1)
    assert service.get_run(row["id"])["enqueued_at"] is not None

    single = service.submit_run("a cat", **{**TINY, "seed": None})
    assert single["guidance"] == [5.0, 5.0, 5.0]
    assert 0 <= single["seed"] <= service.MAX_SEED


def test_comparison_shares_prompt_and_seed(pwan_env):
    group = service.submit_comparison("a cat walks", model="tiny", schedule="2-2-1", seed=11,
                                  guidance=[6.0, 5.0, 4.0])
    original, pyramid = group["runs"]
    assert (original["mode"], pyramid["mode"]) == ("original", "pyramidal")
    assert original["seed"] == pyramid["seed"] == group["seed"] == 11
    assert original["schedule"] == "0-0-5" and pyramid["schedule"] == "2-2-1"
    assert original["guidance"] == [4.0]
    assert counts() == (2, 2)
    assert service.list_runs(comparison_id=group["id"])["total"] == 2


def test_the_decoder_is_stored_kept_by_rerun_and_shared_by_a_comparison(pwan_env):
    row = service.submit_run("a red ball", decoder="both", **TINY)
    assert row["decoder"] == "both" and service.get_run(row["id"])["decoder"] == "both"
    assert service.submit_run("a red ball", **TINY)["decoder"] == "full"
    assert service.rerun(row["id"])["decoder"] == "both"
    group = service.submit_comparison("a cat walks", model="tiny", schedule="2-2-1", seed=1, decoder="tiny")
    assert [r["decoder"] for r in group["runs"]] == ["tiny", "tiny"]
    assert counts() == (5, 5)


def test_tiny_is_refused_for_a_model_without_a_tiny_decoder(pwan_env, monkeypatch):
    import service.runs

    monkeypatch.setattr(service.runs, "has_tiny_decoder", lambda model: False)
    for decoder in ("tiny", "both"):
        with pytest.raises(service.ValidationError, match="no tiny decoder.*finetune tiny-decoder") as info:
            service.submit_run("a red ball", decoder=decoder, **TINY)
        assert info.value.field == "decoder"
        with pytest.raises(service.ValidationError):
            service.submit_comparison("a red ball", decoder=decoder, model="tiny", seed=1)
    assert counts() == (0, 0)
    assert service.submit_run("a red ball", **TINY)["decoder"] == "full"


def test_decoded_video_path_says_which_file_holds_which_decode():
    full = {"decoder": "full", "output_path": "/o/1.mp4", "report": {}}
    tiny = {"decoder": "tiny", "output_path": "/o/2.mp4"}
    both = {"decoder": "both", "output_path": "/o/3.mp4", "report": {"tiny_video_path": "/o/3.tiny.mp4"}}
    assert [service.decoded_video_path(r, "full") for r in (full, tiny, both)] == ["/o/1.mp4", None, "/o/3.mp4"]
    assert [service.decoded_video_path(r, "tiny") for r in (full, tiny, both)] == [None, "/o/2.mp4", "/o/3.tiny.mp4"]
    assert service.decoded_video_path({"output_path": "/o/4.mp4"}) == "/o/4.mp4"  # a run from before decoders


def test_get_list_cancel_delete_rerun(pwan_env, tmp_path):
    a = service.submit_run("a red ball", **TINY)
    b = service.submit_run("a blue box", **TINY)
    with pytest.raises(service.NotFoundError, match="no run 99"):
        service.get_run(99)
    with pytest.raises(service.ValidationError) as info:
        service.get_run(0)
    assert info.value.field == "id"
    with pytest.raises(service.ValidationError, match="from 1 to"):
        service.get_run(2**70)

    assert [r["id"] for r in service.list_runs(search="BLUE")["items"]] == [b["id"]]
    assert service.list_runs(model="tiny", status=["queued"])["total"] == 2
    for bad, field in ((dict(status="lost"), "status"), (dict(limit=0), "limit"),
                       (dict(offset=-1), "offset")):
        with pytest.raises(service.ValidationError) as info:
            service.list_runs(**bad)
        assert info.value.field == field

    assert service.cancel_run(a["id"], a["cancel_token"])["status"] == "cancelled"  # queued: at once
    assert service.queue_counts()["cancelled"] == 1

    claim, _ = queue.claim(Run, b["id"], "w:1")
    assert service.cancel_run(b["id"], b["cancel_token"])["cancel_requested"] is True
    with pytest.raises(service.ConflictError, match="running"):
        service.delete_run(b["id"])
    video = tmp_path / "a.mp4"
    video.write_bytes(b"x")
    queue.finish(Run, b["id"], claim.attempt, "cancelled", output_path=str(video))
    assert service.delete_run(b["id"])["id"] == b["id"]
    assert not video.exists()
    with pytest.raises(service.NotFoundError):
        service.delete_run(b["id"])

    again = service.rerun(a["id"])
    assert again["id"] != a["id"] and again["status"] == "queued"
    for key in ("prompt", "model", "mode", "schedule", "guidance", "seed", "frames"):
        assert again[key] == a[key]


def test_cancel_needs_the_runs_token_or_admin(pwan_env):
    import hashlib

    from db import runs as db_runs
    from db.session import read_session

    a = service.submit_run("a red ball", **TINY)
    b = service.submit_run("a blue box", **TINY)
    token = a["cancel_token"]
    assert isinstance(token, str) and len(token) >= 32 and token != b["cancel_token"]
    # the token is returned once: never by reads, and stored only as its SHA-256
    assert "cancel_token" not in service.get_run(a["id"]) and "cancel_token_hash" not in service.get_run(a["id"])
    assert all("cancel_token" not in r and "cancel_token_hash" not in r for r in service.list_runs()["items"])
    with read_session() as session:
        stored = session.get(Run, a["id"]).cancel_token_hash
    assert stored == hashlib.sha256(token.encode()).hexdigest()

    with pytest.raises(service.UnauthorizedError, match="cancel token") as info:
        service.cancel_run(a["id"])
    assert info.value.field == "cancel_token"
    for wrong in ("guess", b["cancel_token"], token + "x", 42):
        with pytest.raises(service.ForbiddenError) as info:
            service.cancel_run(a["id"], wrong)
        assert info.value.field == "cancel_token"
    assert service.get_run(a["id"])["status"] == "queued"  # nothing changed
    with pytest.raises(service.NotFoundError):
        service.cancel_run(99_999, token)
    assert service.cancel_run(a["id"], token)["status"] == "cancelled"
    assert service.cancel_run(b["id"], admin=True)["status"] == "cancelled"  # the admin cancels any run

    # a comparison: a token per run, each cancels its own run only
    original, pyramid = service.submit_comparison("a cat", schedule="2-2-1", seed=1, model="tiny")["runs"]
    assert original["cancel_token"] != pyramid["cancel_token"]
    with pytest.raises(service.ForbiddenError):
        service.cancel_run(original["id"], pyramid["cancel_token"])
    assert service.cancel_run(original["id"], original["cancel_token"])["status"] == "cancelled"
    assert service.cancel_run(pyramid["id"], pyramid["cancel_token"])["status"] == "cancelled"
    again = service.rerun(a["id"])
    assert service.cancel_run(again["id"], again["cancel_token"])["status"] == "cancelled"

    # a run made before tokens existed: the admin only
    (old,) = db_runs.add_runs([{k: a[k] for k in db_runs.RUN_INPUT_FIELDS}])
    with pytest.raises(service.ForbiddenError, match="only the admin"):
        service.cancel_run(old["id"], token)
    assert service.cancel_run(old["id"], admin=True)["status"] == "cancelled"


def test_pruning_the_sql_broker_keeps_waiting_messages(pwan_env):
    from db.broker import prune_delivered_messages

    assert prune_delivered_messages("redis://127.0.0.1:6379/15") == 0  # not an SQL broker
    service.submit_run("a waiting run", **TINY)
    assert prune_delivered_messages(pwan_env["PWAN_BROKER_URL"], older_than_s=0) == 0
    assert broker_queue_size("infer") == 1


def test_the_page_defaults_to_the_pyramidal_finetune_shipped_for_the_default_preset(pwan_env, checkpoint_dir,
                                                                                   monkeypatch):
    from ui.tabs import common as page

    monkeypatch.setenv("PWAN_MODEL", "tiny")
    service.register_checkpoint(checkpoint_dir, "tiny", "tiny-lora")
    assert page.initial_model(page.model_choices()) == "tiny"  # another name: not the shipped pyramidal one
    ck = service.register_checkpoint(checkpoint_dir, "tiny", "tiny-pyramidal")
    assert page.initial_model(page.model_choices()) == f"{page.CHECKPOINT_PREFIX}{ck['id']}"
    # so does the API when a request names no model: pyramidal plans run the shipped finetune
    run = service.submit_run("a cat", schedule="2-2-1", seed=1)
    assert (run["model"], run["checkpoint_id"]) == ("tiny", ck["id"])
    assert service.submit_run("a cat", mode="original", schedule="0-0-5", seed=1)["checkpoint_id"] is None
    assert service.submit_run("a cat", model="tiny", schedule="2-2-1", seed=1)["checkpoint_id"] is None


def test_requests_without_guidance_get_the_models_recommended_one(pwan_env, checkpoint_dir, monkeypatch):
    from ui.tabs import common as page

    monkeypatch.setenv("PWAN_MODEL", "tiny")
    card = json.loads((checkpoint_dir / "card.json").read_text())
    (checkpoint_dir / "card.json").write_text(json.dumps({**card, "guidance": 2.5}))
    ck = service.register_checkpoint(checkpoint_dir, "tiny", "tuned")
    assert service.submit_run("a cat", checkpoint="tuned", schedule="2-2-1", seed=1)["guidance"] == [2.5] * 3
    assert service.submit_run("a cat", checkpoint="tuned", schedule="2-2-1", seed=1, guidance=6)["guidance"] == [6.0] * 3
    assert service.submit_run("a cat", model="tiny", schedule="2-2-1", seed=1)["guidance"] == [5.0] * 3
    original, pyramid = service.submit_comparison("a cat", checkpoint="tuned", schedule="2-2-1", seed=1)["runs"]
    assert pyramid["guidance"] == [2.5] * 3 and original["guidance"] == [5.0]  # the base preset's own
    assert page.model_guidance(f"{page.CHECKPOINT_PREFIX}{ck['id']}") == "2.5"
    assert page.model_guidance("tiny") == "5" and page.model_guidance("checkpoint:999") == "5"


def test_a_per_stage_recommendation_applies_to_plans_with_that_many_stages(pwan_env, checkpoint_dir, monkeypatch):
    from ui.tabs import common as page
    from ui.tabs.generate import submit

    monkeypatch.setenv("PWAN_MODEL", "tiny")
    card = {**json.loads((checkpoint_dir / "card.json").read_text()), "stages": 3}
    stages = card["stages"]
    per_stage = [1.0] * (stages - 1) + [2.5]
    (checkpoint_dir / "card.json").write_text(json.dumps({**card, "guidance": 2.0, "guidance_per_stage": per_stage}))
    ck = service.register_checkpoint(checkpoint_dir, "tiny", "tuned")
    plan = "-".join(["2"] * stages)
    assert service.submit_run("a cat", checkpoint="tuned", schedule=plan, seed=1)["guidance"] == per_stage
    fewer = "-".join(["2"] * (stages - 1))  # another stage count: the single value
    assert service.submit_run("a cat", checkpoint="tuned", schedule=fewer, seed=1)["guidance"] == [2.0] * (stages - 1)
    assert service.submit_run("a cat", checkpoint="tuned", schedule=plan, seed=1, guidance=3)["guidance"] == [3.0] * stages
    box = page.model_guidance(f"{page.CHECKPOINT_PREFIX}{ck['id']}")
    assert box == ", ".join(f"{g:g}" for g in per_stage)
    # the page leaves an untouched recommendation to the server, which fits it to the plan that runs
    common = dict(negative_prompt="", model=f"{page.CHECKPOINT_PREFIX}{ck['id']}", seed=1, random_seed=False,
                  size=None, compare=False)
    out = submit("a cat", mode="original", schedule="0-0-4", guidance=box, **common)
    assert service.get_run(out["run_ids"][0])["guidance"] == [2.0]
    out = submit("a cat", mode="pyramidal", schedule=plan, guidance=box, **common)
    assert service.get_run(out["run_ids"][0])["guidance"] == per_stage
    out = submit("a cat", mode="pyramidal", schedule=plan, guidance="4", **common)
    assert service.get_run(out["run_ids"][0])["guidance"] == [4.0] * stages


# ---------------------------------------------------------------------------- distilled checkpoints
@pytest.mark.parametrize("change,field", [(dict(schedule="20-20-10"), "schedule"), (dict(schedule="4-4-2"), "schedule"),
                                          (dict(guidance=5.0), "guidance"), (dict(guidance=[1, 1, 2]), "guidance"),
                                          (dict(mode="original", schedule="0-0-5"), "mode")],
                         ids=["20-20-10", "4-4-2", "guidance 5", "guidance per stage", "original"])
def test_a_distilled_checkpoint_refuses_what_would_break_its_recipe(pwan_env, distilled_dir, change, field):
    service.register_checkpoint(distilled_dir, "tiny", "tiny-distilled")
    kwargs = {**TINY, "model": None, "schedule": None, **change}
    with pytest.raises(service.ValidationError) as info:
        service.submit_run("a red circle", checkpoint="tiny-distilled", **kwargs)
    message = str(info.value)
    assert info.value.field == field and "tiny-distilled" in message
    assert "trained for schedule 2-2-1" in message and "guidance 1 (baked in)" in message
    assert counts() == (0, 0)


def test_a_distilled_checkpoint_runs_its_recipe_and_reruns_it(pwan_env, distilled_dir):
    ck = service.register_checkpoint(distilled_dir, "tiny", "tiny-distilled")
    kwargs = {**TINY, "model": None, "schedule": None}
    row = service.submit_run("a red circle", checkpoint=ck["id"], **kwargs)
    assert (row["model"], row["checkpoint_id"], row["mode"]) == ("tiny", ck["id"], "pyramidal")
    assert (row["schedule"], row["guidance"], row["guidance_source"]) == ("2-2-1", [1.0] * 3, "checkpoint card")
    same = service.submit_run("a red circle", checkpoint="tiny-distilled", **{**kwargs, "schedule": "2-2-1",
                                                                               "guidance": 1})
    assert (same["schedule"], same["guidance"]) == ("2-2-1", [1.0] * 3)
    again = service.rerun(row["id"])
    assert (again["schedule"], again["guidance"], again["seed"]) == ("2-2-1", [1.0] * 3, 3)
    assert counts() == (3, 3)
    # a plain (pyramidal) checkpoint keeps the default plan when none is named
    assert service.submit_run("a cat", model="tiny", seed=1)["schedule"] == "20-20-10"
    assert service.submit_run("a cat", model="tiny", mode="original", seed=1)["schedule"] == "0-0-50"


def test_a_distilled_checkpoint_is_compared_with_the_original_at_its_full_schedule(pwan_env, distilled_dir):
    service.register_checkpoint(distilled_dir, "tiny", "tiny-distilled")
    group = service.submit_comparison("a red circle", checkpoint="tiny-distilled", seed=11, frames=17, height=128,
                                      width=128)
    original, student = group["runs"]
    assert (student["mode"], student["schedule"], student["guidance"]) == ("pyramidal", "2-2-1", [1.0] * 3)
    assert student["checkpoint_name"] == "tiny-distilled"
    assert (original["mode"], original["schedule"], original["checkpoint_id"]) == ("original", "0-0-50", None)
    assert original["guidance"] == [5.0] and original["guidance_source"] == "default"  # its own, not the student's 1
    assert original["seed"] == student["seed"] == group["seed"] == 11
    assert counts() == (2, 2)
    # the page's locked boxes send the recipe itself: the same comparison
    same = service.submit_comparison("a red circle", checkpoint="tiny-distilled", schedule="2-2-1", guidance=1.0,
                                     seed=11)
    assert [(r["schedule"], r["guidance"]) for r in same["runs"]] == [("0-0-50", [5.0]), ("2-2-1", [1.0] * 3)]
    assert service.submit_comparison("a cat", checkpoint="tiny-distilled", original_schedule="0-0-10",
                                     seed=1)["runs"][0]["schedule"] == "0-0-10"
    with pytest.raises(service.ValidationError, match="trained for schedule 2-2-1"):
        service.submit_comparison("a cat", checkpoint="tiny-distilled", schedule="10-10-5", seed=1)
    assert counts() == (6, 6)
