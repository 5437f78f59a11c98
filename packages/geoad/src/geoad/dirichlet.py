"""Dirichlet maximum likelihood on softmax outputs, and the two normality scores of the paper.

For each transformation t the softmax vectors p_i = softmax(f(T_t x_i)) of the normal training images are modelled
as Dirichlet(alpha_t). The fit (Minka, "Estimating a Dirichlet distribution", 2000) needs only mean_i log p_i:

    start (Wicker et al. 2008):  f = mean_i p_i,
                                 s0 = (K - 1) * -digamma(1) / (sum_j f_j log f_j - sum_j f_j mean_i log p_ij),
                                 alpha0 = s0 * f
    fixed point:                 alpha <- digamma^-1( digamma(sum_j alpha_j) + mean_i log p_i )

until the L2 change of alpha is below 1e-9, at most 1000 iterations. All T fits run at once, in float64.
"""

from __future__ import annotations

import torch
from torch import Tensor

EULER_GAMMA = 0.5772156649015329  # -digamma(1)


def inv_digamma(y: Tensor, newton_steps: int = 5) -> Tensor:
    """digamma^-1(y) by Newton's method from Minka's starting point (his appendix C)."""
    x = torch.where(y >= -2.22, torch.exp(y) + 0.5, -1.0 / (y + EULER_GAMMA))
    for _ in range(newton_steps):
        x = x - (torch.digamma(x) - y) / torch.polygamma(1, x)
    return x


def fit_dirichlet(log_p: Tensor, tol: float = 1e-9, max_iter: int = 1000) -> Tensor:
    """Maximum-likelihood Dirichlet parameters of N probability vectors given by their logs.

    ``log_p``: [..., N, K] (leading dims are independent fits, e.g. one per transformation) -> alpha [..., K].
    """
    log_p = log_p.double()
    k = log_p.shape[-1]
    mean_log_p = log_p.mean(-2)
    f = log_p.exp().mean(-2)
    s0 = (k - 1) * EULER_GAMMA / (torch.xlogy(f, f).sum(-1) - (f * mean_log_p).sum(-1))
    alpha = f * s0[..., None]
    active = torch.ones(alpha.shape[:-1], dtype=torch.bool, device=alpha.device)
    for _ in range(max_iter):
        new = inv_digamma(torch.digamma(alpha.sum(-1, keepdim=True)) + mean_log_p)
        # each fit stops on its own: converged rows keep their value while the others go on
        step = torch.linalg.vector_norm(new - alpha, dim=-1)
        alpha = torch.where(active[..., None], new, alpha)
        active &= step >= tol
        if not active.any():
            break
    return alpha


def dirichlet_normality(log_p: Tensor, alpha: Tensor) -> Tensor:
    """The paper's score, sum_t (alpha_t - 1) . log p_t (the log-density up to constants; higher = more normal).

    ``log_p``: [B, T, K] log-softmax outputs of the B images under each of the T transformations; ``alpha``: [T, K].
    """
    return ((alpha - 1) * log_p.double()).sum((-2, -1))


def simplified_normality(log_p: Tensor) -> Tensor:
    """The paper's simplified score: mean over t of p_t[t], the probability of the transformation actually applied."""
    return log_p.diagonal(dim1=-2, dim2=-1).double().exp().mean(-1)
