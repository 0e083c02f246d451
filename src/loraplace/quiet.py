"""Third-party chatter off: a study's stderr carries loraplace's own lines only.

transformers draws a "Loading weights" bar on every load, warns through its logger when a
tokenizer sees a document longer than the model's context (loraplace packs documents into
blocks, so that is expected), and generate() warns about attention masks and pad tokens.
None of it is about the user's study, and each line used to land before or beside
loraplace's own one-line error or progress.
"""

from __future__ import annotations


def quiet_transformers() -> None:
    """transformers' progress bars off and its logger at errors only (process-wide: called
    where loraplace loads a model or tokenizer, before the load)."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
