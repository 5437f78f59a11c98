"""Replace-1-block scoring: metrics, the in-place swap, the per-candidate cache and resuming after a kill."""

from __future__ import annotations

import copy
import json

import pytest
import torch

from puzzle import scoring
from puzzle.block_config import AttentionConfig, FFNConfig
from puzzle.data import AustenDataModule
from puzzle.parent import load_parent
from puzzle.scoring import Candidate, compare_logits, logits_of, mean_metrics, score_candidates, swapped

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def setup(tiny_parent, austen_texts):
    model, tok = load_parent(tiny_parent)
    dm = AustenDataModule(tok, seq_len=16, batch_size=2, texts=austen_texts)
    return model, dm.heldout_batches("score")


def _candidates(model):
    layers = model.model.layers
    copy_ffn = copy.deepcopy(layers[1].ffn_block)
    noop = FFNConfig(no_op=True)
    return [
        Candidate(1, "ffn", "copy", ffn=(layers[1].block_config.ffn, copy_ffn)),
        Candidate(1, "ffn", "no_op", ffn=(noop, None)),
        Candidate(2, "ffn", "no_op", ffn=(noop, None)),
    ]


def test_scores_parent_copy_zero_and_no_op_positive(setup, tmp_path):
    model, batches = setup
    res = score_candidates(model, _candidates(model), batches, device=CPU, cache_dir=tmp_path, progress=False)
    assert res["parent"]["kl"] == pytest.approx(0.0, abs=1e-6)
    assert res["parent"]["top1_agreement"] == 1.0
    assert res["001-ffn-copy"]["kl"] == pytest.approx(0.0, abs=1e-5)
    assert res["001-ffn-copy"]["lm_loss"] == pytest.approx(res["parent"]["lm_loss"], rel=1e-5)
    assert res["001-ffn-no_op"]["kl"] > 1e-3
    assert res["001-ffn-no_op"]["top1_agreement"] < 1.0
    assert res["parent"]["tokens"] == sum(b[:, 1:].numel() for b in batches)


def test_scores_from_the_layer_input_equal_whole_forwards(setup, tmp_path):
    """Scoring runs each candidate from the parent's input to its layer; a whole forward must give the same."""
    model, batches = setup
    last = len(model.model.layers) - 1
    cands = [
        *_candidates(model),
        Candidate(0, "attention", "no_op", attention=(AttentionConfig(no_op=True), None)),
        Candidate(last, "ffn", "no_op", ffn=(FFNConfig(no_op=True), None)),
    ][::-1]  # out of layer order
    res = score_candidates(model, cands, batches, device=CPU, cache_dir=tmp_path, progress=False)
    with torch.inference_mode():
        parent_logp = [torch.log_softmax(logits_of(model, ids), dim=-1) for ids in batches]
        for cand in cands:
            with swapped(model, cand):
                whole = mean_metrics(
                    [
                        compare_logits(lp, logits_of(model, ids), ids)
                        for ids, lp in zip(batches, parent_logp, strict=True)
                    ]
                )
            assert whole["kl"] > 1e-4 or cand.name == "copy"
            for key in ("kl", "lm_loss", "top1_agreement", "top1_accuracy"):
                assert res[cand.key][key] == pytest.approx(whole[key], rel=1e-4, abs=1e-6), (cand.key, key)


def test_swap_is_undone_even_on_error(setup):
    model, _ = setup
    before = model.model.layers[1].ffn_block
    with pytest.raises(RuntimeError), swapped(model, _candidates(model)[1]):
        assert model.model.layers[1].ffn_block is None
        raise RuntimeError("boom")
    assert model.model.layers[1].ffn_block is before
    assert model.model.layers[1].block_config.ffn == model.config.parent_block_config().ffn


def test_cache_skips_finished_and_resumes_after_kill(setup, tmp_path, monkeypatch):
    model, batches = setup
    clean = score_candidates(
        model,
        _candidates(model),
        batches,
        device=CPU,
        cache_dir=tmp_path / "clean",
        cache_tag="a",
        progress=False,
    )

    real, calls = scoring.score_candidate, []

    def dies_on_third(*args, **kwargs):
        calls.append(args[1].key)
        if len(calls) == 3:
            raise KeyboardInterrupt("killed")
        return real(*args, **kwargs)

    monkeypatch.setattr(scoring, "score_candidate", dies_on_third)
    with pytest.raises(KeyboardInterrupt):
        score_candidates(
            model,
            _candidates(model),
            batches,
            device=CPU,
            cache_dir=tmp_path / "run",
            cache_tag="a",
            progress=False,
        )
    assert (
        len(list((tmp_path / "run").glob("*.json"))) == 2
    )  # parent + one candidate finished before the kill

    calls.clear()
    monkeypatch.setattr(scoring, "score_candidate", real)
    spy = []
    monkeypatch.setattr(scoring, "score_candidate", lambda *a, **k: spy.append(a[1].key) or real(*a, **k))
    resumed = score_candidates(
        model,
        _candidates(model),
        batches,
        device=CPU,
        cache_dir=tmp_path / "run",
        cache_tag="a",
        progress=False,
    )
    assert spy == ["001-ffn-no_op", "002-ffn-no_op"]  # only what the kill left undone
    assert resumed == clean

    spy.clear()
    score_candidates(
        model,
        _candidates(model),
        batches,
        device=CPU,
        cache_dir=tmp_path / "run",
        cache_tag="a",
        progress=False,
    )
    assert spy == []  # all cached
    score_candidates(
        model,
        _candidates(model),
        batches,
        device=CPU,
        cache_dir=tmp_path / "run",
        cache_tag="b",
        progress=False,
    )
    assert len(spy) == 4  # another tag (changed upstream) recomputes everything
    record = json.loads((tmp_path / "run" / "002-ffn-no_op.json").read_text())
    assert record["cache_tag"] == "b" and record["layer"] == 2
