"""export: each distilled child as a Nemotron-NAS (DeciLM) checkpoint for engines -> export/<child>/."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from puzzle.pipeline import Pipeline


def run(pipe: Pipeline, h: str) -> dict[str, Any]:
    from puzzle.export import export_child

    _, tokenizer = pipe.parent()
    for name in pipe.solutions():
        export_child(pipe.load_child("gkd", name), tokenizer, pipe.run.path(f"export/{name}"))  # atomic
    return {}
