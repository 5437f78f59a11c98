"""Quadformer: mixed-resolution ViT tokens from a saliency quadtree (Ronen, Levy & Golbert, CVPR-W 2023).

    from quadformer import QuadformerPredictor
    probs = QuadformerPredictor.load("runs/pb64/model.pt").predict_proba(images)

    from quadformer import QuadtreeSpec, quadtree_tokens
    tokens = quadtree_tokens(importance, QuadtreeSpec(128, 128, 8, 32), num_tokens=64)

Names are imported on first use, so ``import quadformer.quadtree`` does not pay for Lightning.
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "QuadtreeSpec": "quadtree",
    "TokenBudgetError": "quadtree",
    "Tokens": "quadtree",
    "quadtree_tokens": "quadtree",
    "uniform_tokens": "quadtree",
    "Scorer": "scorers",
    "create_scorer": "scorers",
    "MixedResolutionViT": "torch_model",
    "Quadformer": "torch_model",
    "create_vit": "torch_model",
    "ToMeViT": "tome",
    "ClutterSettings": "data",
    "ImageDataModule": "data",
    "QuadformerModule": "lightning_model",
    "build_network": "lightning_model",
    "QuadformerPredictor": "predictor",
    "draw_mosaic": "mosaic",
    "fit": "train",
    "load_profile": "train",
}
__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'quadformer' has no attribute {name!r}")
    return getattr(importlib.import_module(f"quadformer.{_WHERE[name]}"), name)
