"""The mini-world recipe's distillation phases: few-step students of ``mini-pyramidal`` (PT, PT*,
adversarial) and of the original (OT for a pyramidal student; conventional ``0-0-2`` and
``0-0-1`` students), each resumable, each checkpoint kept and scored, the best pyramidal student
shipped as ``models/mini-distilled``.

A run is ``method:plan`` (``dmd-pt-star:2-2-1``). Its settings are :data:`RUN_SETTINGS` (the
measurements behind them are in docs/experiments.md) scaled by the recipe's ``distill_steps``.
Every kept checkpoint is scored on ``distill_eval_clips`` table prompts at seeds the table never
uses (so the choice does not fit the table's own noise): among checkpoints within 5 points of the
original's adherence (all three attributes), the smallest Frechet distance to the original's
samples from the same seeds (:func:`rank`). Scores are cached beside
each run, so a resumed recipe scores only what is new.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from settings import overridden

SHIPPED = "mini-distilled"
#: Seeds of the checkpoint choice: apart from the table's (0..) and its noise floor (1,000,000+).
SELECTION_SEED = 3_000_000
#: Settings of each method on the mini model (DistillConfig fields; steps are the recipe's).
RUN_SETTINGS = {
    "dmd-pt-star": {"lr": 2e-5, "critic_steps": 5, "batch": 16},
    "dmd-pt": {"lr": 2e-5, "critic_steps": 5, "batch": 16},
    "dmd-ot": {"lr": 2e-5, "critic_steps": 5, "batch": 16, "ot_steps": 300},
    "adversarial": {"lr": 2e-5, "critic_steps": 1, "batch": 16},
}
#: The teacher's guidance at full resolution in DMD (none below, where the pyramidal finetune left
#: the unconditional branch untrained): 3 gave DMD-PT* students with the shapes of the original
#: (1.5, the samplers' own value, left them several points short; docs/experiments.md).
DMD_GUIDANCE = 3.0
PAIR_SCHEDULES = {"pyramidal": "12-12-6", "original": "0-0-30"}  # the table's teacher rows


def parse_runs(text: str) -> list[tuple[str, str]]:
    """``"dmd-pt-star:2-2-1,dmd-ot:0-0-1"`` -> ``[("dmd-pt-star", "2-2-1"), ("dmd-ot", "0-0-1")]``."""
    from .distill import METHODS

    runs = []
    for item in filter(None, (part.strip() for part in str(text).split(","))):
        method, _, plan = item.partition(":")
        if method not in METHODS or not plan:
            raise ValueError(f"distill run {item!r}: write method:plan with a method of {', '.join(METHODS)}")
        runs.append((method, plan))
    return runs


def run_config(cfg, method: str, plan: str, out: Path):
    """The DistillConfig of one run of the recipe."""
    from .distill.config import SPECS, DistillConfig

    spec = SPECS[method]
    settings = dict(RUN_SETTINGS[method])
    stages = len([p for p in plan.split("-") if p != "0"])
    if not spec.adversarial:
        settings["teacher_guidance"] = [1.0] * (stages - 1) + [DMD_GUIDANCE]
    if spec.teacher == "original" and stages > 1:  # the original knows no jumps: start from the pyramidal model
        settings["student_init"] = str(Path(cfg.ship) / "mini-pyramidal")
    if cfg.distill_batch:
        settings["batch"] = cfg.distill_batch
    if "ot_steps" in settings:
        settings["ot_steps"] = min(settings["ot_steps"], max(1, 2 * cfg.distill_steps))
    return DistillConfig(
        method=method, base="mini", teacher=str(Path(cfg.ship) / "mini-pyramidal") if spec.teacher == "pyramidal" else "",
        student_plan=plan, boundaries=[float(b) for b in cfg.pyramid_boundaries.split(",")] if plan[0] != "0" else None,
        data=f"world:{cfg.distill_clips}", out=str(out), name=out.name, steps=cfg.distill_steps,
        save_every=max(1, cfg.distill_steps // cfg.distill_snapshots), seed=cfg.seed,
        pairs=cfg.distill_pairs if spec.adversarial else 0, pair_schedule=PAIR_SCHEDULES[spec.teacher],
        cache_dir=str(Path(cfg.work) / ("distill-cache-3" if plan[0] != "0" else "distill-cache-1")),
        device="cpu", **settings)


def reference(pipe_original, cfg, work: Path, log) -> dict:
    """The original's samples at the selection seeds (its full schedule and guidance), scored once."""
    from .evaluate import generate_row, score_videos, table_prompts

    path = work / f"reference-{cfg.distill_eval_clips}.npz"
    if path.is_file():
        saved = np.load(path)
        return {"features": saved["features"], "all": float(saved["all"])}
    prompts = table_prompts(cfg.distill_eval_clips)
    seeds = [SELECTION_SEED + i for i in range(len(prompts))]
    row = generate_row(pipe_original, "original", "0-0-30", prompts, seeds, cfg.guidance)
    scores = score_videos(row["videos"], prompts)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, features=scores["features"], all=scores["all"])
    log(f"the original at the selection seeds: all three {scores['all']:.3f}")
    return {"features": scores["features"], "all": scores["all"]}


def score_checkpoint(folder: Path, ref: dict, clips: int) -> dict:
    """A checkpoint's adherence and distance to the original at the selection seeds (cached in
    ``folder/selection.json``)."""
    from core import load_pipeline

    from .evaluate import generate_row, score_videos, table_prompts

    cache = folder / "selection.json"
    if cache.is_file():
        saved = json.loads(cache.read_text())
        if saved.get("clips") == clips:
            return saved
    prompts = table_prompts(clips)
    pipe = load_pipeline("mini", checkpoint_dir=folder, name="mini")
    row = generate_row(pipe, "pyramidal", None, prompts, [SELECTION_SEED + i for i in range(clips)], None)
    scores = score_videos(row["videos"], prompts, ref["features"])
    out = {"clips": clips, "all": scores["all"], "colour": scores["colour"], "shape": scores["shape"],
           "direction": scores["direction"], "fd_original": scores["fd_original"], "tflops": row["tflops"]}
    cache.write_text(json.dumps(out, indent=1))
    return out


#: A checkpoint whose all-three adherence is within this of the original's (at the selection seeds)
#: keeps the original's quality; among those the closest to the original's samples wins.
ADHERENCE_MARGIN = 0.05


def rank(scores: dict, original_all: float) -> tuple:
    """Sort key of a scored checkpoint, best last: those within :data:`ADHERENCE_MARGIN` of the
    original first, by their distance to the original's samples (an adversarial student can match
    the shapes far from the original's distribution); below the margin, by adherence."""
    close = scores["all"] >= original_all - ADHERENCE_MARGIN
    return (close, -scores["fd_original"]) if close else (close, round(scores["all"], 6), -scores["fd_original"])


def best_of(scored: list[tuple[str, dict]], original_all: float) -> tuple[str, dict]:
    """The best (folder, scores) of a run's kept checkpoints under :func:`rank`."""
    return max(scored, key=lambda item: rank(item[1], original_all))


def distil_one(cfg, method: str, plan: str, ref: dict, log) -> dict:
    """Train (or resume) one run, score its kept checkpoints, and say which is best."""
    from .distill import train

    out = Path(cfg.work) / "distill" / f"{method}-{plan}"
    result = train(run_config(cfg, method, plan, out), log=log)
    if result.status != "done":
        raise RuntimeError(f"distillation {method} {plan} stopped at step {result.step}")
    scored = []
    for snap in sorted((out / "steps").glob("*/card.json")):
        scored.append((str(snap.parent), score_checkpoint(snap.parent, ref, cfg.distill_eval_clips)))
        log(f"{method} {plan} step {int(snap.parent.name)}: all three {scored[-1][1]['all']:.3f}, "
            f"distance to the original {scored[-1][1]['fd_original']:.4f}")
    folder, scores = best_of(scored, ref["all"])
    return {"method": method, "plan": plan, "folder": folder, "step": int(Path(folder).name),
            "label": json.loads((Path(folder) / "card.json").read_text())["label"], **scores,
            "checkpoints": {int(Path(f).name): {"all": s["all"], "fd_original": s["fd_original"]} for f, s in scored}}


def ship_student(cfg, winner: dict, results: list[dict], original_all: float, log) -> Path:
    """Copy the winning checkpoint to ``models/mini-distilled`` with its selection on the card."""
    from .toolkit import write_card

    ship = Path(cfg.ship) / SHIPPED
    tmp = ship.with_name(SHIPPED + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(Path(winner["folder"]) / "transformer", tmp / "transformer")
    card = json.loads((Path(winner["folder"]) / "card.json").read_text())
    card.update(name=SHIPPED, selection={
        "rule": f"the smallest distance to the original among those within {ADHERENCE_MARGIN} of its all-three "
                f"adherence (else the highest adherence), on {cfg.distill_eval_clips} table prompts at seeds "
                f"{SELECTION_SEED}+ (never the table's)",
        "original_all": original_all,
        "chosen": {k: winner[k] for k in ("method", "plan", "step", "all", "fd_original")},
        "candidates": [{k: r[k] for k in ("method", "plan", "step", "label", "all", "shape", "fd_original",
                                          "checkpoints")} for r in results]})
    card["config"] = {k: v for k, v in card.get("config", {}).items() if k not in ("out", "cache_dir")}
    write_card(tmp, card)
    shutil.rmtree(ship, ignore_errors=True)
    tmp.replace(ship)
    log(f"shipped {winner['label']} (step {winner['step']}) to {ship}")
    return ship


def phase_distill(cfg, ship_mini: Path, log) -> dict | None:
    """Every run of ``cfg.distill_runs``; the best pyramidal student is shipped. None when the
    recipe has no distillation runs."""
    from core import load_pipeline

    runs = parse_runs(cfg.distill_runs)
    if not runs or cfg.distill_steps == 0:
        return None
    with overridden(PWAN_MINI_PATH=str(ship_mini)):
        ref = reference(load_pipeline("mini"), cfg, Path(cfg.work) / "distill", log)
        results = [distil_one(cfg, method, plan, ref, log) for method, plan in runs]
    pyramidal = [r for r in results if r["plan"][0] != "0"]
    if not pyramidal:
        return {"results": results, "shipped": None}
    winner = max(pyramidal, key=lambda r: rank(r, ref["all"]))
    (Path(cfg.work) / "distill" / "results.json").write_text(json.dumps(results, indent=1))
    return {"results": results, "shipped": str(ship_student(cfg, winner, results, ref["all"], log))}
