"""GPU check: the real Wan2.1-1.3B architecture (random bf16 weights) at 81x448x832.

Two parts, one run:

* **FLOPs** (analytic, always; no model needed): TFLOPs per video at 81x448x832 with 512 text
  tokens and the full 30 layers, for the original ``0-0-50`` and the pyramidal ``20-20-10`` with
  guidance 5, the few-step pyramidal students ``2-2-1``, ``1-1-1``, ``2-2-2`` (guidance 1, levels
  from ``core.fewstep.default_levels``) and the conventional few-step ``0-0-4``, ``0-0-2``,
  ``0-0-1`` (guidance 1); each per guidance branch next to PyramidalWan's figure (pyramid.md §2,
  §8), and each video's cost as a ratio to ``0-0-50`` with guidance.
* **Timing** (on the device): transformer steps at every stage shape the plans use, at batch 2
  (classifier-free guidance batched) and batch 1 (guidance 1), after a warm-up; the jump between
  stages (Euler plans) and the few-step sampler's move after each level (re-noise on the stage's
  path, or the fresh jump at a stage end). From these, each plan's projected denoising seconds and
  speed-up over ``0-0-50`` with guidance, next to its FLOP ratio. Timing runs at ``--frames/
  --height/--width/--layers`` (default: the real size; a few minutes on one H100/H200). On a CPU at
  the real size it is skipped with a message (the 30-layer model at 30,576 tokens needs a GPU);
  ``--no-timing`` (``--dry-run``) skips it anywhere.

    python bench/gpu_check.py                       # on a CUDA machine
    python bench/gpu_check.py --no-timing           # the FLOP table alone (any machine)
    python bench/gpu_check.py --device cpu --layers 1 --frames 17 --height 64 --width 64   # smoke test
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parents[1])  # the repo, not bench/ (bench/queue.py would shadow queue)

import torch  # noqa: E402

from core import StagePlan  # noqa: E402
from core.fewstep import advance, default_levels, level_list  # noqa: E402
from core.flops import plan_flops  # noqa: E402
from core.presets import wan13b_transformer_config  # noqa: E402
from core.resample import jump  # noqa: E402

FULL = (81, 448, 832)  # the paper's video; the FLOP table is always at this size, 30 layers, 512 text tokens
TEXT_TOKENS = 512
BASE = ("0-0-50", 5.0)
#: (plan, guidance, sampler): the table's rows
PLANS = (("0-0-50", 5.0, "euler"), ("20-20-10", 5.0, "euler"),
         ("2-2-1", 1.0, "few-step"), ("1-1-1", 1.0, "few-step"), ("2-2-2", 1.0, "few-step"),
         ("0-0-4", 1.0, "few-step"), ("0-0-2", 1.0, "few-step"), ("0-0-1", 1.0, "few-step"))
#: PyramidalWan's TFLOPs per guidance branch (pyramid.md §2 Table 1, §8; distill.md for 0-0-2)
PAPER = {"0-0-50": 12592, "20-20-10": 2821, "2-2-1": 282, "1-1-1": 267, "2-2-2": 534, "0-0-4": 1007, "0-0-2": 504}


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _plan(schedule: str, guidance: float) -> StagePlan:
    return StagePlan.parse(schedule, guidance=guidance)


def flop_table(plans=PLANS) -> list[dict]:
    """Every plan's analytic TFLOPs at 81x448x832 (30 layers, 512 text tokens): per guidance
    branch with the paper's figure, per video with its guidance, and ``0-0-50``'s (guidance 5) over it."""
    cfg = wan13b_transformer_config()
    base = plan_flops(cfg, _plan(*BASE), *FULL, TEXT_TOKENS)["tflops"]
    rows = []
    for schedule, guidance, sampler in plans:
        plan = _plan(schedule, guidance)
        f = plan_flops(cfg, plan, *FULL, TEXT_TOKENS)
        paper = PAPER.get(plan.schedule)
        rows.append({
            "plan": plan.schedule, "guidance": guidance, "sampler": sampler, "steps": plan.total_steps,
            "levels": [list(v) for v in default_levels(plan)] if sampler == "few-step" else None,
            "tflops_per_branch": round(f["tflops_per_branch"], 2), "paper_tflops_per_branch": paper,
            "diff_from_paper": None if paper is None else round(f["tflops_per_branch"] / paper - 1, 5),
            "tflops": round(f["tflops"], 2), "base_over_plan_flops": round(base / f["tflops"], 3),
        })
    return rows


def print_flop_table(rows: list[dict]) -> None:
    print(f"Wan2.1-T2V-1.3B FLOPs at {FULL[0]}x{FULL[1]}x{FULL[2]}, {TEXT_TOKENS} text tokens (analytic, 30 layers)")
    print(f"{'plan':>9} {'guid.':>5} {'sampler':>8} {'TFLOPs/branch':>13} {'paper':>7} {'diff':>7} "
          f"{'TFLOPs/video':>12} {BASE[0] + ' g' + format(BASE[1], 'g') + ' / plan':>17}")
    for r in rows:
        paper = f"{r['paper_tflops_per_branch']:>7,}" if r["paper_tflops_per_branch"] else f"{'-':>7}"
        diff = f"{r['diff_from_paper']:>+7.2%}" if r["diff_from_paper"] is not None else f"{'-':>7}"
        print(f"{r['plan']:>9} {r['guidance']:>5g} {r['sampler']:>8} {r['tflops_per_branch']:>13,.0f} {paper} {diff} "
              f"{r['tflops']:>12,.0f} {r['base_over_plan_flops']:>16.1f}x")
    worst = max(abs(r["diff_from_paper"]) for r in rows if r["diff_from_paper"] is not None)
    print(f"largest difference from the paper: {worst:.2%} (target: within 1%)")


def build_model(args, device):
    from diffusers import WanTransformer3DModel

    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    cfg = dict(wan13b_transformer_config(), num_layers=args.layers)
    t0 = time.perf_counter()
    with torch.device(device):
        model = WanTransformer3DModel(**cfg).to(dtype).eval().requires_grad_(False)
    for name, module in model.named_modules():  # as from_pretrained(torch_dtype=bf16) leaves them
        if any(part in name.split(".") for part in model._keep_in_fp32_modules):
            module.float()
    print(f"built {args.layers}-layer Wan2.1-1.3B architecture on {device} ({dtype}) in {time.perf_counter() - t0:.1f}s",
          flush=True)
    return model, cfg, dtype


def time_forwards(model, cfg, dtype, device, keys, steps: int) -> dict:
    """Seconds per transformer step for every ``(latent shape, batch)`` in ``keys``, after a warm-up."""
    text = torch.randn(2, TEXT_TOKENS, cfg["text_dim"], device=device, dtype=dtype)
    out = {}
    for shape, batch in keys:
        x = torch.randn(batch, 16, *shape, device=device, dtype=dtype)
        t = torch.full((batch,), 500.0, device=device)
        kw = dict(hidden_states=x, timestep=t, encoder_hidden_states=text[:batch], return_dict=False)
        with torch.no_grad():
            model(**kw)  # warm-up
            _sync(device)
            start = time.perf_counter()
            for _ in range(steps):
                model(**kw)
            _sync(device)
        out[(shape, batch)] = (time.perf_counter() - start) / steps
        print(f"latent {shape}, batch {batch}: {out[(shape, batch)] * 1000:.1f} ms per step", flush=True)
    return out


def _timed(fn, device, repeats: int = 3) -> float:
    fn()  # warm-up
    _sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    _sync(device)
    return (time.perf_counter() - start) / repeats


def time_moves(plan: StagePlan, sampler: str, shape, device) -> list[float]:
    """Seconds of what follows each forward but the last: the Euler plan's jumps (one per stage
    end; the Euler update itself is counted as nothing), or the few-step sampler's
    :func:`~core.fewstep.advance` after every level (re-noise or fresh jump)."""
    shapes = plan.latent_shapes(*shape)
    if sampler == "euler":
        moves = []
        for k in range(plan.num_stages - 1):
            low = torch.randn(1, 16, *shapes[k], device=device)
            e = 1 - plan.stages[k].sigma_end
            moves.append(_timed(lambda: jump(low, e, torch.Generator("cpu").manual_seed(0)), device))
        return moves
    levels = default_levels(plan)
    moves = []
    for stage, i, _ in level_list(plan, levels)[:-1]:
        x0 = torch.randn(1, 16, *shapes[stage.index], device=device)
        moves.append(_timed(lambda: advance(x0, plan, levels, stage, i), device))
    return moves


def timing(args, table: list[dict]) -> dict:
    """Per-step latency per stage shape and batch, per-plan projected seconds and speed-ups."""
    device = torch.device(args.device)
    model, cfg, dtype = build_model(args, device)
    shape = (args.frames, args.height, args.width)
    plans = {(r["plan"], r["guidance"]): (_plan(r["plan"], r["guidance"]), r["sampler"]) for r in table}
    keys = sorted({(s, 1 if g == 1.0 else 2) for (_, g), (p, _) in plans.items() for s in p.latent_shapes(*shape)},
                  key=lambda k: (-k[1], k[0][0] * k[0][1] * k[0][2]))
    per_step = time_forwards(model, cfg, dtype, device, keys, args.steps)
    seconds = {}
    for (schedule, g), (plan, sampler) in plans.items():
        batch = 1 if g == 1.0 else 2
        shapes = plan.latent_shapes(*shape)
        forwards = sum(st.steps * per_step[(shapes[st.index], batch)] for st in plan.stages)
        seconds[(schedule, g)] = forwards + sum(time_moves(plan, sampler, shape, device))
    base = seconds[(_plan(*BASE).schedule, BASE[1])]
    base_flops = plan_flops(cfg, _plan(*BASE), *shape, TEXT_TOKENS)["tflops"]
    for r in table:
        s = seconds[(r["plan"], r["guidance"])]
        r["projected_seconds"], r["speedup"] = round(s, 3), round(base / s, 3)
        # the FLOP ratio at the timed shape and layers (the table's own at the real size)
        flops = plan_flops(cfg, plans[(r["plan"], r["guidance"])][0], *shape, TEXT_TOKENS)["tflops"]
        r["timed_flop_ratio"] = round(base_flops / flops, 3)
        r["share_of_flop_ratio"] = round(r["speedup"] / r["timed_flop_ratio"], 3)
    out = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
           "shape": list(shape), "layers": args.layers, "steps_timed": args.steps,
           "ms_per_step": [{"latent": list(s), "batch": b, "ms": round(v * 1000, 2)} for (s, b), v in per_step.items()]}
    if device.type == "cuda":
        full = per_step[(_plan("0-0-1", 1.0).latent_shapes(*shape)[-1], 1)]
        one = plan_flops(cfg, _plan("0-0-1", 1.0), *shape, TEXT_TOKENS)["tflops"]
        out["achieved_tflops_per_s_full_stage"] = round(one / full, 1)
        out["peak_memory_gb"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
    return out


def print_timing(t: dict, table: list[dict]) -> None:
    print(f"timing on {t['device']}: {t['layers']} layer(s) at {'x'.join(map(str, t['shape']))}, "
          f"{t['steps_timed']} timed step(s) per shape after a warm-up")
    print(f"{'plan':>9} {'guid.':>5} {'projected s':>11} {'speed-up':>9} {'FLOP ratio':>10} {'share':>6}")
    for r in table:
        print(f"{r['plan']:>9} {r['guidance']:>5g} {r['projected_seconds']:>11.3f} {r['speedup']:>8.2f}x "
              f"{r['timed_flop_ratio']:>9.2f}x {r['share_of_flop_ratio']:>6.0%}")
    if "achieved_tflops_per_s_full_stage" in t:
        print(f"full stage: {t['achieved_tflops_per_s_full_stage']} TFLOP/s achieved, "
              f"peak memory {t['peak_memory_gb']} GB")


def parse(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--frames", type=int, default=FULL[0])
    ap.add_argument("--height", type=int, default=FULL[1])
    ap.add_argument("--width", type=int, default=FULL[2])
    ap.add_argument("--layers", type=int, default=30)
    ap.add_argument("--steps", type=int, default=3, help="timed steps per stage shape and batch")
    ap.add_argument("--no-timing", "--dry-run", dest="no_timing", action="store_true",
                    help="print the FLOP table only (no model is built)")
    ap.add_argument("--json", default=None, help="also write the figures to this file")
    return ap.parse_args(argv)


def main(argv=None) -> int:
    args = parse(argv)
    table = flop_table()
    print_flop_table(table)
    out = {"flops_shape": list(FULL), "text_tokens": TEXT_TOKENS, "base": {"plan": BASE[0], "guidance": BASE[1]},
           "plans": table, "timing": None}
    real_size = (args.frames, args.height, args.width, args.layers) == (*FULL, 30)
    if args.no_timing:
        print("timing skipped (--no-timing)")
    elif torch.device(args.device).type == "cpu" and real_size:
        print("timing skipped: no GPU here, and the 30-layer model at 81x448x832 (30,576 tokens) needs one; "
              "for a CPU smoke test pass --device cpu --layers 1 --frames 17 --height 64 --width 64")
    else:
        out["timing"] = timing(args, table)
        print_timing(out["timing"], table)
    print(json.dumps(out))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
