"""The mini-world table: the paper's claims measured in miniature (same prompts and seeds per row).

Rows: the original mini model at its full schedule; a noise floor (the original again with other
seeds); the original through a pyramidal plan without finetuning (training-free); the finetuned
pyramidal checkpoint at a 20-20-10-like plan and at a cheaper one. Columns: scorer adherence per
attribute and all three; Frechet distance (scorer features) to real clips and to the original's
samples; TFLOPs and measured seconds per video.

    python bench/mini_world.py [--clips 200] [--mini models/mini] [--pyramidal models/mini-pyramidal]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parents[1])  # the repo, not bench/ (bench/queue.py would shadow queue)

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def generate_row(pipe, mode: str, schedule: str, prompts: list[str], seeds: list[int], guidance: float) -> dict:
    from core import GenerationRequest

    videos, seconds, tflops = [], [], 0.0
    for prompt, seed in zip(prompts, seeds):
        req = GenerationRequest(prompt, model=pipe.name, mode=mode, schedule=schedule, guidance=guidance, seed=seed)
        t0 = time.perf_counter()
        res = pipe.generate(req, preview=False)
        seconds.append(time.perf_counter() - t0)
        tflops = res.report["tflops"]
        videos.append(res.frames)
    return {"videos": videos, "seconds": float(np.mean(seconds)), "tflops": tflops}


def table(args) -> list[dict]:
    from core import load_pipeline
    from finetune.scorer import accuracy, clip_features, frechet_distance, score_clip
    from finetune.world import all_captions, make_clip

    os.environ["PWAN_MINI_PATH"] = str(Path(args.mini).resolve())
    captions = all_captions()
    prompts = [captions[i % len(captions)] for i in range(args.clips)]
    seeds = list(range(args.clips))
    other_seeds = [s + 1_000_000 for s in seeds]
    real = [clip_features(make_clip(10_000_000 + i)[0]) for i in range(args.clips)]
    base = load_pipeline("mini")
    rows = [("original " + args.full, base, "original", args.full, seeds),
            ("noise floor: original, other seeds", base, "original", args.full, other_seeds),
            ("training-free pyramidal " + args.plan, base, "pyramidal", args.plan, seeds)]
    if args.pyramidal and Path(args.pyramidal).is_dir():
        tuned = load_pipeline("mini", checkpoint_dir=args.pyramidal, name="mini")
        rows += [("finetuned pyramidal " + args.plan, tuned, "pyramidal", args.plan, seeds),
                 ("finetuned pyramidal " + args.cheap, tuned, "pyramidal", args.cheap, seeds)]
    results, reference = [], None
    for name, pipe, mode, schedule, row_seeds in rows:
        out = generate_row(pipe, mode, schedule, prompts, row_seeds, args.guidance)
        feats = np.stack([clip_features(v) for v in out["videos"]])
        acc = accuracy([score_clip(v) for v in out["videos"]], prompts)
        if reference is None:
            reference = feats
        results.append({
            "row": name, "colour": acc["colour"], "shape": acc["shape"], "direction": acc["direction"],
            "all": acc["all"], "fd_real": frechet_distance(feats, np.stack(real)),
            "fd_original": frechet_distance(feats, reference) if results else 0.0,
            "tflops": out["tflops"], "seconds": out["seconds"],
        })
        print(_format(results[-1]), flush=True)
    return results


def _format(r: dict) -> str:
    return (f"{r['row']:<40} {r['colour']:>6.2f} {r['shape']:>6.2f} {r['direction']:>6.2f} {r['all']:>6.2f} "
            f"{r['fd_real']:>8.3f} {r['fd_original']:>8.3f} {r['tflops'] * 1e3:>9.3f} {r['seconds']:>7.2f}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--clips", type=int, default=200)
    ap.add_argument("--mini", default=str(ROOT / "models" / "mini"))
    ap.add_argument("--pyramidal", default=str(ROOT / "models" / "mini-pyramidal"))
    ap.add_argument("--full", default="0-0-30", help="the original's schedule")
    ap.add_argument("--plan", default="12-12-6")
    ap.add_argument("--cheap", default="4-4-2")
    ap.add_argument("--guidance", type=float, default=4.0)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    print(f"mini world, {args.clips} clips per row (same prompts and seeds; the noise floor uses other seeds)")
    print(f"{'row':<40} {'colour':>6} {'shape':>6} {'dir':>6} {'all 3':>6} {'FD real':>8} {'FD orig':>8} "
          f"{'GFLOPs':>9} {'s/video':>7}")
    results = table(args)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
