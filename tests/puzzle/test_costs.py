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
    measure_attention,
    measure_ffn,
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
    assert s.decode_cache_len == 21
    assert s.runtime_ms(2.0, 0.5) == 7.0
    assert s.tokens_per_s(s.runtime_budget_ms(123.0)) == pytest.approx(123.0)


def test_kv_memory_formula():
    # (prefill + decode) * batch * 2 (K, V) * n_kv * head_dim * bytes
    assert kv_cache_bytes(SCENARIO, 2, 16) == 12 * 2 * 2 * 2 * 16 * 4
    assert kv_cache_bytes(Scenario(batch=1, prefill=3, decode=1, dtype="bfloat16"), 1, 8) == 4 * 1 * 2 * 1 * 8 * 2


def test_subblock_costs(parent):
    cfg, rotary = parent.config, parent.model.rotary_emb
    kw = {"hidden_size": 64, "head_dim": 16, "device": CPU, "warmup": 1, "iters": 3}
    kv2 = measure_attention(build_attention_block(cfg, 0, AttentionConfig.gqa(2, 4)), rotary, SCENARIO,
                            n_kv_heads=2, **kw)
    kv1 = measure_attention(build_attention_block(cfg, 0, AttentionConfig.gqa(1, 4)), rotary, SCENARIO,
                            n_kv_heads=1, **kw)
    linear = measure_attention(build_attention_block(cfg, 0, AttentionConfig(replace_with_linear=True)), rotary,
                               SCENARIO, n_kv_heads=0, **kw)
    for c in (kv2, kv1, linear):
        assert c["prefill_ms"] > 0 and c["decode_ms"] > 0
        assert c["runtime_ms"] == pytest.approx(c["prefill_ms"] + SCENARIO.decode * c["decode_ms"])
    params_kv2 = 64 * 64 * 2 + 64 * 32 * 2 + 64  # q, o, k, v + RMSNorm
    assert kv2["params"] == params_kv2 and kv1["params"] < kv2["params"]
    assert kv2["memory_mib"] * 2**20 == params_kv2 * 4 + kv_cache_bytes(SCENARIO, 2, 16)
    assert linear["memory_mib"] * 2**20 == linear["params"] * 4  # no KV cache
    ffn = measure_ffn(build_ffn_block(cfg, FFNConfig.of_size(128, 64)), SCENARIO, hidden_size=64, device=CPU,
                      warmup=1, iters=3)
    assert ffn["decode_ms"] > 0 and ffn["params"] == 3 * 64 * 128 + 64
    # several copies (weights streamed as in a deep model): per-copy time, the same params and memory
    copies = measure_attention([build_attention_block(cfg, 0, AttentionConfig.gqa(2, 4)) for _ in range(3)], rotary,
                               SCENARIO, n_kv_heads=2, **kw)
    assert copies["decode_ms"] > 0 and (copies["params"], copies["memory_mib"]) == (kv2["params"], kv2["memory_mib"])
    for none in (measure_attention(None, rotary, SCENARIO, n_kv_heads=2, **kw),
                 measure_ffn(None, SCENARIO, hidden_size=64, device=CPU)):
        assert all(v == 0 for v in none.values())


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
