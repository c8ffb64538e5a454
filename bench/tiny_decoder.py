"""The tiny video decoder against the full VAE decoder, in one run (issue 18).

Held-out mini-world clips (seeds 20,000,000+, which the tiny decoder never trained on) are encoded
by the preset's VAE; both decoders then decode the same normalised latents. Printed: PSNR
tiny-vs-full, tiny-vs-real and full-vs-real (mean per clip, videos in [-1, 1]); seconds per video
batched (one call on ``--batch`` videos) and alone (one call per video), for both decoders, with
the speed-up; FLOPs per video (``FlopCounterMode``) and their ratio. The two decoders' timed runs
alternate, so a busy neighbour on the machine slows both alike.

    python bench/tiny_decoder.py [--decoder models/mini-tiny-decoder --clips 8 --batch 8 --alone 8 --threads 1 --json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[0] = str(ROOT)  # the repo, not bench/

import numpy as np  # noqa: E402
import torch  # noqa: E402


def _args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--base", default="mini")
    p.add_argument("--decoder", default="models/mini-tiny-decoder")
    p.add_argument("--clips", type=int, default=8)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--alone", type=int, default=None, help="clips also timed alone (default: all)")
    p.add_argument("--seed", type=int, default=20_000_000)
    p.add_argument("--threads", type=int, default=1, help="torch threads for both decoders")
    p.add_argument("--json", nargs="?", const="bench/results/tiny_decoder.json", default=None)
    return p.parse_args(argv)


def timed(fn):
    """``fn()`` and the seconds it took."""
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def main(argv=None) -> int:
    args = _args(argv)
    torch.set_num_threads(args.threads)

    from torch.utils.flop_counter import FlopCounterMode

    from core.presets import build_components
    from core.tiny_decoder import load_tiny_decoder
    from finetune.data import encode_video, to_video_tensor, world_clips
    from finetune.tiny_decoder import full_decode, psnr

    vae = build_components(args.base, "cpu").vae
    tiny = load_tiny_decoder(ROOT / args.decoder if not Path(args.decoder).is_absolute() else args.decoder)
    if not tiny.matches_vae(vae):
        print(f"warning: {args.decoder} was trained on another latent space ({tiny.config.latent_space!r})")
    clips = world_clips(args.clips, seed=args.seed)
    video = torch.stack([to_video_tensor(c.load()) for c in clips])
    latents = torch.cat([encode_video(vae, video[i:i + 8]) for i in range(0, len(clips), 8)])

    with torch.no_grad():
        tiny.decode(latents[:1]), full_decode(vae, latents[:1, :, :2])  # warm-up
        full_b, tiny_b, fulls, tinys = [], [], [], []
        for i in range(0, len(clips), args.batch):
            f, s_full = timed(lambda: full_decode(vae, latents[i:i + args.batch]))
            t, s_tiny = timed(lambda: tiny.decode(latents[i:i + args.batch]))
            full_b.append(s_full)
            tiny_b.append(s_tiny)
            fulls.append(f)
            tinys.append(t)
        full_px, tiny_px = torch.cat(fulls), torch.cat(tinys)
        full_1, tiny_1 = [], []
        alone = len(clips) if args.alone is None else max(1, min(args.alone, len(clips)))
        for i in range(alone):
            f, s_full = timed(lambda: full_decode(vae, latents[i:i + 1]))
            t, s_tiny = timed(lambda: tiny.decode(latents[i:i + 1]))
            full_1.append(s_full)
            tiny_1.append(s_tiny)
            assert torch.allclose(t, tiny_px[i:i + 1], atol=1e-4)  # alone and batched agree
        with FlopCounterMode(display=False) as counter:
            full_decode(vae, latents[:1])
        full_flops = counter.get_total_flops()
    tiny_flops = tiny.flops(tuple(latents[:1].shape))
    n = len(clips)
    res = {
        "base": args.base, "decoder": args.decoder, "clips": n, "seeds": f"{args.seed}..{args.seed + n - 1}",
        "shape": list(video.shape[2:]), "latent_shape": list(latents.shape[1:]), "threads": args.threads,
        "psnr_tiny_vs_full": float(np.mean([psnr(tiny_px[i], full_px[i]) for i in range(n)])),
        "psnr_tiny_vs_real": float(np.mean([psnr(tiny_px[i], video[i]) for i in range(n)])),
        "psnr_full_vs_real": float(np.mean([psnr(full_px[i], video[i]) for i in range(n)])),
        "psnr_tiny_vs_full_min": float(min(psnr(tiny_px[i], full_px[i]) for i in range(n))),
        "seconds_per_video": {
            "full_batched": sum(full_b) / n, "tiny_batched": sum(tiny_b) / n,
            "full_alone": sum(full_1) / alone, "tiny_alone": sum(tiny_1) / alone},
        "batch": args.batch, "timed_alone": alone,
        "gflops_per_video": {"full": full_flops / 1e9, "tiny": tiny_flops / 1e9},
        "parameters": {"full_decoder": sum(p.numel() for p in vae.decoder.parameters())
                       + sum(p.numel() for p in vae.post_quant_conv.parameters()),
                       "tiny": sum(p.numel() for p in tiny.parameters())},
    }
    s = res["seconds_per_video"]
    res["speedup"] = {"batched": s["full_batched"] / s["tiny_batched"], "alone": s["full_alone"] / s["tiny_alone"]}
    res["flop_ratio"] = full_flops / tiny_flops
    print(f"{n} held-out clips ({res['seeds']}), {'x'.join(map(str, res['shape']))}, {args.threads} thread(s)")
    print(f"PSNR tiny vs full {res['psnr_tiny_vs_full']:.2f} dB (worst clip {res['psnr_tiny_vs_full_min']:.2f}), "
          f"tiny vs real {res['psnr_tiny_vs_real']:.2f} dB, full vs real {res['psnr_full_vs_real']:.2f} dB")
    print(f"seconds per video, batched ({args.batch}): full {s['full_batched']:.3f}, tiny {s['tiny_batched']:.3f} "
          f"-> {res['speedup']['batched']:.1f}x")
    print(f"seconds per video, alone ({alone} clips): full {s['full_alone']:.3f}, tiny {s['tiny_alone']:.3f} "
          f"-> {res['speedup']['alone']:.1f}x")
    print(f"GFLOPs per video: full {full_flops / 1e9:.2f}, tiny {tiny_flops / 1e9:.3f} -> {res['flop_ratio']:.1f}x "
          f"fewer; parameters: full decoder {res['parameters']['full_decoder']:,}, tiny {res['parameters']['tiny']:,}")
    if args.json:
        out = ROOT / args.json if not Path(args.json).is_absolute() else Path(args.json)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(res, indent=1) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
