"""The user's own text: each source format read as written, the config's paths, the errors raised before any stage
runs (and the CLI's exit 2), content-keyed caches and hashes, and evaluate reporting each held-out set."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from puzzle.config import ConfigError, load_config
from puzzle.pipeline import Pipeline
from puzzle.text_sources import DataSourceError, TextSource, parse_sources, tokenise_documents

TEMPLATE = "{% for m in messages %}{{ m['role'] }} : {{ m['content'] }} <eos> {% endfor %}"
CHATS = [
    [
        {"role": "user", "content": "Who was Sir Walter Elliot?"},
        {"role": "assistant", "content": "A man of Kellynch Hall, in Somersetshire."},
    ],
    [{"role": "user", "content": "It is a truth universally acknowledged."}],
]


def _jsonl(path: Path, records) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def _words(austen_texts, title: str, n: int) -> list[str]:
    """`n` pieces of a few words of one text (so every piece is in the tiny tokenizer's vocabulary)."""
    words = austen_texts[title].split()
    return [" ".join(words[i : i + 8]) for i in range(0, 8 * n, 8)]


@pytest.fixture(scope="module")
def tokenizer(tiny_parent):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_parent)


@pytest.fixture(scope="module")
def chat_tokenizer(tiny_parent):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_parent)
    tok.chat_template = TEMPLATE
    return tok


@pytest.fixture(scope="module")
def chat_parent(tmp_path_factory, make_tiny_parent, chat_tokenizer):
    """The tiny parent (same seed, same weights) whose tokenizer has a chat template."""
    path = make_tiny_parent(tmp_path_factory.mktemp("chat_parent"))
    chat_tokenizer.save_pretrained(path)
    return path


def _source(path, **spec) -> TextSource:
    return TextSource.parse("data.train", {"path": str(path), **spec}).resolved()


def _ids(tokenizer, texts) -> list[int]:
    eos = tokenizer.eos_token_id
    return [i for t in texts for i in [*tokenizer(t, add_special_tokens=False)["input_ids"], eos]]


def test_plain_text_file_and_folder(tmp_path, tokenizer):
    (tmp_path / "books" / "b").mkdir(parents=True)
    (tmp_path / "books" / "b" / "2.txt").write_text("Emma Woodhouse, handsome, clever")
    (tmp_path / "books" / "1.txt").write_text("It is a truth universally acknowledged")
    (tmp_path / "books" / "notes.md").write_text("not read")
    folder = _source(tmp_path / "books")
    assert folder.format == "text"
    docs = list(folder.documents(tokenizer))
    # sorted by path: "1.txt" before "b/2.txt"
    assert docs == ["It is a truth universally acknowledged", "Emma Woodhouse, handsome, clever"]
    ids = tokenise_documents(tokenizer, iter(docs))
    assert ids.tolist() == _ids(tokenizer, docs)
    single = _source(tmp_path / "books" / "1.txt")
    assert single.format == "text" and list(single.documents(tokenizer)) == docs[:1]


def test_jsonl_with_a_configurable_field(tmp_path, tokenizer):
    path = _jsonl(
        tmp_path / "c.jsonl", [{"body": "Sir Walter Elliot", "id": 1}, {"body": "of Kellynch Hall"}]
    )
    source = _source(path, field="body")
    assert source.format == "jsonl"
    assert list(source.documents(tokenizer)) == ["Sir Walter Elliot", "of Kellynch Hall"]
    default = _source(_jsonl(tmp_path / "d.jsonl", [{"text": "Emma"}, {}, {"text": "Persuasion"}][::2]))
    assert list(default.documents(tokenizer)) == ["Emma", "Persuasion"]


def test_chat_jsonl_rendered_with_the_chat_template(tmp_path, chat_tokenizer):
    source = _source(_jsonl(tmp_path / "chat.jsonl", [{"messages": m} for m in CHATS]))
    assert source.format == "chat"  # inferred from the records
    docs = list(source.documents(chat_tokenizer))
    assert docs == [chat_tokenizer.apply_chat_template(m, tokenize=False) for m in CHATS]
    assert docs[1] == "user : It is a truth universally acknowledged. <eos> "


def test_hf_saved_dataset_parquet_and_messages_column(tmp_path, tokenizer, chat_tokenizer):
    from datasets import Dataset, DatasetDict

    texts = ["Sir Walter Elliot", "of Kellynch Hall", "in Somersetshire"]
    Dataset.from_dict({"text": texts, "n": [1, 2, 3]}).save_to_disk(str(tmp_path / "saved"))
    saved = _source(tmp_path / "saved")
    assert saved.format == "hf" and list(saved.documents(tokenizer)) == texts
    (tmp_path / "pq").mkdir()
    Dataset.from_dict({"body": texts[::-1]}).to_parquet(str(tmp_path / "pq" / "part-0.parquet"))
    for path in (tmp_path / "pq", tmp_path / "pq" / "part-0.parquet"):
        parquet = _source(path, field="body")
        assert parquet.format == "hf" and list(parquet.documents(tokenizer)) == texts[::-1]
    Dataset.from_dict({"messages": CHATS}).save_to_disk(str(tmp_path / "chats"))
    chats = _source(tmp_path / "chats")  # no "text" column: the "messages" one, rendered
    assert list(chats.documents(chat_tokenizer)) == [
        chat_tokenizer.apply_chat_template(m, tokenize=False) for m in CHATS
    ]
    splits = DatasetDict(
        {"a": Dataset.from_dict({"text": texts[:1]}), "b": Dataset.from_dict({"text": texts})}
    )
    splits.save_to_disk(str(tmp_path / "splits"))
    with pytest.raises(DataSourceError, match="holds splits a, b; set split"):
        list(_source(tmp_path / "splits").documents(tokenizer))
    assert list(_source(tmp_path / "splits", split="a").documents(tokenizer)) == texts[:1]


def test_paths_are_relative_to_the_config_file_that_names_them(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "base.yaml").write_text("data:\n  heldout:\n    wiki: {path: wiki_saved/, format: hf}\n")
    (tmp_path / "sub" / "run.yaml").write_text(
        "extends: ../base.yaml\ndata:\n  seq_len: 16\n  train: {path: corpus.jsonl, format: jsonl}\n"
    )
    data = load_config(tmp_path / "sub" / "run.yaml")["data"]
    assert data["train"] == {"path": str(tmp_path / "sub" / "corpus.jsonl"), "format": "jsonl"}
    assert data["heldout"] == {"wiki": {"path": str(tmp_path / "wiki_saved"), "format": "hf"}}
    assert data["score_on"] == "wiki"  # the first held-out set named, recorded by name
    # no sources: the data section is what it was before sources existed (Austen runs keep their hashes)
    assert load_config({"data": {"seq_len": 16}})["data"] == {"seq_len": 16, "batch_size": 8}


@pytest.fixture
def corpus(tmp_path, austen_texts, tiny_run_config, chat_parent):
    """Factory: a tiny run config on a JSONL training corpus and two held-out sets (JSONL, chat)."""
    train = [t for title, text in austen_texts.items() if title != "Persuasion" for t in [text]]
    _jsonl(tmp_path / "train.jsonl", [{"text": t} for t in train])
    _jsonl(tmp_path / "held.jsonl", [{"text": t} for t in _words(austen_texts, "Persuasion", 20)])
    chats = [[{"role": "user", "content": t}] for t in _words(austen_texts, "Persuasion", 16)]
    _jsonl(tmp_path / "chat.jsonl", [{"messages": m} for m in chats])

    def make(**data):
        spec = {
            "train": str(tmp_path / "train.jsonl"),
            "heldout": {"novel": str(tmp_path / "held.jsonl"), "chat": str(tmp_path / "chat.jsonl")},
            **data,
        }
        return tiny_run_config(chat_parent, data=spec)

    return make


def _pipeline(config, root) -> Pipeline:
    return Pipeline(load_config(config), root, progress=False, log=lambda m: None)


def test_first_heldout_set_is_scored_and_each_set_split(tmp_path, corpus, chat_tokenizer):
    config = load_config(corpus())
    assert config["data"]["score_on"] == "novel"  # named first, though "chat" sorts first
    # the run folder's config.json has its keys sorted: the scored set must not change with that
    reloaded = load_config(json.loads(json.dumps(config, sort_keys=True)))
    assert list(reloaded["data"]["heldout"]) == ["chat", "novel"] and reloaded == config
    pipe = Pipeline(reloaded, tmp_path / "run", progress=False, log=lambda m: None)
    dm = pipe.datamodule()
    assert dm.heldout_names == ["novel", "chat"]
    lines = (tmp_path / "held.jsonl").read_text().splitlines()
    held = _ids(chat_tokenizer, [json.loads(line)["text"] for line in lines])
    score = torch.cat([b.flatten() for b in dm.heldout_batches("score")]).tolist()
    assert score == held[: len(score)]  # the scored set's score half, in order
    chat_test = dm.heldout_batches("test", name="chat")
    chat_score = dm.heldout_batches("score", name="chat")
    assert chat_test and chat_score and not torch.equal(chat_test[0], chat_score[0])
    on_chat = _pipeline(corpus(score_on="chat"), tmp_path / "run2")
    assert on_chat.datamodule().heldout_names == ["chat", "novel"]
    assert on_chat.inputs_hash("score") != pipe.inputs_hash("score")


BAD = {
    "empty file": ("train", "empty.txt", "", "empty.txt is empty"),
    "missing field": (
        "train",
        "c.jsonl",
        '{"text": "Emma"}\n{"body": "Emma"}\n',
        "c.jsonl:2: no field 'text'",
    ),
    "invalid json": ("train", "c.jsonl", '{"text": "Emma"}\n\n{"text": Emma}\n', "c.jsonl:3: not valid JSON"),
    "folder without text": ("train", "folder/x.csv", "a,b\n", "holds no .txt files"),
    "short heldout": (
        "heldout",
        "short.txt",
        "Sir Walter Elliot of Kellynch Hall",
        "held-out set 'short' has 7 tokens; its score and test halves need at least "
        "2 x batch_size x seq_len = 2 x 2 x 16 = 64",
    ),
    "short train": (
        "train",
        "t.txt",
        "Sir Walter Elliot",
        "data.train has 4 tokens; one batch needs batch_size x seq_len = 2 x 16 = 32",
    ),
    "missing path": ("train", None, None, "nowhere.jsonl does not exist"),
    "unknown suffix": ("train", "c.csv", "a,b\n", "cannot tell the format"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_stops_before_any_stage(case, tmp_path, corpus):
    where, name, content, needle = BAD[case]
    path = tmp_path / (name or "nowhere.jsonl")
    if name is not None:
        path.parent.mkdir(exist_ok=True)
        path.write_text(content)
    spec = str(path.parent) if case == "folder without text" else str(path)
    data = {"train": spec} if where == "train" else {"heldout": {"short": spec}}
    run = tmp_path / "run"
    with pytest.raises(DataSourceError) as err:
        _pipeline(corpus(**data), run)
    assert needle in str(err.value)
    assert not run.exists() or not any(run.iterdir())  # nothing written: no tokens, no manifest


def test_a_key_left_out_falls_back_to_austen(tmp_path, corpus, austen_texts, chat_tokenizer):
    from puzzle.data import AustenDataModule

    config = load_config(corpus())
    del config["data"]["train"]  # the user's held-out sets, Austen's training text
    pipe = Pipeline(config, tmp_path / "run", texts=austen_texts, progress=False, log=lambda m: None)
    austen = AustenDataModule(chat_tokenizer, seq_len=16, batch_size=2, texts=austen_texts)
    austen.setup()
    assert np.array_equal(pipe.datamodule().train_chunks, austen.train_chunks)
    assert pipe.datamodule().heldout_names == ["novel", "chat"]


def test_chat_needs_a_chat_template(tmp_path, corpus, tiny_parent):
    config = corpus()
    config["parent"] = str(tiny_parent)  # its tokenizer has no chat template
    with pytest.raises(
        DataSourceError, match="data.heldout.chat: chat-formatted .* needs a tokenizer with a chat"
    ):
        _pipeline(config, tmp_path / "run")


def test_malformed_specs_are_config_errors(tmp_path):
    for data, needle in (
        ({"train": {"path": "a.jsonl", "format": "xml"}}, "data.train.format 'xml' is not one of"),
        ({"train": {"path": "a.jsonl", "fild": "x"}}, "unknown key(s) ['fild']"),
        ({"heldout": {"a b": "x.txt"}}, "set name 'a b'"),
        ({"heldout": ["x.txt"]}, "data.heldout must map set names"),
        ({"heldout": {"a": "x.txt"}, "score_on": "b"}, "data.score_on 'b' is not a held-out set"),
    ):
        with pytest.raises(ConfigError) as err:
            load_config({"data": data})
        assert needle in str(err.value)


def test_cli_bad_source_is_one_error_line_and_exit_2(tmp_path, corpus, capsys):
    from puzzle.cli import main

    config = corpus(train=str(tmp_path / "nowhere.jsonl"))
    (tmp_path / "cfg.json").write_text(json.dumps(config))
    run = tmp_path / "run"
    capsys.readouterr()
    assert main(["run", str(tmp_path / "cfg.json"), "--run-dir", str(run), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"error: data.train: {tmp_path / 'nowhere.jsonl'} does not exist"
    assert not (run / "config.json").exists() and not (run / "manifest.json").exists()


def test_tokens_and_stage_hashes_are_keyed_by_content(tmp_path, corpus):
    config = corpus()
    pipe = _pipeline(config, tmp_path / "run")
    before = {s: pipe.inputs_hash(s) for s in ("library", "bld", "score", "measure", "gkd", "evaluate")}
    caches = set((tmp_path / "run" / "tokens").glob("*.npy"))
    assert len(caches) == 3  # one per source
    assert (
        _pipeline(config, tmp_path / "run").inputs_hash("library") == before["library"]
    )  # same text, same hash
    with open(tmp_path / "train.jsonl", "a") as f:  # same path, one more record
        f.write(json.dumps({"text": "Anne Elliot"}) + "\n")
    after = _pipeline(config, tmp_path / "run")
    for stage in ("library", "bld", "score", "gkd", "evaluate"):
        assert after.inputs_hash(stage) != before[stage], stage
    assert after.inputs_hash("measure") == before["measure"]  # reads no text
    new = set((tmp_path / "run" / "tokens").glob("*.npy")) - caches
    assert len(new) == 1  # the edited source tokenised again, the two held-out sets read from their caches
    assert np.load(next(iter(new)))[-3:].tolist()[-1] == after.datamodule().tokenizer.eos_token_id


def test_evaluate_reports_each_heldout_set(tmp_path, corpus):
    torch.set_num_threads(1)
    messages: list[str] = []
    config = corpus()
    config.update(baselines=[], targets=["1.5x"])
    pipe = Pipeline(load_config(config), tmp_path / "run", progress=False, log=messages.append)
    pipe.run_all()
    results = pipe.run.read_json("evaluate/evaluate.json")
    assert set(results) == {"parent", "puzzle-1.5x"}
    for r in results.values():
        assert set(r["heldout"]) == {"novel", "chat"}  # evaluate.json's keys are sorted
        novel, chat = r["heldout"]["novel"], r["heldout"]["chat"]
        assert novel["top1_accuracy"] == r["top1_accuracy"] and novel["kl"] == r["kl"]  # the first set on top
        assert chat["lm_loss"] != novel["lm_loss"]  # another text, measured on its own
    assert results["parent"]["heldout"]["chat"]["kl"] == pytest.approx(0.0, abs=1e-5)
    assert results["puzzle-1.5x"]["heldout"]["chat"]["kl"] > 0
    log = "\n".join(messages)
    assert "held-out set 'novel'" in log and "held-out set 'chat'" in log


def test_parse_sources_keeps_the_config_order():
    train, heldout = parse_sources({"heldout": {"z": "z.txt", "a": {"path": "a.jsonl", "field": "body"}}})
    assert train is None and list(heldout) == ["z", "a"] and heldout["a"].field == "body"
