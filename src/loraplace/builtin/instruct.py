"""An offline instruction benchmark for ``tiny-markov``: prompt-completion tasks with exact
answers, in the model's own vocabulary (see docs/instruct.md).

- ``instruct-recall`` (associative recall): ``<lex> k1 v1 k2 v2 k3 v3 k4 v4 <copy> kq`` ->
  `` vq``, the value stored after the queried key. The answer is somewhere in the prompt,
  found by its key's content: a job for attention (an induction-style lookup).
- ``instruct-map`` (a fixed token mapping): ``<trn> n1 n2 n3 x`` -> `` f(x)``, where ``f``
  is one fixed random permutation of the 64 content tokens and ``n1..n3`` are noise. The
  answer depends only on the last token, through a table: a job for the MLP.
- ``instruct-copy`` (copy at a new offset): ``<cpy> x1 .. x8 <copy>`` -> `` x1``. In
  pretraining a marker started a copy of the token 4 back; here the answer is 8 back:
  where to look changes, a job for attention (the markov-copy shift, as a task).

Each is a JSON Lines file generated from a fixed seed into the loraplace cache on first
use, then read like any user's prompt-completion file.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

from loraplace.builtin import markov
from loraplace.data.cache import cache_dir
from loraplace.data.registry import RegisteredDataset, register_dataset

if TYPE_CHECKING:  # numpy loads when data is made, not when the datasets register
    import numpy as np

VERSION = 1  # bump when the generated examples change
SEED = 20261129
N_EXAMPLES = 2000  # per dataset; 10 % become the val examples the accuracy is measured on
N_PAIRS = 4  # key-value pairs in a recall prompt
N_NOISE = 3  # noise tokens before the mapped one
N_COPY = 8  # tokens before the marker in a copy prompt
INSTRUCT_DATASETS = ("instruct-recall", "instruct-map", "instruct-copy")
_C = markov.CONTENT_TOKENS


def recall_examples(n: int = N_EXAMPLES, seed: int = SEED) -> list[dict]:
    """Keys from t0..t31 (distinct within a prompt), values from t32..t63."""
    import numpy as np

    rng = np.random.default_rng([seed, 1])
    half = len(_C) // 2
    rows = []
    for _ in range(n):
        keys = rng.choice(half, size=N_PAIRS, replace=False)
        values = rng.integers(half, len(_C), size=N_PAIRS)
        q = int(rng.integers(N_PAIRS))
        pairs = " ".join(f"{_C[k]} {_C[v]}" for k, v in zip(keys, values, strict=True))
        prompt = f"{markov.LEX} {pairs} {markov.COPY} {_C[keys[q]]}"
        rows.append({"prompt": prompt, "completion": f" {_C[values[q]]}"})
    return rows


def mapping() -> np.ndarray:
    """The fixed permutation f of the content tokens (f[i] is the image of t{i})."""
    import numpy as np

    return np.random.default_rng([SEED, 2]).permutation(len(_C))


def map_examples(n: int = N_EXAMPLES, seed: int = SEED) -> list[dict]:
    import numpy as np

    rng = np.random.default_rng([seed, 3])
    f = mapping()
    rows = []
    for _ in range(n):
        noise = rng.integers(len(_C), size=N_NOISE)
        x = int(rng.integers(len(_C)))
        prompt = " ".join([markov.TRN, *(_C[i] for i in noise), _C[x]])
        rows.append({"prompt": prompt, "completion": f" {_C[f[x]]}"})
    return rows


def copy_examples(n: int = N_EXAMPLES, seed: int = SEED) -> list[dict]:
    """``<cpy> x1 .. x8 <copy>`` -> `` x1``: the token 8 back, where the base model learnt
    (source process) to copy the one 4 back. One answer token: with four, exact match
    stayed at 0 % for every placement at the default budget while loss still moved."""
    import numpy as np

    rng = np.random.default_rng([seed, 4])
    rows = []
    for _ in range(n):
        xs = [_C[i] for i in rng.integers(len(_C), size=N_COPY)]
        prompt = " ".join([markov.CPY, *xs, markov.COPY])
        rows.append({"prompt": prompt, "completion": f" {xs[0]}"})
    return rows


_GENERATORS = {
    "instruct-recall": recall_examples,
    "instruct-map": map_examples,
    "instruct-copy": copy_examples,
}


def dataset_path(name: str) -> Path:
    """The dataset's JSONL in the cache, generated on first use (atomically)."""
    rows = _GENERATORS[name]()
    text = "".join(json.dumps(r) + "\n" for r in rows)
    digest = hashlib.sha256(text.encode()).hexdigest()[:12]
    path = cache_dir() / "datasets" / f"{name}-v{VERSION}-{digest}.jsonl"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp-{os.getpid()}")
        tmp.write_text(text)
        os.replace(tmp, path)
    return path


def _register() -> None:
    for name in INSTRUCT_DATASETS:
        register_dataset(
            RegisteredDataset(name=name, model="tiny-markov", file=lambda n: str(dataset_path(n)))
        )


_register()
