"""Closed-form consistency check (pyramid.md §6): with the Bayes-optimal velocity for Gaussian data,
sampling through the plan's windows and jumps reproduces the data's mean and covariance."""

import numpy as np
import pytest
import torch

from core import Cancelled, StagePlan, sample_pyramid
from core import resample
from core.plan import jump_signal_scale

SHAPE = (1, 5, 4, 4)  # C, T, H, W at full resolution: 80 dims, three stages down to (2, 1, 1)


def _basis_map(fn, shape):
    d = int(np.prod(shape))
    eye = torch.eye(d, dtype=torch.float64).reshape(d, *shape)
    return fn(eye).reshape(d, -1).T  # matrix M with fn(x).flatten() = M @ x.flatten()


def _gaussian(seed=0):
    rng = np.random.default_rng(seed)
    d = int(np.prod(SHAPE))
    a = rng.normal(size=(d, d)) / np.sqrt(d)
    sigma = a @ a.T * 0.8 + 0.2 * np.eye(d)
    mu = rng.normal(size=d) * 0.5
    return torch.tensor(mu), torch.tensor(sigma)


def _bayes_velocity(plan, mu_full, cov_full):
    """v(x) = E[(y_start - y_end)/(sigma_start - sigma_end) | x] for every stage, as linear maps."""
    n = plan.num_stages
    stage_data = []
    shape = SHAPE
    down = torch.eye(int(np.prod(SHAPE)), dtype=torch.float64)
    shapes = [SHAPE]
    for _ in range(n - 1):
        d_mat = _basis_map(resample.down_signal, shape)
        down = d_mat @ down
        shape = tuple(resample.down_signal(torch.zeros(1, *shape)).shape[1:])
        shapes.append(shape)
        stage_data.append(down.clone())
    downs = [torch.eye(int(np.prod(SHAPE)), dtype=torch.float64)] + stage_data
    downs, shapes = downs[::-1], shapes[::-1]  # lowest stage first

    def velocity(x, sigma, stage):
        k = stage.index
        dmat = downs[k]
        mu, cov = dmat @ mu_full, dmat @ cov_full @ dmat.T
        dim = mu.shape[0]
        proj = _basis_map(lambda t: resample.up(resample.down_signal(t)), shapes[k]) if k > 0 else None
        s = 0.0 if k == 0 else 1.0 - stage.sigma_start
        ss, se = stage.sigma_start, stage.sigma_end
        rho = (sigma - se) / (ss - se)
        eye = torch.eye(dim, dtype=torch.float64)
        low = proj if proj is not None else torch.zeros_like(eye)
        a = rho * s * low + (1 - rho) * (1 - se) * eye  # x = A x0 + sigma eps
        m = s * low - (1 - se) * eye  # target = M x0 / (ss - se) + eps
        xf = x.reshape(x.shape[0], -1).double()
        k_inv = torch.linalg.inv(a @ cov @ a.T + sigma**2 * eye)
        resid = xf - (a @ mu)[None]
        e_x0 = mu[None] + resid @ (cov @ a.T @ k_inv).T
        e_eps = sigma * resid @ k_inv.T
        v = e_x0 @ m.T / (ss - se) + e_eps
        return v.reshape(x.shape).float()

    return velocity


def _sample(plan, n=20000, seed=1, jump_mode="carry"):
    mu, cov = _gaussian()
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn(n, *SHAPE, generator=g)
    out = sample_pyramid(_bayes_velocity(plan, mu, cov), noise, plan, generator=g, jump_mode=jump_mode)
    x = out.reshape(n, -1).double()
    return x, mu, cov


def _errors(x, mu, cov):
    emp = torch.cov(x.T)
    mean_err = (x.mean(0) - mu).abs().max().item()
    var_err = ((torch.diagonal(emp) - torch.diagonal(cov)).abs() / torch.diagonal(cov)).mean().item()
    cov_err = ((emp - cov).norm() / cov.norm()).item()
    return mean_err, var_err, cov_err


def _floor(n=20000, seed=1):
    """The same error measures on exact draws from the Gaussian: the sampling-error floor."""
    mu, cov = _gaussian()
    g = torch.Generator().manual_seed(seed + 100)
    chol = torch.linalg.cholesky(cov)
    x = mu[None] + torch.randn(n, len(mu), generator=g, dtype=torch.float64) @ chol.T
    return _errors(x, mu, cov)


@pytest.mark.parametrize("schedule", ["0-0-200", "200-200-200", "0-200-200"])
def test_bayes_optimal_sampling_reproduces_the_gaussian(schedule):
    """Euler with 200 steps per stage: what remains is sampling error (the floor) plus a little
    discretisation error (about 1% of variance)."""
    plan = StagePlan.parse(schedule, shift=3.0)
    mean_err, var_err, cov_err = _errors(*_sample(plan))
    f_mean, f_var, f_cov = _floor()
    assert mean_err < 2 * f_mean + 0.01, (mean_err, f_mean)
    assert var_err < f_var + 0.02, (var_err, f_var)
    assert cov_err < 1.25 * f_cov, (cov_err, f_cov)


def test_wrong_jump_coefficient_misses_the_covariance(monkeypatch):
    """With s = e (no correction for the noise gained by upsampling) the covariance is far off."""
    plan = StagePlan.parse("200-200-200", shift=3.0)

    def naive_jump(x_low, e, generator=None, resampler=resample.HAAR, m_max=8):
        s = e
        u = resampler.up(x_low) * (s / e)
        z = torch.randn(u.shape, generator=generator)
        return u + (1 - s) * resampler.high_band(z), s

    monkeypatch.setattr("core.sampler.jump", naive_jump)
    _, var_err, cov_err = _errors(*_sample(plan, n=8000))
    assert cov_err > 0.2 or var_err > 0.2, (var_err, cov_err)


def test_fresh_jump_keeps_the_mean_and_gives_up_a_little_variance():
    """The fresh jump renoises the clean estimate (a posterior mean), so even the exact model loses
    the variance that estimate leaves out: a few percent here, where the carrying jump loses ~1%.
    That is its price; what it buys (a low stage's errors do not ride along) needs a real model."""
    plan = StagePlan.parse("200-200-200", shift=3.0)
    f_mean, _, _ = _floor(n=8000)
    ratios = {}
    for mode in ("carry", "fresh"):
        x, mu, cov = _sample(plan, n=8000, jump_mode=mode)
        mean_err, _, _ = _errors(x, mu, cov)
        assert mean_err < 2 * f_mean + 0.02, (mode, mean_err, f_mean)
        ratios[mode] = (torch.trace(torch.cov(x.T)) / torch.trace(cov)).item()
    assert 0.98 < ratios["carry"] < 1.02, ratios
    assert 0.9 < ratios["fresh"] < ratios["carry"] - 0.015, ratios
    with pytest.raises(ValueError, match="jump_mode"):
        sample_pyramid(lambda x, s, st: x, torch.zeros(1, *SHAPE), plan, jump_mode="teleport")


def test_callback_sees_every_step_and_can_cancel():
    plan = StagePlan.parse("2-3-1")
    seen = []
    noise = torch.randn(1, 1, 5, 4, 4, generator=torch.Generator().manual_seed(0))

    def zero(x, sigma, stage):
        return torch.zeros_like(x)

    sample_pyramid(zero, noise, plan, callback=lambda info: seen.append((info["stage"], info["step"], info["steps"])))
    assert seen == [(0, 1, 2), (0, 2, 2), (1, 1, 3), (1, 2, 3), (1, 3, 3), (2, 1, 1)]
    calls = []
    with pytest.raises(Cancelled):
        sample_pyramid(zero, noise, plan, callback=lambda info: calls.append(1) or len(calls) >= 3)
    assert len(calls) == 3
