"""The pyramidal Euler sampler (pyramid.md §6), k-diffusion style.

``denoise(x, sigma, stage)`` returns the velocity ``dx/dsigma`` for latents ``x`` at noise level
``sigma`` (classifier-free guidance is the denoiser's business: the stage tells it the scale).
The callback gets a small dict at every step; returning True stops sampling with
:class:`~core.errors.Cancelled`.
"""

from __future__ import annotations

from typing import Callable

import torch

from .errors import Cancelled
from .plan import Stage, StagePlan
from .resample import HAAR, HaarResampler, fresh_jump, jump

JUMPS = ("carry", "fresh")

Denoiser = Callable[[torch.Tensor, float, Stage], torch.Tensor]


def noise_to_stage0(noise_full: torch.Tensor, plan: StagePlan, resampler: HaarResampler = HAAR) -> torch.Tensor:
    """Bring full-resolution noise to the lowest stage so a seed means the same for every plan."""
    x = noise_full.float()
    for _ in range(plan.num_stages - 1):
        x = resampler.down_noise(x)
    return x


def sample_pyramid(
    denoise: Denoiser,
    noise: torch.Tensor,
    plan: StagePlan,
    callback: Callable[[dict], bool | None] | None = None,
    generator: torch.Generator | None = None,
    resampler: HaarResampler = HAAR,
    on_stage_end: Callable[[Stage, torch.Tensor, torch.Tensor], None] | None = None,
    jump_mode: str = "carry",
) -> torch.Tensor:
    """Run ``plan`` from full-resolution ``noise`` and return the clean full-resolution latents.

    Euler steps ``x <- x + (sigma_next - sigma) * v`` in float32, conditioned on the global sigma;
    between stages the jump of §5 with fresh noise from ``generator``. ``on_stage_end(stage, x,
    denoised)`` sees each stage's end state and its last x0 estimate (for previews and timing).
    ``jump_mode="fresh"`` starts each higher stage from that x0 estimate and all-fresh noise
    instead (:func:`core.resample.fresh_jump`).
    """
    if jump_mode not in JUMPS:
        raise ValueError(f"jump_mode must be one of {', '.join(JUMPS)}; got {jump_mode!r}")
    x = noise_to_stage0(noise, plan, resampler)
    total = plan.total_steps
    done = 0
    for stage in plan.stages:
        sigmas = stage.sigmas
        for i in range(stage.steps):
            sigma, sigma_next = sigmas[i], sigmas[i + 1]
            v = denoise(x, sigma, stage).float()
            denoised = x - sigma * v  # x0 estimate; exact in the first and last stage (§8)
            x = x + (sigma_next - sigma) * v
            done += 1
            if callback is not None:
                stop = callback(
                    {
                        "stage": stage.index,
                        "stages": plan.num_stages,
                        "step": i + 1,
                        "steps": stage.steps,
                        "sigma": sigma_next,
                        "fraction": done / total,
                        "latents": x,
                        "denoised": denoised,
                    }
                )
                if stop:
                    raise Cancelled(f"cancelled at stage {stage.index + 1}, step {i + 1}")
        if on_stage_end is not None:
            on_stage_end(stage, x, denoised)
        if stage.index < plan.num_stages - 1:
            if jump_mode == "fresh":  # the last step's x - sigma * v equals the end state's x - sigma_end * v
                x, _ = fresh_jump(denoised, 1.0 - stage.sigma_end, generator, resampler)
            else:
                x, _ = jump(x, 1.0 - stage.sigma_end, generator, resampler)
    return x
