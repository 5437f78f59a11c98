"""The network as ONNX (dynamic height and width), and a ``NetFn`` that runs it with onnxruntime.

The graph takes float32 RGB (1, 3, H, W) in [0, 1], H and W multiples of 32 (normalisation is inside), and returns
(1, 2, H, W): probability and scale maps -- the eval-mode network, threshold head left out as DB does.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import torch

from effinfer_core.atomic import atomic_file
from textscale.torch_model import STRIDE


def export_onnx(net: torch.nn.Module, path: str | os.PathLike[str], opset: int = 17) -> Path:
    net = net.eval()
    example = torch.rand(1, 3, 2 * STRIDE, 3 * STRIDE)
    with atomic_file(Path(path)) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(
            net,
            (example,),
            str(tmp),
            dynamo=False,  # the TorchScript exporter: no onnxscript needed, dynamic H and W
            input_names=["image"],
            output_names=["maps"],
            dynamic_axes={
                "image": {0: "batch", 2: "height", 3: "width"},
                "maps": {0: "batch", 2: "height", 3: "width"},
            },
            opset_version=opset,
        )
    return Path(path)


class OnnxNet:
    """A ``NetFn`` running an exported graph on the CPU with onnxruntime."""

    def __init__(self, path: str | os.PathLike[str], threads: int | None = None):
        import onnxruntime as ort

        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def __call__(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        h, w = image.shape[:2]
        x = np.zeros((1, 3, h + (-h) % STRIDE, w + (-w) % STRIDE), np.float32)
        x[0, :, :h, :w] = image.transpose(2, 0, 1)
        (maps,) = self.session.run(["maps"], {"image": x})
        return maps[0, 0, :h, :w], maps[0, 1, :h, :w]
