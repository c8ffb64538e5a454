"""GPU check: the real Wan2.1-1.3B architecture (random bf16 weights) at 81x448x832.

Times a few transformer steps per stage after warm-up (classifier-free guidance batched: batch 2),
plus one jump between stages, and prints the per-step latency per stage and the projected 50-step
vs 20-20-10 ratio next to the FLOP ratio. Finishes in a few minutes on one H100/H200.

    python bench/gpu_check.py                       # on a CUDA machine
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
from core.flops import plan_flops  # noqa: E402
from core.presets import wan13b_transformer_config  # noqa: E402
from core.resample import jump  # noqa: E402


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--frames", type=int, default=81)
    ap.add_argument("--height", type=int, default=448)
    ap.add_argument("--width", type=int, default=832)
    ap.add_argument("--layers", type=int, default=30)
    ap.add_argument("--steps", type=int, default=3, help="timed steps per stage")
    ap.add_argument("--plan", default="20-20-10")
    ap.add_argument("--base", default="0-0-50")
    ap.add_argument("--json", default=None, help="also write the figures to this file")
    args = ap.parse_args(argv)

    from diffusers import WanTransformer3DModel

    device = torch.device(args.device)
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
    plan = StagePlan.parse(args.plan)
    shapes = plan.latent_shapes(args.frames, args.height, args.width)
    text = torch.randn(2, 512, cfg["text_dim"], device=device, dtype=dtype)
    per_step = []
    for k, shape in enumerate(shapes):
        x = torch.randn(2, 16, *shape, device=device, dtype=dtype)
        t = torch.full((2,), 500.0, device=device)
        with torch.no_grad():
            model(hidden_states=x, timestep=t, encoder_hidden_states=text, return_dict=False)  # warm-up
            _sync(device)
            start = time.perf_counter()
            for _ in range(args.steps):
                model(hidden_states=x, timestep=t, encoder_hidden_states=text, return_dict=False)
            _sync(device)
        per_step.append((time.perf_counter() - start) / args.steps)
        print(f"stage {k}: latent {shape}, {per_step[-1] * 1000:.1f} ms per step (CFG batch 2)", flush=True)
    # one jump at the largest resolution change
    low = torch.randn(1, 16, *shapes[-2], device=device)
    _sync(device)
    start = time.perf_counter()
    jump(low, 1 - plan.stages[-2].sigma_end, torch.Generator("cpu").manual_seed(0))
    _sync(device)
    jump_s = time.perf_counter() - start

    full = per_step[-1]
    base_steps = StagePlan.parse(args.base).total_steps
    t_base = base_steps * full
    t_plan = sum(st.steps * s for st, s in zip(plan.stages, per_step)) + (plan.num_stages - 1) * jump_s
    flops_cfg = dict(cfg)
    f_base = plan_flops(flops_cfg, StagePlan.parse(args.base), args.frames, args.height, args.width)["tflops"]
    f_plan = plan_flops(flops_cfg, plan, args.frames, args.height, args.width)["tflops"]
    out = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "shape": [args.frames, args.height, args.width], "layers": args.layers,
        "ms_per_step": [round(s * 1000, 2) for s in per_step], "jump_ms": round(jump_s * 1000, 2),
        "projected_seconds": {args.base: round(t_base, 2), args.plan: round(t_plan, 2)},
        "speedup": round(t_base / t_plan, 3), "flop_ratio": round(f_base / f_plan, 3),
    }
    if device.type == "cuda":
        out["achieved_tflops_per_s_full_stage"] = round(
            plan_flops(flops_cfg, StagePlan.parse("0-0-1"), args.frames, args.height, args.width)["tflops"] / full, 1)
        out["peak_memory_gb"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
    print(f"projected {args.base}: {t_base:.1f}s, {args.plan}: {t_plan:.1f}s -> speed-up {out['speedup']:.2f}x "
          f"(FLOP ratio {out['flop_ratio']:.2f}x, {out['speedup'] / out['flop_ratio']:.0%} of it)")
    print(json.dumps(out))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
