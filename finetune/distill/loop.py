"""Step distillation into a few-step student (distill.md), as a flat loop over a typed config:

1. check the config (before any work)
2. load the base, the teacher (dmd-ot: the original, first finetuned on the lower stages' clips),
   the prompts' cache, and the teacher's samples from fixed noise when the method needs them
3. the student and the critic (copies of the teacher), their AdamW, the student's EMA; resume
   from ``OUT/state`` if present
4. loop: every iteration a critic step on a fresh student sample (backward simulation: the levels
   before a random exit level run without gradients); after ``warmup`` iterations, every
   ``critic_steps``-th iteration also a generator step (TTUR)
5. log the losses and statistics of distill.md's "What to log"; checkpoint every ``save_every``
   generator steps (each kept under ``OUT/steps/``: DMD students often peak early) and at the end

The student's checkpoint card locks its recipe (:class:`core.fewstep.FewStepRecipe`).
"""

from __future__ import annotations

import json
import math
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from core.fewstep import FewStepRecipe, rollout, sample_fewstep, to_x0
from core.resample import HAAR
from finetune.toolkit import EMA, DataOrder, Resumable, read_state

from .losses import (critic_loss, dmd_gradient, dmd_loss, draw_levels, hinge_d_loss, hinge_g_loss, noised,
                     real_and_fake_x0, teach_loss)
from .config import LABELS, DistillConfig, student_plan, validate_config
from .models import (FeatureHead, TeacherFeatures, finetune_original, frozen, load_student_start, load_teacher,
                     make_pairs, merged_copy, teacher_guidance, trainable_copy, velocity_fn)

STATE_FILE = Path("state") / "state.pt"
PAIRS_FILE = "pairs.pt"
EVAL_SEEDS = 4


@dataclass
class DistillResult:
    status: str  # "done" | "cancelled"
    step: int  # generator steps
    out: Path
    history: list[dict]
    card: dict
    seconds: float
    snapshots: list[str] = field(default_factory=list)


def _down(x: torch.Tensor, times: int) -> torch.Tensor:
    for _ in range(times):
        x = HAAR.down_signal(x)
    return x


def _stats(x: torch.Tensor) -> dict:
    return {"mean": float(x.mean()), "std": float(x.std())}


class Distiller:
    """Everything one run trains with, and the two steps it takes."""

    def __init__(self, cfg: DistillConfig, comps, log, should_stop: Callable[[], bool]):
        from finetune.data import load_latents
        from finetune.pyramidal import empty_prompt_embeds

        self.cfg, self.spec, self.log = cfg, cfg.spec, log
        self.device = torch.device(cfg.device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.out = Path(cfg.out).expanduser()
        torch.manual_seed(cfg.seed)
        teacher, self.teacher_card = load_teacher(cfg, comps.transformer)
        teacher.to(self.device)
        boundaries = cfg.boundaries
        if boundaries is None and self.teacher_card is not None:
            boundaries = self.teacher_card.get("boundaries")
        self.plan = student_plan(cfg, boundaries)
        self.recipe = FewStepRecipe.build(self.plan.schedule, self.plan.shift, self.plan.boundaries,
                                          conversion=self.spec.conversion)
        self.levels = self.recipe.levels
        self.shape = self.plan.latent_shapes(cfg.frames, cfg.height, cfg.width)
        self.channels = comps.transformer.config.in_channels
        self.data, report = load_latents(cfg.data, comps, self.plan, (cfg.frames, cfg.height, cfg.width),
                                         Path(cfg.cache_dir) if cfg.cache_dir else self.out / "cache",
                                         base=cfg.base, log=log, should_stop=should_stop,
                                         clip_teacher=cfg.base, seed=cfg.seed, device=cfg.device)
        self.clips = len(self.data)
        self.empty = empty_prompt_embeds(comps, self.device)
        if self.spec.teacher == "original" and self.plan.num_stages > 1 and cfg.ot_steps > 0:
            teacher = finetune_original(teacher, self.data, self.plan, cfg, self.empty, self.out, log, should_stop)
        self.teacher = frozen(teacher)
        self.guidance = teacher_guidance(cfg, self.teacher_card, self.plan.num_stages)
        self.pairs = self._pairs(log) if cfg.uses_pairs() else None
        # 3. student, critic (or feature head), optimisers, EMA, resumable state
        start = load_student_start(cfg, comps.transformer).to(self.device) if cfg.student_init else self.teacher
        self.student = trainable_copy(start, cfg).to(self.device)
        self.g = torch.Generator("cpu").manual_seed(cfg.seed + 7919)
        if self.spec.adversarial:
            blocks = cfg.adv_blocks or list(range(max(0, len(self.teacher.blocks) - 3), len(self.teacher.blocks)))
            self.features = TeacherFeatures(self.teacher, blocks)
            dim = self.teacher.config.num_attention_heads * self.teacher.config.attention_head_dim
            self.critic = FeatureHead(dim, len(blocks)).to(self.device)
        else:
            self.critic = trainable_copy(self.teacher, cfg).to(self.device)
        self.named = [(n, p) for n, p in self.student.named_parameters() if p.requires_grad]
        critic_named = [(n, p) for n, p in self.critic.named_parameters() if p.requires_grad]
        self.critic_params = [p for _, p in critic_named]
        self.opt = {"student": self._adamw([p for _, p in self.named], cfg.lr),
                    "critic": self._adamw([p for _, p in critic_named], cfg.critic_lr or cfg.lr)}
        self.ema = EMA(self.named, cfg.ema_decay, warmup=True) if cfg.ema_decay > 0 else None
        self.order = DataOrder(len(self.pairs["noise"]) if self.pairs else self.clips, self.g)
        weights = [(f"student.{n}", p) for n, p in self.named] + [(f"critic.{n}", p) for n, p in critic_named]
        self.state = Resumable(weights, self.opt, self.ema, {"train": self.g}, self.order, key=resume_key(cfg),
                               where=str(self.out))
        self.eval_reference = self._evaluate(self.teacher, teacher=True)

    def _adamw(self, params, lr: float):
        return torch.optim.AdamW(params, lr=lr, betas=tuple(self.cfg.betas), weight_decay=self.cfg.weight_decay)

    # ------------------------------------------------------------------ data
    def _pairs(self, log) -> dict:
        """The teacher's samples from fixed noise (``OUT/pairs.pt``, made once)."""
        from core import StagePlan

        cfg, path = self.cfg, self.out / PAIRS_FILE
        n = cfg.pair_count()
        schedule = cfg.pair_schedule or ("20-20-10" if self.spec.teacher == "pyramidal" else "0-0-50")
        key = {"n": n, "schedule": schedule, "seed": cfg.seed, "guidance": self.guidance, "clips": self.clips,
               "stages": self.plan.num_stages}
        saved = torch.load(path, weights_only=False) if path.is_file() else None
        if saved is not None and saved.get("key") == key:
            return saved
        plan = StagePlan.parse(schedule, boundaries=self.plan.boundaries if self.spec.teacher == "pyramidal" else None,
                               guidance=self.guidance if StagePlan.parse(schedule).num_stages == len(self.guidance)
                               else self.guidance[-1])
        g = torch.Generator("cpu").manual_seed(cfg.seed + 104729)
        text_index = torch.arange(n) % self.clips
        noise = torch.randn((n, self.channels, *self.shape[-1]), generator=g)
        texts = torch.stack([self.data.text[int(i)] for i in text_index]).to(self.device)
        jump = (self.teacher_card or {}).get("jump", "carry")
        per_stage = make_pairs(self.teacher, texts, self.empty, plan, noise.to(self.device), cfg.seed, jump, log)
        if len(per_stage) != self.plan.num_stages:  # another stage count: the final sample, block-averaged
            per_stage = [_down(per_stage[-1], st.level) for st in self.plan.stages]
        pairs = {"key": key, "noise": noise, "x0": per_stage, "text_index": text_index}
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(pairs, path)
        return pairs

    def draw(self):
        """A batch: prompt embeddings, full-resolution noise, and the teacher's sample from that
        noise at every stage's resolution (with pairs; else None)."""
        idx = self.order.take(self.cfg.batch)
        if self.pairs is not None:
            text = torch.stack([self.data.text[int(self.pairs["text_index"][i])] for i in idx])
            return (text.to(self.device), self.pairs["noise"][idx].to(self.device),
                    [x[idx].to(self.device) for x in self.pairs["x0"]])
        text = torch.stack([self.data.text[i] for i in idx]).to(self.device)
        noise = torch.randn((len(idx), self.channels, *self.shape[-1]), generator=self.g).to(self.device)
        return text, noise, None

    def exit_sample(self, text, noise, grad: bool):
        """Backward simulation: the levels before a random exit level without gradients, then the
        exit level's ``x0_hat`` (with its graph when ``grad``), its stage, the level, and the clean
        estimate the stage started from (None in the first stage)."""
        exit_level = int(torch.randint(self.recipe.steps, (1,), generator=self.g))
        student = velocity_fn(self.student, text)
        with torch.no_grad():
            x, stage, _, sigma, low = rollout(lambda xs, s, st: student(xs, s), noise, self.plan, self.levels,
                                              exit_level, self.spec.conversion, self.g)
        with nullcontext() if grad else torch.no_grad():
            x0_hat = to_x0(x, sigma, student(x, sigma), stage, self.spec.conversion, low=low)
        return x0_hat, stage, exit_level, low

    def _noise_draw(self, like: torch.Tensor):
        eps = torch.randn(like.shape, generator=self.g).to(self.device)
        return eps, draw_levels(len(like), self.g, self.cfg.level_clamp).to(self.device)

    # ------------------------------------------------------------------ steps
    def critic_step(self) -> dict:
        """Fit the fake score (or the discriminator) to a fresh, detached student sample."""
        text, noise, ref = self.draw()
        x0, stage, _, low = self.exit_sample(text, noise, grad=False)
        eps, pos = self._noise_draw(x0)
        if self.spec.adversarial:
            k = stage.index
            fake = noised(x0, eps, pos, stage, True, low).x
            real = noised(ref[k], eps, pos, stage, True, ref[k - 1] if k else None)
            sigma = real.sigma
            with torch.no_grad():
                f_fake, grid = self.features(fake, sigma, text)
                f_real, _ = self.features(real.x, sigma, text)
            d_real = self.critic(f_real, grid)
            loss = hinge_d_loss(d_real, self.critic(f_fake, grid))
            if self.cfg.r1_weight > 0:
                with torch.no_grad():
                    f_near, _ = self.features(real.x + 0.01 * torch.randn(real.x.shape, generator=self.g)
                                              .to(self.device), sigma, text)
                loss = loss + self.cfg.r1_weight * torch.mean((d_real - self.critic(f_near, grid)) ** 2)
        else:
            loss = critic_loss(velocity_fn(self.critic, text), x0, stage, eps, pos, self.spec.path, low)
        loss.backward()
        norm = self._clip(self.critic_params)
        self.opt["critic"].step()
        self.opt["critic"].zero_grad(set_to_none=True)
        return {"critic_loss": float(loss.detach()), "critic_grad_norm": norm}

    def generator_step(self) -> dict:
        """One student update: the DMD gradient (plus ``L_teach``), or the hinge and reconstruction
        terms of the adversarial method."""
        cfg = self.cfg
        text, noise, ref = self.draw()
        x0_hat, stage, exit_level, low = self.exit_sample(text, noise, grad=True)
        eps, pos = self._noise_draw(x0_hat)
        info = {"exit_level": exit_level, "exit_stage": stage.index, "x0": _stats(x0_hat.detach())}
        if self.spec.adversarial:
            point = noised(x0_hat, eps, pos, stage, True, low)
            feats, grid = self.features(point.x, point.sigma, text)
            adv = hinge_g_loss(self.critic(feats, grid))
            recon = torch.mean((x0_hat - ref[stage.index]) ** 2)
            loss = cfg.adv_weight * adv + cfg.recon_weight * recon
            info.update(adversarial=float(adv.detach()), reconstruction=float(recon.detach()))
        else:
            teacher = velocity_fn(self.teacher, text, self.empty, self.guidance[stage.index])
            real, fake, _ = real_and_fake_x0(teacher, velocity_fn(self.critic, text), x0_hat, stage, eps, pos,
                                             self.spec.path, self.spec.conversion, low)
            grad = dmd_gradient(x0_hat.detach(), real, fake)
            loss = dmd_loss(x0_hat, grad)
            info.update(dmd=float(loss.detach()), dmd_grad=float(grad.abs().mean()), teacher_x0=_stats(real))
            if cfg.teach_weight > 0:
                teach = teach_loss(x0_hat, ref[stage.index], cfg.teach_loss)
                loss = loss + cfg.teach_weight * teach
                info["teach"] = float(teach.detach())
        for p in self.critic_params:  # the critic only scores here: no gradient for it
            p.requires_grad_(False)
        loss.backward()
        for p in self.critic_params:
            p.requires_grad_(True)
        info.update(generator_loss=float(loss.detach()), student_grad_norm=self._clip([p for _, p in self.named]))
        self.opt["student"].step()
        self.opt["student"].zero_grad(set_to_none=True)
        return info

    def _clip(self, params) -> float:
        params = [p for p in params if p.grad is not None]
        if not params:
            return 0.0
        if self.cfg.grad_clip > 0:
            return float(torch.nn.utils.clip_grad_norm_(params, self.cfg.grad_clip))
        return float(torch.norm(torch.stack([p.grad.norm() for p in params])))

    # ------------------------------------------------------------------ evaluation and checkpoints
    @torch.no_grad()
    def _evaluate(self, model, teacher: bool = False) -> dict:
        """Seed diversity (mean pairwise distance of one prompt's samples), motion energy (mean
        frame-to-frame change) and the latent std, at full resolution: the student with its plan,
        the teacher (``teacher=True``) with its pair plan or the student's plan at guidance."""
        text = self.data.text[0].unsqueeze(0).expand(EVAL_SEEDS, -1, -1).to(self.device)
        g = torch.Generator("cpu").manual_seed(20_000_000)
        noise = torch.randn((EVAL_SEEDS, self.channels, *self.shape[-1]), generator=g).to(self.device)
        if teacher and self.pairs is not None:
            same = [i for i in range(len(self.pairs["noise"])) if int(self.pairs["text_index"][i]) == 0]
            x = self.pairs["x0"][-1][same[:EVAL_SEEDS]].to(self.device)
        else:
            guide = self.guidance if teacher else [1.0] * self.plan.num_stages

            def denoise(xs, sigma, stage):
                return velocity_fn(model, text, self.empty, guide[stage.index])(xs, sigma)

            conversion = "plain" if teacher else self.spec.conversion
            x = sample_fewstep(denoise, noise, self.plan, self.levels, conversion, generator=g)
        flat = x.reshape(len(x), -1)
        pairs = [float((flat[i] - flat[j]).norm() / math.sqrt(flat.shape[1]))
                 for i in range(len(x)) for j in range(i + 1, len(x))]
        return {"diversity": sum(pairs) / max(1, len(pairs)), "motion": float((x[:, :, 1:] - x[:, :, :-1]).abs().mean()),
                "std": float(x.std()), "samples": len(x)}

    def card(self, step: int, history: list[dict], complete: bool, evaluation: dict | None) -> dict:
        cfg = self.cfg
        window = history[-20:]

        def mean(key):
            values = [h[key] for h in window if key in h]
            return sum(values) / len(values) if values else None

        label = f"{self.recipe.describe()}, {LABELS[cfg.method]}"
        if self.plan.num_stages == 1:
            label += " (conventional)"
        return {
            "base": cfg.base, "name": cfg.name or self.out.name, "trained_for": "few-step",
            "recipe": self.recipe.to_dict(), "schedule": self.plan.schedule, "stages": self.plan.num_stages,
            "boundaries": list(self.plan.boundaries), "guidance": 1.0, "label": label, "method": cfg.method,
            "teacher": {"kind": self.spec.teacher, "checkpoint": cfg.teacher or None, "guidance": self.guidance,
                        "name": (self.teacher_card or {}).get("name") or (Path(cfg.teacher).name if cfg.teacher
                                                                          else cfg.base),
                        "low_res_finetune_steps": cfg.ot_steps if self.spec.teacher == "original"
                        and self.plan.num_stages > 1 else 0},
            "student_init": Path(cfg.student_init).name if cfg.student_init else "the teacher",
            "steps": step, "target_steps": cfg.steps, "complete": complete, "ema": self.ema is not None,
            "lora_rank": cfg.lora_rank, "shape": [cfg.frames, cfg.height, cfg.width],
            "data": {"source": cfg.data, "clips": self.clips},
            "compute": {"generator_steps": step, "critic_steps": history[-1]["iteration"] if history else 0,
                        "pairs": len(self.pairs["noise"]) if self.pairs else 0,
                        "seconds": round(sum(h.get("seconds", 0.0) for h in history), 1), "device": str(self.device)},
            "losses": {"generator": mean("generator_loss"), "critic": mean("critic_loss")},
            "evaluation": {"student": evaluation, "teacher": self.eval_reference},
            "config": cfg.to_dict(),
        }

    def checkpoint(self, step: int, iteration: int, history: list[dict], complete: bool) -> dict:
        """Evaluate, then write the (EMA) student with its card into OUT and OUT/steps/NNNNNN,
        and the resume state."""
        from core.checkpoints import save_checkpoint

        with self.ema.applied(self.named) if self.ema is not None else nullcontext():
            student = merged_copy(self.student)
        evaluation = self._evaluate(student)
        card = self.card(step, history, complete, evaluation)
        save_checkpoint(self.out, student, card)
        if self.cfg.save_every:
            save_checkpoint(self.out / "steps" / f"{step:06d}", student, card)
        self.state.save(self.out / STATE_FILE, step, history=history, iteration=iteration)
        return card


def resume_key(cfg: DistillConfig) -> dict:
    key = {k: getattr(cfg, k) for k in ("method", "base", "teacher", "student_plan", "boundaries", "data", "batch",
                                        "critic_steps", "warmup", "lora_rank", "seed", "frames", "height", "width",
                                        "pairs", "pair_schedule", "adv_blocks", "ot_steps")}
    if cfg.student_init:  # only when set: runs from before the setting keep their key
        key["student_init"] = cfg.student_init
    return key


def train(cfg: DistillConfig | dict, on_step: Callable[[dict], bool | None] | None = None,
          log: Callable[[str], None] = print, components=None) -> DistillResult:
    """Distil (or resume) ``cfg``. ``on_step(info)`` hears every generator step (losses and
    statistics); returning True stops the run after a checkpoint."""
    from core.presets import build_components

    # 1. check the config
    cfg = validate_config(cfg)
    t_start = time.perf_counter()
    stopped = {"asked": False}

    def should_stop() -> bool:
        if on_step is not None and not stopped["asked"] and on_step({"phase": "data"}):
            stopped["asked"] = True
        return stopped["asked"]

    out = Path(cfg.out).expanduser()
    saved = read_state(out / STATE_FILE)
    if saved is not None and int(saved["step"]) >= cfg.steps and (out / "card.json").is_file():
        Resumable([], key=resume_key(cfg), where=str(out)).check_key(saved.get("key"))
        log(f"the distillation in {out} is done ({saved['step']} steps)")
        return DistillResult("done", int(saved["step"]), out, list(saved["history"]),
                             json.loads((out / "card.json").read_text()), time.perf_counter() - t_start,
                             _snapshots(out))
    # 2-3. models, data, optimisers, state
    comps = components or build_components(cfg.base, cfg.device)
    try:
        run = Distiller(cfg, comps, log, should_stop)
    except InterruptedError as exc:
        log(str(exc))
        return DistillResult("cancelled", 0, Path(cfg.out).expanduser(), [], {}, time.perf_counter() - t_start)
    step, iteration, history = 0, 0, []
    if saved is not None:
        step = run.state.restore(saved, path=run.out / STATE_FILE)
        iteration, history = int(saved["iteration"]), list(saved["history"])
        log(f"resumed at generator step {step}")
    # 4. loop
    status, card, critic_since = ("cancelled" if stopped["asked"] else "done"), None, []
    t0 = time.perf_counter()
    while step < cfg.steps and status == "done":
        iteration += 1
        critic_since.append(run.critic_step())
        if iteration <= cfg.warmup:  # critic-only warm-up: its loss is worth watching fall
            if on_step is not None and on_step({"phase": "warmup", "iteration": iteration, "warmup": cfg.warmup,
                                                **critic_since[-1]}):
                status = "cancelled"
            continue
        if (iteration - cfg.warmup) % cfg.critic_steps:
            continue
        info = run.generator_step()
        step += 1
        if run.ema is not None:
            run.ema.update(run.named, step=step)
        info.update(step=step, iteration=iteration, seconds=time.perf_counter() - t0,
                    critic_loss=sum(c["critic_loss"] for c in critic_since) / len(critic_since),
                    critic_grad_norm=critic_since[-1]["critic_grad_norm"])
        critic_since, t0 = [], time.perf_counter()
        history.append(info)
        if on_step is not None and on_step({"phase": "train", "steps": cfg.steps, **info}):
            status = "cancelled"
        # 5. checkpoint
        if status == "cancelled" or step == cfg.steps or (cfg.save_every and step % cfg.save_every == 0):
            card = run.checkpoint(step, iteration, history, complete=step == cfg.steps)
            log(f"step {step}: checkpoint written to {run.out}")
    if status == "cancelled" and step == 0 and iteration > 0:  # stopped in warm-up: no student yet, keep the critic
        run.state.save(run.out / STATE_FILE, 0, history=history, iteration=iteration)
    if card is None and step > 0 and not (run.out / "card.json").is_file():
        card = run.checkpoint(step, iteration, history, complete=step >= cfg.steps)
    if card is None and (run.out / "card.json").is_file():
        card = json.loads((run.out / "card.json").read_text())
    return DistillResult(status, step, run.out, history, card or {}, time.perf_counter() - t_start, _snapshots(run.out))


def _snapshots(out: Path) -> list[str]:
    return sorted(str(p) for p in (out / "steps").glob("*") if (p / "card.json").is_file())
