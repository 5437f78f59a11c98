"""GeoAD: deep anomaly detection with geometric transformations (Golan & El-Yaniv, NeurIPS 2018).

from geoad import GeoADDetector
scores = GeoADDetector.load("det.pt").score(images)   # scores.anomaly: higher = more anomalous
"""

from geoad.data import GeoADDataModule
from geoad.detector import FitConfig, GeoADDetector, Scores
from geoad.lightning_model import GeoADModel
from geoad.torch_model import WideResNet, create_model
from geoad.transforms import Preprocessing, TransformSet

__all__ = [
    "FitConfig",
    "GeoADDataModule",
    "GeoADDetector",
    "GeoADModel",
    "Preprocessing",
    "Scores",
    "TransformSet",
    "WideResNet",
    "create_model",
]
