"""Shared fixtures of the pipeline-side Puzzle tests: a random tiny Llama saved as an HF folder with a word-level
tokenizer trained on a few Austen openings (no downloads), the texts themselves, and a seconds-long run config.

Fixtures: `austen_texts` (title -> text), `tiny_parent` (session-wide parent folder), `make_tiny_parent(path, ...)`
(factory for other parents) and `tiny_config(parent, **overrides)` (factory for run configs).
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

TEXTS = {
    "Sense & Sensibility": (
        "The family of Dashwood had long been settled in Sussex. Their estate was large, and their residence was at "
        "Norland Park, in the centre of their property, where, for many generations, they had lived in so "
        "respectable a manner as to engage the general good opinion of their surrounding acquaintance."
    ),
    "Pride & Prejudice": (
        "It is a truth universally acknowledged, that a single man in possession of a good fortune, must be in want "
        "of a wife. However little known the feelings or views of such a man may be on his first entering a "
        "neighbourhood, this truth is so well fixed in the minds of the surrounding families, that he is considered "
        "the rightful property of some one or other of their daughters."
    ),
    "Mansfield Park": (
        "About thirty years ago Miss Maria Ward, of Huntingdon, with only seven thousand pounds, had the good luck "
        "to captivate Sir Thomas Bertram, of Mansfield Park, in the county of Northampton, and to be thereby raised "
        "to the rank of a baronet's lady, with all the comforts and consequences of an handsome house and large "
        "income."
    ),
    "Emma": (
        "Emma Woodhouse, handsome, clever, and rich, with a comfortable home and happy disposition, seemed to unite "
        "some of the best blessings of existence; and had lived nearly twenty-one years in the world with very "
        "little to distress or vex her. She was the youngest of the two daughters of a most affectionate, "
        "indulgent father."
    ),
    "Northanger Abbey": (
        "No one who had ever seen Catherine Morland in her infancy would have supposed her born to be an heroine. "
        "Her situation in life, the character of her father and mother, her own person and disposition, were all "
        "equally against her. Her father was a clergyman, without being neglected, or poor, and a very respectable "
        "man."
    ),
    "Persuasion": (
        "Sir Walter Elliot, of Kellynch Hall, in Somersetshire, was a man who, for his own amusement, never took up "
        "any book but the Baronetage; there he found occupation for an idle hour, and consolation in a distressed "
        "one; there his faculties were roused into admiration and respect, by contemplating the limited remnant of "
        "the earliest patents; there any unwelcome sensations, arising from domestic affairs changed naturally "
        "into pity and contempt as he turned over the almost endless creations of the last century; and there, if "
        "every other leaf were powerless, he could read his own history with an interest which never failed. This "
        "was the page at which the favourite volume always opened: Elliot of Kellynch Hall. Walter Elliot, born "
        "March 1, 1760, married, July 15, 1784, Elizabeth, daughter of James Stevenson, Esq. of South Park, in the "
        "county of Gloucester, by which lady (who died 1800) he has issue Elizabeth, born June 1, 1785; Anne, born "
        "August 9, 1787; a still-born son, November 5, 1789; Mary, born November 20, 1791."
    ),
}


def make_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(TEXTS.values(), trainers.WordLevelTrainer(special_tokens=["[UNK]", "<eos>"]))
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="[UNK]", eos_token="<eos>", pad_token="<eos>"
    )


def make_parent(path: Path, *, seed: int = 0, layers: int = 4, model_type: str = "llama") -> Path:
    """Random tiny Llama (hidden 64, 4 heads / 2 KV heads, FFN 128) + tokenizer saved as an HF folder."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = make_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        max_position_embeddings=256,
        tie_word_embeddings=True,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    with torch.no_grad():  # larger weights than the 0.02 init, so children differ measurably from the parent
        for p in model.parameters():
            if p.ndim == 2:
                p.normal_(0, 0.15)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    if model_type != "llama":  # same weights, another architecture name (for the not-Llama-family error)
        cfg = json.loads((path / "config.json").read_text())
        cfg.update(model_type=model_type, architectures=["GPT2LMHeadModel"])
        (path / "config.json").write_text(json.dumps(cfg))
    return path


def tiny_config(parent: Path, **over) -> dict:
    """A run config small enough for seconds-long pipeline tests."""
    config = {
        "parent": str(parent),
        "seed": 0,
        "data": {"seq_len": 16, "batch_size": 2},
        "search_space": {
            "kv_heads": [1],
            "ffn_fractions": [0.5],
            "attention_linear": True,
            "attention_no_op": True,
            "ffn_linear": False,
            "ffn_no_op": True,
            "kv_init": "mean_pool",
            "ffn_init": "activation",
        },
        "library": {"calib_tokens": 64},
        "bld": {"mode": "decoupled", "token_budget": 128, "lr": 1e-3},
        "score": {"tokens": 64},
        "scenario": {"batch": 1, "prefill": 8, "decode": 4, "dtype": "float32"},
        "measure": {
            "warmup": 1,
            "iters": 3,
            "check_machine": False,
        },  # tiny models time noisily; see test_machine_checks
        "targets": ["1.2x", "1.5x"],  # at 1.5x ShortGPT overshoots, so the search adds a matched Puzzle child
        "gkd": {"token_budget": 96, "lr": 1e-3, "checkpoint_every": 2},
        "evaluate": {"tokens": 64, "warmup": 1, "iters": 2},
        "trainer": {"accelerator": "cpu", "devices": 1},
    }
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(config.get(key), dict):
            config[key] = {**config[key], **value}
        else:
            config[key] = value
    return config


@pytest.fixture(scope="session")
def austen_texts() -> dict[str, str]:
    return dict(TEXTS)


@pytest.fixture(scope="session")
def tiny_parent(tmp_path_factory) -> Path:
    torch.set_num_threads(1)
    return make_parent(tmp_path_factory.mktemp("tiny_parent"))


@pytest.fixture(scope="session")
def make_tiny_parent():
    return make_parent


@pytest.fixture(scope="session")
def load_tiny_llama(tmp_path_factory):
    """Factory: a seeded random LlamaForCausalLM of the given config, saved and loaded back as a DeciLM parent."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from puzzle.parent import load_parent

    def load(config: dict):
        torch.set_num_threads(1)
        path = tmp_path_factory.mktemp("parent")
        torch.manual_seed(0)
        LlamaForCausalLM(LlamaConfig(**config)).save_pretrained(path)
        return load_parent(path)[0]

    return load


@pytest.fixture(scope="session")
def tiny_run_config():
    return tiny_config


@pytest.fixture
def no_in_memory_checkpoints(monkeypatch):
    """Fails a test whose checkpoints go through Lightning's in-memory buffer instead of `FileCheckpointIO`."""
    from lightning.fabric.plugins.io import torch_io

    def in_memory(*args, **kwargs):
        raise AssertionError(
            "checkpoint serialised in memory (Lightning's TorchCheckpointIO), not streamed to disk"
        )

    monkeypatch.setattr(torch_io, "_atomic_save", in_memory)


@pytest.fixture
def kill_fit_at_step(monkeypatch):
    """`with kill_fit_at_step(ModuleClass, k):` a fit of that LightningModule dies, as from Ctrl-C, at global step k."""

    @contextmanager
    def kill(module_cls, step: int):
        real = module_cls.training_step

        def dying(self, batch, batch_idx):
            if self.trainer.global_step == step:
                raise KeyboardInterrupt("killed")
            return real(self, batch, batch_idx)

        with monkeypatch.context() as m:
            m.setattr(module_cls, "training_step", dying)
            yield

    return kill
