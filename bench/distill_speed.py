"""Denoising seconds of a distilled few-step student against the models it replaces, in one run.

Three rows on the mini model, every video a request alone (batch 1; model load, prompt encode and
VAE decode excluded; the latents are kept, not decoded):

* **student**: a distilled checkpoint (``--student FOLDER``, default ``models/mini-distilled``)
  with the recipe its card locks (plan, levels, shift, guidance 1): the request names neither
  schedule nor guidance, so ``core`` runs the few-step sampler exactly as trained;
* **original**: the mini model at its full schedule (``--full``, default ``0-0-30``) with its
  recommended guidance (``core.resolve_guidance``: the mini card's 1.5);
* **pyramidal**: the finetuned pyramidal checkpoint (``--pyramidal``, default
  ``models/mini-pyramidal``) at ``--plan`` (default ``12-12-6``, the 20-step-class plan of the
  mini table) with its card's guidance.

After one warm-up video per row, the rows take turns per video (round robin) for ``--videos``
prompts and seeds (prompt ``i`` = ``all_captions()[i % 24]``, seed ``i``, the same in every row),
and the whole round is repeated ``--repeats`` times, so load drifts on a shared machine hit every
row alike. Printed: a table of median denoising seconds per video (and the fastest), TFLOPs per
video as the pipeline reports them, and the ratios original/student and pyramidal/student for
both seconds and FLOPs, all measured in this run. ``--json`` writes the numbers and every run.
Exit 2 (with a message) when the student folder is missing or is not a distilled checkpoint.

    python bench/distill_speed.py [--student models/mini-distilled] [--videos 4 --repeats 2] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[0] = str(ROOT)  # the repo, not bench/ (bench/queue.py would shadow queue)

import numpy as np  # noqa: E402

from bench.students import DEFAULT_STUDENT, row_name, student_card  # noqa: E402


def _path(p: str) -> Path:
    return Path(p) if Path(p).is_absolute() else ROOT / p


def load_rows(args, card: dict) -> list[dict]:
    """The three rows, their pipelines loaded once: ``name, pipe, mode, schedule, guidance`` (the
    student's schedule and guidance None: its recipe applies)."""
    from core import StagePlan, load_pipeline, resolve_guidance

    student = load_pipeline("mini", checkpoint_dir=_path(args.student), name="mini")
    base = load_pipeline("mini")
    pyramidal = load_pipeline("mini", checkpoint_dir=_path(args.pyramidal), name="mini")
    g, g_src = resolve_guidance(None, "mini", None, stages=1)
    pg, pg_src = resolve_guidance(None, "mini", pyramidal.info["checkpoint"],
                                  stages=StagePlan.parse(args.plan).num_stages)
    return [
        {"key": "student", "name": row_name("student", card), "pipe": student,
         "mode": "pyramidal", "schedule": None, "guidance": None, "guidance_source": "recipe"},
        {"key": "original", "name": f"original {args.full}", "pipe": base, "mode": "original",
         "schedule": args.full, "guidance": g, "guidance_source": g_src},
        {"key": "pyramidal", "name": f"finetuned pyramidal {args.plan}", "pipe": pyramidal, "mode": "pyramidal",
         "schedule": args.plan, "guidance": pg, "guidance_source": pg_src},
    ]


def run_once(row: dict, prompt: str, seed: int) -> dict:
    """One request on ``row`` (latents kept, not decoded): its report's seconds and TFLOPs."""
    from core import GenerationRequest

    pipe = row["pipe"]
    req = GenerationRequest(prompt, model=pipe.name, mode=row["mode"], schedule=row["schedule"],
                            guidance=row["guidance"], seed=seed)
    rep = pipe.generate(req, preview=False, return_latents=True, decode=False).report
    return {"prompt": prompt, "seed": seed, "denoise": rep["seconds"]["denoise"], "tflops": rep["tflops"],
            "sampler": rep["sampler"], "schedule": rep["plan"]["schedule"], "guidance": rep["guidance"]}


def measure(rows: list[dict], args) -> None:
    """A warm-up video per row, then ``args.repeats`` rounds of ``args.videos`` videos, the rows
    taking turns per video."""
    from finetune.world import all_captions

    captions = all_captions()
    for r in rows:
        r["warm_up"] = run_once(r, captions[0], 999_999)
        r["runs"] = []
    for _ in range(args.repeats):
        for i in range(args.videos):
            for r in rows:
                r["runs"].append(run_once(r, captions[i % len(captions)], i))
    for r in rows:
        seconds = [run["denoise"] for run in r["runs"]]
        r["median_seconds"], r["min_seconds"] = float(np.median(seconds)), float(min(seconds))
        r["tflops"] = r["runs"][-1]["tflops"]
        r["sampler"], r["plan"] = r["runs"][-1]["sampler"], r["runs"][-1]["schedule"]
        r["guidance"] = r["runs"][-1]["guidance"]


def ratios(rows: list[dict]) -> dict:
    """Original/student and pyramidal/student, for median seconds and for TFLOPs."""
    by = {r["key"]: r for r in rows}
    s = by["student"]
    return {f"{k}_over_student": {"seconds": by[k]["median_seconds"] / s["median_seconds"],
                                  "tflops": by[k]["tflops"] / s["tflops"]} for k in ("original", "pyramidal")}


def report(rows: list[dict], rat: dict, args) -> dict:
    """Print the table and the ratios; the JSON-ready numbers."""
    import torch

    print(f"mini, 17x128x128, {args.videos} prompt/seed pair(s) x {args.repeats} round(s) per row, batch 1, "
          f"after a warm-up each; rows interleaved; {torch.get_num_threads()} torch thread(s); denoising only")
    print(f"{'row':<40} {'sampler':>8} {'guidance':>13} {'TFLOPs':>9} {'median s':>9} {'fastest s':>9}")
    for r in rows:
        g = ",".join(f"{v:g}" for v in r["guidance"])
        print(f"{r['name']:<40} {r['sampler']:>8} {g:>13} {r['tflops']:>9.5f} {r['median_seconds']:>9.3f} "
              f"{r['min_seconds']:>9.3f}")
    for k, label in (("original", f"original {args.full}"), ("pyramidal", f"pyramidal {args.plan}")):
        v = rat[f"{k}_over_student"]
        print(f"{label} / student: {v['seconds']:.2f}x the seconds, {v['tflops']:.2f}x the FLOPs "
              f"(the seconds' ratio is {v['seconds'] / v['tflops']:.0%} of the FLOPs')")
    keep = ("key", "name", "mode", "plan", "sampler", "guidance", "guidance_source", "tflops", "median_seconds",
            "min_seconds", "warm_up", "runs")
    return {"student": args.student, "pyramidal": args.pyramidal, "shape": [17, 128, 128], "batch": 1,
            "videos": args.videos, "repeats": args.repeats, "threads": torch.get_num_threads(),
            "prompts_seeds": "prompt i = all_captions()[i % 24], seed i, every row; warm-up seed 999999",
            "ratios": rat, "rows": [{k: r[k] for k in keep} for r in rows]}


def parse(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--student", default=DEFAULT_STUDENT, help="the distilled checkpoint's folder")
    ap.add_argument("--pyramidal", default="models/mini-pyramidal", help="the finetuned pyramidal checkpoint")
    ap.add_argument("--full", default="0-0-30", help="the original's schedule")
    ap.add_argument("--plan", default="12-12-6", help="the finetuned pyramidal plan")
    ap.add_argument("--videos", type=int, default=4, help="prompt/seed pairs per round")
    ap.add_argument("--repeats", type=int, default=2, help="rounds over the pairs")
    ap.add_argument("--mini", default="models/mini", help="the mini model's folder")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--json", default=None, help="write the numbers here")
    return ap.parse_args(argv)


def main(argv=None) -> int:
    args = parse(argv)
    os.environ["PWAN_MINI_PATH"] = str(_path(args.mini))
    from settings import reload_settings

    reload_settings()
    card = student_card(args.student)
    if isinstance(card, str):
        print(f"error: {card}; pass --student FOLDER", file=sys.stderr)
        return 2
    if not (_path(args.pyramidal) / "card.json").is_file():
        print(f"error: no pyramidal checkpoint at {args.pyramidal} (no card.json); pass --pyramidal FOLDER",
              file=sys.stderr)
        return 2
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    rows = load_rows(args, card)
    measure(rows, args)
    res = report(rows, ratios(rows), args)
    if args.json:
        out = _path(args.json)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(res, indent=1) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
