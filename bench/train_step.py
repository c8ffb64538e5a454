"""Seconds and peak memory of one pyramidal training step, per stage, with each stage's share.

    python bench/train_step.py                 # tiny preset and a mid-size random Wan, 17x128x128
    python bench/train_step.py --reps 5 --frames 33 --size 256 --device cuda
    python bench/train_step.py --threads 1      # a shared CPU: one thread avoids OpenMP contention

One step = for every stage: build the section-7 target, forward, backward; then clip and AdamW.
Latents and text embeddings are random at the plan's stage shapes (the VAE and the text encoder
are not part of a training step: the cache holds their outputs). Memory is CUDA max-allocated on
a GPU, the process's peak RSS (sampled) on CPU.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

# Run as a script, bench/ is sys.path[0]; a bench/queue.py would shadow the standard library's.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))

import torch  # noqa: E402

from core import StagePlan  # noqa: E402
from core.pipeline import PeakMemory  # noqa: E402
from finetune.targets import pyramidal_target  # noqa: E402

MID_CONFIG = dict(patch_size=(1, 2, 2), num_attention_heads=4, attention_head_dim=32, in_channels=16,
                  out_channels=16, text_dim=256, freq_dim=64, ffn_dim=512, num_layers=4, cross_attn_norm=True,
                  qk_norm="rms_norm_across_heads", rope_max_seq_len=256)


def bench(name: str, transformer, text_dim: int, text_len: int, plan, shape, device, reps: int, bf16: bool):
    base = PeakMemory.rss() if device.type != "cuda" else 0.0
    transformer.to(device).train().requires_grad_(True)
    params = [p for p in transformer.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)
    g = torch.Generator("cpu").manual_seed(0)
    shapes = plan.latent_shapes(*shape)
    x0s = [torch.randn(1, 16, *s, generator=g).to(device) for s in shapes]
    text = torch.randn(1, text_len, text_dim, generator=g).to(device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    times = [[] for _ in plan.stages]
    peaks = [0.0 for _ in plan.stages]
    opt_times, step_times = [], []
    for rep in range(reps + 1):  # the first repetition warms up and is not counted
        t_step = time.perf_counter()
        for k, stage in enumerate(plan.stages):
            with PeakMemory(device, interval=0.005) as mem:
                sync()
                t0 = time.perf_counter()
                eps = torch.randn(x0s[k].shape, generator=g).to(device)
                rho = torch.rand(1, generator=g).to(device)
                x, sigma, target = pyramidal_target(x0s[k], x0s[k - 1] if k else None, eps, rho, stage)
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                    pred = transformer(hidden_states=x, timestep=sigma * 1000, encoder_hidden_states=text,
                                       return_dict=False)[0]
                loss = torch.mean((pred.float() - target) ** 2) / plan.num_stages
                loss.backward()
                sync()
                dt = time.perf_counter() - t0
            if rep:
                times[k].append(dt)
                peaks[k] = max(peaks[k], mem.peak)
        t0 = time.perf_counter()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        sync()
        if rep:
            opt_times.append(time.perf_counter() - t0)
            step_times.append(time.perf_counter() - t_step)
    med = [statistics.median(t) for t in times]
    opt_med, wall_med = statistics.median(opt_times), statistics.median(step_times)
    step_med = sum(med) + opt_med  # shares are of this sum; the wall time also holds the probes' overhead
    n_params = sum(p.numel() for p in params)
    print(f"\n{name}: {n_params / 1e6:.2f} M trainable parameters, clip {shape[0]}x{shape[1]}x{shape[2]}, "
          f"plan {plan.schedule}, {device} ({torch.get_num_threads()} threads), median of {reps} steps")
    print(f"  {'stage':<10}{'latent T x H x W':<20}{'tokens':>8}{'seconds':>10}{'share':>8}{'peak MB':>10}")
    p_t, p_h, p_w = transformer.config.patch_size
    for k, s in enumerate(shapes):
        tokens = (s[0] // p_t) * (s[1] // p_h) * (s[2] // p_w)
        print(f"  {k:<10}{' x '.join(map(str, s)):<20}{tokens:>8}{med[k]:>10.4f}{med[k] / step_med:>8.1%}"
              f"{peaks[k]:>10.0f}")
    print(f"  {'optimizer':<38}{opt_med:>10.4f}{opt_med / step_med:>8.1%}")
    print(f"  {'step':<38}{step_med:>10.4f}{1:>8.0%}{max(peaks):>10.0f}")
    print(f"  (wall time per step with the memory probes: {wall_med:.4f} s; memory: "
          f"{'CUDA max allocated' if device.type == 'cuda' else f'process RSS, {base:.0f} MB before the model ran'})")
    return {"stages": med, "optimizer": opt_med, "step": step_med, "wall": wall_med, "peaks": peaks}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--schedule", default="20-20-10", help="stage count (steps do not matter here)")
    ap.add_argument("--frames", type=int, default=17)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--bf16", action="store_true")
    ap.add_argument("--only", choices=["tiny", "mid"], default=None)
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    plan = StagePlan.parse(args.schedule)
    shape = (args.frames, args.size, args.size)
    plan.validate_shape(*shape)
    from diffusers import WanTransformer3DModel

    from core.presets import build_components

    if args.only in (None, "tiny"):
        comps = build_components("tiny", device)
        cfg = comps.transformer.config
        bench("tiny preset", comps.transformer, cfg.text_dim, comps.max_sequence_length, plan, shape, device,
              args.reps, args.bf16)
    if args.only in (None, "mid"):
        torch.manual_seed(0)
        model = WanTransformer3DModel(**MID_CONFIG)
        bench("mid-size random Wan (4 layers, dim 128, ffn 512)", model, MID_CONFIG["text_dim"], 64, plan, shape,
              device, args.reps, args.bf16)
    return 0


if __name__ == "__main__":
    sys.exit(main())
