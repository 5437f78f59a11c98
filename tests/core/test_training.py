"""Lightning pieces shared by the training recipes: schedule, step budget, frozen teacher, progress lines."""

import math

import torch
from torch import nn

from effinfer_core.progress import Progress
from effinfer_core.training import FrozenTeacher, steps_for_batches, warmup_cosine


def test_warmup_then_cosine_to_the_floor():
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = warmup_cosine(opt, total_steps=10, warmup_steps=2, floor=0.1)
    lrs = []
    for _ in range(12):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == 0.5 and lrs[1] == 1.0  # linear warm-up
    assert lrs[2] == 1.0 and math.isclose(lrs[6], 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert math.isclose(lrs[10], 0.1) and math.isclose(lrs[11], 0.1)  # held at the floor past the end


def test_steps_split_the_budget_over_ranks():
    assert steps_for_batches(10, 1) == 10
    assert steps_for_batches(10, 4) == 2  # the remainder of fewer batches than ranks is left out
    assert steps_for_batches(1, 8) == 1  # never zero


class Holder(nn.Module):
    def __init__(self, teacher: nn.Module):
        super().__init__()
        self.student = nn.Linear(2, 2)
        self.teacher = FrozenTeacher(teacher)


def test_a_frozen_teacher_is_not_registered_trained_or_saved():
    holder = Holder(nn.Linear(2, 2))
    assert set(holder.state_dict()) == {"student.weight", "student.bias"}
    assert all(not p.requires_grad for p in holder.teacher.module.parameters())
    assert holder.teacher.get(torch.device("cpu")) is holder.teacher.module


def test_progress_lines_count_and_estimate():
    lines = []
    progress = Progress(4, "[fit]", lines.append)
    progress.done("class 0", skipped=True)
    assert lines[-1].startswith("[fit] 1/4 (25%) class 0,") and "left" not in lines[-1]  # no timed unit yet
    progress.done("class 1")
    assert lines[-1].startswith("[fit] 2/4 (50%) class 1,") and lines[-1].endswith("left")
    progress.done()
    progress.done()
    assert lines[-1].startswith("[fit] 4/4 (100%)") and "left" not in lines[-1]
