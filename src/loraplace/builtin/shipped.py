"""Built-in weights shipped inside the package, with the fingerprint that pins them.

Pretraining tiny-markov took 106 s of a newcomer's 369 s first run on 2 cores, for 3.3 MB
of weights. So the package carries them, written by ``save_pretrained`` (safetensors,
tokenizer, config) into ``builtin/weights/<name>-<version>/``, and they load with
``from_pretrained`` like any model. Pretraining stays the way to make them:

    python -m loraplace.builtin.regenerate tiny-markov   # regenerate into the package

records the weights' fingerprint (a SHA-256 over every tensor's name, dtype, shape and
bytes) and held-out loss in ``loraplace_builtin.json``; the tests check the shipped files
against that record, and a regeneration against the shipped record.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

WEIGHTS_DIR = Path(__file__).parent / "weights"
WEIGHTS_FILE = "model.safetensors"


def shipped_dir(name: str, version: str, info_file: str = "loraplace_builtin.json") -> Path | None:
    """The packaged directory of a built-in model at this version, if the package has one."""
    path = WEIGHTS_DIR / f"{name}-{version}"
    return path if (path / info_file).is_file() and (path / WEIGHTS_FILE).is_file() else None


def weights_fingerprint(model_dir: Path) -> str:
    """SHA-256 over every tensor of ``model.safetensors``: name, dtype, shape, then bytes.

    The tensors rather than the file, so a different safetensors header (metadata, order)
    over the same numbers is the same fingerprint.
    """
    import torch
    from safetensors import safe_open

    h = hashlib.sha256()
    with safe_open(str(Path(model_dir) / WEIGHTS_FILE), framework="pt") as fh:
        for key in sorted(fh.keys()):
            t = fh.get_tensor(key).contiguous()
            h.update(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode())
            h.update(t.view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()
