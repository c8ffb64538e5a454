"""The mini-world recipe: a small Wan trained on the procedural world, made pyramidal, then
distilled into few-step students.

Phases, each resumable from its last state (run the same command again to continue):

1. ``vae``: a small ``AutoencoderKLWan`` (:mod:`finetune.mini_vae`).
2. ``base``: assemble a diffusers-format folder: that VAE, the tiny preset's text encoder and
   word-level tokenizer, and a freshly initialised small ``WanTransformer3DModel``.
3. ``pretrain``: ordinary flow matching of the transformer (the "pretrained original").
4. ``ship``: copy the folder to ``models/mini`` (the ``mini`` preset), with a card recording the
   compute each phase took.
5. ``pyramid``: the pyramidal finetune of :mod:`finetune.pyramidal` over ``mini``, with at most
   10% of the pretraining steps, shipped as ``models/mini-pyramidal``.
6. ``distill``: few-step students (:mod:`finetune.mini_distill`): of ``mini-pyramidal`` (DMD-PT,
   DMD-PT*, adversarial) and of the original (DMD-OT at ``2-2-1``; conventional ``0-0-2`` and
   ``0-0-1``), every kept checkpoint scored; the best pyramidal student ships as
   ``models/mini-distilled``.

    python -m finetune.mini_world                       # the whole recipe (~3.5 h on a 2-core CPU)
    python -m finetune.mini_world --prebuild-pyramid-cache --threads 1   # phase 5's data, beside phase 3
    python -m finetune.mini_world --vae-steps 2 --vae-decoder-steps 1 --pretrain-steps 10 --pyramid-steps 1 \\
        --clips 4 --pyramid-clips 2 --seed-states /tmp/none --work /tmp/mini --ship /tmp/ship   # a few steps each
    python -m finetune.mini_world --distill-only --threads 1   # phase 6 alone, over the shipped models
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from .mini_distill import phase_distill
from .toolkit import (EMA, ConfigError, Resumable, add_flags, check_fields, config_from_flags, read_state,
                      scheduled_lr, set_lr, setting, write_card)
from settings import overridden

REPO = Path(__file__).resolve().parent.parent


def mini_transformer_config() -> dict:
    """About 1.2M parameters: 4 layers of width 128, text width of the tiny UMT5 encoder."""
    return dict(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=64, in_channels=16,
                out_channels=16, text_dim=32, freq_dim=64, ffn_dim=512, num_layers=4, cross_attn_norm=True,
                qk_norm="rms_norm_across_heads", rope_max_seq_len=64)


@dataclass
class RecipeConfig:
    """The mini-world recipe. The measurements behind the pyramid phase's settings (clips, windows,
    stage shares, jump, guidance) are in docs/experiments.md."""

    work: str = setting("data/mini", help="folder of every phase's resumable state")
    ship: str = setting(str(REPO / "models"), help="mini/ and mini-pyramidal/ are written here")
    seed_states: str = setting(str(REPO / "models" / "mini-work"), help="committed partial states to start from")
    vae_steps: int = setting(2050, lo=0, help="VAE steps, encoder and decoder together")
    vae_decoder_steps: int = setting(800, lo=0, help="then the decoder alone, so the latents the transformer "
                                                     "learns do not move")
    pretrain_steps: int = setting(16000, lo=0, help="flow-matching steps of the original")
    pyramid_steps: int = setting(1600, lo=0, help="pyramidal finetune steps (about 10%% of pretraining)")
    pyramid_schedule: str = setting("20-20-10", help="the finetune's stage plan")
    clips: int = setting(1024, lo=1, help="world clips (seeds 0..clips-1) the original trains on")
    pyramid_clips: int = setting(1024, lo=1, help="world clips of the pyramidal finetune (the original's own)")
    encode_batch: int = setting(16, lo=1, help="clips per VAE call when caching latents (batching is "
                                                "about 4x faster on a CPU)")
    batch: int = setting(16, lo=1, help="clips per pretraining step")
    lr: float = setting(1e-3, lo=0, lo_open=True, help="pretraining peak learning rate")
    lr_min_ratio: float = setting(0.1, lo=0, hi=1, help="cosine decay to lr * this at the last step")
    warmup: int = setting(500, lo=0, help="pretraining warm-up steps")
    ema: float = setting(0.999, lo=0, hi=1, help="the shipped original is the EMA of its weights")
    pyramid_ema: float = setting(0.995, lo=0, hi=1, help="shorter horizon: the finetune is short, its EMA "
                                                         "must forget the start")
    pyramid_boundaries: str = setting("0.8,0.5", help="the stage windows' inner noise levels: full "
                                                      "resolution starts at 0.74 after the jump")
    pyramid_stage_shares: str = setting("30,30,5", help="clips per step for each stage, lowest first: the "
                                                        "low stages, where the errors come from, are cheap")
    pyramid_jump: str = setting("carry", choices=("carry", "fresh"),
                                help="the card's hand-over between stages: carry the low stage's noise "
                                     "(pyramid.md §5) or renoise its clean estimate")
    pyramid_bf16: bool = setting(False, help="bfloat16 autocast for the finetune (emulated, about 10x "
                                             "slower, on CPUs without avx512_bf16)")
    pyramid_low_res: str = setting("pixels", choices=("pixels", "latents"),
                                   help="how the lower stages' clean latents are made "
                                        "(finetune.pyramidal.TrainConfig.low_res)")
    pyramid_cond_dropout: float = setting(0.0, lo=0, hi=1, help="the finetune leaves the low stages' "
                                                                "unconditional branch untrained")
    pyramid_guidance: str = setting("1,1,1.5", help="the card's guidance per stage: none on the low stages, "
                                                    "whose unconditional branch never trained")
    distill_runs: str = setting("dmd-pt-star:2-2-1,dmd-pt:2-2-1,adversarial:2-2-1,dmd-ot:2-2-1,dmd-ot:0-0-2,"
                                "dmd-ot:0-0-1", help="the students to distil, method:plan each (the best "
                                                     "pyramidal one ships as mini-distilled)")
    distill_steps: int = setting(150, lo=0, help="generator steps of each distillation (0: no students); "
                                                       "every student of 300-step runs peaked by step 75")
    distill_snapshots: int = setting(2, lo=1, help="checkpoints kept and scored per distillation")
    distill_batch: int = setting(0, lo=0, help="prompts per distillation step (0: each method's own)")
    distill_clips: int = setting(256, lo=1, help="world clips whose captions are the prompts (and dmd-ot's "
                                                 "low-resolution finetune data)")
    distill_pairs: int = setting(512, lo=1, help="teacher samples from fixed noise (adversarial)")
    distill_eval_clips: int = setting(96, lo=1, help="clips that score each kept checkpoint")
    bf16: bool = setting(True, help="bfloat16 autocast for pretraining (fp32 master weights)")
    cond_dropout: float = setting(0.1, lo=0, hi=1, help="share of unconditional samples, for guidance")
    shift: float = setting(3.0, lo=0, lo_open=True, help="timestep shift of training and sampling")
    guidance: float = setting(1.5, lo=0, help="the cards' guidance: what requests get by default")
    save_every: int = setting(100, lo=1, help="steps between resumable states")
    threads: int = setting(0, lo=0, help="torch threads (0: torch's default)")
    seed: int = setting(0, lo=0, help="seed of every phase")
    vae_crop: int = setting(32, lo=8, help="VAE training crop size in pixels")
    vae_crop_frames: int = setting(17, lo=1, help="VAE training crop length in frames")
    transformer: dict = setting(factory=mini_transformer_config, cli=False)


# ---------------------------------------------------------------------------------- phases
def phase_vae(cfg: RecipeConfig, log) -> Path:
    from .mini_vae import VAEConfig, train

    out = Path(cfg.work) / "vae"
    seed = Path(cfg.seed_states) / "vae"
    total = cfg.vae_steps + cfg.vae_decoder_steps
    shipped = Path(cfg.ship) / "mini" / "vae"
    if not (out / "summary.json").exists() and not (out / "state.pt").exists():
        if (seed / "state.pt").is_file():  # a committed partial state (weights only)
            shutil.copytree(seed, out, dirs_exist_ok=True)
            log(f"starting the VAE from the committed state in {seed}")
        elif (seed / "summary.json").is_file() and (shipped / "config.json").is_file() \
                and _summary_step(seed) >= total:  # the finished phase: its summary, and the shipped VAE
            out.mkdir(parents=True, exist_ok=True)
            shutil.copy(seed / "summary.json", out / "summary.json")
            shutil.copytree(shipped, out / "vae")
            log(f"the VAE phase is done: the shipped {shipped} ({_summary_step(seed)} steps)")
    if not (out / "vae" / "config.json").is_file() or max(_state_step(out / "state.pt"), _summary_step(out)) < total:
        train(VAEConfig(out=str(out), steps=cfg.vae_steps, decoder_steps=cfg.vae_decoder_steps,
                        crop=cfg.vae_crop, crop_frames=cfg.vae_crop_frames,
                        threads=cfg.threads, seed=cfg.seed, save_every=min(50, cfg.vae_steps),
                        eval_every=max(1, min(200, cfg.vae_steps)), eval_clips=min(16, cfg.clips),
                        stats_clips=min(64, cfg.clips)), log=log)
    return out / "vae"


def phase_base(cfg: RecipeConfig, vae_dir: Path, log) -> Path:
    from diffusers import WanTransformer3DModel

    from core.presets import build_components

    base = Path(cfg.work) / "base"
    if (base / "transformer" / "config.json").is_file():
        return base
    tmp = base.with_name("base.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    comps = build_components("tiny", "cpu")
    comps.text_encoder.save_pretrained(str(tmp / "text_encoder"))
    comps.tokenizer.save_pretrained(str(tmp / "tokenizer"))
    shutil.copytree(vae_dir, tmp / "vae")
    torch.manual_seed(cfg.seed)
    WanTransformer3DModel(**cfg.transformer).save_pretrained(str(tmp / "transformer"))
    (tmp / "card.json").write_text(json.dumps({"flow_shift": cfg.shift, "max_sequence_length": 64}))
    tmp.replace(base)
    log(f"assembled the base folder {base}")
    return base


def _summary_step(folder: Path) -> int:
    try:
        return int(json.loads((folder / "summary.json").read_text())["steps"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0


def _state_step(path: Path) -> int:
    if not path.exists():
        return 0
    return int(torch.load(path, weights_only=False, map_location="cpu")["step"])


@torch.no_grad()
def encode_world(pipe, count: int, cache: Path, log, batch: int = 16) -> dict:
    """Normalised VAE latents of world clips ``0..count-1`` and the text embeddings of their captions."""
    from .data import encode_video, to_video_tensor
    from .world import make_clip

    if cache.exists():
        data = torch.load(cache, weights_only=False)
        if data["latents"].shape[0] >= count:
            return data
    latents, captions = [], []
    for start in range(0, count, batch):
        clips = [make_clip(i) for i in range(start, min(count, start + batch))]
        latents.extend(encode_video(pipe.vae, torch.stack([to_video_tensor(frames) for frames, _, _ in clips])))
        captions.extend(text for _, text, _ in clips)
        if len(latents) % 256 < batch:
            log(f"encoded {len(latents)}/{count} clips")
    vocab = sorted(set(captions))
    embeds = torch.cat([pipe.encode(t, "", False)[0] for t in vocab] + [pipe.encode("", "", False)[0]])
    data = {"latents": torch.stack(latents), "caption_index": torch.tensor([vocab.index(c) for c in captions]),
            "captions": vocab, "embeds": embeds}  # the last embedding is the empty prompt
    torch.save(data, cache)
    return data


def phase_pretrain(cfg: RecipeConfig, base: Path, log) -> dict:
    """Flow matching ``x = (1 - sigma) x0 + sigma eps``, target ``eps - x0`` (Wan's convention)."""
    from core.pipeline import PyramidalWanPipeline
    from core.plan import shift_sigma
    from core.presets import Components, _load_folder

    work = Path(cfg.work) / "pretrain"
    work.mkdir(parents=True, exist_ok=True)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    transformer, vae, text_encoder, tokenizer = _load_folder(str(base), torch.device("cpu"), torch.float32)
    pipe = PyramidalWanPipeline.from_components(
        Components(transformer, vae, text_encoder, tokenizer, max_sequence_length=64), name="mini")
    data = encode_world(pipe, cfg.clips, work / "latents.pt", log, batch=cfg.encode_batch)
    data = {k: v.to(device) if torch.is_tensor(v) else v for k, v in data.items()}
    model = transformer.to(device).train().requires_grad_(True)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.01)
    gen = torch.Generator().manual_seed(cfg.seed)
    state = Resumable(model, opt, EMA(model.state_dict().items(), cfg.ema, warmup=True), {"gen": gen})
    step, seconds, history = 0, 0.0, []
    state_path = work / "state.pt"
    saved = read_state(state_path)
    if saved is not None:
        step = state.restore(saved)
        seconds, history = saved["seconds"], saved["history"]
        log(f"pretrain resumed at step {step}")
    n_empty = data["embeds"].shape[0] - 1
    while step < cfg.pretrain_steps:
        t0 = time.perf_counter()
        lr = set_lr(opt, scheduled_lr(step, lr=cfg.lr, steps=cfg.pretrain_steps, warmup=cfg.warmup,
                                      min_ratio=cfg.lr_min_ratio, overlap=True))
        idx = torch.randint(0, data["latents"].shape[0], (cfg.batch,), generator=gen)
        drop = torch.rand(cfg.batch, generator=gen) < cfg.cond_dropout
        sigma = shift_sigma(torch.rand(cfg.batch, generator=gen), cfg.shift).view(-1, 1, 1, 1, 1).to(device)
        x0 = data["latents"][idx.to(device)]
        eps = torch.randn(x0.shape, generator=gen).to(device)  # drawn on the CPU: same stream on any device
        cap = data["caption_index"][idx.to(device)].clone()
        cap[drop.to(device)] = n_empty
        x = (1 - sigma) * x0 + sigma * eps
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.bf16):
            pred = model(hidden_states=x, timestep=sigma.flatten() * 1000,
                         encoder_hidden_states=data["embeds"][cap], return_dict=False)[0]
        loss = (pred.float() - (eps - x0)).pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        state.ema.update(model.state_dict().items(), step=step)
        seconds += time.perf_counter() - t0
        history.append(round(loss.item(), 5))
        if step % 50 == 0 or step == cfg.pretrain_steps:
            log(f"pretrain step {step}/{cfg.pretrain_steps} loss {np.mean(history[-50:]):.4f} lr {lr:.2e} "
                f"({seconds / step:.2f}s/step)")
        if step % cfg.save_every == 0 or step == cfg.pretrain_steps:
            state.save(state_path, step, seconds=seconds, history=history)
    model.load_state_dict(state.ema.shadow)  # ship the moving average
    model.cpu().eval().requires_grad_(False)
    model.save_pretrained(str(work / "transformer"))
    return {"steps": step, "cpu_seconds": seconds, "final_loss": float(np.mean(history[-50:])) if history else None}


def phase_ship(cfg: RecipeConfig, base: Path, pretrain: dict, vae_summary: dict, log, vae_dir: Path | None = None) -> Path:
    ship = Path(cfg.ship) / "mini"
    tmp = ship.with_name("mini.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    for part in ("text_encoder", "tokenizer"):
        shutil.copytree(base / part, tmp / part)
    # the VAE phase's latest folder: the same encoder as the base's, perhaps a longer-trained decoder
    shutil.copytree(vae_dir or base / "vae", tmp / "vae")
    shutil.copytree(Path(cfg.work) / "pretrain" / "transformer", tmp / "transformer")
    card = {"flow_shift": cfg.shift, "max_sequence_length": 64, "guidance": cfg.guidance,
            "world": "simple (finetune.world.WorldConfig)",
            "compute": {"vae": {"steps": vae_summary.get("steps"), "cpu_seconds": vae_summary.get("cpu_seconds"),
                                "held_out_psnr_db": vae_summary.get("psnr")},
                        "pretrain": pretrain},
            "recipe": {k: v for k, v in asdict(cfg).items() if k not in ("work", "ship")}}
    write_card(tmp, card)
    shutil.rmtree(ship, ignore_errors=True)
    tmp.replace(ship)
    log(f"shipped the mini preset to {ship}")
    return ship


def _numbers(text, kind=float) -> list:
    """``"0.8,0.5"`` -> ``[0.8, 0.5]`` (the recipe's list settings, one string each on the CLI)."""
    return [kind(v) for v in str(text).split(",")]


def pyramid_config(cfg: RecipeConfig, out: Path):
    from .pyramidal import TrainConfig

    return TrainConfig(base="mini", data=f"world:{cfg.pyramid_clips}", out=str(out), name="mini-pyramidal",
                       steps=cfg.pyramid_steps, schedule=cfg.pyramid_schedule, seed=cfg.seed,
                       boundaries=_numbers(cfg.pyramid_boundaries) if cfg.pyramid_boundaries else None,
                       per_stage=max(1, cfg.batch // 3), lr=min(cfg.lr, 2e-4), lr_schedule="cosine",
                       stage_shares=_numbers(cfg.pyramid_stage_shares, int) if cfg.pyramid_stage_shares else None,
                       low_res=cfg.pyramid_low_res, cond_dropout=cfg.pyramid_cond_dropout,
                       warmup_steps=min(100, cfg.pyramid_steps // 10), bf16=cfg.pyramid_bf16,
                       ema_decay=cfg.pyramid_ema if cfg.pyramid_steps >= 100 else 0.0,
                       save_every=min(100, cfg.pyramid_steps), cache_dir=str(Path(cfg.work) / "pyramid-cache"))


def prebuild_pyramid_cache(cfg: RecipeConfig, log) -> None:
    """Encode the finetune's pixel pyramids from the base folder (same VAE and text encoder as
    ``mini``), e.g. on one core while pretraining runs on the other; the finetune then reuses them."""
    from core.plan import StagePlan
    from core.presets import Components, _load_folder

    from .data import build_cache, world_clips

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    tcfg = pyramid_config(cfg, Path(cfg.ship) / "mini-pyramidal")
    transformer, vae, text_encoder, tokenizer = _load_folder(str(Path(cfg.work) / "base"), torch.device("cpu"),
                                                             torch.float32)
    comps = Components(transformer, vae, text_encoder, tokenizer, max_sequence_length=64)
    report = build_cache(world_clips(cfg.pyramid_clips), comps, StagePlan.parse(tcfg.schedule),
                         (tcfg.frames, tcfg.height, tcfg.width), tcfg.cache_dir, base="mini", log=log,
                         batch=cfg.encode_batch)
    log(report.summary())


def pyramid_guidance_card(cfg: RecipeConfig) -> dict:
    """The pyramidal card's recommendation: ``guidance`` (one value, for plans with another stage
    count) and, when ``pyramid_guidance`` lists one value per stage, ``guidance_per_stage``."""
    values = _numbers(cfg.pyramid_guidance)
    if len(values) == 1:
        return {"guidance": values[0]}
    return {"guidance": values[-1], "guidance_per_stage": values}


def check_pyramid_settings(cfg: RecipeConfig) -> None:
    from core.sampler import JUMPS

    if cfg.pyramid_steps > max(1, cfg.pretrain_steps // 10):
        raise ValueError("the pyramidal finetune may take at most 10% of the pretraining steps")
    if cfg.pyramid_jump not in JUMPS:
        raise ValueError(f"pyramid_jump must be one of {', '.join(JUMPS)}; got {cfg.pyramid_jump!r}")


def phase_pyramid(cfg: RecipeConfig, ship: Path, log) -> Path:
    check_pyramid_settings(cfg)
    with overridden(PWAN_MINI_PATH=str(ship)):  # the finetune loads the mini model from ``ship``
        return _pyramid(cfg, log)


def _pyramid(cfg: RecipeConfig, log) -> Path:
    from .pyramidal import train

    out = Path(cfg.ship) / "mini-pyramidal"
    card_path = out / "card.json"
    card = json.loads(card_path.read_text()) if card_path.is_file() else {}
    if card.get("complete") and card.get("steps") == cfg.pyramid_steps and not (out / "state").exists():
        log(f"the pyramidal finetune is done: {out} ({card['steps']} steps)")
    else:
        result = train(pyramid_config(cfg, out), log=log)
        if result.status == "done":
            shutil.rmtree(out / "state", ignore_errors=True)  # the resume state is not shipped
        log(f"pyramidal finetune: {result.status} after {result.step} steps -> {out}")
        card = json.loads(card_path.read_text())
    card.pop("guidance_per_stage", None)  # a single recommended value replaces an earlier list
    card.update(pyramid_guidance_card(cfg), jump=cfg.pyramid_jump)
    write_card(out, card)
    return out


def run(cfg: RecipeConfig, log=print) -> dict:
    from .mini_distill import parse_runs

    check_pyramid_settings(cfg)  # before hours of the earlier phases
    parse_runs(cfg.distill_runs)
    vae_dir = phase_vae(cfg, log)
    vae_summary = json.loads((vae_dir.parent / "summary.json").read_text())
    base = phase_base(cfg, vae_dir, log)
    pretrain = phase_pretrain(cfg, base, log)
    ship = phase_ship(cfg, base, pretrain, vae_summary, log, vae_dir=vae_dir)
    pyramid = phase_pyramid(cfg, ship, log)
    distilled = phase_distill(cfg, ship, log)
    return {"mini": str(ship), "mini_pyramidal": str(pyramid), "pretrain": pretrain,
            "vae_psnr_db": vae_summary.get("psnr"), "mini_distilled": (distilled or {}).get("shipped")}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m finetune.mini_world", description=__doc__.splitlines()[0])
    add_flags(ap, RecipeConfig, skip=("transformer",))
    ap.add_argument("--prebuild-pyramid-cache", action="store_true",
                    help="only encode the pyramidal finetune's data (needs the base phase done)")
    ap.add_argument("--distill-only", action="store_true",
                    help="only the distillation phase, over the mini and mini-pyramidal models in --ship")
    args = ap.parse_args(argv)
    prebuild, distill_only = args.prebuild_pyramid_cache, args.distill_only
    cfg = config_from_flags(RecipeConfig, args)
    try:
        check_fields(cfg)
    except ConfigError as exc:
        ap.error(str(exc))
    log = lambda m: print(m, flush=True)  # noqa: E731
    if prebuild:
        prebuild_pyramid_cache(cfg, log)
        return 0
    if distill_only:
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        print(json.dumps(phase_distill(cfg, Path(cfg.ship) / "mini", log), default=str))
        return 0
    print(json.dumps(run(cfg, log=log)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
