"""The R serialisation reader, on serialisations built here byte by byte (as R's serialize.c writes them)."""

import gzip
import io
import lzma
import shutil
import struct
import tarfile
import zlib
from pathlib import Path

import pytest

from benchmarks.data import fetch, load_austen
from benchmarks.data.austen import TITLES
from benchmarks.data.rdata import RFormatError, read_lazyload_db, read_rdata, unserialize

HAS_ATTR, HAS_TAG = 1 << 9, 1 << 10
UTF8, LATIN1 = 1 << 3, 1 << 2  # CHARSXP encoding bits, stored in flags >> 12


def ints(*values: int) -> bytes:
    return struct.pack(f">{len(values)}i", *values)


def header() -> bytes:  # format XDR, version 3, written by R 4.2.1, readable by R 3.5.0, encoding
    return b"X\n" + ints(3, 0x040201, 0x030500, 5) + b"UTF-8"


def charsxp(text: str | None, encoding: int = UTF8) -> bytes:
    if text is None:
        return ints(9, -1)
    raw = text.encode("latin-1" if encoding == LATIN1 else "utf-8")
    return ints(9 | encoding << 12, len(raw)) + raw


def strsxp(values: list) -> bytes:
    return ints(16, len(values)) + b"".join(charsxp(v) for v in values)


def symbol(name: str, refs: list[str]) -> bytes:
    if name in refs:  # R writes a symbol once, then back-references it by its 1-based index
        return ints(255 | (refs.index(name) + 1) << 8)
    refs.append(name)
    return ints(1) + charsxp(name)


def named_list(items: dict[str, bytes], refs: list[str]) -> bytes:
    names = ints(2 | HAS_TAG) + symbol("names", refs) + strsxp(list(items)) + ints(254)
    return ints(19 | HAS_ATTR, len(items)) + b"".join(items.values()) + names


def test_character_vector_with_na_and_encodings() -> None:
    data = (
        header() + ints(16, 4) + charsxp("plain") + charsxp(None) + charsxp("café") + charsxp("señor", LATIN1)
    )
    assert unserialize(data) == ["plain", None, "café", "señor"]


def test_named_list_of_vectors_with_symbol_back_references() -> None:
    refs: list[str] = []
    inner = named_list({"x": ints(13, 2, 7, -(2**31))}, refs)  # INTSXP with an NA
    outer = named_list(
        {
            "flags": ints(10, 3, 1, 0, -(2**31)),  # LGLSXP: TRUE, FALSE, NA
            "reals": ints(14, 2) + struct.pack(">2d", 0.5, -2.0),
            "inner": inner,
            "plain": ints(19, 1) + strsxp(["a"]),  # list without names stays a list
        },
        refs,
    )
    assert refs == ["names"]  # the second "names" was written as a reference
    assert unserialize(header() + outer) == {
        "flags": [True, False, None],
        "reals": [0.5, -2.0],
        "inner": {"x": [7, None]},
        "plain": [["a"]],
    }


def test_compact_integer_sequence_altrep() -> None:
    refs: list[str] = []
    info = (
        ints(2)
        + symbol("compact_intseq", refs)
        + ints(2)
        + symbol("base", refs)
        + ints(2)
        + ints(13, 1, 13)
        + ints(254)
    )
    state = ints(14, 3) + struct.pack(">3d", 4, 10, 1)  # length 4, from 10, step 1
    assert unserialize(header() + ints(238) + info + state + ints(254)) == [10, 11, 12, 13]


def test_rda_file_as_a_cran_source_package_has(tmp_path: Path) -> None:
    refs: list[str] = []
    pairlist = ints(2 | HAS_TAG) + symbol("emma", refs) + strsxp(["EMMA", "", "By Jane Austen"]) + ints(254)
    path = tmp_path / "emma.rda"
    path.write_bytes(lzma.compress(b"RDX3\n" + header() + pairlist))
    assert read_rdata(path) == {"emma": ["EMMA", "", "By Jane Austen"]}


def test_malformed_input_is_refused(tmp_path: Path) -> None:
    with pytest.raises(RFormatError, match="XDR"):
        unserialize(b"A\n" + ints(3))
    with pytest.raises(RFormatError, match="truncated"):
        unserialize(header() + ints(16, 2) + charsxp("only one"))
    (tmp_path / "x.rda").write_bytes(gzip.compress(b"not R data"))
    with pytest.raises(RFormatError, match="not an XDR .rda"):
        read_rdata(tmp_path / "x.rda")


def write_lazyload_db(stem: Path, objects: dict[str, list[str]]) -> None:
    """An R lazy-load database like an installed package's data/Rdata.rdb + .rdx."""
    rdb, offsets = b"", {}
    for name, lines in objects.items():
        payload = header() + strsxp(lines)
        record = struct.pack(">I", len(payload)) + zlib.compress(payload)
        offsets[name] = ints(13, 2, len(rdb), len(record))
        rdb += record
    refs: list[str] = []
    index = named_list(
        {"variables": named_list(offsets, refs), "references": ints(19, 0), "compressed": ints(10, 1, 1)},
        refs,
    )
    stem.with_suffix(".rdb").write_bytes(rdb)
    stem.with_suffix(".rdx").write_bytes(gzip.compress(header() + index))


def ar_member(name: str, data: bytes) -> bytes:
    head = f"{name:<16}{0:<12}{0:<6}{0:<6}{100644:<8}{len(data):<10}`\n".encode()
    return head + data + (b"\n" if len(data) % 2 else b"")


def tar_gz(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


@pytest.mark.parametrize("with_dpkg", [True, False])
def test_fetch_austen_from_a_deb_with_a_lazyload_db(tmp_path: Path, monkeypatch, with_dpkg: bool) -> None:
    if with_dpkg and shutil.which("dpkg") is None:
        pytest.skip("dpkg not installed")
    novels = {key: [title.upper(), "", f"The text of {title}, café."] for key, title in TITLES.items()}
    data_dir = tmp_path / "janeaustenr" / "data"
    data_dir.mkdir(parents=True)
    write_lazyload_db(data_dir / "Rdata", novels)
    assert read_lazyload_db(data_dir / "Rdata.rdx") == novels

    prefix = "./usr/lib/R/site-library/janeaustenr/data/"
    deb = tmp_path / "r-cran-janeaustenr_1.0.0-1_all.deb"
    deb.write_bytes(
        b"!<arch>\n"
        + ar_member("debian-binary", b"2.0\n")
        + ar_member("control.tar.gz", tar_gz({"./control": b"Package: r-cran-janeaustenr\n"}))
        + ar_member("data.tar.gz", tar_gz({prefix + f.name: f.read_bytes() for f in data_dir.iterdir()}))
    )
    if not with_dpkg:  # the pure-Python .deb reader used where dpkg is missing
        which = shutil.which
        monkeypatch.setattr(shutil, "which", lambda cmd: None if cmd == "dpkg" else which(cmd))

    fetch("austen", tmp_path / "root", from_path=deb)
    assert load_austen(tmp_path / "root") == {title: "\n".join(novels[key]) for key, title in TITLES.items()}
