import math

import pytest
import torch

from core.plan import jump_signal_scale
from core.resample import HAAR, down_noise, down_signal, fresh_jump, jump, up


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_up_down_is_an_orthogonal_projector():
    x = torch.randn(2, 3, 9, 8, 12, generator=_gen())
    y = torch.randn(2, 3, 9, 8, 12, generator=_gen(1))
    p = up(down_signal(x))
    assert torch.allclose(up(down_signal(p)), p, atol=1e-6), "P P = P"
    assert torch.dot(p.flatten(), y.flatten()).item() == pytest.approx(
        torch.dot(x.flatten(), up(down_signal(y)).flatten()).item(), rel=1e-5
    ), "P is symmetric"
    assert down_signal(x).shape == (2, 3, 5, 4, 6)
    assert up(down_signal(x)).shape == x.shape


def test_down_signal_keeps_a_constant_and_first_frame_is_spatial_only():
    x = torch.full((1, 1, 5, 4, 4), 0.7)
    assert torch.allclose(down_signal(x), torch.full((1, 1, 3, 2, 2), 0.7))
    x = torch.zeros(1, 1, 3, 2, 2)
    x[:, :, 0] = 1.0  # only the first frame
    low = down_signal(x)
    assert low[0, 0, 0].tolist() == [[1.0]] and low[0, 0, 1].tolist() == [[0.0]]


def test_down_noise_keeps_white_noise_white_and_unit():
    eps = torch.randn(8, 16, 9, 32, 32, generator=_gen(2))
    low = down_noise(eps)
    assert low.shape == (8, 16, 5, 16, 16)
    for part in (low[:, :, :1], low[:, :, 1:]):  # first frame (m = 4) and the rest (m = 8)
        assert part.mean().item() == pytest.approx(0.0, abs=0.01)
        assert part.var().item() == pytest.approx(1.0, abs=0.03)
    # neighbours (in space and time) stay uncorrelated
    for a, b in ((low[..., :-1], low[..., 1:]), (low[:, :, 1:-1], low[:, :, 2:]), (low[:, :, :1], low[:, :, 1:2])):
        corr = torch.corrcoef(torch.stack([a.flatten(), b.flatten()]))[0, 1].item()
        assert abs(corr) < 0.02


def _residual_samples(e, n_draws=20000, shape=(1, 3, 2, 2), m_max=8, seed=3):
    g = _gen(seed)
    x0_low = torch.randn(1, *shape, generator=_gen(99)) * 2 + 0.5  # any fixed clean low latent
    noise = torch.randn(n_draws, *shape, generator=g)
    x_low = e * x0_low + (1 - e) * noise
    x_start, s = jump(x_low, e, generator=g, m_max=m_max)
    return (x_start - s * up(x0_low)).flatten(1), s


@pytest.mark.parametrize("e", [1 / 3, 2 / 3, 0.9])
def test_jump_residual_is_white_with_variance_one_minus_s_squared(e):
    r, s = _residual_samples(e)
    assert s == pytest.approx(jump_signal_scale(e))
    cov = torch.cov(r.T.double())
    var = torch.diagonal(cov)
    # every element, first frame included, carries variance (1 - s)^2
    assert torch.allclose(var, torch.full_like(var, (1 - s) ** 2), rtol=0.05), (var.min(), var.max(), (1 - s) ** 2)
    corr = cov / torch.sqrt(var[:, None] * var[None, :])
    off = corr - torch.eye(len(var), dtype=corr.dtype)
    assert off.abs().max().item() < 0.04, "residual must be uncorrelated"
    assert r.mean(0).abs().max().item() < 0.02


@pytest.mark.parametrize("e", [1 / 3, 0.9])
def test_fresh_jump_is_the_training_start(e):
    """From a clean low latent, the fresh jump draws s * up(x0_low) + (1 - s) * white noise (§7's y_start)."""
    shape = (2, 3, 2, 2)
    x0_low = torch.randn(1, *shape, generator=_gen(99)) * 2 + 0.5
    x_start, s = fresh_jump(x0_low.expand(20000, *shape), e, generator=_gen(3))
    assert s == pytest.approx(jump_signal_scale(e))
    r = (x_start - s * up(x0_low)).flatten(1)
    cov = torch.cov(r.T.double())
    var = torch.diagonal(cov)
    assert torch.allclose(var, torch.full_like(var, (1 - s) ** 2), rtol=0.05)
    corr = cov / torch.sqrt(var[:, None] * var[None, :])
    assert (corr - torch.eye(len(var), dtype=corr.dtype)).abs().max().item() < 0.04
    assert r.mean(0).abs().max().item() < 0.02
    with pytest.raises(ValueError):
        fresh_jump(x0_low, 1.0)


def test_wrong_jump_coefficient_would_be_caught():
    """The same check with s = e (no renoising correction) fails: the test has teeth."""
    e = 2 / 3
    g = _gen(5)
    shape = (1, 3, 2, 2)
    x0_low = torch.randn(1, *shape, generator=_gen(99))
    x_low = e * x0_low + (1 - e) * torch.randn(20000, *shape, generator=g)
    naive = up(x_low)  # plain upsampling, signal scale e, block-constant noise
    r = (naive - e * up(x0_low)).flatten(1)
    cov = torch.cov(r.T.double())
    corr = cov / torch.sqrt(torch.diagonal(cov)[:, None] * torch.diagonal(cov)[None, :])
    assert (corr - torch.eye(len(cov), dtype=corr.dtype)).abs().max().item() > 0.5


def test_spatial_only_jump_matches_pyramid_flow_rule():
    """2x2 blocks only (one latent frame, m_max = 4): alpha = 1/(2 - e), block noise corr -1/3.

    Pyramid Flow adds ``sqrt(3)/2 * (1 - s) * n'`` with ``n'`` of unit variance and correlation -1/3
    inside a block, i.e. covariance ``(1 - s)^2 (I - J/4)``. (pyramid.md §5 writes the covariance as
    ``(1 - s)^2 (4/3)(I - J/4)``, which is ``n'``'s own covariance times ``(1 - s)^2``: with that scale
    the residual variance would be 1.25 (1 - s)^2, not the (1 - s)^2 §5 itself requires; see
    test_jump_residual_is_white_with_variance_one_minus_s_squared.)"""
    e = 0.6
    g = _gen(7)
    shape = (1, 1, 2, 2)
    x0_low = torch.randn(1, *shape, generator=_gen(11))
    x_low = e * x0_low + (1 - e) * torch.randn(40000, *shape, generator=g)
    x_start, s = jump(x_low, e, generator=g, m_max=4)
    alpha = s / e
    assert alpha == pytest.approx(1 / (2 - e))
    added = (x_start - alpha * up(x_low))[:, 0, 0, :2, :2].reshape(-1, 4)  # one 2x2 block
    cov = torch.cov(added.T.double())
    unit_corr = (4 / 3) * (torch.eye(4, dtype=torch.float64) - torch.ones(4, 4, dtype=torch.float64) / 4)
    expected = (math.sqrt(3) / 2 * (1 - s)) ** 2 * unit_corr
    assert torch.allclose(cov, expected, atol=0.03 * (1 - s) ** 2)
    corr = cov[0, 1] / cov[0, 0]
    assert corr.item() == pytest.approx(-1 / 3, abs=0.02)


def test_resampling_refuses_odd_latents():
    with pytest.raises(ValueError, match="cannot be halved"):
        down_signal(torch.zeros(1, 1, 4, 4, 4))
    with pytest.raises(ValueError):
        HAAR.block_mean(torch.zeros(1, 1, 3, 5, 4))
