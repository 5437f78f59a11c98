"""GeoAD: deep anomaly detection with geometric transformations (Golan & El-Yaniv, NeurIPS 2018).

from geoad import GeoADDetector
scores = GeoADDetector.load("det.pt").score(images)   # scores.anomaly: higher = more anomalous

Train one: ``GeoADDetector.fit(GeoADDataModule("fashion-mnist", normal_class=0), FitConfig())``; run the paper's
one-vs-rest protocol: ``evaluate(EvalConfig(classes=[0], seeds=1, out_dir=Path("runs/x")))``.
"""

from geoad.data import DataError, GeoADDataModule, ImageData, load_dataset, load_images
from geoad.detector import ArtifactError, FitConfig, GeoADDetector, Scores
from geoad.evaluate import EvalConfig, EvalRun, evaluate
from geoad.lightning_model import GeoADModel
from geoad.metrics import anomaly_metrics
from geoad.torch_model import WideResNet, create_model
from geoad.transforms import Preprocessing, TransformSet

__all__ = [
    "ArtifactError",
    "DataError",
    "EvalConfig",
    "EvalRun",
    "FitConfig",
    "GeoADDataModule",
    "GeoADDetector",
    "GeoADModel",
    "ImageData",
    "Preprocessing",
    "Scores",
    "TransformSet",
    "WideResNet",
    "anomaly_metrics",
    "create_model",
    "evaluate",
    "load_dataset",
    "load_images",
]
