import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from geoad.evaluate import one_vs_rest
from geoad.metrics import anomaly_metrics, auroc, average_precision, mean_sem


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_auroc_and_average_precision_match_sklearn(seed):
    rng = np.random.default_rng(seed)
    positive = rng.random(300) < 0.2
    scores = np.round(rng.normal(size=300) + positive, 1)  # rounding makes ties, which both must handle alike
    assert auroc(scores, positive) == pytest.approx(roc_auc_score(positive, scores), abs=1e-12)
    assert average_precision(scores, positive) == pytest.approx(
        average_precision_score(positive, scores), abs=1e-12
    )


def test_orientation_normal_positive_equals_anomalous_positive_on_negated_score():
    rng = np.random.default_rng(3)
    is_normal = rng.random(200) < 0.1
    normality = rng.normal(size=200) + 2 * is_normal
    metrics = anomaly_metrics(normality, is_normal)
    assert metrics["auroc"] == pytest.approx(roc_auc_score(~is_normal, -normality))
    assert metrics["aupr_in"] == pytest.approx(average_precision_score(is_normal, normality))
    assert metrics["aupr_out"] == pytest.approx(average_precision_score(~is_normal, -normality))
    assert metrics["auroc"] > 0.8  # normal images were given higher normality


def test_mean_sem():
    mean, sem = mean_sem([1.0, 2.0, 3.0, 4.0])
    assert mean == 2.5 and sem == pytest.approx(np.std([1, 2, 3, 4], ddof=1) / 2)
    assert mean_sem([0.7]) == (0.7, 0.0)


def test_one_vs_rest_marks_the_chosen_class_normal(fmnist_test):
    _, labels = fmnist_test
    is_normal = one_vs_rest(labels, 3)
    assert is_normal.sum() == 1000 and (labels.numpy()[is_normal] == 3).all()
    with pytest.raises(ValueError):
        auroc(np.zeros(5), np.ones(5, dtype=bool))
