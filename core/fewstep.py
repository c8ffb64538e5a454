"""Few-step sampling for distilled students (distill.md, "Few-step sampling"; pyramid.md §8).

A student runs a handful of *levels* per stage. At each level it predicts the velocity ``F``;
``x0_hat`` follows from it (plain ``x - sigma * F``, or the exact per-band form inside a middle
stage), and then:

* the stage goes on to its next level ``sigma'``: ``x0_hat`` is put back on **the stage's own
  path** at ``sigma'`` with fresh noise: the §7 path the pyramidal model was trained on, from
  ``s * up(x0_low) + (1 - s) * eps``, ``x0_low`` the estimate the stage started from (for a
  one-stage plan the usual ``(1 - sigma') x0_hat + sigma' eps``);
* the stage ends: the next stage starts from ``s * up(x0_hat) + (1 - s) * eps``
  (:func:`core.resample.fresh_jump`);
* the very last level returns ``x0_hat``.

The levels of a stage start at its window's start and never crowd its end
(:func:`check_levels`): Pyramid Flow's own scheduler gives a 2-step stage ``[1, 0.001, 0]``,
whose second forward does nothing. A distilled checkpoint's card locks the plan, the levels,
the shift, the conversion and guidance 1 (:class:`FewStepRecipe`); the studio refuses a request
that would break them, naming what the checkpoint was trained for.

Pure, k-diffusion shaped: ``denoise(x, sigma, stage)`` returns the velocity, the callback gets a
small dict at every level and returning True cancels (:class:`~core.errors.Cancelled`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from .errors import Cancelled, RequestError
from .plan import MIN_INTERVAL_FRACTION, Stage, StagePlan
from .resample import HAAR, HaarResampler, _randn, fresh_jump, stage_endpoints
from .sampler import Denoiser, noise_to_stage0

#: ``x0_hat`` from the velocity: "plain" ``x - sigma * F`` everywhere (PT*, OT and one-stage
#: students), or "exact" inside a pyramid stage (PT; :func:`to_x0`).
CONVERSIONS = ("plain", "exact")
TRAINED_FOR = "few-step"  # a distilled checkpoint card's ``trained_for``


# ----------------------------------------------------------------------------- levels
def default_levels(plan: StagePlan) -> tuple[tuple[float, ...], ...]:
    """Each stage's levels: its window split uniformly in ``u`` (the inverse shift), as the
    pyramidal plans space their steps, without the window's end: ``n`` levels for ``n`` steps."""
    return tuple(
        StagePlan._stage_sigmas(st.sigma_start, st.sigma_end, st.steps, plan.shift, "uniform")[:-1]
        for st in plan.stages
    )


def check_levels(plan: StagePlan, levels) -> tuple[tuple[float, ...], ...]:
    """``levels`` as tuples of floats, or RequestError: one list per running stage, as many levels
    as the stage has steps, starting at the stage's start, strictly decreasing, and no gap
    (the last one down to the stage's end included) under ``MIN_INTERVAL_FRACTION`` of the
    stage's mean gap (a degenerate level wastes a forward)."""
    if levels is None:
        return default_levels(plan)
    try:
        levels = tuple(tuple(float(v) for v in stage_levels) for stage_levels in levels)
    except (TypeError, ValueError):
        raise RequestError(f"levels must be one list of noise levels per stage; got {levels!r}", "levels") from None
    if len(levels) != plan.num_stages:
        raise RequestError(f"levels have {len(levels)} stages; schedule {plan.schedule} runs {plan.num_stages}",
                           "levels")
    for stage, stage_levels in zip(plan.stages, levels):
        where = f"stage {stage.index + 1} ({stage.sigma_start:.3f} -> {stage.sigma_end:.3f})"
        if len(stage_levels) != stage.steps:
            raise RequestError(f"{where} runs {stage.steps} steps but has {len(stage_levels)} levels", "levels")
        if abs(stage_levels[0] - stage.sigma_start) > 1e-4:
            raise RequestError(f"{where} must start at its window's start {stage.sigma_start:.4f}; got "
                               f"{stage_levels[0]:.4f}", "levels")
        edges = stage_levels + (stage.sigma_end,)
        least = MIN_INTERVAL_FRACTION * (stage.sigma_start - stage.sigma_end) / stage.steps
        gaps = [a - b for a, b in zip(edges, edges[1:])]
        if min(gaps) < least - 1e-9:
            raise RequestError(f"{where}: levels {list(stage_levels)} are degenerate (a gap of {min(gaps):.4f}, "
                               f"under {least:.4f}): every level must do real work", "levels")
    return levels


def level_list(plan: StagePlan, levels) -> list[tuple[Stage, int, float]]:
    """``(stage, index in stage, sigma)`` of every level, in sampling order."""
    return [(stage, i, sigma) for stage, stage_levels in zip(plan.stages, levels)
            for i, sigma in enumerate(stage_levels)]


# ----------------------------------------------------------------------------- one level
def high_band_gain(stage: Stage) -> float:
    """How much the stage's path inflates the high band of ``x - sigma * F`` (pyramid.md §8):
    ``(1 - sigma_end) * sigma_start / (sigma_start - sigma_end)``; 1 in the first and last stage."""
    return (1.0 - stage.sigma_end) * stage.sigma_start / (stage.sigma_start - stage.sigma_end)


def _per_sample(sigma, like: torch.Tensor) -> torch.Tensor | float:
    if isinstance(sigma, torch.Tensor) and sigma.ndim > 0:
        return sigma.to(like.dtype).view(-1, *([1] * (like.ndim - 1)))
    return float(sigma)


def to_x0(x: torch.Tensor, sigma, velocity: torch.Tensor, stage: Stage, conversion: str = "plain",
          resampler: HaarResampler = HAAR, low: torch.Tensor | None = None) -> torch.Tensor:
    """``x0_hat`` of a state ``x`` at ``sigma`` (a float or one per sample) on ``stage``'s path.

    "exact" with ``low`` (the clean video one stage down the stage started from): on the path
    ``x - sigma * F = ((1 - sigma_end) sigma_start x0 - sigma_end s up(low)) / (sigma_start -
    sigma_end)``, solved for ``x0``. Without ``low``, pyramid.md §8's per-band form, which assumes
    ``low = down(x0)``; a model trained on clips encoded at each resolution breaks that assumption
    (``tests/core/test_fewstep.py`` shows the per-band form missing where this one does not)."""
    if conversion not in CONVERSIONS:
        raise ValueError(f"conversion must be one of {', '.join(CONVERSIONS)}; got {conversion!r}")
    x0 = x - _per_sample(sigma, x) * velocity
    gain = high_band_gain(stage)
    if conversion == "plain" or abs(gain - 1.0) < 1e-9:
        return x0
    if low is not None:
        width = stage.sigma_start - stage.sigma_end
        s = 1.0 - stage.sigma_start
        return (x0 + (stage.sigma_end * s / width) * resampler.up(low)) / gain
    return x0 - (1.0 - 1.0 / gain) * resampler.high_band(x0)


def on_stage_path(x0: torch.Tensor, eps: torch.Tensor, sigma, stage: Stage,
                  resampler: HaarResampler = HAAR, low: torch.Tensor | None = None) -> torch.Tensor:
    """The point at ``sigma`` (a float or one per sample, inside the stage's window) of the stage's
    straight path from ``s * up(low) + (1 - s) * eps`` to ``(1 - sigma_end) * x0 + sigma_end * eps``;
    ``low`` is the clean video one stage down the stage started from (default ``down(x0)``)."""
    if stage.sigma_start >= 1.0:
        low = None
    elif low is None:
        low = resampler.down_signal(x0)
    y_start, y_end = stage_endpoints(x0, low, eps, stage, resampler)
    rho = (_per_sample(sigma, x0) - stage.sigma_end) / (stage.sigma_start - stage.sigma_end)
    return rho * y_start + (1.0 - rho) * y_end


def advance(x0: torch.Tensor, plan: StagePlan, levels, stage: Stage, index: int,
            generator: torch.Generator | None = None, resampler: HaarResampler = HAAR,
            low: torch.Tensor | None = None) -> torch.Tensor:
    """The state after level ``index`` of ``stage`` predicted ``x0``: the stage's next level with
    fresh noise (on the path from ``low``, the estimate the stage started from), the next stage's
    start, or ``x0`` itself after the last level of the plan."""
    stage_levels = levels[stage.index]
    if index + 1 < len(stage_levels):
        eps = _randn(x0.shape, x0, generator)
        return on_stage_path(x0, eps, stage_levels[index + 1], stage, resampler, low)
    if stage.index + 1 < plan.num_stages:
        return fresh_jump(x0, 1.0 - stage.sigma_end, generator, resampler)[0]
    return x0


# ----------------------------------------------------------------------------- sampling
def sample_fewstep(
    denoise: Denoiser,
    noise: torch.Tensor,
    plan: StagePlan,
    levels=None,
    conversion: str = "plain",
    callback: Callable[[dict], bool | None] | None = None,
    generator: torch.Generator | None = None,
    resampler: HaarResampler = HAAR,
    on_stage_end: Callable[[Stage, torch.Tensor, torch.Tensor], None] | None = None,
) -> torch.Tensor:
    """Run a student over ``plan``'s ``levels`` (default :func:`default_levels`) from
    full-resolution ``noise`` (brought to the lowest stage like :func:`~core.sampler.sample_pyramid`)
    and return the clean full-resolution latents. ``on_stage_end(stage, x, x0_hat)`` sees each
    stage's last prediction (for previews)."""
    levels = check_levels(plan, levels)
    steps = level_list(plan, levels)
    x, low = noise_to_stage0(noise, plan, resampler), None
    for done, (stage, i, sigma) in enumerate(steps, start=1):
        x0 = to_x0(x, sigma, denoise(x, sigma, stage).float(), stage, conversion, resampler, low)
        x = advance(x0, plan, levels, stage, i, generator, resampler, low)
        last_in_stage = i == len(levels[stage.index]) - 1
        if last_in_stage:
            low = x0  # the next stage starts from it
        nxt = steps[done][2] if done < len(steps) else 0.0
        if callback is not None and callback({"stage": stage.index, "stages": plan.num_stages, "step": i + 1,
                                              "steps": stage.steps, "sigma": nxt, "fraction": done / len(steps),
                                              "latents": x, "denoised": x0}):
            raise Cancelled(f"cancelled at stage {stage.index + 1}, step {i + 1}")
        if last_in_stage and on_stage_end is not None:
            on_stage_end(stage, x, x0)
    return x


def rollout(denoise: Denoiser, noise: torch.Tensor, plan: StagePlan, levels, until: int, conversion: str = "plain",
            generator: torch.Generator | None = None, resampler: HaarResampler = HAAR):
    """The state the student sees at level ``until`` (0-based, sampling order) when it runs the
    levels before it: ``(x, stage, index in stage, sigma, x0_low)``, ``x0_low`` the clean estimate
    its stage started from (the last prediction of the stage below; None in the first stage).
    Distillation's backward simulation runs this without gradients, then the exit level with them."""
    levels = check_levels(plan, levels)
    steps = level_list(plan, levels)
    if not 0 <= until < len(steps):
        raise ValueError(f"level {until} is outside the plan's {len(steps)} levels")
    x, x0_low = noise_to_stage0(noise, plan, resampler), None
    for stage, i, sigma in steps[:until]:
        x0 = to_x0(x, sigma, denoise(x, sigma, stage).float(), stage, conversion, resampler, x0_low)
        x = advance(x0, plan, levels, stage, i, generator, resampler, x0_low)
        if i == len(levels[stage.index]) - 1:
            x0_low = x0
    stage, i, sigma = steps[until]
    return x, stage, i, sigma, x0_low


# ----------------------------------------------------------------------------- the recipe
@dataclass(frozen=True)
class FewStepRecipe:
    """What a distilled checkpoint must run with (its card's ``recipe``): the plan, its levels,
    shift and windows, the ``x0`` conversion, guidance 1 (baked in)."""

    schedule: str
    levels: tuple[tuple[float, ...], ...]
    shift: float
    boundaries: tuple[float, ...]
    conversion: str = "plain"
    guidance: float = 1.0

    @classmethod
    def build(cls, schedule: str, shift: float, boundaries=None, levels=None,
              conversion: str = "plain") -> "FewStepRecipe":
        """A checked recipe (RequestError naming the field); ``levels`` None: :func:`default_levels`."""
        plan = StagePlan.parse(schedule, shift=shift, boundaries=boundaries, guidance=1.0, grid="uniform")
        if conversion not in CONVERSIONS:
            raise RequestError(f"conversion must be one of {', '.join(CONVERSIONS)}; got {conversion!r}", "conversion")
        return cls(plan.schedule, check_levels(plan, levels), plan.shift, plan.boundaries, conversion)

    @classmethod
    def from_card(cls, card: dict | None) -> "FewStepRecipe | None":
        """The recipe of a distilled checkpoint's card, None for any other card."""
        if not card or card.get("trained_for") != TRAINED_FOR:
            return None
        r = card.get("recipe") or {}
        try:
            return cls.build(r["schedule"], r["shift"], r.get("boundaries"), r["levels"], r.get("conversion", "plain"))
        except (KeyError, TypeError) as exc:
            raise RequestError(f"the checkpoint's recipe is incomplete ({exc}): it needs schedule, levels and "
                               "shift", "checkpoint") from None

    @property
    def plan(self) -> StagePlan:
        return StagePlan.parse(self.schedule, shift=self.shift, boundaries=self.boundaries, guidance=1.0,
                               grid="uniform")

    @property
    def steps(self) -> int:
        return sum(len(v) for v in self.levels)

    def to_dict(self) -> dict:
        return {"schedule": self.schedule, "levels": [list(v) for v in self.levels], "shift": self.shift,
                "boundaries": list(self.boundaries), "conversion": self.conversion, "guidance": self.guidance}

    def describe(self) -> str:
        """``"2-2-1, 5 steps, guidance baked in"``."""
        return f"{self.schedule}, {self.steps} step{'s' if self.steps != 1 else ''}, guidance baked in"

    def trained_for(self) -> str:
        levels = " | ".join(", ".join(f"{v:.3g}" for v in stage) for stage in self.levels)
        return (f"schedule {self.schedule} (levels {levels}), shift {self.shift:g}, guidance 1 (baked in), "
                f"{self.conversion} conversion")

    def check(self, *, schedule=None, guidance=None, shift=None, boundaries=None, mode=None, grid=None,
              name: str = "this checkpoint") -> None:
        """Refuse what would break the recipe (None: left out, the recipe's value applies), with a
        message naming what the student was trained for."""
        trained = f"{name} is a few-step student trained for {self.trained_for()}"

        def refuse(what: str, field: str):
            raise RequestError(f"{trained}; {what}. Leave it out (the recipe applies) or choose another model.",
                               field)

        if mode is not None and mode != "pyramidal":
            refuse(f"it cannot run as the original model (mode {mode!r})", "mode")
        if schedule is not None and schedule != "":
            try:
                canonical = StagePlan.parse(schedule).schedule
            except RequestError:
                canonical = str(schedule)
            if canonical != self.schedule:
                refuse(f"schedule {schedule} would give blurry or broken videos", "schedule")
        if guidance is not None:
            values = guidance if isinstance(guidance, (list, tuple)) else [guidance]
            if any(not isinstance(g, (int, float)) or isinstance(g, bool) or float(g) != self.guidance for g in values):
                refuse(f"guidance {guidance} would apply classifier-free guidance twice", "guidance")
        if shift is not None and abs(float(shift) - self.shift) > 1e-9:
            refuse(f"shift {shift} moves its levels", "shift")
        if boundaries is not None and [round(float(b), 6) for b in boundaries] != [round(b, 6) for b in self.boundaries]:
            refuse(f"boundaries {list(boundaries)} move its stage windows", "boundaries")
        if grid not in (None, "uniform"):
            refuse(f"grid {grid!r} is not its level spacing", "grid")
