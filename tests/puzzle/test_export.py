"""Realise a heterogeneous child and export it as a folder that plain transformers loads with trust_remote_code."""

from __future__ import annotations

import json

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
)

from puzzle.block_config import BlockConfig
from puzzle.export import export_child
from puzzle.library import SearchSpace, build_library
from puzzle.parent import load_parent
from puzzle.realize import realize

TINY = dict(
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=4,
    num_attention_heads=4,
    num_key_value_heads=2,
    vocab_size=256,
    max_position_embeddings=64,
    initializer_range=0.1,
    tie_word_embeddings=True,
)


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    vocab = {
        "<unk>": 0,
        "</s>": 1,
        **{w: i + 2 for i, w in enumerate("a truth universally acknowledged".split())},
    }
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", eos_token="</s>")


@pytest.fixture(scope="module")
def parent_and_library(tmp_path_factory):
    torch.set_num_threads(1)
    path = tmp_path_factory.mktemp("parent")
    torch.manual_seed(0)
    LlamaForCausalLM(LlamaConfig(**TINY)).save_pretrained(path)
    parent, _ = load_parent(path)
    space = SearchSpace.from_dict({"kv_heads": [1], "ffn_fractions": [0.5], "ffn_init": "truncate"})
    return parent, build_library(parent, space)


def test_realize_validates_choices(parent_and_library):
    parent, lib = parent_and_library
    with pytest.raises(ValueError, match="3 block choices for a parent with 4 layers"):
        realize(parent, [parent.config.parent_block_config()] * 3, lib)
    bad = BlockConfig(lib.attention_config("gqa_kv1"), lib.ffn_config("ffn_64").__class__.of_size(48, 64))
    with pytest.raises(ValueError, match="ffn_48 is not in the library"):
        realize(parent, [bad] * 4, lib)


def test_exported_child_loads_with_trust_remote_code(parent_and_library, tmp_path):
    parent, lib = parent_and_library
    a, f = lib.attention_config, lib.ffn_config
    choices = [
        BlockConfig(a("gqa_kv1"), f("ffn_64")),
        BlockConfig(a("linear"), f("linear")),
        BlockConfig(a("no_op"), f("no_op")),
        BlockConfig(a("gqa_kv2"), f("ffn_128")),
    ]
    child = realize(parent, choices, lib)
    assert child.block_configs == choices
    # layer 3 is the parent's block: the library copy is the parent's weights
    assert torch.equal(child.model.layers[3].mlp.up_proj.weight, parent.model.layers[3].mlp.up_proj.weight)
    out = tmp_path / "child"
    out.mkdir()
    (out / "stale.txt").write_text("an older export")  # replaced as a whole
    export_child(child, tiny_tokenizer(), out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["child"]  # no temp folders left behind
    assert not (out / "stale.txt").exists()
    for name in (
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "block_config.py",
        "configuration_decilm.py",
        "modeling_decilm.py",
    ):
        assert (out / name).is_file(), name
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["model_type"] == "nemotron-nas" and cfg["architectures"] == ["DeciLMForCausalLM"]
    assert cfg["auto_map"]["AutoModelForCausalLM"] == "modeling_decilm.DeciLMForCausalLM"
    assert cfg["block_configs"][2] == {
        "attention": {"n_heads_in_group": None, "no_op": True, "replace_with_linear": False},
        "ffn": {"ffn_mult": None, "no_op": True, "replace_with_linear": False},
    }
    assert cfg["block_configs"][0]["attention"]["n_heads_in_group"] == 4

    loaded = AutoModelForCausalLM.from_pretrained(out, trust_remote_code=True).eval()
    assert type(loaded).__module__.startswith("transformers_modules")  # the copied code, not the package
    ids = torch.randint(0, 256, (2, 10), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids).logits, child(ids).logits, atol=1e-6, rtol=0)
    gen = dict(max_new_tokens=5, do_sample=False, pad_token_id=0)
    assert torch.equal(loaded.generate(ids, **gen), child.generate(ids, **gen))
    tok = AutoTokenizer.from_pretrained(out)
    assert tok("a truth").input_ids == [2, 3]
