"""TextScale: adaptive-scale text detection (Richardson et al., WACV 2020).

A segmentation network that also predicts the scale of the text looks at a down-scaled image first; the text
regions it finds are cut from the full-resolution image, brought to one canonical text height, packed into one
canvas and detected again there.

    from textscale import TextDetector
    pages = TextDetector.from_checkpoint("model.pt")([image])   # pages[0].polygons (N, 4, 2), pages[0].scores
"""

from textscale.data import TextDataModule
from textscale.icdar import evaluate, evaluate_folders, read_boxes, write_boxes
from textscale.lightning_model import TextScaleModel
from textscale.pipeline import AdaptiveConfig, detect_adaptive, detect_fixed, detect_oracle
from textscale.postprocess import PostConfig
from textscale.predictor import Page, TextDetector
from textscale.torch_model import TextScaleNet

__version__ = "0.1.0"
__all__ = [
    "AdaptiveConfig",
    "Page",
    "PostConfig",
    "TextDataModule",
    "TextDetector",
    "TextScaleModel",
    "TextScaleNet",
    "detect_adaptive",
    "detect_fixed",
    "detect_oracle",
    "evaluate",
    "evaluate_folders",
    "read_boxes",
    "write_boxes",
]
