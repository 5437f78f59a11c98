import pytest
import torch

from geoad.dirichlet import dirichlet_normality, fit_dirichlet, inv_digamma, simplified_normality


def test_inv_digamma_inverts_digamma():
    x = torch.tensor([1e-3, 0.1, 0.5, 1.0, 3.0, 50.0, 1e4], dtype=torch.float64)
    torch.testing.assert_close(inv_digamma(torch.digamma(x)), x, rtol=1e-10, atol=0)


@pytest.mark.parametrize("alpha", [[0.5, 2.0, 5.0, 1.0], [10.0, 3.0, 0.3, 0.7, 1.5, 0.1]])
def test_fit_recovers_known_parameters(alpha):
    alpha = torch.tensor(alpha, dtype=torch.float64)
    torch.manual_seed(0)
    samples = torch.distributions.Dirichlet(alpha).sample((20000,))
    fitted = fit_dirichlet(samples.log())
    assert ((fitted - alpha).abs() / alpha).max() < 0.05


def test_fits_are_independent_across_leading_dims():
    torch.manual_seed(1)
    alphas = torch.tensor([[1.0, 2.0, 3.0], [8.0, 0.5, 0.5]], dtype=torch.float64)
    log_p = torch.distributions.Dirichlet(alphas).sample((5000,)).transpose(0, 1).log()  # [2, 5000, 3]
    both = fit_dirichlet(log_p)
    torch.testing.assert_close(both[1], fit_dirichlet(log_p[1]))
    assert ((both - alphas).abs() / alphas).max() < 0.08


def test_scores_prefer_the_fitted_mode():
    alpha = torch.tensor([[20.0, 1.0, 1.0], [1.0, 20.0, 1.0], [1.0, 1.0, 20.0]], dtype=torch.float64)
    confident = (
        torch.eye(3).mul(0.85).add(0.05)
    )  # p_t[t] = 0.9, the others 0.05: what a network trained on normal data outputs
    uncertain = torch.full((3, 3), 1 / 3)
    log_p = torch.stack([confident, uncertain]).log()  # [B=2, T=3, K=3]
    normality = dirichlet_normality(log_p, alpha)
    assert normality[0] > normality[1]
    simplified = simplified_normality(log_p)
    torch.testing.assert_close(simplified, torch.tensor([0.9, 1 / 3], dtype=torch.float64))
