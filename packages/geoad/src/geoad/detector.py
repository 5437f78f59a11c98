"""The GeoAD detector: a trained transformation classifier plus one Dirichlet per transformation, in one file.

    detector = GeoADDetector.fit(GeoADDataModule("fashion-mnist", normal_class=0), FitConfig())
    detector.save("det.pt")
    scores = GeoADDetector.load("det.pt").score(images)   # uint8 [N, H, W] or [N, C, H, W], any size
    scores.anomaly                                        # higher = more anomalous (anomalib's convention)

Scoring an image = preprocess -> all T transformations -> network -> log_softmax -> Dirichlet score; every step is
a batched tensor operation on the detector's device.
"""

from __future__ import annotations

import io
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import Tensor, nn

from benchmarks.yardstick import bf16_supported
from effinfer_core.atomic import write_atomic
from effinfer_core.progress import Log, LogProgress, progress_trainer_kwargs
from effinfer_core.trainer import training_precision
from effinfer_core.training import checkpointed_trainer_kwargs, resume_path
from geoad.data import GeoADDataModule
from geoad.dirichlet import dirichlet_normality, fit_dirichlet, simplified_normality
from geoad.lightning_model import GeoADModel
from geoad.torch_model import create_model
from geoad.transforms import Preprocessing, TransformSet

FORMAT = "geoad-detector"
VERSION = 1
CHECKPOINT_EVERY = 500  # optimiser steps between checkpoints: ~6 min of WRN-10-4 on one CPU thread
FIT_PROGRESS_LINES = 5  # lines per fit when the output is not a terminal: enough to see it move
# FitConfig fields that say how a fit runs, not what it computes: left out of every inputs hash
RUN_ONLY_FIELDS = ("accelerator", "devices", "strategy", "num_nodes", "ckpt_dir", "resume")


class ArtifactError(ValueError):
    """A detector file that is missing, foreign or damaged."""


@dataclass
class FitConfig:
    backbone: str = "wrn-10-4"
    transforms: str = "72"
    epochs: int | None = (
        None  # passes over the self-labelled set; None: ceil(200 / T) as in the paper (3 for 72)
    )
    max_steps: int = -1  # optional cap on optimiser steps (reduced budgets); -1: no cap
    batch_size: int = 128
    lr: float = 1e-3
    seed: int = 0
    dirichlet_limit: int | None = None  # normal images used to fit the Dirichlets (None: all)
    pad: int | None = None  # zero padding per side; None: 2 for 28x28 images (28 -> 32, as the paper), else 0
    channels_last: bool = True  # bf16 training on a 1-thread AMX CPU: 175 vs 100 pairs/s NCHW
    accelerator: str = "auto"
    devices: int | str | list[int] = "auto"
    strategy: str = "auto"
    num_nodes: int = 1
    precision: str = "auto"  # the repo's policy (effinfer_core.trainer): bf16-mixed where fast, else 32-true
    ckpt_dir: str | None = None  # Lightning checkpoints (last.ckpt) go here; resume continues from it
    resume: bool = False

    def n_epochs(self, n_transforms: int) -> int:
        return self.epochs if self.epochs is not None else math.ceil(200 / n_transforms)

    def resolved_precision(self) -> str:
        return training_precision(self.accelerator) if self.precision == "auto" else self.precision

    def weights_inputs(self) -> dict[str, Any]:
        """The fields that change the trained weights (precision resolved: "auto" differs between machines)."""
        fields = {k: v for k, v in asdict(self).items() if k not in RUN_ONLY_FIELDS}
        return {**fields, "precision": self.resolved_precision()}


@dataclass
class Scores:
    anomaly: Tensor  # -normality: higher = more anomalous
    normality: Tensor  # the Dirichlet score: higher = more normal
    simplified: Tensor  # mean_t p_t[t]: higher = more normal


@dataclass
class GeoADDetector:
    model: nn.Module
    transforms: TransformSet
    preprocessing: Preprocessing
    backbone: str
    alpha: Tensor | None = None  # [T, T] Dirichlet parameters, float64
    meta: dict[str, Any] = field(default_factory=dict)
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    # Scoring speed settings (measured on a 2-core Sapphire Rapids CPU, WRN-10-4, 72 transformations: fp32 NCHW
    # ~100-250 network inputs/s, channels_last + bf16 weights ~550-900/s, + torch.compile ~700-1200/s; see README)
    bf16: bool = True  # bf16 weights and activations where the device runs bf16 natively; fp32 elsewhere
    channels_last: bool = True
    compile: bool = False  # torch.compile the network: ~40 s once on this CPU, pays off for large sets

    def __post_init__(self) -> None:
        self.to(self.device)

    # ---- training -------------------------------------------------------------------------------------------
    @classmethod
    def fit(
        cls, datamodule: GeoADDataModule, config: FitConfig, log: Log | None = None, prefix: str = "fit"
    ) -> GeoADDetector:
        """Train the transformation classifier with Lightning, then fit the Dirichlets on the normal images.

        Progress: a bar on a terminal, else (or with ``log``) a few ``<prefix> step ...`` lines."""
        L.seed_everything(config.seed, workers=True, verbose=False)
        normal = datamodule.normal_data().images
        prep = Preprocessing.for_images(normal, config.pad)
        module = GeoADModel(
            config.backbone,
            config.transforms,
            prep.channels,
            prep.raw_size,
            prep.pad,
            config.lr,
            config.channels_last,
        )
        n_transforms = len(module.transforms)
        datamodule.n_transforms = n_transforms  # the self-labelled set follows the model's transformation set
        precision = config.resolved_precision()
        progress = progress_trainer_kwargs(log, prefix)
        for callback in progress.get("callbacks", []):
            if isinstance(callback, LogProgress):
                callback.lines = FIT_PROGRESS_LINES
        callbacks = list(progress.pop("callbacks", []))
        plugins = []
        if config.ckpt_dir:
            checkpointing = checkpointed_trainer_kwargs(config.ckpt_dir, CHECKPOINT_EVERY)
            callbacks += checkpointing["callbacks"]
            plugins += checkpointing["plugins"]
        trainer = L.Trainer(
            max_epochs=config.n_epochs(n_transforms),
            max_steps=config.max_steps,
            accelerator=config.accelerator,
            devices=config.devices,
            strategy=config.strategy,
            num_nodes=config.num_nodes,
            # a str (command line or API) that Lightning validates itself; its stubs want the Literal
            precision=precision,  # type: ignore[arg-type]
            logger=False,
            enable_checkpointing=bool(config.ckpt_dir),
            callbacks=callbacks,
            plugins=plugins,
            **progress,
        )
        ckpt = None
        if config.resume:
            ckpt = resume_path(config.ckpt_dir) if config.ckpt_dir else None
            if ckpt is None:
                raise FileNotFoundError(
                    f"--resume: no checkpoint at {Path(config.ckpt_dir or '') / 'last.ckpt'}; "
                    "train once with --ckpt-dir first"
                )
        start = time.perf_counter()
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt)
        seconds = time.perf_counter() - start
        # pairs trained in this call (the last partial batch of an epoch counted as full: a negligible overcount)
        pairs = (trainer.global_step - module.start_step) * config.batch_size
        detector = cls(module.model, module.transforms, module.preprocessing, config.backbone)
        detector.meta = {
            "fit_config": {**asdict(config), "precision": precision},
            "n_train_images": len(normal),
            "train_pairs": pairs,
            "train_steps": trainer.global_step,
            "start_step": module.start_step,
            "train_seconds": seconds,
            "train_pairs_per_s": pairs / seconds if seconds else None,
            "train_device": str(trainer.strategy.root_device),
        }
        # Lightning hands the module back on the CPU after fit; score where it trained (one device is plenty)
        detector.to(trainer.strategy.root_device)
        fit_images = normal
        if config.dirichlet_limit is not None and config.dirichlet_limit < len(normal):
            pick = torch.randperm(len(normal), generator=torch.Generator().manual_seed(config.seed))
            fit_images = normal[pick[: config.dirichlet_limit]]
        detector.fit_dirichlet(fit_images)
        return detector

    def fit_dirichlet(self, normal_images: Tensor, batch_size: int = 64) -> Tensor:
        """One Dirichlet per transformation, fitted to the softmax outputs of the normal images."""
        log_p = self.log_probs(normal_images, batch_size)  # [N, T, T]
        self.alpha = fit_dirichlet(log_p.transpose(0, 1))  # [T, N, T] -> [T, T]
        self.meta["n_dirichlet_images"] = len(normal_images)
        return self.alpha

    # ---- scoring --------------------------------------------------------------------------------------------
    def to(
        self,
        device: torch.device | str,
        *,
        bf16: bool | None = None,
        channels_last: bool | None = None,
        compile: bool | None = None,
    ) -> GeoADDetector:
        """Move to ``device`` and (optionally) change the speed settings; None keeps the current one."""
        self.device = torch.device(device)
        self.bf16 = self.bf16 if bf16 is None else bf16
        self.channels_last = self.channels_last if channels_last is None else channels_last
        self.compile = self.compile if compile is None else compile
        self.dtype = torch.bfloat16 if self.bf16 and bf16_supported(self.device) else torch.float32
        fmt = torch.channels_last if self.channels_last else torch.contiguous_format
        # cast the weights once rather than autocast: autocast re-casts every weight on every call
        # two calls: torch's stubs have no Module.to overload taking dtype and memory_format together
        self.model = self.model.to(self.device, dtype=self.dtype).to(memory_format=fmt).eval()
        self._network = torch.compile(self.model) if self.compile else self.model
        if self.alpha is not None:
            self.alpha = self.alpha.to(self.device)
        return self

    def fitted_alpha(self) -> Tensor:
        """The Dirichlet parameters, or an ArtifactError before fit_dirichlet."""
        if self.alpha is None:
            raise ArtifactError("this detector has no Dirichlet parameters yet: call fit_dirichlet first")
        return self.alpha

    def conform(self, images: Tensor, what: str = "input") -> Tensor:
        """uint8 [N, H, W] / [N, C, H, W] of any size and channel count -> what the network was trained on."""
        if images.ndim == 3:
            images = images[:, None]
        return self.preprocessing.conform(images, what=what)

    def batch_log_probs(self, images: Tensor) -> Tensor:
        """uint8 [B, C, raw, raw] on the device -> log-softmax outputs [B, T, T] (float32)."""
        x = self.transforms.expand(self.preprocessing(images).to(self.dtype))
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        logits = self._network(x)
        t = len(self.transforms)
        return logits.float().log_softmax(-1).view(len(images), t, t)

    def batch_anomaly_scores(self, images: Tensor) -> Tensor:
        """The whole scoring path for one batch on the device: uint8 images -> anomaly scores [B]."""
        return -dirichlet_normality(self.batch_log_probs(images), self.fitted_alpha())

    @torch.inference_mode()
    def log_probs(self, images: Tensor, batch_size: int = 64) -> Tensor:
        images = self.conform(images)
        return torch.cat(
            [
                self.batch_log_probs(images[i : i + batch_size].to(self.device)).cpu()
                for i in range(0, len(images), batch_size)
            ]
        )

    def score(self, images: Tensor, batch_size: int = 64) -> Scores:
        """Anomaly, normality and simplified scores of uint8 images [N, H, W] or [N, C, H, W]."""
        alpha = self.fitted_alpha()
        log_p = self.log_probs(images, batch_size)
        normality = dirichlet_normality(log_p, alpha.cpu())
        return Scores(anomaly=-normality, normality=normality, simplified=simplified_normality(log_p))

    # ---- the artifact ---------------------------------------------------------------------------------------
    def save(self, path: str | Path) -> None:
        """Everything scoring needs, in one file, written atomically."""
        blob = {
            "format": FORMAT,
            "version": VERSION,
            "backbone": self.backbone,
            "transforms": self.transforms.spec,
            "preprocessing": self.preprocessing.as_dict(),
            # always stored in float32, whatever the scoring precision
            "state_dict": {
                k: (v.float() if v.is_floating_point() else v).cpu()
                for k, v in self.model.state_dict().items()
            },
            "alpha": None if self.alpha is None else self.alpha.cpu(),
            "meta": self.meta,
        }
        buffer = io.BytesIO()
        torch.save(blob, buffer)
        write_atomic(path, buffer.getvalue())

    @classmethod
    def load(cls, path: str | Path, device: torch.device | str = "cpu") -> GeoADDetector:
        path = Path(path)
        if not path.is_file():
            raise ArtifactError(f"no detector file at {path}; create one with `geoad fit ... --out {path}`")
        try:
            blob = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # torch raises several types for a corrupt or foreign file
            raise ArtifactError(
                f"{path} is not a readable detector file ({type(err).__name__}: {err})"
            ) from err
        if not isinstance(blob, dict) or blob.get("format") != FORMAT:
            raise ArtifactError(f"{path} is not a GeoAD detector file (written by `geoad fit`)")
        if blob["version"] > VERSION:
            raise ArtifactError(
                f"{path} was written by a newer geoad (format {blob['version']}); upgrade geoad"
            )
        transforms = TransformSet(blob["transforms"])
        preprocessing = Preprocessing(**blob["preprocessing"])
        model = create_model(blob["backbone"], len(transforms), preprocessing.channels)
        model.load_state_dict(blob["state_dict"])
        detector = cls(model, transforms, preprocessing, blob["backbone"], blob["alpha"], blob["meta"])
        return detector.to(device)
