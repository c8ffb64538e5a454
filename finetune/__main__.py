"""Command line: ``python -m finetune pyramidal --base tiny --data DIR --steps N --out NAME ...``

``--out`` is a folder, or a bare name for ``$PWAN_DATA_DIR/checkpoints/NAME``. ``--data`` is a
folder of captioned videos, a prompts file (with ``--teacher PRESET``) or ``world:N`` (the mini
world, generated in code). Running the same command again resumes from the last checkpoint.
Under several GPUs: ``accelerate launch -m finetune pyramidal ...``.

``python -m finetune tiny-decoder --base mini --data world:N --steps S --out models/mini-tiny-decoder``
distils the base preset's VAE decoder into a tiny one (``finetune.tiny_decoder``; resumable too).

``python -m finetune distill --method dmd-pt-star --base mini --teacher models/mini-pyramidal
--student-plan 2-2-1 --data world:256 --steps 400 --out NAME`` distils a few-step student
(``finetune.distill``: dmd-ot, dmd-pt, dmd-pt-star or adversarial; resumable, a checkpoint kept
every ``--save-every`` generator steps).

Every flag is a field of the subcommand's config dataclass (``finetune.pyramidal.TrainConfig``,
``finetune.tiny_decoder.TinyDecoderTrainConfig``, ``finetune.distill.DistillConfig``): ``--help`` lists them with their defaults.

Register the result for the studio with ``service.register_checkpoint(path, base, name)`` (or
queue the job through ``service.submit_job``, which registers it when it ends).
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
    """Both subcommands' flags, derived from their config dataclasses (names, defaults, types,
    choices and help come from the fields)."""
    from finetune.distill import DistillConfig
    from finetune.pyramidal import TrainConfig
    from finetune.tiny_decoder import TinyDecoderTrainConfig
    from finetune.toolkit import add_flags

    p = argparse.ArgumentParser(prog="python -m finetune", description="Finetune a Wan into a pyramidal model.")
    sub = p.add_subparsers(dest="command", required=True)
    add_flags(sub.add_parser("pyramidal", help="pyramidal flow-matching finetune (pyramid.md section 7)"),
              TrainConfig, required=("data", "out"))
    add_flags(sub.add_parser("tiny-decoder", help="distil the base VAE decoder into a tiny convolutional one"),
              TinyDecoderTrainConfig, required=("out",))
    add_flags(sub.add_parser("distill", help="distil a few-step student (DMD with the original or the pyramidal "
                                             "teacher, or adversarial)"), DistillConfig, required=("data", "out"))
    return p


def tiny_decoder_config_from_args(args):
    from finetune.tiny_decoder import TinyDecoderConfigError, TinyDecoderTrainConfig
    from finetune.toolkit import config_from_flags

    return config_from_flags(TinyDecoderTrainConfig, args, TinyDecoderConfigError, out=out_folder(args.out))


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


def distill_config_from_args(args):
    from finetune.distill import DistillConfig
    from finetune.toolkit import config_from_flags

    out = out_folder(args.out)
    return config_from_flags(DistillConfig, args, out=out, name=args.name or Path(out).name)


def distill_main(args) -> int:
    from finetune.distill import train, validate_config
    from finetune.toolkit import ConfigError

    def on_step(info: dict) -> None:
        if info.get("phase") == "train":
            print(f"step {info['step']}/{info['steps']}  generator {info['generator_loss']:.4f}  critic "
                  f"{info['critic_loss']:.4f}  exit stage {info['exit_stage'] + 1}  {info['seconds']:.2f} s",
                  flush=True)

    try:
        result = train(validate_config(distill_config_from_args(args)), on_step=on_step,
                       log=lambda s: print(s, flush=True))
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({"status": result.status, "step": result.step, "out": str(result.out),
                      "label": result.card.get("label"), "snapshots": result.snapshots}, indent=1))
    return 0


def config_from_args(args) -> "TrainConfig":  # noqa: F821
    from finetune.pyramidal import TrainConfig
    from finetune.toolkit import config_from_flags

    out = out_folder(args.out)
    return config_from_flags(TrainConfig, args, out=out, name=args.name or Path(out).name)


def main(argv: list[str] | None = None) -> int:
    from finetune.pyramidal import ConfigError, train, validate_config

    args = _parser().parse_args(argv)
    if args.command == "tiny-decoder":
        return tiny_decoder_main(args)
    if args.command == "distill":
        return distill_main(args)
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
