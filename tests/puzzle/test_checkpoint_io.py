"""FileCheckpointIO: Lightning checkpoints streamed to a temporary file and renamed, never serialised in memory."""

from __future__ import annotations

import pytest
import torch

from effinfer_core.checkpoint_io import FileCheckpointIO


def test_checkpoint_streams_to_disk_and_loads_back(tmp_path, monkeypatch, no_in_memory_checkpoints):
    checkpoint = {
        "state_dict": {"w": torch.randn(64, 32)},
        "optimizer_states": [{"step": 3}],
        "global_step": 3,
    }
    path = tmp_path / "ckpts" / "last.ckpt"
    io = FileCheckpointIO()
    io.save_checkpoint(checkpoint, path)
    loaded = io.load_checkpoint(path)
    torch.testing.assert_close(loaded["state_dict"]["w"], checkpoint["state_dict"]["w"])
    assert loaded["global_step"] == 3

    def dies(obj, f, *args, **kwargs):
        with open(f, "wb") as out:
            out.write(b"half a checkpoint")
        raise RuntimeError("killed mid-save")

    monkeypatch.setattr(torch, "save", dies)
    with pytest.raises(RuntimeError, match="killed"):
        io.save_checkpoint({"global_step": 4}, path)
    assert io.load_checkpoint(path)["global_step"] == 3  # the last complete checkpoint is still there
    assert [p.name for p in path.parent.iterdir()] == ["last.ckpt"]
