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


def test_a_fit_bounded_by_epochs_shows_a_few_progress_lines():
    # LogProgress counts steps against max_steps; a fit given epochs alone must still say how far it is
    from geoad.data import GeoADDataModule
    from geoad.detector import FIT_PROGRESS_LINES, FitConfig

    lines = []
    config = FitConfig(
        backbone="wrn-10-1", transforms="4", epochs=2, batch_size=32, accelerator="cpu", devices=1
    )
    torch.manual_seed(0)
    detector = GeoADDetector.fit(
        GeoADDataModule("fashion-mnist", 1, batch_size=32, limit=80), config, lines.append, "T4"
    )
    assert (
        detector.meta["train_steps"] == 2 * 10
    )  # 80 images x 4 transformations / 32, twice: as without lines
    assert 2 <= len(lines) <= FIT_PROGRESS_LINES + 1 and lines[-1].startswith("T4 step 20/20 (100%)")
    assert config.precision == "auto" and detector.meta["fit_config"]["precision"] in (
        "32-true",
        "bf16-mixed",
    )


def test_batch_scoring_before_fit_dirichlet_says_what_is_missing():
    # the batched scoring path (what the benchmark times) used to pass alpha=None on and fail with a TypeError
    from geoad.torch_model import create_model
    from geoad.transforms import Preprocessing, TransformSet

    transforms = TransformSet("4")
    model = create_model("wrn-10-1", len(transforms), 1)
    detector = GeoADDetector(model, transforms, Preprocessing(1, 28, 2), "wrn-10-1")
    images = torch.zeros(2, 1, 28, 28, dtype=torch.uint8)
    for scoring in (detector.batch_anomaly_scores, detector.score):
        with pytest.raises(ArtifactError, match="no Dirichlet parameters"):
            scoring(images)
