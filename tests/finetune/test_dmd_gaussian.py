"""The DMD check with a known answer (distill.md): for Gaussian data the real score is exact in
closed form. DMD with that score and a critic fitted to the generator's outputs (here the exact
score of the generator's own Gaussian, its moments measured on a large batch) must move an affine
generator's mean and covariance toward the data's; with the two scores swapped it must move
them away. This tests the gradient of :mod:`finetune.distill.losses` itself, through the same
re-noising and x0 conversion the training loop uses."""

import pytest
import torch

from core.resample import HAAR

from core import StagePlan
from finetune.distill.losses import dmd_gradient, dmd_loss, draw_levels, real_and_fake_x0

D = 24
STAGE = StagePlan.parse("0-0-1", guidance=1.0).stages[0]  # one stage: sigma 1 -> 0


def _posterior_velocity(mean: torch.Tensor, cov: torch.Tensor):
    """The exact velocity of data N(mean, cov) under x = (1 - t) x0 + t eps: (x - E[x0|x]) / t."""
    eye = torch.eye(len(mean), dtype=cov.dtype)

    def velocity(x, sigma):
        t = sigma.view(-1, 1).to(x.dtype)
        a = 1.0 - t
        out = torch.empty_like(x)
        for i in range(len(x)):  # E[x0|x] = mean + a cov (a^2 cov + t^2 I)^-1 (x - a mean)
            k = a[i] * cov @ torch.linalg.inv(a[i] ** 2 * cov + t[i] ** 2 * eye)
            x0 = mean + k @ (x[i] - a[i] * mean)
            out[i] = (x[i] - x0) / t[i]
        return out

    return velocity


def _distances(A, b, mu, sigma):
    return float(torch.linalg.norm(b - mu)), float(torch.linalg.norm(A @ A.T - sigma))


def _run(swap: bool, steps: int = 200, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(D, D, generator=g, dtype=torch.float64))
    sigma = q @ torch.diag(torch.linspace(0.3, 2.0, D, dtype=torch.float64)) @ q.T
    mu = torch.randn(D, generator=g, dtype=torch.float64)
    real = _posterior_velocity(mu, sigma)
    A = (0.6 * torch.eye(D, dtype=torch.float64)).requires_grad_(True)
    b = torch.zeros(D, dtype=torch.float64, requires_grad=True)
    start = _distances(A.detach(), b.detach(), mu, sigma)
    opt = torch.optim.Adam([A, b], lr=0.01)
    for _ in range(steps):
        z = torch.randn(256, D, generator=g, dtype=torch.float64)
        x0_hat = z @ A.T + b
        with torch.no_grad():  # the critic, fitted to the generator's outputs
            big = torch.randn(4096, D, generator=g, dtype=torch.float64) @ A.T + b
            fake = _posterior_velocity(big.mean(0), torch.cov(big.T))
        teacher, critic = (fake, real) if swap else (real, fake)
        eps = torch.randn(x0_hat.shape, generator=g, dtype=torch.float64)
        x0_real, x0_fake, _ = real_and_fake_x0(teacher, critic, x0_hat, STAGE, eps, draw_levels(256, g, 0.02),
                                               path=True, conversion="plain")
        loss = dmd_loss(x0_hat, dmd_gradient(x0_hat, x0_real, x0_fake))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return start, _distances(A.detach(), b.detach(), mu, sigma)


def test_dmd_moves_a_gaussian_generator_toward_the_data():
    (mean0, cov0), (mean1, cov1) = _run(swap=False)
    assert mean1 < 0.3 * mean0, (mean0, mean1)
    assert cov1 < 0.2 * cov0, (cov0, cov1)


def test_with_the_scores_swapped_it_moves_away():
    (mean0, cov0), (mean1, cov1) = _run(swap=True)
    assert mean1 > 1.5 * mean0 and cov1 > 1.5 * cov0, (mean0, mean1, cov0, cov1)


def test_the_surrogate_loss_has_the_dmd_gradient():
    x0_hat = torch.randn(3, 4, 2, requires_grad=True)
    real, fake = torch.randn(3, 4, 2), torch.randn(3, 4, 2)
    grad = dmd_gradient(x0_hat.detach(), real, fake)
    dmd_loss(x0_hat, grad).backward()
    assert torch.allclose(x0_hat.grad, grad / x0_hat.numel())
    scale = (x0_hat.detach() - real).abs().mean(dim=(1, 2), keepdim=True)
    assert torch.allclose(grad, (fake - real) / (scale + 1e-6))
    nan = dmd_gradient(torch.zeros(1, 2), torch.zeros(1, 2), torch.tensor([[float("nan"), 1.0]]))
    assert torch.isfinite(nan).all()


@pytest.mark.parametrize("path", [True, False])
def test_noising_puts_a_sample_inside_the_exit_stages_window(path):
    from finetune.distill.losses import noised

    stage = StagePlan.parse("2-2-1", boundaries=[0.8, 0.5], guidance=1.0, grid="uniform").stages[1]
    x0, eps = torch.randn(4, 16, 3, 4, 4), torch.randn(4, 16, 3, 4, 4)
    pos = torch.tensor([0.02, 0.5, 0.98, 0.3])
    point = noised(x0, eps, pos, stage, path)
    expected = stage.sigma_end + pos * (stage.sigma_start - stage.sigma_end)
    assert torch.allclose(point.sigma, expected)
    if not path:  # the forward process: (1 - t) x0 + t eps, target eps - x0
        t = expected.view(-1, 1, 1, 1, 1)
        assert torch.allclose(point.x, (1 - t) * x0 + t * eps, atol=1e-6)
        assert torch.allclose(point.target, eps - x0, atol=1e-6)
    else:  # the stage's own path; its start from the clean video the stage started from
        low = torch.randn(4, 16, 2, 2, 2)
        start = noised(x0, eps, torch.ones(4), stage, path, low).x
        s = 1.0 - stage.sigma_start
        assert torch.allclose(start, s * HAAR.up(low) + (1 - s) * eps, atol=1e-5)
        fallback = noised(x0, eps, torch.ones(4), stage, path).x  # without it: block means of x0
        assert torch.allclose(fallback, s * HAAR.up(HAAR.down_signal(x0)) + (1 - s) * eps, atol=1e-5)
