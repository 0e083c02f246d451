"""Regenerate a built-in model's shipped weights: ``python -m loraplace.builtin.regenerate
tiny-markov [OUT_DIR]`` pretrains it from scratch into the package (see ``shipped.py``)."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from loraplace.builtin.registry import BUILTIN_MODELS, _pretrain_with_status
from loraplace.builtin.shipped import WEIGHTS_DIR


def regenerate(name: str, out: Path) -> dict:
    """Pretrain built-in ``name`` from scratch into ``out`` (replaced); returns its summary."""
    spec = BUILTIN_MODELS[name]
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    summary = _pretrain_with_status(spec, tmp)
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return summary


def main(argv: list[str] | None = None) -> int:
    """``python -m loraplace.builtin.regenerate NAME [OUT_DIR]``: regenerate shipped weights."""
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] not in BUILTIN_MODELS:
        print(f"usage: python -m loraplace.builtin.regenerate {{{','.join(BUILTIN_MODELS)}}} [OUT]")
        return 2
    spec = BUILTIN_MODELS[args[0]]
    out = Path(args[1]) if len(args) > 1 else WEIGHTS_DIR / f"{spec.name}-{spec.version}"
    summary = regenerate(spec.name, out)
    print(f"{out}: fingerprint {summary['weights_sha256']}, held-out loss {summary['val_loss']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
