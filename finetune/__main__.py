"""Command line: ``python -m finetune pyramidal --base tiny --data DIR --steps N --out NAME ...``

``--out`` is a folder, or a bare name for ``$PWAN_DATA_DIR/checkpoints/NAME``. ``--data`` is a
folder of captioned videos, a prompts file (with ``--teacher PRESET``) or ``world:N`` (the mini
world, generated in code). Running the same command again resumes from the last checkpoint.
Under several GPUs: ``accelerate launch -m finetune pyramidal ...``.

``python -m finetune tiny-decoder --base mini --data world:N --steps S --out models/mini-tiny-decoder``
distils the base preset's VAE decoder into a tiny one (``finetune.tiny_decoder``; resumable too).

Register the result for the studio with ``workers.api.register_checkpoint(path, base, name)`` (or
queue the job through ``workers.api.submit_job``, which registers it when it ends).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from settings import get_settings


def out_folder(out: str) -> str:
    if os.sep in out or out.startswith("."):
        return str(Path(out).expanduser().resolve())
    data_dir = get_settings().data_dir
    return str(data_dir / "checkpoints" / out)


def _parser() -> argparse.ArgumentParser:
    from finetune.pyramidal import TrainConfig

    d = TrainConfig()
    p = argparse.ArgumentParser(prog="python -m finetune", description="Finetune a Wan into a pyramidal model.")
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("pyramidal", help="pyramidal flow-matching finetune (pyramid.md section 7)")
    t.add_argument("--base", default=d.base, help="base model preset (default %(default)s)")
    t.add_argument("--data", required=True, help="folder of .mp4 + .txt / captions.jsonl, a prompts file, or world:N")
    t.add_argument("--steps", type=int, default=d.steps)
    t.add_argument("--out", required=True, help="checkpoint folder, or a name under $PWAN_DATA_DIR/checkpoints")
    t.add_argument("--schedule", default=d.schedule, help="stage count and recommended schedule (%(default)s)")
    t.add_argument("--boundaries", default=None, help="inner stage boundaries, e.g. 0.667,0.333")
    t.add_argument("--frames", type=int, default=d.frames)
    t.add_argument("--height", type=int, default=d.height)
    t.add_argument("--width", type=int, default=d.width)
    t.add_argument("--per-stage", type=int, default=d.per_stage, help="clips per stage per step")
    t.add_argument("--stage-shares", default=None,
                   help="clips per step for each stage, lowest first (e.g. 15,15,5; overrides --per-stage)")
    t.add_argument("--lr", type=float, default=d.lr)
    t.add_argument("--lr-schedule", default=d.lr_schedule, choices=["constant", "cosine"])
    t.add_argument("--warmup-steps", type=int, default=d.warmup_steps)
    t.add_argument("--weight-decay", type=float, default=d.weight_decay)
    t.add_argument("--grad-clip", type=float, default=d.grad_clip)
    t.add_argument("--lora-rank", type=int, default=d.lora_rank, help="0: full finetune")
    t.add_argument("--lora-alpha", type=float, default=None)
    t.add_argument("--teacher-weight", type=float, default=d.teacher_weight)
    t.add_argument("--bf16", action="store_true")
    t.add_argument("--gradient-checkpointing", action="store_true")
    t.add_argument("--ema-decay", type=float, default=d.ema_decay)
    t.add_argument("--seed", type=int, default=d.seed)
    t.add_argument("--save-every", type=int, default=d.save_every)
    t.add_argument("--sample-every", type=int, default=d.sample_every)
    t.add_argument("--sample-prompt", default="")
    t.add_argument("--teacher", default=None, help="preset that generates clips from a prompts file")
    t.add_argument("--teacher-schedule", default=d.teacher_schedule)
    t.add_argument("--teacher-guidance", type=float, default=None, help="default: the teacher's recommended guidance")
    t.add_argument("--teacher-seed", type=int, default=d.teacher_seed, help="noise seed of the first teacher clip")
    t.add_argument("--low-res", default=d.low_res, choices=["pixels", "latents"],
                   help="lower stages' latents: encode the downsampled video, or block means of the full latent")
    t.add_argument("--cond-dropout", type=float, default=d.cond_dropout,
                   help="share of samples trained on the empty prompt (for classifier-free guidance)")
    t.add_argument("--cache-dir", default=None)
    t.add_argument("--device", default=None)
    t.add_argument("--name", default="")
    _add_tiny_decoder(sub)
    return p


def _add_tiny_decoder(sub) -> None:
    from finetune.tiny_decoder import TinyDecoderTrainConfig

    d = TinyDecoderTrainConfig()
    t = sub.add_parser("tiny-decoder", help="distil the base VAE decoder into a tiny convolutional one (issue 18)")
    t.add_argument("--base", default=d.base, help="preset whose VAE latents it decodes (default %(default)s)")
    t.add_argument("--data", default=d.data, help="world:N (mini-world clips) or a folder of videos")
    t.add_argument("--steps", type=int, default=d.steps)
    t.add_argument("--out", required=True, help="decoder folder, or a name under $PWAN_DATA_DIR/checkpoints")
    t.add_argument("--batch", type=int, default=d.batch, help="clips per step")
    t.add_argument("--crop", type=int, default=d.crop, help="latent crop size per clip (0: whole clips)")
    t.add_argument("--lr", type=float, default=d.lr)
    t.add_argument("--warmup-steps", type=int, default=d.warmup_steps)
    t.add_argument("--grad-weight", type=float, default=d.grad_weight, help="weight of the gradient-difference term")
    t.add_argument("--clip-weight", type=float, default=d.clip_weight, help="weight of the real clip as a 2nd target")
    t.add_argument("--widths", default=",".join(map(str, d.widths)), help="channels at latent, x2, x4 resolution")
    t.add_argument("--blocks", default=",".join(map(str, d.blocks)), help="residual blocks at each resolution")
    t.add_argument("--frames", type=int, default=d.frames)
    t.add_argument("--height", type=int, default=d.height)
    t.add_argument("--width", type=int, default=d.width)
    t.add_argument("--eval-clips", type=int, default=d.eval_clips)
    t.add_argument("--eval-every", type=int, default=d.eval_every)
    t.add_argument("--save-every", type=int, default=d.save_every)
    t.add_argument("--seed", type=int, default=d.seed)
    t.add_argument("--device", default=None)


def tiny_decoder_config_from_args(args):
    from finetune.tiny_decoder import TinyDecoderConfigError, TinyDecoderTrainConfig

    def ints(name: str) -> list[int]:
        try:
            return [int(x) for x in getattr(args, name).split(",")]
        except ValueError:
            raise TinyDecoderConfigError(f"--{name} {getattr(args, name)!r}: write three whole numbers like 64,32,16") from None

    return TinyDecoderTrainConfig(
        base=args.base, data=args.data, out=out_folder(args.out), steps=args.steps, batch=args.batch, crop=args.crop,
        lr=args.lr, warmup_steps=args.warmup_steps, grad_weight=args.grad_weight, clip_weight=args.clip_weight,
        widths=ints("widths"), blocks=ints("blocks"), frames=args.frames, height=args.height, width=args.width,
        eval_clips=args.eval_clips, eval_every=args.eval_every, save_every=args.save_every, seed=args.seed,
        device=args.device)


def tiny_decoder_main(args) -> int:
    from finetune.tiny_decoder import TinyDecoderConfigError, train

    try:
        card = train(tiny_decoder_config_from_args(args), log=lambda s: print(s, flush=True))
    except TinyDecoderConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if card is None:  # interrupted (a STOP file): the state is saved
        print(json.dumps({"out": args.out, "status": "stopped"}))
        return 0
    print(json.dumps({"out": args.out, "steps": card["steps"], "heldout": card["heldout"]}, indent=1))
    return 0


def config_from_args(args) -> "TrainConfig":  # noqa: F821
    from finetune.pyramidal import ConfigError, TrainConfig

    def listed(name: str, kind, example: str):  # "a,b,c" -> [kind(a), ...]; None when not given
        text = getattr(args, name)
        if not text:
            return None
        try:
            return [kind(x) for x in text.split(",")]
        except ValueError:
            raise ConfigError(f"{name} {text!r}: write {example}", name) from None

    boundaries = listed("boundaries", float, "noise levels like 0.667,0.333")
    shares = listed("stage_shares", int, "whole numbers like 15,15,5")
    out = out_folder(args.out)
    return TrainConfig(
        base=args.base, data=args.data, out=out, name=args.name or Path(out).name, steps=args.steps,
        schedule=args.schedule, boundaries=boundaries, frames=args.frames, height=args.height, width=args.width,
        per_stage=args.per_stage, stage_shares=shares, lr=args.lr, lr_schedule=args.lr_schedule,
        warmup_steps=args.warmup_steps,
        weight_decay=args.weight_decay, grad_clip=args.grad_clip,
        lora_rank=args.lora_rank, lora_alpha=args.lora_alpha, teacher_weight=args.teacher_weight, bf16=args.bf16,
        gradient_checkpointing=args.gradient_checkpointing, ema_decay=args.ema_decay, seed=args.seed,
        save_every=args.save_every, sample_every=args.sample_every, sample_prompt=args.sample_prompt,
        teacher=args.teacher, teacher_schedule=args.teacher_schedule, teacher_guidance=args.teacher_guidance,
        teacher_seed=args.teacher_seed, cond_dropout=args.cond_dropout, low_res=args.low_res, cache_dir=args.cache_dir, device=args.device,
    )


def main(argv: list[str] | None = None) -> int:
    from finetune.pyramidal import ConfigError, train, validate_config

    args = _parser().parse_args(argv)
    if args.command == "tiny-decoder":
        return tiny_decoder_main(args)
    try:
        cfg = validate_config(config_from_args(args))
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    def on_step(info: dict) -> None:
        if info.get("phase") == "train":
            stages = " ".join(f"{x:.4f}" for x in info["stages"])
            print(f"step {info['step']}/{info['steps']}  loss {info['loss']:.4f}  per stage [{stages}]  "
                  f"{info['seconds']:.2f} s", flush=True)

    try:
        result = train(cfg, on_step=on_step)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({"status": result.status, "step": result.step, "out": str(result.out),
                      "losses": result.card.get("losses")}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
