"""Quadformer: mixed-resolution ViT tokens from a saliency quadtree (Ronen, Levy & Golbert, CVPR-W 2023)."""

from quadformer.quadtree import QuadtreeSpec, TokenBudgetError, Tokens, quadtree_tokens, uniform_tokens

__all__ = ["QuadtreeSpec", "TokenBudgetError", "Tokens", "quadtree_tokens", "uniform_tokens"]
