"""Text a user names for training and held-out sets (config `data.train`, `data.heldout.<name>`).

Formats (`format:`, or inferred from the path):

    text    one .txt file, or a folder of .txt files (sorted, recursive); each file is one document
    jsonl   one JSON object per line; its `field` (default "text") is one document
    chat    JSONL with a "messages" list of {role, content}, rendered with the parent tokenizer's chat template
    hf      a Hugging Face `datasets` folder (`save_to_disk`) or .parquet / .arrow files, read with `datasets`;
            column `field` (default "text", else "messages" when there is one), text or chat messages

A source's `fingerprint` hashes its files' bytes (not just their names), so the token caches and the stage inputs
hashes change whenever the text does. Every problem is a `DataSourceError` (a ConfigError: `error: ...`, exit 2)
raised when the run inputs are loaded, before any stage runs.
"""

from __future__ import annotations

import hashlib
import json
import re
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from puzzle.config import ConfigError

FORMATS = ("text", "jsonl", "chat", "hf")
SPEC_KEYS = ("path", "format", "field", "split")
HF_MARKERS = ("dataset_info.json", "state.json", "dataset_dict.json")  # what save_to_disk writes
NAME = re.compile(r"[A-Za-z0-9_.-]+")  # held-out set names become file names and JSON keys


class DataSourceError(ConfigError):
    """A text source that cannot be used: missing, empty, malformed, or too short for the run's batches."""


@dataclass(frozen=True)
class TextSource:
    """One named source of text. `where` names it in errors ("data.train", "data.heldout.wiki")."""

    where: str
    path: Path
    format: str | None = None  # None: inferred by `resolved`
    field: str | None = None  # None: "text" (jsonl, hf) / "messages" (chat)
    split: str | None = None  # hf: the split of a saved DatasetDict

    @classmethod
    def parse(cls, where: str, spec: Any, base_dir: Path | None = None) -> TextSource:
        """A source from its config entry: a path, or a mapping with `path` and optionally format/field/split."""
        if isinstance(spec, str):
            spec = {"path": spec}
        if not isinstance(spec, Mapping) or "path" not in spec:
            raise ConfigError(f"{where} must be a path or a mapping with a 'path', got {spec!r}")
        unknown = sorted(set(spec) - set(SPEC_KEYS))
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) {unknown}; known keys: {', '.join(SPEC_KEYS)}")
        fmt = spec.get("format")
        if fmt is not None and fmt not in FORMATS:
            raise ConfigError(f"{where}.format {fmt!r} is not one of {', '.join(FORMATS)}")
        for key in ("path", "field", "split"):
            if spec.get(key) is not None and not isinstance(spec[key], str):
                raise ConfigError(f"{where}.{key} must be text, got {spec[key]!r}")
        path = Path(spec["path"]).expanduser()
        if base_dir is not None and not path.is_absolute():
            path = base_dir / path
        return cls(where, path, fmt, spec.get("field"), spec.get("split"))

    def resolved(self) -> TextSource:
        """This source with its path checked and its format inferred."""
        if not self.path.exists():
            raise DataSourceError(f"{self.where}: {self.path} does not exist")
        if self.format is not None:
            if self.format == "text" and self.path.is_dir() and not _files(self.path, (".txt",)):
                raise DataSourceError(f"{self.where}: folder {self.path} holds no .txt files")
            return self
        return replace(self, format=self._infer_format())

    def _infer_format(self) -> str:
        p = self.path
        if p.is_dir():
            if any((p / m).exists() for m in HF_MARKERS) or _files(p, (".arrow", ".parquet")):
                return "hf"
            if _files(p, (".txt",)):
                return "text"
            raise DataSourceError(
                f"{self.where}: folder {p} holds no .txt files (nor a saved dataset or .parquet/.arrow files)"
            )
        suffix = p.suffix.lower()
        if suffix == ".txt":
            return "text"
        if suffix in (".parquet", ".arrow"):
            return "hf"
        if suffix == ".jsonl":
            first = next(_json_records(p, self.where), None)
            chat = first is not None and "messages" in first[1] and self.field is None
            return "chat" if chat else "jsonl"
        raise DataSourceError(
            f"{self.where}: cannot tell the format of {p} from its name; set format: {' | '.join(FORMATS)}"
        )

    # -- content -------------------------------------------------------------------------------------------------
    def files(self) -> list[Path]:
        """The files whose bytes make up this source (a saved dataset: every file of its folder)."""
        if not self.path.is_dir():
            return [self.path]
        if self.format == "text":
            return _files(self.path, (".txt",))
        return sorted(f for f in self.path.rglob("*") if f.is_file())

    @cached_property
    def fingerprint(self) -> str:
        """Hash of how the source is read and of its files' bytes (read once per TextSource)."""
        h = hashlib.sha256(json.dumps([self.format, self.field, self.split]).encode())
        for f in self.files():
            h.update(str(f.relative_to(self.path) if self.path.is_dir() else f.name).encode())
            with open(f, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    h.update(block)
        return h.hexdigest()[:16]

    def documents(self, tokenizer: Any) -> Iterator[str]:
        """The source's documents as text (chat records rendered with `tokenizer`'s chat template)."""
        self.check_tokenizer(tokenizer)
        if self.format == "text":
            for f in self.files():
                text = f.read_text(encoding="utf-8")
                if not text.strip():
                    raise DataSourceError(f"{self.where}: file {f} is empty")
                yield text
        elif self.format in ("jsonl", "chat"):
            yield from self._jsonl_documents(tokenizer)
        else:
            yield from self._hf_documents(tokenizer)

    def check_tokenizer(self, tokenizer: Any) -> None:
        """A chat source needs a tokenizer with a chat template (checked before anything is read)."""
        if self.format == "chat" and not getattr(tokenizer, "chat_template", None):
            raise DataSourceError(
                f"{self.where}: chat-formatted {self.path} needs a tokenizer with a chat template, and the "
                "parent's tokenizer has none; give a parent whose tokenizer has one, or plain text"
            )

    def _jsonl_documents(self, tokenizer: Any) -> Iterator[str]:
        chat = self.format == "chat"
        field = self.field or ("messages" if chat else "text")
        count = 0
        for line, record in _json_records(self.path, self.where):
            if field not in record:
                raise DataSourceError(
                    f"{self.where}: {self.path}:{line}: no field {field!r} in this record "
                    f"(fields: {', '.join(sorted(record)) or 'none'}); set field: NAME"
                )
            where = f"{self.where}: {self.path}:{line}: field {field!r}"
            yield _render(record[field], tokenizer, where) if chat else _text(record[field], where)
            count += 1
        if count == 0:
            raise DataSourceError(f"{self.where}: file {self.path} is empty (no JSON records)")

    def _hf_documents(self, tokenizer: Any) -> Iterator[str]:
        with tempfile.TemporaryDirectory() as cache:  # read-through cache of load_dataset, dropped after
            dataset = self._load_dataset(cache)
            columns = list(dataset.column_names)
            field = self.field or ("messages" if "text" not in columns and "messages" in columns else "text")
            if field not in columns:
                raise DataSourceError(
                    f"{self.where}: dataset {self.path} has no column {field!r} (columns: "
                    f"{', '.join(columns)}); set field: NAME"
                )
            if len(dataset) == 0:
                raise DataSourceError(f"{self.where}: dataset {self.path} has no rows")
            for i, value in enumerate(dataset[field]):
                where = f"{self.where}: {self.path} row {i}: column {field!r}"
                if isinstance(value, str):
                    yield value
                elif isinstance(value, list):
                    yield _render(value, tokenizer, where)
                else:
                    raise DataSourceError(f"{where} holds neither text nor chat messages: {value!r:.80}")

    def _load_dataset(self, cache_dir: str) -> Any:
        import datasets

        try:
            if self.path.is_dir() and any((self.path / m).exists() for m in HF_MARKERS):
                dataset = datasets.load_from_disk(str(self.path))
            else:
                files = self.files()
                kind = "parquet" if any(f.suffix == ".parquet" for f in files) else "arrow"
                files = [f for f in files if f.suffix == f".{kind}"]
                dataset = datasets.load_dataset(
                    kind, data_files=[str(f) for f in files], split="train", cache_dir=cache_dir
                )
        except Exception as err:  # datasets and pyarrow raise many kinds; the user needs the message
            raise DataSourceError(f"{self.where}: could not read {self.path} with datasets: {err}") from err
        if isinstance(dataset, datasets.DatasetDict):
            splits = sorted(dataset)
            split = self.split or (splits[0] if len(splits) == 1 else None)
            if split not in dataset:
                raise DataSourceError(
                    f"{self.where}: {self.path} holds splits {', '.join(splits)}; set split: NAME"
                )
            dataset = dataset[split]
        return dataset


def parse_sources(
    data: Mapping[str, Any], base_dir: Path | None = None
) -> tuple[TextSource | None, dict[str, TextSource]]:
    """(training source or None, held-out sources by name) of a config's `data` section, paths unchecked."""
    train = data.get("train")
    heldout = data.get("heldout") or {}
    if not isinstance(heldout, Mapping):
        raise ConfigError(f"data.heldout must map set names to sources, got {heldout!r}")
    for name in heldout:
        if not isinstance(name, str) or not NAME.fullmatch(name):
            raise ConfigError(f"data.heldout: set name {name!r} must be letters, digits, '_', '-' or '.'")
    score_on = data.get("score_on")
    if score_on is not None and score_on not in heldout:
        raise ConfigError(
            f"data.score_on {score_on!r} is not a held-out set of data.heldout ({', '.join(heldout) or 'none'})"
        )
    return (
        None if train is None else TextSource.parse("data.train", train, base_dir),
        {name: TextSource.parse(f"data.heldout.{name}", spec, base_dir) for name, spec in heldout.items()},
    )


def tokenise_documents(tokenizer: Any, documents: Iterator[str], batch: int = 256) -> np.ndarray:
    """Token ids of the documents, each followed by EOS (as between the Austen novels)."""
    eos = [] if tokenizer.eos_token_id is None else [tokenizer.eos_token_id]
    backend = getattr(tokenizer, "backend_tokenizer", None)
    parts: list[np.ndarray] = []
    pending: list[str] = []

    def flush() -> None:
        if backend is not None:  # no model_max_length check: a document may be longer than the context
            encoded = [e.ids for e in backend.encode_batch(pending, add_special_tokens=False)]
        else:
            encoded = [tokenizer.encode(d, add_special_tokens=False) for d in pending]
        parts.extend(np.asarray(ids + eos, dtype=np.int32) for ids in encoded)
        pending.clear()

    for doc in documents:
        pending.append(doc)
        if len(pending) == batch:
            flush()
    if pending:
        flush()
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int32)


def sources_key(tokenizer: Any, sources: Sequence[TextSource]) -> str:
    """What the tokens of `sources` depend on: their contents and, for chat, the template that renders them."""
    h = hashlib.sha256()
    for s in sources:
        h.update(f"{s.where}={s.fingerprint};".encode())
        if s.format in ("chat", "hf"):
            h.update(str(getattr(tokenizer, "chat_template", None)).encode())
    return h.hexdigest()[:16]


def _files(folder: Path, suffixes: tuple[str, ...]) -> list[Path]:
    return sorted(f for f in folder.rglob("*") if f.is_file() and f.suffix.lower() in suffixes)


def _json_records(path: Path, where: str) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) of each non-blank line of a JSONL file."""
    with open(path, encoding="utf-8") as f:
        for line, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            try:
                record = json.loads(raw)
            except json.JSONDecodeError as err:
                raise DataSourceError(f"{where}: {path}:{line}: not valid JSON ({err.msg})") from None
            if not isinstance(record, dict):
                raise DataSourceError(
                    f"{where}: {path}:{line}: a record must be a JSON object, got {raw.strip():.60}"
                )
            yield line, record


def _text(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise DataSourceError(f"{where} must be text, got {value!r:.80}")
    return value


def _render(messages: Any, tokenizer: Any, where: str) -> str:
    ok = isinstance(messages, list) and all(
        isinstance(m, Mapping) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
        for m in messages
    )
    if not ok or not messages:
        raise DataSourceError(f"{where} must be a list of {{role, content}} messages, got {messages!r:.80}")
    if not getattr(tokenizer, "chat_template", None):
        raise DataSourceError(
            f"{where}: chat messages need a tokenizer with a chat template; the parent's has none"
        )
    return str(tokenizer.apply_chat_template([dict(m) for m in messages], tokenize=False))
