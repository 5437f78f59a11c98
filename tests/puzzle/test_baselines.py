import numpy as np
import pytest
import torch

from puzzle.baselines import block_influence, homogeneous_choices, shortgpt_choice, uniform_choice
from puzzle.search import InfeasibleTargetError, SearchProblem, solve
from puzzle.synthetic import synthetic_problem


def test_uniform_picks_best_homogeneous_within_budget():
    for seed in range(3):
        p = synthetic_problem(12, 14, seed, nan_fraction=0.0)
        lo, hi = p.cost_range("runtime_ms")
        budget = {"runtime_ms": lo + 0.45 * (hi - lo)}
        sol = uniform_choice(p, budget)
        assert len(set(sol.names)) == 1 and len(set(sol.choice)) == 1  # homogeneous
        assert sol.costs["runtime_ms"] <= budget["runtime_ms"]
        # Independently: best total score over the variants whose every-layer total fits.
        rt = p.costs["runtime_ms"].sum(axis=0) + p.fixed_costs["runtime_ms"]
        fits = rt <= budget["runtime_ms"]
        assert sol.objective == pytest.approx(p.scores.sum(axis=0)[fits].min())
        # The heterogeneous search can only do as well or better at the same budget.
        assert solve(p, budgets=budget)[0].objective <= sol.objective + 1e-12


def test_uniform_respects_allowed_variants_and_availability():
    p = synthetic_problem(6, 10, 0, nan_fraction=0.0)
    p.scores[2, 3] = np.nan  # variant 3 is missing in one layer: not homogeneous
    names = p.variant_names[0]
    assert names[3] not in homogeneous_choices(p)
    allowed = [n for n in names if "no_op" not in n and "linear" not in n]
    sol = uniform_choice(p, {"params": p.cost_range("params")[1]}, allowed_variants=allowed)
    assert sol.names[0] in allowed and sol.objective == 0.0  # unconstrained: the parent
    with pytest.raises(InfeasibleTargetError, match="homogeneous"):
        uniform_choice(p, {"params": p.fixed_costs["params"] + 1.0}, allowed_variants=allowed)


def shortgpt_problem(fixed: float = 0.5) -> SearchProblem:
    layers = 6
    return SearchProblem(
        variant_names=[["parent", "half", "drop"]] * layers,
        scores=np.tile([0.0, 0.2, 1.0], (layers, 1)),
        costs={"runtime_ms": np.tile([1.0, 0.5, 0.0], (layers, 1))},
        fixed_costs={"runtime_ms": fixed},
    )


def test_shortgpt_drops_lowest_bi_first():
    p = shortgpt_problem()
    bi = np.array([0.5, 0.1, 0.3, 0.05, 0.9, 0.2])
    # 6 blocks + 0.5 fixed = 6.5; a 3.5 budget needs three drops: layers 3, 1, 5 (lowest BI).
    sol = shortgpt_choice(p, bi, {"runtime_ms": 3.5})
    assert sol.choice == [0, 2, 0, 2, 0, 2]
    assert sol.costs["runtime_ms"] == pytest.approx(3.5)
    # One more unit of budget: one fewer drop; the kept drops are still the lowest-BI ones.
    assert shortgpt_choice(p, bi, {"runtime_ms": 4.5}, drop_variant="drop").choice == [0, 2, 0, 2, 0, 0]
    assert shortgpt_choice(p, bi, {"runtime_ms": 10.0}).choice == [0] * 6


def test_shortgpt_skips_layers_that_cannot_drop_and_reports_infeasible():
    p = shortgpt_problem()
    p.scores[3, 2] = np.nan  # layer 3 (lowest BI) has no drop variant
    bi = np.array([0.5, 0.1, 0.3, 0.05, 0.9, 0.2])
    assert shortgpt_choice(p, bi, {"runtime_ms": 4.5}).choice == [0, 2, 0, 0, 0, 2]
    with pytest.raises(InfeasibleTargetError, match="droppable"):
        shortgpt_choice(p, bi, {"runtime_ms": 1.0})
    with pytest.raises(ValueError, match="one block influence per layer"):
        shortgpt_choice(p, bi[:3], {"runtime_ms": 4.5})


def test_shortgpt_without_zero_cost_variant_needs_explicit_drop():
    p = shortgpt_problem()
    p.costs["runtime_ms"][:, 2] = 0.01
    with pytest.raises(ValueError, match="drop_variant"):
        shortgpt_choice(p, np.arange(6.0), {"runtime_ms": 4.0})
    assert shortgpt_choice(p, np.arange(6.0), {"runtime_ms": 4.6}, drop_variant="drop").choice[:2] == [2, 2]


def test_block_influence_identical_and_orthogonal():
    torch.manual_seed(0)
    x = torch.randn(2, 5, 8)
    e0, e1 = torch.zeros(8), torch.zeros(8)
    e0[0], e1[1] = 1.0, 1.0
    a = e0.expand(2, 5, 8) * torch.rand(2, 5, 1).add(0.5)
    b = e1.expand(2, 5, 8) * torch.rand(2, 5, 1).add(0.5)
    bi = block_influence([x, x.clone(), a, b, -b])  # identical, unrelated, orthogonal, opposite
    assert bi.shape == (4,)
    assert bi[0] == pytest.approx(0.0, abs=1e-12)
    assert bi[2] == pytest.approx(1.0, abs=1e-12)
    assert bi[3] == pytest.approx(2.0, abs=1e-12)


def test_block_influence_mask_ignores_padding():
    x = torch.randn(1, 4, 8)
    y = x.clone()
    y[0, 3] = torch.zeros(8).index_fill_(0, torch.tensor([0]), 1.0)
    x[0, 3] = torch.zeros(8).index_fill_(0, torch.tensor([1]), 1.0)  # padding token: orthogonal in/out
    mask = torch.tensor([[1, 1, 1, 0]])
    assert block_influence([x, y], mask)[0] == pytest.approx(0.0, abs=1e-12)
    assert block_influence([x, y])[0] == pytest.approx(0.25, abs=1e-12)


def test_block_influence_on_hf_hidden_states():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=256,
    )
    model = LlamaForCausalLM(cfg).eval()
    with torch.no_grad():
        out = model(torch.randint(0, 256, (2, 16)), output_hidden_states=True)
    bi = block_influence(out.hidden_states)
    assert bi.shape == (4,) and np.all((bi >= 0) & (bi <= 2))
