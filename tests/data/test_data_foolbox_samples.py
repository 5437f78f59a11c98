import pytest
from PIL import Image

from benchmarks.data import fetch, foolbox_samples
from benchmarks.data.foolbox_samples import DATASETS

N_CLASSES = {"cifar10": 10, "cifar100": 100, "mnist": 10, "fashionMNIST": 10, "imagenet": 1000}
MODES = {"cifar10": "RGB", "cifar100": "RGB", "mnist": "L", "fashionMNIST": "L", "imagenet": "RGB"}


@pytest.fixture(scope="module", autouse=True)
def fetched() -> None:
    fetch("foolbox-samples")


@pytest.mark.parametrize("dataset", DATASETS)
def test_twenty_readable_samples_per_set(dataset: str) -> None:
    samples = foolbox_samples(dataset=dataset)
    assert [s.index for s in samples] == list(range(20))
    for sample in samples:
        assert sample.dataset == dataset
        assert sample.path.name.startswith(f"{dataset}_{sample.index:02d}_{sample.label}.")
        assert 0 <= sample.label < N_CLASSES[dataset]
        with Image.open(sample.path) as image:
            image.load()
            assert image.mode == MODES[dataset]
            assert min(image.size) >= 28


def test_all_sets_together_and_unknown_set() -> None:
    assert len(foolbox_samples()) == 100
    with pytest.raises(ValueError, match="cifar10, cifar100"):
        foolbox_samples(dataset="svhn")
