"""Wall-clock speed-up of a pyramidal plan against the original, next to its FLOP ratio.

Both run in this one process on the same random Wan-architecture transformer (4 layers, width 512),
the original through diffusers' own WanPipeline loop, the plan through our sampler. Runs alternate
and the fastest of each is kept, so a busy neighbour on the machine hurts both alike.

    python bench/speed.py [--frames 17 --height 256 --width 448 --plan 20-20-10 --base 0-0-50]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parents[1])  # the repo, not bench/ (bench/queue.py would shadow queue)

import torch  # noqa: E402

from core import GenerationRequest, PyramidalWanPipeline  # noqa: E402
from core.presets import build_components  # noqa: E402

MID = dict(patch_size=(1, 2, 2), num_attention_heads=4, attention_head_dim=128, in_channels=16, out_channels=16,
           text_dim=32, freq_dim=256, ffn_dim=2048, num_layers=4, cross_attn_norm=True,
           qk_norm="rms_norm_across_heads")


def build(layers: int) -> PyramidalWanPipeline:
    from diffusers import WanTransformer3DModel

    comps = build_components("tiny", "cpu")  # tiny VAE, text encoder and tokenizer: only the transformer is timed
    torch.manual_seed(0)
    comps.transformer = WanTransformer3DModel(**dict(MID, num_layers=layers)).eval().requires_grad_(False)
    return PyramidalWanPipeline.from_components(comps, name="mid-random")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=17)
    ap.add_argument("--height", type=int, default=256)
    ap.add_argument("--width", type=int, default=448)
    ap.add_argument("--plan", default="20-20-10")
    ap.add_argument("--base", default="0-0-50")
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args(argv)

    pipe = build(args.layers)
    common = dict(prompt="a red circle moves to the right", guidance=1.0, seed=0, frames=args.frames,
                  height=args.height, width=args.width, model=pipe.name)
    orig = GenerationRequest(mode="original", schedule=args.base, **common)
    pyr = GenerationRequest(mode="pyramidal", schedule=args.plan, **common)
    pipe.generate(GenerationRequest(mode="pyramidal", schedule="1-1-1", **common), preview=False)  # warm-up
    best = {"original": None, "pyramidal": None}
    t_all = time.perf_counter()
    for _ in range(args.repeats):
        for key, req in (("original", orig), ("pyramidal", pyr)):
            rep = pipe.generate(req, preview=False).report
            if best[key] is None or rep["seconds"]["denoise"] < best[key]["seconds"]["denoise"]:
                best[key] = rep
    o, p = best["original"], best["pyramidal"]
    flop_ratio = o["tflops"] / p["tflops"]
    wall_ratio = o["seconds"]["denoise"] / p["seconds"]["denoise"]
    print(f"random Wan transformer: {args.layers} layers, width 512, ffn 2048; shape {args.frames}x{args.height}x"
          f"{args.width}; guidance 1 (one branch); threads {torch.get_num_threads()}")
    print(f"{'':>22} {'TFLOPs':>9} {'denoise s':>10}   per stage (s)")
    for name, rep in (("original " + args.base, o), ("pyramidal " + args.plan, p)):
        stages = ", ".join(f"{s:.2f}" for s in rep["seconds"]["stages"])
        print(f"{name:>22} {rep['tflops']:>9.3f} {rep['seconds']['denoise']:>10.2f}   [{stages}]")
    print(f"FLOP ratio {flop_ratio:.2f}x, wall-clock ratio {wall_ratio:.2f}x: "
          f"{wall_ratio / flop_ratio:.0%} of the FLOP ratio (target at least 85%)")
    print(f"bench wall time {time.perf_counter() - t_all:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
