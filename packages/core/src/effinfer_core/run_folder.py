"""A run folder: artifacts of one run, each step keyed by the hash of every input it was computed from.

Layout: ``manifest.json`` at the top, then one sub-folder per step (a step name may hold slashes,
``class-0/seed-1/fit``). The manifest holds

    {"<role>": {"path", "fingerprint"},           what the folder is bound to: Puzzle's parent, GeoAD's dataset
     "stages": {step: {"inputs_hash", "inputs", "artifacts", "finished", ...}}}

A step is done when its entry exists *and* was written for the same inputs hash. Artifacts go to temporary names and
are renamed into place; the entry is written last. So a run killed at any point resumes from the last finished step,
a rerun with one changed setting recomputes the steps whose inputs hold that setting and nothing else, and a result on
disk is never reported for settings it was not computed with. A folder bound to one parent or dataset refuses
another (`RunFolderMismatchError`) instead of mixing artifacts of two.

    run = RunFolder("runs/x")
    run.bind("dataset", "fashion-mnist", fingerprint)
    inputs = {"class": 0, "fit": asdict(fit_config)}
    if not run.is_done("class-0/fit", inputs_hash(inputs)):
        detector.save(run.path("class-0/fit/detector.pt"))      # through write_atomic
        run.mark_done("class-0/fit", inputs)
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from effinfer_core.atomic import atomic_dir, locked, write_atomic

MANIFEST = "manifest.json"


class RunFolderMismatchError(ValueError):
    """The run folder was created for another parent model or data set."""


def inputs_hash(obj: Any) -> str:
    """Stable short hash of any JSON-able value (dict keys sorted; other objects by their str)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def file_hash(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class RunFolder:
    """Artifacts of one run under ``root`` (created on first use)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    # -- manifest ----------------------------------------------------------------------------------------------
    @property
    def manifest_path(self) -> Path:
        return self.root / MANIFEST

    def manifest(self) -> dict[str, Any]:
        if not self.manifest_path.exists():
            return {"stages": {}}
        manifest = json.loads(self.manifest_path.read_text())
        manifest.setdefault("stages", {})
        return manifest

    def _update_manifest(self, change: Callable[[dict[str, Any]], None]) -> None:
        # read-modify-write under a lock: several processes (one GKD child per machine) may share a folder
        with locked(self.manifest_path):
            manifest = self.manifest()
            change(manifest)
            write_atomic(self.manifest_path, json.dumps(manifest, indent=2, sort_keys=True))

    def bind(
        self, role: str, path: str | Path, fingerprint: str, details: Mapping[str, Any] | None = None
    ) -> None:
        """Record what the folder's artifacts belong to (``role``: "parent", "dataset", "run") on first use; refuse
        a different one afterwards. ``details`` (JSON-able settings behind the fingerprint) let the refusal name
        the settings that differ."""
        known = self.manifest().get(role)
        if known is None:
            entry: dict[str, Any] = {"path": str(path), "fingerprint": fingerprint}
            if details is not None:
                entry["details"] = json.loads(json.dumps(details, default=str))
            self._update_manifest(lambda m: m.__setitem__(role, entry))
        elif known["fingerprint"] != fingerprint:
            differ = _differences(known.get("details"), details)
            raise RunFolderMismatchError(
                f"run folder {self.root} belongs to {role} {known['path']} (fingerprint {known['fingerprint']}), "
                f"not to {path} (fingerprint {fingerprint}){differ}; use another folder for a different {role}"
            )

    def stage_entry(self, step: str) -> dict[str, Any] | None:
        return self.manifest()["stages"].get(step)

    def is_done(self, step: str, inputs_hash_: str) -> bool:
        entry = self.stage_entry(step)
        return entry is not None and entry["inputs_hash"] == inputs_hash_

    def mark_done(
        self, step: str, inputs: Mapping[str, Any] | str, *, artifacts: list[Path] | None = None, **info: Any
    ) -> str:
        """Record a finished step: the hash of what it was computed from (``inputs``, or that hash itself), the
        sha256 of its artifacts (default: every file in its folder) and ``info``. Returns the inputs hash."""
        key = inputs if isinstance(inputs, str) else inputs_hash(inputs)
        if artifacts is None:
            folder = self.root / step
            artifacts = [p for p in sorted(folder.rglob("*")) if p.is_file()] if folder.is_dir() else []
        entry = {
            "inputs_hash": key,
            "artifacts": {
                str(p.relative_to(self.root)): file_hash(p) for p in artifacts if not p.name.startswith(".")
            },
            "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            **({} if isinstance(inputs, str) else {"inputs": json.loads(json.dumps(inputs, default=str))}),
            **info,
        }
        self._update_manifest(lambda m: m["stages"].__setitem__(step, entry))
        return key

    def forget(self, step: str) -> None:
        """Drop a step's entry (its artifacts stay until it is computed again)."""
        self._update_manifest(lambda m: m["stages"].pop(step, None))

    # -- artifacts ---------------------------------------------------------------------------------------------
    def stage_dir(self, step: str) -> Path:
        path = self.root / step
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
        """Yield a temporary folder beside ``rel``; on success it replaces ``rel`` whole (never half-written)."""
        return atomic_dir(self.root / rel)


def _differences(old: Any, new: Any, where: str = "") -> str:
    """ ", which differs in a.b, c" for two nested mappings of settings ("" when either is missing)."""
    if not isinstance(old, Mapping) or not isinstance(new, Mapping):
        return ""
    new = json.loads(json.dumps(new, default=str))

    def walk(a: Any, b: Any, prefix: str) -> list[str]:
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            return [d for k in sorted(set(a) | set(b)) for d in walk(a.get(k), b.get(k), f"{prefix}{k}.")]
        return [] if a == b else [prefix.rstrip(".")]

    keys = walk(old, new, where)
    return f", which differs in {', '.join(keys)}" if keys else ""
