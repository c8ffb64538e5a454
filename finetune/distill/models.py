"""The networks of a distillation run: the frozen teacher (the pyramidal checkpoint, or the
original briefly finetuned on the low resolutions for dmd-ot), the student and the critic
(copies of the teacher, trained fully or through LoRA), the adversarial method's feature head,
and the teacher's samples from fixed noise (the pairs)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn

from finetune.toolkit import ConfigError

from .config import DistillConfig

OT_TEACHER = "ot-teacher"  # the low-resolution finetune of the original, under OUT


def velocity_fn(model, text: torch.Tensor, empty: torch.Tensor | None = None, guidance: float = 1.0) -> Callable:
    """``f(x, sigma) -> F`` (fp32): ``model`` on ``text`` (B, L, D); with ``guidance`` > 1 the
    classifier-free mix ``u + g (c - u)`` against ``empty`` (1, L, D)."""

    def forward(x, sigma):
        dtype = next(model.parameters()).dtype
        b = x.shape[0]
        t = torch.as_tensor(sigma, dtype=torch.float32, device=x.device).reshape(-1).expand(b) * 1000.0
        if guidance == 1.0 or empty is None:
            xin, tin, cond = x.to(dtype), t, text.to(dtype)
        else:
            xin, tin = torch.cat([x, x]).to(dtype), torch.cat([t, t])
            cond = torch.cat([text, empty.expand(b, -1, -1)]).to(dtype)
        out = model(hidden_states=xin, timestep=tin, encoder_hidden_states=cond, return_dict=False)[0].float()
        if out.shape[0] == b:
            return out
        c, u = out.chunk(2)
        return u + guidance * (c - u)

    return forward


def frozen(model: nn.Module) -> nn.Module:
    return model.eval().requires_grad_(False)


def load_teacher(cfg: DistillConfig, base_transformer: nn.Module) -> tuple[nn.Module, dict | None]:
    """The pyramidal teacher (its checkpoint over the base) and its card; dmd-ot's starts as the base."""
    if cfg.spec.teacher == "original":
        return copy.deepcopy(base_transformer), None
    from core.checkpoints import apply_checkpoint, read_card
    from core.errors import ModelLoadError

    try:
        card = read_card(cfg.teacher)
        if card["base"] != cfg.base:
            raise ConfigError(f"teacher {Path(cfg.teacher).name} was trained over {card['base']!r}, not "
                              f"{cfg.base!r}", "teacher")
        return apply_checkpoint(copy.deepcopy(base_transformer), cfg.teacher), card
    except ModelLoadError as exc:
        raise ConfigError(f"the teacher cannot be loaded: {exc}", "teacher") from None


def load_student_start(cfg: DistillConfig, base_transformer: nn.Module) -> nn.Module:
    """The checkpoint ``student_init`` names, over the base (the student then starts from it)."""
    from core.checkpoints import apply_checkpoint, read_card
    from core.errors import ModelLoadError

    try:
        if read_card(cfg.student_init)["base"] != cfg.base:
            raise ConfigError(f"student_init {Path(cfg.student_init).name} was not trained over {cfg.base!r}",
                              "student_init")
        return apply_checkpoint(copy.deepcopy(base_transformer), cfg.student_init)
    except ModelLoadError as exc:
        raise ConfigError(f"the student's start cannot be loaded: {exc}", "student_init") from None


def teacher_guidance(cfg: DistillConfig, card: dict | None, stages: int) -> list[float]:
    """One guidance per student stage: the setting, else the teacher card's (or the base preset's)
    recommendation (:func:`core.resolve_guidance`)."""
    from core import resolve_guidance

    value = cfg.teacher_guidance
    if value is None:
        value = resolve_guidance(None, cfg.base, card, stages=stages)[0]
    values = list(value) if isinstance(value, (list, tuple)) else [value]
    return [float(v) for v in (values * stages if len(values) == 1 else values)]


def finetune_original(teacher: nn.Module, data, plan, cfg: DistillConfig, empty: torch.Tensor, out: Path,
                      log, should_stop: Callable[[], bool]) -> nn.Module:
    """dmd-ot: ordinary flow matching of the original on every stage's clips (the low resolutions
    are new to it) for ``ot_steps``, then frozen; kept under ``OUT/ot-teacher`` so a resumed run
    reuses it. ``should_stop`` interrupts it (nothing is saved; the next run starts it again)."""
    from core.checkpoints import apply_checkpoint, save_checkpoint
    from finetune.toolkit import DataOrder, stage_loss

    from .losses import FORWARD

    folder = out / OT_TEACHER
    card_path = folder / "card.json"
    if card_path.is_file() and json.loads(card_path.read_text()).get("steps") == cfg.ot_steps:
        log(f"the original's low-resolution finetune is there: {folder}")
        return frozen(apply_checkpoint(teacher, folder))
    teacher.train().requires_grad_(True)
    g = torch.Generator("cpu").manual_seed(cfg.seed + 31337)
    order = DataOrder(len(data), g)
    opt = torch.optim.AdamW(teacher.parameters(), lr=cfg.ot_lr, betas=(0.9, 0.999), weight_decay=0.0)
    device = next(teacher.parameters()).device
    losses = []
    for step in range(cfg.ot_steps):
        if should_stop():
            raise InterruptedError("stopped during the original's low-resolution finetune")
        total = 0.0
        for stage in plan.stages:
            x0, _, text = data.batch(order.take(cfg.batch), stage.index, device)
            drop = (torch.rand(len(x0), generator=g) < 0.1).to(device)  # guidance needs the empty prompt too
            text = torch.where(drop.view(-1, 1, 1), empty.to(text.dtype), text)
            eps = torch.randn(x0.shape, generator=g).to(device)
            loss = stage_loss(teacher, x0, None, text, eps, torch.rand(len(x0), generator=g).to(device), FORWARD).loss
            (loss / plan.num_stages).backward()
            total += float(loss.detach()) / plan.num_stages
        torch.nn.utils.clip_grad_norm_(teacher.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(total)
        if (step + 1) % 50 == 0:
            log(f"original on the low resolutions: step {step + 1}/{cfg.ot_steps}, loss {sum(losses[-50:]) / 50:.4f}")
    frozen(teacher)
    save_checkpoint(folder, teacher, {"base": cfg.base, "name": f"{cfg.base}-{OT_TEACHER}",
                                      "trained_for": "original-low-res", "steps": cfg.ot_steps,
                                      "stages": plan.num_stages, "final_loss": losses[-1] if losses else None})
    return teacher


def trainable_copy(model: nn.Module, cfg: DistillConfig) -> nn.Module:
    """A copy of the teacher to train (full, or LoRA on the attention projections)."""
    from finetune.pyramidal import make_trainable

    out = copy.deepcopy(model).float()
    make_trainable(out, cfg)
    return out


def merged_copy(model: nn.Module) -> nn.Module:
    """The student as plain weights: a LoRA adapter fused into a copy (the checkpoint then loads
    over any base, whatever teacher it started from)."""
    out = copy.deepcopy(model)
    if getattr(out, "peft_config", None):
        out.fuse_lora()
        out.unload_lora()
    return out.eval()


# ----------------------------------------------------------------------------- adversarial
class FeatureHead(nn.Module):
    """The discriminator of the adversarial method: for each chosen teacher block, a spatial
    branch (2D convolutions per frame) and a temporal one (1D convolutions along the frames) on
    its tokens laid out on the latent grid; the logits are averaged over positions and summed."""

    def __init__(self, dim: int, blocks: int, width: int = 64):
        super().__init__()

        def branch(conv):
            return nn.Sequential(conv(dim, width, 3, padding=1), nn.SiLU(), conv(width, 1, 1))

        self.spatial = nn.ModuleList(branch(nn.Conv2d) for _ in range(blocks))
        self.temporal = nn.ModuleList(branch(nn.Conv1d) for _ in range(blocks))

    def forward(self, features: list[torch.Tensor], grid: tuple[int, int, int]) -> torch.Tensor:
        t, h, w = grid
        logits = 0.0
        for tokens, spatial, temporal in zip(features, self.spatial, self.temporal):
            b, _, d = tokens.shape
            x = tokens.float().transpose(1, 2).reshape(b, d, t, h, w)
            frames = x.permute(0, 2, 1, 3, 4).reshape(b * t, d, h, w)
            logits = logits + spatial(frames).reshape(b, -1).mean(1)
            lines = x.permute(0, 3, 4, 1, 2).reshape(b * h * w, d, t)
            logits = logits + temporal(lines).reshape(b, -1).mean(1)
        return logits


class TeacherFeatures:
    """The frozen teacher's tokens after some of its blocks, for the feature head."""

    def __init__(self, teacher: nn.Module, blocks: list[int]):
        n = len(teacher.blocks)
        bad = [b for b in blocks if not 0 <= b < n]
        if bad:
            raise ConfigError(f"adv_blocks {bad} are outside the teacher's {n} blocks (0 to {n - 1})", "adv_blocks")
        self.teacher, self.blocks, self._seen = teacher, blocks, {}
        for b in blocks:
            teacher.blocks[b].register_forward_hook(self._keep(b))

    def _keep(self, index: int):
        def hook(_module, _inputs, output):
            self._seen[index] = output[0] if isinstance(output, tuple) else output
        return hook

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, text: torch.Tensor) -> tuple[list, tuple]:
        self._seen.clear()
        velocity_fn(self.teacher, text)(x, sigma)
        p_t, p_h, p_w = self.teacher.config.patch_size
        grid = (x.shape[2] // p_t, x.shape[3] // p_h, x.shape[4] // p_w)
        return [self._seen[b] for b in self.blocks], grid


# ----------------------------------------------------------------------------- pairs
def make_pairs(teacher: nn.Module, texts: torch.Tensor, empty: torch.Tensor, plan, noise: torch.Tensor,
               seed: int, jump: str, log, batch: int = 16) -> list[torch.Tensor]:
    """The teacher's samples from ``noise`` with its own many-step sampler and guidance
    (``plan``'s), one per row of ``texts``: its clean estimate at the end of every stage, lowest
    first (the last one is the sample itself)."""
    from core.sampler import sample_pyramid

    out: list[list[torch.Tensor]] = [[] for _ in plan.stages]
    for i in range(0, len(noise), batch):
        text, x = texts[i:i + batch], noise[i:i + batch]

        def denoise(xs, sigma, stage, text=text):
            return velocity_fn(teacher, text, empty, stage.guidance)(xs, sigma)

        def keep(stage, _x, denoised):
            out[stage.index].append(denoised.cpu())

        with torch.no_grad():
            final = sample_pyramid(denoise, x, plan, generator=torch.Generator("cpu").manual_seed(seed + i),
                                   jump_mode=jump, on_stage_end=keep)
        out[-1][-1] = final.cpu()
        log(f"teacher pairs: {min(i + batch, len(noise))}/{len(noise)}")
    return [torch.cat(parts) for parts in out]
