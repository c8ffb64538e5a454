"""The losses of distillation as pure functions of tensors (distill.md); models come in as
callables ``velocity(x, sigma) -> F``.

* :func:`noised`: a clean sample of a stage put back at a noise level, along the stage's own
  path (PT, PT*, adversarial) or by the conventional forward process at the stage's resolution
  (OT); it returns the point, its global noise level, the flow-matching target and the window
  whose conversion applies.
* :func:`dmd_gradient` / :func:`dmd_loss`: DMD2's normalised distribution-matching gradient and
  the surrogate loss whose gradient it is.
* :func:`critic_loss`: the fake score's flow matching on detached student samples, with the
  teacher's own target form.
* :func:`hinge_d_loss` / :func:`hinge_g_loss`, :func:`teach_loss`.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from core.fewstep import to_x0
from core.resample import HAAR
from finetune.targets import Window, pyramidal_target

FORWARD = Window(1.0, 0.0)  # the conventional forward process: x = (1 - t) x0 + t eps, target eps - x0


class Noised(NamedTuple):
    x: torch.Tensor
    sigma: torch.Tensor  # (B,) global noise level
    target: torch.Tensor  # flow-matching velocity target
    window: object  # the path's window: to_x0 converts with it


def draw_levels(batch: int, generator: torch.Generator, clamp: float) -> torch.Tensor:
    """Positions in a stage's window, uniform in ``[clamp, 1 - clamp]`` (0 = the window's end)."""
    return clamp + (1.0 - 2.0 * clamp) * torch.rand(batch, generator=generator)


def noised(x0: torch.Tensor, eps: torch.Tensor, position: torch.Tensor, stage, path: bool,
           low: torch.Tensor | None = None) -> Noised:
    """``x0`` (clean, at ``stage``'s resolution) at ``position`` in ``stage``'s window: on the
    stage's own path, from ``s * up(low) + (1 - s) * eps`` to its end, or by the forward process
    ``(1 - t) x0 + t eps`` at the same global level ``t`` (``path=False``).

    ``low`` is the clean video one stage down that the stage started from: the student's own
    last prediction there, or the teacher's. The pyramidal teacher learned its paths from clips
    encoded at each resolution, which differ a lot from block means of the finer latent (44% and
    72% relative squared error on the mini world), so ``down(x0)`` (the fallback) puts the point
    where the teacher never looked."""
    position = position.to(x0.device, x0.dtype)
    if path:
        if stage.sigma_start < 1.0 and low is None:
            low = HAAR.down_signal(x0)
        x, sigma, target = pyramidal_target(x0, low if stage.sigma_start < 1.0 else None, eps, position, stage)
        return Noised(x, sigma, target, stage)
    t = stage.sigma_end + position * (stage.sigma_start - stage.sigma_end)
    x, sigma, target = pyramidal_target(x0, None, eps, t, FORWARD)
    return Noised(x, sigma, target, FORWARD)


def dmd_gradient(x0_hat: torch.Tensor, x0_real: torch.Tensor, x0_fake: torch.Tensor) -> torch.Tensor:
    """``(x0_fake - x0_real) / mean|x0_hat - x0_real|`` per sample (+1e-6), NaN to 0: the step
    that moves the student's samples from the fake (critic) towards the real (teacher) score."""
    dims = tuple(range(1, x0_hat.ndim))
    scale = (x0_hat - x0_real).abs().mean(dim=dims, keepdim=True) + 1e-6
    return torch.nan_to_num((x0_fake - x0_real) / scale)


def dmd_loss(x0_hat: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """``0.5 * mse(x0_hat, stopgrad(x0_hat - grad))``: its gradient in ``x0_hat`` is ``grad / N``."""
    target = (x0_hat - grad).detach()
    return 0.5 * torch.mean((x0_hat - target) ** 2)


def real_and_fake_x0(teacher, critic, x0_hat: torch.Tensor, stage, eps: torch.Tensor, position: torch.Tensor,
                     path: bool, conversion: str, low: torch.Tensor | None = None
                     ) -> tuple[torch.Tensor, torch.Tensor, Noised]:
    """Both scores' clean estimates at the same re-noised point of the detached ``x0_hat``
    (``low``: see :func:`noised`); ``teacher(x, sigma)`` is guided, ``critic(x, sigma)`` is not."""
    with torch.no_grad():
        point = noised(x0_hat.detach(), eps, position, stage, path, low)
        real = to_x0(point.x, point.sigma, teacher(point.x, point.sigma).float(), point.window, conversion, low=low)
        fake = to_x0(point.x, point.sigma, critic(point.x, point.sigma).float(), point.window, conversion, low=low)
    return real, fake, point


def critic_loss(critic, x0: torch.Tensor, stage, eps: torch.Tensor, position: torch.Tensor,
                path: bool, low: torch.Tensor | None = None) -> torch.Tensor:
    """Flow matching of the critic on a detached student sample with the teacher's target form
    (the pyramidal target on the stage's path, ``eps - x0`` for the forward process)."""
    point = noised(x0.detach(), eps, position, stage, path, low)
    return torch.mean((critic(point.x, point.sigma).float() - point.target) ** 2)


def hinge_d_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    return torch.relu(1.0 - real_logits).mean() + torch.relu(1.0 + fake_logits).mean()


def hinge_g_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    return -fake_logits.mean()


def teach_loss(x0_hat: torch.Tensor, reference: torch.Tensor, form: str = "mse") -> torch.Tensor:
    """The student's sample against the teacher's from the same noise: mean squared error, or the
    Cauchy form ``log(1 + |.|^2)`` (robust to the few pixels where the two disagree)."""
    diff = x0_hat - reference
    return torch.mean(diff ** 2) if form == "mse" else torch.mean(torch.log1p(diff ** 2))
