"""The registry of named datasets: built-ins (and any plug-in) register themselves here.

A registered dataset is served one of three ways:
- ``blocks``: it makes its own token blocks, already in a model's vocabulary (the synthetic
  Markov data, whose blocks carry the exact floor); no tokenizer is involved;
- ``source``: it yields documents that ``load_blocks`` tokenises, packs, splits and caches
  like any local file;
- ``file``: it writes instruction data (prompt-completion or messages) to a local file that
  ``load_blocks`` reads by its format, like a user's file.

Nothing here knows which datasets exist: ``loraplace.builtin`` registers its own when the
package is imported, as it registers its models.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from loraplace.data.blocks import Blocks
    from loraplace.data.sources import TextSource


@dataclass(frozen=True)
class RegisteredDataset:
    """A dataset known by name.

    blocks: ``(name, block_size, *, data_seed, holdout, n_train=...) -> Blocks`` for data that is
        already token ids (no tokenizer); exactly one of ``blocks`` and ``source`` is set.
    source: ``name -> TextSource`` for documents the model's tokenizer reads.
    file: ``name -> path`` of a local instruction-data file it writes (prompt-completion or
        messages records), read by format like a user's file (data/formats.py).
    model: the built-in model it goes with: its vocabulary (``blocks``) or the default
        tokenizer (``source``) when no model is named.
    retain: the base model's own distribution, to measure forgetting on after adapting
        to this dataset; None when there is none.
    fixed_split: ``file`` records carry ``split`` (``train``, ``val`` or ``test``): the
        dataset's own split, the same for every study (``data.val_fraction`` and
        ``train.split_seed`` do not move it; any ``train.test_fraction`` above 0 serves
        its test records as the test split, and they are never trained on).
    """

    name: str
    model: str
    blocks: Callable[..., Blocks] | None = None
    source: Callable[[str], TextSource] | None = None
    retain: str | None = None
    file: Callable[[str], str] | None = None
    fixed_split: bool = False

    def __post_init__(self) -> None:
        if sum(x is not None for x in (self.blocks, self.source, self.file)) != 1:
            raise ValueError(f"dataset {self.name!r}: give exactly one of blocks, source, file")
        if self.fixed_split and self.file is None:
            raise ValueError(f"dataset {self.name!r}: fixed_split needs file records")

    @property
    def pretokenized(self) -> bool:
        """True when the dataset makes its own blocks (ids in its model's vocabulary)."""
        return self.blocks is not None


DATASETS: dict[str, RegisteredDataset] = {}


def register_dataset(dataset: RegisteredDataset) -> None:
    """Make a dataset available by name (registering the same name again replaces it)."""
    DATASETS[dataset.name] = dataset


def registered_dataset(name: str) -> RegisteredDataset | None:
    """The registered dataset called ``name``, or None (a file, a hub id, or unknown)."""
    return DATASETS.get(name)


def builtin_datasets() -> list[str]:
    """Names of every registered dataset, in registration order."""
    return list(DATASETS)
