"""The benchmark scripts run (smoke tests); their figures are printed, never asserted as timings."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _run(*args, timeout=600):
    proc = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def test_flops_bench_matches_the_paper_table():
    out = _run("bench/flops.py")
    assert "largest difference from the paper" in out
    pct = float(out.split("largest difference from the paper: ")[1].split("%")[0])
    assert pct <= 1.0
    assert "(+0.00%)" in out or "(-0.00%)" in out, "measured and analytic counts agree"


def test_mini_world_rows_get_the_recommended_guidance_through_core_and_say_where_from():
    if not (ROOT / "models" / "mini-pyramidal" / "card.json").is_file():
        import pytest

        pytest.skip("the mini models are not shipped")
    rows = json.loads(_run("bench/mini_world.py", "--guidance-only").strip().splitlines()[-1])
    assert rows == {"guidance": 1.5, "guidance_source": "preset card",
                    "pyramid_guidance": [1.0, 1.0, 1.5], "pyramid_guidance_source": "checkpoint card"}
    given = json.loads(_run("bench/mini_world.py", "--guidance-only", "--pyramid-guidance", "2").splitlines()[-1])
    assert (given["pyramid_guidance"], given["pyramid_guidance_source"]) == (2.0, "request")


def test_gpu_check_runs_as_a_cpu_smoke_test(tmp_path):
    out_json = tmp_path / "gpu.json"
    out = _run("bench/gpu_check.py", "--device", "cpu", "--layers", "1", "--frames", "17", "--height", "64",
               "--width", "64", "--steps", "1", "--json", str(out_json))
    res = json.loads(out_json.read_text())
    timed = res["timing"]["ms_per_step"]
    # three stage shapes, each at batch 2 (guidance 5 plans) and batch 1 (guidance 1 plans)
    assert sorted((tuple(t["latent"]), t["batch"]) for t in timed) == sorted(
        (s, b) for s in ((2, 2, 2), (3, 4, 4), (5, 8, 8)) for b in (1, 2))
    assert all(t["ms"] > 0 for t in timed)
    plans = {(p["plan"], p["guidance"]): p for p in res["plans"]}
    assert all(p["projected_seconds"] > 0 and p["speedup"] > 0 for p in plans.values())
    assert plans[("0-0-50", 5.0)]["speedup"] == 1.0 and plans[("2-2-1", 1.0)]["timed_flop_ratio"] > 1
    assert "projected s" in out and "2-2-1" in out


# PyramidalWan's TFLOPs per guidance branch at 81x448x832 (pyramid.md §2 Table 1, §8)
PAPER_TFLOPS = {"0-0-50": 12592, "20-20-10": 2821, "2-2-2": 534, "0-0-4": 1007, "2-2-1": 282, "1-1-1": 267}


def test_gpu_check_flops_of_the_distilled_plans_match_the_paper_and_skip_timing_without_a_gpu(tmp_path):
    out_json = tmp_path / "flops.json"
    out = _run("bench/gpu_check.py", "--device", "cpu", "--json", str(out_json), timeout=120)
    assert "timing skipped: no GPU here" in out and "--layers 1" in out
    res = json.loads(out_json.read_text())
    assert res["flops_shape"] == [81, 448, 832] and res["text_tokens"] == 512 and res["timing"] is None
    plans = {p["plan"]: p for p in res["plans"]}
    assert set(plans) == {"0-0-50", "20-20-10", "2-2-1", "1-1-1", "2-2-2", "0-0-4", "0-0-2", "0-0-1"}
    for plan, paper in PAPER_TFLOPS.items():
        assert plans[plan]["tflops_per_branch"] == pytest.approx(paper, rel=0.01), plan
    base = plans["0-0-50"]
    assert base["guidance"] == 5.0 and base["tflops"] == pytest.approx(2 * base["tflops_per_branch"])
    for plan in ("2-2-1", "1-1-1", "2-2-2", "0-0-4", "0-0-2", "0-0-1"):  # guidance 1: one branch
        p = plans[plan]
        assert p["guidance"] == 1.0 and p["tflops"] == p["tflops_per_branch"], plan
        assert p["base_over_plan_flops"] == pytest.approx(base["tflops"] / p["tflops"], rel=1e-3), plan
        assert sum(len(v) for v in p["levels"]) == p["steps"], plan  # the few-step sampler's levels
    assert plans["2-2-1"]["base_over_plan_flops"] == pytest.approx(2 * 12592 / 282, rel=0.01)
    assert len(plans["2-2-1"]["levels"]) == 3 and len(plans["0-0-2"]["levels"]) == 1


def _random_tiny_decoder(folder: Path, preset: str) -> Path:
    """A random tiny decoder with ``preset``'s VAE normalisation, written to ``folder``."""
    import torch

    from core.presets import build_components
    from core.tiny_decoder import TinyDecoderConfig, TinyVideoDecoder

    if preset == "mini":
        vae = json.loads((ROOT / "models" / "mini" / "vae" / "config.json").read_text())
        mean, std = vae["latents_mean"], vae["latents_std"]
    else:
        vae = build_components(preset, "cpu").vae.config
        mean, std = list(vae.latents_mean), list(vae.latents_std)
    torch.manual_seed(0)
    TinyVideoDecoder(TinyDecoderConfig(widths=[8, 8, 8], blocks=[1, 0, 0], latent_space=preset, latents_mean=mean,
                                       latents_std=std)).save(folder)
    return folder


def _ratio(out: str, label: str) -> float:
    line = next(ln for ln in out.splitlines() if ln.startswith(label))
    return float(line.split(label)[1].split("x")[0].split("(")[0].strip(" :"))


def test_user_wait_prints_every_row_and_the_speed_ups(tmp_path):
    tiny = _random_tiny_decoder(tmp_path / "tiny-decoder", "tiny")
    out_json = tmp_path / "wait.json"
    out = _run("bench/user_wait.py", "--model", "tiny", "--tiny-decoder", str(tiny), "--videos", "1",
               "--full", "0-0-2", "--schedule", "1-1-1", "--height", "64", "--width", "64", "--threads", "1",
               "--json", str(out_json))
    for row in ("original 0-0-2, full decoder", "original 0-0-2, tiny decoder",
                "pyramidal 1-1-1 (training-free), full decoder", "pyramidal 1-1-1 (training-free), tiny decoder"):
        assert row in out, row
    for label in ("denoising speed-up (pyramidal over original):", "end-to-end speed-up, full decoder:",
                  "end-to-end speed-up, tiny decoder:", "end-to-end (tiny) / denoising speed-up:"):
        assert _ratio(out, label) > 0, label
    res = json.loads(out_json.read_text())
    assert [r["decoder"] for r in res["rows"]] == ["full", "full", "tiny", "tiny"]
    assert all(len(r["runs"]) == 1 and r["median"]["decode"] > 0 for r in res["rows"])
    sp = res["speedup"]
    assert sp["tiny_kept"] == pytest.approx(sp["end_to_end_tiny"] / sp["denoise"])
    assert all(r["median"]["total"] >= r["median"]["denoise"] + r["median"]["decode"] for r in res["rows"])


def test_user_wait_without_a_tiny_decoder_says_so_and_exits_2(tmp_path):
    proc = subprocess.run([sys.executable, "bench/user_wait.py", "--model", "tiny", "--tiny-decoder",
                           str(tmp_path / "none")], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "no tiny decoder" in proc.stderr and "--tiny-decoder" in proc.stderr


def test_mini_world_scores_chosen_rows_with_the_tiny_decoder(tmp_path):
    if not (ROOT / "models" / "mini-pyramidal" / "card.json").is_file():
        pytest.skip("the mini models are not shipped")
    tiny = _random_tiny_decoder(tmp_path / "tiny-decoder", "mini")
    out_json = tmp_path / "table.json"
    out = _run("bench/mini_world.py", "--decoder", "tiny", "--tiny-decoder", str(tiny), "--rows",
               "original,tuned", "--clips", "2", "--full", "0-0-2", "--plan", "1-1-1", "--threads", "1",
               "--json", str(out_json))
    assert "decoder: tiny" in out
    res = json.loads(out_json.read_text())
    assert res["decoder"] == "tiny" and res["rows_run"] == ["original", "tuned"]
    assert [r["row"] for r in res["rows"]] == ["original 0-0-2", "finetuned pyramidal 1-1-1"]
    assert res["rows"][0]["fd_original"] == 0.0 and res["rows"][1]["fd_original"] > 0
    shipped = ROOT / "bench" / "results" / "mini_world.json"
    proc = subprocess.run([sys.executable, "bench/mini_world.py", "--decoder", "tiny", "--json", str(shipped)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "shipped table" in proc.stderr


def test_tiny_decoder_bench_reports_psnr_and_speed_ups_on_held_out_clips(tmp_path):
    tiny = _random_tiny_decoder(tmp_path / "tiny-decoder", "tiny")
    out_json = tmp_path / "td.json"
    out = _run("bench/tiny_decoder.py", "--base", "tiny", "--tiny-decoder", str(tiny), "--clips", "2", "--batch",
               "2", "--alone", "1", "--json", str(out_json))
    assert "2 held-out clips (20000000..20000001)" in out
    assert "PSNR tiny vs full" in out and "tiny vs real" in out and "full vs real" in out
    assert "seconds per video, batched (2)" in out and "seconds per video, alone (1 clips)" in out
    res = json.loads(out_json.read_text())
    assert all(res[k] > 0 for k in ("psnr_tiny_vs_full", "psnr_tiny_vs_real", "psnr_full_vs_real"))
    assert set(res["seconds_per_video"]) == {"full_batched", "tiny_batched", "full_alone", "tiny_alone"}
    assert res["speedup"]["batched"] > 0 and res["speedup"]["alone"] > 0


def _needs_mini():
    if not (ROOT / "models" / "mini-pyramidal" / "card.json").is_file():
        pytest.skip("the mini models are not shipped")


def _stand_in_student(folder: Path) -> Path:
    """A distilled student's folder for speed and FLOP smoke tests: the finetuned pyramidal
    checkpoint with a few-step card (recipe ``2-2-1``, guidance 1); its quality is irrelevant."""
    import shutil

    from core.fewstep import FewStepRecipe

    shutil.copytree(ROOT / "models" / "mini-pyramidal", folder)
    card = json.loads((folder / "card.json").read_text())
    card.pop("guidance_per_stage", None)
    recipe = FewStepRecipe.build("2-2-1", 3.0, [0.8, 0.5])
    card.update(trained_for="few-step", recipe=recipe.to_dict(), schedule=recipe.schedule, guidance=1.0,
                name=folder.name, label="2-2-1, 5 steps, guidance baked in, DMD-PT*", method="dmd-pt-star")
    (folder / "card.json").write_text(json.dumps(card))
    return folder


def test_distill_speed_prints_every_row_and_the_ratios(tmp_path):
    _needs_mini()
    student = _stand_in_student(tmp_path / "student")
    out_json = tmp_path / "speed.json"
    out = _run("bench/distill_speed.py", "--student", str(student), "--videos", "1", "--repeats", "2", "--full",
               "0-0-3", "--plan", "2-2-2", "--threads", "1", "--json", str(out_json))
    for row in ("student 2-2-1 (DMD-PT*)", "original 0-0-3", "finetuned pyramidal 2-2-2"):
        assert row in out, row
    for label in ("original 0-0-3 / student:", "pyramidal 2-2-2 / student:"):
        line = next(ln for ln in out.splitlines() if ln.startswith(label))
        seconds, flops = (float(part.split("x")[0]) for part in line.split(":")[1].split(","))
        assert seconds > 0 and flops > 1, line
    res = json.loads(out_json.read_text())
    rows = {r["key"]: r for r in res["rows"]}
    st, orig, pyr = rows["student"], rows["original"], rows["pyramidal"]
    assert (st["sampler"], st["plan"], st["guidance"], st["guidance_source"]) == ("few-step", "2-2-1", [1.0] * 3,
                                                                                  "recipe")
    assert (orig["sampler"], orig["plan"], orig["guidance"]) == ("euler", "0-0-3", [1.5])  # the mini card's
    assert (pyr["sampler"], pyr["plan"], pyr["guidance"]) == ("euler", "2-2-2", [1.0, 1.0, 1.5])  # its card's
    assert all(len(r["runs"]) == 2 and r["median_seconds"] > 0 and r["warm_up"]["seed"] == 999_999
               for r in rows.values())
    # the same prompts and seeds in every row
    assert len({tuple((run["prompt"], run["seed"]) for run in r["runs"]) for r in rows.values()}) == 1
    rat = res["ratios"]
    assert rat["original_over_student"]["tflops"] == pytest.approx(orig["tflops"] / st["tflops"])
    assert rat["pyramidal_over_student"]["seconds"] == pytest.approx(pyr["median_seconds"] / st["median_seconds"])
    # the reports' FLOPs are the plans' own: 2-2-2 with guidance on its last stage against 2-2-1 without
    from core import StagePlan
    from core.flops import plan_flops

    cfg = json.loads((ROOT / "models" / "mini" / "transformer" / "config.json").read_text())
    pyr_flops, st_flops = (plan_flops(cfg, StagePlan.parse(p, guidance=g), 17, 128, 128, 64)["tflops"]
                           for p, g in (("2-2-2", [1.0, 1.0, 1.5]), ("2-2-1", 1.0)))
    assert rat["pyramidal_over_student"]["tflops"] == pytest.approx(pyr_flops / st_flops, rel=1e-6)
    assert rat["pyramidal_over_student"]["tflops"] > 3  # the full-resolution stage dominates


def test_distill_speed_without_a_student_says_so_and_exits_2(tmp_path):
    proc = subprocess.run([sys.executable, "bench/distill_speed.py", "--student", str(tmp_path / "none")], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "no distilled student" in proc.stderr and "--student" in proc.stderr
    _needs_mini()
    proc = subprocess.run([sys.executable, "bench/distill_speed.py", "--student", "models/mini-pyramidal"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "not a distilled student" in proc.stderr


def test_user_wait_shows_the_student_rows_with_each_decoder(tmp_path):
    _needs_mini()
    student = _stand_in_student(tmp_path / "student")
    tiny = _random_tiny_decoder(tmp_path / "tiny-decoder", "mini")
    out_json = tmp_path / "wait.json"
    out = _run("bench/user_wait.py", "--student", str(student), "--tiny-decoder", str(tiny), "--videos", "1",
               "--full", "0-0-2", "--schedule", "1-1-1", "--threads", "1", "--json", str(out_json))
    for decoder in ("full", "tiny"):
        for row in ("original 0-0-2", "pyramidal 1-1-1", "student 2-2-1 (DMD-PT*)"):
            assert f"{row}, {decoder} decoder" in out, (row, decoder)
    for label in ("denoising speed-up (student over original):", "student over original, end-to-end speed-up, "
                  "tiny decoder:", "denoising speed-up (student over pyramidal):"):
        assert _ratio(out, label) > 0, label
    res = json.loads(out_json.read_text())
    assert [(r["kind"], r["decoder"]) for r in res["rows"]] == [
        (k, d) for d in ("full", "tiny") for k in ("original", "pyramidal", "student")]
    st = [r for r in res["rows"] if r["kind"] == "student"]
    assert all(run["sampler"] == "few-step" and run["schedule"] == "2-2-1" and run["guidance"] == [1.0] * 3
               for r in st for run in r["runs"])
    assert all(r["median"]["encode"] > 0 and r["median"]["decode"] > 0 for r in st)
    sp = res["speedup"]["student"]
    assert sp["tiny_kept"] == pytest.approx(sp["end_to_end_tiny"] / sp["denoise"])
    proc = subprocess.run([sys.executable, "bench/user_wait.py", "--tiny-decoder", str(tiny), "--student",
                           str(tmp_path / "none")], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "no distilled student" in proc.stderr


def test_mini_world_runs_the_floor_and_a_student_row(tmp_path):
    _needs_mini()
    student = _stand_in_student(tmp_path / "student")
    out_json = tmp_path / "table.json"
    out = _run("bench/mini_world.py", "--rows", "floor-2-2-1,distilled", "--student", f"distilled={student}",
               "--clips", "2", "--threads", "1", "--json", str(out_json))
    assert "floor: finetuned pyramidal 2-2-1" in out and "distilled 2-2-1 (DMD-PT*)" in out
    res = json.loads(out_json.read_text())
    assert res["rows_run"] == ["floor-2-2-1", "distilled"] and res["students"] == {"distilled": str(student)}
    floor, st = res["rows"]
    # the teacher at the student's plan with its Euler sampler and card's guidance; the student with its recipe
    assert (floor["schedule"], floor["guidance"], floor["recipe"]) == ("2-2-1", [1.0, 1.0, 1.5], False)
    assert (st["schedule"], st["guidance"], st["recipe"]) == ("2-2-1", 1.0, True)
    assert st["tflops"] < floor["tflops"]  # guidance baked in: one branch at full resolution
    assert floor["fd_original"] is None and len(st["clips"]) == 2
    shipped = ROOT / "bench" / "results" / "mini_world.json"
    for extra in (["--seed-offset", "5"], ["--prompt-style", "held-out"], ["--rows", "original,distilled"]):
        proc = subprocess.run([sys.executable, "bench/mini_world.py", "--student", f"distilled={student}",
                               "--json", str(shipped), *extra], cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2 and "shipped table" in proc.stderr, extra


def _import_mini_world():
    saved = list(sys.path)
    try:
        import bench.mini_world as mini_world
    finally:
        sys.path[:] = saved
    return mini_world


def test_mini_world_default_rows_add_the_floors_and_students_only_with_a_student(tmp_path):
    _needs_mini()
    mw = _import_mini_world()
    assert mw.parse(["--student", "none"]).rows == list(mw.ROW_KEYS)
    student = _stand_in_student(tmp_path / "student")
    args = mw.parse(["--student", f"a={student}", "--student", f"b={student}"])
    assert args.rows == list(mw.ROW_KEYS) + ["floor-2-2-1", "floor-0-0-1", "a", "b"] and not args.partial
    assert mw.parse(["--student", f"a={student}", "--rows", "original,a"]).partial
    with pytest.raises(SystemExit):
        mw.parse(["--student", f"tuned={student}"])  # a taken key


def test_mini_world_held_out_prompts_read_the_same_but_tokenize_otherwise():
    _needs_mini()
    from transformers import AutoTokenizer

    from finetune.world import all_captions, parse_caption

    mw = _import_mini_world()
    tok = AutoTokenizer.from_pretrained(ROOT / "models" / "mini" / "tokenizer")
    for style in ("held-out", "held-out-words"):
        for caption in all_captions():
            held = mw.styled_prompt(caption, style)
            attrs = [{k: parse_caption(t)[k] for k in ("colour", "shape", "direction")} for t in (held, caption)]
            assert held != caption and attrs[0] == attrs[1], (style, held)
            assert tok(held).input_ids != tok(caption).input_ids, (style, held)
    assert mw.styled_prompt("a red circle moves to the right", "held-out") == "A red circle moves to the right."
    assert mw.styled_prompt("a red circle moves up", "table") == "a red circle moves up"


@pytest.mark.skipif(not (ROOT / "models" / "mini-pyramidal").is_dir(), reason="the mini models are not shipped")
def test_mini_world_with_the_tiny_decoder_records_which_weights_scored(tmp_path):
    """``--decoder tiny`` decodes the rows with the given tiny decoder and writes the hash of its
    weights beside the scores (the claims test compares it with the shipped decoder's)."""
    from core.tiny_decoder import load_tiny_decoder

    tiny = _random_tiny_decoder(tmp_path / "tiny-decoder", "mini")
    out_json = tmp_path / "tiny.json"
    out = _run("bench/mini_world.py", "--decoder", "tiny", "--tiny-decoder", str(tiny), "--clips", "2",
               "--rows", "cheap", "--threads", "1", "--json", str(out_json))
    assert f"decoder: tiny ({tiny})" in out
    res = json.loads(out_json.read_text())
    assert res["decoder"] == "tiny" and res["rows_run"] == ["cheap"] and len(res["rows"]) == 1
    assert res["tiny_decoder_sha256"] == load_tiny_decoder(tiny).weights_sha256()
    assert res["rows"][0]["schedule"] == "4-4-2" and len(res["rows"][0]["clips"]) == 2
