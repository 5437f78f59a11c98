"""Baselines on the same splits: RAW-OC-SVM and IsolationForest on raw pixels.

Features are the network's own inputs, flattened: pixels scaled to [-1, 1], Fashion-MNIST padded to 32x32 (so a
28x28 image is 1024 numbers), as the paper's RAW-OC-SVM. OC-SVM training is quadratic in the number of samples, so
the normal training set is subsampled to ``max_train`` images (seeded; the paper did the same for CatsVsDogs).

Two ways to choose the OC-SVM's nu and gamma from the paper's grid (nu in linspace(0.1, 0.9, 9), gamma in
2^linspace(-7, 2, 10)):

* label-free (the honest baseline): hold out ``holdout`` of the normal training images, fit every grid point on
  the rest, and keep the point whose held-out acceptance rate (fraction with decision >= 0) is closest to the
  1 - nu the nu-SVM promises on training data; ties go to the first point in grid order (nu, then gamma,
  ascending). It rejects over-fitted kernels (large gamma accepts few unseen normal images) but cannot tell
  which nu separates the anomalies best: no criterion without anomalies can.
* hindsight (the paper's): the grid point with the best *test* AUROC. It uses the test labels, so it is an upper
  bound of the method, reported separately and labelled as such.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
from sklearn.ensemble import IsolationForest
from sklearn.svm import OneClassSVM
from torch import Tensor

from geoad.metrics import auroc
from geoad.transforms import Preprocessing

NU_GRID = np.linspace(0.1, 0.9, 9)
GAMMA_GRID = np.logspace(-7, 2, num=10, base=2)


def raw_features(images: Tensor, preprocessing: Preprocessing) -> np.ndarray:
    """uint8 [N, C, H, W] -> float32 [N, D]: the padded, [-1, 1]-scaled pixels the network would see."""
    return preprocessing(images).flatten(1).numpy()


class Scorer(Protocol):
    """A fitted scikit-learn outlier detector: OneClassSVM and IsolationForest both score this way."""

    def decision_function(self, x: np.ndarray) -> np.ndarray: ...


@dataclass
class BaselineResult:
    normality: np.ndarray  # test scores, higher = more normal
    params: dict[str, float]
    model: Scorer  # the fitted scikit-learn estimator, for timing its scoring path


def _subsample(x: np.ndarray, n: int | None, seed: int) -> np.ndarray:
    if n is None or len(x) <= n:
        return x
    return x[np.random.default_rng(seed).choice(len(x), n, replace=False)]


def ocsvm_label_free(
    train: np.ndarray, test: np.ndarray, *, seed: int = 0, holdout: float = 0.2, max_train: int | None = 2000
) -> BaselineResult:
    """OC-SVM with nu and gamma chosen on held-out *normal* images only (see the module doc)."""
    train = _subsample(train, max_train, seed)
    perm = np.random.default_rng(seed + 1).permutation(len(train))
    n_hold = max(1, int(holdout * len(train)))
    held, fit_part = train[perm[:n_hold]], train[perm[n_hold:]]
    best: tuple[float, float] | None = None
    best_gap = np.inf
    for nu, gamma in itertools.product(NU_GRID, GAMMA_GRID):
        accepted = (OneClassSVM(nu=nu, gamma=gamma).fit(fit_part).decision_function(held) >= 0).mean()
        gap = abs(accepted - (1 - nu))
        if gap < best_gap:
            best, best_gap = (nu, gamma), gap
    assert best is not None  # every gap is finite, so the first grid point is taken at least
    nu, gamma = best
    model = OneClassSVM(nu=nu, gamma=gamma).fit(train)
    params = {"nu": float(nu), "gamma": float(gamma), "heldout_acceptance_gap": float(best_gap)}
    return BaselineResult(model.decision_function(test), params, model)


def ocsvm_hindsight(
    train: np.ndarray,
    test: np.ndarray,
    test_is_normal: np.ndarray,
    *,
    seed: int = 0,
    max_train: int | None = 2000,
) -> BaselineResult:
    """The paper's OC-SVM: the grid point with the best test AUROC. Uses test labels: an optimistic bound."""
    train = _subsample(train, max_train, seed)
    best: tuple[float, float, float, np.ndarray, OneClassSVM] | None = None
    for nu, gamma in itertools.product(NU_GRID, GAMMA_GRID):
        model = OneClassSVM(nu=nu, gamma=gamma).fit(train)
        scores = model.decision_function(test)
        score = auroc(scores, test_is_normal)
        if best is None or score > best[0]:
            best = (score, nu, gamma, scores, model)
    assert best is not None  # the first grid point is always taken
    _, nu, gamma, scores, model = best
    return BaselineResult(scores, {"nu": float(nu), "gamma": float(gamma)}, model)


def isolation_forest(train: np.ndarray, test: np.ndarray, *, seed: int = 0) -> BaselineResult:
    model = IsolationForest(n_estimators=100, random_state=seed).fit(train)
    # decision_function: positive for inliers, so it already reads "higher = more normal"
    return BaselineResult(model.decision_function(test), {"n_estimators": 100}, model)


def baseline_normality(model: Scorer, images: Tensor, preprocessing: Preprocessing) -> Tensor:
    """The scoring path of a fitted baseline, from uint8 images to normality scores (what the benchmark times)."""
    return torch.from_numpy(model.decision_function(raw_features(images, preprocessing)))
