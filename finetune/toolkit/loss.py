"""The pyramidal flow-matching loss of one stage (pyramid.md section 7), shared by training and
evaluation so that the two measure the same thing."""

from __future__ import annotations

from contextlib import nullcontext
from typing import NamedTuple

import torch

from finetune.targets import pyramidal_target


class StageLoss(NamedTuple):
    loss: torch.Tensor  # mean squared error against the section-7 target
    pred: torch.Tensor  # the model's velocity, fp32
    x: torch.Tensor  # the noisy input and its noise level (a teacher term queries the same point)
    sigma: torch.Tensor


def stage_loss(model, x0, x0_low, text, eps, rho, stage, autocast=None) -> StageLoss:
    """Noise the clean latents ``x0`` into ``stage``'s window (``x0_low``: one level down, for the
    jump's start; ``rho``: where in the window; ``eps``: the noise), query ``model`` and compare
    with the target. Inputs are cast to the model's dtype; ``autocast`` wraps the forward pass."""
    x, sigma, target = pyramidal_target(x0, x0_low, eps, rho, stage)
    dtype = next(model.parameters()).dtype
    with autocast if autocast is not None else nullcontext():
        pred = model(hidden_states=x.to(dtype), timestep=sigma * 1000.0, encoder_hidden_states=text.to(dtype),
                     return_dict=False)[0]
    pred = pred.float()
    return StageLoss(torch.mean((pred - target) ** 2), pred, x, sigma)
