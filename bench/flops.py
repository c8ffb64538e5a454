"""FLOPs of Wan2.1-1.3B plans at 81x448x832 next to PyramidalWan's Table 1 (per guidance branch).

Also measures one forward with FlopCounterMode (attention registered through custom_mapping) on a
1-layer model of the 1.3B widths at the lowest stage and compares it with the analytic count.

    python bench/flops.py
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parents[1])  # the repo, not bench/ (bench/queue.py would shadow queue)

from core import StagePlan  # noqa: E402
from core.flops import measure_forward_flops, plan_flops, wan_forward_flops  # noqa: E402
from core.presets import wan13b_transformer_config  # noqa: E402

PAPER = {"0-0-50": 12592, "20-20-10": 2821, "0-0-4": 1007, "2-2-2": 534, "2-2-1": 282, "1-1-1": 267, "0-0-2": 504}


def main() -> int:
    cfg = wan13b_transformer_config()
    print("Wan2.1-T2V-1.3B, 81 x 448 x 832, 512 text tokens; TFLOPs per guidance branch")
    print(f"{'plan':>10} {'paper':>9} {'ours':>9} {'diff':>7} {'vs 0-0-50':>10}")
    base = plan_flops(cfg, StagePlan.parse("0-0-50"), 81, 448, 832)["tflops_per_branch"]
    worst = 0.0
    for sched, paper in PAPER.items():
        ours = plan_flops(cfg, StagePlan.parse(sched), 81, 448, 832)["tflops_per_branch"]
        diff = ours / paper - 1
        worst = max(worst, abs(diff))
        print(f"{sched:>10} {paper:>9,} {ours:>9,.0f} {diff:>+7.2%} {base / ours:>9.1f}x")
    print(f"largest difference from the paper: {worst:.2%} (target: within 1%)")

    import torch
    from diffusers import WanTransformer3DModel

    one = dict(cfg, num_layers=1)
    torch.manual_seed(0)
    model = WanTransformer3DModel(**one).eval()
    shape = (6, 14, 26)
    measured = measure_forward_flops(model, shape, 512)
    analytic = wan_forward_flops(one, shape, 512)
    print(f"1-layer 1.3B-width forward at stage 0 {shape}: measured {measured / 1e9:.2f} GFLOPs, "
          f"analytic {analytic / 1e9:.2f} GFLOPs ({measured / analytic - 1:+.2%})")
    return 0 if worst <= 0.01 else 1


if __name__ == "__main__":
    raise SystemExit(main())
