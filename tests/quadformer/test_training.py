from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from effinfer_core.config import ConfigError
from quadformer.lightning_model import QuadformerModule, build_network, vanilla_patch
from quadformer.predictor import QuadformerPredictor
from quadformer.quadtree import TokenBudgetError
from quadformer.train import fit, load_profile, validate

from .conftest import TINY, tiny_config


def test_fit_saves_predictor_and_resumes(data_dir: Path, tmp_path: Path) -> None:
    config = tiny_config(data_dir)
    metrics = fit(config, tmp_path, log=None)
    assert (tmp_path / "model.pt").is_file() and (tmp_path / "ckpt" / "last.ckpt").is_file()
    assert (
        0 <= metrics["accuracy"] <= 1
        and metrics["test_images"] == TINY.test
        and metrics["resumed_from_step"] == 0
    )
    assert json.loads((tmp_path / "metrics.json").read_text())["accuracy"] == metrics["accuracy"]
    longer = {**config, "train": {**config["train"], "steps": 9}}
    assert fit(longer, tmp_path, log=None)["resumed_from_step"] == 6  # picked up the killed-or-finished run
    other = {**config, "quadtree": {**config["quadtree"], "scorer": "random"}}
    with pytest.raises(ValueError, match=r"belongs to run .*, which differs in network.scorer;"):
        fit(other, tmp_path, log=None)  # never resumes another model's checkpoint


def test_same_seed_same_model(data_dir: Path, tmp_path: Path) -> None:
    config = tiny_config(data_dir, scorer="oracle")
    fit(config, tmp_path / "a", log=None)
    fit(config, tmp_path / "b", log=None)
    a, b = (torch.load(tmp_path / r / "model.pt")["state_dict"] for r in ("a", "b"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_training_step_learns_on_one_batch(tiny_clutter: Any) -> None:
    torch.manual_seed(0)
    network = dict(
        vit="vit_tiny_patch16_224",
        num_classes=10,
        image_size=64,
        tokens=16,
        scorer="oracle",
        min_patch=8,
        max_patch=32,
        patch_size=8,
        vit_kwargs={"depth": 1, "embed_dim": 32, "num_heads": 2},
    )
    module = QuadformerModule(network, lr=3e-3, label_smoothing=0.0)
    batch = next(iter(tiny_clutter.train_dataloader()))
    opt = torch.optim.AdamW(module.parameters(), lr=3e-3)
    first = None
    for _ in range(40):
        loss = torch.nn.functional.cross_entropy(
            module(*module._inputs(batch, augment=False)), batch["label"]
        )
        first = first if first is not None else float(loss.detach())
        opt.zero_grad()
        loss.backward()
        opt.step()
    # the whole path (oracle scorer, quadtree, mixed-resolution ViT) trains
    assert float(loss.detach()) < first / 3
    with pytest.raises(ValueError, match="needs masks"):
        module._inputs({k: v for k, v in batch.items() if k != "mask"}, augment=False)


def test_vanilla_budget_and_profiles() -> None:
    assert vanilla_patch(128, 64) == 16 and vanilla_patch(128, 16) == 32
    with pytest.raises(ValueError, match="valid budgets: .*16, 64, 256"):
        vanilla_patch(128, 49)
    net = build_network(
        vit="vit_tiny_patch16_224",
        num_classes=3,
        image_size=64,
        tokens=16,
        scorer="none",
        min_patch=8,
        max_patch=32,
        vit_kwargs={"depth": 1},
    )
    assert net.scorer is None and net.spec.max_patch == 16
    with pytest.raises(TokenBudgetError, match="nearest valid budget: 13 or 16"):
        build_network(
            vit="vit_tiny_patch16_224",
            num_classes=3,
            image_size=64,
            tokens=14,
            scorer="random",
            min_patch=8,
            max_patch=32,
        )
    for profile in ("quick", "cpu", "full"):
        validate(load_profile(profile))  # every shipped profile's budget fits its patch sizes and image size
    with pytest.raises(ConfigError, match="no profile 'fast'"):
        load_profile("fast")
    with pytest.raises(ConfigError, match="unknown config key 'quadtree.budget'"):
        load_profile("quick", {"quadtree": {"budget": 3}})


def test_predictor_round_trip(data_dir: Path, tmp_path: Path, tiny_clutter: Any) -> None:
    fit(tiny_config(data_dir, scorer="pixel-blur"), tmp_path, log=None)
    predictor = QuadformerPredictor.load(tmp_path / "model.pt")
    batch = next(iter(tiny_clutter.test_dataloader()))
    probs = predictor.predict_proba(batch["image"])
    assert probs.shape == (8, 10) and torch.allclose(probs.sum(-1), torch.ones(8))
    predictor.save(tmp_path / "again.pt")
    again = QuadformerPredictor.load(tmp_path / "again.pt")
    assert torch.equal(again.predict_proba(batch["image"]), probs)
    assert again.classes[0] == "T-shirt/top" and again.image_size == (64, 64)
    bigger = torch.nn.functional.interpolate(batch["image"].float(), size=(96, 80)).to(torch.uint8)
    assert again.predict_proba(bigger).shape == (8, 10)  # any size in, resized to the model's


def test_training_starts_from_a_local_timm_checkpoint(data_dir: Path, tmp_path: Path) -> None:
    from quadformer.torch_model import create_vit

    torch.manual_seed(1)
    vit = create_vit("vit_tiny_patch16_224", 1000, 64, depth=2, embed_dim=32, num_heads=2, patch_size=8)
    torch.save(vit.state_dict(), tmp_path / "vit.pth")  # an "ImageNet" checkpoint: 1000 classes
    config = tiny_config(data_dir)
    config["model"]["checkpoint"] = str(tmp_path / "vit.pth")
    config["train"]["steps"] = 1
    config["train"]["lr"] = 1e-12  # one step that barely moves the weights
    fit(config, tmp_path / "run", log=None)
    state = torch.load(tmp_path / "run" / "model.pt")["state_dict"]
    assert torch.allclose(state["model.vit.blocks.1.mlp.fc1.weight"], vit.blocks[1].mlp.fc1.weight, atol=1e-6)
    assert state["model.vit.head.weight"].shape == (10, 32)  # a new 10-class head
