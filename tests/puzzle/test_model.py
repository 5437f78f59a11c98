"""DeciLM model, block configs and parent loading (tiny random Llama configs, CPU)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import GPT2Config, LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM
from transformers.cache_utils import DynamicCache

from benchmarks.data import get_source
from puzzle.block_config import AttentionConfig, BlockConfig, FFNConfig, ffn_mult_to_intermediate_size
from puzzle.configuration_decilm import DeciLMConfig
from puzzle.modeling_decilm import DeciLMForCausalLM
from puzzle.parent import NotLlamaFamilyError, load_parent, parent_fingerprint

TINY = dict(
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=4,
    num_attention_heads=4,
    num_key_value_heads=2,
    vocab_size=256,
    max_position_embeddings=128,
    initializer_range=0.1,
)


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def save_tiny(cls, config, path: Path, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = cls(config).eval()
    model.save_pretrained(path)
    return model


def mixed_model(seed: int = 0) -> DeciLMForCausalLM:
    """kv2 (parent), kv1, linear and no_op attention; SwiGLU 128/48, linear and no_op FFN."""
    a = [
        AttentionConfig.gqa(2, 4),
        AttentionConfig.gqa(1, 4),
        AttentionConfig(replace_with_linear=True),
        AttentionConfig(no_op=True),
    ]
    f = [
        FFNConfig.of_size(48, 64),
        FFNConfig(no_op=True),
        FFNConfig(replace_with_linear=True),
        FFNConfig.of_size(128, 64),
    ]
    blocks = [BlockConfig(x, y) for x, y in zip([a[2], a[0], a[3], a[1]], f, strict=True)]
    torch.manual_seed(seed)
    return DeciLMForCausalLM(DeciLMConfig(**TINY, block_configs=blocks)).eval()


def test_identity_child_reproduces_llama_parent(tmp_path):
    ref = save_tiny(LlamaForCausalLM, LlamaConfig(**TINY, tie_word_embeddings=True), tmp_path)
    model, tokenizer = load_parent(tmp_path)
    assert tokenizer is None  # the tiny folder has no tokenizer files
    assert all(b == model.config.parent_block_config() for b in model.block_configs)
    assert model.lm_head.weight is model.model.embed_tokens.weight
    ids = torch.randint(0, 256, (2, 12), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        a, b = ref(ids, output_hidden_states=True), model(ids, output_hidden_states=True)
    assert a.logits.abs().max() > 1.0  # logits far from uniform, so the comparison means something
    torch.testing.assert_close(b.logits, a.logits, atol=1e-5, rtol=0)
    assert len(b.hidden_states) == len(a.hidden_states) == 5
    for x, y in zip(b.hidden_states, a.hidden_states, strict=True):
        torch.testing.assert_close(x, y, atol=1e-5, rtol=0)


def test_qwen2_parent_with_qkv_bias(tmp_path):
    cfg = Qwen2Config(**TINY, tie_word_embeddings=False)
    ref = save_tiny(Qwen2ForCausalLM, cfg, tmp_path)
    with torch.no_grad():
        ref.model.layers[0].self_attn.k_proj.bias.normal_()  # non-zero biases so they matter
    ref.save_pretrained(tmp_path)
    model, _ = load_parent(tmp_path)
    assert model.config.attention_bias
    assert torch.all(model.model.layers[0].self_attn.o_proj.bias == 0)
    ids = torch.randint(0, 256, (1, 9))
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, ref(ids).logits, atol=1e-5, rtol=0)


def test_non_llama_parent_is_rejected(tmp_path):
    GPT2Config(n_layer=2, n_embd=32, n_head=2).save_pretrained(tmp_path)
    with pytest.raises(NotLlamaFamilyError, match=r"'gpt2'.*supported model types: llama"):
        load_parent(tmp_path)
    with pytest.raises(FileNotFoundError, match="no config.json"):
        load_parent(tmp_path / "missing")


def test_parent_fingerprint_tracks_config_and_weights(tmp_path):
    save_tiny(LlamaForCausalLM, LlamaConfig(**TINY), tmp_path / "a")
    save_tiny(LlamaForCausalLM, LlamaConfig(**{**TINY, "num_hidden_layers": 3}), tmp_path / "b")
    fa = parent_fingerprint(tmp_path / "a")
    assert fa == parent_fingerprint(tmp_path / "a")
    assert fa != parent_fingerprint(tmp_path / "b")


def test_block_config_dict_layout_and_rules():
    assert ffn_mult_to_intermediate_size(5.25, 8192) == 28672
    b = BlockConfig(AttentionConfig.gqa(3, 9), FFNConfig.of_size(1536, 576))
    d = b.to_dict()
    assert d == {
        "attention": {"n_heads_in_group": 3, "no_op": False, "replace_with_linear": False},
        "ffn": {"ffn_mult": 4.0, "no_op": False, "replace_with_linear": False, "intermediate_size": 1536},
    }
    assert BlockConfig.from_dict(json.loads(json.dumps(d)), hidden_size=576, num_attention_heads=9) == b
    assert (b.attention.name, b.ffn.name) == ("gqa_kv3", "ffn_1536")
    # A Nemotron-51B entry (ffn_mult only, extra switches off) parses; an active unknown switch does not.
    nemotron = {
        "attention": {
            "n_heads_in_group": 8,
            "no_op": False,
            "replace_with_linear": False,
            "sparsify": None,
            "window_length": None,
        },
        "ffn": {"ffn_mult": 5.25, "no_op": False, "replace_with_linear": False, "sparsify": None},
    }
    parsed = BlockConfig.from_dict(nemotron, hidden_size=8192, num_attention_heads=64)
    assert parsed.ffn.intermediate_size == 28672 and parsed.attention.num_key_value_heads == 8
    with pytest.raises(ValueError, match="window_length"):
        BlockConfig.from_dict({**nemotron, "attention": {**nemotron["attention"], "window_length": 512}})
    with pytest.raises(ValueError, match="num_hidden_layers=4"):
        DeciLMConfig(**TINY, block_configs=[d])


def test_subblock_outputs_and_cache_layout():
    model = mixed_model()
    B, T = 2, 7
    h = torch.randn(B, T, 64)
    pos = model.model.rotary_emb(h, torch.arange(T)[None])
    kinds = []
    for layer in model.model.layers:
        if layer.attn_block is None:
            kinds.append("no_op")
        else:
            assert layer.attn_block(h, pos).shape == (B, T, 64)
            kinds.append(type(layer.self_attn).__name__)
        if layer.ffn_block is not None:
            assert layer.ffn_block(h).shape == (B, T, 64)
    assert kinds == ["DeciLMLinearAttention", "DeciLMAttention", "no_op", "DeciLMAttention"]
    assert model.model.layers[0].mlp.gate_proj.out_features == 48
    assert model.model.layers[1].mlp is None and model.model.layers[2].mlp.linear_mlp.in_features == 64
    with torch.no_grad():
        out = model(torch.randint(0, 256, (B, T)), use_cache=True)
    cache = out.past_key_values
    # only the two GQA layers (layer 1: 2 KV heads, layer 3: 1 KV head) store keys/values
    assert len(cache.layers) == 2
    assert [tuple(layer.keys.shape) for layer in cache.layers] == [(B, 2, T, 16), (B, 1, T, 16)]
    assert cache.get_seq_length() == T


def test_forward_layers_in_slices_matches_forward():
    """Two slices of forward_layers (the way scoring runs a model) give forward's states and KV-cache layout."""
    model = mixed_model(seed=3)
    B, T = 2, 9
    ids = torch.randint(0, 256, (B, T), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        full = model.model(ids, use_cache=True)
        h = model.model.forward_layers(model.model.embed_tokens(ids), 0, 2)
        assert torch.allclose(
            model.model.norm(model.model.forward_layers(h, 2)), full.last_hidden_state, atol=1e-5
        )
        cache = DynamicCache()
        pos = model.model.rotary_emb(h, torch.arange(T)[None])
        h = model.model.forward_layers(
            model.model.embed_tokens(ids), 0, 2, position_embeddings=pos, past_key_values=cache
        )
        model.model.forward_layers(h, 2, position_embeddings=pos, past_key_values=cache)
    # layer 3 is the second GQA layer: the second slice must write cache slot 1, not append to slot 0
    assert [tuple(layer.keys.shape) for layer in cache.layers] == [(B, 2, T, 16), (B, 1, T, 16)]
    for mine, ref in zip(cache.layers, full.past_key_values.layers, strict=True):
        assert torch.allclose(mine.keys, ref.keys, atol=1e-6) and torch.allclose(
            mine.values, ref.values, atol=1e-6
        )


def test_incremental_decoding_matches_full_forward():
    model = mixed_model(seed=1)
    ids = torch.randint(0, 256, (2, 12), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        full = model(ids).logits
        first = model(ids[:, :5], use_cache=True)
        chunk = model(
            ids[:, 5:9], past_key_values=first.past_key_values, use_cache=True
        )  # offset causal mask
        rest = [
            model(ids[:, t : t + 1], past_key_values=chunk.past_key_values, use_cache=True).logits
            for t in range(9, 12)
        ]
    torch.testing.assert_close(torch.cat([first.logits, chunk.logits, *rest], dim=1), full, atol=1e-5, rtol=0)


def test_generate_with_cache_equals_greedy_without_cache():
    model = mixed_model(seed=3)
    ids = torch.randint(1, 256, (2, 6), generator=torch.Generator().manual_seed(4))
    mask = torch.ones_like(ids)
    mask[1, :2] = 0  # left padding on the second row exercises the padding mask
    kw = dict(max_new_tokens=8, do_sample=False, pad_token_id=0, attention_mask=mask)
    with_cache = model.generate(ids, use_cache=True, **kw)
    without = model.generate(ids, use_cache=False, **kw)
    assert with_cache.shape == (2, 14)
    assert torch.equal(with_cache, without)
    # greedy by hand, no cache: the same tokens
    seq = ids[:1]
    for _ in range(8):
        with torch.no_grad():
            nxt = model(seq).logits[:, -1].argmax(-1, keepdim=True)
        seq = torch.cat([seq, nxt], dim=1)
    assert torch.equal(seq, with_cache[:1])


@pytest.mark.skipif(
    not get_source("smollm2").is_fetched(),
    reason="SmolLM2 not fetched (`effinfer-data fetch smollm2`; scripts/setup.sh does it)",
)
def test_real_smollm2_parent_identity():
    from benchmarks.data import smollm2_dir

    path = smollm2_dir()
    model, tokenizer = load_parent(path)
    assert (
        model.config.num_hidden_layers == 30
        and model.config.block_configs[0]["attention"]["n_heads_in_group"] == 3
    )
    ref = LlamaForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    ids = tokenizer("It is a truth universally acknowledged", return_tensors="pt").input_ids
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, ref(ids).logits, atol=1e-4, rtol=0)
