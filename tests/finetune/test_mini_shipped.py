"""The shipped mini checkpoints (``models/mini``, ``models/mini-pyramidal``, ``models/mini-distilled``)
against the table the README shows (``bench/results/mini_world.json``, written by
``bench/mini_world.py --clips 200`` with every student of the recipe).

CI regenerates the first clips of every row with the same prompts and seeds and checks that they
score as the table says (up to floating-point drift between machines) and that each row's adherence
is within sampling error of the full table's."""

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
MINI = ROOT / "models" / "mini"
PYRAMIDAL = ROOT / "models" / "mini-pyramidal"
DISTILLED = ROOT / "models" / "mini-distilled"
TABLE = ROOT / "bench" / "results" / "mini_world.json"
TINY_TABLE = ROOT / "bench" / "results" / "mini_world_tiny.json"
CI_CLIPS = 48

pytestmark = pytest.mark.skipif(not (MINI / "transformer").is_dir(), reason="the mini model is not shipped")


def _table() -> dict:
    return json.loads(TABLE.read_text())


def _rows() -> dict:
    """The table's rows by key: the README's rows, the floors of distillation (``floor-2-2-1``,
    ``floor-0-0-1``) and the students (by row name; they ran on their recipes)."""
    rows = {}
    for r in _table()["rows"]:
        if r.get("recipe") or r["row"].startswith("floor:"):
            key = r["row"] if r.get("recipe") else "floor-" + r["schedule"]
            rows[key] = r
            continue
        key = ("original" if r["row"].startswith("original") else "floor" if r["row"].startswith("noise")
               else "free" if r["row"].startswith("training-free")
               else "fewer-uniform" if r["row"].startswith("fewer steps, grid to 0")
               else "fewer" if r["row"].startswith("fewer") else r["schedule"])
        rows[key] = r
    return rows


def test_shipped_checkpoints_fit_in_30_mb_and_record_their_compute():
    total = sum(f.stat().st_size for d in (MINI, PYRAMIDAL, DISTILLED) for f in d.rglob("*") if f.is_file())
    assert total <= 30 * 2**20, f"{total / 2**20:.1f} MB"
    card = json.loads((MINI / "card.json").read_text())
    assert card["compute"]["pretrain"]["steps"] > 0 and card["compute"]["pretrain"]["cpu_seconds"] > 0
    assert card["compute"]["vae"]["steps"] > 0
    tuned = json.loads((PYRAMIDAL / "card.json").read_text())
    assert tuned["base"] == "mini" and 0 < tuned["steps"] <= card["compute"]["pretrain"]["steps"] // 10


def test_the_committed_table_shows_the_claims():
    """The README's table (generated from the shipped checkpoints; the slow test below checks
    that they still produce it) shows every claim of the issue, the distance to the original's
    samples at most 1.5x the noise floor included (1.1x on the table's seeds; 1.8x on other seeds,
    see the README)."""
    t = _table()
    assert t["clips"] >= 200
    rows = _rows()
    orig, floor, free, fewer = rows["original"], rows["floor"], rows["free"], rows["fewer"]
    tuned = [r for r in _table()["rows"] if r["row"].startswith("finetuned pyramidal")]
    assert len(tuned) == 2
    assert orig["colour"] >= 0.9 and orig["all"] >= 0.4
    main = max(tuned, key=lambda r: r["tflops"])  # the 20-20-10-like plan
    for col in ("colour", "shape", "direction", "all"):
        assert main[col] >= orig[col] - 0.05, col
    assert main["tflops"] <= orig["tflops"] / 3
    # the finetune matters: without it the pyramid is far worse, in adherence and in distance
    assert free["all"] < main["all"] - 0.5 and free["fd_original"] > 10 * main["fd_original"]
    assert floor["fd_original"] < main["fd_original"] <= 1.5 * floor["fd_original"]
    assert main["fd_original"] < free["fd_original"]
    # the same compute spent on fewer steps of the original instead (the README compares them)
    assert fewer["tflops"] == pytest.approx(main["tflops"], rel=0.1) and fewer["mode"] == "original"


def test_the_cards_recommend_the_guidance_the_table_used(monkeypatch):
    from core import recommended_guidance

    monkeypatch.delenv("PWAN_MINI_PATH", raising=False)
    tuned = json.loads((PYRAMIDAL / "card.json").read_text())
    t = _table()
    assert recommended_guidance("mini") == t["guidance"] and all(r["guidance"] == t["guidance"] for r in t["rows"]
                                                                 if r["mode"] == "original")
    plan_stages = len(_rows()["free"]["schedule"].split("-"))
    assert recommended_guidance("mini", tuned, stages=plan_stages) == t["pyramid_guidance"]


def test_the_committed_table_shows_the_students_claims():
    """Issue 17's claims, on the table's 200 clips: the shipped 2-2-1 student within 5 points of
    the original's all three, at most 3x the noise floor's distance to the original's samples, at
    1/40 of the original's FLOPs or less; the teacher run at 2-2-1 without distillation clearly
    worse; the conventional one-step student beside it."""
    rows = _rows()
    orig, floor = rows["original"], rows["floor"]
    students = {k: r for k, r in rows.items() if r.get("recipe")}
    best = next(r for name, r in students.items() if name.startswith("distilled "))  # models/mini-distilled
    assert best["schedule"] == "2-2-1"
    assert best["all"] >= orig["all"] - 0.05
    assert best["fd_original"] <= 3 * floor["fd_original"]
    assert best["tflops"] <= orig["tflops"] / 40 and best["guidance"] == 1.0
    teacher = rows["floor-2-2-1"]
    assert teacher["fd_original"] > 2 * best["fd_original"] and teacher["all"] < best["all"]
    assert any(r["schedule"] == "0-0-1" for r in students.values()) and "floor-0-0-1" in rows
    assert all(r["tflops"] < orig["tflops"] / 20 for r in students.values())


@pytest.mark.slow
@pytest.mark.timeout(2400)  # 424 s alone on 2 Xeon cores, past the global 900 s when the cores are shared
def test_shipped_checkpoints_reproduce_the_table(tmp_path):
    import subprocess
    import sys

    t = _table()
    out = tmp_path / "table.json"
    cmd = [sys.executable, str(ROOT / "bench" / "mini_world.py"), "--clips", str(CI_CLIPS), "--json", str(out),
           "--guidance", str(t["guidance"]), "--decode-batch", str(t["decode_batch"]),
           "--pyramid-guidance", ",".join(str(g) for g in np.atleast_1d(t["pyramid_guidance"]))]
    rows = {r["row"]: r for r in t["rows"]}
    orig = next(r for r in t["rows"] if r["row"].startswith("original"))
    free = next(r for r in t["rows"] if r["row"].startswith("training-free"))
    tuned = sorted((r for r in t["rows"] if r["row"].startswith("finetuned")), key=lambda r: -r["tflops"])
    cmd += ["--full", orig["schedule"], "--plan", free["schedule"], "--cheap", tuned[-1]["schedule"]]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=2100)
    assert proc.returncode == 0, proc.stderr[-2000:]
    again = {r["row"]: r for r in json.loads(out.read_text())["rows"]}
    # every row comes back but the students whose weights are not shipped (their figures are kept)
    assert set(again) <= set(rows) and all(rows[name].get("recipe") for name in set(rows) - set(again))
    assert any(r.get("recipe") for r in again.values())  # the shipped student
    for name, got in again.items():
        full = rows[name]
        same = np.mean([a == b for a, b in zip(got["clips"], full["clips"][:CI_CLIPS])])
        assert same >= 0.9, f"{name}: only {same:.2f} of the clips score as in the table"
        for col in ("colour", "shape", "direction", "all"):
            p = min(max(full[col], 0.02), 0.98)
            sigma = math.sqrt(p * (1 - p) / CI_CLIPS)
            assert abs(got[col] - full[col]) <= 3 * sigma, (name, col, got[col], full[col])
        assert got["tflops"] == pytest.approx(full["tflops"], rel=1e-6)


@pytest.mark.slow
def test_default_model_without_a_gpu_draws_a_red_circle_moving_right(monkeypatch):
    """``python app.py`` on a CPU machine defaults to ``mini``; the page's default settings (the
    shipped pyramidal checkpoint when registered, else the preset) give what the prompt says."""
    import torch

    from core import GenerationRequest, StagePlan, default_preset, load_pipeline, recommended_guidance
    from finetune.scorer import score_clip
    from ui import views

    monkeypatch.delenv("PWAN_MINI_PATH", raising=False)
    monkeypatch.delenv("PWAN_MODEL", raising=False)
    if torch.cuda.is_available():
        pytest.skip("a GPU machine defaults to Wan")
    assert default_preset() == "mini"
    pipe = load_pipeline("mini", checkpoint_dir=str(PYRAMIDAL), name="mini")
    card = json.loads((PYRAMIDAL / "card.json").read_text())  # what a request naming no guidance gets
    guidance = recommended_guidance("mini", card, stages=StagePlan.parse(views.DEFAULT_SCHEDULE).num_stages)
    hits = []
    for seed in range(4):
        req = GenerationRequest("a red circle moves to the right", model="mini", schedule=views.DEFAULT_SCHEDULE,
                                guidance=guidance, seed=seed)
        s = score_clip(pipe.generate(req, preview=False).frames)
        hits.append((s["colour"], s["shape"], s["direction"]) == ("red", "circle", "right"))
    assert sum(hits) >= 3, hits


def test_the_tiny_decoder_keeps_the_tables_scores():
    """Issue 18: the table's pyramidal rows (the finetuned plans and the shipped student) decoded by
    the shipped tiny decoder (``bench/results/mini_world_tiny.json``: the same 200 prompts and seeds,
    written by ``bench/mini_world.py --decoder tiny`` with the weights whose hash it records) keep
    all three within 2 points of their full-decoder scores."""
    from core.tiny_decoder import load_tiny_decoder

    tiny = json.loads(TINY_TABLE.read_text())
    assert tiny["decoder"] == "tiny" and tiny["clips"] == _table()["clips"] == 200
    shipped = load_tiny_decoder(ROOT / "models" / "mini-tiny-decoder")
    assert tiny["tiny_decoder_sha256"] == shipped.weights_sha256(), \
        "the tiny table was written with other weights than the shipped decoder's: rerun bench/mini_world.py"
    full = {r["row"]: r for r in _table()["rows"]}
    pyramidal = [r for r in tiny["rows"] if r["mode"] == "pyramidal"]
    assert {"12-12-6", "4-4-2", "2-2-1"} <= {r["schedule"] for r in pyramidal}
    for r in pyramidal:
        # scores are multiples of 1/200: a 2-point change is 4 clips (rounded against float noise)
        assert round(abs(r["all"] - full[r["row"]]["all"]) * 200) <= 4, (r["row"], r["all"], full[r["row"]]["all"])
