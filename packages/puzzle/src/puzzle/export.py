"""Export a (child) DeciLM model as a Hugging Face folder that loads with `trust_remote_code=True`.

Writes config.json (Llama fields + `block_configs`, `architectures: ["DeciLMForCausalLM"]`,
`model_type: "nemotron-nas"`, `auto_map`), model.safetensors, the tokenizer files and the three self-contained
source files (block_config.py, configuration_decilm.py, modeling_decilm.py). Everything is written to a temporary
folder beside `out_dir` and renamed into place, so a crash never leaves a half-written export.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from transformers import PreTrainedTokenizerBase

from effinfer_core.atomic import atomic_dir

from .modeling_decilm import DeciLMForCausalLM

SOURCE_FILES = ("block_config.py", "configuration_decilm.py", "modeling_decilm.py")
AUTO_MAP = {
    "AutoConfig": "configuration_decilm.DeciLMConfig",
    "AutoModelForCausalLM": "modeling_decilm.DeciLMForCausalLM",
}


def export_child(
    model: DeciLMForCausalLM, tokenizer: PreTrainedTokenizerBase | None, out_dir: str | Path
) -> Path:
    """Write the loadable folder; returns `out_dir`."""
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    model.config.architectures = ["DeciLMForCausalLM"]
    model.config.auto_map = dict(AUTO_MAP)
    model.config.block_configs = [b.to_dict() for b in model.block_configs]
    with atomic_dir(out_dir) as tmp:
        model.save_pretrained(tmp)
        src = Path(__file__).parent
        for name in SOURCE_FILES:
            shutil.copyfile(src / name, tmp / name)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
    return out_dir
