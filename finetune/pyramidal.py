"""Pyramidal flow-matching finetune of a pretrained Wan (pyramid.md §7).

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
``Accelerator.prepare``; the main process writes checkpoints). The shared parts (settings
checks, EMA, data order, resumable state, learning rate, the stage loss) are
:mod:`finetune.toolkit`'s.
"""

from __future__ import annotations

import copy
import dataclasses
import re
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from finetune.toolkit import (EMA, ConfigError, DataOrder, Resumable, check_fields, config_from_dict, read_state,
                              scheduled_lr, set_lr, setting, stage_loss)

__all__ = ["ConfigError", "DataOrder", "EMA", "TrainConfig", "TrainResult", "evaluate", "learning_rate", "train",
           "validate_config"]

STATE_DIR = "state"
STATE_FILE = "state.pt"
LORA_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")
LR_SCHEDULES = ("constant", "cosine")
STANDARD_SCHEDULES = {1: ["0-0-50"], 2: ["0-25-25", "0-10-10"], 3: ["20-20-10", "10-10-5", "4-4-2"],
                      4: ["10-10-10-10", "4-4-4-2"]}
LOW_RES = ("pixels", "latents")


@dataclass
class TrainConfig:
    base: str = setting("tiny", help="base model preset")
    data: str = setting("", help="folder of .mp4 + .txt / captions.jsonl, a prompts file (with --teacher), "
                                 "or world:N (the mini world, made in code)")
    out: str = setting("", help="checkpoint folder, or a name under $PWAN_DATA_DIR/checkpoints; it also holds "
                                "the cache and the resume state")
    name: str = setting("", help="checkpoint name (default: the folder name)")
    steps: int = setting(200, lo=1, hi=1_000_000, help="optimizer steps")
    schedule: str = setting("20-20-10", help="stage count, and the recommended sampling schedule on the card")
    boundaries: list[float] | None = setting(None, example="noise levels like 0.667,0.333",
                                             help="inner stage boundaries (noise levels), e.g. 0.667,0.333; "
                                                  "none: equal thirds")
    frames: int = setting(17, help="frames per training clip")
    height: int = setting(128, help="clip height in pixels")
    width: int = setting(128, help="clip width in pixels")
    per_stage: int = setting(1, lo=1, hi=64, help="clips per stage per step (batch = per_stage * stages)")
    stage_shares: list[int] | None = setting(None, lo=1, hi=64, example="whole numbers like 15,15,5",
                                             help="clips per step for each stage, lowest first (e.g. 15,15,5; "
                                                  "overrides per_stage): low-resolution clips cost 1/16 and 1/4 "
                                                  "of a full one, so the low stages can see more for little")
    lr: float = setting(1e-3, lo=0.0, hi=1e-1, lo_open=True, help="peak learning rate")
    betas: tuple[float, float] = setting((0.9, 0.999), lo=0.0, hi=1.0, hi_open=True, length=2,
                                         example="two numbers like 0.9,0.999", help="AdamW betas")
    lr_schedule: str = setting("constant", choices=LR_SCHEDULES,
                               help="constant, or cosine down to lr_min_ratio * lr at the last step")
    lr_min_ratio: float = setting(0.1, lo=0.0, hi=1.0, help="where the cosine schedule ends, as a share of lr")
    warmup_steps: int = setting(0, lo=0, hi=1_000_000, help="steps of linear learning-rate warm-up")
    weight_decay: float = setting(0.0, lo=0.0, hi=1.0, help="AdamW weight decay")
    grad_clip: float = setting(1.0, lo=0.0, hi=1e4, help="gradient norm clip (0: off)")
    lora_rank: int = setting(0, lo=0, hi=1024, help="0: full finetune; else LoRA of this rank on the "
                                                    "attention projections")
    lora_alpha: float | None = setting(None, lo=0.0, hi=1e4, lo_open=True, help="LoRA alpha (default: the rank)")
    teacher_weight: float = setting(0.0, lo=0.0, hi=100.0,
                                    help="weight of the optional teacher term at the full-resolution stage")
    low_res: str = setting("pixels", choices=LOW_RES,
                           help="lower stages' clean latents: encode the downsampled video (pixels), or block "
                                "means of the full-resolution latent (latents)")
    cond_dropout: float = setting(0.1, lo=0.0, hi=0.9,
                                  help="share of samples trained on the empty prompt: classifier-free guidance "
                                       "uses the unconditional prediction at every stage, so it must learn the "
                                       "new stages too")
    bf16: bool = setting(False, help="autocast to bfloat16")
    gradient_checkpointing: bool = setting(False, help="recompute activations in the backward pass")
    ema_decay: float = setting(0.0, lo=0.0, hi=0.99999, help="0: off; else the checkpoint holds the EMA weights")
    seed: int = setting(0, lo=0, hi=2**32 - 1, help="seed of the training draws")
    save_every: int = setting(0, lo=0, hi=1_000_000, help="checkpoint every N steps (0: at the end only)")
    sample_every: int = setting(0, lo=0, hi=1_000_000, help="render a sample every N steps (0: never)")
    sample_prompt: str = setting("", help="prompt of the samples (default: the first caption)")
    sample_schedule: str = setting("", help="schedule of the samples (default: one step per stage)")
    teacher: str | None = setting(None, help="preset that generates clips from a prompts file")
    teacher_schedule: str = setting("0-0-8", help="the teacher's sampling schedule")
    teacher_guidance: float | None = setting(None, lo=1.0, hi=20.0,
                                             help="the teacher's guidance (default: its recommended guidance)")
    teacher_seed: int = setting(1_000_000, lo=0, hi=2**62, help="noise seed of the first teacher clip (keep it "
                                                                "apart from evaluation seeds)")
    cache_dir: str | None = setting(None, help="latent cache folder (default: OUT/cache)")
    device: str | None = setting(None, help="torch device (default: accelerate's choice)")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "TrainConfig":
        return config_from_dict(cls, data)


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
    """A checked copy of ``cfg`` or :class:`ConfigError` naming the setting. Loads nothing:
    ranges and types come from the fields (:func:`finetune.toolkit.check_fields`); what spans
    several settings (the stage plan, the data source, the base's position table) is here."""
    from core import list_presets

    cfg = TrainConfig.from_dict(cfg) if isinstance(cfg, dict) else dataclasses.replace(cfg)
    if cfg.base not in list_presets():
        raise ConfigError(f"unknown base model {cfg.base!r}; choose one of: {', '.join(list_presets())}", "base")
    check_fields(cfg)
    if not cfg.out.strip():
        raise ConfigError("out must name the checkpoint folder to write", "out")
    plan = _checked_plan(cfg)
    tcfg = base_transformer_config(cfg.base)
    if tcfg is not None:
        check_plan_fits(tcfg, plan, cfg.frames, cfg.height, cfg.width)
    _check_data(cfg, check_data)
    return cfg


def _checked_plan(cfg: TrainConfig):
    """The training stage plan, refused when the shape, the sample schedule or the shares do not fit it."""
    from core import RequestError, StagePlan

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
    return plan


def _check_data(cfg: TrainConfig, check_data: bool) -> None:
    """``world:N`` with a sane N, or (``check_data``) an existing folder, or a prompts file with a teacher."""
    from core import list_presets

    if not cfg.data.strip():
        raise ConfigError("data is empty: give a folder of captioned videos, a prompts file or world:N", "data")
    if cfg.data.startswith("world:"):
        n = cfg.data.split(":", 1)[1]
        if not re.fullmatch(r"[0-9]{1,7}", n) or not 1 <= int(n) <= 1_000_000:
            raise ConfigError(f"data {cfg.data!r}: write world:N with N from 1 to 1,000,000", "data")
        return
    if not check_data:
        return
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


# ----------------------------------------------------------------------------- small parts
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
    """Build (or reuse) the cache and load it in memory (:func:`finetune.data.load_latents`)."""
    from finetune.data import load_latents

    cache_dir = Path(cfg.cache_dir) if cfg.cache_dir else Path(cfg.out) / "cache"
    return load_latents(cfg.data, comps, plan, (cfg.frames, cfg.height, cfg.width), cache_dir, base=cfg.base,
                        log=log, should_stop=should_stop, clip_teacher=cfg.teacher,
                        teacher_schedule=cfg.teacher_schedule, teacher_guidance=cfg.teacher_guidance,
                        seed=cfg.seed, teacher_seed=cfg.teacher_seed, device=cfg.device)


# ----------------------------------------------------------------------------- training
def learning_rate(cfg: TrainConfig, step: int) -> float:
    """Learning rate for optimizer step ``step`` (0-based): linear warm-up, then constant or cosine."""
    return scheduled_lr(step, lr=cfg.lr, steps=cfg.steps, schedule=cfg.lr_schedule, warmup=cfg.warmup_steps,
                        min_ratio=cfg.lr_min_ratio)


class _StopRequest:
    """Asks ``on_step`` after every step (and while the cache builds) whether to stop."""

    def __init__(self, on_step: Callable[[dict], bool | None] | None):
        self.on_step, self.requested = on_step, False

    def __call__(self, info: dict) -> bool:
        if self.on_step is not None and self.on_step(info):
            self.requested = True
        return self.requested

    def during_data(self) -> bool:
        return self({"phase": "data"})


@dataclass
class _Run:
    """The objects one training run works with, and the two things it does with them per step:
    a stage's forward and backward pass, and a checkpoint."""

    cfg: TrainConfig
    plan: Any
    accelerator: Any
    comps: Any
    data: Any
    transformer: Any
    teacher: Any
    empty_text: torch.Tensor | None
    named: list
    optimizer: Any
    generator: torch.Generator
    state: Resumable
    out: Path
    meta: dict

    def stage_backward(self, k: int, stage, clips: int, autocast) -> float:
        """Draw ``clips`` clips for stage ``k``, backpropagate its loss (over the stage count; the
        teacher term at the full-resolution stage) and return the loss."""
        cfg, device, g, last = self.cfg, self.accelerator.device, self.generator, k == self.plan.num_stages - 1
        idx = self.state.order.take(clips)
        x0, x0_low, text = self.data.batch(idx, k, device)
        if self.empty_text is not None:
            drop = (torch.rand(len(idx), generator=g) < cfg.cond_dropout).to(device)
            text = torch.where(drop.view(-1, 1, 1), self.empty_text.to(text.dtype), text)
        eps = torch.randn(x0.shape, generator=g).to(device)
        rho = torch.rand(len(idx), generator=g).to(device)
        with nullcontext() if last else self.accelerator.no_sync(self.transformer):
            out = stage_loss(self.transformer, x0, x0_low, text, eps, rho, stage, autocast)
            total = out.loss
            if self.teacher is not None and last:
                with torch.no_grad(), autocast:
                    ref = self.teacher(hidden_states=out.x, timestep=out.sigma * 1000.0, encoder_hidden_states=text,
                                       return_dict=False)[0].float()
                total = out.loss + cfg.teacher_weight * torch.mean((out.pred - ref) ** 2)
            self.accelerator.backward(total / self.plan.num_stages)
        return float(out.loss.detach())

    def checkpoint(self, step: int, history: list[dict], complete: bool) -> dict:
        """Write the checkpoint (the EMA weights when on) and the resume state; returns the card."""
        from core.checkpoints import save_checkpoint

        model = self.accelerator.unwrap_model(self.transformer)
        card = _card(self.cfg, self.plan, step, history, self.meta, complete)
        state_file = self.out / STATE_DIR / STATE_FILE
        if self.accelerator.is_main_process:
            with self.state.ema.applied(self.named) if self.state.ema is not None else nullcontext():
                was_training = model.training
                save_checkpoint(self.out, model.eval(), card, lora=self.cfg.lora_rank > 0)
                model.train(was_training)
            self.state.save(state_file, step, history=history)
        elif self.accelerator.num_processes > 1:
            self.state.save(state_file, step, rank=self.accelerator.process_index)
        self.accelerator.wait_for_everyone()
        return card


def _prepare(cfg: TrainConfig, plan, comps, stop: _StopRequest, log) -> tuple[_Run, int, list[dict]]:
    """Steps 2 and 3: data, the trainable part, AdamW, EMA, and the resumed state if any;
    returns the run, its step and its history."""
    from accelerate import Accelerator

    cpu = cfg.device == "cpu" or (cfg.device is None and not torch.cuda.is_available())
    accelerator = Accelerator(cpu=cpu)
    device, rank, out = accelerator.device, accelerator.process_index, Path(cfg.out).expanduser()
    torch.manual_seed(cfg.seed)
    if comps is None:
        from core.presets import build_components

        comps = build_components(cfg.base, device)
    check_plan_fits(dict(comps.transformer.config), plan, cfg.frames, cfg.height, cfg.width)
    if accelerator.is_main_process:
        data, report = load_data(cfg, comps, plan, log, should_stop=stop.during_data)
    accelerator.wait_for_everyone()
    if not accelerator.is_main_process:
        data, report = load_data(cfg, comps, plan, lambda *_: None)
    if cfg.low_res == "latents":
        latents_from_full_resolution(data)
    transformer = comps.transformer
    empty_text = empty_prompt_embeds(comps, device) if cfg.cond_dropout > 0 else None
    teacher = copy.deepcopy(transformer).eval().requires_grad_(False) if cfg.teacher_weight > 0 else None

    make_trainable(transformer, cfg)
    named = trainable_named(transformer)
    optimizer = torch.optim.AdamW([p for _, p in named], lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
    generator = torch.Generator("cpu").manual_seed(cfg.seed + 7919 * rank)
    state = Resumable(named, optimizer, EMA(named, cfg.ema_decay) if cfg.ema_decay > 0 else None,
                      {"train": generator}, DataOrder(len(data), generator), key=resume_key(cfg), where=str(out))
    step, history = 0, []
    saved = read_state(out / STATE_DIR / STATE_FILE)
    if saved is not None:
        step, history = state.restore(saved, path=out / STATE_DIR / STATE_FILE, rank=rank), list(saved["history"])
        if accelerator.is_main_process:
            log(f"resumed from step {step}")
    transformer, optimizer = accelerator.prepare(transformer, optimizer)
    state.optimizer = optimizer
    if teacher is not None:
        teacher.to(device)
    meta = {"cache": {"clips": len(data), "skipped": [list(s) for s in report.skipped]}, "device": device}
    return _Run(cfg, plan, accelerator, comps, data, transformer, teacher, empty_text, named, optimizer, generator,
                state, out, meta), step, history


def train(cfg: TrainConfig | dict, on_step: Callable[[dict], bool | None] | None = None,
          log: Callable[[str], None] = print, components=None) -> TrainResult:
    """Train (or resume) ``cfg``. ``on_step(info)`` is called after every step with the step,
    the loss and the loss per stage; returning True stops the run after a checkpoint."""
    from core import StagePlan

    # 1. check the config
    cfg = validate_config(cfg)
    t_start = time.perf_counter()
    plan = StagePlan.parse(cfg.schedule, boundaries=cfg.boundaries)
    stop = _StopRequest(on_step)
    # 2-3. base model, data, trainable part, optimizer, EMA, resume
    run, step, history = _prepare(cfg, plan, components, stop, log)
    main, params = run.accelerator.is_main_process, [p for _, p in run.named]

    # 4. loop
    status = "cancelled" if stop.requested else "done"
    if stop.requested and step == 0:
        log("stopped before training started")
    card = None
    autocast = torch.autocast(run.accelerator.device.type, dtype=torch.bfloat16, enabled=cfg.bf16)
    shares = cfg.stage_shares or [cfg.per_stage] * plan.num_stages
    while step < cfg.steps and status == "done":
        t0 = time.perf_counter()
        lr_now = set_lr(run.optimizer, learning_rate(cfg, step))
        stage_losses = [run.stage_backward(k, stage, shares[k], autocast) for k, stage in enumerate(plan.stages)]
        if cfg.grad_clip > 0:
            grad_norm = float(run.accelerator.clip_grad_norm_(params, cfg.grad_clip))
        else:
            grad_norm = float(torch.norm(torch.stack([p.grad.norm() for p in params if p.grad is not None])))
        run.optimizer.step()
        run.optimizer.zero_grad(set_to_none=True)
        if run.state.ema is not None:
            run.state.ema.update(run.named)
        step += 1
        point = {"step": step, "loss": sum(stage_losses) / plan.num_stages, "stages": stage_losses,
                 "grad_norm": grad_norm, "lr": lr_now, "seconds": time.perf_counter() - t0}
        history.append(point)
        asked = stop({"phase": "train", **point, "steps": cfg.steps})
        if cfg.sample_every and step % cfg.sample_every == 0 and main:
            _render_sample(cfg, run.comps, run.accelerator.unwrap_model(run.transformer), plan,
                           run.data, run.out, step, log)
        if asked:
            status = "cancelled"
        # 5. checkpoint
        if asked or step == cfg.steps or (cfg.save_every and step % cfg.save_every == 0):
            card = run.checkpoint(step, history, complete=step == cfg.steps)
            if main:
                log(f"step {step}: checkpoint written to {run.out}")
    if card is None and step > 0:
        card = _card(cfg, plan, step, history, run.meta, step >= cfg.steps)
        if not (run.out / "card.json").is_file():
            card = run.checkpoint(step, history, complete=step >= cfg.steps)
    return TrainResult(status=status, step=step, out=run.out, history=history, card=card or {},
                       seconds=time.perf_counter() - t_start, cache=run.meta["cache"])


@torch.no_grad()
def evaluate(transformer, data, plan, seed: int = 1234, draws: int = 4) -> list[float]:
    """Loss per stage on fixed draws (``draws`` per clip, same noise and rho every call), so
    that two calls compare the model and nothing else."""
    g = torch.Generator("cpu").manual_seed(seed)
    device = next(transformer.parameters()).device
    was_training = transformer.training
    transformer.eval()
    out = []
    for k, stage in enumerate(plan.stages):
        total, count = 0.0, 0
        for i in range(len(data)):
            x0, x0_low, text = data.batch([i] * draws, k, device)
            eps = torch.randn(x0.shape, generator=g).to(device)
            rho = torch.rand(draws, generator=g).to(device)
            total += float(stage_loss(transformer, x0, x0_low, text, eps, rho, stage).loss) * draws
            count += draws
        out.append(total / count)
    transformer.train(was_training)
    return out


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
