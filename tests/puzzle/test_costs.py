"""Measured block costs: positive times, free no-ops, the memory formula, and the whole-model generation loop."""

from __future__ import annotations

import pytest
import torch

from puzzle.block_config import AttentionConfig, BlockConfig, FFNConfig
from puzzle.costs import CostTable, Scenario, kv_cache_bytes
from puzzle.modeling_decilm import build_attention_block, build_ffn_block
from puzzle.parent import load_parent
from puzzle.probes import additive_times, build_cost_table, measure_blocks, with_blocks
from puzzle.timing import GreedyGenerator, runtime_ratio

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
    assert (
        kv_cache_bytes(Scenario(batch=1, prefill=3, decode=1, dtype="bfloat16"), 1, 8)
        == 4 * 1 * 2 * 1 * 8 * 2
    )


def test_block_costs_measured_in_probe_models(parent):
    built = []  # every probe gets the block in all L layers, each attention with its own layer index (KV-cache slot)

    def build_attention(config, i, variant):
        if not variant.no_op:
            built.append((variant.name, i))
        return build_attention_block(config, i, variant)

    pa = parent.config.parent_block_config()
    attention = [
        AttentionConfig.gqa(2, 4),
        AttentionConfig.gqa(1, 4),
        AttentionConfig(replace_with_linear=True),
        AttentionConfig(no_op=True),
    ]
    assert attention[0] == pa.attention
    times, skeleton, measured, probed = measure_blocks(
        parent,
        attention,
        [FFNConfig.of_size(128, 64), FFNConfig(no_op=True)],
        SCENARIO,
        build_attention=build_attention,
        build_ffn=build_ffn_block,
        device=CPU,
        probes="blocks",
        warmup=1,
        iters=3,
        progress=False,
    )
    assert probed == times
    # the parent's block is the parent itself and no_op+no_op is free: six probes, one per other block
    probed = [
        "gqa_kv2",
        "gqa_kv1",
        "gqa_kv1",
        "linear",
        "linear",
    ]  # +no_op, +ffn_128, +no_op, +ffn_128, +no_op
    assert built == [(name, i) for name in probed for i in range(4)]
    assert set(times) == {f"{a.name}+{f}" for a in attention for f in ("ffn_128", "no_op")}
    for name in ("gqa_kv2+ffn_128", "gqa_kv1+ffn_128", "gqa_kv2+no_op", "no_op+ffn_128"):
        # a real block in 4 layers is not free; one phase alone of a tiny block can drown in a busy machine's noise
        assert (
            times[name]["runtime_ms"] > 0 and times[name]["decode_ms"] >= 0 and times[name]["prefill_ms"] >= 0
        )
    for t in times.values():
        assert t["runtime_ms"] == pytest.approx(t["prefill_ms"] + SCENARIO.decode * t["decode_ms"])
    assert all(v == 0 for v in times["no_op+no_op"].values())
    # the parent = skeleton + L x its block
    assert skeleton["runtime_ms"] + 4 * times["gqa_kv2+ffn_128"]["runtime_ms"] == pytest.approx(
        measured["runtime_ms"]
    )
    assert 0 < skeleton["runtime_ms"] < measured["runtime_ms"]
    assert skeleton["tokens_per_s"] == pytest.approx(SCENARIO.tokens_per_s(skeleton["runtime_ms"]))


def test_subblock_probes_add_up_to_blocks(parent):
    built = []

    def build_attention(config, i, variant):
        if not variant.no_op:
            built.append(variant.name)
        return build_attention_block(config, i, variant)

    attention = [
        AttentionConfig.gqa(2, 4),
        AttentionConfig(replace_with_linear=True),
    ]  # no no-op in this space
    ffn = [FFNConfig.of_size(128, 64), FFNConfig.of_size(64, 64)]
    times, skeleton, measured, probed = measure_blocks(
        parent,
        attention,
        ffn,
        SCENARIO,
        build_attention=build_attention,
        build_ffn=build_ffn_block,
        device=CPU,
        warmup=1,
        iters=3,
        progress=False,
    )
    # one probe per subblock with the other slot a no-op (the parent's attention too: it needs its lone time)
    assert set(probed) == {"gqa_kv2+no_op", "linear+no_op", "no_op+ffn_128", "no_op+ffn_64"}
    assert built == ["gqa_kv2"] * 4 + ["linear"] * 4
    assert set(times) == {f"{a}+{f}" for a in ("gqa_kv2", "linear") for f in ("ffn_128", "ffn_64")}
    # the overhead per subblock makes the parent exact; every block is its two subblocks + twice that overhead
    assert skeleton["runtime_ms"] + 4 * times["gqa_kv2+ffn_128"]["runtime_ms"] == pytest.approx(
        measured["runtime_ms"]
    )
    for k in ("prefill_ms", "decode_ms"):
        over = (measured[k] - skeleton[k] - 4 * (probed["gqa_kv2+no_op"][k] + probed["no_op+ffn_128"][k])) / 8
        assert times["linear+ffn_64"][k] == pytest.approx(  # never below 0, whatever the noise
            max(0.0, probed["linear+no_op"][k] + probed["no_op+ffn_64"][k] + 2 * over)
        )
    with pytest.raises(ValueError, match="probes must be one of"):
        measure_blocks(
            parent,
            attention,
            ffn,
            SCENARIO,
            build_attention=build_attention,
            build_ffn=build_ffn_block,
            device=CPU,
            probes="layers",
        )


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
    assert torch.equal(tokens, ids[:, SCENARIO.prefill :])


def test_cost_table_sizes_and_prediction(parent):
    pa = parent.config.parent_block_config()
    attn = [pa.attention, AttentionConfig(replace_with_linear=True), AttentionConfig(no_op=True)]
    ffn = [pa.ffn, FFNConfig.of_size(64, 64), FFNConfig(no_op=True)]
    table = build_cost_table(
        parent,
        attn,
        ffn,
        SCENARIO,
        build_attention=build_attention_block,
        build_ffn=build_ffn_block,
        device=CPU,
        probes="blocks",
        warmup=1,
        iters=3,
        progress=False,
    )
    assert set(table.attention) == {"gqa_kv2", "linear", "no_op"} and set(table.ffn) == {
        "ffn_128",
        "ffn_64",
        "no_op",
    }
    assert len(table.blocks) == 9 and table.nonblock["runtime_ms"] > 0
    params_kv2 = 64 * 64 * 2 + 64 * 32 * 2 + 64  # q, o, k, v + RMSNorm
    assert table.attention["gqa_kv2"]["params"] == params_kv2
    assert table.attention["gqa_kv2"]["memory_mib"] * 2**20 == params_kv2 * 4 + kv_cache_bytes(
        SCENARIO, 2, 16
    )
    assert (
        table.attention["linear"]["memory_mib"] * 2**20 == table.attention["linear"]["params"] * 4
    )  # no cache
    assert table.ffn["ffn_64"]["params"] == 3 * 64 * 64 + 64
    assert table.ffn["no_op"] == {"params": 0, "memory_mib": 0.0}
    # a block's size is its subblocks' sum; its time is its own measurement
    block = table.block("linear", "ffn_64")
    assert block["params"] == table.attention["linear"]["params"] + table.ffn["ffn_64"]["params"]
    assert block["runtime_ms"] == table.blocks["linear+ffn_64"]["runtime_ms"]
    # how far from additive: every block with both subblocks is compared with its two lone probes
    assert set(table.calibration["additivity"]) == {
        "gqa_kv2+ffn_128",
        "gqa_kv2+ffn_64",
        "linear+ffn_128",
        "linear+ffn_64",
    }
    assert table.calibration["additivity"]["gqa_kv2+ffn_128"] > 0
    # the skeleton is the fixed runtime; the parent's blocks predict the measured parent exactly
    measured = table.calibration["parent_measured"]
    assert table.fixed()["runtime_ms"] == table.skeleton["runtime_ms"] > 0
    assert table.predict([("no_op", "no_op")] * 4)["runtime_ms"] == pytest.approx(
        table.skeleton["runtime_ms"]
    )
    full = table.predict([(pa.attention.name, pa.ffn.name)] * 4)
    assert full["runtime_ms"] == pytest.approx(measured["runtime_ms"])
    mixed = [("linear", "ffn_64"), ("no_op", pa.ffn.name), (pa.attention.name, "no_op"), ("no_op", "no_op")]
    expected = table.skeleton["runtime_ms"] + sum(table.blocks[f"{a}+{f}"]["runtime_ms"] for a, f in mixed)
    assert table.predict(mixed)["runtime_ms"] == pytest.approx(expected)
    assert table.predict(mixed)["params"] < full["params"]
    assert CostTable.from_dict(table.to_dict()).predict(mixed) == table.predict(mixed)


def test_costs_of_the_subblock_cost_model_are_refused():
    old = {
        "scenario": SCENARIO.to_dict(),
        "device": "cpu",
        "attention": {},
        "ffn": {},
        "nonblock": {},
        "skeleton": {},
        "overhead_per_subblock": {},
        "calibration": {},
    }
    with pytest.raises(ValueError, match="measure stage again"):
        CostTable.from_dict(old)


def test_runtime_ratio_is_the_median_of_round_by_round_ratios():
    # the machine slows down 3x after the first round: ratios 0.5, 0.5, 2.0 -> 0.5; medians alone would give 1.0
    measured = {"a": {"rounds_ms": [1.0, 3.0, 6.0]}, "b": {"rounds_ms": [2.0, 6.0, 3.0]}}
    assert runtime_ratio(measured, "a", "b") == 0.5
    with pytest.raises(ValueError):
        runtime_ratio({"a": {"rounds_ms": [1.0]}, "b": {"rounds_ms": [1.0, 2.0]}}, "a", "b")


def test_with_blocks_builds_a_new_architecture_and_leaves_the_model(parent):
    pb = parent.block_configs[0]
    small = BlockConfig(
        AttentionConfig(no_op=True), FFNConfig(intermediate_size=pb.ffn.intermediate_size // 2)
    )
    blocks = [small] + [pb] * (parent.config.num_hidden_layers - 1)
    child = with_blocks(parent, blocks, build_attention_block, build_ffn_block)
    assert [b.name for b in child.block_configs] == [b.name for b in blocks]
    assert child.model.layers[0].attn_block is None
    assert all(b.name == pb.name for b in parent.block_configs)  # a copy: the parent keeps its blocks
    ids = torch.randint(0, parent.config.vocab_size, (1, 5))
    assert child(ids).logits.shape == parent(ids).logits.shape


def test_additive_block_times_are_never_negative():
    # a busy machine: the parent measured faster than its lone subblocks add up to, so the overhead is below 0
    lone = {
        "gqa_kv2+no_op": {"prefill_ms": 3.0, "decode_ms": 1.0},
        "no_op+ffn_128": {"prefill_ms": 3.0, "decode_ms": 1.0},
        "linear+no_op": {"prefill_ms": 0.2, "decode_ms": 0.1},
    }
    pa = BlockConfig(AttentionConfig.gqa(2, 4), FFNConfig.of_size(128, 64))
    blocks = [pa, BlockConfig(AttentionConfig(replace_with_linear=True), FFNConfig(no_op=True))]
    parent, skeleton = {"prefill_ms": 12.0, "decode_ms": 3.0}, {"prefill_ms": 1.0, "decode_ms": 1.0}
    times = additive_times(lone, blocks, pa, parent, skeleton, 2, SCENARIO)
    assert times[pa.name]["prefill_ms"] == pytest.approx((12.0 - 1.0) / 2)  # the parent stays exact
    assert times["linear+no_op"] == {
        "prefill_ms": 0.0,
        "decode_ms": 0.0,
        "runtime_ms": 0.0,
    }  # 0.2 - 0.25 -> 0
