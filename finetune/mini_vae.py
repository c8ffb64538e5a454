"""Phase 1 of the mini-world recipe: a small ``AutoencoderKLWan`` trained on the procedural world.

The Wan VAE is convolutional and causal in time, so it trains on crops (a few frames, a spatial
window) and runs on whole 17x128x128 clips. Resumable: every ``save_every`` steps the model,
optimiser, step, RNG states and the compute spent so far are written to ``out/state.pt``
(:class:`finetune.toolkit.Resumable`); running again continues from there. At the end the latent
statistics (per channel mean and std over the training clips) go into the VAE config, as Wan's
``latents_mean`` / ``latents_std``, and the model is saved in diffusers format to ``out/vae``.

    python -m finetune.mini_vae --out data/mini/vae --steps 3000

A weights-only ``state.pt`` (model, step, seconds, history; no optimiser or RNG states) also
resumes, with a fresh optimiser: that is how a partly trained VAE travels between machines
(``models/mini-work/``).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from .toolkit import Resumable, add_flags, config_from_flags, read_state, scheduled_lr, set_lr
from .world import WorldConfig, make_clip


@dataclass
class VAEConfig:
    out: str = "data/mini/vae"
    steps: int = 3000
    batch: int = 4
    crop: int = 64  # spatial crop
    crop_frames: int = 5  # 1 + 4k frames per crop (causal VAE)
    lr: float = 1e-3
    kl_weight: float = 1e-6
    base_dim: int = 16
    dim_mult: list = field(default_factory=lambda: [1, 2, 4, 4])
    train_clips: int = 2000  # seeds [0, train_clips) train, then held-out seeds
    eval_clips: int = 16
    stats_clips: int = 64  # clips the latent mean/std are measured on
    decoder_steps: int = 0  # then this many steps of the decoder alone (latents, and so the models
    decoder_lr: float = 3e-4  # trained on them, stay valid): sharper reconstructions for free
    save_every: int = 50
    eval_every: int = 250
    threads: int = 0  # 0: torch default
    seed: int = 0


def build_vae(cfg: VAEConfig, latents_mean=None, latents_std=None):
    from diffusers import AutoencoderKLWan

    kw = {}
    if latents_mean is not None:
        kw = dict(latents_mean=list(map(float, latents_mean)), latents_std=list(map(float, latents_std)))
    return AutoencoderKLWan(base_dim=cfg.base_dim, z_dim=16, dim_mult=list(cfg.dim_mult), num_res_blocks=1,
                            temperal_downsample=[False, True, True], **kw)


def to_vae_input(frames: np.ndarray) -> torch.Tensor:
    """uint8 (T, H, W, 3) -> float (3, T, H, W) in [-1, 1]."""
    return torch.from_numpy(frames).permute(3, 0, 1, 2).float() / 127.5 - 1.0


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR in dB of two videos in [-1, 1]."""
    mse = ((a.clamp(-1, 1) - b.clamp(-1, 1)) / 2).pow(2).mean().item()
    return float("inf") if mse == 0 else 10 * math.log10(1.0 / mse)


def _batch(rng: np.random.Generator, cfg: VAEConfig, world: WorldConfig) -> torch.Tensor:
    out = []
    for _ in range(cfg.batch):
        frames, _, _ = make_clip(int(rng.integers(0, cfg.train_clips)), world)
        t0 = int(rng.integers(0, frames.shape[0] - cfg.crop_frames + 1))
        y, x = (int(v) for v in rng.integers(0, world.size - cfg.crop + 1, size=2))
        out.append(to_vae_input(frames[t0:t0 + cfg.crop_frames, y:y + cfg.crop, x:x + cfg.crop]))
    return torch.stack(out)


@torch.no_grad()
def evaluate(vae, cfg: VAEConfig, world: WorldConfig) -> float:
    vae.eval()
    scores = []
    for i in range(cfg.eval_clips):
        frames, _, _ = make_clip(10_000_000 + i, world)  # held out
        x = to_vae_input(frames)[None].to(vae.device)
        rec = vae.decode(vae.encode(x).latent_dist.mode()).sample
        scores.append(psnr(rec, x))
    vae.train()
    return float(np.mean(scores))


@torch.no_grad()
def latent_stats(vae, cfg: VAEConfig, world: WorldConfig, clips: int = 64) -> tuple[list, list]:
    vae.eval()
    zs = []
    for i in range(clips):
        frames, _, _ = make_clip(i, world)
        zs.append(vae.encode(to_vae_input(frames)[None].to(vae.device)).latent_dist.mode().cpu())
    z = torch.cat(zs)  # (N, 16, T, H, W)
    return z.mean(dim=(0, 2, 3, 4)).tolist(), z.std(dim=(0, 2, 3, 4)).clamp_min(1e-3).tolist()


def _vae_loss(vae, x: torch.Tensor, decoder_only: bool, kl_weight: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``(loss, reconstruction loss)``: L1 + L2 of the reconstruction, plus the KL term while the
    encoder trains; the decoder alone decodes the latent mode, as generation does."""
    if decoder_only:
        with torch.no_grad():
            z = vae.encode(x).latent_dist.mode()
        rec = vae.decode(z).sample
        rec_loss = (rec - x).abs().mean() + (rec - x).pow(2).mean()
        return rec_loss, rec_loss
    post = vae.encode(x).latent_dist
    rec = vae.decode(post.sample()).sample
    rec_loss = (rec - x).abs().mean() + (rec - x).pow(2).mean()
    return rec_loss + kl_weight * post.kl().mean(), rec_loss


def train(cfg: VAEConfig, log=print) -> dict:
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    world = WorldConfig()
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")  # the same recipe on a GPU
    vae = build_vae(cfg).to(device)
    decoder_params = list(vae.post_quant_conv.parameters()) + list(vae.decoder.parameters())

    def optimiser(decoder_only: bool):
        return torch.optim.AdamW(decoder_params if decoder_only else vae.parameters(),
                                 lr=cfg.decoder_lr if decoder_only else cfg.lr, weight_decay=0.0)

    step, seconds, history = 0, 0.0, []
    total = cfg.steps + cfg.decoder_steps
    rng = np.random.default_rng(cfg.seed)
    state_path = out / "state.pt"
    saved = read_state(state_path)
    opt = optimiser(saved is not None and saved["step"] >= cfg.steps and saved.get("decoder_only", False))
    state = Resumable(vae, opt, generators={"batches": rng})
    if saved is not None:
        # a weights-only seed state, or one from the other part, restarts the optimiser
        same_part = saved.get("decoder_only", False) == (saved["step"] >= cfg.steps)
        step = state.restore(saved, optimizer=same_part)
        seconds, history = saved["seconds"], saved["history"]
        log(f"resumed at step {step} ({seconds / 3600:.2f} CPU-h so far)")
    vae.train()
    while step < total:
        t0 = time.perf_counter()
        decoder_only = step >= cfg.steps
        if decoder_only and len(opt.param_groups[0]["params"]) != len(decoder_params):
            opt = state.optimizer = optimiser(True)
            log(f"vae step {step}: the decoder alone from here")
        if decoder_only:
            lr = scheduled_lr(step - cfg.steps, lr=cfg.decoder_lr, steps=cfg.decoder_steps, overlap=True)
        else:
            lr = scheduled_lr(step, lr=cfg.lr, steps=cfg.steps, overlap=True)
        set_lr(opt, lr)
        loss, rec_loss = _vae_loss(vae, _batch(rng, cfg, world).to(device), decoder_only, cfg.kl_weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        step += 1
        seconds += time.perf_counter() - t0
        if step % 10 == 0:
            log(f"vae step {step}/{total} loss {rec_loss.item():.4f} lr {lr:.2e} ({seconds / step:.2f}s/step)")
        if step % cfg.eval_every == 0 or step in (cfg.steps, total):
            p = evaluate(vae, cfg, world)
            history.append({"step": step, "psnr": p, "loss": rec_loss.item()})
            log(f"vae step {step}: held-out PSNR {p:.2f} dB")
        if step % cfg.save_every == 0 or step in (cfg.steps, total):
            state.save(state_path, step, decoder_only=decoder_only, seconds=seconds, history=history,
                       config=asdict(cfg))
    return _finish(cfg, vae, world, step, seconds, history)


def _finish(cfg: VAEConfig, vae, world: WorldConfig, step: int, seconds: float, history: list[dict]) -> dict:
    """Measure the latent statistics, save the VAE with them in diffusers format, write the summary."""
    out = Path(cfg.out)
    mean, std = latent_stats(vae, cfg, world, clips=cfg.stats_clips)
    final = build_vae(cfg, mean, std)
    final.load_state_dict({k: v.cpu() for k, v in vae.state_dict().items()})
    final.save_pretrained(str(out / "vae"), safe_serialization=True)
    summary = {"steps": step, "cpu_seconds": seconds, "history": history,
               "psnr": history[-1]["psnr"] if history else None, "config": asdict(cfg)}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m finetune.mini_vae")
    add_flags(ap, VAEConfig, skip=("dim_mult",))
    summary = train(config_from_flags(VAEConfig, ap.parse_args(argv)), log=lambda m: print(m, flush=True))
    print(json.dumps({k: v for k, v in summary.items() if k != "history"}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
