"""The sha256 of a GGUF file, remembered per (path, size, mtime) so a warm cache is instant.

Hashing SmolLM2's 98 MB takes ~0.3 s and Gemma's 253 MB ~1 s on a busy core; a second
``plan`` must not pay that again. The memo lives in the cache beside the conversions; a
file rewritten in place changes its size or mtime, and is hashed again.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from pathlib import Path

from loraplace.data.cache import cache_dir


def _memo_file() -> Path:
    return cache_dir() / "gguf" / "sha256-memo.json"


def file_sha256(path: Path) -> str:
    """sha256 of the file at ``path`` (from the memo when its size and mtime are unchanged)."""
    path = path.resolve()
    st = path.stat()
    stamp = f"{st.st_size}:{st.st_mtime_ns}"
    memo_file = _memo_file()
    try:
        memo = json.loads(memo_file.read_text())
    except (OSError, ValueError):
        memo = {}
    hit = memo.get(str(path))
    if isinstance(hit, dict) and hit.get("stamp") == stamp:
        return str(hit["sha256"])
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    digest = h.hexdigest()
    memo[str(path)] = {"stamp": stamp, "sha256": digest}
    memo_file.parent.mkdir(parents=True, exist_ok=True)
    # One temporary file per writer: two threads of one process (two first uses at once)
    # must not rename each other's file away.
    tmp = memo_file.with_name(f".{memo_file.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}")
    tmp.write_text(json.dumps(memo, indent=1, sort_keys=True))
    os.replace(tmp, memo_file)  # last writer wins; a lost entry is only hashed again
    return digest
