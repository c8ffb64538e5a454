"""The page's pure pieces: plan-aware sizes, guidance parsing, time left, speed-up, cards."""
from __future__ import annotations

import datetime as dt

import pytest

from core import RequestError, StagePlan
from ui import views


@pytest.mark.parametrize("schedule", views.SCHEDULE_PRESETS + ["4-4", "1-1-1-1"])
def test_the_page_never_offers_a_shape_the_plan_refuses(schedule):
    plan = StagePlan.parse(schedule)
    sizes = views.valid_sizes(schedule)
    assert sizes
    for label in sizes:
        plan.validate_shape(*views.parse_size(label))
    if plan.num_stages == 3:
        assert views.DEFAULT_SIZE in sizes and "9 x 128 x 128" not in sizes


def test_a_bad_schedule_offers_no_size():
    assert views.valid_sizes("2-0-1") == [] and views.valid_sizes("fast") == []
    with pytest.raises(RequestError):
        views.plan_for("fast")


def test_guidance_and_size_parsing():
    assert views.parse_guidance("5") == 5.0 and views.parse_guidance("") == 5.0
    assert views.parse_guidance("7, 5;3") == [7.0, 5.0, 3.0]
    with pytest.raises(ValueError, match="one per stage"):
        views.parse_guidance("seven")
    assert views.parse_size("17 x 128 x 256") == (17, 128, 256)
    with pytest.raises(ValueError):
        views.parse_size("big")
    assert views.baseline_of("20-20-10") == "0-0-50"


def test_time_left_and_progress_card():
    now = dt.datetime(2026, 1, 1, 12, 0, 10)
    row = {"id": 4, "status": "running", "started_at": "2026-01-01T12:00:00.000Z", "fraction": 0.25,
           "stage": 0, "stages": 3, "step": 2, "steps": 4, "mode": "pyramidal", "schedule": "4-4-2",
           "prompt": "a cat"}
    assert views.eta_seconds(row, now) == pytest.approx(30.0)
    html = views.progress_html(row)
    assert "stage 1/3" in html and "step 2/4" in html and "25%" in html and "left" in html
    assert views.eta_seconds({**row, "status": "queued"}, now) is None
    failed = views.progress_html({**row, "status": "failed", "error": "<b>boom</b>"})
    assert "&lt;b&gt;boom" in failed  # escaped


def test_decoding_and_writing_show_their_phase_and_time_left():
    now = dt.datetime(2026, 1, 1, 12, 0, 10)
    row = {"id": 4, "status": "running", "started_at": "2026-01-01T12:00:00.000Z", "fraction": 0.8,
           "phase": "decoding", "stage": 2, "stages": 3, "step": 5, "steps": 5, "mode": "pyramidal",
           "schedule": "2-2-5", "prompt": "a cat"}
    assert views.eta_seconds(row, now) == pytest.approx(2.5)
    html = views.progress_html(row)
    assert "decoding…" in html and "80%" in html and "left" in html and "step 5/5" not in html
    writing = views.progress_html({**row, "phase": "writing video", "fraction": 0.95})
    assert "writing video…" in writing and "stage 3/3" not in writing
    assert "loading the model" in views.progress_html({**row, "phase": "loading", "fraction": 0.0})
    assert "stage 3/3 · step 5/5" in views.progress_html({**row, "phase": "denoising"})
    assert views.eta_seconds({**row, "fraction": 1.0}, now) is None  # still running: unknown, not 0 s


def test_history_still_only_for_a_finished_run_with_one():
    row = {"id": 9, "status": "done", "still_path": "/data/outputs/9.still.jpg",
           "finished_at": "2026-01-01T12:00:00.000Z"}
    img = views.still_html(row)
    assert img.startswith("<img") and 'src="/api/runs/9/still?v=2026-01-01T12:00:00.000Z"' in img
    assert views.still_html({**row, "status": "running"}) == ""
    assert views.still_html({**row, "still_path": None}) == ""


def test_speedup_and_card():
    original = {"id": 1, "tflops": 8.0, "report": {"seconds": {"denoise": 4.0, "total": 6.0}}}
    pyramid = {"id": 2, "tflops": 2.0, "report": {"seconds": {"denoise": 1.0, "total": 3.0}}}
    assert views.speedup(pyramid, original) == {"denoise": 4.0, "total": 2.0, "tflops": 4.0}
    row = {"id": 2, "status": "done", "model": "tiny", "checkpoint_name": None, "mode": "pyramidal",
           "schedule": "2-2-1", "seed": 5, "frames": 17, "height": 128, "width": 128, "guidance": [5, 5, 5],
           "prompt": "a cat", "tflops": 2.0, "load_seconds": 0.0, "peak_memory_mb": 400,
           "report": {"seconds": {"encode": 0.1, "denoise": 1.0, "decode": 1.0, "total": 3.0,
                                  "stages": [0.2, 0.3, 0.5]}, "tflops_per_stage": [0.1, 0.4, 1.5]}}
    card = views.run_card(row, {**original, "status": "done", "id": 1})
    assert "stage 3" in card and "seed `5`" in card and "4.00x fewer TFLOPs" in card
    table = views.compare_table({**original, "mode": "original", "schedule": "0-0-5"}, row)
    assert ["TFLOPs", "8.0", "2.0", "4.00x"] in table


def test_a_distilled_checkpoint_offers_its_few_step_schedules(monkeypatch):
    from ui.tabs import common

    class FakeApi:
        @staticmethod
        def get_checkpoint(checkpoint_id):
            assert checkpoint_id == 3
            return {"card": {"schedule": "2-2-1", "recommended_schedules": ["1-1-1", "2-2-1", "20-20-10"]}}

    monkeypatch.setattr(common, "service", FakeApi)
    assert common.schedule_choices("checkpoint:3")[:3] == ["1-1-1", "2-2-1", "20-20-10"]
    assert common.schedule_choices("tiny") == views.SCHEDULE_PRESETS
    assert common.split_model("checkpoint:3") == (None, 3) and common.split_model("tiny") == ("tiny", None)


def test_table_rows_and_summaries():
    run = {"id": 4, "status": "done", "model": "tiny", "checkpoint_name": None, "mode": "pyramidal",
           "schedule": "2-2-1", "frames": 17, "height": 128, "width": 128, "seed": 3,
           "created_at": "2026-01-02T03:04:05.678", "total_seconds": 1.25, "prompt": "x" * 70,
           "still_path": "s.jpg", "finished_at": "t"}
    row = views.history_row(run)
    assert row[0] == 4 and 'src="/api/runs/4/still?v=t"' in row[1] and row[8] == "2026-01-02 03:04:05"
    assert row[9] == "1.2" and row[10] == "x" * 59 + "…"
    job = {"id": 2, "name": "j", "base": "tiny", "status": "running", "step": 5, "steps": 10, "fraction": 0.5,
           "losses": [{"step": 5, "loss": 0.12345}, "noise"], "created_at": None, "error": None,
           "config": {"steps": 10, "lr": None}, "checkpoint_id": 9}
    assert views.job_row(job)[2] == "pyramidal finetune"  # a row from before job kinds
    assert views.job_row(job)[5:8] == ["5/10", "50%", ""]  # the last entry is no loss point
    assert views.loss_points(job) == [{"step": 5, "loss": 0.12345}]
    detail = views.job_detail(job)
    assert "step 5/10 (50%)" in detail and "steps `10`" in detail and "lr" not in detail
    assert "checkpoint #9" in detail
    speed = {"tflops": 4.0, "denoise": 2.0, "total": 1.5}
    close = views.comparison_summary({"comparable": True, "psnr_mean": float("inf"), "ssim_mean": 1.0,
                                      "frames": 17}, speed)
    assert "identical (∞ dB)" in close and "4.00x fewer TFLOPs" in close
    assert views.comparison_summary({"comparable": False, "reason": "sizes differ"}, speed).startswith(
        "**How close:** sizes differ.")


def test_the_watch_view_shows_videos_and_the_card_once_every_run_is_final():
    base = {"mode": "pyramidal", "schedule": "2-2-1", "prompt": "a cat", "stage": 0, "seed": 1, "model": "tiny",
            "frames": 17, "height": 128, "width": 128, "guidance": [5.0]}
    running = {**base, "id": 1, "status": "running", "phase": "denoising", "stage": 0, "stages": 3}
    view = views.watch_view([running], False, {1}, group="gen-1")
    assert not view["finished"] and "pw-preview" in view["preview"] and view["videos"] == view["card"] == ""
    original = {**base, "id": 1, "mode": "original", "status": "done", "report": {}}
    pyramid = {**base, "id": 2, "status": "failed", "error": "boom"}
    view = views.watch_view([original, pyramid], True, set(), group="gen-1")
    assert view["finished"] and "original: #1" in view["progress"] and "pyramidal: #2" in view["progress"]
    assert "/api/runs/1/video" in view["videos"] and "**Error:** boom" in view["card"] and "**Run #1**" in view["card"]


def test_the_card_and_history_say_which_decoder_ran():
    base = {"id": 5, "mode": "pyramidal", "schedule": "2-2-1", "prompt": "a cat", "seed": 1, "model": "tiny",
            "checkpoint_name": None, "frames": 17, "height": 128, "width": 128, "guidance": [5.0],
            "created_at": None, "total_seconds": None}
    tiny = {**base, "status": "done", "decoder": "tiny", "report": {"seconds": {"decode": 0.1}}}
    assert "decoded with the tiny decoder" in views.run_card(tiny)
    assert "| decode (tiny decoder) | 0.1 s |" in views.run_card(tiny)
    assert "decodes with the full decoder (VAE)" in views.run_card({**base, "status": "queued"})  # a run from before
    both = {**tiny, "decoder": "both", "report": {"seconds": {"decode": 2.0, "decode_tiny": 0.5},
                                                  "decode_psnr_db": 27.5}, "finished_at": "t"}
    card = views.run_card(both)
    assert "decoded with both decoders" in card and card.count("decode (tiny decoder)") == 1
    assert views.history_row(tiny)[11] == "tiny" and views.history_row({**base, "status": "queued"})[11] == "full"
    html = views.decode_both_html(both, group="g")
    assert '/api/runs/5/video?v=t"' in html and "/api/runs/5/video?decoder=tiny&amp;v=t" in html
    assert html.count('data-sync="g"') == 2 and "decode 2.0 s" in html and "decode 0.5 s" in html
    assert views.decode_both_table(both) == [["decode (s)", "2.00", "0.50", "4.00x"],
                                             ["PSNR against the full decode (dB)", "–", "27.50", ""]]
    summary = views.decode_both_summary(both)
    assert "27.50 dB" in summary and "4.00x" in summary and "Run #5" in summary


def test_a_distilled_checkpoint_is_listed_by_its_label_and_locks_its_recipe():
    from tests.service.conftest import distilled_card

    card = distilled_card(base="mini", name="mini-distilled")
    item = {"id": 4, "name": "mini-distilled", "kind": "full", "base": "mini", "card": card}
    assert views.checkpoint_label(item) == "mini-distilled — 2-2-1, 5 steps, guidance baked in, DMD-PT*"
    no_label = {**item, "card": {k: v for k, v in card.items() if k != "label"}}
    assert views.checkpoint_label(no_label) == "mini-distilled — 2-2-1, 5 steps, guidance baked in"
    plain = {**item, "name": "mini-pyramidal", "card": {"trained_for": "pyramidal"}}
    assert views.checkpoint_label(plain) == "mini-pyramidal (full over mini)"
    lock = views.recipe_lock(card, "mini-distilled")
    assert (lock["schedule"], lock["guidance"], lock["mode"]) == ("2-2-1", "1", "pyramidal")
    assert "mini-distilled" in lock["note"] and "trained for 2-2-1, 5 steps" in lock["note"]
    assert views.recipe_lock({"trained_for": "pyramidal"}, "x") is None and views.recipe_lock(None, "x") is None
    broken = {**card, "recipe": {"schedule": "2-2-1"}}  # the server says why when it is used
    assert views.recipe_lock(broken, "x") is None


def test_a_distillation_jobs_row_detail_and_loss_curves():
    job = {"id": 3, "name": "student", "base": "mini", "status": "done", "step": 2, "steps": 2, "fraction": 1.0,
           "created_at": None, "error": None, "checkpoint_id": 7,
           "config": {"kind": "distill", "method": "dmd-pt-star", "student_plan": "2-2-1", "steps": 2,
                      "teacher": "/m/mini-pyramidal"},
           "report": {"label": "2-2-1, 5 steps, guidance baked in, DMD-PT*"},
           "losses": [{"step": 1, "generator_loss": 0.5, "critic_loss": 2.0}, "noise",
                      {"step": 2, "generator_loss": 0.25, "critic_loss": None}]}
    row = views.job_row(job)
    assert row[2] == "distillation" and row[7] == "G 0.25"
    assert views.loss_series(job) == [{"step": 1, "loss": 0.5, "series": "generator"},
                                      {"step": 2, "loss": 0.25, "series": "generator"},
                                      {"step": 1, "loss": 2.0, "series": "critic"}]
    detail = views.job_detail(job)
    assert "(distillation)" in detail and "method `dmd-pt-star`" in detail and "student_plan `2-2-1`" in detail
    assert "checkpoint #7 (2-2-1, 5 steps, guidance baked in, DMD-PT*)" in detail
    pyramidal = {**job, "config": {"steps": 2}, "losses": [{"step": 1, "loss": 0.3, "stages": [0.1]}]}
    assert views.loss_series(pyramidal) == [{"step": 1, "loss": 0.3, "series": "loss"}]
    assert views.job_row(pyramidal)[2] == "pyramidal finetune" and views.job_row(pyramidal)[7] == "0.3"
