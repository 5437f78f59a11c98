"""Detection metrics, with the orientation spelled out.

The paper reports AUROC with the *normal* class as positive, ranked by the normality score. Ranking by the
anomaly score (= -normality) with the *anomalous* class as positive is the same number: both count the pairs
(normal, anomalous) in which the normal image looks more normal. AUPR is not symmetric, hence two of them:
AUPR-in (normal positive, normality score) and AUPR-out (anomalous positive, anomaly score).
"""

from __future__ import annotations

import math

import numpy as np
from scipy.stats import rankdata


def auroc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Area under the ROC curve = P(score of a random positive > that of a random negative), ties count half."""
    positive = np.asarray(positive, dtype=bool)
    n_pos, n_neg = positive.sum(), (~positive).sum()
    if n_pos == 0 or n_neg == 0:
        raise ValueError("AUROC needs both positive and negative samples")
    ranks = rankdata(scores)  # average ranks for ties (Mann-Whitney U)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def average_precision(scores: np.ndarray, positive: np.ndarray) -> float:
    """Area under the precision-recall curve as a step sum over the distinct thresholds (sklearn's definition)."""
    positive = np.asarray(positive, dtype=bool)
    if not positive.any():
        raise ValueError("average precision needs at least one positive sample")
    order = np.argsort(-np.asarray(scores), kind="mergesort")
    sorted_scores, hits = np.asarray(scores)[order], positive[order]
    last = np.r_[
        np.flatnonzero(np.diff(sorted_scores)), len(hits) - 1
    ]  # last position of each distinct score
    tp = np.cumsum(hits)[last]
    precision = tp / (last + 1)
    recall = tp / tp[-1]
    return float(np.sum(np.diff(recall, prepend=0.0) * precision))


def anomaly_metrics(normality: np.ndarray, is_normal: np.ndarray) -> dict[str, float]:
    """AUROC, AUPR-in and AUPR-out of a normality score (higher = more normal) against the true normal mask."""
    normality, is_normal = np.asarray(normality, dtype=np.float64), np.asarray(is_normal, dtype=bool)
    return {
        "auroc": auroc(
            normality, is_normal
        ),  # normal positive on normality == anomalous positive on -normality
        "aupr_in": average_precision(normality, is_normal),
        "aupr_out": average_precision(-normality, ~is_normal),
    }


def mean_sem(values: list[float]) -> tuple[float, float]:
    """Mean and standard error of the mean (sample standard deviation / sqrt(n)); SEM is 0 for one value."""
    x = np.asarray(values, dtype=np.float64)
    sem = x.std(ddof=1) / math.sqrt(len(x)) if len(x) > 1 else 0.0
    return float(x.mean()), float(sem)
