"""Lightning Trainer flags every training command takes, and the one training-precision policy.

Precision "auto" (the default everywhere) is bf16-mixed where it is fast -- a CUDA device with bf16, or a CPU with
AMX tiles -- and 32-true elsewhere. Native bf16 dot products (AVX512-BF16) alone are not enough: on a 2-core Xeon
without AMX, a SmolLM2-sized FFN trained 1.5-1.9x slower in bf16-mixed than in fp32 (Puzzle's results page).
Scale-out is Lightning's own: ``--strategy ddp|fsdp``, ``--devices``, ``--num-nodes``.
"""

from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass
from typing import Any

import torch

PRECISION_HELP = "Lightning precision (32-true, bf16-mixed, ...) or auto: bf16-mixed on a bf16 GPU or an AMX CPU, 32-true elsewhere"


def bf16_training_fast(device: torch.device | str) -> bool:
    """Whether bf16-mixed training beats fp32 here: a CUDA device with bf16, or a CPU with AMX tiles."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        amx = getattr(torch.cpu, "_is_amx_tile_supported", None)  # private, so looked up, not assumed
        return bool(amx is not None and amx())
    return False


def training_precision(accelerator: str = "auto") -> str:
    """Lightning precision for ``accelerator`` ("auto", "cpu", "gpu"/"cuda"): bf16-mixed where fast, else 32-true."""
    if accelerator == "auto":
        accelerator = "cuda" if torch.cuda.is_available() else "cpu"
    device = {"gpu": "cuda", "cuda": "cuda", "cpu": "cpu"}.get(accelerator)
    return "bf16-mixed" if device is not None and bf16_training_fast(device) else "32-true"


def parse_devices(value: str | int | list[int]) -> str | int | list[int]:
    """``auto``, a count (``2``) or a list of indices (``0,1``), as Lightning takes them."""
    if not isinstance(value, str):
        return value
    if value == "auto":
        return value
    try:
        if "," in value:
            return [int(v) for v in value.split(",") if v]
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"devices must be auto, a count or indices like 0,1; got {value!r}"
        ) from None


@dataclass(frozen=True)
class TrainerFlags:
    """How a fit runs (never what it computes: these stay out of every inputs hash)."""

    accelerator: str = "auto"
    devices: str | int | list[int] = "auto"
    strategy: str = "auto"
    num_nodes: int = 1
    precision: str = "auto"

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        g = parser.add_argument_group(
            "Lightning trainer (scale-out: --strategy ddp|fsdp, --devices, --num-nodes)"
        )
        g.add_argument("--accelerator", default="auto", help="cpu, gpu, auto (default %(default)s)")
        g.add_argument(
            "--devices", type=parse_devices, default="auto", help="auto, a count, or indices like 0,1"
        )
        g.add_argument("--strategy", default="auto", help="auto, ddp, fsdp, ... (default %(default)s)")
        g.add_argument("--num-nodes", type=int, default=1, help="default %(default)s")
        g.add_argument("--precision", default="auto", help=PRECISION_HELP)

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> TrainerFlags:
        return cls(args.accelerator, args.devices, args.strategy, args.num_nodes, args.precision)

    def resolved_precision(self) -> str:
        return training_precision(self.accelerator) if self.precision == "auto" else self.precision

    def kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``lightning.Trainer``, with "auto" precision resolved."""
        return {**asdict(self), "precision": self.resolved_precision()}
