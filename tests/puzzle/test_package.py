"""The package's public API: every name of `puzzle.__all__` resolves, and `import puzzle` alone stays light."""

from __future__ import annotations

import subprocess
import sys

import pytest

import puzzle


def test_every_public_name_resolves():
    assert {
        "load_config",
        "Pipeline",
        "STAGES",
        "DeciLMForCausalLM",
        "BlockConfig",
        "SearchProblem",
        "solve",
    } <= set(puzzle.__all__)
    for name in puzzle.__all__:
        value = getattr(puzzle, name)
        assert getattr(value, "__name__", name) == name or not callable(value), name
    assert puzzle.STAGES[0] == "measure" and puzzle.STAGES[-1] == "export"
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        puzzle.nope  # noqa: B018


def test_import_puzzle_loads_neither_torch_nor_lightning():
    code = "import sys, puzzle; print(sorted(m for m in ('torch', 'lightning') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
