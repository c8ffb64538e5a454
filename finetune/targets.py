"""The pyramidal flow-matching training target (pyramid.md §7), as a pure function.

For a sample assigned to stage ``k`` with window ``sigma_start_k -> sigma_end_k``:

* ``y_start = s_k * up(x0_{k-1}) + (1 - s_k) * eps`` with ``s_k = 1 - sigma_start_k``
  (stage 0: ``sigma_start = 1``, ``s_0 = 0``, ``y_start = eps``),
* ``y_end = (1 - sigma_end_k) * x0_k + sigma_end_k * eps`` (the same ``eps``),
* ``x = rho * y_start + (1 - rho) * y_end``, ``sigma = sigma_end + rho * (sigma_start - sigma_end)``,
* target ``dx/dsigma = (y_start - y_end) / (sigma_start - sigma_end)``.

Nothing here draws random numbers or touches a model: callers pass ``eps`` and ``rho``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from core.resample import HAAR, stage_endpoints


@dataclass(frozen=True)
class Window:
    """A stage's noise window (``core.plan.Stage`` has the same two fields)."""

    sigma_start: float
    sigma_end: float


def _per_sample(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    values = torch.as_tensor(values, dtype=like.dtype, device=like.device).reshape(-1)
    return values.view(-1, *([1] * (like.ndim - 1)))


def pyramidal_target(
    x0: torch.Tensor,
    x0_low: torch.Tensor | None,
    eps: torch.Tensor,
    rho: torch.Tensor | float,
    window,
    resampler=HAAR,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Model input ``x``, per-sample global ``sigma`` (shape ``(B,)``) and velocity target.

    ``x0``: clean latents at the stage's resolution ``(B, C, T, H, W)``; ``x0_low``: clean latents
    one level down (None for the first stage, whose window starts at sigma 1); ``eps``: white
    noise shaped like ``x0``; ``rho``: per-sample position in the window, ``U(0, 1)`` in training.
    """
    if eps.shape != x0.shape:
        raise ValueError(f"eps {tuple(eps.shape)} must have the shape of x0 {tuple(x0.shape)}")
    width = float(window.sigma_start) - float(window.sigma_end)
    if width <= 0:
        raise ValueError(f"empty stage window {window.sigma_start} -> {window.sigma_end}")
    y_start, y_end = stage_endpoints(x0, x0_low, eps, window, resampler)
    r = _per_sample(rho, x0)
    if r.shape[0] == 1 and x0.shape[0] > 1:
        r = r.expand(x0.shape[0], *r.shape[1:])
    x = r * y_start + (1.0 - r) * y_end
    sigma = float(window.sigma_end) + r.reshape(-1) * width
    target = (y_start - y_end) / width
    return x, sigma, target
