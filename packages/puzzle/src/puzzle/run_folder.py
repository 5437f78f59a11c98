"""A Puzzle run folder: every stage's artifacts, the stages that are done, and the parent they belong to.

Layout (one sub-folder per stage; `manifest.json` at the top):

    manifest.json          {"parent": {"path", "fingerprint"}, "stages": {stage: {"inputs_hash", "artifacts", ...}}}
    library/ bld/ score/ measure/ search/ realize/ gkd/ evaluate/ export/

A stage is done when its manifest entry exists *and* was written for the same inputs hash (its config section plus
the hashes of the stages it reads). Artifacts are written to temporary names and renamed into place, and the manifest
entry is written last, so a run killed at any point resumes from the last finished stage (or, inside a stage, from its
own per-item caches, e.g. one scoring json per block). A run folder binds to one parent model: pointing it at another
parent raises `RunFolderMismatchError` instead of mixing artifacts of two models.
"""

from __future__ import annotations

import hashlib
import io
import json
from contextlib import AbstractContextManager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from effinfer_core.atomic import atomic_dir, write_atomic

MANIFEST = "manifest.json"


class RunFolderMismatchError(ValueError):
    """The run folder was created for a different parent model."""


def config_hash(obj: Any) -> str:
    """Stable short hash of any JSON-able value (dict keys sorted)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def file_hash(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class RunFolder:
    """Artifacts of one Puzzle run under `root` (created on first use)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    # -- manifest --------------------------------------------------------------------------------------------------
    @property
    def manifest_path(self) -> Path:
        return self.root / MANIFEST

    def manifest(self) -> dict[str, Any]:
        if not self.manifest_path.exists():
            return {"parent": None, "stages": {}}
        return json.loads(self.manifest_path.read_text())

    def _write_manifest(self, manifest: dict[str, Any]) -> None:
        write_atomic(self.manifest_path, json.dumps(manifest, indent=2, sort_keys=True))

    def bind_parent(self, path: str | Path, fingerprint: str) -> None:
        """Record the parent on first use; refuse a different one afterwards."""
        manifest = self.manifest()
        known = manifest.get("parent")
        if known is None:
            manifest["parent"] = {"path": str(path), "fingerprint": fingerprint}
            self._write_manifest(manifest)
        elif known["fingerprint"] != fingerprint:
            raise RunFolderMismatchError(
                f"run folder {self.root} belongs to parent {known['path']} (fingerprint {known['fingerprint']}), "
                f"not to {path} (fingerprint {fingerprint}); use a new --run-dir for a different parent"
            )

    def stage_entry(self, stage: str) -> dict[str, Any] | None:
        return self.manifest()["stages"].get(stage)

    def is_done(self, stage: str, inputs_hash: str) -> bool:
        entry = self.stage_entry(stage)
        return entry is not None and entry["inputs_hash"] == inputs_hash

    def mark_done(self, stage: str, inputs_hash: str, **info: Any) -> None:
        """Record a finished stage with the hash of what it was computed from and the sha256 of its artifacts."""
        stage_dir = self.stage_dir(stage)
        artifacts = {
            str(p.relative_to(self.root)): file_hash(p)
            for p in sorted(stage_dir.rglob("*"))
            if p.is_file() and not p.name.startswith(".")
        }
        manifest = self.manifest()
        manifest["stages"][stage] = {
            "inputs_hash": inputs_hash,
            "artifacts": artifacts,
            "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            **info,
        }
        self._write_manifest(manifest)

    # -- artifacts -------------------------------------------------------------------------------------------------
    def stage_dir(self, stage: str) -> Path:
        path = self.root / stage
        path.mkdir(parents=True, exist_ok=True)
        return path

    def path(self, rel: str | Path) -> Path:
        return self.root / rel

    def write_json(self, rel: str | Path, obj: Any) -> Path:
        path = self.root / rel
        write_atomic(path, json.dumps(obj, indent=2, sort_keys=True, allow_nan=True))
        return path

    def read_json(self, rel: str | Path) -> Any:
        path = self.root / rel
        if not path.exists():
            raise FileNotFoundError(f"artifact {path} is missing: run the stage that writes it first")
        return json.loads(path.read_text())

    def save_torch(self, rel: str | Path, obj: Any) -> Path:
        path = self.root / rel
        buf = io.BytesIO()
        torch.save(obj, buf)
        write_atomic(path, buf.getvalue())
        return path

    def load_torch(self, rel: str | Path) -> Any:
        path = self.root / rel
        if not path.exists():
            raise FileNotFoundError(f"artifact {path} is missing: run the stage that writes it first")
        return torch.load(path, map_location="cpu", weights_only=True)

    def atomic_dir(self, rel: str | Path) -> AbstractContextManager[Path]:
        """Yield a temporary folder beside `rel`; on success it replaces `rel` whole (never half-written)."""
        return atomic_dir(self.root / rel)
