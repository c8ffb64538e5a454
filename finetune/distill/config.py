"""The settings of a distillation run, and what each method implies (distill.md).

| method | teacher | noising of the student's sample | x0 conversion |
|---|---|---|---|
| ``dmd-ot`` | the original (briefly finetuned on the low resolutions) | forward process at the stage's resolution | plain |
| ``dmd-pt`` | the pyramidal model | along the stage's own path | exact per band |
| ``dmd-pt-star`` | the pyramidal model | along the stage's own path | plain (the paper's final recipe) |
| ``adversarial`` | the pyramidal model, as a frozen feature extractor | along the stage's own path | plain |

A one-stage student plan (``0-0-2``, ``0-0-1``) with ``dmd-ot`` is the conventional student.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from pathlib import Path

from finetune.toolkit import ConfigError, check_fields, config_from_dict, setting

METHODS = ("dmd-ot", "dmd-pt", "dmd-pt-star", "adversarial")
LABELS = {"dmd-ot": "DMD-OT", "dmd-pt": "DMD-PT", "dmd-pt-star": "DMD-PT*", "adversarial": "adversarial"}
TEACH_LOSSES = ("mse", "cauchy")


@dataclass(frozen=True)
class MethodSpec:
    teacher: str  # "original" | "pyramidal"
    path: bool  # noise along the stage's own path (else the conventional forward process)
    conversion: str  # core.fewstep.CONVERSIONS
    adversarial: bool = False


SPECS = {
    "dmd-ot": MethodSpec("original", path=False, conversion="plain"),
    "dmd-pt": MethodSpec("pyramidal", path=True, conversion="exact"),
    "dmd-pt-star": MethodSpec("pyramidal", path=True, conversion="plain"),
    "adversarial": MethodSpec("pyramidal", path=True, conversion="plain", adversarial=True),
}


@dataclass
class DistillConfig:
    method: str = setting("dmd-pt-star", choices=METHODS, help="dmd-ot (original teacher), dmd-pt (pyramidal "
                          "teacher, exact x0), dmd-pt-star (pyramidal teacher, plain x0) or adversarial")
    base: str = setting("tiny", help="base model preset: the original model")
    teacher: str = setting("", help="the pyramidal teacher's checkpoint folder (dmd-pt, dmd-pt-star, "
                                    "adversarial); dmd-ot's teacher is the base model")
    student_init: str = setting("", help="checkpoint folder the student starts from (default: a copy of the "
                                         "teacher; dmd-ot's pyramidal students start better from the pyramidal "
                                         "model, which knows the stages' jumps)")
    student_plan: str = setting("2-2-1", help="the student's steps per stage, lowest resolution first "
                                              "(2-2-1, 1-1-1; 0-0-2 or 0-0-1: a conventional student)")
    boundaries: list[float] | None = setting(None, example="noise levels like 0.8,0.5",
                                             help="the student's stage windows (default: the pyramidal "
                                                  "teacher's; dmd-ot: equal thirds)")
    data: str = setting("", help="world:N, a folder of captioned videos, or a prompts file (rendered by the "
                                 "base model): the prompts, and the clips of dmd-ot's low-resolution finetune")
    out: str = setting("", help="checkpoint folder, or a name under $PWAN_DATA_DIR/checkpoints; it also holds "
                                "the cache, the teacher pairs and the resume state")
    name: str = setting("", help="checkpoint name (default: the folder name)")
    steps: int = setting(200, lo=1, hi=1_000_000, help="generator steps")
    critic_steps: int = setting(5, lo=1, hi=100, help="critic (or discriminator) steps per generator step (TTUR)")
    warmup: int = setting(0, lo=0, hi=1_000_000, help="critic-only steps before the first generator step")
    batch: int = setting(8, lo=1, hi=256, help="prompts per step")
    lr: float = setting(2e-5, lo=0.0, hi=1e-1, lo_open=True, help="the student's learning rate")
    critic_lr: float | None = setting(None, lo=0.0, hi=1e-1, lo_open=True,
                                      help="the critic's learning rate (default: lr; keep them within 4x)")
    betas: tuple[float, float] = setting((0.0, 0.999), lo=0.0, hi=1.0, hi_open=True, length=2,
                                         example="two numbers like 0,0.999", help="AdamW betas of both")
    weight_decay: float = setting(0.01, lo=0.0, hi=1.0, help="AdamW weight decay of both")
    grad_clip: float = setting(1.0, lo=0.0, hi=1e4, help="gradient norm clip of both (0: off)")
    ema_decay: float = setting(0.99, lo=0.0, hi=0.99999, help="EMA of the student after warm-up (0: off); the "
                                                              "checkpoints hold the EMA weights")
    lora_rank: int = setting(0, lo=0, hi=1024, help="0: train the student and critic fully; else LoRA of this "
                                                    "rank (merged into the student's checkpoint)")
    lora_alpha: float | None = setting(None, lo=0.0, hi=1e4, lo_open=True, help="LoRA alpha (default: the rank)")
    gradient_checkpointing: bool = setting(False, help="recompute activations in the backward pass")
    teacher_guidance: list[float] | None = setting(None, lo=1.0, hi=20.0, example="1,1,1.5",
                                                   help="the teacher's guidance, one value or one per student "
                                                        "stage (default: the teacher card's recommendation)")
    level_clamp: float = setting(0.02, lo=0.0, hi=0.4, hi_open=True,
                                 help="DMD's noise level is drawn inside [clamp, 1 - clamp] of the exit stage's "
                                      "window")
    teach_weight: float = setting(0.0, lo=0.0, hi=100.0, help="weight of L_teach: the student against the "
                                                              "teacher's many-step sample from the same noise")
    teach_loss: str = setting("mse", choices=TEACH_LOSSES, help="L_teach's form: mse or cauchy log(1 + |.|^2)")
    adv_weight: float = setting(1.0, lo=0.0, hi=100.0, help="adversarial: the generator's hinge term")
    recon_weight: float = setting(2.0, lo=0.0, hi=100.0, help="adversarial: reconstruction of the teacher's "
                                                              "sample from the same noise")
    r1_weight: float = setting(0.0, lo=0.0, hi=1e4, help="adversarial: approximate R1 on real samples (0: off)")
    adv_blocks: list[int] | None = setting(None, lo=0, hi=1000, example="block numbers like 1,2,3",
                                           help="adversarial: teacher blocks whose tokens the head reads "
                                                "(default: the last three)")
    pairs: int = setting(0, lo=0, hi=1_000_000, help="teacher samples precomputed from fixed noise for "
                                                     "L_teach and the adversarial method (0: 4 x batch when needed)")
    pair_schedule: str = setting("", help="the teacher's schedule for the pairs (default: 20-20-10 for a "
                                          "pyramidal teacher, 0-0-50 for the original)")
    ot_steps: int = setting(300, lo=0, hi=1_000_000, help="dmd-ot: flow-matching steps of the original on the "
                                                          "lower stages' clips before it is frozen")
    ot_lr: float = setting(1e-4, lo=0.0, hi=1e-1, lo_open=True, help="dmd-ot: that finetune's learning rate")
    frames: int = setting(17, help="frames of the student's videos")
    height: int = setting(128, help="their height in pixels")
    width: int = setting(128, help="their width in pixels")
    seed: int = setting(0, lo=0, hi=2**32 - 1, help="seed of the training draws")
    save_every: int = setting(0, lo=0, hi=1_000_000, help="checkpoint every N generator steps, each kept under "
                                                          "OUT/steps/ (0: at the end only)")
    cache_dir: str | None = setting(None, help="latent cache folder (default: OUT/cache)")
    device: str | None = setting(None, help="torch device (default: CUDA when there is one)")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "DistillConfig":
        return config_from_dict(cls, data)

    @property
    def spec(self) -> MethodSpec:
        return SPECS[self.method]

    def uses_pairs(self) -> bool:
        return self.spec.adversarial or self.teach_weight > 0

    def pair_count(self) -> int:
        return self.pairs or 4 * self.batch


def student_plan(cfg: DistillConfig, boundaries=None):
    """The student's stage plan (guidance 1, levels uniform in u), or ConfigError."""
    from core import RequestError, StagePlan

    try:
        plan = StagePlan.parse(cfg.student_plan, boundaries=boundaries, guidance=1.0, grid="uniform")
        plan.validate_shape(cfg.frames, cfg.height, cfg.width)
    except RequestError as exc:
        raise ConfigError(f"the student plan cannot run: {exc}",
                          "boundaries" if exc.field == "boundaries" else "student_plan") from None
    return plan


def validate_config(cfg: DistillConfig | dict, *, check_data: bool = True) -> DistillConfig:
    """A checked copy of ``cfg`` or ConfigError naming the setting; loads no model."""
    from core import list_presets

    cfg = DistillConfig.from_dict(cfg) if isinstance(cfg, dict) else dataclasses.replace(cfg)
    if cfg.base not in list_presets():
        raise ConfigError(f"unknown base model {cfg.base!r}; choose one of: {', '.join(list_presets())}", "base")
    check_fields(cfg)
    if not cfg.out.strip():
        raise ConfigError("out must name the checkpoint folder to write", "out")
    plan = student_plan(cfg, cfg.boundaries)
    if cfg.spec.teacher == "pyramidal":
        if plan.num_stages < 2:
            raise ConfigError(f"{cfg.method} distils a pyramidal teacher into a pyramidal student: plan "
                              f"{cfg.student_plan} has one stage (a conventional student is dmd-ot)", "student_plan")
        if not cfg.teacher.strip():
            raise ConfigError(f"{cfg.method} needs the pyramidal teacher's checkpoint folder", "teacher")
        if check_data and not (Path(cfg.teacher).expanduser() / "card.json").is_file():
            raise ConfigError(f"teacher {cfg.teacher!r} is not a checkpoint folder (no card.json)", "teacher")
    elif cfg.teacher.strip():
        raise ConfigError("dmd-ot's teacher is the base model: leave teacher empty", "teacher")
    if cfg.student_init.strip() and check_data and not (Path(cfg.student_init).expanduser() / "card.json").is_file():
        raise ConfigError(f"student_init {cfg.student_init!r} is not a checkpoint folder (no card.json)",
                          "student_init")
    if cfg.teacher_guidance is not None and len(cfg.teacher_guidance) not in (1, plan.num_stages):
        raise ConfigError(f"teacher_guidance needs one value or one per stage ({plan.num_stages})",
                          "teacher_guidance")
    if cfg.critic_lr is not None and not 0.25 <= cfg.critic_lr / cfg.lr <= 4.0:
        raise ConfigError(f"critic_lr {cfg.critic_lr:g} and lr {cfg.lr:g} are more than 4x apart; DMD diverges "
                          "when one outruns the other", "critic_lr")
    if cfg.pair_schedule:
        from core import RequestError, StagePlan

        try:
            StagePlan.parse(cfg.pair_schedule)
        except RequestError as exc:
            raise ConfigError(f"pair_schedule: {exc}", "pair_schedule") from None
    _check_data(cfg, check_data)
    return cfg


def _check_data(cfg: DistillConfig, check_data: bool) -> None:
    if not cfg.data.strip():
        raise ConfigError("data is empty: give world:N, a folder of captioned videos or a prompts file", "data")
    if cfg.data.startswith("world:"):
        n = cfg.data.split(":", 1)[1]
        if not re.fullmatch(r"[0-9]{1,7}", n) or not 1 <= int(n) <= 1_000_000:
            raise ConfigError(f"data {cfg.data!r}: write world:N with N from 1 to 1,000,000", "data")
        return
    if check_data and not Path(cfg.data).expanduser().exists():
        raise ConfigError(f"data {cfg.data!r} does not exist", "data")
