"""The tiny video decoder against the full VAE decoder, in one run.

Held-out mini-world clips (seeds 20,000,000+, which the tiny decoder never trained on) are encoded
by the preset's VAE; both decoders then decode the same normalised latents. Printed: PSNR
tiny-vs-full, tiny-vs-real and full-vs-real (mean per clip, videos in [-1, 1]); seconds per video
batched (one call on ``--batch`` videos) and alone (one call per video), for both decoders, with
the speed-up; FLOPs per video (``FlopCounterMode``) and their ratio. The two decoders' timed runs
alternate, so a busy neighbour on the machine slows both alike.

    python bench/tiny_decoder.py [--tiny-decoder models/mini-tiny-decoder --clips 8 --batch 8 --alone 8 --threads 1 --json]
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


def parse(argv=None) -> argparse.Namespace:
    from finetune.tiny_decoder import HELDOUT_SEED

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--base", default="mini", help="preset whose VAE encodes the clips and is the full decoder")
    p.add_argument("--decoder", "--tiny-decoder", dest="decoder", default="models/mini-tiny-decoder",
                   help="the tiny decoder's folder")
    p.add_argument("--clips", type=int, default=8)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--alone", type=int, default=None, help="clips also timed alone (default: all)")
    p.add_argument("--seed", type=int, default=HELDOUT_SEED, help="first held-out world seed")
    p.add_argument("--threads", type=int, default=1, help="torch threads for both decoders")
    p.add_argument("--json", nargs="?", const="bench/results/tiny_decoder.json", default=None)
    return p.parse_args(argv)


def _timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def held_out(vae, count: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` mini-world clips from world seed ``seed`` on, as videos in [-1, 1] and the VAE's
    normalised latents of them (encoded 8 at a time)."""
    from finetune.data import encode_video, to_video_tensor, world_clips

    video = torch.stack([to_video_tensor(c.load()) for c in world_clips(count, seed=seed)])
    latents = torch.cat([encode_video(vae, video[i:i + 8]) for i in range(0, count, 8)])
    return video, latents


@torch.no_grad()
def time_decoders(vae, tiny, latents: torch.Tensor, batch: int, alone: int) -> dict:
    """Both decoders on the same latents, their calls alternating: batched (``batch`` videos a
    call) over all, then alone (one a call) over the first ``alone``; the batched pixels kept."""
    from finetune.tiny_decoder import full_decode

    tiny.decode(latents[:1]), full_decode(vae, latents[:1, :, :2])  # warm-up
    secs = {"full_batched": [], "tiny_batched": [], "full_alone": [], "tiny_alone": []}
    fulls, tinys = [], []
    for i in range(0, len(latents), batch):
        f, s_full = _timed(lambda: full_decode(vae, latents[i:i + batch]))
        t, s_tiny = _timed(lambda: tiny.decode(latents[i:i + batch]))
        secs["full_batched"].append(s_full)
        secs["tiny_batched"].append(s_tiny)
        fulls.append(f)
        tinys.append(t)
    tiny_px = torch.cat(tinys)
    for i in range(alone):
        _, s_full = _timed(lambda: full_decode(vae, latents[i:i + 1]))
        t, s_tiny = _timed(lambda: tiny.decode(latents[i:i + 1]))
        secs["full_alone"].append(s_full)
        secs["tiny_alone"].append(s_tiny)
        assert torch.allclose(t, tiny_px[i:i + 1], atol=1e-4)  # alone and batched agree
    n = len(latents)
    per_video = {k: sum(v) / (n if k.endswith("batched") else alone) for k, v in secs.items()}
    return {"full_px": torch.cat(fulls), "tiny_px": tiny_px, "seconds_per_video": per_video}


def measure(args) -> dict:
    """PSNR of the three pairs, seconds per video of both decoders batched and alone, FLOPs and
    parameters: the JSON-ready results of one run."""
    from torch.utils.flop_counter import FlopCounterMode

    from core.presets import build_components
    from core.tiny_decoder import load_tiny_decoder
    from finetune.tiny_decoder import full_decode, psnr

    vae = build_components(args.base, "cpu").vae
    tiny = load_tiny_decoder(ROOT / args.decoder if not Path(args.decoder).is_absolute() else args.decoder)
    if not tiny.matches_vae(vae):
        print(f"warning: {args.decoder} was trained on another latent space ({tiny.config.latent_space!r})")
    video, latents = held_out(vae, args.clips, args.seed)
    n = len(latents)
    alone = n if args.alone is None else max(1, min(args.alone, n))
    timed = time_decoders(vae, tiny, latents, args.batch, alone)
    full_px, tiny_px, s = timed["full_px"], timed["tiny_px"], timed["seconds_per_video"]
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        full_decode(vae, latents[:1])
    full_flops, tiny_flops = counter.get_total_flops(), tiny.flops(tuple(latents[:1].shape))
    return {
        "base": args.base, "decoder": args.decoder, "clips": n, "seeds": f"{args.seed}..{args.seed + n - 1}",
        "shape": list(video.shape[2:]), "latent_shape": list(latents.shape[1:]), "threads": args.threads,
        "psnr_tiny_vs_full": float(np.mean([psnr(tiny_px[i], full_px[i]) for i in range(n)])),
        "psnr_tiny_vs_real": float(np.mean([psnr(tiny_px[i], video[i]) for i in range(n)])),
        "psnr_full_vs_real": float(np.mean([psnr(full_px[i], video[i]) for i in range(n)])),
        "psnr_tiny_vs_full_min": float(min(psnr(tiny_px[i], full_px[i]) for i in range(n))),
        "seconds_per_video": s, "batch": args.batch, "timed_alone": alone,
        "speedup": {"batched": s["full_batched"] / s["tiny_batched"], "alone": s["full_alone"] / s["tiny_alone"]},
        "gflops_per_video": {"full": full_flops / 1e9, "tiny": tiny_flops / 1e9},
        "flop_ratio": full_flops / tiny_flops,
        "parameters": {"full_decoder": sum(p.numel() for p in vae.decoder.parameters())
                       + sum(p.numel() for p in vae.post_quant_conv.parameters()),
                       "tiny": sum(p.numel() for p in tiny.parameters())},
    }


def report(res: dict) -> None:
    s, n = res["seconds_per_video"], res["clips"]
    print(f"{n} held-out clips ({res['seeds']}), {'x'.join(map(str, res['shape']))}, {res['threads']} thread(s)")
    print(f"PSNR tiny vs full {res['psnr_tiny_vs_full']:.2f} dB (worst clip {res['psnr_tiny_vs_full_min']:.2f}), "
          f"tiny vs real {res['psnr_tiny_vs_real']:.2f} dB, full vs real {res['psnr_full_vs_real']:.2f} dB")
    print(f"seconds per video, batched ({res['batch']}): full {s['full_batched']:.3f}, tiny {s['tiny_batched']:.3f} "
          f"-> {res['speedup']['batched']:.1f}x")
    print(f"seconds per video, alone ({res['timed_alone']} clips): full {s['full_alone']:.3f}, "
          f"tiny {s['tiny_alone']:.3f} -> {res['speedup']['alone']:.1f}x")
    g = res["gflops_per_video"]
    print(f"GFLOPs per video: full {g['full']:.2f}, tiny {g['tiny']:.3f} -> {res['flop_ratio']:.1f}x "
          f"fewer; parameters: full decoder {res['parameters']['full_decoder']:,}, tiny {res['parameters']['tiny']:,}")


def main(argv=None) -> int:
    args = parse(argv)
    torch.set_num_threads(args.threads)
    folder = Path(args.decoder) if Path(args.decoder).is_absolute() else ROOT / args.decoder
    if not (folder / "config.json").is_file():
        print(f"error: no tiny decoder at {args.decoder} (no config.json): train one (python -m finetune "
              "tiny-decoder) or pass --decoder FOLDER", file=sys.stderr)
        return 2
    res = measure(args)
    report(res)
    if args.json:
        out = ROOT / args.json if not Path(args.json).is_absolute() else Path(args.json)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(res, indent=1) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
