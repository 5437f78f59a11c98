"""`puzzle gkd-scaling`: held-out rows along one child's GKD, and a killed checkpointed run resumed to the same rows."""

from __future__ import annotations

import json

import lightning as L
import pytest
import torch

from puzzle import gkd_scaling
from puzzle.cli import main
from puzzle.config import ConfigError, load_config
from puzzle.pipeline import STAGES, Pipeline


@pytest.fixture(scope="module")
def realized(tmp_path_factory, tiny_parent, tiny_run_config, austen_texts):
    """A tiny run folder up to the realize stage, and the name of one of its children."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("scaling")
    config = load_config(tiny_run_config(tiny_parent))
    pipe = Pipeline(config, root, texts=austen_texts, progress=False, log=lambda m: None)
    pipe.run_all(STAGES[: STAGES.index("realize") + 1])
    return root, config, next(iter(pipe.solutions()))


def _pipe(realized, austen_texts, **gkd):
    root, config, _ = realized
    config = load_config({**config, "gkd": {**config["gkd"], **gkd}})
    return Pipeline(config, root, texts=austen_texts, progress=False, log=lambda m: None)


class _KilledAt(L.Callback):
    def __init__(self, step: int):
        self.step = step

    def on_train_batch_end(self, trainer, *args) -> None:
        if trainer.global_step == self.step:
            raise RuntimeError("killed")


def test_killed_run_resumes_to_the_rows_of_an_uninterrupted_one(realized, austen_texts, tmp_path):
    _, config, child = realized
    tpb = config["data"]["seq_len"] * config["data"]["batch_size"]
    kwargs = {"tokens": 6 * tpb, "eval_every": 2 * tpb}  # tiny config: a checkpoint every 2 steps
    clean = gkd_scaling.gkd_scaling(_pipe(realized, austen_texts), child, **kwargs)
    assert [r["step"] for r in clean["rows"]] == [0, 2, 4, 6]
    assert [r["tokens"] for r in clean["rows"]] == [0, 2 * tpb, 4 * tpb, 6 * tpb]
    assert len(clean["history"]) == 6

    ckpt = tmp_path / "ckpt"
    with pytest.raises(RuntimeError, match="killed"):
        gkd_scaling.gkd_scaling(
            _pipe(realized, austen_texts), child, ckpt_dir=ckpt, callbacks=[_KilledAt(5)], **kwargs
        )
    assert (ckpt / "last.ckpt").exists() and (ckpt / "settings.json").exists()
    killed_rows = json.loads((ckpt / "rows.json").read_text())
    assert [r["step"] for r in killed_rows] == [0, 2, 4]
    resumed = gkd_scaling.gkd_scaling(_pipe(realized, austen_texts), child, ckpt_dir=ckpt, **kwargs)
    assert resumed["rows"][:3] == killed_rows  # read back, not evaluated again
    assert [r["step"] for r in resumed["rows"]] == [0, 2, 4, 6]
    assert len(list((ckpt / "log").glob("version_*"))) == 2  # the second attempt went on from a checkpoint
    assert len(resumed["history"]) == 6
    for a, b in zip(clean["rows"], resumed["rows"], strict=True):
        assert a["kl"] == pytest.approx(b["kl"], rel=1e-5) and a["top1_accuracy"] == b["top1_accuracy"]
    assert clean["rows"][-1]["kl"] != clean["rows"][0]["kl"]  # the child was trained between the rows


def test_resuming_with_other_settings_is_refused(realized, austen_texts, tmp_path):
    _, config, child = realized
    tpb = config["data"]["seq_len"] * config["data"]["batch_size"]
    ckpt = tmp_path / "ckpt"
    gkd_scaling.gkd_scaling(
        _pipe(realized, austen_texts), child, tokens=2 * tpb, eval_every=2 * tpb, ckpt_dir=ckpt
    )
    with pytest.raises(ConfigError, match="other settings: gkd differ"):
        gkd_scaling.gkd_scaling(
            _pipe(realized, austen_texts, lr=5e-4), child, tokens=2 * tpb, eval_every=2 * tpb, ckpt_dir=ckpt
        )
    with pytest.raises(ConfigError, match="other settings: tokens differ"):
        gkd_scaling.gkd_scaling(
            _pipe(realized, austen_texts), child, tokens=4 * tpb, eval_every=2 * tpb, ckpt_dir=ckpt
        )
    with pytest.raises(ConfigError, match="'hand-made' is not one"):  # no blocks to tie the checkpoints to
        gkd_scaling.gkd_scaling(
            _pipe(realized, austen_texts),
            "hand-made",
            tokens=2 * tpb,
            eval_every=2 * tpb,
            ckpt_dir=tmp_path / "other",
        )


def test_subcommands_refuse_children_the_run_does_not_have(realized, capsys):
    root, _, child = realized
    assert main(["gkd-scaling", str(root), "nope", "--tokens", "8"]) == 2
    assert "error: no realised child 'nope'" in capsys.readouterr().err
    assert main(["child-quality", str(root), child, "nope", "--stage", "realize"]) == 2
    assert "error: no finished realize child ['nope']" in capsys.readouterr().err
    assert main(["gkd-scaling", str(root), child, "--gkd", "lr"]) == 2
    assert "expected KEY=VALUE" in capsys.readouterr().err
