"""Side-by-side evaluation of the parent and its children on the held-out novel, plus measured throughput.

Quality, on the held-out "test" half of Persuasion (never used by the search), per model (with the user's held-out
sets, `data.heldout`, these are the first set's, and `heldout: {set: quality}` gives every set's):
    lm_loss, perplexity = exp(lm_loss)        next-token cross-entropy (nats/token)
    top1_accuracy                             argmax == the true next token
    kl                                        KL(p_parent || p_model) per token (0 for the parent itself)
    top1_agreement                            argmax == the parent's argmax (1 for the parent itself)
Batches are the outer loop and models the inner one, so the parent's logits of one batch are computed once and no
logits are stored across batches.

Cost, one scenario for all (timing.measure_generations: prefill + greedy decode with the KV cache, timed with
benchmarks.yardstick.time_fn, the models interleaved round by round so a drift of the machine's speed hits all alike):
runtime_ms, tokens_per_s (medians over rounds), speedup (1 / the median over rounds of the model's runtime over the
parent's in the same round), and, when the search predicted the child's runtime, predicted_over_measured (the
target: within 10% of 1) and predicted_over_measured_vs_parent (the predicted runtime relative to the parent's over
the measured one relative to the parent's: what is left when the machine ran faster or slower than during the
measure stage).
The pipeline times saved models in a fresh Python process (`measure_in_fresh_process`): at the end of a 55-minute
BLD + GKD process one SmolLM2 child timed 1.34x the parent's speed, and 1.48x and 1.53x in two fresh processes.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from puzzle.costs import Scenario
from puzzle.scoring import compare_logits, logits_of, mean_metrics
from puzzle.timing import measure_generations, runtime_ratio


@torch.inference_mode()
def quality_metrics(
    models: Mapping[str, nn.Module],
    parent: nn.Module,
    batches: Sequence[torch.Tensor],
    *,
    device: torch.device,
    progress: bool = True,
) -> dict[str, dict[str, float]]:
    """Held-out quality of each model against the ground truth and against `parent` (see module docstring)."""
    if not batches:
        raise ValueError("evaluation needs at least one held-out batch; raise the evaluation token budget")
    sums: dict[str, list[dict[str, float]]] = {name: [] for name in models}
    for ids in tqdm(batches, desc="evaluating", disable=not progress):
        ids = ids.to(device)
        parent_logp = F.log_softmax(logits_of(parent, ids), dim=-1)
        for name, model in models.items():
            logits = parent_logp if model is parent else logits_of(model, ids)
            sums[name].append(compare_logits(parent_logp, logits, ids))
    out = {}
    for name, s in sums.items():
        m = mean_metrics(s)
        m["perplexity"] = math.exp(m["lm_loss"])
        out[name] = m
    return out


def evaluate_models(
    models: Mapping[str, nn.Module],
    parent: nn.Module,
    batches: Sequence[torch.Tensor],
    scenario: Scenario,
    *,
    device: torch.device,
    predicted_runtime_ms: Mapping[str, float] | None = None,
    warmup: int = 1,
    iters: int = 3,
    progress: bool = True,
    costs: Mapping[str, Mapping[str, float]] | None = None,
) -> dict[str, dict[str, float]]:
    """Quality + measured generation cost of every model (the parent is added as "parent").

    `costs` (name -> `measure_generations` record, e.g. from `measure_in_fresh_process`) replaces timing here.
    speedup = 1 / the median over timing rounds of (model's runtime / the parent's in the same round).
    """
    models = {"parent": parent, **{k: v for k, v in models.items() if k != "parent"}}
    for model in models.values():
        model.to(device).eval()
    results = quality_metrics(models, parent, batches, device=device, progress=progress)
    if costs is None:
        # the models timed in turn (interleaved), so a drift of the machine's speed hits all of them alike
        costs = measure_generations(models, scenario, device=device, warmup=warmup, iters=iters)
    for name, model in models.items():
        cost = costs[name]
        # one number per metric in the records: the per-round times stay out
        results[name].update({f"measured_{k}": v for k, v in cost.items() if k != "rounds_ms"})
        results[name]["params"] = sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
        if predicted_runtime_ms and name in predicted_runtime_ms:
            pred = predicted_runtime_ms[name]
            results[name]["predicted_runtime_ms"] = pred
            results[name]["predicted_over_measured"] = pred / cost["runtime_ms"]
    base = results["parent"]
    for name, r in results.items():
        r["top1_accuracy_retention"] = (
            r["top1_accuracy"] / base["top1_accuracy"] if base["top1_accuracy"] else math.nan
        )
        # relative to the parent round by round (median of the ratios): a drift of the machine's speed cancels
        relative = runtime_ratio(costs, name, "parent")
        r["speedup"] = 1 / relative
        if "predicted_runtime_ms" in r and "predicted_runtime_ms" in base:
            # the same check relative to the parent measured in this run: the cost model's error without the
            # machine's drift between the measure stage and this one
            r["predicted_over_measured_vs_parent"] = (
                r["predicted_runtime_ms"] / base["predicted_runtime_ms"]
            ) / relative
    return results


QUALITY_KEYS = (
    "lm_loss",
    "perplexity",
    "top1_accuracy",
    "top1_accuracy_retention",
    "kl",
    "top1_agreement",
    "tokens",
)


def add_heldout_sets(
    results: Mapping[str, dict],
    models: Mapping[str, nn.Module],
    parent: nn.Module,
    first: str,
    others: Mapping[str, Sequence[torch.Tensor]],
    *,
    device: torch.device,
    progress: bool = True,
) -> None:
    """Give every model's record `heldout: {set: quality}`: the first set's from its top-level figures (the ones
    older readers use), the `others` (set -> test batches) measured here."""
    per_set = {first: {name: {k: r[k] for k in QUALITY_KEYS if k in r} for name, r in results.items()}}
    for set_name, batches in others.items():
        quality = quality_metrics(models, parent, batches, device=device, progress=progress)
        base = quality["parent"]["top1_accuracy"]
        for m in quality.values():
            m["top1_accuracy_retention"] = m["top1_accuracy"] / base if base else math.nan
        per_set[set_name] = quality
    for name, r in results.items():
        r["heldout"] = {set_name: q[name] for set_name, q in per_set.items()}


def measure_in_fresh_process(
    parent_dir: str | Path,
    child_dirs: Mapping[str, str | Path],
    scenario: Scenario,
    *,
    device: torch.device,
    warmup: int = 1,
    iters: int = 3,
) -> dict[str, dict[str, float]]:
    """`measure_generations` of the parent ("parent") and saved DeciLM children, in a new Python process with the
    same torch thread count; name -> cost record."""
    spec = {
        "parent": str(parent_dir),
        "children": {k: str(v) for k, v in child_dirs.items()},
        "scenario": scenario.to_dict(),
        "device": str(device),
        "warmup": warmup,
        "iters": iters,
        "threads": torch.get_num_threads(),
    }
    with tempfile.TemporaryDirectory() as tmp:
        spec_path, out_path = Path(tmp) / "spec.json", Path(tmp) / "costs.json"
        spec_path.write_text(json.dumps(spec))
        subprocess.run([sys.executable, "-m", "puzzle.evaluate", str(spec_path), str(out_path)], check=True)
        return json.loads(out_path.read_text())


def _time_saved_models(spec_path: str, out_path: str) -> None:
    from puzzle.modeling_decilm import DeciLMForCausalLM
    from puzzle.parent import load_parent

    spec = json.loads(Path(spec_path).read_text())
    torch.set_num_threads(spec["threads"])
    models = {
        "parent": load_parent(spec["parent"])[0],
        **{name: DeciLMForCausalLM.from_pretrained(path) for name, path in spec["children"].items()},
    }
    costs = measure_generations(
        models,
        Scenario(**spec["scenario"]),
        device=torch.device(spec["device"]),
        warmup=spec["warmup"],
        iters=spec["iters"],
    )
    Path(out_path).write_text(json.dumps(costs))


if __name__ == "__main__":
    _time_saved_models(*sys.argv[1:3])
