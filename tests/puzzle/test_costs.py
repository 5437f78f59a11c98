"""Measured subblock costs: positive times, free no-ops, the memory formula, and the whole-model generation loop."""

from __future__ import annotations

import pytest
import torch
from puzzle.block_config import AttentionConfig, FFNConfig
from puzzle.costs import (
    CostTable,
    GreedyGenerator,
    Scenario,
    build_cost_table,
    kv_cache_bytes,
    measure_variants,
)
from puzzle.modeling_decilm import build_attention_block, build_ffn_block
from puzzle.parent import load_parent

CPU = torch.device("cpu")
SCENARIO = Scenario(batch=2, prefill=8, decode=4, dtype="float32")


@pytest.fixture(scope="module")
def parent(tiny_parent):
    return load_parent(tiny_parent)[0]


def test_scenario_validation_and_throughput():
    with pytest.raises(ValueError, match="dtype"):
        Scenario(dtype="int3")
    with pytest.raises(ValueError, match=">= 1"):
        Scenario(batch=0)
    s = Scenario(batch=4, prefill=16, decode=10)
    assert s.runtime_ms(2.0, 0.5) == 7.0
    assert s.tokens_per_s(s.runtime_budget_ms(123.0)) == pytest.approx(123.0)


def test_kv_memory_formula():
    # (prefill + decode) * batch * 2 (K, V) * n_kv * head_dim * bytes
    assert kv_cache_bytes(SCENARIO, 2, 16) == 12 * 2 * 2 * 2 * 16 * 4
    assert kv_cache_bytes(Scenario(batch=1, prefill=3, decode=1, dtype="bfloat16"), 1, 8) == 4 * 1 * 2 * 1 * 8 * 2


def test_subblock_costs_measured_in_probe_models(parent):
    built = []  # every probe gets the variant in all L layers, each with its own layer index (its KV-cache slot)

    def build_attention(config, i, variant):
        built.append((variant.name, i))
        return build_attention_block(config, i, variant)

    attn, ffn, skeleton, measured = measure_variants(
        parent,
        [AttentionConfig.gqa(2, 4), AttentionConfig.gqa(1, 4), AttentionConfig(replace_with_linear=True),
         AttentionConfig(no_op=True)],
        [FFNConfig.of_size(128, 64), FFNConfig(no_op=True)], SCENARIO,
        build_attention=build_attention, build_ffn=build_ffn_block, device=CPU, warmup=1, iters=3, progress=False)
    assert built == [(name, i) for name in ("gqa_kv2", "gqa_kv1", "linear") for i in range(4)]
    kv2, kv1, linear = attn["gqa_kv2"], attn["gqa_kv1"], attn["linear"]
    for c in (kv2, kv1, ffn["ffn_128"]):
        assert c["decode_ms"] > 0 and c["prefill_ms"] > 0  # a real subblock in 4 layers is not free
    for c in (kv2, kv1, linear, ffn["ffn_128"]):
        assert c["runtime_ms"] == pytest.approx(c["prefill_ms"] + SCENARIO.decode * c["decode_ms"])
    params_kv2 = 64 * 64 * 2 + 64 * 32 * 2 + 64  # q, o, k, v + RMSNorm
    assert kv2["params"] == params_kv2 and kv1["params"] < kv2["params"]
    assert kv2["memory_mib"] * 2**20 == params_kv2 * 4 + kv_cache_bytes(SCENARIO, 2, 16)
    assert linear["memory_mib"] * 2**20 == linear["params"] * 4  # no KV cache
    assert ffn["ffn_128"]["params"] == 3 * 64 * 128 + 64
    assert all(v == 0 for v in attn["no_op"].values()) and all(v == 0 for v in ffn["no_op"].values())
    assert 0 < skeleton["runtime_ms"] < measured["runtime_ms"]
    assert skeleton["tokens_per_s"] == pytest.approx(SCENARIO.tokens_per_s(skeleton["runtime_ms"]))


def test_greedy_generator_matches_recomputation(parent):
    """The KV-cache loop that is timed produces the same tokens as greedy decoding without a cache."""
    gen = GreedyGenerator(parent, SCENARIO, CPU)
    with torch.inference_mode():
        tokens = gen()
        ids = gen.prompt
        for _ in range(SCENARIO.decode + 1):
            nxt = parent(input_ids=ids, use_cache=False).logits[:, -1:].argmax(-1)
            ids = torch.cat([ids, nxt], dim=1)
    assert tokens.shape == (SCENARIO.batch, SCENARIO.decode + 1)
    assert torch.equal(tokens, ids[:, SCENARIO.prefill:])


def test_cost_table_calibration_and_prediction(parent):
    pa = parent.config.parent_block_config()
    attn = [pa.attention, AttentionConfig(no_op=True)]
    ffn = [pa.ffn, FFNConfig.of_size(64, 64), FFNConfig(no_op=True)]
    table = build_cost_table(parent, attn, ffn, SCENARIO,
                             build_attention=build_attention_block, build_ffn=build_ffn_block, device=CPU,
                             warmup=1, iters=3, progress=False)
    assert set(table.attention) == {"gqa_kv2", "no_op"} and set(table.ffn) == {"ffn_128", "ffn_64", "no_op"}
    assert table.ffn["no_op"]["runtime_ms"] == 0 and table.nonblock["runtime_ms"] > 0
    measured = table.calibration["parent_measured"]
    # the skeleton (every block a no-op) is the fixed runtime; the per-subblock overhead closes the gap between the
    # sum of parts and the measured parent exactly
    assert table.fixed()["runtime_ms"] == table.skeleton["runtime_ms"] > 0
    assert table.predict([("no_op", "no_op")] * 4)["runtime_ms"] == pytest.approx(table.skeleton["runtime_ms"])
    assert table.predict([(pa.attention.name, pa.ffn.name)] * 4)["runtime_ms"] == pytest.approx(
        measured["runtime_ms"])
    cheaper = table.predict([(pa.attention.name, "no_op")] * 4)
    assert cheaper["runtime_ms"] < measured["runtime_ms"] and cheaper["params"] < table.predict(
        [(pa.attention.name, pa.ffn.name)] * 4)["params"]
    assert CostTable.from_dict(table.to_dict()).predict([("no_op", "no_op")] * 4) == table.predict(
        [("no_op", "no_op")] * 4)
