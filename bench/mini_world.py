"""The mini-world table: the paper's claims measured in miniature (same prompts and seeds per row).

Rows: the original mini model at its full schedule; a noise floor (the original again with other
seeds); the original through a pyramidal plan without finetuning (training-free); the finetuned
pyramidal checkpoint at a 20-20-10-like plan and at a cheaper one; the original with its steps cut
to the finetuned plan's FLOPs (what the same compute buys without a pyramid), on diffusers' grid
(its last step only moves sigma 0.0089 -> 0) and on the uniform grid down to 0 that pyramidal plans
use (``core.plan.GRIDS``). Columns: scorer adherence per
attribute and all three; Frechet distance (scorer features) to real clips and to the original's
samples; GFLOPs; measured seconds per video (denoising alone, and in all with the VAE decode,
which is shared by every row and runs in batches of ``--decode-batch``).

``--decoder tiny`` decodes every row with the tiny decoder (``--tiny-decoder FOLDER``) instead of
the VAE, to score the videos a user of the tiny decoder sees; its JSON goes to
``bench/results/mini_world_tiny.json`` unless given, never to the shipped table's. ``--rows``
picks rows by key (``original,tuned,cheap``: the original and the two finetuned plans).

    python bench/mini_world.py [--clips 200] [--json out.json] [--strip docs/mini_world_strip.png]
    python bench/mini_world.py --decoder tiny --rows original,tuned,cheap [--tiny-decoder FOLDER]
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

from finetune.evaluate import generate_row  # noqa: E402
from settings import reload_settings  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
STRIP_PROMPTS = ("a red circle moves to the right", "a green square moves up", "a blue circle moves down")
ROW_KEYS = ("original", "floor", "free", "tuned", "cheap", "fewer", "fewer-uniform")  # the rows, in order
SHIPPED_JSON = ROOT / "bench" / "results" / "mini_world.json"  # the README's table: full decoder, all rows
TINY_JSON = "bench/results/mini_world_tiny.json"


def equal_flops_schedule(pipe, full: str, guidance, plan: str, plan_guidance) -> str:
    """The original's schedule with its steps cut to the pyramidal plan's FLOPs (the plain way to
    spend the same compute): ``0-0-N``, N rounded to the nearest step."""
    from core import GenerationRequest
    from core.flops import plan_flops

    def cost(mode: str, schedule: str, g) -> float:  # as the pipeline reports it, at the rows' default shape
        req = GenerationRequest("x", model=pipe.name, mode=mode, schedule=schedule, guidance=g)
        return plan_flops(pipe.transformer.config, pipe.plan_for(req), req.frames, req.height, req.width,
                          pipe.max_sequence_length)["tflops"]

    steps = int(full.split("-")[-1])
    n = max(1, round(steps * cost("pyramidal", plan, plan_guidance) / cost("original", full, guidance)))
    return f"0-0-{n}"


def table_rows(args, base, seeds: list[int]) -> list[tuple]:
    """The rows ``args.rows`` picks (all by default; see ``ROW_KEYS``), in the table's order:
    ``(name, pipeline, mode, schedule, seeds, guidance, grid)``."""
    from core import load_pipeline

    other_seeds = [s + 1_000_000 for s in seeds]
    g, pg = args.guidance, args.pyramid_guidance
    rows = {"original": ("original " + args.full, base, "original", args.full, seeds, g, None),
            "floor": ("noise floor: original, other seeds", base, "original", args.full, other_seeds, g, None),
            "free": ("training-free pyramidal " + args.plan, base, "pyramidal", args.plan, seeds, pg, None)}
    if args.pyramidal and Path(args.pyramidal).is_dir() and {"tuned", "cheap"} & set(args.rows):
        tuned = load_pipeline("mini", checkpoint_dir=args.pyramidal, name="mini")
        rows["tuned"] = ("finetuned pyramidal " + args.plan, tuned, "pyramidal", args.plan, seeds, pg, None)
        rows["cheap"] = ("finetuned pyramidal " + args.cheap, tuned, "pyramidal", args.cheap, seeds, pg, None)
    fewer = equal_flops_schedule(base, args.full, g, args.plan, pg)
    rows["fewer"] = (f"fewer steps: original {fewer}", base, "original", fewer, seeds, g, None)
    # the same steps of the original model through our sampler on the grid pyramidal plans use
    rows["fewer-uniform"] = (f"fewer steps, grid to 0: original {fewer}", base, "pyramidal", fewer, seeds, g,
                             "uniform")
    return [rows[k] for k in ROW_KEYS if k in args.rows and k in rows]


def table(args, decoder=None) -> dict:
    """Every row's videos generated, decoded (``decoder``: latents -> frames; default the VAE)
    and scored; the FD to the original is to the original row's videos (None without that row)."""
    from core import load_pipeline
    from finetune.scorer import accuracy, clip_features, frechet_distance, score_clip
    from finetune.world import all_captions, make_clip

    os.environ["PWAN_MINI_PATH"] = str(Path(args.mini).resolve())
    reload_settings()
    captions = all_captions()
    prompts = [captions[i % len(captions)] for i in range(args.clips)]
    seeds = list(range(args.clips))
    real = np.stack([clip_features(make_clip(10_000_000 + i)[0]) for i in range(args.clips)])
    base = load_pipeline("mini")
    results, reference, strips = [], None, []
    for name, pipe, mode, schedule, row_seeds, guidance, grid in table_rows(args, base, seeds):
        out = generate_row(pipe, mode, schedule, prompts, row_seeds, guidance, args.decode_batch, grid, decoder)
        feats = np.stack([clip_features(v) for v in out["videos"]])
        scores = [score_clip(v) for v in out["videos"]]
        acc = accuracy(scores, prompts)
        is_original = name == "original " + args.full and row_seeds is seeds
        if is_original:
            reference = feats
        results.append({
            "row": name, "mode": mode, "schedule": schedule, "guidance": guidance, "grid": out["grid"],
            "colour": acc["colour"], "shape": acc["shape"], "direction": acc["direction"], "all": acc["all"],
            "fd_real": frechet_distance(feats, real),
            "fd_original": 0.0 if is_original else None if reference is None else frechet_distance(feats, reference),
            "tflops": out["tflops"], "denoise_seconds": out["denoise_seconds"], "seconds": out["seconds"],
            "clips": [[s["colour"], s["shape"], s["direction"]] for s in scores],
        })
        strips.append((name, [out["videos"][prompts.index(p)] for p in STRIP_PROMPTS if p in prompts]))
        print(_format(results[-1]), flush=True)
    return {"clips": args.clips, "guidance": args.guidance, "pyramid_guidance": args.pyramid_guidance,
            "guidance_source": args.guidance_source, "pyramid_guidance_source": args.pyramid_guidance_source,
            "decode_batch": args.decode_batch,
            "prompts_seeds": "prompt i = all_captions()[i % 24], seed i; noise floor: seed i + 1,000,000; "
                             "real clips: world seeds 10,000,000 + i",
            "rows": results, "_strips": strips}


def save_strip(strips, path: Path, frames=(0, 8, 16)) -> None:
    """One line per row: the strip prompts' videos at a few frames, labelled."""
    from PIL import Image, ImageDraw

    tile, label_h = 96, 14
    cols = len(STRIP_PROMPTS) * len(frames)
    img = Image.new("RGB", (cols * tile, len(strips) * (tile + label_h)), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    for r, (name, videos) in enumerate(strips):
        y = r * (tile + label_h)
        draw.text((2, y + 1), name, fill=(0, 0, 0))
        for p, video in enumerate(videos):
            for f, t in enumerate(frames):
                im = Image.fromarray(video[min(t, len(video) - 1)]).resize((tile, tile))
                img.paste(im, ((p * len(frames) + f) * tile, y + label_h))
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)


def _format(r: dict) -> str:
    return (f"{r['row']:<40} {r['colour']:>6.3f} {r['shape']:>6.3f} {r['direction']:>6.3f} {r['all']:>6.3f} "
            f"{r['fd_real']:>8.3f} {_fd(r['fd_original'])} {r['tflops'] * 1e3:>8.3f} "
            f"{r['denoise_seconds']:>9.3f} {r['seconds']:>7.2f}")


def _fd(value) -> str:
    return f"{'-':>8}" if value is None else f"{value:>8.3f}"


def resolve_row_guidance(args) -> None:
    """The rows' guidance, through core's one resolver: the original's rows the mini preset's
    recommendation, the pyramidal rows the finetuned card's for the plan (unless given). Sets
    ``args.guidance``/``args.pyramid_guidance`` and their ``*_source`` (printed and in the JSON)."""
    from core import StagePlan, resolve_guidance

    os.environ["PWAN_MINI_PATH"] = str(Path(args.mini).resolve())
    reload_settings()
    args.guidance, args.guidance_source = resolve_guidance(args.guidance, "mini", None, stages=1)
    pyramid = args.pyramid_guidance
    if pyramid is not None:
        values = [float(v) for v in str(pyramid).split(",")]
        pyramid = values[0] if len(values) == 1 else values
    card = Path(args.pyramidal or "") / "card.json"
    args.pyramid_guidance, args.pyramid_guidance_source = resolve_guidance(
        pyramid, "mini", json.loads(card.read_text()) if card.is_file() else None,
        stages=StagePlan.parse(args.plan).num_stages)


def parse(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser()
    ap.add_argument("--clips", type=int, default=200)
    ap.add_argument("--mini", default=str(ROOT / "models" / "mini"))
    ap.add_argument("--pyramidal", default=str(ROOT / "models" / "mini-pyramidal"))
    ap.add_argument("--full", default="0-0-30", help="the original's schedule")
    ap.add_argument("--plan", default="12-12-6")
    ap.add_argument("--cheap", default="4-4-2")
    ap.add_argument("--guidance", type=float, default=None,
                    help="the original's rows; default: the mini card's recommended guidance")
    ap.add_argument("--pyramid-guidance", default=None,
                    help="the pyramidal rows, one value or one per stage (1,1,1.5); default: the finetuned "
                         "checkpoint card's recommendation for the plan")
    ap.add_argument("--decode-batch", type=int, default=8)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--json", default=None, help="write the table (and every clip's scored attributes) here "
                                                 f"(--decoder tiny: default {TINY_JSON})")
    ap.add_argument("--strip", default=None, help="write a PNG of sample frames per row here")
    ap.add_argument("--guidance-only", action="store_true", help="print the rows' guidance and its sources (JSON)")
    ap.add_argument("--decoder", choices=("full", "tiny"), default="full",
                    help="decode every row with the VAE (full) or the tiny decoder")
    ap.add_argument("--tiny-decoder", default="models/mini-tiny-decoder", help="the tiny decoder's folder")
    ap.add_argument("--rows", default=",".join(ROW_KEYS), help=f"rows to run, comma-separated: {', '.join(ROW_KEYS)}")
    args = ap.parse_args(argv)
    args.rows = [k.strip() for k in args.rows.split(",") if k.strip()]
    unknown = [k for k in args.rows if k not in ROW_KEYS]
    if unknown or not args.rows:
        ap.error(f"--rows: unknown {unknown}; choose from {', '.join(ROW_KEYS)}")
    if {"tuned", "cheap"} & set(args.rows) and args.rows != list(ROW_KEYS) and not Path(args.pyramidal).is_dir():
        ap.error(f"--rows {','.join(args.rows)} needs the finetuned checkpoint, not found at {args.pyramidal}")
    if args.decoder == "tiny" and args.json is None:
        args.json = str(ROOT / TINY_JSON)
    partial = args.decoder == "tiny" or args.rows != list(ROW_KEYS)
    if partial and args.json and Path(args.json).resolve() == SHIPPED_JSON:
        ap.error(f"{args.json} is the shipped table (full decoder, every row): write this run elsewhere")
    return args


def tiny_decoder_fn(folder: str):
    """The tiny decoder's ``decode_frames`` (latents -> uint8 frames per video), or exit 2 with a
    message when the folder holds no decoder."""
    from core.errors import ModelLoadError
    from core.tiny_decoder import load_tiny_decoder

    path = Path(folder) if Path(folder).is_absolute() else ROOT / folder
    try:
        tiny = load_tiny_decoder(path)
    except ModelLoadError as exc:
        print(f"error: --decoder tiny needs a tiny decoder: {exc} (or pass --tiny-decoder FOLDER)", file=sys.stderr)
        raise SystemExit(2) from exc
    return tiny.decode_frames


def main(argv=None) -> int:
    args = parse(argv)
    resolve_row_guidance(args)
    if args.guidance_only:
        print(json.dumps({k: getattr(args, k) for k in ("guidance", "guidance_source", "pyramid_guidance",
                                                         "pyramid_guidance_source")}))
        return 0
    decoder = tiny_decoder_fn(args.tiny_decoder) if args.decoder == "tiny" else None
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    print(f"mini world, {args.clips} clips per row (same prompts and seeds; the noise floor uses other seeds); "
          f"guidance: original {args.guidance} ({args.guidance_source}), pyramidal {args.pyramid_guidance} "
          f"({args.pyramid_guidance_source})")
    if decoder is not None:
        print(f"decoder: tiny ({args.tiny_decoder}), every row")
    print(f"{'row':<40} {'colour':>6} {'shape':>6} {'dir':>6} {'all 3':>6} {'FD real':>8} {'FD orig':>8} "
          f"{'GFLOPs':>8} {'denoise s':>9} {'s/video':>7}")
    result = table(args, decoder)
    strips = result.pop("_strips")
    if decoder is not None:
        result.update(decoder="tiny", tiny_decoder=args.tiny_decoder)
    if args.rows != list(ROW_KEYS):
        result["rows_run"] = args.rows
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=1))
        if decoder is not None or args.rows != list(ROW_KEYS):
            print(f"wrote {args.json}")
    if args.strip:
        save_strip(strips, Path(args.strip))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
