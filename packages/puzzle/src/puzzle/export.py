"""Export a (child) DeciLM model as a Hugging Face folder that loads with `trust_remote_code=True`.

Writes config.json (Llama fields + `block_configs`, `architectures: ["DeciLMForCausalLM"]`,
`model_type: "nemotron-nas"`, `auto_map`), model.safetensors, the tokenizer files and the three self-contained
source files (block_config.py, configuration_decilm.py, modeling_decilm.py). Everything is written to a temporary
folder beside `out_dir` and renamed into place, so a crash never leaves a half-written export.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from transformers import PreTrainedTokenizerBase

from .modeling_decilm import DeciLMForCausalLM

SOURCE_FILES = ("block_config.py", "configuration_decilm.py", "modeling_decilm.py")
AUTO_MAP = {"AutoConfig": "configuration_decilm.DeciLMConfig",
            "AutoModelForCausalLM": "modeling_decilm.DeciLMForCausalLM"}


def export_child(model: DeciLMForCausalLM, tokenizer: PreTrainedTokenizerBase | None, out_dir: str | Path) -> Path:
    """Write the loadable folder; returns `out_dir`."""
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    model.config.architectures = ["DeciLMForCausalLM"]
    model.config.auto_map = dict(AUTO_MAP)
    model.config.block_configs = [b.to_dict() for b in model.block_configs]
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        model.save_pretrained(tmp)
        src = Path(__file__).parent
        for name in SOURCE_FILES:
            shutil.copyfile(src / name, tmp / name)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        replace_dir(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def replace_dir(tmp: Path, out_dir: Path) -> None:
    """Atomically swap `tmp` into `out_dir` (an existing folder is moved aside first, then deleted)."""
    old = None
    if out_dir.exists():
        old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
        os.replace(out_dir, old)
    os.replace(tmp, out_dir)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
