"""What runs share within a process: the base model, token blocks and zero-shot evaluations.

Loading dominates short runs, so one ``Assets`` keeps what it loaded: the base model
(one at a time; each run hands it back untouched), the tokenised blocks of every dataset,
and the base model's zero-shot evaluation, which every run of a (model, data) pair shares.
The driver, the executors and search share one instance.
"""

from __future__ import annotations

from typing import Any

import torch

from loraplace import identity as ident
from loraplace.data import Blocks, load_blocks
from loraplace.models import attention_kernel, load_model, model_fingerprint, model_source
from loraplace.runs import RunSpec
from loraplace.train import Baseline, evaluate_base
from loraplace.train.measure import resolve_device, resolve_precision


class Assets:
    """Base models, token blocks and zero-shot evaluations, loaded once and reused."""

    def __init__(self) -> None:
        self._model_key: tuple | None = None
        self._model: Any = None
        self._tokenizer: Any = None
        self._model_fp: dict[str, str] = {}
        self._blocks: dict[tuple, Blocks] = {}
        self._baselines: dict[tuple, Baseline] = {}

    def model(
        self, ref: str, device: str = "cpu", quantize: str | None = None, precision: str = "fp32"
    ) -> tuple[torch.nn.Module, Any]:
        """(model, tokenizer) of ``ref`` on ``device``; only the latest model stays loaded.

        quantize: "4bit" / "8bit" base weights; the 4-bit compute dtype follows precision.
        """
        dev = str(resolve_device(device))
        resolved = resolve_precision(precision, torch.device(dev))
        compute = resolved if quantize == "4bit" else None
        kernel = attention_kernel(ref, resolved)
        key = (ref, dev, quantize, compute)
        if self._model_key != key:
            self._model = self._tokenizer = None  # free the previous model first
            model, tokenizer = load_model(
                ref,
                device=dev,
                attn_implementation=kernel,
                quantize=quantize,
                precision=compute or "fp32",
            )
            for p in model.parameters():
                p.requires_grad_(False)
            model.eval()
            self._model_key, self._model, self._tokenizer = key, model, tokenizer
        if kernel is not None and self._model.config._attn_implementation != kernel:
            self._model.set_attn_implementation(kernel)  # the same weights, another kernel
        return self._model, self._tokenizer

    def _any_model(self, ref: str, device: str) -> tuple[torch.nn.Module, Any]:
        """The loaded model of ``ref`` (quantized or not; for its tokenizer and config)."""
        if self._model_key is not None and self._model_key[:2] == (
            ref,
            str(resolve_device(device)),
        ):
            return self._model, self._tokenizer
        return self.model(ref, device)

    def model_fingerprint(self, ref: str) -> str:
        if ref not in self._model_fp:
            self._model_fp[ref] = model_fingerprint(ref)
        return self._model_fp[ref]

    def model_fingerprints(self, ref: str) -> dict[str, str]:
        """What runs record of the base model: its fingerprint, and a GGUF's source."""
        return {"model": self.model_fingerprint(ref), **model_source(ref)}

    def blocks(
        self,
        dataset: str,
        *,
        model: str,
        device: str = "cpu",
        block_size: int,
        split_seed: int = 0,
        text_field: str = "text",
        test_fraction: float = 0.0,
        holdout: str = "val",
        data: dict | None = None,
    ) -> Blocks:
        """Blocks of ``dataset`` tokenised for ``model``, loaded once per argument set.

        test_fraction / holdout: as ``load_blocks`` (holdout "test": the test split as val).
        data: the study's ``data:`` settings (data.sft.DataSettings as a dict).
        """
        from loraplace.data.sft import DataSettings

        key = ident.blocks_key(
            dataset,
            model=model,
            block_size=block_size,
            split_seed=split_seed,
            text_field=text_field,
            test_fraction=test_fraction,
            holdout=holdout,
            data=data,
        )
        if key not in self._blocks:
            net, tokenizer = self._any_model(model, device)
            cfg = getattr(net, "config", None)
            ctx = getattr(cfg, "n_positions", None) or getattr(cfg, "max_position_embeddings", None)
            self._blocks[key] = load_blocks(
                dataset,
                tokenizer,
                block_size,
                split_seed=split_seed,
                text_field=text_field,
                max_context=ctx,
                test_fraction=test_fraction,
                holdout=holdout,  # type: ignore[arg-type]
                data=DataSettings(**(data or {})),
                model=model,
            )
        return self._blocks[key]

    def spec_blocks(
        self, spec: RunSpec, dataset: str | None = None, holdout: str = "val"
    ) -> Blocks:
        """Blocks of the spec's dataset (or ``dataset``) at the spec's block size.

        The spec's own dataset carries its test split (train without it); another
        dataset (the retain set) is read whole.
        """
        kw: dict[str, Any] = ident.blocks_args(spec.model, spec.train, spec.text_field, spec.data)
        whole = {**kw, "test_fraction": 0.0}  # another dataset is read whole
        own = dataset is None
        blocks = self.blocks(dataset or spec.dataset, holdout=holdout, **(kw if own else whole))
        if own and holdout == "val" and spec.eval_dataset:
            from loraplace.data.tokenized import with_eval_dataset

            # eval.dataset: validation is that file, whole; train keeps its own rows.
            return with_eval_dataset(blocks, self.blocks(spec.eval_dataset, **whole))
        return blocks

    def retain_blocks(self, spec: RunSpec) -> Blocks | None:
        return self.spec_blocks(spec, spec.retain_dataset) if spec.retain_dataset else None

    def test_blocks(self, spec: RunSpec) -> Blocks | None:
        """The spec's test split (as ``val``), or None when the study holds none out."""
        return self.spec_blocks(spec, holdout="test") if spec.train.test_fraction > 0 else None

    def baseline(self, spec: RunSpec) -> Baseline:
        """The base model's eval on the spec's val (retain, test) blocks, shared across seeds."""
        t = spec.train
        device = resolve_device(t.device)
        key = ident.baseline_key(spec, str(device), resolve_precision(t.precision, device))
        if key not in self._baselines:
            model, _ = self.model(spec.model, t.device, spec.quantize, t.precision)
            self._baselines[key] = evaluate_base(
                model, self.spec_blocks(spec), self.retain_blocks(spec), t, self.test_blocks(spec)
            )
        return self._baselines[key]
