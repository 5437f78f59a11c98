"""Nemotron-NAS ("DeciLM") config: the Llama fields plus one `block_configs` entry per layer.

Self-contained for `trust_remote_code`: it imports only transformers and its sibling `block_config.py`; export copies
all three files (block_config.py, configuration_decilm.py, modeling_decilm.py) next to config.json.
"""

from huggingface_hub.dataclasses import strict
from transformers import LlamaConfig

from .block_config import AttentionConfig, BlockConfig, FFNConfig


@strict
class DeciLMConfig(LlamaConfig):
    """LlamaConfig + `block_configs` (list of Nemotron-NAS dicts, one per layer).

    Missing `block_configs` means every layer is the plain Llama block described by the global fields.
    Entries are normalised on construction (validated, sizes resolved), so two configs describing the same
    architecture serialise identically.
    """

    model_type = "nemotron-nas"
    block_configs: list | None = None

    def __post_init__(self, **kwargs) -> None:
        super().__post_init__(**kwargs)
        if self.block_configs is None:
            parent = self.parent_block_config()
            self.block_configs = [parent.to_dict() for _ in range(self.num_hidden_layers)]
        else:
            if len(self.block_configs) != self.num_hidden_layers:
                raise ValueError(
                    f"block_configs has {len(self.block_configs)} entries but num_hidden_layers="
                    f"{self.num_hidden_layers}; give exactly one block config per layer"
                )
            self.block_configs = [self._parse(b).to_dict() for b in self.block_configs]

    def _parse(self, block: BlockConfig | dict) -> BlockConfig:
        d = block.to_dict() if isinstance(block, BlockConfig) else block
        return BlockConfig.from_dict(
            d, hidden_size=self.hidden_size, num_attention_heads=self.num_attention_heads
        )

    def parent_block_config(self) -> BlockConfig:
        """The homogeneous Llama block the global fields describe."""
        # LlamaConfig.__post_init__ sets num_key_value_heads (None = MHA), so the fallback only informs the checker
        kv_heads = (
            self.num_key_value_heads if self.num_key_value_heads is not None else self.num_attention_heads
        )
        return BlockConfig(
            attention=AttentionConfig.gqa(kv_heads, self.num_attention_heads),
            ffn=FFNConfig.of_size(self.intermediate_size, self.hidden_size),
        )

    @property
    def blocks(self) -> list[BlockConfig]:
        """Parsed `block_configs`, one `BlockConfig` per layer."""
        assert self.block_configs is not None  # __post_init__ fills it
        return [self._parse(b) for b in self.block_configs]


__all__ = ["DeciLMConfig"]
