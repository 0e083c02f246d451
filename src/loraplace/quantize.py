"""Quantized base models (QLoRA-style): the bitsandbytes config and where it can run.

``4bit`` is NF4 with double quantization and the run's precision as compute dtype (the
QLoRA recipe); ``8bit`` is LLM.int8(). Only the adapted base's linear weights are
quantized (embeddings, norms and the LM head stay in the load dtype), and the adapters
train in full precision on top. bitsandbytes >= 0.45 runs both on CPU as well as CUDA;
its 4-bit CPU kernels need every quantized layer's input size to be a multiple of the
64-value quantization block, so a model narrower than that fails with one clear line.
"""

from __future__ import annotations

from typing import Any

from loraplace.errors import UserError

QUANT_BLOCK = 64  # values per NF4 absmax block (bitsandbytes' default blocksize)
INSTALL = "pip install 'loraplace[quantize]' (bitsandbytes)"


def bitsandbytes_version() -> str | None:
    """The installed bitsandbytes version, or None when it is absent or cannot load."""
    try:
        import bitsandbytes
    except Exception:  # a broken native library raises more than ImportError
        return None
    return str(bitsandbytes.__version__)


def quantization_config(quantize: str, precision: str = "fp32") -> Any:
    """The transformers ``BitsAndBytesConfig`` for ``4bit`` or ``8bit``."""
    import torch
    from transformers import BitsAndBytesConfig

    if bitsandbytes_version() is None:
        raise UserError(f"model.quantize: {quantize} needs bitsandbytes: {INSTALL}")
    if quantize == "4bit":
        return BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16 if precision == "bf16" else torch.float32,
        )
    if quantize == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    raise UserError(f"model.quantize {quantize!r} is not 4bit or 8bit: use one of those")


def check_shapes(quantize: str, in_features: list[int]) -> None:
    """A 4-bit CPU layer needs in_features divisible by the quantization block."""
    bad = sorted({n for n in in_features if n % QUANT_BLOCK})
    if quantize == "4bit" and bad:
        raise UserError(
            f"model.quantize: 4bit needs every linear layer's input size to be a multiple of "
            f"{QUANT_BLOCK} (this model has {bad[0]}): use 8bit or an unquantized base"
        )


def count_params(model: Any) -> int:
    """Parameters of a model as if unquantized: a packed 4-bit tensor counts its real shape.

    bitsandbytes stores two NF4 values per uint8, so ``numel()`` halves a 4-bit weight;
    its quant state keeps the original shape (PEFT's count doubles it the same way).
    Tied weights count once, as ``model.parameters()`` yields them once.
    """
    total = 0
    for p in model.parameters():
        state = getattr(p, "quant_state", None)
        if type(p).__name__ == "Params4bit" and state is not None:
            n = 1
            for d in state.shape:
                n *= int(d)
            total += n
        else:
            total += p.numel()
    return total


def weight_bytes(shapes: list[tuple[int, int]], quantize: str | None, dtype_bytes: int = 4) -> int:
    """Bytes of linear weights (out, in) stored quantized: data plus quantization state.

    4bit: half a byte per value, one 8-bit absmax per 64-value block, and (double
    quantization) one fp32 scale per 256 absmax blocks. 8bit: one byte per value and
    one fp32 scale per output row. Unquantized: dtype_bytes per value.
    """
    total = 0
    for out_f, in_f in shapes:
        n = out_f * in_f
        if quantize == "4bit":
            blocks = -(-n // QUANT_BLOCK)
            total += -(-n // 2) + blocks + 4 * -(-blocks // 256)
        elif quantize == "8bit":
            total += n + 4 * out_f
        else:
            total += n * dtype_bytes
    return total


def prepare_loaded(model: Any, quantize: str | None, device: str) -> None:
    """Make a freshly loaded quantized model trainable on the CPU, or refuse it in one line.

    bitsandbytes (0.50) repacks a 4-bit weight for its AVX512-BF16 inference kernel the
    first time the layer runs in eval mode on the CPU, and training on the repacked
    layout then fails; runs evaluate between training steps, so keep the plain layout.
    """
    if quantize != "4bit" or device != "cpu":
        return
    layers = [m for m in model.modules() if type(m).__name__ == "Linear4bit"]
    check_shapes(quantize, [m.in_features for m in layers])
    for m in layers:
        m.support_avx512bf16_for_cpu = False
