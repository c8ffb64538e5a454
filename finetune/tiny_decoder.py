"""Distil a base preset's VAE decoder into a :class:`core.tiny_decoder.TinyVideoDecoder`.

``python -m finetune tiny-decoder --base mini --data world:N --steps S --out FOLDER``.

Data: every clip (``world:N`` mini-world clips, seeds ``0 .. N-1``, or a folder of videos) is fitted
to the training shape, encoded with the base VAE (normalised latents, as the sampler returns them)
and decoded again by the full VAE decoder; the triplets (latent, full decode, clip) are cached in
``FOLDER/train/cache`` in parts of ``vae_batch`` clips, so an interrupted or resumed job never
encodes a clip twice. Held-out clips (world seeds ``20,000,000 + i``, which training never uses; for
a folder, its last ``eval_clips`` videos) are cached the same way.

``samples`` adds latents a model generates (``samples_checkpoint`` in ``samples_mode`` with the
``samples_schedules`` in turn, seeds ``30,000,000 + i``), cached with their full decodes (which are
also their "clip" target: there is no real one). Encoded clips alone do not show the decoder what a
sampler makes: the mini models' first latent frames decode to blurred, partly formed objects that
no encoded clip has, and a decoder trained without them rounds the squares of those frames (the
scorer then calls some squares circles; ``docs/experiments.md``, "The tiny decoder").

``init`` fine-tunes a trained decoder instead of starting from scratch (:func:`warm_start`; it may
add residual blocks, which start as the identity).

Loss: L1 against the full decoder's pixels plus a gradient-difference term (spatial and temporal
finite differences, L1), optionally plus ``clip_weight`` times the same against the real clip.
AdamW, cosine learning rate. State (model, optimiser, step, RNG; :class:`finetune.toolkit.Resumable`)
is saved in ``FOLDER/train`` every ``save_every`` steps; running the same command again continues
from it. The folder itself holds
what ships: ``config.json``, ``model.safetensors`` and ``card.json`` (relative paths only).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from finetune.toolkit import (ConfigError, Resumable, check_fields, read_state, scheduled_lr, set_lr, setting,
                              write_card)

HELDOUT_SEED = 20_000_000
SAMPLE_SEED = 30_000_000
CACHE_VERSION = 1


class TinyDecoderConfigError(ConfigError):
    """A training setting that cannot work (the message says which and why)."""


@dataclass
class TinyDecoderTrainConfig:
    base: str = setting("mini", help="preset whose VAE latents it decodes")
    data: str = setting("world:512", help="world:N (mini-world clips) or a folder of videos")
    out: str = setting("models/mini-tiny-decoder", help="decoder folder, or a name under $PWAN_DATA_DIR/checkpoints")
    steps: int = setting(3000, lo=1, help="optimizer steps")
    batch: int = setting(4, lo=1, help="clips per step")
    crop: int = setting(0, lo=0, help="latent crop size per clip (0: whole clips); the pixel crop is 8 times it")
    lr: float = setting(2e-3, lo=0.0, lo_open=True, help="peak learning rate")
    lr_min_ratio: float = setting(0.05, lo=0.0, hi=1.0, help="where the cosine ends, as a share of lr")
    warmup_steps: int = setting(50, lo=0, help="steps of linear learning-rate warm-up")
    weight_decay: float = setting(1e-4, lo=0.0, help="AdamW weight decay")
    grad_clip: float = setting(1.0, lo=0.0, help="gradient norm clip (0: off)")
    grad_weight: float = setting(1.0, lo=0.0, help="weight of the gradient-difference term")
    clip_weight: float = setting(0.0, lo=0.0, help="weight of the real clip as a second target")
    frames: int = setting(17, lo=1, help="frames per training clip (1 + 4k)")
    height: int = setting(128, lo=8, help="clip height in pixels (a multiple of 8)")
    width: int = setting(128, lo=8, help="clip width in pixels (a multiple of 8)")
    widths: list[int] = setting(factory=lambda: [64, 32, 16], lo=1, length=3, example="three whole numbers like 64,32,16",
                                help="channels at latent, x2, x4 resolution")
    blocks: list[int] = setting(factory=lambda: [2, 0, 0], lo=0, length=3, example="three whole numbers like 2,0,0",
                                help="residual blocks at each resolution")
    samples: int = setting(0, lo=0, help="generated latents added to the training clips (their full decodes the "
                                        "target): the decoder learns what a sampler makes, such as its first frames")
    samples_checkpoint: str = setting("", help="checkpoint folder that generates them (empty: the base model)")
    samples_mode: str = setting("pyramidal", choices=("pyramidal", "original"), help="sampling mode of the samples")
    samples_schedules: str = setting("12-12-6", help="schedules of the samples, comma-separated, taken in turn")
    init: str = setting("", help="start from this tiny decoder folder's weights (same widths; residual blocks it "
                                 "lacks start as the identity); empty: from scratch")
    eval_clips: int = setting(16, lo=1, help="held-out clips")
    eval_every: int = setting(500, lo=1, help="evaluate every N steps")
    save_every: int = setting(250, lo=1, help="save the resume state every N steps")
    vae_batch: int = setting(8, lo=1, help="clips per VAE call (and per cache part)")
    seed: int = setting(0, lo=0, help="seed of the training draws")
    device: str | None = setting(None, help="torch device (default: cuda if there is one)")
    cache_dir: str | None = setting(None, help="triplet cache folder (default: OUT/train/cache)")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "TinyDecoderTrainConfig":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


def validate(cfg: TinyDecoderTrainConfig) -> TinyDecoderTrainConfig:
    """Refuse settings that cannot train, naming the field: ranges from the fields' metadata,
    then the shape, the crop and the data source."""
    check_fields(cfg, TinyDecoderConfigError)
    if (cfg.frames - 1) % 4 or cfg.height % 8 or cfg.width % 8:
        raise TinyDecoderConfigError(
            f"shape {cfg.frames}x{cfg.height}x{cfg.width}: frames must be 1 + 4k and height, width multiples of 8",
            "frames")
    if cfg.crop and (cfg.crop * 8 > min(cfg.height, cfg.width) or cfg.crop < 2):
        raise TinyDecoderConfigError(f"crop {cfg.crop} latent pixels does not fit {cfg.height}x{cfg.width}", "crop")
    if not cfg.data.startswith("world:") and not Path(cfg.data).expanduser().is_dir():
        raise TinyDecoderConfigError(f"data {cfg.data!r}: write world:N or name a folder of videos", "data")
    if cfg.samples and cfg.samples_checkpoint and not Path(cfg.samples_checkpoint).expanduser().is_dir():
        raise TinyDecoderConfigError(f"samples_checkpoint {cfg.samples_checkpoint!r} is not a checkpoint folder",
                                     "samples_checkpoint")
    if cfg.samples and not _schedules(cfg):
        raise TinyDecoderConfigError("samples_schedules names no schedule", "samples_schedules")
    if cfg.init and not Path(cfg.init).expanduser().is_dir():
        raise TinyDecoderConfigError(f"init {cfg.init!r} is not a tiny decoder folder", "init")
    if cfg.data.startswith("world:"):
        try:
            n = int(cfg.data.split(":", 1)[1])
        except ValueError:
            raise TinyDecoderConfigError(f"data {cfg.data!r}: N in world:N must be a whole number", "data") from None
        if n < 1:
            raise TinyDecoderConfigError("world:N needs N >= 1", "data")
    return cfg


# ----------------------------------------------------------------------------- data
def _sources(cfg: TinyDecoderTrainConfig):
    """(training clips, held-out clips) as ``finetune.data.Clip`` lists."""
    from finetune.data import folder_clips, world_clips

    if cfg.data.startswith("world:"):
        n = int(cfg.data.split(":", 1)[1])
        return world_clips(n, seed=0), world_clips(cfg.eval_clips, seed=HELDOUT_SEED)
    clips, _ = folder_clips(cfg.data)
    if len(clips) <= cfg.eval_clips:
        raise TinyDecoderConfigError(f"{cfg.data} holds {len(clips)} usable videos: need more than "
                                     f"eval_clips={cfg.eval_clips} (the last ones are held out)")
    return clips[:-cfg.eval_clips], clips[-cfg.eval_clips:]


def _schedules(cfg: TinyDecoderTrainConfig) -> list[str]:
    return [x.strip() for x in cfg.samples_schedules.split(",") if x.strip()]


def _sample_requests(cfg: TinyDecoderTrainConfig, train_clips) -> list[tuple[str, str, int]]:
    """(prompt, schedule, seed) of every generated sample: the mini world's captions in turn for
    ``world:N`` (else the training clips' captions), the schedules in turn, seeds ``SAMPLE_SEED + i``
    (neither the table's nor its noise floor's nor the held-out checks')."""
    if cfg.data.startswith("world:"):
        from finetune.world import all_captions

        prompts = all_captions()
    else:
        prompts = [c.caption for c in train_clips if c.caption] or [""]
    schedules = _schedules(cfg)
    return [(prompts[i % len(prompts)], schedules[i % len(schedules)], SAMPLE_SEED + i) for i in range(cfg.samples)]


def _cache_key(cfg: TinyDecoderTrainConfig) -> dict:
    """What the cached parts depend on. ``world:N`` for any N shares one cache (its clips are the
    first N seeds, so a smaller N reads a prefix of the parts and a larger one adds parts)."""
    source = "world" if cfg.data.startswith("world:") else str(Path(cfg.data).expanduser().resolve())
    return {"version": CACHE_VERSION, "base": cfg.base, "source": source, "eval_clips": cfg.eval_clips,
            "shape": [cfg.frames, cfg.height, cfg.width], "vae_batch": cfg.vae_batch}


def _samples_key(cfg: TinyDecoderTrainConfig) -> dict:
    """What the cached samples depend on (any ``samples`` count shares it: a prefix, as ``world:N``)."""
    checkpoint = str(Path(cfg.samples_checkpoint).expanduser().resolve()) if cfg.samples_checkpoint else ""
    return {"version": CACHE_VERSION, "base": cfg.base, "checkpoint": checkpoint, "mode": cfg.samples_mode,
            "schedules": _schedules(cfg), "shape": [cfg.frames, cfg.height, cfg.width], "vae_batch": cfg.vae_batch,
            "prompts": "world captions" if cfg.data.startswith("world:") else "training captions"}


@torch.no_grad()
def full_decode(vae, latents: torch.Tensor) -> torch.Tensor:
    """The full VAE decoder's pixels in [-1, 1] for normalised latents (as ``decode_batch``)."""
    p = next(vae.parameters())
    x = latents.to(p.device, p.dtype)
    mean = torch.tensor(vae.config.latents_mean).view(1, -1, 1, 1, 1).to(x)
    std = torch.tensor(vae.config.latents_std).view(1, -1, 1, 1, 1).to(x)
    return vae.decode(x * std + mean, return_dict=False)[0].clamp(-1, 1).float().cpu()


def to_uint8_frames(video: torch.Tensor) -> torch.Tensor:
    """``(B, 3, F, H, W)`` in [-1, 1] -> uint8 ``(B, F, H, W, 3)``, rounded as ``decode_batch`` does."""
    x = ((video.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 4, 1).contiguous()


def from_uint8_frames(frames: torch.Tensor) -> torch.Tensor:
    """uint8 ``(B, F, H, W, 3)`` -> float ``(B, 3, F, H, W)`` in [-1, 1]."""
    return frames.permute(0, 4, 1, 2, 3).float().div(127.5).sub(1.0)


def cache_folder(cfg: TinyDecoderTrainConfig) -> Path:
    return Path(cfg.cache_dir) if cfg.cache_dir else Path(cfg.out) / "train" / "cache"


def build_cache(cfg: TinyDecoderTrainConfig, get_vae: Callable[[], object],
                log: Callable[[str], None] = print) -> Path:
    """Encode and fully decode every training and held-out clip once, in parts of ``vae_batch``
    clips (``{train,heldout}-NNNNN.pt`` in :func:`cache_folder`); parts already there are kept, and
    the VAE (``get_vae()``) is only loaded when one is missing. ``vae.json`` keeps the VAE's latent
    channels and normalisation for the decoder's config."""
    from finetune.data import ClipError, encode_video, fit_frames, to_video_tensor

    folder = cache_folder(cfg)
    folder.mkdir(parents=True, exist_ok=True)
    _guard(folder / "key.json", _cache_key(cfg), "data", "remove it")
    train_clips, held = _sources(cfg)
    vae = None
    for split, clips in (("heldout", held), ("train", train_clips)):
        parts = math.ceil(len(clips) / cfg.vae_batch)
        for p in range(parts):
            path = folder / f"{split}-{p:05d}.pt"
            if path.is_file():
                continue
            if vae is None:
                vae = get_vae()
                (folder / "vae.json").write_text(json.dumps(
                    {"z_dim": int(vae.config.z_dim), "latents_mean": [float(v) for v in vae.config.latents_mean],
                     "latents_std": [float(v) for v in vae.config.latents_std]}))
            t0 = time.perf_counter()
            pixels, names = [], []
            for clip in clips[p * cfg.vae_batch:(p + 1) * cfg.vae_batch]:
                try:
                    frames = fit_frames(clip.load(), cfg.frames, cfg.height, cfg.width)
                except (ClipError, OSError, ValueError) as exc:
                    log(f"skipped {clip.name}: {exc}")
                    continue
                pixels.append(to_video_tensor(frames))
                names.append(clip.name)
            if not pixels:
                torch.save({"names": []}, path)
                continue
            video = torch.stack(pixels)
            latents = encode_video(vae, video)
            _save_part(path, {"names": names, "latents": latents, "full": to_uint8_frames(full_decode(vae, latents)),
                              "clip": to_uint8_frames(video)})
            log(f"cache {split} part {p + 1}/{parts}: {len(names)} clips in {time.perf_counter() - t0:.1f} s")
    if cfg.samples:
        _cache_samples(cfg, folder, train_clips, log)
    return folder


def _guard(key_file: Path, key: dict, what: str, remedy: str) -> None:
    """Refuse a cache folder whose ``key_file`` describes other ``what`` than ``key``; else claim it."""
    if key_file.is_file() and json.loads(key_file.read_text()) != key:
        raise TinyDecoderConfigError(f"{key_file.parent} caches other {what} ({key_file.read_text().strip()}); "
                                     f"{remedy} or choose another --out")
    key_file.write_text(json.dumps(key))


def _save_part(path: Path, part: dict) -> None:
    """Write one cache part atomically (a half-written part never looks cached)."""
    tmp = path.with_suffix(".tmp")
    torch.save(part, tmp)
    tmp.replace(path)


def _cache_samples(cfg: TinyDecoderTrainConfig, folder: Path, train_clips, log) -> None:
    """Generate ``cfg.samples`` latents with the sampling model and decode them with the full
    decoder, in parts (``samples-NNNNN.pt``) like the clips; the target clip of a sample is its full
    decode (there is no real one). ``samples-key.json`` guards them as ``key.json`` guards the clips.
    The sampling pipeline (and its VAE, the full decoder) is loaded only when a part is missing."""
    from core import GenerationRequest, load_pipeline
    from core.errors import RequestError

    _guard(folder / "samples-key.json", _samples_key(cfg), "samples", "remove its samples-* files")
    requests = _sample_requests(cfg, train_clips)
    pipe, parts = None, math.ceil(len(requests) / cfg.vae_batch)
    for p in range(parts):
        path = folder / f"samples-{p:05d}.pt"
        if path.is_file():
            continue
        if pipe is None:
            pipe = load_pipeline(cfg.base, checkpoint_dir=cfg.samples_checkpoint or None, device=cfg.device,
                                 name=cfg.base)
        t0, latents, names = time.perf_counter(), [], []
        for prompt, schedule, seed in requests[p * cfg.vae_batch:(p + 1) * cfg.vae_batch]:
            req = GenerationRequest(prompt, model=cfg.base, mode=cfg.samples_mode, schedule=schedule, seed=seed,
                                    frames=cfg.frames, height=cfg.height, width=cfg.width)
            try:
                latents.append(pipe.generate(req, preview=False, return_latents=True, decode=False).latents.cpu())
            except RequestError as exc:
                raise TinyDecoderConfigError(f"samples ({cfg.samples_mode} {schedule} at {cfg.frames}x{cfg.height}x"
                                             f"{cfg.width}): {exc}", "samples_schedules") from exc
            names.append(f"sample {seed} {schedule}: {prompt}")
        latents = torch.cat(latents)
        full = to_uint8_frames(full_decode(pipe.vae, latents))
        _save_part(path, {"names": names, "latents": latents, "full": full, "clip": full})
        log(f"cache samples part {p + 1}/{parts}: {len(names)} samples in {time.perf_counter() - t0:.1f} s")


def load_cache(folder: Path, split: str, count: int, vae_batch: int) -> dict:
    """The first ``count`` clips' cached triplets of one split, concatenated: ``latents`` float,
    ``full``/``clip`` uint8 ``(N, F, H, W, 3)``."""
    paths = [folder / f"{split}-{p:05d}.pt" for p in range(math.ceil(count / vae_batch))]
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        raise TinyDecoderConfigError(f"cache {folder} lacks {', '.join(missing)}: build it first")
    parts = [torch.load(p) for p in paths]
    parts = [p for p in parts if p.get("names")]
    if not parts:
        raise TinyDecoderConfigError(f"no usable {split} clips in {folder}")
    out = {"names": [n for p in parts for n in p["names"]][:count],
           **{k: torch.cat([p[k] for p in parts])[:count] for k in ("latents", "full", "clip")}}
    return out


# ----------------------------------------------------------------------------- loss
def _crop(cfg: TinyDecoderTrainConfig, data: dict, idx: list[int], gen: torch.Generator):
    """A batch of (latents, full, clip, mask): whole clips, or random ``crop`` x ``crop`` latent
    windows with their 8x pixel windows. The mask drops the outer 8 pixels of every crop edge
    that lies inside the frame: there the full decoder saw latents the crop cut away."""
    lat = data["latents"][idx]
    full = from_uint8_frames(data["full"][idx])
    clip = from_uint8_frames(data["clip"][idx])
    b, _, _, h, w = lat.shape
    mask = torch.ones(b, 1, 1, h * 8, w * 8)
    if not cfg.crop or cfg.crop >= min(h, w):
        return lat, full, clip, mask
    c, m = cfg.crop, 8
    ys = torch.randint(0, h - c + 1, (b,), generator=gen).tolist()
    xs = torch.randint(0, w - c + 1, (b,), generator=gen).tolist()
    out = [[], [], [], []]
    for i, (y, x) in enumerate(zip(ys, xs)):
        py, px, pc = y * 8, x * 8, c * 8
        out[0].append(lat[i, :, :, y:y + c, x:x + c])
        out[1].append(full[i, :, :, py:py + pc, px:px + pc])
        out[2].append(clip[i, :, :, py:py + pc, px:px + pc])
        mk = torch.ones(1, 1, pc, pc)
        if y > 0:
            mk[..., :m, :] = 0
        if y + c < h:
            mk[..., -m:, :] = 0
        if x > 0:
            mk[..., :, :m] = 0
        if x + c < w:
            mk[..., :, -m:] = 0
        out[3].append(mk)
    return tuple(torch.stack(t) for t in out)


def reconstruction_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, grad_weight: float):
    """Masked L1 plus ``grad_weight`` times the L1 of the spatial (x, y) and temporal finite
    differences: the difference term keeps edges and motion sharp where L1 alone blurs."""
    def mean(x, m):
        return (x * m).sum() / (m.expand_as(x).sum().clamp_min(1))

    loss = mean((pred - target).abs(), mask)
    if grad_weight:
        gx = lambda v: v[..., :, 1:] - v[..., :, :-1]  # noqa: E731
        gy = lambda v: v[..., 1:, :] - v[..., :-1, :]  # noqa: E731
        gt = lambda v: v[:, :, 1:] - v[:, :, :-1]  # noqa: E731
        g = mean((gx(pred) - gx(target)).abs(), mask[..., :, 1:] * mask[..., :, :-1])
        g = g + mean((gy(pred) - gy(target)).abs(), mask[..., 1:, :] * mask[..., :-1, :])
        if pred.shape[2] > 1:
            g = g + mean((gt(pred) - gt(target)).abs(), mask)
        loss = loss + grad_weight * g
    return loss


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR in dB of two videos in [-1, 1] (peak-to-peak 2), as ``finetune.mini_vae.psnr``."""
    mse = ((a.clamp(-1, 1) - b.clamp(-1, 1)) / 2).pow(2).mean().item()
    return float("inf") if mse == 0 else 10 * math.log10(1.0 / mse)


@torch.no_grad()
def evaluate(model, held: dict, chunk: int = 2) -> dict:
    """Mean per-clip PSNR of the tiny decoder against the full decoder and against the real clip,
    and the full decoder's against the real clip, on the held-out triplets."""
    was = model.training
    model.eval()
    tiny_full, tiny_clip, full_clip = [], [], []
    for i in range(0, len(held["names"]), chunk):
        pred = model.decode(held["latents"][i:i + chunk]).cpu()
        full = from_uint8_frames(held["full"][i:i + chunk])
        clip = from_uint8_frames(held["clip"][i:i + chunk])
        for j in range(pred.shape[0]):
            tiny_full.append(psnr(pred[j], full[j]))
            tiny_clip.append(psnr(pred[j], clip[j]))
            full_clip.append(psnr(full[j], clip[j]))
    model.train(was)
    return {"clips": len(tiny_full), "psnr_tiny_vs_full": float(np.mean(tiny_full)),
            "psnr_tiny_vs_clip": float(np.mean(tiny_clip)), "psnr_full_vs_clip": float(np.mean(full_clip))}


def learning_rate(cfg: TinyDecoderTrainConfig, step: int) -> float:
    """Linear warm-up, then cosine from ``lr`` down to ``lr * lr_min_ratio``."""
    return scheduled_lr(step, lr=cfg.lr, steps=cfg.steps, warmup=cfg.warmup_steps, min_ratio=cfg.lr_min_ratio)


# ----------------------------------------------------------------------------- training
def warm_start(model, folder: str | Path, base: str) -> dict:
    """Load a trained decoder's weights into ``model`` (fine-tuning it, possibly grown): every tensor
    of the folder must fit, and it must decode the same latent space; residual blocks the folder
    lacks get a zero second convolution, so the grown model starts as the folder's decoder exactly.
    Returns the folder's name, its blocks and the blocks that were added (:func:`lineage` adds the rest)."""
    from core.tiny_decoder import load_tiny_decoder

    try:
        source = load_tiny_decoder(folder)
    except Exception as exc:  # noqa: BLE001 - ModelLoadError and friends: the message says why
        raise TinyDecoderConfigError(f"init: {exc}", "init") from exc
    if source.config.latent_space != base:
        raise TinyDecoderConfigError(f"init {Path(folder).name!r} decodes {source.config.latent_space!r} latents, "
                                     f"not {base!r}", "init")
    if list(source.config.widths) != list(model.config.widths):
        raise TinyDecoderConfigError(f"init {Path(folder).name!r} has widths {source.config.widths}, this job "
                                     f"{model.config.widths}: they must match", "init")
    own, theirs = model.state_dict(), source.state_dict()
    extra = sorted(set(theirs) - set(own))
    if extra:
        raise TinyDecoderConfigError(f"init {Path(folder).name!r} has blocks this job lacks ({extra[0]}, ...): "
                                     "use at least its blocks", "init")
    new = sorted(set(own) - set(theirs))
    with torch.no_grad():
        model.load_state_dict({**own, **theirs})
        for name, module in model.named_modules():
            if hasattr(module, "conv2") and f"{name}.conv2.weight" in new:
                module.conv2.weight.zero_()
                module.conv2.bias.zero_()
    return {"folder": Path(folder).name, "blocks": list(source.config.blocks),
            "added": sorted({k.rsplit(".", 2)[0] for k in new})}


def lineage(init: dict, folder: str | Path) -> dict:
    """``init`` (from :func:`warm_start`) with what the folder's card says of how that decoder was
    trained (its steps, data, samples, compute and its own ``init``, so a chain of fine-tunes reads
    back to the first training)."""
    card_file = Path(folder) / "card.json"
    card = json.loads(card_file.read_text()) if card_file.is_file() else {}
    train_settings = card.get("train", {})
    return {**init, "steps": card.get("steps"), "data": card.get("data"), "samples": train_settings.get("samples", 0),
            "compute_seconds": card.get("compute_seconds"), "init": card.get("init")}


def _resume_key(cfg: TinyDecoderTrainConfig) -> dict:
    """Settings a resumed job must share with the one that wrote the state (steps may grow)."""
    d = cfg.to_dict()
    for k in ("steps", "out", "device", "eval_every", "save_every", "cache_dir"):
        d.pop(k)
    return d


def _load_data(cfg: TinyDecoderTrainConfig, log) -> tuple[dict, dict, dict, float]:
    """The training and held-out triplets (the cache built first if needed), the VAE's latent
    description, and the seconds the cache took."""
    from core.presets import build_components

    t_cache = time.perf_counter()
    cache = build_cache(cfg, lambda: build_components(cfg.base, "cpu").vae, log)
    vae_info = json.loads((cache / "vae.json").read_text())
    cache_seconds = time.perf_counter() - t_cache
    train_clips, held_clips = _sources(cfg)
    data = load_cache(cache, "train", len(train_clips), cfg.vae_batch)
    held = load_cache(cache, "heldout", len(held_clips), cfg.vae_batch)
    if cfg.samples:
        samples = load_cache(cache, "samples", cfg.samples, cfg.vae_batch)
        data = {k: data[k] + samples[k] if k == "names" else torch.cat([data[k], samples[k]]) for k in data}
    log(f"{len(data['names']) - cfg.samples} training clips, {cfg.samples} generated samples, "
        f"{len(held['names'])} held out")
    return data, held, vae_info, cache_seconds


def train(cfg: TinyDecoderTrainConfig | dict, log: Callable[[str], None] = print,
          should_stop: Callable[[int], bool] | None = None) -> dict | None:
    """Build the cache if needed, train (or continue) to ``cfg.steps``, evaluate on the held-out
    clips, and write the decoder folder with its card; returns the card. ``should_stop(step)``,
    asked after every step, interrupts the job (so does a file ``OUT/train/STOP``): its state is
    saved (run again to continue) and None is returned."""
    from core.tiny_decoder import TinyDecoderConfig, TinyVideoDecoder

    cfg = validate(TinyDecoderTrainConfig.from_dict(cfg) if isinstance(cfg, dict) else cfg)
    out, work = Path(cfg.out), Path(cfg.out) / "train"
    work.mkdir(parents=True, exist_ok=True)
    device = torch.device(cfg.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    data, held, vae_info, cache_seconds = _load_data(cfg, log)

    torch.manual_seed(cfg.seed)
    dcfg = TinyDecoderConfig(latent_channels=vae_info["z_dim"], widths=list(cfg.widths), blocks=list(cfg.blocks),
                             latent_space=cfg.base, latents_mean=vae_info["latents_mean"],
                             latents_std=vae_info["latents_std"])
    model = TinyVideoDecoder(dcfg)
    init = warm_start(model, cfg.init, cfg.base) if cfg.init and read_state(work / "state.pt") is None else None
    model = model.to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    gen = torch.Generator().manual_seed(cfg.seed)
    state_path = work / "state.pt"
    state = Resumable(model, opt, generators={"gen": gen}, key=_resume_key(cfg), where=str(state_path),
                      error=TinyDecoderConfigError)
    step, compute, history, evals = 0, 0.0, [], []
    saved = read_state(state_path)
    if saved is not None:
        step = state.restore(saved)
        compute, history, evals = saved["compute_seconds"], saved["history"], saved["evals"]
        init = saved.get("init")
        log(f"resumed at step {step}")

    n, window = len(data["names"]), []
    while step < cfg.steps:
        t0 = time.perf_counter()
        set_lr(opt, learning_rate(cfg, step))
        idx = torch.randint(0, n, (cfg.batch,), generator=gen).tolist()
        lat, full, clip, mask = (t.to(device) for t in _crop(cfg, data, idx, gen))
        pred = model(lat)
        loss = reconstruction_loss(pred, full, mask, cfg.grad_weight)
        if cfg.clip_weight:
            loss = loss + cfg.clip_weight * reconstruction_loss(pred, clip, mask, cfg.grad_weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        step += 1
        compute += time.perf_counter() - t0
        window.append(loss.item())
        history.append(window[-1])
        if step % 25 == 0 or step == cfg.steps:
            log(f"step {step}/{cfg.steps}  loss {np.mean(window):.4f}  lr {learning_rate(cfg, step - 1):.2e}  "
                f"{compute:.0f} s")
            window = []
        if step % cfg.eval_every == 0 and step < cfg.steps:
            evals.append({"step": step, **evaluate(model, held)})
            log(f"eval step {step}: {json.dumps(evals[-1])}")
        stop_file = work / "STOP"  # touch it to interrupt a background job cleanly
        stopping = step < cfg.steps and ((should_stop is not None and should_stop(step)) or stop_file.is_file())
        if stopping or step % cfg.save_every == 0 or step == cfg.steps:
            state.save(state_path, step, compute_seconds=compute, history=history, evals=evals, init=init)
        if stopping:
            stop_file.unlink(missing_ok=True)
            log(f"stopped at step {step}; run again to continue")
            return None
    return _finish(cfg, model, held, dcfg, step, compute, cache_seconds, history, evals, log, init)


def _finish(cfg: TinyDecoderTrainConfig, model, held: dict, dcfg, step: int, compute: float, cache_seconds: float,
            history: list[float], evals: list[dict], log, init: dict | None = None) -> dict:
    """Evaluate on the held-out clips, write the decoder (config + safetensors) and its card."""
    final = evaluate(model, held)
    if not evals or evals[-1]["step"] != step:
        evals.append({"step": step, **final})
    log(f"held out: {json.dumps(final)}")
    out = Path(cfg.out)
    if init and cfg.init:
        init = lineage(init, cfg.init)
    model.eval()
    model.save(out)
    card = {"kind": "tiny-decoder", "base": cfg.base, "latent_space": cfg.base, "data": cfg.data,
            "heldout": {"seeds": f"world:{HELDOUT_SEED}+" if cfg.data.startswith("world:") else "last clips of the folder",
                        **final},
            "steps": step, "compute_seconds": round(compute, 1), "cache_seconds": round(cache_seconds, 1),
            "parameters": sum(p.numel() for p in model.parameters()),
            "gflops_per_video": round(model.flops((1, dcfg.latent_channels, (cfg.frames - 1) // 4 + 1,
                                                   cfg.height // 8, cfg.width // 8)) / 1e9, 3),
            "losses": {str(s): round(float(np.mean(history[max(s - 25, 0):s])), 5)
                       for s in sorted({*range(25, step + 1, 25), step}) if s <= len(history)}, "evals": evals,
            "init": init,
            "train": {k: v for k, v in cfg.to_dict().items() if k not in ("out", "device", "cache_dir")}}
    if init:  # folders by name, never by path
        card["train"]["init"] = init["folder"]
    if cfg.samples_checkpoint:
        card["train"]["samples_checkpoint"] = Path(cfg.samples_checkpoint).name
    if not cfg.data.startswith("world:"):
        card["data"] = Path(cfg.data).name  # never an absolute path
        card["train"]["data"] = card["data"]
    return write_card(out, card, indent=1)
