"""The synthetic benchmark: Markov processes with copy markers, and their exact oracle.

Every block is one fresh document of exactly ``block_size`` tokens. Position 0 holds a task
token (never scored); positions 1.. are drawn from the process the task token names. The
oracle knows each token's exact probability given everything before it in the block, so the
mean oracle NLL over the scored val tokens is the Bayes-optimal loss on exactly those tokens:
the floor no model can beat. See docs/benchmark.md for the full description.

The process, at every position t >= 1 of a block x:
- if t falls inside a copy (the ``copy_len`` positions right after a marker at m), emit
  ``x[m - copy_back + j]`` for the j-th copied token: probability 1;
- else, if t is *eligible* (the ``window`` positions before t are all content tokens), emit the
  copy marker with probability ``p_copy``;
- else emit the next state of an order-1 chain over the content tokens from ``x[t-1]``
  (renormalised by ``1 - p_copy`` at eligible positions); at t = 1 the state is uniform.

Source and targets differ only in the transition matrix and ``copy_back``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

from loraplace.data.registry import RegisteredDataset, register_dataset
from loraplace.errors import UserError, closest

if TYPE_CHECKING:  # numpy and torch load when data is made, not when the datasets register
    import numpy as np

    from loraplace.data.blocks import Blocks

# Bump when the generated tokens or the tiny-markov pretraining recipe change: it is part of
# the data fingerprint and of the built-in model's cache directory name (tests pin a hash of
# both, so a change without a bump fails). v1 was a draft with p_copy = 0.08.
GENERATOR_VERSION = 2

N_CONTENT = 64
CONTENT_TOKENS = tuple(f"t{i}" for i in range(N_CONTENT))
EOS, COPY, SRC, LEX, TRN, CPY, UNK = "<eos>", "<copy>", "<src>", "<lex>", "<trn>", "<cpy>", "<unk>"
SPECIAL_TOKENS = (EOS, COPY, SRC, LEX, TRN, CPY, UNK)
# Token string -> id, exactly as the tiny-markov tokenizer maps them (pretrain.py builds the
# tokenizer from this very dict, so generated ids and tokenizer ids cannot disagree).
VOCAB: dict[str, int] = {tok: i for i, tok in enumerate(CONTENT_TOKENS + SPECIAL_TOKENS)}
VOCAB_SIZE = len(VOCAB)
EOS_ID, COPY_ID = VOCAB[EOS], VOCAB[COPY]

MARKOV_DATASETS = (
    "markov-source",
    "markov-lexical",
    "markov-transition",
    "markov-copy",
    "markov-mix",
)
# Processes by name, with the task token that starts their blocks.
PROCESS_TASK_TOKEN = {"source": SRC, "lexical": LEX, "transition": TRN, "copy": CPY}
TARGETS = ("lexical", "transition", "copy")  # the processes markov-mix draws from
# Tokens the base model sees at position 0 in pretraining: all of them, as interchangeable
# document starts (like reserved tokens of a real vocabulary), so none is out of
# distribution for it; what they mean is what adaptation has to learn.
START_TOKEN_IDS = tuple(VOCAB[t] for t in PROCESS_TASK_TOKEN.values())


@dataclass(frozen=True)
class MarkovParams:
    """Generator parameters: one fixed set defines the benchmark (recorded in Blocks.info)."""

    n_content: int = N_CONTENT  # content tokens t0..t{n-1}
    alpha: float = 0.1  # Dirichlet concentration of each transition row (small = peaked)
    chain_seed: int = 20240611  # seed of the transition matrices and relabelling: the "world"
    p_copy: float = 0.15  # probability of a copy marker at each eligible position
    copy_len: int = 4  # tokens copied after a marker
    source_copy_back: int = 4  # source copies x[m-4 .. m-1]: the 4 tokens right before marker m
    target_copy_back: int = 8  # copy target copies x[m-8 .. m-5] instead
    lexical_n: int = 16  # content tokens relabelled (cyclically) by the lexical target
    transition_frac: float = 0.25  # share of previous-token contexts with new rows

    @property
    def window(self) -> int:
        """Positions before a marker that must be content tokens: the farthest any copy reads."""
        return max(self.source_copy_back, self.target_copy_back)


DEFAULT_PARAMS = MarkovParams()


@dataclass(frozen=True)
class Process:
    """One process: transition matrix, copy rule and the task token that starts its blocks."""

    name: str
    P: np.ndarray  # float64 [n_content, n_content], rows sum to 1
    copy_back: int
    task_id: int


def _world(params: MarkovParams) -> dict[str, Process]:
    """Build the source and target processes from the fixed chain seed."""
    import numpy as np

    n = params.n_content
    rng = np.random.default_rng(params.chain_seed)
    P = rng.dirichlet(np.full(n, params.alpha), size=n)
    # Lexical: relabel lexical_n tokens cyclically, sigma(s_i) = s_{i+1}; the relabelled chain
    # is P_lex[sigma(a), sigma(b)] = P[a, b], so every relabelled token is a different token.
    chosen = rng.permutation(n)[: params.lexical_n]
    sigma = np.arange(n)
    sigma[chosen] = np.roll(chosen, -1)
    P_lex = np.empty_like(P)
    P_lex[np.ix_(sigma, sigma)] = P
    # Transition: fresh rows for a share of contexts ("new facts" about those tokens).
    n_new = round(params.transition_frac * n)
    new_rows = np.sort(rng.permutation(n)[:n_new])
    P_trn = P.copy()
    P_trn[new_rows] = rng.dirichlet(np.full(n, params.alpha), size=n_new)
    sb, tb = params.source_copy_back, params.target_copy_back
    return {
        "source": Process("source", P, sb, VOCAB[SRC]),
        "lexical": Process("lexical", P_lex, sb, VOCAB[LEX]),
        "transition": Process("transition", P_trn, sb, VOCAB[TRN]),
        "copy": Process("copy", P, tb, VOCAB[CPY]),
    }


_WORLDS: dict[MarkovParams, dict[str, Process]] = {}


def world(params: MarkovParams = DEFAULT_PARAMS) -> dict[str, Process]:
    """The processes of one parameter set, by name (cached: building them is deterministic)."""
    if params not in _WORLDS:
        _WORLDS[params] = _world(params)
    return _WORLDS[params]


def sample(
    processes: list[Process],
    which: np.ndarray,
    length: int,
    rng: np.random.Generator,
    params: MarkovParams = DEFAULT_PARAMS,
    init: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Sample blocks and the oracle NLL of each of their tokens, vectorised over blocks.

    which: int [n] index into ``processes`` of each block's process.
    init: distribution of the content token at position 1 (default uniform).
    Returns tokens int64 [n, length] and NLL float64 [n, length - 1] (positions 1..).
    """
    import numpy as np

    n_blocks = len(which)
    n = params.n_content
    Ps = np.stack([p.P for p in processes])  # [n_proc, n, n]
    cum = np.cumsum(Ps, axis=-1)
    cum[..., -1] = 1.0  # guard against rounding: the last state always catches u < 1
    back = np.array([p.copy_back for p in processes])[which]
    init_p = np.full(n, 1.0 / n) if init is None else np.asarray(init, dtype=np.float64)
    init_cum = np.cumsum(init_p)
    init_cum[-1] = 1.0
    rows = np.arange(n_blocks)
    log_p, log_q = np.log(params.p_copy or 1.0), np.log1p(-params.p_copy)

    x: np.ndarray = np.zeros((n_blocks, length), dtype=np.int64)
    x[:, 0] = np.array([p.task_id for p in processes])[which]
    nll: np.ndarray = np.zeros((n_blocks, length - 1), dtype=np.float64)
    last_marker = np.full(n_blocks, -(10**9))
    for t in range(1, length):
        # Draw both uniforms every step for every block: the stream stays aligned whatever
        # each block does, so a block's tokens never depend on the other blocks.
        u_marker, u_next = rng.random(n_blocks), rng.random(n_blocks)
        since: np.ndarray = t - last_marker
        copying = since <= params.copy_len
        eligible = ~copying & (t - params.window >= 1) & (last_marker < t - params.window)
        marker = eligible & (u_marker < params.p_copy)
        if t == 1:
            nxt = np.searchsorted(init_cum, u_next, side="right")
            step_nll = -np.log(init_p[nxt])
        else:
            # Rows inside a copy have a marker as prev; their chain draw is computed and dropped.
            prev = np.minimum(x[:, t - 1], n - 1)
            nxt = (cum[which, prev] <= u_next[:, None]).sum(axis=1)
            step_nll = -np.log(Ps[which, prev, nxt]) - np.where(eligible, log_q, 0.0)
        src = np.clip(last_marker - back + (since - 1), 0, length - 1)
        copied = x[rows, src]
        x[:, t] = np.where(copying, copied, np.where(marker, COPY_ID, nxt))
        nll[:, t - 1] = np.where(copying, 0.0, np.where(marker, -log_p, step_nll))
        last_marker = np.where(marker, t, last_marker)
    return x, nll


def oracle_nll(
    tokens: np.ndarray, params: MarkovParams = DEFAULT_PARAMS, init: np.ndarray | None = None
) -> np.ndarray:
    """The oracle's NLL of every token at positions 1.. of given blocks (float64 [n, L-1]).

    Each block's process is read from its task token at position 0. A token the process
    cannot emit gets NLL inf (a wrong copied token, a marker at an ineligible position).
    """
    import numpy as np

    tokens = np.asarray(tokens, dtype=np.int64)
    procs = list(world(params).values())
    by_task = {p.task_id: i for i, p in enumerate(procs)}
    try:
        which = np.array([by_task[int(tid)] for tid in tokens[:, 0]])
    except KeyError as exc:
        raise ValueError(f"block starts with token id {exc.args[0]}, not a task token") from None
    n_blocks, length = tokens.shape
    n = params.n_content
    Ps = np.stack([p.P for p in procs])
    back = np.array([p.copy_back for p in procs])[which]
    init_p = np.full(n, 1.0 / n) if init is None else np.asarray(init, dtype=np.float64)
    rows = np.arange(n_blocks)
    log_p, log_q = np.log(params.p_copy or 1.0), np.log1p(-params.p_copy)
    nll = np.zeros((n_blocks, length - 1), dtype=np.float64)
    last_marker = np.full(n_blocks, -(10**9))
    with np.errstate(divide="ignore"):
        for t in range(1, length):
            cur = tokens[:, t]
            since = t - last_marker
            copying = since <= params.copy_len
            eligible = ~copying & (t - params.window >= 1) & (last_marker < t - params.window)
            is_marker = cur == COPY_ID
            content = np.clip(cur, 0, n - 1)
            if t == 1:
                chain_nll = -np.log(init_p[content])
            else:
                prev = np.clip(tokens[:, t - 1], 0, n - 1)
                chain_nll = -np.log(Ps[which, prev, content]) - np.where(eligible, log_q, 0.0)
            chain_nll = np.where(cur < n, chain_nll, np.inf)
            src = np.clip(last_marker - back + (since - 1), 0, length - 1)
            copy_nll = np.where(cur == tokens[rows, src], 0.0, np.inf)
            marker_nll = np.where(eligible, -log_p, np.inf)
            nll[:, t - 1] = np.where(copying, copy_nll, np.where(is_marker, marker_nll, chain_nll))
            last_marker = np.where(is_marker & ~copying, t, last_marker)
    return nll


def stationary(P: np.ndarray) -> np.ndarray:
    """Stationary distribution pi of a chain (pi P = pi)."""
    import numpy as np

    vals, vecs = np.linalg.eig(P.T)
    pi = np.real(vecs[:, np.argmin(np.abs(vals - 1.0))])
    return pi / pi.sum()


def entropy_rate(P: np.ndarray) -> float:
    """Analytic entropy rate sum_i pi_i H(P_i) of a chain, in nats."""
    import numpy as np

    with np.errstate(divide="ignore", invalid="ignore"):
        row_h = -np.nansum(np.where(P > 0, P * np.log(P), 0.0), axis=1)
    return float(stationary(P) @ row_h)


def _stream(data_seed: int, name: str, split: str) -> np.random.Generator:
    """An independent random stream per (seed, dataset, split): val never depends on n_train."""
    import numpy as np

    code = int.from_bytes(hashlib.sha256(f"{name}/{split}".encode()).digest()[:4], "little")
    return np.random.default_rng([data_seed, code])


def _processes_of(name: str, params: MarkovParams) -> list[Process]:
    w = world(params)
    if name == "markov-mix":
        return [w[t] for t in TARGETS]
    return [w[name.removeprefix("markov-")]]


def generate(
    name: str,
    n: int,
    block_size: int,
    split: str,
    data_seed: int = 0,
    params: MarkovParams = DEFAULT_PARAMS,
) -> tuple[np.ndarray, np.ndarray]:
    """Tokens [n, block_size] and oracle NLL [n, block_size-1] of one split of a dataset."""
    rng = _stream(data_seed, name, split)
    procs = _processes_of(name, params)
    which = rng.integers(len(procs), size=n)  # the task of each block (markov-mix: uniform)
    return sample(procs, which, block_size, rng, params)


def pretrain_tokens(
    n: int, block_size: int, seed: int, params: MarkovParams = DEFAULT_PARAMS
) -> np.ndarray:
    """Source-process blocks for pretraining, each starting with a random task token."""
    import numpy as np

    rng = _stream(seed, "pretrain", "train")
    x, _ = sample([world(params)["source"]], np.zeros(n, dtype=np.int64), block_size, rng, params)
    x[:, 0] = rng.choice(np.array(START_TOKEN_IDS), size=n)
    return x


def markov_blocks(
    name: str,
    block_size: int = 128,
    *,
    n_train: int = 8192,
    n_val: int = 256,
    data_seed: int = 0,
    holdout: str = "val",
) -> Blocks:
    """Train/val blocks of a built-in Markov dataset, one document per block, with the floor.

    The train and val splits come from independent random streams of ``data_seed``; the val
    blocks' oracle NLL (``val_oracle_nll``) gives the exact floor on exactly those tokens.
    holdout: "test" puts the test stream (independent of train and val) where val would be.
    """
    if name not in MARKOV_DATASETS:
        raise UserError(
            f"unknown built-in dataset {name!r}{closest(name, MARKOV_DATASETS)}: "
            f"choose one of {', '.join(MARKOV_DATASETS)}"
        )
    if block_size < 2:
        raise UserError(f"block size {block_size} is too small: use at least 2 tokens")
    if n_train < 1 or n_val < 1:
        raise UserError(f"need at least one train and one val block (got {n_train}, {n_val})")
    import torch

    from loraplace.data.blocks import Blocks

    params = DEFAULT_PARAMS
    train, _ = generate(name, n_train, block_size, "train", data_seed, params)
    val, val_nll = generate(name, n_val, block_size, holdout, data_seed, params)
    info = {
        "generator": "markov",
        "generator_version": GENERATOR_VERSION,
        "params": asdict(params),
        "processes": [p.name for p in _processes_of(name, params)],
        "task_tokens": {p.name: p.task_id for p in _processes_of(name, params)},
        "data_seed": data_seed,
        "floor": float(val_nll.mean()),
    }
    if holdout != "val":  # the val blocks keep the fingerprint they always had
        info["holdout"] = holdout
    key = json.dumps(
        {"name": name, "block_size": block_size, "n_train": n_train, "n_val": n_val, **info},
        sort_keys=True,
    )
    return Blocks(
        name=name,
        train=torch.from_numpy(train),
        val=torch.from_numpy(val),
        fingerprint=hashlib.sha256(key.encode()).hexdigest()[:16],
        n_docs=n_train + n_val,
        n_tokens=(n_train + n_val) * block_size,
        val_oracle_nll=torch.from_numpy(val_nll),
        info=info,
    )


def retain_dataset_for(name: str) -> str | None:
    """The base-distribution dataset to measure forgetting on after adapting to ``name``."""
    if name in MARKOV_DATASETS and name != "markov-source":
        return "markov-source"
    return None


for _name in MARKOV_DATASETS:
    register_dataset(
        RegisteredDataset(
            name=_name,
            model="tiny-markov",
            blocks=markov_blocks,
            retain=retain_dataset_for(_name),
        )
    )
