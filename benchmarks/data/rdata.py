"""A small pure-Python reader for R's serialisation format (no R needed).

Enough of the format to read data sets: vectors (logical, integer, double, character, list), pairlists,
symbols, references, attributes, and the compact ALTREP sequences R 3.5+ writes. It reads

* lazy-load databases (an installed package's ``data/Rdata.rdx`` + ``Rdata.rdb``): the ``.rdx`` index is a
  compressed serialisation of ``list(variables=, references=, compressed=)`` whose ``variables`` give the byte
  offset and length of each object in ``.rdb``; each object there is a 4-byte length followed by the
  compressed serialisation of the object;
* ``save()`` files (a source package's ``data/*.rda``): a compressed ``RDX2``/``RDX3`` header followed by
  the serialisation of a pairlist ``name -> object``.

R values map to Python as follows: atomic vectors become lists (``NA`` becomes ``None``), a list or a
pairlist with names becomes a ``dict``, other lists become ``list``, a symbol becomes ``str``. Other
attributes (class, dim, ...) are dropped: data sets here do not need them.
"""

from __future__ import annotations

import builtins
import bz2
import gzip
import lzma
import math
import struct
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

# SEXPTYPE codes (R's Rinternals.h) and the pseudo-types serialize.c writes (serialize.c).
NILSXP, SYMSXP, LISTSXP = 0, 1, 2
CHARSXP, LGLSXP, INTSXP, REALSXP, STRSXP, VECSXP, EXPRSXP = 9, 10, 13, 14, 16, 19, 20
ALTREP_SXP, ATTRLISTSXP = 238, 240
BASEENV_SXP, EMPTYENV_SXP = 242, 243
GLOBALENV_SXP, UNBOUNDVALUE_SXP, MISSINGARG_SXP, BASENAMESPACE_SXP = 253, 252, 251, 250
REFSXP, NILVALUE_SXP = 255, 254
_SINGLETONS = {
    NILVALUE_SXP,
    GLOBALENV_SXP,
    UNBOUNDVALUE_SXP,
    MISSINGARG_SXP,
    BASENAMESPACE_SXP,
    EMPTYENV_SXP,
    BASEENV_SXP,
}

IS_OBJECT, HAS_ATTR, HAS_TAG = 1 << 8, 1 << 9, 1 << 10
NA_INTEGER = -(2**31)  # R's NA for integer and logical vectors
LATIN1_MASK = 1 << 2  # CHARSXP levels bit: the string is Latin-1, else UTF-8/ASCII


class RFormatError(ValueError):
    """The bytes are not an R serialisation this reader understands."""


class _Reader:
    """Reads one XDR (big-endian) serialisation stream, as R's ``unserialize`` does."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0
        self.refs: list[Any] = []  # symbols (and environments) that later REFSXP items point back to

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise RFormatError(f"R serialisation truncated at byte {self.pos} (wanted {n} more)")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def int(self) -> int:
        return struct.unpack(">i", self.take(4))[0]

    def header(self) -> None:
        fmt = self.take(2)
        if fmt != b"X\n":
            raise RFormatError(f"only XDR serialisations are supported, got format {fmt!r}")
        version = self.int()
        self.int(), self.int()  # R version that wrote it, minimal R version to read it
        if version == 3:
            self.take(self.int())  # native encoding name
        elif version != 2:
            raise RFormatError(f"unsupported serialisation version {version}")

    def item(self) -> Any:
        flags = self.int()
        kind = flags & 0xFF
        if kind in _SINGLETONS:
            return None
        if kind == REFSXP:
            index = flags >> 8 or self.int()  # index packed in the flags, or in the next int if too big
            return self.refs[index - 1]
        if kind == SYMSXP:
            name = self.item()  # a CHARSXP
            self.refs.append(name)
            return name
        if kind in (LISTSXP, ATTRLISTSXP):
            return self.pairlist(flags)
        if kind == ALTREP_SXP:
            return self.altrep()
        value = self.vector(kind, flags)
        if flags & HAS_ATTR:
            attributes = self.item()
            names = attributes.get("names") if isinstance(attributes, dict) else None
            if kind in (VECSXP, EXPRSXP) and names is not None and len(names) == len(value):
                return dict(zip(names, value, strict=True))
        return value

    def pairlist(self, flags: builtins.int) -> Any:
        # Walked iteratively: pairlists (e.g. the variables of an .rda file) can be long.
        entries: list[tuple[str | None, Any]] = []
        kind = flags & 0xFF
        while kind in (LISTSXP, ATTRLISTSXP):
            if flags & HAS_ATTR:
                self.item()
            tag = self.item() if flags & HAS_TAG else None
            entries.append((tag, self.item()))
            flags = self.int()
            kind = flags & 0xFF
        if kind != NILVALUE_SXP:
            raise RFormatError(f"pairlist ends with SEXP type {kind}, expected NULL")
        if all(tag is not None for tag, _ in entries):
            return dict(entries)
        return [value for _, value in entries]

    def vector(self, kind: builtins.int, flags: builtins.int) -> Any:
        if kind == CHARSXP:
            n = self.int()
            if n == -1:
                return None  # NA_character_
            raw = self.take(n)
            return raw.decode("latin-1" if (flags >> 12) & LATIN1_MASK else "utf-8")
        n = self.length()
        if kind in (LGLSXP, INTSXP):
            values = struct.unpack(f">{n}i", self.take(4 * n))
            if kind == LGLSXP:
                return [None if v == NA_INTEGER else bool(v) for v in values]
            return [None if v == NA_INTEGER else v for v in values]
        if kind == REALSXP:
            return list(struct.unpack(f">{n}d", self.take(8 * n)))
        if kind == STRSXP:
            return [self.item() for _ in range(n)]
        if kind in (VECSXP, EXPRSXP):
            return [self.item() for _ in range(n)]
        raise RFormatError(f"unsupported SEXP type {kind} at byte {self.pos - 4}")

    def length(self) -> builtins.int:
        n = self.int()
        if n == -1:  # long vector: length as two 32-bit halves
            upper, lower = self.int(), self.int()
            n = (upper << 32) + lower
        return n

    def altrep(self) -> Any:
        info = self.item()  # pairlist (class symbol, package symbol, type)
        state = self.item()
        self.item()  # attributes
        class_name = info[0] if isinstance(info, list) else None
        if class_name in ("compact_intseq", "compact_realseq"):
            n, start, step = state
            seq = [start + i * step for i in range(int(n))]
            return [int(v) for v in seq] if class_name == "compact_intseq" else seq
        if class_name in ("wrap_integer", "wrap_real", "wrap_logical", "wrap_string", "wrap_list"):
            return state[0]
        if class_name == "deferred_string":
            values = state[0]
            return [
                None if v is None or (isinstance(v, float) and math.isnan(v)) else _r_str(v) for v in values
            ]
        raise RFormatError(f"unsupported ALTREP class {class_name!r}")


def _r_str(value: Any) -> str:
    # as.character() of an integer-valued double prints without the trailing ".0"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def unserialize(data: bytes) -> Any:
    """Decode one uncompressed XDR serialisation (what R's ``serialize(x, NULL)`` returns)."""
    reader = _Reader(data)
    reader.header()
    return reader.item()


def decompress(data: bytes) -> bytes:
    """Undo the compression R's ``saveRDS``/``save`` apply, picked by magic bytes (gzip, bzip2, xz)."""
    if data[:2] == b"\x1f\x8b":
        return gzip.decompress(data)
    if data[:3] == b"BZh":
        return bz2.decompress(data)
    if data[:6] == b"\xfd7zXZ\x00":
        return lzma.decompress(data)
    return data


def read_rds(path: str | Path) -> Any:
    """Read an ``.rds`` file (or a lazy-load ``.rdx`` index, which is one)."""
    return unserialize(decompress(Path(path).read_bytes()))


def read_rdata(path: str | Path) -> dict[str, Any]:
    """Read a ``save()`` file (``.rda``/``.RData``) into ``{variable name: value}``."""
    data = decompress(Path(path).read_bytes())
    if data[:5] not in (b"RDX2\n", b"RDX3\n"):
        raise RFormatError(f"{path} is not an XDR .rda file (starts with {data[:5]!r})")
    objects = unserialize(data[5:])
    if not isinstance(objects, dict):
        raise RFormatError(f"{path} does not hold named objects")
    return objects


def _lazyload_object(blob: bytes, compression: int) -> Any:
    # Each .rdb record: 4-byte big-endian uncompressed length, then the payload; for bzip2/xz a type
    # byte ('2', 'Z' or '0' for stored) comes before it.
    expected = struct.unpack(">I", blob[:4])[0]
    if compression in (0, 1):
        payload = zlib.decompress(blob[4:])
    else:
        method, body = blob[4:5], blob[5:]
        decompress: dict[bytes, Callable[[bytes], bytes]] = {
            b"2": bz2.decompress,
            b"Z": lzma.decompress,
            b"0": bytes,
        }
        payload = decompress[method](body)
    if len(payload) != expected:
        raise RFormatError(f"lazy-load record decompressed to {len(payload)} bytes, expected {expected}")
    return unserialize(payload)


def read_lazyload_db(rdx_path: str | Path) -> dict[str, Any]:
    """Read every variable of a lazy-load database (``X.rdx`` with ``X.rdb`` beside it)."""
    rdx_path = Path(rdx_path)
    index = read_rds(rdx_path)
    if not isinstance(index, dict) or "variables" not in index:
        raise RFormatError(f"{rdx_path} is not a lazy-load index (no 'variables' entry)")
    compression = int((index.get("compressed") or [1])[0])  # TRUE (zlib), 2 (bzip2) or 3 (xz)
    rdb = rdx_path.with_suffix(".rdb").read_bytes()
    return {
        name: _lazyload_object(rdb[offset : offset + length], compression)
        for name, (offset, length) in index["variables"].items()
    }
