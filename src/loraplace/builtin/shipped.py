"""Built-in weights shipped inside the package, with the fingerprint that pins them.

Pretraining tiny-markov took 106 s of a newcomer's 369 s first run on 2 cores, for 3.3 MB
of weights. So the package carries them, written by ``save_pretrained`` (safetensors,
tokenizer, config) into ``builtin/weights/<name>-<version>/``, and they load with
``from_pretrained`` like any model. Pretraining stays the way to make them:

    python -m loraplace.builtin.shipped tiny-markov      # regenerate into the package

records the weights' fingerprint (a SHA-256 over every tensor's name, dtype, shape and
bytes) and held-out loss in ``loraplace_builtin.json``; the tests check the shipped files
against that record, and a regeneration against the shipped record.
"""

from __future__ import annotations

import hashlib
import shutil
import sys
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


def regenerate(name: str, out: Path) -> dict:
    """Pretrain built-in ``name`` from scratch into ``out`` (replaced); returns its summary."""
    from loraplace.builtin import BUILTIN_MODELS, _pretrain_with_status

    spec = BUILTIN_MODELS[name]
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    summary = _pretrain_with_status(spec, tmp)
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return summary


def main(argv: list[str] | None = None) -> int:
    """``python -m loraplace.builtin.shipped NAME [OUT_DIR]``: regenerate shipped weights."""
    from loraplace.builtin import BUILTIN_MODELS

    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] not in BUILTIN_MODELS:
        print(f"usage: python -m loraplace.builtin.shipped {{{','.join(BUILTIN_MODELS)}}} [OUT]")
        return 2
    spec = BUILTIN_MODELS[args[0]]
    out = Path(args[1]) if len(args) > 1 else WEIGHTS_DIR / f"{spec.name}-{spec.version}"
    summary = regenerate(spec.name, out)
    print(f"{out}: fingerprint {summary['weights_sha256']}, held-out loss {summary['val_loss']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
