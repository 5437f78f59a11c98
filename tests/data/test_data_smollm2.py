import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from benchmarks.data import SourceMissingError, fetch, load_austen, smollm2_dir, smollm2_gguf

PROMPT = "It is a truth universally acknowledged, that a single man in possession of a good fortune"


@pytest.fixture(scope="module")
def models():
    """The converted Hugging Face model and the GGUF-loaded one, loaded once for the module."""
    fetch("smollm2")
    folder = smollm2_dir()
    try:
        gguf = smollm2_gguf()
    except SourceMissingError as e:  # only a copy fetched from the canonical hub has no GGUF to compare with
        pytest.skip(f"no GGUF to compare with: {e}")
    converted = AutoModelForCausalLM.from_pretrained(folder).eval()
    original = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name).eval()
    return (
        converted,
        original,
        AutoTokenizer.from_pretrained(folder),
        AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name),
    )


def test_config_facts(models) -> None:
    config = models[0].config
    assert (config.num_hidden_layers, config.hidden_size, config.intermediate_size) == (30, 576, 1536)
    assert (config.num_attention_heads, config.num_key_value_heads, config.vocab_size) == (9, 3, 49152)
    assert config.tie_word_embeddings and getattr(config, "quantization_config", None) is None
    assert 134e6 < sum(p.numel() for p in models[0].parameters()) < 135e6


def test_same_tokens_and_logits_as_the_gguf(models) -> None:
    converted, original, tokenizer, gguf_tokenizer = models
    ids = tokenizer(PROMPT, return_tensors="pt").input_ids
    assert ids.tolist() == gguf_tokenizer(PROMPT, return_tensors="pt").input_ids.tolist()
    with torch.inference_mode():
        ours, theirs = converted(ids).logits, original(ids).logits
    assert ours.shape == (1, ids.shape[1], 49152)
    assert torch.allclose(ours, theirs, rtol=0, atol=1e-6)


def test_predicts_real_text_far_better_than_shuffled(models) -> None:
    converted, _, tokenizer, _ = models
    fetch("austen")
    text = load_austen()["Persuasion"][5000:5600]
    ids = tokenizer(text, return_tensors="pt").input_ids[:, :96]
    shuffled = ids[:, torch.randperm(ids.shape[1], generator=torch.Generator().manual_seed(0))]
    with torch.inference_mode():
        real = converted(ids, labels=ids).loss.item()
        scrambled = converted(shuffled, labels=shuffled).loss.item()
    assert real < 5.0 and real + 2.0 < scrambled  # uniform guessing would be ln(49152) = 10.8
