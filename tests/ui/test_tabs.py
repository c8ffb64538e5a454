"""The page's tabs without a server: their handlers answer ``{component: value}``, and the page
reaches the backend only through :mod:`service`."""
from __future__ import annotations

import ast
from pathlib import Path

import gradio as gr
import pytest


ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def tabs(pwan_env, monkeypatch):
    """The built page's tabs (``gen``, ``cmp``, ``hist``, ``adm``) in an isolated installation."""
    monkeypatch.setenv("PWAN_MODEL", "tiny")
    from ui.tabs import admin, common, compare, generate, history

    with gr.Blocks():
        banner, admin_ok, held_tokens = gr.Markdown(), gr.State(False), gr.State({})
        with gr.Tabs() as strip:
            shared = common.Shared(tabs=strip, banner=banner, admin_ok=admin_ok, held_tokens=held_tokens)
            gen = generate.build(shared)
            found = {"gen": gen, "cmp": compare.build(shared), "hist": history.build(shared),
                     "adm": admin.build(shared, model=gen.model)}
    return found


def test_the_page_and_its_tabs_import_service_not_workers():
    for path in [ROOT / "ui" / "page.py", *sorted((ROOT / "ui" / "tabs").glob("*.py"))]:
        tree = ast.parse(path.read_text())
        names = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
        names += [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
        assert not [n for n in names if n.split(".")[0] == "workers"], path


def test_generate_queues_follows_and_keeps_the_cancel_token(tabs):
    gen = tabs["gen"]
    out = gen.on_generate("a cat", "", "tiny", "pyramidal", "2-2-1", "5", 7, False, "17 x 128 x 128", False, {})
    run_id = out[gen.submitted]["run_ids"][0]
    assert out[gen.message] == f"Queued run #{run_id}, seed 7."
    assert list(out[gen.shared.held_tokens]) == [str(run_id)]
    first = gen.poll(out[gen.watch])
    assert f'data-run="{run_id}"' in first[gen.progress] and first[gen.timer].active
    again = gen.poll(first[gen.watch])  # nothing changed: the cards are skipped, the timer goes on
    assert again[gen.progress] == gr.skip() and again[gen.timer].active
    cancelled = gen.cancel_current(first[gen.watch], out[gen.shared.held_tokens], False)
    assert cancelled[gen.message] == f"Cancelling run #{run_id} (cancelled)."


def test_generate_refuses_bad_input_with_a_message(tabs):
    gen = tabs["gen"]
    out = gen.on_generate("", "", "tiny", "pyramidal", "2-2-1", "5", 1, False, "17 x 128 x 128", False, {})
    assert "prompt is empty" in out[gen.message] and out[gen.submitted] is None
    assert gen.shared.held_tokens not in out
    refused = gen.on_schedule("2-0-1", "17 x 128 x 128")
    assert refused[gen.message]["value"].startswith("⚠") and refused[gen.size] == gr.update()
    accepted = gen.on_schedule("2-2-1", "17 x 128 x 128")  # the warning goes, the box stays for the next message
    assert accepted[gen.message] == gr.update(value="", visible=True)


def test_history_actions_answer_with_a_message(tabs):
    from ui.tabs.common import friendly
    from ui.tabs.history import EMPTY

    hist = tabs["hist"]
    assert hist.reload(None, None, None) == {hist.table: EMPTY}
    refused = hist.soft(hist.delete_run)(None, False, None, None, None)
    assert refused == {hist.message: "⚠ deleting runs needs the admin password (unlock it in the Admin tab)"}
    with pytest.raises(gr.Error, match="not finished"):
        friendly(tabs["cmp"].open_with)("a", 99)


def test_admin_actions_need_the_unlocked_session(tabs):
    from ui.tabs.admin import admin_only

    adm = tabs["adm"]
    with pytest.raises(gr.Error, match="unlock the admin tab"):
        admin_only(adm.refresh_tables)(False)
    tables = admin_only(adm.refresh_tables)(True)
    assert tables[adm.job_table][0][0] == "" and tables[adm.ckpt_table][0][0] == ""


def test_fast_decode_queues_a_tiny_decoder_run(tabs):
    import service

    gen = tabs["gen"]
    out = gen.on_generate("a cat", "", "tiny", "pyramidal", "2-2-1", "5", 7, False, "17 x 128 x 128", False, {},
                          True)
    (run_id,) = out[gen.submitted]["run_ids"]
    assert service.get_run(run_id)["decoder"] == "tiny"
    plain = gen.on_generate("a cat", "", "tiny", "pyramidal", "2-2-1", "5", 7, False, "17 x 128 x 128", False, {})
    assert service.get_run(plain[gen.submitted]["run_ids"][0])["decoder"] == "full"


def test_compare_decodes_a_run_both_ways(tabs, monkeypatch):
    import service
    from db import queue
    from db.models import Run

    cmp = tabs["cmp"]
    with pytest.raises(Exception, match="pick run A"):
        cmp.decode_both(None, {})
    run = service.submit_run("a cat", model="tiny", schedule="2-2-1", seed=4, frames=17, height=128, width=128)
    out = cmp.decode_both(run["id"], {})
    new_id = out[cmp.both_watch]
    new = service.get_run(new_id)
    assert new["decoder"] == "both" and new["seed"] == 4 and out[cmp.both_timer].active
    assert str(new_id) in out[cmp.shared.held_tokens] and f"Queued run #{new_id}" in out[cmp.message]
    assert cmp.poll_both(new_id)[cmp.videos].count("data-run") >= 1  # its progress while it waits
    report = {"seconds": {"decode": 1.0, "decode_tiny": 0.25}, "decode_psnr_db": 30.0, "tiny_video_path": "/x"}
    real_get = service.get_run
    monkeypatch.setattr(service, "get_run", lambda i: {**real_get(i), "status": "done", "report": report,
                                                        "finished_at": "t"})
    shown = cmp.poll_both(new_id)
    assert "decoder=tiny" in shown[cmp.videos] and "30.00 dB" in shown[cmp.quality]
    assert not shown[cmp.both_timer].active and len(shown[cmp.table]) == 2
    again = cmp.decode_both(new_id, {})  # a run decoded both ways is shown at once, nothing queued
    assert "decoder=tiny" in again[cmp.videos] and cmp.both_watch not in again
    assert queue.counts_by_status(Run)["queued"] == 2


def test_a_distilled_model_locks_schedule_guidance_and_mode_until_another_is_chosen(tabs, tmp_path):
    import json

    import service
    from tests.service.conftest import distilled_card
    from ui.tabs.common import CHECKPOINT_PREFIX, model_choices

    gen = tabs["gen"]
    folder = tmp_path / "tiny-distilled"
    folder.mkdir()
    (folder / "card.json").write_text(json.dumps(distilled_card()))
    ck = service.register_checkpoint(folder, "tiny", "tiny-distilled")
    value = f"{CHECKPOINT_PREFIX}{ck['id']}"
    assert ("tiny-distilled — 2-2-1, 5 steps, guidance baked in, DMD-PT*", value) in model_choices()
    locked = gen.on_model(value, "10-10-5")
    assert locked[gen.schedule]["value"] == "2-2-1" and locked[gen.schedule]["interactive"] is False
    assert locked[gen.guidance]["value"] == "1" and locked[gen.guidance]["interactive"] is False
    assert locked[gen.mode]["value"] == "pyramidal" and locked[gen.mode]["interactive"] is False
    assert locked[gen.lock_note]["visible"] and "trained for 2-2-1" in locked[gen.lock_note]["value"]
    # what the locked boxes send is the recipe: queued as such, alone or against the original
    out = gen.on_generate("a cat", "", value, "pyramidal", "2-2-1", "1", 7, False, "17 x 128 x 128", False, {})
    assert service.get_run(out[gen.submitted]["run_ids"][0])["guidance"] == [1.0, 1.0, 1.0]
    pair = gen.on_generate("a cat", "", value, "pyramidal", "2-2-1", "1", 7, False, "17 x 128 x 128", True, {})
    original, student = (service.get_run(i) for i in pair[gen.submitted]["run_ids"])
    assert (original["schedule"], student["schedule"], original["seed"]) == ("0-0-50", "2-2-1", student["seed"])
    unlocked = gen.on_model("tiny", "2-2-1")
    assert unlocked[gen.schedule]["interactive"] is True and unlocked[gen.guidance]["interactive"] is True
    assert unlocked[gen.mode]["interactive"] is True and unlocked[gen.lock_note]["visible"] is False
    assert unlocked[gen.guidance]["value"] == "5"


def test_admin_starts_a_distillation_and_plots_both_losses(tabs, tmp_path, monkeypatch):
    import json

    import service
    from finetune.distill import METHODS
    from ui.tabs.admin import DISTILL_METHODS

    assert DISTILL_METHODS == list(METHODS)  # the form offers what the training code knows
    adm = tabs["adm"]
    teacher = tmp_path / "teacher"
    teacher.mkdir()
    (teacher / "card.json").write_text(json.dumps({"base": "tiny", "kind": "full", "trained_for": "pyramidal"}))
    ck = service.register_checkpoint(teacher, "tiny", "tiny-teacher")
    shown = adm.on_kind("distill", adm.job_config.value)
    assert shown[adm.distill_box]["visible"] and '"batch"' in shown[adm.job_config]
    assert ("tiny-teacher (over tiny)", "tiny-teacher") in shown[adm.job_teacher]["choices"]
    out = adm.start_job("distill", "student", "tiny", '{"data": "world:2", "frames": 17, "height": 64, "width": 64}',
                        "dmd-pt", "tiny-teacher", "2-2-1", 3)
    job_id = int(out[adm.job_detail].split("#")[1].rstrip("."))
    job = service.get_job(job_id)
    assert job["config"]["kind"] == "distill" and job["config"]["method"] == "dmd-pt"
    assert job["config"]["teacher"] == ck["path"] and job["config"]["steps"] == 3
    assert out[adm.job_table][0][2] == "distillation"
    with pytest.raises(service.ValidationError, match="method"):
        adm.start_job("distill", "student-2", "tiny", "{}", "dmd-nope", "tiny-teacher", "2-2-1", 3)
    losses = [{"step": 1, "generator_loss": 0.5, "critic_loss": 2.0}, {"step": 2, "generator_loss": 0.4, "critic_loss": 1.5}]
    real_get = service.get_job
    monkeypatch.setattr(service, "get_job", lambda i: {**real_get(i), "losses": losses, "status": "running"})
    followed = adm.follow_job(job_id)
    frame = followed[adm.job_plot]["value"]
    assert sorted(set(frame["series"])) == ["critic", "generator"] and len(frame) == 4
    assert followed[adm.job_timer].active and "(distillation)" in followed[adm.job_detail]
    assert followed[adm.model] == gr.skip()  # the model list is left alone while the job runs
    monkeypatch.setattr(service, "get_job", lambda i: {**real_get(i), "losses": losses, "status": "done"})
    ended = adm.follow_job(job_id)
    assert not ended[adm.job_timer].active and ("tiny-teacher (full over tiny)", f"checkpoint:{ck['id']}") in \
        ended[adm.model]["choices"]  # then Generate's list is fresh: a finished job's checkpoint is in it
