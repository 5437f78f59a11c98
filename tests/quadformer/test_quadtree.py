"""The batched quadtree against a plain reference: one heap per image, nodes ordered by a pre-order walk."""

from __future__ import annotations

import heapq

import pytest
import torch

from quadformer.quadtree import (
    PatchSizeError,
    QuadtreeSpec,
    TokenBudgetError,
    importance_pyramid,
    quadtree_tokens,
    uniform_tokens,
)


def _preorder(spec: QuadtreeSpec) -> dict[tuple[int, int, int], int]:
    """Tie order of the reference, defined independently: a depth-first walk, roots in raster order, children
    top-left, top-right, bottom-left, bottom-right. (top, left, size) -> position."""
    order: dict[tuple[int, int, int], int] = {}

    def visit(top: int, left: int, size: int) -> None:
        order[(top, left, size)] = len(order)
        if size > spec.min_patch:
            h = size // 2
            for dy, dx in ((0, 0), (0, h), (h, 0), (h, h)):
                visit(top + dy, left + dx, h)

    for top in range(0, spec.height, spec.max_patch):
        for left in range(0, spec.width, spec.max_patch):
            visit(top, left, spec.max_patch)
    return order


def reference(importance: torch.Tensor, spec: QuadtreeSpec, n: int) -> list[tuple[int, int, int]]:
    """One image: split the most important leaf (ties: first in pre-order) until n leaves; sorted in pre-order."""
    fine = importance.tolist()  # given at pixel resolution: a patch's importance is the mean of its pixels
    order = _preorder(spec)

    def mean(top: int, left: int, size: int) -> float:
        return sum(fine[y][x] for y in range(top, top + size) for x in range(left, left + size)) / size**2

    heap = [
        (-mean(t, lf, spec.max_patch), order[(t, lf, spec.max_patch)], (t, lf, spec.max_patch))
        for t in range(0, spec.height, spec.max_patch)
        for lf in range(0, spec.width, spec.max_patch)
    ]
    heapq.heapify(heap)
    frozen: list[tuple[int, int, int]] = []  # min-size leaves never split
    while len(heap) + len(frozen) < n:
        _, _, (t, lf, s) = heapq.heappop(heap)
        h = s // 2
        for dy, dx in ((0, 0), (0, h), (h, 0), (h, h)):
            node = (t + dy, lf + dx, h)
            if h == spec.min_patch:
                frozen.append(node)
            else:
                heapq.heappush(heap, (-mean(*node), order[node], node))
    return sorted([node for _, _, node in heap] + frozen, key=order.__getitem__)


CASES = [
    (QuadtreeSpec(32, 32, 4, 16), [4, 19, 31, 64]),  # small images, 4/8/16 px
    (QuadtreeSpec(32, 48, 4, 16), [6, 33, 96]),  # rectangular
    (QuadtreeSpec(64, 64, 8, 32), [4, 16, 43, 64]),
]


@pytest.mark.parametrize("spec,budgets", CASES)
@pytest.mark.parametrize("levels", [3, 100])  # 3 distinct values: ties everywhere; 100: few ties
def test_matches_reference_heap(spec: QuadtreeSpec, budgets: list[int], levels: int) -> None:
    g = torch.Generator().manual_seed(spec.width + levels)
    maps = torch.randint(0, levels, (3, spec.height, spec.width), generator=g).float()  # means stay exact
    for n in budgets:
        tokens = quadtree_tokens(maps, spec, n)
        assert tokens.num_tokens == n
        for b in range(len(maps)):
            got = list(
                zip(tokens.top[b].tolist(), tokens.left[b].tolist(), tokens.size[b].tolist(), strict=True)
            )
            assert got == reference(maps[b], spec, n), (spec, n, b)


def test_constant_map_ties_split_first_in_order() -> None:
    spec = QuadtreeSpec(32, 32, 8, 16)
    tokens = quadtree_tokens(torch.zeros(1, 32, 32), spec, 7)  # one split, on the first root
    assert tokens.size[0].tolist() == [8, 8, 8, 8, 16, 16, 16]
    assert tokens.top[0].tolist()[:4] == [0, 0, 8, 8] and tokens.left[0].tolist()[:4] == [0, 8, 0, 8]


@pytest.mark.parametrize("spec,budgets", CASES)
def test_tokens_tile_the_image(spec: QuadtreeSpec, budgets: list[int]) -> None:
    maps = torch.rand(2, spec.height // 2, spec.width // 2)  # a coarser map than the image is fine
    for n in budgets:
        t = quadtree_tokens(maps, spec, n)
        for b in range(2):
            cover = torch.zeros(spec.height, spec.width, dtype=torch.int64)
            for top, left, size, lev, idx in zip(
                *(x[b].tolist() for x in (t.top, t.left, t.size, t.level, t.index)), strict=True
            ):
                cover[top : top + size, left : left + size] += 1
                assert size == spec.max_patch >> lev and size in (2**k for k in range(10))
                gw = spec.width // size
                assert (idx // gw * size, idx % gw * size) == (top, left)  # index is its level's raster index
            assert (cover == 1).all()  # every pixel in exactly one token: an exact tiling


def test_centres_are_exact_floats() -> None:
    spec = QuadtreeSpec(32, 32, 4, 16)
    t = quadtree_tokens(torch.rand(2, 32, 32), spec, 31)
    expect = torch.stack([t.top + t.size / 2, t.left + t.size / 2], dim=-1)
    assert torch.equal(t.centres, expect.float())
    assert set(t.centres[..., 0].flatten().tolist()) <= {y + s / 2 for y in range(32) for s in (4, 8, 16)}


def test_splits_follow_importance() -> None:
    spec = QuadtreeSpec(64, 64, 8, 32)
    imp = torch.zeros(1, 64, 64)
    imp[0, 40:48, 8:16] = 1.0  # one salient spot in the bottom-left root
    t = quadtree_tokens(imp, spec, 10)  # two splits: the root, then the child holding the spot
    small = [
        (tp, lf)
        for tp, lf, s in zip(t.top[0].tolist(), t.left[0].tolist(), t.size[0].tolist(), strict=True)
        if s == 8
    ]
    assert (40, 8) in small


def test_pyramid_is_area_mean() -> None:
    spec = QuadtreeSpec(32, 32, 8, 16)
    imp = torch.rand(2, 32, 32)
    pyr = importance_pyramid(imp, spec)
    assert torch.allclose(pyr[0][:, 1, 0], imp[:, 16:32, 0:16].mean(dim=(1, 2)), atol=1e-6)
    assert torch.allclose(pyr[1][:, 3, 2], imp[:, 24:32, 16:24].mean(dim=(1, 2)), atol=1e-6)


@pytest.mark.parametrize(
    "n,nearest",
    [(17, "16 or 19"), (3, "nearest valid budget: 4"), (300, "nearest valid budget: 64"), (65, "64")],
)
def test_bad_budget_names_nearest_valid(n: int, nearest: str) -> None:
    spec = QuadtreeSpec(64, 64, 8, 32)  # N = 4 + 3k up to 64
    with pytest.raises(TokenBudgetError, match=nearest):
        quadtree_tokens(torch.rand(1, 64, 64), spec, n)


def test_bad_geometry() -> None:
    with pytest.raises(PatchSizeError, match="power of two"):
        QuadtreeSpec(48, 48, 6, 12)
    with pytest.raises(PatchSizeError, match="multiples"):
        QuadtreeSpec(40, 32, 4, 16)
    with pytest.raises(ValueError, match="finite"):
        quadtree_tokens(torch.full((1, 32, 32), float("nan")), QuadtreeSpec(32, 32, 8, 16), 4)


def test_uniform_grid() -> None:
    t = uniform_tokens(QuadtreeSpec(32, 48, 4, 16), 2)
    assert (
        t.num_tokens == 6 and t.top[1].tolist() == [0, 0, 0, 16, 16, 16] and t.size.unique().tolist() == [16]
    )


def test_public_api_names_resolve() -> None:
    import quadformer

    for name in quadformer.__all__:
        assert getattr(quadformer, name) is not None
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        quadformer.nope  # noqa: B018
