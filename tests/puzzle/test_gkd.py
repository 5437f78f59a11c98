"""Global distillation: the loss terms, that training lowers the loss, and checkpoint resume."""

from __future__ import annotations

import copy

import pytest
import torch

from puzzle import gkd
from puzzle.block_config import BlockConfig, FFNConfig
from puzzle.data import AustenDataModule
from puzzle.gkd import gkd_losses, run_gkd
from puzzle.parent import load_parent

TRAINER = {"accelerator": "cpu", "devices": 1, "enable_progress_bar": False}


@pytest.fixture(scope="module")
def setup(tiny_parent, austen_texts):
    parent, tok = load_parent(tiny_parent)
    dm = AustenDataModule(tok, seq_len=16, batch_size=2, texts=austen_texts)
    return parent, dm


def _child(parent):
    child = copy.deepcopy(parent)
    pa = parent.config.parent_block_config()
    child.replace_block(
        1, BlockConfig(pa.attention, FFNConfig(no_op=True)), child.model.layers[1].attn_block, None
    )
    return child.requires_grad_(True)


def _loss(child, parent, batches):
    with torch.no_grad():
        vals = [
            gkd_losses(
                child(input_ids=b, output_hidden_states=True),
                parent(input_ids=b, output_hidden_states=True),
                b,
            )
            for b in batches
        ]
    return sum(v["cosine"] + v["kl"] for v in vals).item() / len(vals)


def test_losses_vanish_for_the_parent_itself(setup):
    parent, dm = setup
    ids = dm.heldout_batches("test")[0]
    out = parent(input_ids=ids, output_hidden_states=True)
    same = gkd_losses(out, out, ids)
    assert same["cosine"].item() == pytest.approx(0.0, abs=1e-5) and same["kl"].item() == pytest.approx(
        0, abs=1e-6
    )
    child = _child(parent)
    diff = gkd_losses(child(input_ids=ids, output_hidden_states=True), out, ids, hidden="final")
    assert diff["cosine"] > 0 and diff["kl"] > 0 and diff["lm"] > 0
    with pytest.raises(ValueError, match="per_layer"):
        gkd_losses(out, out, ids, hidden="middle")


def test_all_zero_loss_weights_are_refused(setup):
    # with every weight 0 the loss was the int 0, and the first training step failed on `loss.detach()`
    parent, dm = setup
    with pytest.raises(ValueError, match="nonzero loss weight"):
        gkd.GKDModule(
            _child(parent), parent, dm, token_budget=dm.tokens_per_batch, cosine_weight=0.0, kl_weight=0.0
        )


def test_gkd_lowers_the_distillation_loss(setup, tmp_path):
    parent, dm = setup
    child = _child(parent)
    budget = 12 * dm.tokens_per_batch
    batches = list(dm.train_batches(budget))  # the distillation objective on the text it was trained on
    before = _loss(child, parent, batches)
    metrics = run_gkd(
        child, parent, dm, token_budget=budget, ckpt_dir=tmp_path, lr=1e-3, trainer_kwargs=TRAINER
    )
    assert metrics["steps"] == 12 and len(metrics["history"]) == 12
    assert _loss(child, parent, batches) < 0.9 * before


def test_killed_gkd_resumes_to_the_same_weights(setup, tmp_path, kill_fit_at_step, no_in_memory_checkpoints):
    parent, dm = setup
    budget = 6 * dm.tokens_per_batch
    clean = _child(parent)
    run_gkd(
        clean,
        parent,
        dm,
        token_budget=budget,
        ckpt_dir=tmp_path / "clean",
        lr=3e-3,
        checkpoint_every=2,
        trainer_kwargs=TRAINER,
    )
    with kill_fit_at_step(gkd.GKDModule, 5), pytest.raises((KeyboardInterrupt, SystemExit)):
        run_gkd(
            _child(parent),
            parent,
            dm,
            token_budget=budget,
            ckpt_dir=tmp_path / "run",
            lr=3e-3,
            checkpoint_every=2,
            trainer_kwargs=TRAINER,
        )
    assert (tmp_path / "run" / "last.ckpt").exists()
    resumed = _child(parent)  # a fresh process would rebuild the child from the realize stage
    metrics = run_gkd(
        resumed,
        parent,
        dm,
        token_budget=budget,
        ckpt_dir=tmp_path / "run",
        lr=3e-3,
        checkpoint_every=2,
        trainer_kwargs=TRAINER,
    )
    assert metrics["steps"] == 6 and len(metrics["history"]) == 6  # the killed attempt's steps are kept
    for (name, a), (_, b) in zip(clean.state_dict().items(), resumed.state_dict().items(), strict=True):
        torch.testing.assert_close(a, b, msg=name)
    assert not torch.equal(
        clean.state_dict()["model.layers.0.mlp.up_proj.weight"],
        parent.state_dict()["model.layers.0.mlp.up_proj.weight"],
    )


def _grad_norms_seen_by_the_optimizer(monkeypatch, parent, dm, tmp_path, **kwargs) -> list[float]:
    """Runs 4 GKD steps and returns the global gradient norm each optimizer step applied (after any clipping)."""
    norms: list[float] = []
    real = gkd.GKDModule.configure_optimizers

    def recording(self):
        cfg = real(self)
        opt, step = cfg["optimizer"], cfg["optimizer"].step

        def step_and_record(closure=None):
            loss = closure() if closure is not None else None  # Lightning's closure: backward, then clipping
            grads = [p.grad for g in opt.param_groups for p in g["params"] if p.grad is not None]
            norms.append(torch.nn.utils.get_total_norm(grads).item())
            step()
            return loss

        opt.step = step_and_record
        return cfg

    monkeypatch.setattr(gkd.GKDModule, "configure_optimizers", recording)
    run_gkd(
        _child(parent),
        parent,
        dm,
        token_budget=4 * dm.tokens_per_batch,
        ckpt_dir=tmp_path,
        lr=1e-3,
        trainer_kwargs=TRAINER,
        **kwargs,
    )
    monkeypatch.undo()
    return norms


def test_gradient_clip_bounds_every_step(setup, tmp_path, monkeypatch):
    parent, dm = setup
    free = _grad_norms_seen_by_the_optimizer(monkeypatch, parent, dm, tmp_path / "free")
    clip = 0.5 * min(free)
    clipped = _grad_norms_seen_by_the_optimizer(
        monkeypatch, parent, dm, tmp_path / "clipped", gradient_clip=clip
    )
    assert len(free) == len(clipped) == 4
    assert min(free) > clip
    assert max(clipped) == pytest.approx(
        clip, rel=1e-3
    )  # every step's norm was above the clip, so each is cut


def test_history_logs_the_gradient_norm_before_clipping(setup, tmp_path):
    parent, dm = setup
    metrics = run_gkd(
        _child(parent),
        parent,
        dm,
        token_budget=3 * dm.tokens_per_batch,
        ckpt_dir=tmp_path,
        lr=1e-3,
        trainer_kwargs=TRAINER,
        gradient_clip=1e-6,
    )
    norms = [row["grad_norm"] for row in metrics["history"]]
    assert len(norms) == 3 and all(n > 1e-3 for n in norms)  # far above the clip: logged before clipping
