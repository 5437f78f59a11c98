"""The yardstick's own sample task: MLP classifiers of several widths on scikit-learn's digits (1797 real 8x8 images).

It exercises the whole harness (train, measure, record, report) in seconds, and gives the report an
accuracy-vs-throughput curve before any method package is installed.
"""

from __future__ import annotations

import torch
from torch import nn

from benchmarks.registry import Task, TaskContext
from benchmarks.yardstick import measure


def _digits() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    x = torch.tensor(x, dtype=torch.float32) / 16.0
    y = torch.tensor(y)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    train, test = perm[:1400], perm[1400:]
    return x[train], y[train], x[test], y[test]


def _train(width: int, x: torch.Tensor, y: torch.Tensor, steps: int) -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(64, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(), nn.Linear(width, 10)
    )
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for step in range(steps):
        idx = torch.randint(0, len(y), (128,), generator=torch.Generator().manual_seed(step))
        loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def run(ctx: TaskContext) -> None:
    x_tr, y_tr, x_te, y_te = _digits()
    widths = [4, 16, 64, 256] if ctx.profile == "quick" else [4, 8, 16, 32, 64, 128, 256, 1024]
    batch = 256
    for width in widths:
        model = _train(width, x_tr, y_tr, steps=300)
        with torch.inference_mode():
            accuracy = (model(x_te).argmax(1) == y_te).float().mean().item()
        model.to(ctx.device)
        cost = measure(
            model,
            lambda: x_te[:batch].to(ctx.device),
            batch_size=batch,
            device=ctx.device,
            warmup=5,
            iters=30,
        )
        ctx.record(f"mlp-w{width}", "sklearn-digits", {"accuracy": accuracy}, cost, width=width)


def tasks() -> list[Task]:
    return [
        Task(
            name="yardstick.sample",
            method="yardstick",
            description="MLPs of four widths on scikit-learn digits: the harness's own accuracy-vs-throughput check",
            run=run,
            quality_key="accuracy",
            quality_label="test accuracy (fraction)",
            quality_noise=0.0,  # seeded: the same accuracies to the last digit over repeated runs, 1 and 2 threads
        )
    ]
