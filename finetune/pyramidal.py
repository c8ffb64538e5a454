"""Pyramidal flow-matching finetune of a pretrained Wan (pyramid.md §7; issue 5, part 2).

A flat loop over a typed config, nanoGPT style:

1. check the config (before any work: unknown base, missing data, bad ranges, a plan the base
   cannot run all raise :class:`ConfigError`)
2. load the base model and the data cache (clips encoded once, every stage resolution)
3. set up the trainable part (full or LoRA), AdamW, EMA; resume from ``out/state`` if present
4. loop: every step draws ``per_stage`` clips for every stage (an equal share per stage, or
   ``stage_shares``), builds the §7 targets, and backpropagates the mean of the stage losses
   (each the mean over its own clips, so shares change the gradient's noise, not the weights);
   clip, step, EMA
5. log the loss per stage, render a sample every ``sample_every`` steps, checkpoint every
   ``save_every`` steps and at the end (or when ``on_step`` asks to stop)

Runs unchanged under ``accelerate launch`` (the model and optimizer go through
``Accelerator.prepare``; the main process writes checkpoints).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
import random
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from finetune.targets import pyramidal_target

STATE_DIR = "state"
LORA_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")
LR_SCHEDULES = ("constant", "cosine")
STANDARD_SCHEDULES = {1: ["0-0-50"], 2: ["0-25-25", "0-10-10"], 3: ["20-20-10", "10-10-5", "4-4-2"],
                      4: ["10-10-10-10", "4-4-4-2"]}


LOW_RES = ("pixels", "latents")


class ConfigError(ValueError):
    """A training config that cannot run; ``field`` names the setting."""

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.field = field


@dataclass
class TrainConfig:
    base: str = "tiny"  # base model preset
    data: str = ""  # folder of captioned videos | prompts file (with teacher) | "world:N"
    out: str = ""  # checkpoint folder (also holds the cache and the resume state)
    name: str = ""  # checkpoint name (default: the folder name)
    steps: int = 200
    schedule: str = "20-20-10"  # stage count; recommended sampling schedule on the card
    boundaries: list[float] | None = None  # inner stage boundaries (noise levels); None: equal thirds
    frames: int = 17
    height: int = 128
    width: int = 128
    per_stage: int = 1  # clips per stage per step (batch = per_stage * stages)
    stage_shares: list[int] | None = None  # clips per step for each stage, lowest first (overrides per_stage):
    # low-resolution clips cost 1/16 and 1/4 of a full one, so the low stages can see more for little
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)
    lr_schedule: str = "constant"  # "constant" | "cosine" (to lr_min_ratio * lr at the last step)
    lr_min_ratio: float = 0.1
    warmup_steps: int = 0
    weight_decay: float = 0.0
    grad_clip: float = 1.0  # 0: off
    lora_rank: int = 0  # 0: full finetune; else LoRA of this rank on the attention projections
    lora_alpha: float | None = None  # default: the rank
    teacher_weight: float = 0.0  # lambda of the optional teacher term (full-resolution stage)
    low_res: str = "pixels"  # lower stages' clean latents: "pixels" (encode the downsampled video, the paper's
    # choice) or "latents" (down_signal of the full-resolution latent, pyramid.md's fallback)
    cond_dropout: float = 0.1  # share of samples trained on the empty prompt: classifier-free guidance
    # uses the unconditional prediction at every stage, so it must learn the new stages too
    bf16: bool = False  # autocast to bfloat16
    gradient_checkpointing: bool = False
    ema_decay: float = 0.0  # 0: off; else the checkpoint holds the EMA weights
    seed: int = 0
    save_every: int = 0  # 0: at the end only
    sample_every: int = 0  # 0: never
    sample_prompt: str = ""  # default: the first caption
    sample_schedule: str = ""  # default: one step per stage
    teacher: str | None = None  # preset that generates clips from a prompts file
    teacher_schedule: str = "0-0-8"
    teacher_guidance: float | None = None  # None: the teacher's recommended guidance (its card, else 5)
    teacher_seed: int = 1_000_000  # noise seed of the teacher's first clip (keep it apart from evaluation seeds)
    cache_dir: str | None = None  # default: <out>/cache
    device: str | None = None  # default: accelerate's choice

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "TrainConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown training setting(s): {', '.join(unknown)}", unknown[0])
        data = dict(data)
        if isinstance(data.get("betas"), list):
            data["betas"] = tuple(data["betas"])
        return cls(**data)


@dataclass
class TrainResult:
    status: str  # "done" | "cancelled"
    step: int
    out: Path
    history: list[dict]
    card: dict
    seconds: float
    cache: dict = field(default_factory=dict)


# ----------------------------------------------------------------------------- validation
def _int_in(cfg, name: str, lo: int, hi: int) -> None:
    v = getattr(cfg, name)
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise ConfigError(f"{name} must be a whole number from {lo:,} to {hi:,}; got {v!r}", name)


def _float_in(cfg, name: str, lo: float, hi: float, lo_open: bool = False) -> None:
    v = getattr(cfg, name)
    ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v))
    ok = ok and (lo < v if lo_open else lo <= v) and v <= hi
    if not ok:
        interval = f"{'(' if lo_open else '['}{lo:g}, {hi:g}]"
        raise ConfigError(f"{name} must be a number in {interval}; got {v!r}", name)


def base_transformer_config(base: str) -> dict | None:
    """The transformer config of a known preset without building it (None if unknown)."""
    from core import presets

    if base == "tiny":
        return presets.tiny_transformer_config()
    if base == "wan2.1-1.3b":
        return presets.wan13b_transformer_config()
    return None


def check_plan_fits(transformer_config: dict, plan, frames: int, height: int, width: int) -> None:
    """Refuse a stage plan the base transformer cannot run (token grid beyond its RoPE table)."""
    p_t, p_h, p_w = transformer_config.get("patch_size", (1, 2, 2))
    rope = transformer_config.get("rope_max_seq_len", 1024)
    t, h, w = plan.latent_shapes(frames, height, width)[-1]
    if h % p_h or w % p_w or t % p_t:
        raise ConfigError(f"latent {t}x{h}x{w} is not divisible by the patch {p_t}x{p_h}x{p_w}", "schedule")
    if max(t // p_t, h // p_h, w // p_w) > rope:
        raise ConfigError(
            f"{frames}x{height}x{width} gives a {t // p_t}x{h // p_h}x{w // p_w} token grid at full resolution; "
            f"the base's position table covers {rope} per axis: train smaller clips", "height")


def validate_config(cfg: TrainConfig | dict, *, check_data: bool = True) -> TrainConfig:
    """A checked copy of ``cfg`` or :class:`ConfigError` naming the setting. Loads nothing."""
    from core import RequestError, StagePlan, list_presets

    if isinstance(cfg, dict):
        cfg = TrainConfig.from_dict(cfg)
    else:
        cfg = dataclasses.replace(cfg)
    if cfg.base not in list_presets():
        raise ConfigError(f"unknown base model {cfg.base!r}; choose one of: {', '.join(list_presets())}", "base")
    _int_in(cfg, "steps", 1, 1_000_000)
    _float_in(cfg, "lr", 0.0, 1e-1, lo_open=True)
    _int_in(cfg, "per_stage", 1, 64)
    if cfg.stage_shares is not None:
        if not (isinstance(cfg.stage_shares, (list, tuple)) and all(
                isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 64 for v in cfg.stage_shares)):
            raise ConfigError(f"stage_shares must list whole numbers from 1 to 64, one per stage; "
                              f"got {cfg.stage_shares!r}", "stage_shares")
        cfg.stage_shares = [int(v) for v in cfg.stage_shares]
    if cfg.lr_schedule not in LR_SCHEDULES:
        raise ConfigError(f"lr_schedule must be one of {', '.join(LR_SCHEDULES)}; got {cfg.lr_schedule!r}",
                          "lr_schedule")
    _float_in(cfg, "lr_min_ratio", 0.0, 1.0)
    _int_in(cfg, "warmup_steps", 0, 1_000_000)
    _float_in(cfg, "weight_decay", 0.0, 1.0)
    _float_in(cfg, "grad_clip", 0.0, 1e4)
    _int_in(cfg, "lora_rank", 0, 1024)
    if cfg.lora_alpha is not None:
        _float_in(cfg, "lora_alpha", 0.0, 1e4, lo_open=True)
    _float_in(cfg, "teacher_weight", 0.0, 100.0)
    _float_in(cfg, "cond_dropout", 0.0, 0.9)
    if cfg.low_res not in LOW_RES:
        raise ConfigError(f"low_res must be one of {', '.join(LOW_RES)}; got {cfg.low_res!r}", "low_res")
    _float_in(cfg, "ema_decay", 0.0, 0.99999)
    _int_in(cfg, "seed", 0, 2**32 - 1)
    _int_in(cfg, "teacher_seed", 0, 2**62)
    if cfg.teacher_guidance is not None:
        _float_in(cfg, "teacher_guidance", 1.0, 20.0)
    _int_in(cfg, "save_every", 0, 1_000_000)
    _int_in(cfg, "sample_every", 0, 1_000_000)
    if not (isinstance(cfg.betas, (tuple, list)) and len(cfg.betas) == 2
            and all(isinstance(b, (int, float)) and 0.0 <= b < 1.0 for b in cfg.betas)):
        raise ConfigError(f"betas must be two numbers in [0, 1); got {cfg.betas!r}", "betas")
    cfg.betas = tuple(float(b) for b in cfg.betas)
    for name in ("name", "sample_prompt", "sample_schedule", "teacher_schedule"):
        if not isinstance(getattr(cfg, name), str):
            raise ConfigError(f"{name} must be text; got {getattr(cfg, name)!r}", name)
    for name in ("teacher", "cache_dir", "device"):
        if getattr(cfg, name) is not None and not isinstance(getattr(cfg, name), str):
            raise ConfigError(f"{name} must be text or null; got {getattr(cfg, name)!r}", name)
    for name in ("bf16", "gradient_checkpointing"):
        if not isinstance(getattr(cfg, name), bool):
            raise ConfigError(f"{name} must be true or false; got {getattr(cfg, name)!r}", name)
    if not isinstance(cfg.out, str) or not cfg.out.strip():
        raise ConfigError("out must name the checkpoint folder to write", "out")
    try:
        plan = StagePlan.parse(cfg.schedule, boundaries=cfg.boundaries)
        plan.validate_shape(cfg.frames, cfg.height, cfg.width)
        if cfg.sample_schedule:
            sample_plan = StagePlan.parse(cfg.sample_schedule)
            if sample_plan.num_stages != plan.num_stages:
                raise ConfigError(f"sample_schedule {cfg.sample_schedule!r} must have {plan.num_stages} stages "
                                  f"like schedule {plan.schedule!r}", "sample_schedule")
    except RequestError as exc:
        raise ConfigError(f"the stage plan cannot run: {exc}", exc.field or "schedule") from None
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"boundaries must be a list of noise levels like [0.667, 0.333] ({exc})",
                          "boundaries") from None
    if plan.num_stages < 2:
        raise ConfigError(f"schedule {cfg.schedule!r} has one stage: a pyramidal finetune needs 2 to 4", "schedule")
    if cfg.stage_shares is not None and len(cfg.stage_shares) != plan.num_stages:
        raise ConfigError(f"stage_shares has {len(cfg.stage_shares)} values; schedule {plan.schedule!r} has "
                          f"{plan.num_stages} stages", "stage_shares")
    tcfg = base_transformer_config(cfg.base)
    if tcfg is not None:
        check_plan_fits(tcfg, plan, cfg.frames, cfg.height, cfg.width)
    if not isinstance(cfg.data, str) or not cfg.data.strip():
        raise ConfigError("data is empty: give a folder of captioned videos, a prompts file or world:N", "data")
    if cfg.data.startswith("world:"):
        n = cfg.data.split(":", 1)[1]
        if not re.fullmatch(r"[0-9]{1,7}", n) or not 1 <= int(n) <= 1_000_000:
            raise ConfigError(f"data {cfg.data!r}: write world:N with N from 1 to 1,000,000", "data")
    elif check_data:
        try:
            path = Path(cfg.data).expanduser()
            exists = path.exists()
        except (OSError, ValueError, RuntimeError):
            exists = False
        if not exists:
            raise ConfigError(f"data folder {cfg.data!r} does not exist", "data")
        if path.is_file():
            if cfg.teacher is None:
                raise ConfigError(f"{cfg.data} is a prompts file: set teacher to the preset that generates clips",
                                  "teacher")
            if cfg.teacher not in list_presets():
                raise ConfigError(f"unknown teacher {cfg.teacher!r}; choose one of: {', '.join(list_presets())}",
                                  "teacher")
    return cfg


# ----------------------------------------------------------------------------- small parts
class EMA:
    """Exponential moving average of the trainable parameters (fp32 shadow copies)."""

    def __init__(self, params: list[torch.nn.Parameter], decay: float):
        self.decay = decay
        self.shadow = [p.detach().float().clone() for p in params]

    @torch.no_grad()
    def update(self, params) -> None:
        for s, p in zip(self.shadow, params):
            s.lerp_(p.detach().float(), 1.0 - self.decay)

    @torch.no_grad()
    def swap(self, params) -> None:
        """Exchange model and shadow values (call twice to undo)."""
        for s, p in zip(self.shadow, params):
            tmp = p.detach().clone()
            p.copy_(s.to(p.dtype))
            s.copy_(tmp.float())


class DataOrder:
    """Shuffled passes over ``n`` clips, drawn from the training generator; its state is saved."""

    def __init__(self, n: int, generator: torch.Generator):
        self.n, self.generator = n, generator
        self.perm: list[int] = []
        self.pos = 0
        self.epoch = 0

    def take(self, k: int) -> list[int]:
        out = []
        while len(out) < k:
            if self.pos >= len(self.perm):
                self.perm = torch.randperm(self.n, generator=self.generator).tolist()
                self.pos = 0
                self.epoch += 1
            out.append(self.perm[self.pos])
            self.pos += 1
        return out

    def state_dict(self) -> dict:
        return {"perm": list(self.perm), "pos": self.pos, "epoch": self.epoch, "n": self.n}

    def load_state_dict(self, state: dict) -> None:
        if state["n"] != self.n:
            raise ConfigError(f"the data changed since the saved state ({state['n']} clips, now {self.n}); "
                              "train into a new folder", "data")
        self.perm, self.pos, self.epoch = list(state["perm"]), int(state["pos"]), int(state["epoch"])


def trainable_named(model: torch.nn.Module) -> list[tuple[str, torch.nn.Parameter]]:
    return [(n, p) for n, p in model.named_parameters() if p.requires_grad]


def make_trainable(transformer: torch.nn.Module, cfg: TrainConfig) -> None:
    transformer.train()
    if cfg.lora_rank > 0:
        from peft import LoraConfig

        transformer.requires_grad_(False)
        transformer.add_adapter(LoraConfig(r=cfg.lora_rank, lora_alpha=cfg.lora_alpha or cfg.lora_rank,
                                           init_lora_weights="gaussian", target_modules=list(LORA_TARGETS)))
        for n, p in transformer.named_parameters():
            p.requires_grad_("lora_" in n)
    else:
        transformer.requires_grad_(True)
    if cfg.gradient_checkpointing:
        transformer.enable_gradient_checkpointing()


def _rng_state(generator: torch.Generator) -> dict:
    state = {"train": generator.get_state(), "torch": torch.get_rng_state(), "numpy": np.random.get_state(),
             "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(generator: torch.Generator, state: dict) -> None:
    generator.set_state(state["train"])
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def learning_rate(cfg: TrainConfig, step: int) -> float:
    """Learning rate for optimizer step ``step`` (0-based): linear warm-up, then constant or cosine."""
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    if cfg.lr_schedule == "cosine":
        span = max(cfg.steps - cfg.warmup_steps - 1, 1)
        t = min(max(step - cfg.warmup_steps, 0) / span, 1.0)
        return cfg.lr * (cfg.lr_min_ratio + (1 - cfg.lr_min_ratio) * 0.5 * (1 + math.cos(math.pi * t)))
    return cfg.lr


def stage_windows(plan) -> list[dict]:
    return [{"stage": s.index, "level": s.level, "sigma_start": s.sigma_start, "sigma_end": s.sigma_end}
            for s in plan.stages]


def recommended_schedules(plan) -> list[str]:
    out = [plan.schedule]
    out += [s for s in STANDARD_SCHEDULES.get(plan.num_stages, []) if s != plan.schedule]
    return out


def resume_key(cfg: TrainConfig) -> dict:
    """Settings that must not change between a run and its resumption."""
    return {k: getattr(cfg, k) for k in ("base", "schedule", "boundaries", "frames", "height", "width",
                                         "per_stage", "lora_rank", "seed", "low_res", "cond_dropout")} \
        | {"data": cfg.data} | ({"stage_shares": cfg.stage_shares} if cfg.stage_shares else {})


def latents_from_full_resolution(data) -> None:
    """Replace the lower stages' latents of ``data`` (a LatentDataset) by ``down_signal`` of the
    stage above, so that ``up(x0_low)`` is exactly the block mean of ``x0`` (pyramid.md section 7)."""
    from core.resample import down_signal

    for level in range(data.stages - 2, -1, -1):
        data.latents[level] = [down_signal(x.unsqueeze(0))[0] for x in data.latents[level + 1]]


def empty_prompt_embeds(comps, device) -> torch.Tensor:
    """``(1, L, D)``: the embedding of the empty prompt, which sampling uses as the unconditional
    (negative) prompt for classifier-free guidance."""
    from core.pipeline import PyramidalWanPipeline

    pipe = PyramidalWanPipeline.from_components(comps, name="base")
    with torch.no_grad():
        return pipe.encode("", "", False)[0].float().to(device)


def load_data(cfg: TrainConfig, comps, plan, log, should_stop=None):
    """Build (or reuse) the cache and load it in memory."""
    from finetune.data import LatentDataset, build_cache, resolve_source

    teacher, guidance = None, None
    if cfg.teacher and not cfg.data.startswith("world:") and Path(cfg.data).is_file():
        from core import load_pipeline, recommended_guidance

        teacher = load_pipeline(cfg.teacher, device=cfg.device)
        guidance = cfg.teacher_guidance if cfg.teacher_guidance is not None else recommended_guidance(cfg.teacher)
    clips, skipped = resolve_source(cfg.data, teacher=teacher, frames=cfg.frames, height=cfg.height,
                                    width=cfg.width, teacher_schedule=cfg.teacher_schedule,
                                    teacher_guidance=guidance, seed=cfg.teacher_seed if teacher else cfg.seed)
    cache_dir = Path(cfg.cache_dir) if cfg.cache_dir else Path(cfg.out) / "cache"
    report = build_cache(clips, comps, plan, (cfg.frames, cfg.height, cfg.width), cache_dir, base=cfg.base,
                         skipped=skipped, log=log, should_stop=should_stop)
    log(f"data: {report.summary()}")
    if not report.entries:
        reasons = "; ".join(f"{n}: {r}" for n, r in report.skipped[:5]) or "no clips found"
        raise ConfigError(f"no usable training clips in {cfg.data!r} ({reasons})", "data")
    return LatentDataset(cache_dir), report


# ----------------------------------------------------------------------------- training
def train(cfg: TrainConfig | dict, on_step: Callable[[dict], bool | None] | None = None,
          log: Callable[[str], None] = print, components=None) -> TrainResult:
    """Train (or resume) ``cfg``. ``on_step(info)`` is called after every step with the step,
    the loss and the loss per stage; returning True stops the run after a checkpoint."""
    from accelerate import Accelerator

    from core import StagePlan
    from core.checkpoints import save_checkpoint
    from core.presets import build_components

    # 1. check the config
    cfg = validate_config(cfg)
    t_start = time.perf_counter()
    out = Path(cfg.out).expanduser()
    plan = StagePlan.parse(cfg.schedule, boundaries=cfg.boundaries)
    cpu = cfg.device == "cpu" or (cfg.device is None and not torch.cuda.is_available())
    accelerator = Accelerator(cpu=cpu)
    device = accelerator.device
    main = accelerator.is_main_process
    torch.manual_seed(cfg.seed)

    # 2. base model and data
    comps = components or build_components(cfg.base, device)
    check_plan_fits(dict(comps.transformer.config), plan, cfg.frames, cfg.height, cfg.width)
    stop_requested = {"flag": False}

    def asked_to_stop() -> bool:
        if on_step is not None and on_step({"phase": "data"}):
            stop_requested["flag"] = True
        return stop_requested["flag"]

    if main:
        data, cache_report = load_data(cfg, comps, plan, log, should_stop=asked_to_stop)
    accelerator.wait_for_everyone()
    if not main:
        data, cache_report = load_data(cfg, comps, plan, lambda *_: None)
    if cfg.low_res == "latents":
        latents_from_full_resolution(data)
    transformer = comps.transformer
    empty_text = empty_prompt_embeds(comps, device) if cfg.cond_dropout > 0 else None
    teacher = None
    if cfg.teacher_weight > 0:
        teacher = copy.deepcopy(transformer).eval().requires_grad_(False)

    # 3. trainable part, optimizer, EMA, resume
    make_trainable(transformer, cfg)
    named = trainable_named(transformer)
    params = [p for _, p in named]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
    ema = EMA(params, cfg.ema_decay) if cfg.ema_decay > 0 else None
    generator = torch.Generator("cpu").manual_seed(cfg.seed + 7919 * accelerator.process_index)
    order = DataOrder(len(data), generator)
    step, history = 0, []
    state_dir = out / STATE_DIR
    if (state_dir / "train_state.pt").is_file():
        step, history = _load_state(state_dir, cfg, named, optimizer, ema, order, generator,
                                    accelerator.process_index)
        if main:
            log(f"resumed from step {step}")
    transformer, optimizer = accelerator.prepare(transformer, optimizer)
    if teacher is not None:
        teacher.to(device)

    meta = {"cache": {"clips": len(data), "skipped": [list(s) for s in cache_report.skipped]}, "device": device}

    def checkpoint(complete: bool) -> dict:
        model = accelerator.unwrap_model(transformer)
        card = _card(cfg, plan, step, history, meta, complete)
        if main:
            if ema is not None:
                ema.swap(params)
            try:
                was_training = model.training
                save_checkpoint(out, model.eval(), card, lora=cfg.lora_rank > 0)
                model.train(was_training)
            finally:
                if ema is not None:
                    ema.swap(params)
            _save_state(state_dir, cfg, named, optimizer, ema, order, generator, step, history,
                        accelerator.process_index)
        elif accelerator.num_processes > 1:
            _save_rng(state_dir, generator, order, accelerator.process_index)
        accelerator.wait_for_everyone()
        return card

    # 4. loop
    status = "cancelled" if stop_requested["flag"] else "done"
    card = None
    if stop_requested["flag"] and step == 0:
        log("stopped before training started")
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.bf16)
    n_stages = plan.num_stages
    shares = cfg.stage_shares or [cfg.per_stage] * n_stages
    while step < cfg.steps and status == "done":
        t0 = time.perf_counter()
        lr_now = learning_rate(cfg, step)
        for group in optimizer.param_groups:
            group["lr"] = lr_now
        stage_losses = []
        for k, stage in enumerate(plan.stages):
            idx = order.take(shares[k])
            x0, x0_low, text = data.batch(idx, k, device)
            if empty_text is not None:
                drop = (torch.rand(len(idx), generator=generator) < cfg.cond_dropout).to(device)
                text = torch.where(drop.view(-1, 1, 1), empty_text.to(text.dtype), text)
            eps = torch.randn(x0.shape, generator=generator).to(device)
            rho = torch.rand(len(idx), generator=generator).to(device)
            x, sigma, target = pyramidal_target(x0, x0_low, eps, rho, stage)
            sync = k == n_stages - 1
            ctx = accelerator.no_sync(transformer) if not sync else _nullcontext()
            with ctx:
                with autocast:
                    pred = transformer(hidden_states=x, timestep=sigma * 1000.0, encoder_hidden_states=text,
                                       return_dict=False)[0]
                pred = pred.float()
                loss = torch.mean((pred - target) ** 2)
                total = loss
                if teacher is not None and k == n_stages - 1:
                    with torch.no_grad(), autocast:
                        ref = teacher(hidden_states=x, timestep=sigma * 1000.0, encoder_hidden_states=text,
                                      return_dict=False)[0].float()
                    total = loss + cfg.teacher_weight * torch.mean((pred - ref) ** 2)
                accelerator.backward(total / n_stages)
            stage_losses.append(float(loss.detach()))
        if cfg.grad_clip > 0:
            grad_norm = float(accelerator.clip_grad_norm_(params, cfg.grad_clip))
        else:
            grad_norm = float(torch.norm(torch.stack([p.grad.norm() for p in params if p.grad is not None])))
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if ema is not None:
            ema.update(params)
        step += 1
        point = {"step": step, "loss": sum(stage_losses) / n_stages, "stages": stage_losses,
                 "grad_norm": grad_norm, "lr": lr_now, "seconds": time.perf_counter() - t0}
        history.append(point)
        stop = bool(on_step({"phase": "train", **point, "steps": cfg.steps})) if on_step is not None else False
        if cfg.sample_every and step % cfg.sample_every == 0 and main:
            _render_sample(cfg, comps, accelerator.unwrap_model(transformer), plan, data, out, step, log)
        if stop:
            status = "cancelled"
        if stop or step == cfg.steps or (cfg.save_every and step % cfg.save_every == 0):
            card = checkpoint(complete=step == cfg.steps)
            if main:
                log(f"step {step}: checkpoint written to {out}")
    if card is None and step > 0:
        card = _card(cfg, plan, step, history, meta, step >= cfg.steps)
        if not (out / "card.json").is_file():
            card = checkpoint(complete=step >= cfg.steps)
    return TrainResult(status=status, step=step, out=out, history=history, card=card or {},
                       seconds=time.perf_counter() - t_start, cache=meta["cache"])


@torch.no_grad()
def evaluate(transformer, data, plan, seed: int = 1234, draws: int = 4) -> list[float]:
    """Loss per stage on fixed draws (``draws`` per clip, same noise and rho every call), so
    that two calls compare the model and nothing else."""
    g = torch.Generator("cpu").manual_seed(seed)
    device = next(transformer.parameters()).device
    dtype = next(transformer.parameters()).dtype
    was_training = transformer.training
    transformer.eval()
    out = []
    for k, stage in enumerate(plan.stages):
        total, count = 0.0, 0
        for i in range(len(data)):
            x0, x0_low, text = data.batch([i] * draws, k, device)
            eps = torch.randn(x0.shape, generator=g).to(device)
            rho = torch.rand(draws, generator=g).to(device)
            x, sigma, target = pyramidal_target(x0, x0_low, eps, rho, stage)
            pred = transformer(hidden_states=x.to(dtype), timestep=sigma * 1000.0,
                               encoder_hidden_states=text.to(dtype), return_dict=False)[0].float()
            total += float(torch.mean((pred - target) ** 2)) * draws
            count += draws
        out.append(total / count)
    transformer.train(was_training)
    return out


class _nullcontext:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _card(cfg: TrainConfig, plan, step: int, history: list[dict], meta: dict, complete: bool) -> dict:
    first = history[0]["stages"] if history else None
    window = history[-10:]
    last = [sum(h["stages"][k] for h in window) / len(window) for k in range(plan.num_stages)] if window else None
    return {
        "base": cfg.base,
        "trained_for": "pyramidal",
        "schedule": plan.schedule,
        "stages": plan.num_stages,
        "boundaries": list(plan.boundaries),
        "windows": stage_windows(plan),
        "recommended_schedules": recommended_schedules(plan),
        "shape": [cfg.frames, cfg.height, cfg.width],
        "data": {"source": cfg.data, **meta.get("cache", {})},
        "steps": step,
        "target_steps": cfg.steps,
        "complete": complete,
        "ema": cfg.ema_decay > 0,
        "losses": {"first_per_stage": first, "last_per_stage": last},
        "compute": {"steps": step, "seconds": round(sum(h.get("seconds", 0.0) for h in history), 1),
                    "device": str(meta.get("device", ""))},
        "config": cfg.to_dict(),
    }


def _save_rng(state_dir: Path, generator, order: DataOrder, rank: int) -> None:
    state_dir.mkdir(parents=True, exist_ok=True)
    torch.save({"rng": _rng_state(generator), "order": order.state_dict()}, state_dir / f"rng_rank{rank}.pt")


def _save_state(state_dir: Path, cfg, named, optimizer, ema, order, generator, step, history, rank) -> None:
    from safetensors.torch import save_file

    state_dir.mkdir(parents=True, exist_ok=True)
    save_file({n: p.detach().cpu().contiguous() for n, p in named}, str(state_dir / "trainable.tmp"))
    os.replace(state_dir / "trainable.tmp", state_dir / "trainable.safetensors")
    _save_rng(state_dir, generator, order, rank)
    state = {"step": step, "history": history, "optimizer": optimizer.state_dict(),
             "ema": [s.cpu() for s in ema.shadow] if ema is not None else None, "key": resume_key(cfg)}
    torch.save(state, state_dir / "train_state.tmp")
    os.replace(state_dir / "train_state.tmp", state_dir / "train_state.pt")


def _load_state(state_dir: Path, cfg, named, optimizer, ema, order, generator, rank):
    from safetensors.torch import load_file

    state = torch.load(state_dir / "train_state.pt", weights_only=False)
    key = resume_key(cfg)
    if state["key"] != json.loads(json.dumps(key)) and state["key"] != key:
        changed = [k for k in key if state["key"].get(k) != key[k]]
        raise ConfigError(f"{state_dir.parent} holds a run with other settings ({', '.join(changed)}); "
                          "choose a new output folder or the same settings", changed[0] if changed else None)
    weights = load_file(str(state_dir / "trainable.safetensors"))
    with torch.no_grad():
        for n, p in named:
            p.copy_(weights[n].to(p.device, p.dtype))
    optimizer.load_state_dict(state["optimizer"])
    if ema is not None and state.get("ema") is not None:
        for s, v in zip(ema.shadow, state["ema"]):
            s.copy_(v)
    rng_file = state_dir / f"rng_rank{rank}.pt"
    if rng_file.is_file():
        rng = torch.load(rng_file, weights_only=False)
        _set_rng_state(generator, rng["rng"])
        order.load_state_dict(rng["order"])
    return int(state["step"]), list(state["history"])


@torch.no_grad()
def _render_sample(cfg, comps, model, plan, data, out: Path, step: int, log) -> Path | None:
    """A small sample with the current weights (pyramidal sampler, one step per stage by default)."""
    from core import GenerationRequest
    from core.pipeline import PyramidalWanPipeline
    from core.video import write_mp4

    was_training = model.training
    model.eval()
    try:
        pipe = PyramidalWanPipeline(model, comps.vae, comps.text_encoder, comps.tokenizer,
                                    flow_shift=comps.flow_shift, max_sequence_length=comps.max_sequence_length,
                                    fps=comps.fps, name=cfg.base, boundaries=list(plan.boundaries) or None)
        schedule = cfg.sample_schedule or "-".join(["1"] * plan.num_stages)
        req = GenerationRequest(prompt=cfg.sample_prompt or data.captions[0], model=cfg.base, schedule=schedule,
                                guidance=1.0, seed=cfg.seed, frames=cfg.frames, height=cfg.height, width=cfg.width)
        frames = pipe.generate(req, preview=False).frames
        path = out / "samples" / f"step{step:06d}.mp4"
        path.parent.mkdir(parents=True, exist_ok=True)
        write_mp4(frames, path, comps.fps)
        log(f"step {step}: sample {path}")
        return path
    except Exception as exc:  # noqa: BLE001 - a failed preview must not stop training
        log(f"step {step}: sample failed: {type(exc).__name__}: {exc}")
        return None
    finally:
        model.train(was_training)
