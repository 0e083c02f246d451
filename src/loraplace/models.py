"""Loading base models and tokenizers: built-in names, local directories, GGUF files, hub ids.

One path for all: a built-in model is first materialised (pretrained at first use) into
the cache with ``save_pretrained``, a GGUF model (a ``.gguf`` file or a real built-in name)
is dequantized once into the cache (``gguf_source``), then either loads by
``from_pretrained`` exactly like a local directory or a hub id. Safe by default:
safetensors weights only, no remote code.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from loraplace.builtin import BUILTIN_MODELS, builtin_model_dir, is_builtin_model
from loraplace.errors import UserError
from loraplace.gguf_source import gguf_dir, gguf_record, is_gguf_ref
from loraplace.quantize import prepare_loaded, quantization_config
from loraplace.quiet import quiet_transformers

if TYPE_CHECKING:
    import torch
    from transformers import PretrainedConfig, PreTrainedModel, PreTrainedTokenizerBase

NO_NETWORK = "no network: give a local path or a built-in model (tiny-markov, tiny-python)"
SAFE_WEIGHTS = ("model.safetensors", "model.safetensors.index.json")
PICKLE_WEIGHTS = ("pytorch_model.bin", "pytorch_model.bin.index.json")


def _is_local(ref: str) -> bool:
    """A ref that exists on disk, or is spelled like a path rather than an org/name hub id."""
    return Path(ref).expanduser().exists() or ref.startswith((".", "/", "~"))


def _local_dir(ref: str) -> Path:
    path = Path(ref).expanduser()
    if path.is_file():
        raise UserError(
            f"{ref!r} is a file, not a model directory or a GGUF file: give a directory "
            "written by save_pretrained, a .gguf file or a built-in model name"
        )
    if not path.is_dir():
        raise UserError(f"model directory {ref!r} does not exist: check the path")
    if not (path / "config.json").is_file():
        raise UserError(
            f"{ref!r} has no config.json: point at a directory written by save_pretrained"
        )
    return path


def local_ref(ref: str) -> str:
    """A GGUF reference as its converted directory (dequantized on first use); else ``ref``."""
    entry = gguf_dir(ref)
    return ref if entry is None else str(entry)


def model_source(ref: str) -> dict[str, str]:
    """What a run records of where its base weights came from beyond the fingerprint.

    A GGUF model: ``{"gguf": "<quantisation> <sha256 of the GGUF file>"}``, so Methods and
    exports can say the weights were dequantized from, e.g., Q4_1. Others: nothing.
    """
    record = gguf_record(ref) if is_gguf_ref(ref) else None
    return {} if record is None else {"gguf": f"{record['quant']} {record['gguf_sha256']}"}


def export_base(ref: str) -> tuple[str, str | None]:
    """(base model an exported config names, a note on it) for ``ref``.

    A GGUF model exports its converted directory: those are the weights the placement was
    planned and trained on, and ``from_pretrained`` loads them offline; the original hub
    checkpoint holds different (unquantized) numbers. The note says where they came from.
    """
    record = gguf_record(ref) if is_gguf_ref(ref) else None
    if record is None:
        return ref, None
    note = (
        f"{ref}: weights dequantized to fp32 from {record['quant']} "
        f"(GGUF sha256 {record['gguf_sha256'][:16]})"
    )
    if record.get("hub_id"):
        note += f"; original checkpoint {record['hub_id']}"
    return local_ref(ref), note


_hub_ok: bool | None = None


def _hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the hub answers a TCP connect within timeout (checked once per process).

    Without this check an unreachable hub costs ~50 s of retries before the error.
    """
    global _hub_ok
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        return False
    if _hub_ok is None:
        endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
        parsed = urlparse(endpoint)
        host = parsed.hostname or "huggingface.co"
        port = parsed.port or (443 if parsed.scheme == "https" else 80)
        result: list[bool] = []

        def connect() -> None:  # in a thread: a DNS lookup has no timeout of its own
            try:
                socket.create_connection((host, port), timeout=timeout).close()
                result.append(True)
            except OSError:
                result.append(False)

        thread = threading.Thread(target=connect, daemon=True)
        thread.start()
        thread.join(timeout + 1.0)
        _hub_ok = bool(result and result[0])
    return _hub_ok


def _hub_kwargs() -> dict[str, Any]:
    """Offline -> only the local HF cache is consulted, so cached hub models still load."""
    return {} if _hub_reachable() else {"local_files_only": True}


def _hub_error(ref: str, exc: Exception) -> UserError:
    """Turn a failed hub lookup into one line naming the problem and the fix."""
    msg = str(exc)
    offline = not _hub_reachable()
    if offline or "couldn't connect" in msg or "offline mode" in msg.lower():
        return UserError(f"cannot load {ref!r}: {NO_NETWORK}")
    if "not a valid model identifier" in msg or "Repository Not Found" in msg:
        return UserError(
            f"model {ref!r} is not a local directory or a model on the hub: check the name"
        )
    first = msg.strip().splitlines()[0] if msg.strip() else type(exc).__name__
    return UserError(f"cannot load model {ref!r}: {first}")


def load_config(ref: str, *, trust_remote_code: bool = False) -> PretrainedConfig:
    """The transformers config of a built-in name (no pretraining), local dir or hub id."""
    if is_builtin_model(ref):
        return BUILTIN_MODELS[ref].config()
    from transformers import AutoConfig

    ref = local_ref(ref)
    if _is_local(ref):
        return AutoConfig.from_pretrained(str(_local_dir(ref)), trust_remote_code=trust_remote_code)
    try:
        return AutoConfig.from_pretrained(ref, trust_remote_code=trust_remote_code, **_hub_kwargs())
    except (OSError, ValueError) as exc:
        raise _hub_error(ref, exc) from None


def meta_model(ref_or_config: Any, *, trust_remote_code: bool = False) -> torch.nn.Module:
    """The model built on the meta device: every shape and module name, no weights, instant."""
    import torch
    from transformers import AutoModelForCausalLM

    config = (
        load_config(ref_or_config, trust_remote_code=trust_remote_code)
        if isinstance(ref_or_config, str)
        else ref_or_config
    )
    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)


def _check_local_weights(path: Path, safetensors_only: bool) -> None:
    names = {p.name for p in path.iterdir()}
    has_safe = any(n.endswith(".safetensors") for n in names) or SAFE_WEIGHTS[1] in names
    has_pickle = any(n in names for n in PICKLE_WEIGHTS)
    if has_safe:
        return
    if has_pickle:
        if safetensors_only:
            raise UserError(
                f"{path} has only pickle weights (pytorch_model.bin), which can run code on "
                "load: convert them to safetensors, or allow pickle weights explicitly"
            )
        return
    raise UserError(
        f"{path} has a config.json but no weights (*.safetensors): add the weights to load it "
        "(plan and inspect work without them)"
    )


def attention_kernel(ref: str, precision: str) -> str | None:
    """The attention kernel a built-in model runs at ``precision`` (config.json omits it).

    Measured on the built-ins (d=128, 4 heads, 128 tokens) on 2 CPU cores: in fp32 torch's
    fused sdpa kernel is faster than eager attention (a training step -7 %, an evaluation
    batch -25 %); under bf16 autocast eager is (a step 97 vs 123 ms). Both compute the
    same softmax attention, apart from float rounding. Other models keep transformers'
    default (None).
    """
    if not is_builtin_model(ref):
        return None
    return "sdpa" if precision == "fp32" else "eager"


def load_model(
    ref: str,
    *,
    device: str = "cpu",
    trust_remote_code: bool = False,
    safetensors_only: bool = True,
    dtype: str = "float32",
    attn_implementation: str | None = None,
    quantize: str | None = None,
    precision: str = "fp32",
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a causal LM and its tokenizer from a built-in name, local directory or hub id.

    quantize: "4bit" (NF4, compute in ``precision``) or "8bit" base weights (bitsandbytes).
    safetensors_only: refuse pickle (.bin) weights, which can execute code when loaded.
    dtype: weight dtype ("float32" for training on CPU; "auto" keeps the checkpoint's).
    attn_implementation: e.g. "eager" (fastest for tiny models on CPU); None = default.
    """
    source = str(builtin_model_dir(ref)) if is_builtin_model(ref) else local_ref(ref)
    model, tokenizer = _from_pretrained(
        source,
        device=device,
        trust_remote_code=trust_remote_code,
        safetensors_only=safetensors_only,
        dtype=dtype,
        attn_implementation=attn_implementation,
        quantization=quantization_config(quantize, precision) if quantize else None,
    )
    prepare_loaded(model, quantize, device)
    return model, tokenizer


def _from_pretrained(
    source: str,
    *,
    device: str,
    trust_remote_code: bool,
    safetensors_only: bool,
    dtype: str,
    attn_implementation: str | None,
    quantization: Any = None,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """The one from_pretrained path: built-in cache dirs, local dirs and hub ids all use it."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    quiet_transformers()
    kwargs: dict[str, Any] = {"trust_remote_code": trust_remote_code}
    if _is_local(source):
        source = str(_local_dir(source))
        _check_local_weights(Path(source), safetensors_only)
    else:
        kwargs.update(_hub_kwargs())
    model_kwargs: dict[str, Any] = {
        "dtype": dtype if dtype == "auto" else getattr(torch, dtype),
    }
    if kwargs.get("local_files_only"):
        # transformers' adapter lookup ignores local_files_only and retries the hub for
        # ~25 s when it is unreachable; it takes the flag through adapter_kwargs.
        model_kwargs["adapter_kwargs"] = {"local_files_only": True}
    if safetensors_only:
        model_kwargs["use_safetensors"] = True
    if attn_implementation:
        model_kwargs["attn_implementation"] = attn_implementation
    if quantization is not None:  # quantized as the weights land on the device
        model_kwargs["quantization_config"] = quantization
        model_kwargs["device_map"] = {"": device}
    try:
        model = AutoModelForCausalLM.from_pretrained(source, **kwargs, **model_kwargs)
        tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
    except (OSError, ValueError) as exc:
        if _is_local(source):
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
            raise UserError(f"cannot load model from {source}: {first}") from None
        raise _hub_error(source, exc) from None
    if getattr(model, "loss_type", "") is None:
        # transformers warns once per process for GPT-2 otherwise; the loss is the same.
        model.loss_type = "ForCausalLM"
    if quantization is not None:
        return model, tokenizer  # placed by device_map; bitsandbytes models refuse .to()
    return model.to(device), tokenizer


def _file_digest(path: Path, full_limit: int = 1 << 30) -> str:
    """Content hash of a file; above full_limit bytes, of its size, head, middle and tail."""
    h = hashlib.sha256()
    size = path.stat().st_size
    h.update(str(size).encode())
    with open(path, "rb") as fh:
        if size <= full_limit:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        else:  # a multi-GB checkpoint: sampling keeps this instant; size + header catch most
            for offset in (0, size // 2, max(0, size - (1 << 20))):
                fh.seek(offset)
                h.update(fh.read(1 << 20))
    return h.hexdigest()


def model_fingerprint(ref: str) -> str:
    """A short content hash of a model: its config, plus its weight files when on disk.

    A built-in model hashes its name, version and config (its weights follow from those,
    and the fingerprint is the same before and after the first-use pretraining). A GGUF
    model hashes the GGUF file's sha256 and the sha256 of its dequantized tensors.
    """
    h = hashlib.sha256()
    if is_builtin_model(ref):
        spec = BUILTIN_MODELS[ref]
        h.update(f"builtin:{spec.name}:{spec.version}".encode())
        config = spec.config().to_dict()
        config.pop("transformers_version", None)  # a library upgrade does not change weights
        h.update(json.dumps(config, sort_keys=True, default=str).encode())
        return h.hexdigest()[:16]
    record = gguf_record(ref) if is_gguf_ref(ref) else None
    if record is not None:  # the GGUF file's bytes and the tensors dequantized from them
        h.update(f"gguf:{record['gguf_sha256']}:{record['weights_sha256']}".encode())
        return h.hexdigest()[:16]
    if _is_local(ref):
        path = _local_dir(ref)
        h.update((path / "config.json").read_bytes())
        for f in sorted(path.iterdir()):
            if f.suffix in (".safetensors", ".bin") or f.name.endswith(".index.json"):
                h.update(f.name.encode())
                h.update(_file_digest(f).encode())
        return h.hexdigest()[:16]
    config = load_config(ref)
    h.update(f"hub:{ref}".encode())
    h.update(json.dumps(config.to_dict(), sort_keys=True, default=str).encode())
    return h.hexdigest()[:16]
