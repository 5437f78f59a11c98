"""Images -> class probabilities, with the scorer, the quadtree and the resizing hidden; one checkpoint file.

>>> predictor = QuadformerPredictor.load("runs/quick/model.pt")
>>> probs = predictor.predict_proba(images)      # uint8 or [0, 1] float [B, 3, H, W], any H, W
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from effinfer_core.atomic import atomic_file
from quadformer.lightning_model import build_network
from quadformer.quadtree import Tokens
from quadformer.torch_model import CheckpointError, Quadformer

FORMAT = "quadformer-predictor/1"


class QuadformerPredictor:
    def __init__(self, net: Quadformer, network: dict[str, Any], classes: list[str]):
        self.net, self.network, self.classes = net.eval(), dict(network), list(classes)

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    @property
    def image_size(self) -> tuple[int, int]:
        return self.net.spec.height, self.net.spec.width

    def save(self, path: str | Path) -> Path:
        # the weights are in the file: the local checkpoints it started from are not needed to load it
        network = {**self.network, "vit_checkpoint": None, "scorer_checkpoint": None}
        state = {k: v.cpu() for k, v in self.net.state_dict().items()}
        with atomic_file(path) as tmp:
            torch.save(
                {"format": FORMAT, "network": network, "classes": self.classes, "state_dict": state}, tmp
            )
        return Path(path)

    @classmethod
    def load(cls, path: str | Path, device: torch.device | str = "cpu") -> QuadformerPredictor:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"checkpoint {path} does not exist")
        try:
            saved = torch.load(path, map_location="cpu", weights_only=True)
        except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as err:
            raise CheckpointError(
                f"{path} is not a torch checkpoint file ({str(err).splitlines()[0][:200]})"
            ) from err
        if not isinstance(saved, dict) or saved.get("format") != FORMAT:
            kind = saved.get("format", "no format tag") if isinstance(saved, dict) else type(saved).__name__
            raise CheckpointError(
                f"{path} is not a Quadformer predictor checkpoint ({kind}); use the model.pt that `quadformer "
                "train` writes (a Lightning last.ckpt or a bare timm state dict is not one)"
            )
        net = build_network(**saved["network"])
        try:
            net.load_state_dict(saved["state_dict"])
        except RuntimeError as err:
            raise CheckpointError(
                f"{path}: weights do not fit its own architecture: {str(err)[:300]}"
            ) from err
        return cls(net.to(device), saved["network"], saved["classes"])

    def prepare(self, images: Tensor) -> Tensor:
        """uint8 or float [0, 1] RGB [B, 3, H, W] -> float [0, 1] at the model's size (area-style resize)."""
        if images.dim() == 3:
            images = images.unsqueeze(0)
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be RGB [B, 3, H, W], got shape {tuple(images.shape)}")
        x = images.to(self.device)
        x = x.float() / 255 if not x.is_floating_point() else x.float()
        if tuple(x.shape[-2:]) != self.image_size:
            x = F.interpolate(x, size=self.image_size, mode="bilinear", antialias=True, align_corners=False)
        return x

    @torch.inference_mode()
    def tokenize(self, images: Tensor, maps: Tensor | None = None) -> Tokens:
        return self.net.tokenize(self.prepare(images), self._maps(maps))

    @torch.inference_mode()
    def predict_proba(self, images: Tensor, maps: Tensor | None = None, batch_size: int = 64) -> Tensor:
        x, m = self.prepare(images), self._maps(maps)
        out = [
            self.net(x[i : i + batch_size], None if m is None else m[i : i + batch_size]).softmax(-1)
            for i in range(0, len(x), batch_size)
        ]
        return torch.cat(out).cpu()

    def _maps(self, maps: Tensor | None) -> Tensor | None:
        if maps is None:
            return None
        return F.adaptive_avg_pool2d(maps.float().to(self.device).unsqueeze(1), self.image_size).squeeze(1)

    def accuracy(self, loader: Any) -> float:
        """Top-1 accuracy over a loader of batch dicts (``image``, ``label`` and, for the oracle, ``mask``)."""
        correct = total = 0
        for batch in loader:
            maps = batch.get("mask") if self.net.needs_maps else None
            probs = self.predict_proba(batch["image"], maps)
            correct += int((probs.argmax(-1) == batch["label"]).sum())
            total += len(batch["label"])
        return correct / max(1, total)
