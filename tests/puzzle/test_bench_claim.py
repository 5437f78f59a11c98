"""Puzzle's claim on the report's claims page, judged from hand-made puzzle.austen records."""

from puzzle.bench import judge_austen


def _rec(variant, acc, retention, speedup, tps, **extra):
    return {
        "variant": variant,
        "quality": {"top1_accuracy": acc, "top1_accuracy_retention": retention},
        "cost": {"tokens_per_s": tps},
        "extra": {"speedup": speedup, "profile": "cpu", **extra},
    }


PARENT = _rec("parent", 0.30, 1.0, 1.0, 10.0)


def _run(child_retention, twin_acc):
    return [
        PARENT,
        _rec(
            "puzzle-1.5x", 0.30 * child_retention, child_retention, 1.52, 15.2, method="puzzle", target="1.5x"
        ),
        _rec("shortgpt-1.5x", 0.28, 0.93, 1.5, 15.0, method="shortgpt", target="1.5x"),
        _rec(
            "puzzle-1.5x-at-shortgpt",
            twin_acc,
            twin_acc / 0.3,
            1.5,
            15.0,
            method="puzzle",
            target="1.5x",
            matched="shortgpt-1.5x",
        ),
    ]


def test_the_claim_holds_fails_or_holds_with_an_exception():
    v = judge_austen(_run(0.96, 0.29))
    assert v.verdict == "holds" and (v.method, v.baseline) == ("puzzle-1.5x", "parent")
    assert v.quality == (0.30 * 0.96, 0.30) and v.throughput == (15.2, 10.0)
    v = judge_austen(_run(0.96, 0.27))
    assert v.verdict == "holds with an exception" and "shortgpt-1.5x beats puzzle-1.5x-at-shortgpt" in v.note
    assert judge_austen(_run(0.70, 0.29)).verdict == "does not hold"
    assert judge_austen([PARENT]).verdict == "not run at this profile"
