"""The Trainer flags every training command takes, and the one precision policy."""

import argparse

import pytest
import torch

from effinfer_core.trainer import TrainerFlags, parse_devices, training_precision


@pytest.mark.parametrize("amx", [True, False])
def test_training_precision_is_bf16_only_where_the_cpu_has_amx(monkeypatch, amx):
    # AVX512-BF16 without AMX trained slower in bf16-mixed than in fp32, so only AMX earns bf16-mixed on a CPU
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx, raising=False)
    assert training_precision("cpu") == ("bf16-mixed" if amx else "32-true")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert training_precision("auto") == training_precision("cpu")
    assert training_precision("mps") == "32-true"


def test_trainer_flags_from_the_command_line_resolve_auto_precision(monkeypatch):
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
    parser = argparse.ArgumentParser()
    TrainerFlags.add_arguments(parser)
    flags = TrainerFlags.from_args(
        parser.parse_args(["--devices", "0,1", "--strategy", "ddp", "--accelerator", "cpu"])
    )
    assert flags == TrainerFlags(accelerator="cpu", devices=[0, 1], strategy="ddp")
    assert flags.kwargs() == {
        "accelerator": "cpu",
        "devices": [0, 1],
        "strategy": "ddp",
        "num_nodes": 1,
        "precision": "32-true",
    }
    assert (
        TrainerFlags(precision="bf16-mixed").kwargs()["precision"] == "bf16-mixed"
    )  # an explicit choice stands
    assert parse_devices("2") == 2 and parse_devices("auto") == "auto"
    with pytest.raises(argparse.ArgumentTypeError, match="devices must be"):
        parse_devices("two")
