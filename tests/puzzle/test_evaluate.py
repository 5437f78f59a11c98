"""evaluate_models: quality beside the parent and speed-ups relative to the parent, round by round."""

from __future__ import annotations

import copy

import pytest
import torch

from puzzle.costs import Scenario
from puzzle.evaluate import evaluate_models
from puzzle.parent import load_parent


def test_speedup_is_relative_to_the_parent_round_by_round(tiny_parent):
    parent = load_parent(tiny_parent)[0]
    child = copy.deepcopy(parent)
    # the machine halves its speed after the first round; the child runs in 0.8 of the parent's time throughout
    rounds = {"parent": [10.0, 20.0, 20.0], "child": [8.0, 16.0, 16.0]}
    costs = {
        name: {
            "prefill_ms": 1.0,
            "decode_ms": 1.0,
            "runtime_ms": sorted(r)[1],
            "tokens_per_s": 1000 / sorted(r)[1],
            "rounds_ms": r,
        }
        for name, r in rounds.items()
    }
    batches = [torch.randint(0, parent.config.vocab_size, (1, 6))]
    results = evaluate_models(
        {"child": child},
        parent,
        batches,
        Scenario(prefill=4, decode=2),
        device=torch.device("cpu"),
        predicted_runtime_ms={"parent": 100.0, "child": 90.0},
        progress=False,
        costs=costs,
    )
    assert results["parent"]["speedup"] == 1.0
    assert results["child"]["speedup"] == pytest.approx(1 / 0.8)
    assert results["child"]["predicted_over_measured_vs_parent"] == pytest.approx(0.9 / 0.8)
    assert results["child"]["kl"] == pytest.approx(0.0, abs=1e-6)  # the same weights as the parent
    assert "rounds_ms" not in results["child"] and "measured_rounds_ms" not in results["child"]
