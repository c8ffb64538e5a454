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

Distilled few-step students: one row per ``--student NAME=FOLDER`` (repeatable; default
``distilled=models/mini-distilled`` when it is there; ``--student none``: no student), named from
its card ("distilled 2-2-1 (DMD-PT*)") and run with neither schedule nor guidance, so its card's
recipe applies. Beside them two floors a student must beat, each the same compute without
distillation: ``floor-2-2-1``, the finetuned pyramidal checkpoint at the students' plan ``2-2-1``
with its own Euler sampler and its card's guidance, and ``floor-0-0-1``, the original at ``0-0-1``
with its guidance. The floors and the students are in the default rows only when a student is
(and a floor's checkpoint is there): without a student the default table is the one the README
shows.

``--decoder tiny`` decodes every row with the tiny decoder (``--tiny-decoder FOLDER``) instead of
the VAE, to score the videos a user of the tiny decoder sees; its JSON goes to
``bench/results/mini_world_tiny.json`` unless given, never to the shipped table's. ``--rows``
picks rows by key (``original,tuned,cheap``: the original and the two finetuned plans; a student
by its NAME).

Held-out checks, for the winner on what the table never uses: ``--seed-offset K`` gives prompt
``i`` the seed ``i + K`` (the noise floor ``i + K + 1,000,000``), and ``--prompt-style`` rewrites
the prompts in a surface form ``finetune.world.parse_caption`` (so the scorer) still reads:

* ``held-out``: "A red circle moves to the right." The mini tokenizer lowercases (the capital
  alone gives the table's tokens) but keeps the full stop, as ``<unk>``: one token the
  training captions never had;
* ``held-out-words``: "a red circle moves to the right on a black background": four words of the
  vocabulary the training captions never used (the simple world has one background, so its
  captions never name it), true of every clip.

A run with either, or with rows other than the default ones, or with the tiny decoder, never
writes the shipped table (``bench/results/mini_world.json``).

    python bench/mini_world.py [--clips 200] [--json out.json] [--strip docs/mini_world_strip.png]
    python bench/mini_world.py --decoder tiny --rows original,tuned,cheap [--tiny-decoder FOLDER]
    python bench/mini_world.py --rows original,floor-2-2-1,floor-0-0-1,distilled --student distilled=FOLDER
    python bench/mini_world.py --rows original,floor,distilled --seed-offset 5000 --prompt-style held-out-words
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

from bench.students import DEFAULT_STUDENT, resolve, row_name, student_card  # noqa: E402
from finetune.evaluate import generate_row  # noqa: E402
from settings import reload_settings  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
STRIP_PROMPTS = ("a red circle moves to the right", "a green square moves up", "a blue circle moves down")
ROW_KEYS = ("original", "floor", "free", "tuned", "cheap", "fewer", "fewer-uniform")  # the rows, in order
FLOOR_KEYS = ("floor-2-2-1", "floor-0-0-1")  # what a 2-2-1 student must beat; after ROW_KEYS, before students
FLOOR_PLAN = "2-2-1"
PROMPT_STYLES = ("table", "held-out", "held-out-words")
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


def table_rows(args, base, seeds: list[int]) -> list[dict]:
    """The rows ``args.rows`` picks, in the table's order (``ROW_KEYS``, ``FLOOR_KEYS``, then the
    students): ``name, pipe, mode, schedule, seeds, guidance, grid`` (a student's schedule and
    guidance None, so its recipe applies; its ``recipe`` from the card)."""
    from core import load_pipeline

    g, pg = args.guidance, args.pyramid_guidance

    def row(name, pipe, mode, schedule, guidance, row_seeds=seeds, grid=None, recipe=None):
        return dict(name=name, pipe=pipe, mode=mode, schedule=schedule, seeds=row_seeds, guidance=guidance, grid=grid,
                    recipe=recipe)

    rows = {"original": row("original " + args.full, base, "original", args.full, g),
            "floor": row("noise floor: original, other seeds", base, "original", args.full, g,
                         [s + 1_000_000 for s in seeds]),
            "free": row("training-free pyramidal " + args.plan, base, "pyramidal", args.plan, pg),
            "floor-0-0-1": row("floor: original 0-0-1", base, "original", "0-0-1", g)}
    if args.pyramidal and Path(args.pyramidal).is_dir() and {"tuned", "cheap", "floor-2-2-1"} & set(args.rows):
        tuned = load_pipeline("mini", checkpoint_dir=args.pyramidal, name="mini")
        rows["tuned"] = row("finetuned pyramidal " + args.plan, tuned, "pyramidal", args.plan, pg)
        rows["cheap"] = row("finetuned pyramidal " + args.cheap, tuned, "pyramidal", args.cheap, pg)
        rows["floor-2-2-1"] = row(f"floor: finetuned pyramidal {FLOOR_PLAN}", tuned, "pyramidal", FLOOR_PLAN,
                                  args.floor_guidance)
    for key, folder, card in args.students:
        if key in args.rows:
            student = load_pipeline("mini", checkpoint_dir=resolve(folder), name="mini")
            rows[key] = row(row_name(key, card), student, "pyramidal", None, None, recipe=card["recipe"])
    if {"fewer", "fewer-uniform"} & set(args.rows):
        fewer = equal_flops_schedule(base, args.full, g, args.plan, pg)
        rows["fewer"] = row(f"fewer steps: original {fewer}", base, "original", fewer, g)
        # the same steps of the original model through our sampler on the grid pyramidal plans use
        rows["fewer-uniform"] = row(f"fewer steps, grid to 0: original {fewer}", base, "pyramidal", fewer, g,
                                    grid="uniform")
    order = ROW_KEYS + FLOOR_KEYS + tuple(key for key, _, _ in args.students)
    return [rows[k] for k in order if k in args.rows and k in rows]


def styled_prompt(caption: str, style: str) -> str:
    """``caption`` in another surface form that ``parse_caption`` reads the same (``PROMPT_STYLES``)."""
    if style == "held-out":
        return caption[0].upper() + caption[1:] + "."
    if style == "held-out-words":
        from finetune.world import WorldConfig

        backgrounds = list(WorldConfig().backgrounds)
        if len(backgrounds) != 1 or caption.endswith(" background"):
            raise ValueError("held-out-words adds the background to captions that never name it")
        return f"{caption} on a {backgrounds[0]} background"
    return caption


def score_row(r: dict, out: dict, prompts: list[str], real, reference) -> dict:
    """One row's table entry from its generated videos (``reference``: the original's features)."""
    from finetune.scorer import accuracy, clip_features, frechet_distance, score_clip

    feats = np.stack([clip_features(v) for v in out["videos"]])
    scores = [score_clip(v) for v in out["videos"]]
    acc = accuracy(scores, prompts)
    recipe = r["recipe"] or {}
    return {
        "row": r["name"], "mode": r["mode"], "schedule": recipe.get("schedule", r["schedule"]),
        "guidance": recipe.get("guidance", r["guidance"]), "grid": out["grid"], "recipe": bool(recipe),
        "colour": acc["colour"], "shape": acc["shape"], "direction": acc["direction"], "all": acc["all"],
        "fd_real": frechet_distance(feats, real),
        "fd_original": None if reference is None else frechet_distance(feats, reference),
        "tflops": out["tflops"], "denoise_seconds": out["denoise_seconds"], "seconds": out["seconds"],
        "clips": [[s["colour"], s["shape"], s["direction"]] for s in scores], "_features": feats,
    }


def table(args, decoder=None) -> dict:
    """Every row's videos generated, decoded (``decoder``: latents -> frames; default the VAE)
    and scored; the FD to the original is to the original row's videos (None without that row)."""
    from core import load_pipeline
    from finetune.scorer import clip_features
    from finetune.world import all_captions, make_clip

    os.environ["PWAN_MINI_PATH"] = str(Path(args.mini).resolve())
    reload_settings()
    captions = all_captions()
    table_prompts = [captions[i % len(captions)] for i in range(args.clips)]
    prompts = [styled_prompt(p, args.prompt_style) for p in table_prompts]
    seeds = [i + args.seed_offset for i in range(args.clips)]
    real = np.stack([clip_features(make_clip(10_000_000 + i)[0]) for i in range(args.clips)])
    base = load_pipeline("mini")
    results, reference, strips = [], None, []
    for r in table_rows(args, base, seeds):
        out = generate_row(r["pipe"], r["mode"], r["schedule"], prompts, r["seeds"], r["guidance"], args.decode_batch,
                           r["grid"], decoder)
        is_original = r["name"] == "original " + args.full and r["seeds"] is seeds
        entry = score_row(r, out, prompts, real, None if is_original else reference)
        feats = entry.pop("_features")
        if is_original:
            reference, entry["fd_original"] = feats, 0.0
        results.append(entry)
        strips.append((r["name"], [out["videos"][table_prompts.index(p)] for p in STRIP_PROMPTS
                                   if p in table_prompts]))
        print(_format(results[-1]), flush=True)
    return {"clips": args.clips, "guidance": args.guidance, "pyramid_guidance": args.pyramid_guidance,
            "guidance_source": args.guidance_source, "pyramid_guidance_source": args.pyramid_guidance_source,
            "decode_batch": args.decode_batch, "seed_offset": args.seed_offset, "prompt_style": args.prompt_style,
            "prompts_seeds": f"prompt i = all_captions()[i % 24] ({args.prompt_style} form), seed i + "
                             f"{args.seed_offset}; noise floor: seed i + {args.seed_offset} + 1,000,000; "
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
    ``args.guidance``/``args.pyramid_guidance``/``args.floor_guidance`` (``floor-2-2-1``'s) and
    their ``*_source`` (printed and in the JSON)."""
    from core import StagePlan, resolve_guidance

    os.environ["PWAN_MINI_PATH"] = str(Path(args.mini).resolve())
    reload_settings()
    args.guidance, args.guidance_source = resolve_guidance(args.guidance, "mini", None, stages=1)
    pyramid = args.pyramid_guidance
    if pyramid is not None:
        values = [float(v) for v in str(pyramid).split(",")]
        pyramid = values[0] if len(values) == 1 else values
    card = Path(args.pyramidal or "") / "card.json"
    card = json.loads(card.read_text()) if card.is_file() else None
    args.pyramid_guidance, args.pyramid_guidance_source = resolve_guidance(
        pyramid, "mini", card, stages=StagePlan.parse(args.plan).num_stages)
    args.floor_guidance, args.floor_guidance_source = resolve_guidance(
        pyramid, "mini", card, stages=StagePlan.parse(FLOOR_PLAN).num_stages)


def parse_students(ap, given: list[str] | None) -> list[tuple[str, str, dict]]:
    """``(NAME, FOLDER, card)`` per ``--student NAME=FOLDER``; none given: ``distilled`` at
    ``DEFAULT_STUDENT`` when it is there; ``--student none``: none. ``ap.error`` on a bad one."""
    if given is None:
        there = not isinstance(student_card(DEFAULT_STUDENT), str)
        given = [f"distilled={DEFAULT_STUDENT}"] if there else []
    students = []
    for item in given:
        if item.lower() == "none":
            continue
        name, sep, folder = item.partition("=")
        name = name.strip()
        if not sep or not name or not folder or "," in name:
            ap.error(f"--student {item!r}: give NAME=FOLDER (NAME without commas)")
        if name in ROW_KEYS + FLOOR_KEYS or name in [n for n, _, _ in students]:
            ap.error(f"--student {item!r}: the row key {name!r} is taken")
        card = student_card(folder)
        if isinstance(card, str):
            ap.error(f"--student {item!r}: {card}")
        students.append((name, folder, card))
    return students


def default_rows(args) -> list[str]:
    """Every row the table runs when ``--rows`` is not given: ``ROW_KEYS``, and with a student
    the floors whose checkpoint is there and the students."""
    if not args.students:
        return list(ROW_KEYS)
    floors = [k for k in FLOOR_KEYS if k != "floor-2-2-1" or Path(args.pyramidal).is_dir()]
    return list(ROW_KEYS) + floors + [name for name, _, _ in args.students]


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
    ap.add_argument("--student", action="append", default=None, metavar="NAME=FOLDER",
                    help=f"a distilled student's row (repeatable; default: distilled={DEFAULT_STUDENT} when it is "
                         "there; none: no student)")
    ap.add_argument("--seed-offset", type=int, default=0, help="prompt i gets seed i + K (held-out seeds)")
    ap.add_argument("--prompt-style", choices=PROMPT_STYLES, default="table",
                    help="the prompts' surface form (held-out forms: see the docstring)")
    ap.add_argument("--decode-batch", type=int, default=8)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--json", default=None, help="write the table (and every clip's scored attributes) here "
                                                 f"(--decoder tiny: default {TINY_JSON})")
    ap.add_argument("--strip", default=None, help="write a PNG of sample frames per row here")
    ap.add_argument("--guidance-only", action="store_true", help="print the rows' guidance and its sources (JSON)")
    ap.add_argument("--decoder", choices=("full", "tiny"), default="full",
                    help="decode every row with the VAE (full) or the tiny decoder")
    ap.add_argument("--tiny-decoder", default="models/mini-tiny-decoder", help="the tiny decoder's folder")
    ap.add_argument("--rows", default=None,
                    help=f"rows to run, comma-separated: {', '.join(ROW_KEYS + FLOOR_KEYS)} or a student's NAME "
                         "(default: every row; the floors and students only with a student)")
    args = ap.parse_args(argv)
    args.students = parse_students(ap, args.student)
    check_rows(ap, args)
    return args


def check_rows(ap, args) -> None:
    """``args.rows`` as a list (default :func:`default_rows`), or ``ap.error``: unknown keys, a
    checkpoint missing, or a partial / held-out / tiny-decoder run aimed at the shipped table."""
    known = ROW_KEYS + FLOOR_KEYS + tuple(name for name, _, _ in args.students)
    defaults = default_rows(args)
    args.rows = defaults if args.rows is None else [k.strip() for k in args.rows.split(",") if k.strip()]
    unknown = [k for k in args.rows if k not in known]
    if unknown or not args.rows:
        ap.error(f"--rows: unknown {unknown}; choose from {', '.join(known)} (a student's row needs --student "
                 "NAME=FOLDER)")
    if {"tuned", "cheap", "floor-2-2-1"} & set(args.rows) and args.rows != defaults \
            and not Path(args.pyramidal).is_dir():
        ap.error(f"--rows {','.join(args.rows)} needs the finetuned checkpoint, not found at {args.pyramidal}")
    if args.decoder == "tiny" and args.json is None:
        args.json = str(ROOT / TINY_JSON)
    args.partial = args.rows != defaults
    held_out = args.seed_offset != 0 or args.prompt_style != "table"
    if (args.partial or held_out or args.decoder == "tiny") and args.json \
            and Path(args.json).resolve() == SHIPPED_JSON:
        ap.error(f"{args.json} is the shipped table (full decoder, every default row, the table's seeds and "
                 "prompts): write this run elsewhere")


def load_tiny(folder: str):
    """The tiny decoder (its ``decode_frames``: latents -> uint8 frames per video), or exit 2 with
    a message when the folder holds no decoder."""
    from core.errors import ModelLoadError
    from core.tiny_decoder import load_tiny_decoder

    path = Path(folder) if Path(folder).is_absolute() else ROOT / folder
    try:
        tiny = load_tiny_decoder(path)
    except ModelLoadError as exc:
        print(f"error: --decoder tiny needs a tiny decoder: {exc} (or pass --tiny-decoder FOLDER)", file=sys.stderr)
        raise SystemExit(2) from exc
    return tiny


def main(argv=None) -> int:
    args = parse(argv)
    resolve_row_guidance(args)
    if args.guidance_only:
        print(json.dumps({k: getattr(args, k) for k in ("guidance", "guidance_source", "pyramid_guidance",
                                                         "pyramid_guidance_source")}))
        return 0
    tiny = load_tiny(args.tiny_decoder) if args.decoder == "tiny" else None
    decoder = tiny.decode_frames if tiny is not None else None
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    print(f"mini world, {args.clips} clips per row (same prompts and seeds; the noise floor uses other seeds); "
          f"guidance: original {args.guidance} ({args.guidance_source}), pyramidal {args.pyramid_guidance} "
          f"({args.pyramid_guidance_source})" + (f", floor {FLOOR_PLAN} {args.floor_guidance}"
                                                 if "floor-2-2-1" in args.rows else "")
          + (", students: their recipes" if args.students else ""))
    if args.seed_offset or args.prompt_style != "table":
        print(f"held out: seeds i + {args.seed_offset}, prompts in the {args.prompt_style} form "
              f"({styled_prompt(STRIP_PROMPTS[0], args.prompt_style)!r})")
    if decoder is not None:
        print(f"decoder: tiny ({args.tiny_decoder}), every row")
    print(f"{'row':<40} {'colour':>6} {'shape':>6} {'dir':>6} {'all 3':>6} {'FD real':>8} {'FD orig':>8} "
          f"{'GFLOPs':>8} {'denoise s':>9} {'s/video':>7}")
    result = table(args, decoder)
    strips = result.pop("_strips")
    if decoder is not None:
        result.update(decoder="tiny", tiny_decoder=args.tiny_decoder,
                      tiny_decoder_sha256=tiny.weights_sha256())  # ties the scores to these weights
    if args.partial:
        result["rows_run"] = args.rows
    if args.students:
        result["students"] = {name: str(folder) for name, folder, _ in args.students}
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=1))
        if decoder is not None or args.partial:
            print(f"wrote {args.json}")
    if args.strip:
        save_strip(strips, Path(args.strip))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
