"""Blockwise local distillation: lowers the normalised MSE (decoupled and coupled) and resumes from a checkpoint to the
library of an uninterrupted run."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from transformers import AutoTokenizer

from puzzle import bld
from puzzle.bld import nmse_terms, run_bld
from puzzle.block_config import BlockConfig
from puzzle.data import AustenDataModule
from puzzle.library import SearchSpace, build_library
from puzzle.realize import realize

TINY = dict(
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    vocab_size=128,
    max_position_embeddings=64,
    initializer_range=0.1,
)
TRAINER = dict(accelerator="cpu", devices=1, enable_progress_bar=False, logger=False)


class CountSteps(L.Callback):
    def __init__(self) -> None:
        self.n = 0

    def on_train_batch_end(self, *args) -> None:
        self.n += 1


@pytest.fixture(scope="module")
def dm(tiny_parent, austen_texts):
    """Austen batches of 4 x 16 tokens from the word-level tokenizer of the shared tiny parent."""
    return AustenDataModule(
        AutoTokenizer.from_pretrained(tiny_parent), seq_len=16, batch_size=4, texts=austen_texts
    )


@pytest.fixture(scope="module")
def parent(load_tiny_llama, dm):
    return load_tiny_llama({**TINY, "vocab_size": len(dm.tokenizer)})


def small_library(parent):
    space = SearchSpace.from_dict(
        {"kv_heads": [1], "ffn_fractions": [0.5], "ffn_init": "truncate", "attention_no_op": False}
    )
    return build_library(parent, space)


def test_nmse_terms():
    err, ref = nmse_terms(torch.tensor([1.0, 3.0]), torch.tensor([1.0, 1.0]))
    assert (err.item(), ref.item()) == (4.0, 2.0)


def test_decoupled_bld_lowers_nmse_and_resumes(parent, dm, tmp_path, no_in_memory_checkpoints):
    L.seed_everything(0)
    lib = small_library(parent)
    untouched = {k: v.clone() for k, v in lib.state_dict().items() if "gqa_kv2" in k or "ffn_64" in k}
    first = CountSteps()
    _, m1 = run_bld(
        parent,
        lib,
        dm,
        token_budget=12 * dm.tokens_per_batch,
        ckpt_dir=tmp_path,
        lr=3e-3,
        trainer_kwargs={**TRAINER, "callbacks": [first]},
        ckpt_every=4,
    )
    assert m1["steps"] == 12 and first.n == 12 and (tmp_path / "last.ckpt").exists()
    ckpt = torch.load(tmp_path / "last.ckpt", weights_only=False)
    assert not any(k.startswith("parent.") for k in ckpt["state_dict"])  # the frozen parent stays out
    # the second run picks up at step 12 and only trains the remaining 18 steps of the larger budget
    second = CountSteps()
    lib2 = small_library(parent)
    _, m = run_bld(
        parent,
        lib2,
        dm,
        token_budget=30 * dm.tokens_per_batch,
        ckpt_dir=tmp_path,
        lr=3e-3,
        trainer_kwargs={**TRAINER, "callbacks": [second]},
        ckpt_every=4,
    )
    assert m["steps"] == 30 and second.n == 18
    expected = {
        f"L{i:02d}/{kind}/{name}"
        for i in range(2)
        for kind, name in [
            ("attention", "gqa_kv1"),
            ("attention", "linear"),
            ("ffn", "ffn_32"),
            ("ffn", "linear"),
            ("ffn", "no_op"),
        ]
        if name != "no_op"
    }
    assert set(m["nmse"]) == expected
    for k in expected:
        assert m["nmse"][k] < m1["nmse"][k] < m["nmse_init"][k], k
    # parent variants are not trained
    for k, v in untouched.items():
        assert torch.equal(lib2.state_dict()[k], v), k


def test_coupled_bld_trains_whole_blocks(parent, dm, tmp_path):
    L.seed_everything(0)
    lib = small_library(parent)
    _, m = run_bld(
        parent,
        lib,
        dm,
        mode="coupled",
        token_budget=15 * dm.tokens_per_batch,
        ckpt_dir=tmp_path,
        lr=3e-3,
        trainer_kwargs=TRAINER,
    )
    # 3 attention x 4 ffn variants per layer, minus the all-parent pair
    assert len(m["nmse"]) == 2 * (3 * 4 - 1)
    assert sum(m["nmse"].values()) < 0.7 * sum(m["nmse_init"].values())
    for k, v in m["nmse"].items():
        # blocks far from the parent must improve; near-parent pairs (e.g. parent attention + no-op FFN, which
        # has to absorb the FFN's job) may only stay level on the held-out text after 15 steps
        assert v < m["nmse_init"][k] if m["nmse_init"][k] > 0.5 else v < 1.05 * m["nmse_init"][k], k
    a, f = lib.attention_config("gqa_kv1"), lib.ffn_config("ffn_32")
    attn, ffn = lib.block(1, BlockConfig(a, f))
    assert attn is lib.coupled[1]["gqa_kv1+ffn_32"]["attention"] and attn is not lib.attention_block(
        1, "gqa_kv1"
    )
    # realize uses the coupled pair
    child = realize(parent, [parent.config.parent_block_config(), BlockConfig(a, f)], lib)
    torch.testing.assert_close(child.model.layers[1].self_attn.k_proj.weight, attn.self_attn.k_proj.weight)
    torch.testing.assert_close(child.model.layers[1].mlp.up_proj.weight, ffn.mlp.up_proj.weight)


def test_killed_bld_resumes_to_the_library_of_an_uninterrupted_run(
    parent, dm, tmp_path, kill_fit_at_step, no_in_memory_checkpoints
):
    budget = 8 * dm.tokens_per_batch
    clean = small_library(parent)
    run_bld(
        parent, clean, dm, token_budget=budget, ckpt_dir=tmp_path / "clean", lr=3e-3, trainer_kwargs=TRAINER
    )
    with kill_fit_at_step(bld.BLDModule, 5), pytest.raises((KeyboardInterrupt, SystemExit)):
        run_bld(
            parent,
            small_library(parent),
            dm,
            token_budget=budget,
            ckpt_dir=tmp_path / "run",
            lr=3e-3,
            trainer_kwargs=TRAINER,
            ckpt_every=2,
        )
    resumed = small_library(parent)  # a fresh process would load the library stage's variants again
    _, m = run_bld(
        parent,
        resumed,
        dm,
        token_budget=budget,
        ckpt_dir=tmp_path / "run",
        lr=3e-3,
        trainer_kwargs=TRAINER,
        ckpt_every=2,
    )
    assert m["steps"] == 8
    for (name, a), (_, b) in zip(clean.state_dict().items(), resumed.state_dict().items(), strict=True):
        torch.testing.assert_close(
            a, b, msg=name
        )  # steps 5-8 saw the batches an uninterrupted run sees there
    init = small_library(parent).state_dict()
    assert any(not torch.equal(v, init[k]) for k, v in clean.state_dict().items())  # trained, not two inits
