"""Search space validation, subblock inits from the parent, block library save/load."""

from __future__ import annotations

import copy

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from puzzle.bld import parent_activations
from puzzle.library import (
    BlockLibrary,
    SearchSpace,
    SearchSpaceError,
    build_library,
    calibration_stats,
    init_linear_attention,
    init_linear_ffn,
    init_reduced_attention,
    init_reduced_ffn,
)
from puzzle.parent import load_parent

TINY = dict(
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    vocab_size=256,
    max_position_embeddings=64,
    initializer_range=0.1,
)


@pytest.fixture(scope="module")
def parent(load_tiny_llama):
    return load_tiny_llama(TINY)


def calib(n: int = 2):
    g = torch.Generator().manual_seed(5)
    return [{"input_ids": torch.randint(0, 256, (2, 16), generator=g)} for _ in range(n)]


def positions(parent, h):
    return parent.model.rotary_emb(h, torch.arange(h.shape[1])[None])


@pytest.mark.parametrize(
    "bad, match",
    [
        ({"kv_heads": [3]}, r"kv_heads entry 3 .*valid options: \[1, 2\]"),
        ({"kv_heads": [0]}, r"kv_heads entry 0 .*valid options: \[1, 2\]"),
        ({"ffn_fractions": [1.5]}, r"ffn_fractions entry 1.5 is outside \(0, 1\]"),
        ({"ffn_fractions": [0.0]}, r"ffn_fractions entry 0.0 is outside"),
        ({"kv_init": "random"}, r"kv_init 'random' is not one of \['mean_pool', 'importance'\]"),
        ({"ffn_init": "magnitude"}, r"ffn_init 'magnitude' is not one of"),
    ],
)
def test_search_space_validation_errors(parent, bad, match):
    space = SearchSpace.from_dict({"kv_heads": [1], "ffn_fractions": [0.5], **bad})
    with pytest.raises(SearchSpaceError, match=match):
        space.validate(parent.config)


def test_search_space_dict_errors_and_variants(parent):
    with pytest.raises(SearchSpaceError, match=r"unknown search-space key\(s\) \['kv'\]"):
        SearchSpace.from_dict({"kv": [1], "ffn_fractions": [0.5]})
    with pytest.raises(SearchSpaceError, match="needs \\['ffn_fractions'\\]"):
        SearchSpace.from_dict({"kv_heads": [1]})
    space = SearchSpace.from_dict(
        {"kv_heads": [1], "ffn_fractions": [0.5, 0.26], "attention_no_op": False, "ffn_multiple_of": 16}
    )
    assert SearchSpace.from_dict(space.to_dict()) == space
    with pytest.raises(SearchSpaceError, match="ffn_fractions entry 'half' is not a number"):
        SearchSpace.from_dict({"kv_heads": [1], "ffn_fractions": ["half"]}).validate(parent.config)
    assert [a.name for a in space.attention_variants(parent.config)] == ["gqa_kv2", "gqa_kv1", "linear"]
    # parent width always present; 0.26 * 128 = 33.3 rounds to 32 with ffn_multiple_of 16
    assert [f.name for f in space.ffn_variants(parent.config)] == [
        "ffn_128",
        "ffn_64",
        "ffn_32",
        "linear",
        "no_op",
    ]


def test_mean_pool_of_identical_heads_reproduces_parent(parent):
    block = parent.model.layers[0].attn_block
    twin = copy.deepcopy(block)
    with torch.no_grad():  # make both KV heads of the group identical
        for proj in (twin.self_attn.k_proj, twin.self_attn.v_proj):
            proj.weight[16:] = proj.weight[:16]
    reduced = init_reduced_attention(twin, parent.config, 0, num_kv=1)
    assert reduced.self_attn.k_proj.out_features == 16
    h = torch.randn(2, 9, 64)
    pos = positions(parent, h)
    with torch.no_grad():
        torch.testing.assert_close(reduced(h, pos), twin(h, pos), atol=1e-5, rtol=0)
        # with distinct heads mean-pooling is an approximation, not the parent
        assert (init_reduced_attention(block, parent.config, 0, 1)(h, pos) - block(h, pos)).abs().max() > 1e-3


def test_importance_init_keeps_the_contributing_head(parent):
    model = copy.deepcopy(parent)
    with torch.no_grad():  # KV head 0 of layer 0 gets zero values: it adds nothing to the residual
        model.model.layers[0].self_attn.v_proj.weight[:16] = 0
    stats = calibration_stats(model, calib())
    imp = stats.kv_importance[0]
    assert imp[0] == 0 and imp[1] > 0
    src = model.model.layers[0].attn_block
    reduced = init_reduced_attention(src, model.config, 0, 1, importance=imp)
    torch.testing.assert_close(reduced.self_attn.k_proj.weight, src.self_attn.k_proj.weight[16:])
    torch.testing.assert_close(reduced.self_attn.v_proj.weight, src.self_attn.v_proj.weight[16:])


def test_linear_inits_follow_the_formulas(parent):
    attn, ffn = parent.model.layers[1].attn_block, parent.model.layers[1].ffn_block
    lin = init_linear_attention(attn, parent.config)
    w_v = attn.self_attn.v_proj.weight.view(2, 16, 64)
    expected = attn.self_attn.o_proj.weight @ torch.cat(
        [w_v[0], w_v[0], w_v[1], w_v[1]]
    )  # q heads 0,1 -> kv 0
    torch.testing.assert_close(lin.self_attn.linear_attn.weight, expected)
    h = torch.randn(3, 1, 64)  # one token attends only to itself: attention == W_o W_v exactly
    with torch.no_grad():
        torch.testing.assert_close(lin(h), attn(h, positions(parent, h)), atol=1e-5, rtol=0)
    lin_ffn = init_linear_ffn(ffn, parent.config)
    torch.testing.assert_close(
        lin_ffn.mlp.linear_mlp.weight, ffn.mlp.down_proj.weight @ ffn.mlp.up_proj.weight
    )
    # with calibration data the gate is replaced by its mean activation per channel
    batch = calib(1)
    gate = calibration_stats(parent, batch).gate_mean[1]
    ffn_in = parent_activations(parent, batch[0]["input_ids"])[1]["ffn_in"]
    with torch.no_grad():
        expected_gate = ffn.mlp.act_fn(ffn.mlp.gate_proj(ffn.post_attention_layernorm(ffn_in))).mean(
            dim=(0, 1)
        )
    torch.testing.assert_close(gate, expected_gate)
    scaled = init_linear_ffn(ffn, parent.config, gate)
    torch.testing.assert_close(
        scaled.mlp.linear_mlp.weight, ffn.mlp.down_proj.weight @ torch.diag(gate) @ ffn.mlp.up_proj.weight
    )


def test_least_squares_linear_inits_fit_the_calibration_tokens(parent):
    batches = calib(4)
    stats = calibration_stats(parent, batches, linear_fits=True)
    acts = [parent_activations(parent, b["input_ids"])[1] for b in batches]
    attn, ffn = parent.model.layers[1].attn_block, parent.model.layers[1].ffn_block
    fit_attn = init_linear_attention(attn, parent.config, stats.attention_fit[1])
    fit_ffn = init_linear_ffn(ffn, parent.config, fit=stats.ffn_fit[1])
    cases = [  # (fitted block, its linear layer, its norm, the note's product init, subblock inputs, outputs)
        (
            fit_attn,
            fit_attn.self_attn.linear_attn,
            fit_attn.input_layernorm,
            init_linear_attention(attn, parent.config),
            torch.cat([a["attn_in"] for a in acts]),
            torch.cat([a["attn_out"] for a in acts]),
        ),
        (
            fit_ffn,
            fit_ffn.mlp.linear_mlp,
            fit_ffn.post_attention_layernorm,
            init_linear_ffn(ffn, parent.config),
            torch.cat([a["ffn_in"] for a in acts]),
            torch.cat([a["ffn_out"] for a in acts]),
        ),
    ]
    for fitted, linear, norm, product, x, y in cases:
        with torch.no_grad():
            xn = norm(x).reshape(-1, 64).double()
            ref = torch.linalg.lstsq(
                xn, y.reshape(-1, 64).double()
            ).solution.T.float()  # no ridge, no intercept
            torch.testing.assert_close(linear.weight, ref, atol=5e-2, rtol=5e-2)
            nmse = {
                name: ((m(x) - y).square().sum() / y.square().sum()).item()
                for name, m in (("fitted", fitted), ("product", product))
            }
        assert nmse["fitted"] < min(nmse["product"], 1.0), nmse  # 1.0 = a no-op's normalised MSE


def test_ffn_inits_truncate_and_activation_ranking(parent):
    ffn = parent.model.layers[0].ffn_block
    trunc = init_reduced_ffn(ffn, parent.config, 32)
    torch.testing.assert_close(trunc.mlp.gate_proj.weight, ffn.mlp.gate_proj.weight[:32])
    torch.testing.assert_close(trunc.mlp.down_proj.weight, ffn.mlp.down_proj.weight[:, :32])
    contrib = calibration_stats(parent, calib()).ffn_contribution[0]
    ranked = init_reduced_ffn(ffn, parent.config, 32, contrib)
    keep = contrib.topk(32).indices.sort().values
    torch.testing.assert_close(ranked.mlp.up_proj.weight, ffn.mlp.up_proj.weight[keep])
    # keeping every channel in ranked order is the parent FFN itself
    full = init_reduced_ffn(ffn, parent.config, 128, contrib)
    h = torch.randn(2, 5, 64)
    with torch.no_grad():
        torch.testing.assert_close(full(h), ffn(h), atol=1e-5, rtol=0)


def test_library_parent_variants_copy_parent_and_round_trip(parent, tmp_path):
    space = SearchSpace.from_dict({"kv_heads": [1], "ffn_fractions": [0.5], "kv_init": "importance"})
    lib = build_library(parent, space, calib())
    h = torch.randn(2, 6, 64)
    pos = positions(parent, h)
    with torch.no_grad():
        for i, layer in enumerate(parent.model.layers):
            torch.testing.assert_close(lib.attention_block(i, "gqa_kv2")(h, pos), layer.attn_block(h, pos))
            torch.testing.assert_close(lib.ffn_block(i, "ffn_128")(h), layer.ffn_block(h))
            assert lib.attention_block(i, "no_op") is None and lib.ffn_block(i, "no_op") is None
    lib.save(tmp_path / "lib")
    lib.save(tmp_path / "lib")  # overwriting an existing library works and leaves no temp folders
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lib"]
    loaded = BlockLibrary.load(tmp_path / "lib", parent)
    assert loaded.attention_names == lib.attention_names and loaded.ffn_names == lib.ffn_names
    assert loaded.space == space
    for a, b in zip(loaded.state_dict().items(), lib.state_dict().items(), strict=True):
        assert a[0] == b[0] and torch.equal(a[1], b[1])
    with pytest.raises(KeyError, match="no ffn variant 'ffn_7'"):
        loaded.ffn_block(0, "ffn_7")


def test_library_load_rejects_other_parent(parent, tmp_path):
    build_library(
        parent, SearchSpace.from_dict({"kv_heads": [1], "ffn_fractions": [0.5], "ffn_init": "truncate"})
    ).save(tmp_path / "lib")
    torch.manual_seed(0)
    LlamaForCausalLM(LlamaConfig(**{**TINY, "intermediate_size": 96})).save_pretrained(tmp_path / "other")
    other, _ = load_parent(tmp_path / "other")
    with pytest.raises(ValueError, match="rebuild the library"):
        BlockLibrary.load(tmp_path / "lib", other)
    with pytest.raises(ValueError, match="need calibration batches"):
        build_library(parent, SearchSpace.from_dict({"kv_heads": [1], "ffn_fractions": [0.5]}))
