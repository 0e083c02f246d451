"""The dataset registry: a registered dataset is served by name, and data/ never imports
builtin/ (the built-ins register themselves)."""

from __future__ import annotations

import ast
import pathlib

import pytest
import torch

from loraplace.data import (
    Blocks,
    RegisteredDataset,
    builtin_datasets,
    dataset_kind,
    load_blocks,
    register_dataset,
    retain_dataset_for,
)
from loraplace.data.registry import DATASETS

DATA_DIR = pathlib.Path(__file__).parents[1] / "src" / "loraplace" / "data"


@pytest.fixture
def counting_dataset():
    calls = []

    def blocks(name, block_size, *, data_seed=0, holdout="val", n_train=4):
        calls.append((name, block_size, data_seed, n_train))
        ids = torch.arange(n_train * block_size).reshape(n_train, block_size) % 7
        return Blocks(name, ids, ids[:1], f"fp-{data_seed}", n_train, ids.numel())

    register_dataset(RegisteredDataset("counting", "tiny-markov", blocks=blocks, retain="base"))
    yield calls
    del DATASETS["counting"]


def test_a_registered_dataset_is_served_by_name(counting_dataset):
    blocks = load_blocks("counting", None, 5, split_seed=3, n_train=2)
    assert counting_dataset == [("counting", 5, 3, 2)]
    assert blocks.train.tolist() == [[0, 1, 2, 3, 4], [5, 6, 0, 1, 2]]
    assert blocks.fingerprint == "fp-3"
    assert retain_dataset_for("counting") == "base"
    assert dataset_kind("counting") == "builtin"
    assert builtin_datasets()[-1] == "counting"


def test_the_builtins_register_themselves():
    assert builtin_datasets()[:9] == [
        "markov-source",
        "markov-lexical",
        "markov-transition",
        "markov-copy",
        "markov-mix",
        "python-stdlib",
        "python-docs",
        "instruct-recall",
        "instruct-map",
    ]
    assert [DATASETS[n].pretokenized for n in ("markov-mix", "python-docs")] == [True, False]
    assert retain_dataset_for("markov-copy") == "markov-source"
    assert retain_dataset_for("markov-source") is None


def test_a_dataset_needs_exactly_one_way_to_be_served():
    with pytest.raises(ValueError, match="exactly one of blocks, source, file"):
        RegisteredDataset("nothing", "tiny-markov")


def _imported_modules(path: pathlib.Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
    return names


@pytest.mark.parametrize("path", sorted(DATA_DIR.glob("*.py")), ids=lambda p: p.name)
def test_data_never_imports_builtin(path):
    assert not {m for m in _imported_modules(path) if m.startswith("loraplace.builtin")}
