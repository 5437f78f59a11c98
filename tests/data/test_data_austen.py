import pytest

from benchmarks.data import fetch, load_austen


@pytest.fixture(scope="module")
def novels() -> dict[str, str]:
    fetch("austen")
    return load_austen()


def test_six_novels_in_publication_order(novels: dict[str, str]) -> None:
    assert list(novels) == [
        "Sense & Sensibility",
        "Pride & Prejudice",
        "Mansfield Park",
        "Emma",
        "Northanger Abbey",
        "Persuasion",
    ]


# Word counts from /work/shared/DATA.md (whitespace-separated tokens, thousands).
@pytest.mark.parametrize(
    ("title", "thousands"),
    [
        ("Emma", 157),
        ("Mansfield Park", 160),
        ("Pride & Prejudice", 122),
        ("Sense & Sensibility", 119),
        ("Persuasion", 83),
        ("Northanger Abbey", 77),
    ],
)
def test_word_counts(novels: dict[str, str], title: str, thousands: int) -> None:
    words = len(novels[title].split())
    assert abs(words - thousands * 1000) <= 0.05 * thousands * 1000


def test_text_is_the_novel_one_line_per_line(novels: dict[str, str]) -> None:
    emma = novels["Emma"]
    assert emma.startswith("EMMA\n")
    assert "Emma Woodhouse, handsome, clever, and rich, with a comfortable home\nand happy" in emma
    assert "It is a truth universally acknowledged" in novels["Pride & Prejudice"]
    assert 3.9e6 < sum(len(text) for text in novels.values()) < 4.2e6
