"""Trained adapters in torch: captured by the run, loaded back with PEFT and evaluated.

Where they are written, kept and found is ``loraplace.adapters`` (torch-free, the driver's).
"""

from __future__ import annotations

import functools
import json
import tempfile
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from loraplace.adapters import CONFIG, SIDECAR, read_sidecar
from loraplace.errors import UserError
from loraplace.models import attention_kernel, load_model, model_fingerprint
from loraplace.runs import TrainSettings

if TYPE_CHECKING:
    import torch


def capture(net: torch.nn.Module) -> dict[str, bytes]:
    """The PEFT model's adapter as {file name: bytes}, exactly as save_pretrained writes it."""
    with tempfile.TemporaryDirectory(prefix="loraplace-adapter-") as tmp, warnings.catch_warnings():
        # PEFT takes lora_bias's 1-D B biases for unsharded ZeRO-3 tensors; they are whole.
        warnings.filterwarnings("ignore", ".*LoRA tensor\\(s\\) have invalid shape")
        net.save_pretrained(tmp, safe_serialization=True)
        return {p.name: p.read_bytes() for p in Path(tmp).iterdir() if p.is_file()}


def load_adapter(
    path: str | Path, *, device: str = "cpu", trainable: bool = False, precision: str | None = None
):
    """The saved adapter on the base model its config names, as a ``PeftModel`` (eval mode).

    trainable: adapter weights require grad, the base is frozen: the state a run trains in.
    precision: the run's resolved precision, to load a built-in with the attention kernel
        its runs use at it (``models.attention_kernel``); None = transformers' default.
    """
    from peft import PeftModel

    path = Path(path)
    if not (path / CONFIG).is_file():
        raise UserError(f"{path} holds no saved adapter ({CONFIG} missing)")
    meta = read_sidecar(path) if (path / SIDECAR).is_file() else {}
    base = json.loads((path / CONFIG).read_text())["base_model_name_or_path"]
    kernel = attention_kernel(meta.get("model", ""), precision) if precision else None
    model, _ = load_model(
        base, device=device, quantize=meta.get("quantize"), attn_implementation=kernel
    )
    want = meta.get("model_fingerprint")
    if want and meta.get("model") and model_fingerprint(meta["model"]) != want:
        raise UserError(
            f"the base model {meta['model']!r} changed since adapter {path.name} was trained "
            "(fingerprint differs): load it on the model it was trained on"
        )
    return PeftModel.from_pretrained(model, str(path), is_trainable=trainable).eval()


def evaluate_adapter(path: str | Path, val: torch.Tensor, settings: TrainSettings):
    """A saved adapter's eval loss on ``val`` blocks, computed exactly as its run did.

    The run scored val with its attention kernel, its fused kernels (the LoRA update folded
    into the weight in fp32) and the frozen-prefix path; each agrees with a plain forward
    pass to float rounding only, so reproducing the stored number to the last bit takes
    the same path.
    """
    from loraplace.train.evaluate import evaluate
    from loraplace.train.kernels import fuse_activations
    from loraplace.train.lora_kernel import fuse_lora
    from loraplace.train.measure import resolve_device, resolve_precision
    from loraplace.train.prefix_cache import PrefixCache, runner_for

    device = resolve_device(settings.device)
    precision = resolve_precision(settings.precision, device)
    net = load_adapter(path, device=str(device), trainable=True, precision=precision)
    base = net.get_base_model()
    restore_activations, restore_lora = fuse_activations(base), fuse_lora(net)
    try:
        prefix = runner_for(base, precision=precision, cache=PrefixCache())
        return evaluate(
            net,
            val,
            batch_size=settings.eval_batch_size,
            device=device,
            precision=precision,
            max_blocks=settings.max_eval_blocks,
            nll_fn=functools.partial(prefix.token_nll, "val", val) if prefix else None,
        )
    finally:
        restore_lora()
        restore_activations()
