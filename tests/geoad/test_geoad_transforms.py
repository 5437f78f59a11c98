import numpy as np
import pytest
import torch
from PIL import Image

from benchmarks.data import foolbox_samples
from geoad.transforms import NAMED_SETS, Preprocessing, Transform, TransformSet


def reference(img: np.ndarray, t: Transform) -> np.ndarray:
    """Slow numpy reference on one [C, H, W] image. Axis convention: H = rows (axis 1), W = columns (axis 2).

    flip mirrors the columns; a shift by +s moves the content right (tx) / down (ty), filling from the reflected
    border (np.pad 'reflect', edge not repeated); np.rot90 over (rows, columns) turns counter-clockwise.
    """
    s = img.shape[-1] // 4
    if t.flip:
        img = np.flip(img, axis=2)
    if t.tx or t.ty:
        padded = np.pad(img, ((0, 0), (s, s), (s, s)), mode="reflect")
        top, left, n = s - t.ty * s, s - t.tx * s, img.shape[-1]
        img = padded[:, top : top + n, left : left + n]
    return np.rot90(img, t.k, axes=(1, 2))


@pytest.fixture(scope="module")
def real_images() -> torch.Tensor:
    """Four real 32x32 RGB CIFAR-10 images."""
    files = [s.path for s in foolbox_samples(dataset="cifar10")[:4]]
    return torch.stack(
        [torch.from_numpy(np.array(Image.open(f).convert("RGB"))).permute(2, 0, 1) for f in files]
    )


def test_72_transforms_match_numpy_reference_and_are_distinct(real_images):
    ts = TransformSet("72")
    out = ts.expand(real_images)  # [4 * 72, 3, 32, 32]
    assert out.shape == (4 * 72, 3, 32, 32)
    for b, img in enumerate(real_images.numpy()):
        for i, t in enumerate(ts.transforms):
            np.testing.assert_array_equal(out[b * 72 + i].numpy(), reference(img, t), err_msg=str(t))
        assert len({out[b * 72 + i].numpy().tobytes() for i in range(72)}) == 72


def test_paper_order_and_conventions():
    ts = TransformSet("72")
    assert ts.transforms[0] == Transform(False, 0, 0, 0)
    assert ts.transforms[1] == Transform(False, 0, 0, 1)  # rotation varies fastest
    assert ts.transforms[4] == Transform(False, 0, -1, 0)  # then ty, then tx, then flip
    assert ts.transforms[12] == Transform(False, -1, 0, 0)
    assert ts.transforms[36] == Transform(True, 0, 0, 0)
    img = torch.zeros(1, 1, 8, 8)
    img[0, 0, 0, 1] = 1  # top row, second column
    rot = TransformSet("rot").expand(img)[
        1, 0
    ]  # one counter-clockwise quarter turn -> left column, second from bottom
    assert rot[6, 0] == 1
    shift = TransformSet("tx").expand(img)[2, 0]  # tx = +s = 2 px: content moves right
    assert shift[0, 3] == 1


def test_apply_picks_the_labelled_transform(real_images):
    ts = TransformSet("72")
    labels = torch.tensor([5, 71, 0, 40])
    np.testing.assert_array_equal(
        ts.apply(real_images, labels).numpy(),
        ts.expand(real_images).view(4, 72, 3, 32, 32)[torch.arange(4), labels].numpy(),
    )


@pytest.mark.parametrize(
    "spec,size", [("72", 72), ("36", 36), ("18", 18), ("8", 8), ("4", 4), ("flip+tx+rot", 24)]
)
def test_named_subsets_keep_the_paper_order(spec, size):
    ts, full = TransformSet(spec), TransformSet("72").transforms
    assert len(ts) == size
    positions = [full.index(t) for t in ts.transforms]
    assert positions == sorted(positions)
    assert spec in NAMED_SETS or "+" in spec


def test_bad_spec_and_non_square_input():
    with pytest.raises(ValueError, match="unknown transform set"):
        TransformSet("flip+zoom")
    with pytest.raises(ValueError, match="square"):
        TransformSet("8").expand(torch.zeros(1, 1, 8, 6))


def test_preprocessing_pads_and_scales_fashion_mnist():
    images = torch.full((2, 1, 28, 28), 255, dtype=torch.uint8)
    prep = Preprocessing.for_images(images)
    x = prep(images)
    assert x.shape == (2, 1, 32, 32) and prep.pad == 2
    assert x[0, 0, 0, 0] == -1 and x[0, 0, 16, 16] == 1


def test_preprocessing_conform_converts_rgb_and_resizes():
    prep = Preprocessing(1, 28, 2)
    rgb = torch.randint(0, 256, (3, 3, 40, 40), dtype=torch.uint8)
    out = prep.conform(rgb)
    assert out.shape == (3, 1, 28, 28) and out.dtype == torch.uint8
    with pytest.raises(ValueError, match="channels"):
        prep.conform(torch.zeros(1, 2, 28, 28, dtype=torch.uint8))
