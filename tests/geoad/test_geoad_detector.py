import numpy as np
import pytest
import torch

from geoad.detector import ArtifactError, GeoADDetector
from geoad.metrics import auroc


@pytest.fixture(scope="module")
def held_out(fmnist_test, normal_class):
    """100 unseen trousers (normal) and 100 unseen bags (anomalous, class 8)."""
    images, labels = fmnist_test
    normal = images[labels == normal_class][:100]
    anomalous = images[labels == 8][:100]
    return torch.cat([normal, anomalous]), np.r_[np.ones(100, bool), np.zeros(100, bool)]


def test_tiny_detector_ranks_normal_above_anomalous(tiny_detector, held_out):
    images, is_normal = held_out
    scores = tiny_detector.score(images)
    assert auroc(scores.normality.numpy(), is_normal) > 0.9
    assert auroc(scores.simplified.numpy(), is_normal) > 0.8
    torch.testing.assert_close(
        scores.anomaly, -scores.normality
    )  # anomalib's orientation: higher = anomalous
    assert tiny_detector.alpha.shape == (8, 8) and (tiny_detector.alpha > 0).all()


def test_artifact_round_trip_gives_the_same_scores(tiny_detector, held_out, tmp_path):
    images, _ = held_out
    path = tmp_path / "det.pt"
    tiny_detector.save(path)
    loaded = GeoADDetector.load(path)
    assert loaded.transforms.spec == "8" and loaded.preprocessing == tiny_detector.preprocessing
    torch.testing.assert_close(loaded.score(images[:20]).anomaly, tiny_detector.score(images[:20]).anomaly)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["det.pt"]  # no temp file left behind


def test_fp32_and_bf16_scoring_agree_on_the_ranking(tiny_detector, held_out, tmp_path):
    images, is_normal = held_out
    path = tmp_path / "det.pt"
    tiny_detector.save(path)
    fp32 = GeoADDetector.load(path).to("cpu", bf16=False, channels_last=False)
    assert fp32.dtype == torch.float32
    a = auroc(fp32.score(images).normality.numpy(), is_normal)
    b = auroc(tiny_detector.score(images).normality.numpy(), is_normal)
    assert abs(a - b) < 0.02


def test_load_refuses_missing_and_foreign_files(tmp_path):
    with pytest.raises(ArtifactError, match="no detector file"):
        GeoADDetector.load(tmp_path / "missing.pt")
    torch.save({"weights": torch.zeros(3)}, tmp_path / "other.pt")
    with pytest.raises(ArtifactError, match="not a GeoAD detector"):
        GeoADDetector.load(tmp_path / "other.pt")
    (tmp_path / "cut.pt").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(ArtifactError, match="not a readable detector file"):
        GeoADDetector.load(tmp_path / "cut.pt")
