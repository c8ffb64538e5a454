"""Generate one video from the command line (no server needed).

    python -m core.generate --model tiny --schedule 2-2-1 --prompt "a red circle moves to the right" \\
        --seed 0 --frames 17 --height 128 --width 128 --out out.mp4 --json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from .errors import ModelLoadError, RequestError
from .pipeline import GenerationRequest, load_pipeline
from .presets import default_preset
from .video import write_mp4


def _guidance(text: str):
    values = [float(v) for v in text.split(",")]
    return values[0] if len(values) == 1 else values


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m core.generate", description="Generate a video with pyramidal Wan.")
    ap.add_argument("--prompt", required=True)
    ap.add_argument("--negative-prompt", default="")
    ap.add_argument("--model", default=None, help="preset (default: PWAN_MODEL, else by hardware)")
    ap.add_argument("--checkpoint", default=None, help="a checkpoint folder written by finetune/")
    ap.add_argument("--mode", choices=["pyramidal", "original"], default="pyramidal")
    ap.add_argument("--schedule", default="20-20-10", help="steps per stage, lowest resolution first")
    ap.add_argument("--guidance", type=_guidance, default=None,
                    help="one value, or one per stage: 7,5,3 (default: the checkpoint card's recommendation, "
                         "else the preset's, else 5)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--frames", type=int, default=17)
    ap.add_argument("--height", type=int, default=128)
    ap.add_argument("--width", type=int, default=128)
    ap.add_argument("--decoder", choices=["full", "tiny", "both"], default="full",
                    help="final decode: the VAE, the tiny decoder (~10x faster), or both (the tiny video "
                         "beside --out as NAME.tiny.mp4)")
    ap.add_argument("--out", default="out.mp4")
    ap.add_argument("--device", default=None)
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args(argv)
    model = args.model or default_preset()
    req = GenerationRequest(
        prompt=args.prompt, negative_prompt=args.negative_prompt, model=model, mode=args.mode,
        schedule=args.schedule, guidance=args.guidance, seed=args.seed, frames=args.frames, height=args.height,
        width=args.width, decoder=args.decoder,
    )
    try:
        req.validated(known_models=[model])  # fail before loading; the pipeline resolves the guidance
        t0 = time.perf_counter()
        pipe = load_pipeline(model, checkpoint_dir=args.checkpoint, device=args.device)
        load = time.perf_counter() - t0

        def progress(info):
            if not args.json and "step" in info and "preview" not in info:
                print(f"\rstage {info['stage'] + 1}/{info['stages']} step {info['step']}/{info['steps']} "
                      f"sigma {info['sigma']:.3f}", end="", file=sys.stderr, flush=True)

        result = pipe.generate(req, callback=progress)
    except (RequestError, ModelLoadError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    path = write_mp4(result.frames, args.out, fps=result.fps)
    report = dict(result.report, video=str(path), load_seconds=load, frames=int(result.frames.shape[0]))
    if result.frames_tiny is not None:
        report["tiny_video"] = str(write_mp4(result.frames_tiny, Path(path).with_suffix(".tiny.mp4"), fps=result.fps))
    if args.json:
        print(json.dumps(report))
    else:
        s = report["seconds"]
        print(f"\nwrote {path}: {report['frames']} frames, plan {report['plan']['schedule']}, "
              f"{report['tflops']:.4g} TFLOPs, denoise {s['denoise']:.2f}s "
              f"(stages {', '.join(f'{x:.2f}s' for x in s['stages'])}), total {s['total']:.2f}s; guidance "
              f"{', '.join(f'{g:g}' for g in report['guidance'])} ({report['guidance_source']})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
