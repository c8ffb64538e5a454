"""Resampling between pyramid stages and the renoising jump (pyramid.md §3, §5).

Latents are ``(B, C, T, H, W)``. The first latent frame (one pixel frame) is cut into 2x2 spatial
blocks (m = 4 cells); the other frames into 2x2x2 blocks of two consecutive frames (m = 8). In an
orthonormal block transform each block has one low coefficient and m - 1 high ones; the operations
below are written in cell terms so that any transform whose low basis vector is the block constant
(Haar, block DCT) gives the same results. A transform with another low band implements the same
interface and is passed as ``resampler=``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .plan import M_MAX, jump_signal_scale

FIRST_CELLS = 4
REST_CELLS = 8


def _randn(shape, like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Noise drawn on the generator's device (CPU by default) so a seed means the same everywhere."""
    device = generator.device if generator is not None else torch.device("cpu")
    return torch.randn(shape, generator=generator, device=device, dtype=torch.float32).to(like.device, like.dtype)


class HaarResampler:
    """Haar (block-constant low band) resampling. The default and the only one required."""

    name = "haar"

    @staticmethod
    def check(x: torch.Tensor) -> None:
        _, _, t, h, w = x.shape
        if (t - 1) % 2 or h % 2 or w % 2:
            raise ValueError(f"latent {tuple(x.shape)} cannot be halved: need T - 1, H and W even")

    def block_mean(self, x: torch.Tensor) -> torch.Tensor:
        self.check(x)
        first = F.avg_pool3d(x[:, :, :1], (1, 2, 2))
        if x.shape[2] == 1:
            return first
        rest = F.avg_pool3d(x[:, :, 1:], (2, 2, 2))
        return torch.cat([first, rest], dim=2)

    def down_signal(self, x: torch.Tensor) -> torch.Tensor:
        """Block mean: keeps a latent at natural latent scale."""
        return self.block_mean(x)

    def down_noise(self, eps: torch.Tensor) -> torch.Tensor:
        """Block mean times sqrt(m): white unit noise stays white and unit."""
        low = self.block_mean(eps)
        scale = torch.full((low.shape[2],), math.sqrt(REST_CELLS), dtype=low.dtype, device=low.device)
        scale[0] = math.sqrt(FIRST_CELLS)
        return low * scale.view(1, 1, -1, 1, 1)

    def up(self, y: torch.Tensor) -> torch.Tensor:
        """Nearest-neighbour repeat of every low cell into its block."""
        y = y.repeat_interleave(2, dim=3).repeat_interleave(2, dim=4)
        if y.shape[2] == 1:
            return y
        return torch.cat([y[:, :, :1], y[:, :, 1:].repeat_interleave(2, dim=2)], dim=2)

    def high_band(self, z: torch.Tensor) -> torch.Tensor:
        """Orthogonal projection onto the high coefficients: ``z - up(block_mean(z))``."""
        return z - self.up(self.block_mean(z))


HAAR = HaarResampler()


def down_signal(x: torch.Tensor, resampler: HaarResampler = HAAR) -> torch.Tensor:
    return resampler.down_signal(x)


def down_noise(eps: torch.Tensor, resampler: HaarResampler = HAAR) -> torch.Tensor:
    return resampler.down_noise(eps)


def up(y: torch.Tensor, resampler: HaarResampler = HAAR) -> torch.Tensor:
    return resampler.up(y)


def jump(
    x_low: torch.Tensor,
    e: float,
    generator: torch.Generator | None = None,
    resampler: HaarResampler = HAAR,
    m_max: int = M_MAX,
) -> tuple[torch.Tensor, float]:
    """Renoise a lower-stage end state ``e * x0_low + (1 - e) * n`` into the next stage's start.

    Returns ``(x_start, s)`` with ``x_start = s * up(x0_low) + (1 - s) * eps`` in distribution, eps
    white unit noise at the higher resolution and ``s = e / (e + sqrt(m_max) (1 - e))`` (§5).
    """
    if not 0.0 < e < 1.0:
        raise ValueError(f"signal fraction e must lie in (0, 1); got {e}")
    s = jump_signal_scale(e, m_max)
    u = resampler.up(x_low) * (s / e)
    # 2. fresh noise in every block's high coefficients
    z = _randn(u.shape, u, generator)
    u = u + (1.0 - s) * resampler.high_band(z)
    # 3. first-frame blocks have fewer cells: top their low coefficient up to the common level
    deficit = m_max - FIRST_CELLS
    if deficit > 0:
        b, c, _, h, w = x_low.shape
        std = s * (1.0 - e) / e * math.sqrt(deficit / FIRST_CELLS)
        top = _randn((b, c, 1, h, w), u, generator) * std
        u[:, :, :1] += top.repeat_interleave(2, dim=3).repeat_interleave(2, dim=4)
    return u, s


def fresh_jump(
    x0_low: torch.Tensor,
    e: float,
    generator: torch.Generator | None = None,
    resampler: HaarResampler = HAAR,
    m_max: int = M_MAX,
) -> tuple[torch.Tensor, float]:
    """The next stage's start from the lower stage's clean estimate, with all-fresh noise:
    ``s * up(x0_low) + (1 - s) * eps``, the §7 training start itself.

    Unlike :func:`jump` it drops what the lower stage's noise carried, so a low stage's small
    errors do not ride along into the next one; with an exact model it under-disperses a little
    (the clean estimate is a posterior mean, not a sample). The sampler passes ``x - sigma * v``:
    exact after the first stage; after a middle stage it also holds a little of the lower level's
    start (detail above that level weighs ``1 + s * sigma_end / (sigma_start - sigma_end)``, 1.1
    for windows 0.8 / 0.5). A checkpoint card opts in with ``"jump": "fresh"``.
    """
    if not 0.0 < e < 1.0:
        raise ValueError(f"signal fraction e must lie in (0, 1); got {e}")
    s = jump_signal_scale(e, m_max)
    u = resampler.up(x0_low)
    return s * u + (1.0 - s) * _randn(u.shape, u, generator), s


def stage_endpoints(x0: torch.Tensor, x0_low: torch.Tensor | None, eps: torch.Tensor, window,
                    resampler=HAAR) -> tuple[torch.Tensor, torch.Tensor]:
    """``(y_start, y_end)`` of a stage's straight path (§7)."""
    s = 1.0 - float(window.sigma_start)
    if x0_low is None:
        if abs(s) > 1e-12:
            raise ValueError(f"a stage starting at sigma {window.sigma_start} needs the lower stage's x0")
        y_start = eps
    else:
        y_start = s * resampler.up(x0_low) + (1.0 - s) * eps
    y_end = (1.0 - float(window.sigma_end)) * x0 + float(window.sigma_end) * eps
    return y_start, y_end
