"""ui.metrics: PSNR and SSIM against known cases."""
from __future__ import annotations

import math

import numpy as np
import pytest

from ui import metrics


def _video(seed: int = 0, shape=(3, 32, 48, 3)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)


def test_identical_videos_are_infinite_psnr_and_ssim_one():
    v = _video()
    result = metrics.compare_videos(v, v.copy())
    assert result["frames"] == 3
    assert result["psnr"] == [math.inf] * 3 and result["psnr_mean"] == math.inf
    assert result["ssim"] == pytest.approx([1.0] * 3) and result["ssim_mean"] == pytest.approx(1.0)


def test_psnr_of_a_known_error():
    # Every value off by exactly 5: MSE = 25, PSNR = 10 log10(255^2 / 25) = 34.15 dB.
    a = np.full((2, 16, 16, 3), 100, dtype=np.uint8)
    b = a + 5
    expected = 10 * math.log10(255**2 / 25)
    assert metrics.psnr(a[0], b[0]) == pytest.approx(expected)
    assert metrics.compare_videos(a, b)["psnr_mean"] == pytest.approx(expected)


def test_psnr_of_gaussian_noise_matches_its_variance():
    rng = np.random.default_rng(1)
    a = np.full((64, 64, 3), 128.0)
    noise = rng.normal(0, 10, size=a.shape)
    b = np.clip(np.rint(a + noise), 0, 255)
    # sigma 10: MSE ~ 100 -> PSNR ~ 28.13 dB (within sampling error of 64*64*3 values)
    assert metrics.psnr(a.astype(np.uint8), b.astype(np.uint8)) == pytest.approx(28.13, abs=0.15)


def test_ssim_falls_with_noise_and_a_constant_shift_barely_matters():
    rng = np.random.default_rng(2)
    x = np.tile(np.linspace(0, 255, 64), (64, 1))
    img = np.stack([x, x.T, (x + x.T) / 2], axis=-1).astype(np.uint8)
    noisy = np.clip(img + rng.normal(0, 25, img.shape), 0, 255).astype(np.uint8)
    very_noisy = np.clip(img + rng.normal(0, 60, img.shape), 0, 255).astype(np.uint8)
    s1, s2 = metrics.ssim(img, noisy), metrics.ssim(img, very_noisy)
    assert 0 < s2 < s1 < 1
    assert metrics.ssim(img, np.clip(img.astype(int) + 3, 0, 255).astype(np.uint8)) > 0.99


def test_ssim_of_independent_noise_is_near_zero_and_of_inverse_is_negative():
    a, b = _video(1, (1, 64, 64, 3))[0], _video(2, (1, 64, 64, 3))[0]
    assert abs(metrics.ssim(a, b)) < 0.05
    assert metrics.ssim(a, 255 - a) < -0.5


def test_window_means_match_a_direct_computation():
    x = np.arange(100, dtype=float).reshape(10, 10) ** 1.5
    got = metrics._window_means(x, 8)
    assert got.shape == (3, 3)
    assert got[1, 2] == pytest.approx(x[1:9, 2:10].mean())


def test_shapes_must_match():
    with pytest.raises(ValueError, match="differ in shape"):
        metrics.compare_videos(_video(0, (2, 8, 8, 3)), _video(0, (2, 8, 16, 3)))
