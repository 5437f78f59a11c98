"""What the stages of one Puzzle run share, loaded once: the config, the run folder (bound to the parent), the
device, the parent and its tokenizer, the data (Austen or the user's text), the Lightning Trainer settings and the search space."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, cast

from lightning.fabric.utilities.rank_zero import rank_zero_only
from torch import nn

from benchmarks.yardstick import select_device
from effinfer_core.run_folder import RunFolder
from effinfer_core.trainer import TrainerFlags
from puzzle.block_config import AttentionConfig, BlockConfig, FFNConfig
from puzzle.costs import Scenario
from puzzle.data import TextDataModule


def lightning_rank() -> int:
    """Lightning's global rank, read from the launcher's environment (and set by the Trainer's strategy)."""
    # an attribute set on the decorator function, which Lightning's stubs do not declare
    return rank_zero_only.rank  # type: ignore[attr-defined]


class RunInputs:
    """One config in one run folder: the inputs its stages share, each loaded on first use."""

    def __init__(
        self,
        config: Mapping[str, Any],
        run_dir: str | Path,
        *,
        device: str | None = None,
        progress: bool = True,
        log: Callable[[str], None] | None = None,
        texts: Mapping[str, str] | None = None,
        progress_lines: int = 20,
    ):
        from puzzle.library import SearchSpace
        from puzzle.parent import decilm_config_from_parent, parent_fingerprint

        self.started = time.perf_counter()  # the stages' log lines say how long the run has taken
        self.config = dict(config)
        self.texts = texts  # title -> text; None = benchmarks.data.load_austen(data_dir)
        self.run = RunFolder(run_dir)
        self.device = select_device(device)
        self.progress, self.progress_lines = progress, progress_lines  # lines: log lines per fit without bars
        if not progress:
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()
        self.is_main = lightning_rank() == 0
        self.log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
        if not self.is_main:  # rank 0 reports for all
            self.log = lambda msg: None
        self._parent: tuple[Any, Any] | None = None
        self._datamodule: TextDataModule | None = None
        self.parent_path = Path(self.config["parent"] or _default_parent(self.config["data_dir"]))
        self.parent_config = decilm_config_from_parent(self.parent_path)  # NotLlamaFamilyError early
        self.space = SearchSpace.from_dict(dict(self.config["search_space"]))
        self.space.validate(self.parent_config)  # SearchSpaceError early
        self.fingerprint = parent_fingerprint(self.parent_path)
        # the user's text is read, checked and tokenised now, so that a bad source stops the run before any stage
        self.data_fingerprint: str | None = self._load_user_data()
        if self.is_main:
            self.run.bind("parent", self.parent_path, self.fingerprint)

    # -- shared inputs -------------------------------------------------------------------------------------------
    def parent(self) -> tuple[Any, Any]:
        """(parent model on the device, tokenizer), loaded once."""
        if self._parent is None:
            from puzzle.parent import load_parent

            model, tokenizer = load_parent(self.parent_path)
            if tokenizer is None:
                raise FileNotFoundError(f"parent folder {self.parent_path} has no tokenizer files")
            # transformers wraps `to` with functools.wraps, which its stubs turn into an unbound call
            self._parent = (cast(nn.Module, model).to(self.device).eval(), tokenizer)
        return self._parent

    def datamodule(self) -> TextDataModule:
        if self._datamodule is None:
            self._datamodule = self._make_datamodule(self.parent()[1])
            self._datamodule.setup()
        return self._datamodule

    def _make_datamodule(self, tokenizer: Any) -> TextDataModule:
        from puzzle.text_sources import parse_sources

        data = self.config["data"]
        train, heldout = parse_sources(data)
        return TextDataModule(
            tokenizer,
            seq_len=data["seq_len"],
            batch_size=data["batch_size"],
            texts=self.texts,
            data_dir=self.config["data_dir"],
            cache_dir=self.run.path("tokens"),
            seed=self.config["seed"],
            train_source=train.resolved() if train else None,
            heldout_sources={name: s.resolved() for name, s in heldout.items()},
            score_on=data.get("score_on"),
        )

    def _load_user_data(self) -> str | None:
        """The content hash of the config's text sources (None: Austen only), after reading and checking them."""
        from transformers import AutoTokenizer

        from puzzle.text_sources import sources_key

        if "train" not in self.config["data"] and "heldout" not in self.config["data"]:
            return None  # Austen: read on first use, as before
        tokenizer = AutoTokenizer.from_pretrained(self.parent_path)  # the model itself is not needed yet
        dm = self._make_datamodule(tokenizer)
        dm.setup()
        self._datamodule = dm
        sources = [*([dm.train_source] if dm.train_source else []), *dm.heldout_sources.values()]
        return sources_key(tokenizer, sources)

    def trainer_kwargs(self, progress_prefix: str | None = None) -> dict[str, Any]:
        """Lightning Trainer settings; without progress bars, log lines of progress headed `progress_prefix`."""
        kwargs: dict[str, Any] = {k: v for k, v in self.config["trainer"].items() if v is not None}
        if kwargs.get("precision") == "auto":
            flags = TrainerFlags(accelerator=str(kwargs.get("accelerator", "auto")))
            kwargs["precision"] = flags.resolved_precision()
        if not self.progress:
            from effinfer_core.progress import LogProgress

            kwargs["enable_progress_bar"] = False
            if progress_prefix:
                kwargs["callbacks"] = [LogProgress(self.log, progress_prefix, lines=self.progress_lines)]
        return kwargs

    def scenario(self) -> Scenario:
        return Scenario(**self.config["scenario"])

    def attention_variants(self) -> list[AttentionConfig]:
        return list(self.space.attention_variants(self.parent_config))

    def ffn_variants(self) -> list[FFNConfig]:
        return list(self.space.ffn_variants(self.parent_config))

    def parent_block(self) -> BlockConfig:
        return self.parent_config.parent_block_config()

    def solutions(self) -> dict[str, dict[str, Any]]:
        return self.run.read_json("search/solutions.json")

    def load_child(self, stage: str, name: str) -> Any:
        from puzzle.modeling_decilm import DeciLMForCausalLM

        return DeciLMForCausalLM.from_pretrained(self.run.path(f"{stage}/{name}"))


def _default_parent(data_dir: str | None) -> Path:
    from benchmarks.data import smollm2_dir

    return smollm2_dir(data_dir)
