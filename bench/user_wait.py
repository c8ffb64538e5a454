"""Seconds a user waits for one video, model load excluded: prompt encode + denoise + decode.

Rows: the original model at its full schedule, the pyramidal plan the studio runs by default
(``mini-pyramidal`` at ``10-10-5``, the checkpoint card's guidance) and a distilled few-step
student (``--student FOLDER``, default ``models/mini-distilled`` when it is there; its card's
recipe, guidance baked in), each decoded by the full VAE decoder and by the tiny decoder. Every
video is a request alone (batch 1), as a user gets it; the latents come from
``pipe.generate(..., decode=False, return_latents=True)`` and are decoded here, so the decode is
timed the same way for both decoders. After one warm-up run per row, the rows
take turns per video (round robin), so load drifts on a shared machine hit every row alike; every
row uses the same prompts and seeds. Printed: medians per row, the pyramidal plan's denoising
speed-up over the original, its end-to-end speed-up with each decoder (both sides with the same
decoder) and the ratio end-to-end (tiny) / denoising speed-up (target >= 0.8); with a student, the
same speed-ups of the student over the original and over the pyramidal plan.

    python bench/user_wait.py [--videos 4 --tiny-decoder models/mini-tiny-decoder --json out.json]
    python bench/user_wait.py --student models/mini-distilled     # --student none: no student rows
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[0] = str(ROOT)  # the repo, not bench/ (bench/queue.py would shadow queue)

import numpy as np  # noqa: E402

from bench.students import DEFAULT_STUDENT, resolve, row_name, student_card  # noqa: E402

TARGET = 0.8  # end-to-end (tiny decoder) / denoising speed-up the tiny decoder should keep


def _path(p: str) -> Path:
    return Path(p) if Path(p).is_absolute() else ROOT / p


def load_rows(args) -> list[dict]:
    """The rows (original / pyramidal / student, if any, x full / tiny decoder), their pipelines
    loaded once. The pyramidal rows run the checkpoint when there is one (``--checkpoint none``:
    the base); the student's rows leave schedule and guidance to its recipe."""
    from core import StagePlan, load_pipeline, resolve_guidance
    from core.tiny_decoder import load_tiny_decoder

    base = load_pipeline(args.model)
    tiny = load_tiny_decoder(_path(args.tiny_decoder))
    if not tiny.matches_vae(base.vae):
        print(f"warning: the tiny decoder was distilled from another latent space "
              f"({tiny.config.latent_space!r}, not {args.model!r}'s VAE)")
    card, pyr = None, base
    if args.checkpoint:
        pyr = load_pipeline(args.model, checkpoint_dir=_path(args.checkpoint), name=args.model)
        card = pyr.info["checkpoint"]
    g, g_src = resolve_guidance(None, args.model, None, stages=1)
    pg, pg_src = resolve_guidance(None, args.model, card, stages=StagePlan.parse(args.schedule).num_stages)
    pyr_name = f"pyramidal {args.schedule}" + ("" if card else " (training-free)")
    kinds = [dict(kind="original", name=f"original {args.full}", pipe=base, mode="original", schedule=args.full,
                  guidance=g, guidance_source=g_src),
             dict(kind="pyramidal", name=pyr_name, pipe=pyr, mode="pyramidal", schedule=args.schedule, guidance=pg,
                  guidance_source=pg_src)]
    if args.student:
        student = load_pipeline(args.model, checkpoint_dir=resolve(args.student), name=args.model)
        kinds.append(dict(kind="student", name=row_name("student", student.info["checkpoint"]), pipe=student,
                          mode="pyramidal", schedule=None, guidance=None, guidance_source="recipe"))
    rows = []
    for decoder in ("full", "tiny"):
        for k in kinds:
            rows.append(dict(k, row=f"{k['name']}, {decoder} decoder", decoder=decoder,
                             decode=k["pipe"].decode_batch if decoder == "full" else tiny.decode_frames))
    return rows


def wait_once(row: dict, args, prompt: str, seed: int) -> dict:
    """One user's request on ``row``: seconds of encode, denoise, decode and all together."""
    import torch

    from core import GenerationRequest

    pipe = row["pipe"]
    req = GenerationRequest(prompt, model=pipe.name, mode=row["mode"], schedule=row["schedule"],
                            guidance=row["guidance"], seed=seed, frames=args.frames, height=args.height,
                            width=args.width)
    res = pipe.generate(req, preview=False, return_latents=True, decode=False)
    t0 = time.perf_counter()
    with torch.no_grad():
        frames = row["decode"](res.latents)
    decode = time.perf_counter() - t0
    assert len(frames) == 1 and frames[0].shape == (args.frames, args.height, args.width, 3), frames[0].shape
    s = res.report["seconds"]
    return {"encode": s["encode"], "denoise": s["denoise"], "decode": decode, "total": s["total"] + decode,
            "schedule": res.report["plan"]["schedule"], "guidance": res.report["guidance"],
            "sampler": res.report["sampler"]}


def measure(rows: list[dict], args) -> None:
    """A warm-up run per row, then ``args.videos`` videos per row, the rows taking turns."""
    from finetune.world import all_captions

    captions = all_captions()
    for r in rows:
        wait_once(r, args, captions[0], 999_999)  # warm-up: caches, allocator, lazy pipelines
        r["runs"] = []
    for i in range(args.videos):
        for r in rows:
            r["runs"].append(wait_once(r, args, captions[i % len(captions)], i))
    for r in rows:
        r["median"] = {k: float(np.median([run[k] for run in r["runs"]])) for k in ("encode", "denoise", "decode",
                                                                                    "total")}


def _pooled(rows: list[dict], kind: str, key: str, decoder: str | None = None) -> float:
    """Median of ``key`` over every run of the ``kind`` rows (with ``decoder``, or both)."""
    return float(np.median([run[key] for r in rows if r["kind"] == kind and decoder in (None, r["decoder"])
                            for run in r["runs"]]))


def speedups(rows: list[dict]) -> dict:
    """Pyramidal over original: denoising (both decoders' runs), end to end per decoder, and the
    share of the denoising speed-up the tiny decoder keeps end to end; with a student, the same
    for the student over the original (``student``) and over the pyramidal plan (``student_over_pyramidal``)."""
    def versus(slow: str, fast: str) -> dict:
        denoise = _pooled(rows, slow, "denoise") / _pooled(rows, fast, "denoise")
        e2e = {d: _pooled(rows, slow, "total", d) / _pooled(rows, fast, "total", d) for d in ("full", "tiny")}
        return {"denoise": denoise, "end_to_end_full": e2e["full"], "end_to_end_tiny": e2e["tiny"],
                f"{slow}_full_to_{fast}_tiny": _pooled(rows, slow, "total", "full") / _pooled(rows, fast, "total",
                                                                                           "tiny"),
                "tiny_kept": e2e["tiny"] / denoise}

    out = dict(versus("original", "pyramidal"), target=TARGET)
    if any(r["kind"] == "student" for r in rows):
        out["student"] = versus("original", "student")
        out["student_over_pyramidal"] = versus("pyramidal", "student")
    return out


def print_speedups(sp: dict, fast: str, slow: str) -> None:
    """The speed-ups of ``fast`` over ``slow`` (one of :func:`speedups`' dicts)."""
    print(f"denoising speed-up ({fast} over {slow}): {sp['denoise']:.2f}x")
    if (fast, slow) == ("pyramidal", "original"):  # the lines as before the student rows
        prefix = "end-to-end"
    else:
        prefix = f"{fast} over {slow}, end-to-end"
    print(f"{prefix} speed-up, full decoder: {sp['end_to_end_full']:.2f}x")
    print(f"{prefix} speed-up, tiny decoder: {sp['end_to_end_tiny']:.2f}x")
    print(f"{prefix} (tiny) / denoising speed-up: {sp['tiny_kept']:.2f}" + (f" (target >= {TARGET})"
                                                                          if prefix == "end-to-end" else ""))
    print(f"{slow} with the full decoder -> {fast} with the tiny decoder: {sp[f'{slow}_full_to_{fast}_tiny']:.2f}x")


def report(rows: list[dict], sp: dict, args) -> dict:
    """Print the table and the ratios; the JSON-ready numbers."""
    import torch

    print(f"{args.model} preset, {args.frames}x{args.height}x{args.width}, {args.videos} video(s) per row, batch 1, "
          f"after a warm-up each; rows interleaved; {torch.get_num_threads()} torch thread(s); medians")
    print(f"{'row':<60} {'encode s':>9} {'denoise s':>9} {'decode s':>9} {'total s':>9}")
    for r in rows:
        m = r["median"]
        print(f"{r['row']:<60} {m['encode']:>9.3f} {m['denoise']:>9.3f} {m['decode']:>9.3f} {m['total']:>9.3f}")
    print_speedups(sp, "pyramidal", "original")
    if "student" in sp:
        print_speedups(sp["student"], "student", "original")
        print_speedups(sp["student_over_pyramidal"], "student", "pyramidal")
    keep = ("row", "kind", "mode", "schedule", "guidance", "guidance_source", "decoder", "median", "runs")
    return {"model": args.model, "checkpoint": args.checkpoint or None, "student": args.student or None,
            "tiny_decoder": args.tiny_decoder,
            "shape": [args.frames, args.height, args.width], "videos": args.videos, "batch": 1,
            "threads": torch.get_num_threads(), "seeds": f"0..{args.videos - 1}",
            "prompts": "all_captions()[i % 24] for video i, every row", "speedup": sp,
            "rows": [{k: r[k] for k in keep} for r in rows]}


def parse(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="mini", help="preset (tiny: random weights, for smoke tests)")
    ap.add_argument("--checkpoint", default=None,
                    help="pyramidal checkpoint (default: models/mini-pyramidal for mini, none otherwise)")
    ap.add_argument("--tiny-decoder", default="models/mini-tiny-decoder")
    ap.add_argument("--full", default="0-0-30", help="the original's schedule")
    ap.add_argument("--schedule", default="10-10-5", help="the pyramidal plan (the studio's default)")
    ap.add_argument("--videos", type=int, default=4)
    ap.add_argument("--frames", type=int, default=17)
    ap.add_argument("--height", type=int, default=128)
    ap.add_argument("--width", type=int, default=128)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--student", default=None,
                    help=f"a distilled few-step student (default: {DEFAULT_STUDENT} for mini when it is there; "
                         "none: no student rows)")
    ap.add_argument("--json", default=None, help="write the numbers here")
    args = ap.parse_args(argv)
    if args.checkpoint is None:
        args.checkpoint = "models/mini-pyramidal" if args.model == "mini" else ""
    if args.checkpoint.lower() == "none":
        args.checkpoint = ""
    if args.student is None:
        there = args.model == "mini" and (resolve(DEFAULT_STUDENT) / "card.json").is_file()
        args.student = DEFAULT_STUDENT if there else ""
    if args.student.lower() == "none":
        args.student = ""
    return args


def main(argv=None) -> int:
    args = parse(argv)
    if args.model == "mini":
        os.environ.setdefault("PWAN_MINI_PATH", str(ROOT / "models" / "mini"))
    for label, folder, need in (("tiny decoder", args.tiny_decoder, "config.json"),
                                ("checkpoint", args.checkpoint, "card.json")):
        if folder and not (_path(folder) / need).is_file():
            print(f"error: no {label} at {folder} (no {need}); pass --{label.replace(' ', '-')} FOLDER"
                  + (" (a trained one ships at models/mini-tiny-decoder)" if label == "tiny decoder" else ""),
                  file=sys.stderr)
            return 2
    card = student_card(args.student) if args.student else None
    if isinstance(card, str):
        print(f"error: {card}; pass --student FOLDER (or --student none)", file=sys.stderr)
        return 2
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    rows = load_rows(args)
    measure(rows, args)
    res = report(rows, speedups(rows), args)
    if args.json:
        out = _path(args.json)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(res, indent=1) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
