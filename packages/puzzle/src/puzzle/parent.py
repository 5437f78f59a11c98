"""Load a Llama-family HF folder as a DeciLM model whose every block equals the parent's.

Accepted: `model_type` llama, mistral, qwen2 (RMSNorm + GQA/RoPE + SwiGLU). Their checkpoint names are the ones
DeciLM uses, so weights load by name without renaming.
- Qwen2 has q/k/v biases but no o_proj bias: the model is built with `attention_bias=True` and o_proj gets a
  zero bias (exactly the parent's function).
- Sliding-window attention (Mistral v0.1, Qwen2 with use_sliding_window) is not modelled: a warning says that the
  DeciLM model uses full attention, identical to the parent for sequences up to the window.
Anything else raises `NotLlamaFamilyError`.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path

import torch
from safetensors.torch import load_file
from transformers import AutoConfig, AutoTokenizer, PreTrainedTokenizerBase

from .configuration_decilm import DeciLMConfig
from .modeling_decilm import DeciLMForCausalLM

LLAMA_FAMILY = ("llama", "mistral", "qwen2")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "tokenizer_config.json")
WEIGHT_PATTERNS = ("*.safetensors", "*.bin", "*.safetensors.index.json", "*.bin.index.json")


class NotLlamaFamilyError(ValueError):
    """The parent folder is not a Llama-family causal LM this package can turn into a DeciLM model."""


def _read_config_json(path: Path) -> dict:
    cfg_file = path / "config.json"
    if not cfg_file.is_file():
        raise FileNotFoundError(f"{path} is not a Hugging Face model folder: no config.json in it")
    return json.loads(cfg_file.read_text())


def decilm_config_from_parent(path: str | Path) -> DeciLMConfig:
    """DeciLMConfig with all-parent blocks for the Llama-family folder `path`."""
    path = Path(path)
    raw = _read_config_json(path)
    model_type = raw.get("model_type")
    if model_type not in LLAMA_FAMILY:
        raise NotLlamaFamilyError(
            f"{path}: model_type {model_type!r} (architectures {raw.get('architectures')}) is not a Llama-family "
            f"causal LM. Puzzle needs RMSNorm + GQA/RoPE attention + SwiGLU FFN blocks; supported model types: "
            f"{', '.join(LLAMA_FAMILY)}."
        )
    cfg = AutoConfig.from_pretrained(path)
    sliding = getattr(cfg, "sliding_window", None)
    if sliding and (model_type != "qwen2" or getattr(cfg, "use_sliding_window", False)):
        warnings.warn(
            f"{path}: sliding_window={sliding} is not modelled; DeciLM uses full attention "
            f"(identical for sequences of at most {sliding} tokens)",
            stacklevel=2,
        )
    qwen2 = model_type == "qwen2"
    return DeciLMConfig(
        vocab_size=cfg.vocab_size,
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_hidden_layers,
        num_attention_heads=cfg.num_attention_heads,
        num_key_value_heads=cfg.num_key_value_heads or cfg.num_attention_heads,
        hidden_act=cfg.hidden_act,
        max_position_embeddings=cfg.max_position_embeddings,
        rms_norm_eps=cfg.rms_norm_eps,
        rope_parameters=dict(cfg.rope_parameters),
        attention_bias=qwen2 or getattr(cfg, "attention_bias", False),
        mlp_bias=getattr(cfg, "mlp_bias", False),
        head_dim=getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads,
        tie_word_embeddings=cfg.tie_word_embeddings,
        initializer_range=getattr(cfg, "initializer_range", 0.02),
        bos_token_id=cfg.bos_token_id,
        eos_token_id=cfg.eos_token_id,
        pad_token_id=cfg.pad_token_id,
    )


def _weight_files(path: Path) -> list[Path]:
    files = sorted(path.glob("*.safetensors"))
    if not files:
        files = sorted(path.glob("pytorch_model*.bin"))
    if not files:
        raise FileNotFoundError(f"{path}: no *.safetensors or pytorch_model*.bin weight files")
    return files


def _load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    state: dict[str, torch.Tensor] = {}
    for f in _weight_files(path):
        part = (
            load_file(f)
            if f.suffix == ".safetensors"
            else torch.load(f, map_location="cpu", weights_only=True)
        )
        state.update(part)
    # Old Llama checkpoints store the RoPE table; it is recomputed from the config.
    return {k: v for k, v in state.items() if not k.endswith("rotary_emb.inv_freq")}


def load_parent_weights(model: DeciLMForCausalLM, path: str | Path) -> None:
    """Copy the Llama-family checkpoint in `path` into an all-parent-blocks DeciLM model (by name)."""
    state = _load_state_dict(Path(path))
    missing, unexpected = model.load_state_dict(state, strict=False)
    # Allowed gaps: a tied LM head, and the o_proj bias Qwen2 does not have (zero = the parent's function).
    tied = model.config.tie_word_embeddings
    left = [k for k in missing if not (k == "lm_head.weight" and tied)]
    for k in [k for k in left if k.endswith("self_attn.o_proj.bias")]:
        model.get_parameter(k).data.zero_()
        left.remove(k)
    if left or unexpected:
        raise ValueError(
            f"{path}: checkpoint does not match the Llama block layout; missing {left[:8]}, "
            f"unexpected {unexpected[:8]}"
        )
    if tied:
        model.tie_weights()


def load_parent(
    path: str | Path, dtype: torch.dtype = torch.float32
) -> tuple[DeciLMForCausalLM, PreTrainedTokenizerBase | None]:
    """(DeciLM model with every block equal to the parent's, tokenizer or None if the folder has none)."""
    path = Path(path)
    model = DeciLMForCausalLM(decilm_config_from_parent(path))
    load_parent_weights(model, path)
    # Cast parameters only: the RoPE inverse frequencies stay float32, as in transformers' own loading.
    for p in model.parameters():
        p.data = p.data.to(dtype)
    model.config.dtype = dtype
    model.eval().requires_grad_(False)
    tokenizer = (
        AutoTokenizer.from_pretrained(path) if any((path / f).exists() for f in TOKENIZER_FILES) else None
    )
    return model, tokenizer


def parent_fingerprint(path: str | Path) -> str:
    """Stable hash of config.json (parsed, key-sorted) plus the names and sizes of the weight files."""
    path = Path(path)
    h = hashlib.sha256(json.dumps(_read_config_json(path), sort_keys=True).encode())
    for pattern in WEIGHT_PATTERNS:
        for f in sorted(path.glob(pattern)):
            h.update(f"{f.name}:{f.stat().st_size}".encode())
    return h.hexdigest()[:16]
