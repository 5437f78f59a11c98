import pytest
import torch

from benchmarks.data import fetch, load_fashion_mnist
from benchmarks.data.fashion_mnist import CLASSES


@pytest.fixture(scope="module", autouse=True)
def fetched() -> None:
    fetch("fashion-mnist")  # instant when the setup script already fetched it


@pytest.mark.parametrize(("split", "n", "per_class"), [("train", 60000, 6000), ("test", 10000, 1000)])
def test_split_sizes_shapes_and_balanced_classes(split: str, n: int, per_class: int) -> None:
    images, labels = load_fashion_mnist(split)
    assert images.shape == (n, 28, 28) and images.dtype == torch.uint8
    assert labels.shape == (n,) and labels.dtype == torch.int64
    assert torch.bincount(labels, minlength=len(CLASSES)).tolist() == [per_class] * len(CLASSES)
    # real pictures: full 8-bit range used, mostly dark background with bright garments
    assert images.min() == 0 and images.max() == 255
    assert 0.1 < images.float().mean().item() / 255 < 0.5


def test_train_and_test_are_different_images() -> None:
    train, _ = load_fashion_mnist("train")
    test, _ = load_fashion_mnist("test")
    assert not torch.equal(train[:100], test[:100])


def test_unknown_split_is_refused() -> None:
    with pytest.raises(ValueError, match="train' or 'test"):
        load_fashion_mnist("valid")
