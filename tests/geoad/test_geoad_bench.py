"""The harness's GeoAD profiles: YAML files over the defaults in geoad.bench."""

import pytest

from effinfer_core.config import ConfigError
from geoad.bench import CONFIGS, TASK_NAMES, load_budget, tasks


def test_profiles_load_and_quick_keeps_its_budgets():
    quick = load_budget("quick")
    # the budgets the quick figures in docs/results.md were measured with, bf16-mixed stated, not "auto"
    assert (quick.classes, quick.backbone, quick.max_steps, quick.test_limit) == ((0,), "wrn-10-2", 60, 400)
    assert quick.transform_sets == ("8", "18", "36", "72") and quick.precision == "bf16-mixed"
    assert load_budget("cpu") == quick  # cpu extends quick
    full = load_budget("full")
    assert full.classes == tuple(range(10)) and full.train_limit is None and full.max_steps == -1


def test_unknown_profile_and_unknown_key_are_errors(tmp_path):
    with pytest.raises(ConfigError, match="quick"):
        load_budget("nope")
    (tmp_path / "bad.yaml").write_text("extends: " + str(CONFIGS / "quick.yaml") + "\nmax_step: 3\n")
    with pytest.raises(ConfigError, match="max_steps"):
        load_budget("bad", tmp_path)


def test_task_names_are_the_tasks():
    assert TASK_NAMES == tuple(t.name for t in tasks())
