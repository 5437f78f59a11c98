"""The CI and nightly workflows are checked by actionlint, and the CI entry point runs the README's test command."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _actionlint() -> str:
    found = shutil.which("actionlint", path=str(Path(sys.executable).parent)) or shutil.which("actionlint")
    if not found:
        pytest.fail(
            "actionlint is not installed: run `bash scripts/setup.sh` (it comes from requirements/dev.txt)"
        )
    return found


@pytest.mark.parametrize("workflow", ["ci.yml", "nightly.yml"])
def test_workflow_passes_actionlint(workflow):
    path = ROOT / ".github" / "workflows" / workflow
    out = subprocess.run([_actionlint(), str(path)], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_actionlint_catches_a_broken_workflow(tmp_path):
    bad = tmp_path / ".github" / "workflows" / "bad.yml"
    bad.parent.mkdir(parents=True)
    bad.write_text(
        "on: push\njobs:\n  x:\n    runs-on: ubuntu-latest\n    steps:\n      - run: echo ${{ matrix.nope }}\n"
    )
    out = subprocess.run([_actionlint(), str(bad)], cwd=tmp_path, capture_output=True, text=True)
    assert out.returncode != 0


def test_nightly_runs_the_full_profile_on_gpu_runners():
    text = (ROOT / ".github" / "workflows" / "nightly.yml").read_text()
    assert "[self-hosted, linux, gpu]" in text and "--profile full" in text and "upload-artifact" in text
    # the last good results are restored, compared with, and replaced only after a clean comparison
    restore, full, compare, save = (
        text.index(s)
        for s in (
            "actions/cache/restore",
            "--profile full",
            "benchmarks compare baseline/nightly.jsonl",
            "actions/cache/save",
        )
    )
    assert restore < full < compare < save


def test_ci_entry_point_runs_the_readme_test_command():
    command = "bash scripts/test.sh"
    assert command in (ROOT / ".ci" / "run").read_text()
    assert command in (ROOT / "README.md").read_text()
