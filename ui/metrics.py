"""How close two videos are: PSNR and SSIM per frame, averaged (numpy only).

* :func:`psnr` on RGB values 0..255; identical frames give ``inf``.
* :func:`ssim` on luminance (BT.601) with an 8x8 uniform window, stride 1, the constants of
  Wang et al. (2004): ``K1 = 0.01``, ``K2 = 0.03``, ``L = 255``. Identical frames give 1.0.
* :func:`compare_videos` returns per-frame lists and their means for two ``(T, H, W, 3)`` videos.
"""
from __future__ import annotations

import math

import numpy as np

WINDOW = 8
_C1 = (0.01 * 255) ** 2
_C2 = (0.03 * 255) ** 2


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB between two images (or videos) of the same shape."""
    a, b = _same_shape(a, b)
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10.0 * math.log10(255.0**2 / mse)


def luminance(frame: np.ndarray) -> np.ndarray:
    """Y of an RGB frame (H, W, 3) as float64; a 2-D frame is returned as is."""
    frame = np.asarray(frame, dtype=np.float64)
    if frame.ndim == 2:
        return frame
    return frame[..., 0] * 0.299 + frame[..., 1] * 0.587 + frame[..., 2] * 0.114


def _window_means(x: np.ndarray, k: int) -> np.ndarray:
    """Mean of every k x k window (valid positions only), with an integral image."""
    s = np.pad(x, ((1, 0), (1, 0))).cumsum(0).cumsum(1)
    total = s[k:, k:] - s[:-k, k:] - s[k:, :-k] + s[:-k, :-k]
    return total / (k * k)


def ssim(a: np.ndarray, b: np.ndarray, window: int = WINDOW) -> float:
    """Mean structural similarity of two frames on luminance (8x8 windows)."""
    a, b = _same_shape(a, b)
    x, y = luminance(a), luminance(b)
    k = min(window, x.shape[0], x.shape[1])
    mx, my = _window_means(x, k), _window_means(y, k)
    vx = _window_means(x * x, k) - mx * mx
    vy = _window_means(y * y, k) - my * my
    cov = _window_means(x * y, k) - mx * my
    n = k * k
    if n > 1:  # unbiased (co)variances, as in the paper's reference code
        vx, vy, cov = vx * n / (n - 1), vy * n / (n - 1), cov * n / (n - 1)
    num = (2 * mx * my + _C1) * (2 * cov + _C2)
    den = (mx * mx + my * my + _C1) * (vx + vy + _C2)
    return float(np.mean(num / den))


def compare_videos(a: np.ndarray, b: np.ndarray) -> dict:
    """PSNR and SSIM of every frame pair, and their means (``psnr`` mean is ``inf`` only when
    every frame is identical; infinite frames are otherwise left out of the mean)."""
    a, b = _same_shape(a, b)
    if a.ndim != 4:
        raise ValueError(f"expected videos of shape (T, H, W, 3); got {a.shape}")
    p = [psnr(x, y) for x, y in zip(a, b)]
    s = [ssim(x, y) for x, y in zip(a, b)]
    finite = [v for v in p if math.isfinite(v)]
    return {
        "frames": len(p),
        "psnr": p,
        "ssim": s,
        "psnr_mean": float(np.mean(finite)) if finite else math.inf,
        "ssim_mean": float(np.mean(s)),
    }


def _same_shape(a, b) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        raise ValueError(f"the two videos differ in shape: {a.shape} and {b.shape}")
    return a, b
