"""Section 7 targets, computed independently (numpy, written-out formulas) for known x0 and noise."""
import math

import numpy as np
import pytest
import torch

from core import StagePlan
from core.resample import down_signal
from finetune.targets import Window, pyramidal_target


def _up_numpy(y: np.ndarray) -> np.ndarray:
    """Nearest-neighbour repeat: first frame 2x2 spatially, the rest 2x2x2."""
    y = np.repeat(np.repeat(y, 2, axis=3), 2, axis=4)
    return np.concatenate([y[:, :, :1], np.repeat(y[:, :, 1:], 2, axis=2)], axis=2)


def _windows_by_hand():
    """Default three-stage windows of pyramid.md section 4, from the formulas."""
    b = [1.0, 2 / 3, 1 / 3, 0.0]
    out = [(1.0, b[1])]
    for k in (1, 2):
        e = 1 - b[k]
        s = e / (e + math.sqrt(8) * (1 - e))
        out.append((1 - s, b[k + 1]))
    return out


def test_plan_windows_are_the_documented_ones():
    plan = StagePlan.parse("1-1-1")
    got = [(s.sigma_start, s.sigma_end) for s in plan.stages]
    assert np.allclose(got, _windows_by_hand())
    assert np.allclose([w[0] for w in got], [1.0, 0.850, 0.586], atol=1e-3)


@pytest.mark.parametrize("stage", [0, 1, 2])
def test_targets_match_section_7(stage):
    rng = np.random.default_rng(stage)
    shapes = [(2, 2, 2), (3, 4, 4), (5, 8, 8)]
    t, h, w = shapes[stage]
    x0 = rng.normal(size=(3, 16, t, h, w)).astype(np.float64)
    eps = rng.normal(size=x0.shape)
    rho = np.array([0.0, 0.37, 1.0])
    sigma_start, sigma_end = _windows_by_hand()[stage]
    s = 1.0 - sigma_start
    x0_low = None
    if stage > 0:
        tl, hl, wl = shapes[stage - 1]
        x0_low = rng.normal(size=(3, 16, tl, hl, wl))
        y_start = s * _up_numpy(x0_low) + (1 - s) * eps
    else:
        assert s == 0.0
        y_start = eps
    y_end = (1 - sigma_end) * x0 + sigma_end * eps
    r = rho.reshape(-1, 1, 1, 1, 1)
    x_ref = r * y_start + (1 - r) * y_end
    sigma_ref = sigma_end + rho * (sigma_start - sigma_end)
    target_ref = (y_start - y_end) / (sigma_start - sigma_end)

    as_t = lambda a: None if a is None else torch.from_numpy(a)  # noqa: E731
    x, sigma, target = pyramidal_target(as_t(x0), as_t(x0_low), as_t(eps), torch.from_numpy(rho),
                                        Window(sigma_start, sigma_end))
    assert np.allclose(x.numpy(), x_ref, atol=1e-12)
    assert np.allclose(sigma.numpy(), sigma_ref, atol=1e-12)
    assert np.allclose(target.numpy(), target_ref, atol=1e-12)
    # the endpoints: rho = 0 is the stage's end, rho = 1 its start
    assert np.allclose(x[0].numpy(), y_end[0]) and np.allclose(x[2].numpy(), y_start[2])
    # the target is the path's derivative dx/dsigma
    x_b, sigma_b, _ = pyramidal_target(as_t(x0), as_t(x0_low), as_t(eps), torch.full((3,), 0.5, dtype=torch.float64),
                                       Window(sigma_start, sigma_end))
    x_a, sigma_a, _ = pyramidal_target(as_t(x0), as_t(x0_low), as_t(eps), torch.full((3,), 0.25, dtype=torch.float64),
                                       Window(sigma_start, sigma_end))
    slope = (x_b - x_a) / (sigma_b - sigma_a).view(-1, 1, 1, 1, 1)
    assert np.allclose(slope.numpy(), target_ref, atol=1e-9)


def test_full_resolution_target_is_wan_plus_a_high_frequency_term():
    """Last stage: target = (eps - x0) + s/(1-s) (up(x0_low) - x0), x0_low = down_signal(x0)."""
    plan = StagePlan.parse("1-1-1")
    last = plan.stages[-1]
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(2, 16, 5, 8, 8, generator=g, dtype=torch.float64)
    eps = torch.randn(x0.shape, generator=g, dtype=torch.float64)
    low = down_signal(x0)
    _, _, target = pyramidal_target(x0, low, eps, torch.rand(2, generator=g, dtype=torch.float64), last)
    s = 1 - last.sigma_start
    up = torch.from_numpy(_up_numpy(low.numpy()))
    assert torch.allclose(target, (eps - x0) + s / (1 - s) * (up - x0), atol=1e-12)


def test_first_stage_refuses_a_low_latent_it_cannot_use_and_later_stages_need_one():
    x0 = torch.zeros(1, 16, 3, 4, 4)
    with pytest.raises(ValueError, match="lower stage"):
        pyramidal_target(x0, None, torch.zeros_like(x0), 0.5, Window(0.85, 1 / 3))
    with pytest.raises(ValueError, match="shape"):
        pyramidal_target(x0, None, torch.zeros(1, 16, 3, 4, 2), 0.5, Window(1.0, 0.5))
