"""Token batches for every Puzzle stage (BLD, scoring, GKD, evaluation).

By default five Austen novels are the training text and one ("Persuasion") is held out; a config's `data.train` and
`data.heldout` name the user's own text instead (text_sources.py), and each held-out set is cut as Persuasion is.
Each text is tokenised with the parent's tokenizer, the training texts are joined (EOS between them) and cut into
fixed-length chunks of `seq_len` tokens; the chunks are shuffled once with `seed`. A held-out text is cut the same
way, unshuffled, and split in two contiguous halves so the search never selects on the text it is evaluated on:

    "score" half -> replace-1-block scoring (scoring.py)
    "test"  half -> evaluation (evaluate.py)

A batch is a LongTensor [batch_size, seq_len] of token ids (next-token targets are the same ids shifted by one).
Token budgets are turned into batch counts by `num_batches(tokens)` = ceil(tokens / (batch_size * seq_len)); a
training budget larger than the text cycles through it again in a new (seeded) order.

Tokenised arrays are cached as `.npy` files in `cache_dir` under a key made of the tokenizer's vocabulary and the text
hashes (of a user source: its files' bytes and its chat template), written once every size is checked, so a rerun
(or another stage of the same run) does not tokenise again.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset

if TYPE_CHECKING:
    from puzzle.text_sources import TextSource

HELDOUT_TITLE = "Persuasion"


class ChunkDataset(Dataset):
    """Rows of a [N, seq_len] token array as LongTensors."""

    def __init__(self, chunks: np.ndarray):
        self.chunks = chunks

    def __len__(self) -> int:
        return len(self.chunks)

    def __getitem__(self, idx: int) -> torch.Tensor:
        return torch.from_numpy(self.chunks[idx].astype(np.int64))


class BatchStream(IterableDataset):
    """Training batches for a token budget, produced lazily (a large budget is never held in memory).

    `start` skips batches already consumed (resume from a checkpoint); with `world_size` > 1 each rank takes every
    `world_size`-th batch, so the ranks of a Lightning DDP run see disjoint data and the budget stays global.
    """

    def __init__(
        self,
        datamodule: TextDataModule,
        tokens: int | None,
        *,
        start: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ):
        self.datamodule, self.tokens = datamodule, tokens
        self.start, self.rank, self.world_size = start, rank, world_size

    def __iter__(self) -> Iterator[torch.Tensor]:
        for i, batch in enumerate(self.datamodule.train_batches(self.tokens, start=self.start)):
            if (self.start + i) % self.world_size == self.rank:
                yield batch

    def __len__(self) -> int:
        total = self.datamodule.num_train_batches(self.tokens)
        return len(range(self.start + self.rank, total, self.world_size))


def tokenizer_key(tokenizer) -> str:
    """Stable id of a tokenizer's vocabulary (same vocab -> same token ids -> reusable cache)."""
    vocab = sorted(tokenizer.get_vocab().items())
    return hashlib.sha256(json.dumps(vocab).encode()).hexdigest()[:16]


def _tokenise(tokenizer, text: str) -> np.ndarray:
    # The backend tokenizer has no model_max_length check (a novel is far longer than any context window).
    backend = getattr(tokenizer, "backend_tokenizer", None)
    ids = (
        backend.encode(text, add_special_tokens=False).ids
        if backend is not None
        else tokenizer.encode(text, add_special_tokens=False)
    )
    return np.asarray(ids, dtype=np.int32)


def _chunk(ids: np.ndarray, seq_len: int) -> np.ndarray:
    n = len(ids) // seq_len
    return ids[: n * seq_len].reshape(n, seq_len)


class TextDataModule(L.LightningDataModule):
    """Fixed-length token chunks of a training text and of one or more held-out sets (score/test halves each).

    By default the five Austen novels (train) and Persuasion (held out); `train_source` and `heldout_sources` (a
    config's `data.train` and `data.heldout`, see text_sources.py) replace either with the user's text.

    tokenizer: the parent's tokenizer (a `transformers` tokenizer with `get_vocab`).
    texts: title -> full text; defaults to `benchmarks.data.load_austen(data_dir)`.
    train_tokens: token budget of one `train_dataloader()`; None = one pass over the training chunks. (BLD and GKD
        ask `train_stream` for a budget of their own.)
    """

    def __init__(
        self,
        tokenizer,
        *,
        seq_len: int = 256,
        batch_size: int = 8,
        train_tokens: int | None = None,
        texts: Mapping[str, str] | None = None,
        heldout_title: str = HELDOUT_TITLE,
        cache_dir: str | Path | None = None,
        data_dir: str | Path | None = None,
        seed: int = 0,
        train_source: TextSource | None = None,
        heldout_sources: Mapping[str, TextSource] | None = None,
        score_on: str | None = None,
    ):
        super().__init__()
        if seq_len < 2 or batch_size < 1:
            raise ValueError(f"seq_len must be >= 2 and batch_size >= 1, got {seq_len}, {batch_size}")
        self.tokenizer = tokenizer
        self.seq_len = seq_len
        self.batch_size = batch_size
        self.train_tokens = train_tokens
        self.heldout_title = heldout_title
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.data_dir = data_dir
        self.seed = seed
        self.train_source = train_source
        # the scored set first, then the others by name: the same order however the config's keys were ordered
        names = sorted(heldout_sources or {})
        if score_on in names:
            names.remove(score_on)
            names.insert(0, score_on)
        self.heldout_sources = {n: heldout_sources[n] for n in names} if heldout_sources else {}
        self._texts = dict(texts) if texts is not None else None
        self._pending: list[tuple[Path, np.ndarray]] = []  # token caches, written once the sizes are checked
        self.train_chunks: np.ndarray | None = None
        self.heldout_sets: dict[str, np.ndarray] = {}
        self.heldout_chunks: np.ndarray | None = None  # the first held-out set's

    # -- tokenisation (cached) -------------------------------------------------------------------------------------
    def _load_texts(self) -> dict[str, str]:
        if self._texts is None:
            from benchmarks.data import load_austen

            self._texts = load_austen(self.data_dir)
        if self.heldout_title not in self._texts:
            raise ValueError(
                f"held-out title {self.heldout_title!r} is not among the texts {sorted(self._texts)}"
            )
        return self._texts

    def _cached(self, name: str, compute: Callable[[], np.ndarray]) -> np.ndarray:
        path = self.cache_dir / name if self.cache_dir is not None else None
        if path is not None and path.exists():
            return np.load(path)
        arr = compute()
        if path is not None:
            self._pending.append((path, arr))
        return arr

    def _austen_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        texts = self._load_texts()
        h = hashlib.sha256(tokenizer_key(self.tokenizer).encode())
        for title in sorted(texts):
            h.update(title.encode())
            h.update(hashlib.sha256(texts[title].encode()).digest())
        key = f"{h.hexdigest()[:16]}-{self.heldout_title.replace(' ', '_')}"
        eos = self.tokenizer.eos_token_id
        sep = np.asarray([] if eos is None else [eos], dtype=np.int32)
        train = self._cached(
            f"train-{key}.npy",
            lambda: np.concatenate(
                [
                    np.concatenate([_tokenise(self.tokenizer, texts[t]), sep])
                    for t in sorted(texts)
                    if t != self.heldout_title
                ]
            ),
        )
        heldout = self._cached(
            f"heldout-{key}.npy", lambda: _tokenise(self.tokenizer, texts[self.heldout_title])
        )
        return train, heldout

    def _source_array(self, source: TextSource) -> np.ndarray:
        from puzzle.text_sources import sources_key, tokenise_documents

        key = f"{tokenizer_key(self.tokenizer)}-{sources_key(self.tokenizer, [source])}"
        return self._cached(
            f"source-{key}.npy", lambda: tokenise_documents(self.tokenizer, source.documents(self.tokenizer))
        )

    def _token_arrays(self) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """(training tokens, held-out tokens by set name): the user's sources, Austen for what they leave out."""
        for source in [*([self.train_source] if self.train_source else []), *self.heldout_sources.values()]:
            source.check_tokenizer(self.tokenizer)  # before reading anything
        austen = self._austen_arrays() if self.train_source is None or not self.heldout_sources else None
        train = self._source_array(self.train_source) if self.train_source else austen[0]  # type: ignore[index]
        if self.heldout_sources:
            heldout = {name: self._source_array(s) for name, s in self.heldout_sources.items()}
        else:
            heldout = {self.heldout_title: austen[1]}  # type: ignore[index]
        return train, heldout

    def setup(self, stage: str | None = None) -> None:
        if self.train_chunks is not None:
            return
        from puzzle.text_sources import DataSourceError

        train, heldout = self._token_arrays()
        chunks = _chunk(train, self.seq_len)
        if len(chunks) < self.batch_size:
            where = "data.train" if self.train_source else "the training text"
            raise DataSourceError(
                f"{where} has {len(train)} tokens; one batch needs batch_size x seq_len = {self.batch_size} x "
                f"{self.seq_len} = {self.tokens_per_batch}"
            )
        for name, ids in heldout.items():
            if len(ids) // self.seq_len < 2 * self.batch_size:
                raise DataSourceError(
                    f"held-out set {name!r} has {len(ids)} tokens; its score and test halves need at least "
                    f"2 x batch_size x seq_len = 2 x {self.batch_size} x {self.seq_len} = "
                    f"{2 * self.tokens_per_batch}"
                )
        from effinfer_core.atomic import write_atomic

        for path, arr in self._pending:  # only now: a rejected source leaves no cache behind
            write_atomic(path, _npy_bytes(arr))
        self._pending.clear()
        order = np.random.default_rng(self.seed).permutation(len(chunks))
        self.train_chunks = chunks[order]
        self.heldout_sets = {name: _chunk(ids, self.seq_len) for name, ids in heldout.items()}
        self.heldout_chunks = next(iter(self.heldout_sets.values()))

    @property
    def heldout_names(self) -> list[str]:
        """The held-out sets: the scored one (`score_on`) first, then the others by name."""
        self.setup()
        return list(self.heldout_sets)

    # -- budgets ---------------------------------------------------------------------------------------------------
    @property
    def tokens_per_batch(self) -> int:
        return self.batch_size * self.seq_len

    def num_batches(self, tokens: int) -> int:
        """Batches needed to see `tokens` tokens (at least one)."""
        return max(1, math.ceil(tokens / self.tokens_per_batch))

    # -- splits ----------------------------------------------------------------------------------------------------
    def _chunks(self) -> tuple[np.ndarray, np.ndarray]:
        """(train, held-out) chunks, tokenized on first use."""
        self.setup()
        assert self.train_chunks is not None and self.heldout_chunks is not None  # setup sets both
        return self.train_chunks, self.heldout_chunks

    def _heldout_half(self, half: str, name: str | None = None) -> np.ndarray:
        self.setup()
        if name is not None and name not in self.heldout_sets:
            raise ValueError(f"no held-out set {name!r}; sets: {', '.join(self.heldout_sets)}")
        heldout = self.heldout_sets[name] if name is not None else self._chunks()[1]
        mid = len(heldout) // 2
        return heldout[:mid] if half == "score" else heldout[mid:]

    def heldout_batches(
        self, half: str = "test", tokens: int | None = None, name: str | None = None
    ) -> list[torch.Tensor]:
        """Held-out batches in a fixed order: `half` "score" (for the search) or "test" (for evaluation) of the
        held-out set `name` (None = the first)."""
        if half not in ("score", "test"):
            raise ValueError(f"held-out half must be 'score' or 'test', got {half!r}")
        chunks = self._heldout_half(half, name)
        n = len(chunks) // self.batch_size
        if tokens is not None:
            n = min(n, self.num_batches(tokens))
        return [
            torch.from_numpy(chunks[i * self.batch_size : (i + 1) * self.batch_size].astype(np.int64))
            for i in range(n)
        ]

    def num_train_batches(self, tokens: int | None = None) -> int:
        """Batches in a training budget (None = one pass over the training chunks)."""
        train = self._chunks()[0]
        return self.num_batches(tokens if tokens is not None else len(train) * self.seq_len)

    def train_batches(self, tokens: int | None = None, *, start: int = 0) -> Iterator[torch.Tensor]:
        """Training batches for a token budget, from batch `start` on (cycling through the text in a new seeded
        order when it runs out)."""
        train = self._chunks()[0]
        per_pass = len(train) // self.batch_size
        order, order_epoch = np.arange(len(train)), 0
        for i in range(start, self.num_train_batches(tokens)):
            epoch, j = divmod(i, per_pass)
            if epoch != order_epoch:
                order, order_epoch = np.random.default_rng([self.seed, epoch]).permutation(len(order)), epoch
            chunks = train[order[j * self.batch_size : (j + 1) * self.batch_size]]
            yield torch.from_numpy(chunks.astype(np.int64))

    def train_dataloader(self) -> DataLoader:
        """`train_tokens` worth of training batches (Lightning stops after this many steps per epoch)."""
        return self.train_stream(self.train_tokens)

    def train_stream(self, tokens: int | None, trainer: L.Trainer | None = None) -> DataLoader:
        """The training batches of a `tokens` budget that `trainer`'s fit has still to train on.

        Called from a LightningModule's `train_dataloader` hook, which Lightning runs after restoring a checkpoint:
        a resumed fit then starts past the batches it has already trained on (and ends with the weights of an
        uninterrupted one), and each DDP rank takes its own share of the budget's batches.
        """
        if trainer is None:
            return DataLoader(BatchStream(self, tokens), batch_size=None)
        seen = trainer.global_step * trainer.accumulate_grad_batches * trainer.world_size
        return DataLoader(
            BatchStream(self, tokens, start=seen, rank=trainer.global_rank, world_size=trainer.world_size),
            batch_size=None,
        )

    def val_dataloader(self) -> DataLoader:
        return DataLoader(ChunkDataset(self._heldout_half("test")), batch_size=self.batch_size, shuffle=False)


AustenDataModule = TextDataModule  # its name from before user text sources; bld, gkd and tests import it


def _npy_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()
