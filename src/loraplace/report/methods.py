"""The Methods section, written from the store: resolved specs, metrics and run manifests.

Nothing here is typed by hand: every setting is read from the specs the runs were
trained with, every count from what the runs measured, and every environment field from
their manifests. A setting that differs between runs is listed with all its values.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from loraplace.analysis import RunRecord, Summary
from loraplace.analysis.stats import ALPHA
from loraplace.metrics import EVAL_TOKENS
from loraplace.report import fmt
from loraplace.report import tables as tb
from loraplace.report.bib import Cite
from loraplace.report.escape import U
from loraplace.report.method_placements import (
    joined,
    placement_methods,
    placement_para,
    placements_table,
)
from loraplace.report.render import Document, Heading, Para, TableBlock
from loraplace.report.reproducibility import distinct

TableFn = Callable[[tb.Table], TableBlock]
FIXED_SPLIT = "the dataset's own fixed split (each record names its side: train, val or test)"


def trained_runs(s: Summary) -> list[RunRecord]:
    return [r for p in s.placements for r in p.runs]


def _train(runs: list[RunRecord], key: str) -> list[Any]:
    return distinct((r.spec.get("train") or {}).get(key) for r in runs)


def _metric(runs: list[RunRecord], name: str) -> list[Any]:
    return distinct(r.metric(name) for r in runs)


def _g(v: Any) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def settings_rows(runs: list[RunRecord]) -> list[tuple[str, str]]:
    """(setting, value) for the optimisation and evaluation settings of the trained runs."""

    def t(key: str, show: Callable[[Any], str] = _g) -> str:
        return joined(_train(runs, key), show)

    def m(name: str) -> str:
        return joined(_metric(runs, name), fmt.count)

    tokens = distinct(
        (r.spec.get("train") or {}).get("batch_size", 0)
        * (r.spec.get("train") or {}).get("block_size", 0)
        for r in runs
    )
    counted = _counted(runs)
    if counted:  # mean non-padding tokens per step (raw text: batch x block, exactly)
        tokens = distinct(r.metrics["train_tokens"] / r.metrics["steps"] for r in runs)
    fps = [r.spec.get("fingerprints") or {} for r in runs]
    pk = [r.manifest.get("packages") or {} for r in runs]
    return [
        ("Base model", joined(r.spec.get("model") for r in runs)),
        ("Model parameters", m("total_params")),
        ("Model fingerprint", joined(f.get("model") for f in fps)),
        *[
            ("Base weights", f"dequantized from {q} (GGUF sha256 {sha})")
            for q, sha in gguf_sources(runs)
        ],
        ("Data", joined(r.spec.get("dataset") for r in runs)),
        ("Data fingerprint", joined(f.get("data") for f in fps)),
        ("Optimizer", "AdamW, PyTorch defaults: betas (0.9, 0.999), eps 1e-8"),
        ("Peak learning rate", t("lr")),
        ("Schedule", t("schedule") + f", {t('warmup_steps')} linear warm-up steps, decay to 0"),
        ("Optimizer steps", m("steps")),
        ("Batch (sequences per step)", t("batch_size")),
        ("Block (tokens per sequence)", t("block_size")),
        ("Tokens per step", joined(tokens, fmt.count)),
        ("Train tokens per run", m("train_tokens")),
        *([("Scored train tokens per run", m("train_scored_tokens"))] if counted else []),
        ("Weight decay", t("weight_decay")),
        ("Gradient clipping (max norm)", t("grad_clip")),
        ("LoRA dropout", t("lora_dropout")),
        ("Precision (requested)", t("precision")),
        ("Precision (used)", joined(r.manifest.get("precision") for r in runs)),
        ("Device", joined(r.manifest.get("device") for r in runs)),
        ("Seeds", joined(sorted({r.seed for r in runs}))),
        ("Split seed", t("split_seed")),
        ("Eval every (steps)", t("eval_every")),
        ("Eval tokens", m(EVAL_TOKENS)),
        *[
            (name, joined(p.get(name) for p in pk))
            for name in ("python", "torch", "transformers", "peft")
        ],
    ]


def settings_table(runs: list[RunRecord]) -> tb.Table:
    rows = settings_rows(runs)
    return tb.Table(
        "methods_settings",
        "Model, data, training and evaluation settings of the trained runs",
        ["Setting", "Value"],
        [[k, v] for k, v in rows],
        [{"setting": k, "value": v} for k, v in rows],
        align="ll",
    )


def _model_para(s: Summary, runs: list[RunRecord]) -> Para:
    cfg = s.study.config
    fam = joined(r.manifest.get("model_type") for r in runs)
    # A study across models: Methods describes the headline model, the one its runs used.
    name = joined(r.spec.get("model") for r in runs) if cfg.get("models") else cfg.get("model")
    parts: list[str] = ["The base model is ", U(str(name)), " ("]
    parts += ["architecture family ", U(fam), ", "] if fam != "not recorded" else []
    parts += [
        f"{joined(_metric(runs, 'total_params'), fmt.count)} parameters; fingerprint ",
        U(joined(r.spec.get("fingerprints", {}).get("model") for r in runs)),
        "), loaded with Transformers ",
        Cite("wolf2020transformers"),
        " on PyTorch ",
        Cite("paszke2019pytorch"),
        ". ",
        *_gguf_words(runs),
        "Its weights stay frozen; only the adapters train.",
    ]
    return Para(parts)


def gguf_sources(runs: list[RunRecord]) -> list[tuple[str, str]]:
    """(quantisation, GGUF sha256) of each distinct GGUF the runs' base weights came from."""
    recorded = distinct((r.spec.get("fingerprints") or {}).get("gguf") for r in runs)
    pairs = [str(v).partition(" ") for v in recorded]
    return [(quant, sha) for quant, _, sha in pairs if sha]


def _gguf_words(runs: list[RunRecord]) -> list[Any]:
    """The sentence saying the base weights were dequantized from a GGUF file, if they were."""
    sources = gguf_sources(runs)
    if not sources:
        return []
    quants = " / ".join(q for q, _ in sources)
    shas = ", ".join(sha[:16] for _, sha in sources)
    return [
        f"The weights were dequantized to fp32 from {quants} in a GGUF file (sha256 ",
        U(shas),
        "), once, into the safetensors directory every run loads; the model fingerprint "
        "covers the GGUF file and the dequantized tensors. ",
    ]


def _counted(runs: list[RunRecord]) -> bool:
    """Whether the runs counted their tokens (stores before that hold a nominal count)."""
    return bool(runs) and all(
        r.metric("train_scored_tokens") is not None and r.metric("steps") for r in runs
    )


def _train_tokens_sentence(runs: list[RunRecord]) -> str:
    """How many tokens each run trained on and was evaluated on."""
    train = joined(_metric(runs, "train_tokens"), fmt.count)
    evals = joined(_metric(runs, EVAL_TOKENS), fmt.count)
    if _counted(runs):
        scored = joined(_metric(runs, "train_scored_tokens"), fmt.count)
        return (
            f"Each run trains on {train} tokens (non-padding, as fed to the model; {scored} "
            f"of them scored by the loss) and is evaluated on {evals} validation tokens. "
        )
    return (
        f"Each run trains on {train} tokens and is evaluated on {evals} validation tokens "
        "(the train count is nominal, steps x batch x block: the store predates counted "
        "tokens). "
    )


def _layout_sentence(runs: list[RunRecord], fmt_name: str) -> str:
    """How rows are built: raw text is packed into blocks; instruction data never is."""
    block = joined(_train(runs, "block_size"))
    if fmt_name == "text":
        return (
            f"Documents are tokenised with the model's tokenizer and packed into blocks of "
            f"{block} tokens; the train/validation split is drawn once with split seed "
            f"{joined(_train(runs, 'split_seed'))} and is the same for every run seed. "
        )
    how = " through the chat template" if fmt_name == "conversational" else ""
    return (
        f"Each example is tokenised with the model's tokenizer{how} into one row of at "
        f"most {block} tokens, never packed with another example; the split is the same "
        "for every run seed. "
    )


def _data_para(s: Summary, runs: list[RunRecord]) -> Para:
    cfg = s.study.config
    fps = [r.spec.get("fingerprints") or {} for r in runs]
    fmt_name = joined((r.manifest.get("data_info") or {}).get("format") or "text" for r in runs)
    parts: list[str] = [
        "Training data: ",
        U(str(cfg.get("dataset"))),
        " (format ",
        U(fmt_name),
        "; fingerprint ",
        U(joined(f.get("data", "")[:16] or None for f in fps)),
        f", in full in the settings table). {_layout_sentence(runs, fmt_name)}"
        f"{_train_tokens_sentence(runs)}",
    ]
    infos = [r.manifest.get("data_info") or {} for r in runs]
    loss_on = joined(i.get("loss_on") for i in infos)
    # A registered dataset's own split (its records name their side) is no seeded draw.
    split = joined(FIXED_SPLIT if i.get("split") == "fixed" else i.get("split") for i in infos)
    if fmt_name == "text":
        parts.append("The data is raw text, so every token is a target: no loss mask applies.")
    else:
        parts += [
            f"Loss mask: the loss scores {loss_on} tokens"
            f" ({joined((i.get('scored_tokens') for i in infos), fmt.count)} scored "
            f"tokens over all the dataset's examples, train and held out); examples are "
            f"split by {split}.",
        ]
        batching = distinct(r.manifest.get("batching") for r in runs)
        if batching:  # stores before batching was recorded have none
            parts.append(f" Batches: {joined(batching)}.")
    retain = distinct(r.spec.get("retain_dataset") for r in runs)
    if retain:
        parts += [
            " Forgetting is the increase of the eval loss on ",
            U(", ".join(map(str, retain))),
            " (fingerprint ",
            U(joined(f.get("retain") for f in fps)),
            "), the base model's own distribution, over the base model's loss there.",
        ]
    return Para(parts)


def _training_para(s: Summary, runs: list[RunRecord]) -> Para:
    def t(key: str) -> str:
        return joined(_train(runs, key), _g)

    return Para(
        [
            "Optimisation uses AdamW ",
            Cite("loshchilov2019adamw"),
            f" at a peak learning rate of {t('lr')} with a {t('schedule')} schedule ",
            Cite("loshchilov2017sgdr"),
            f" after {t('warmup_steps')} linear warm-up steps, for "
            f"{joined(_metric(runs, 'steps'), fmt.count)} optimizer steps of "
            f"{t('batch_size')} sequences, gradient clipping at {t('grad_clip')} and "
            f"weight decay {t('weight_decay')}. Requested precision {t('precision')}, used "
            f"{joined(r.manifest.get('precision') for r in runs)}. Seeds "
            f"{joined(sorted({r.seed for r in runs}))} set the adapter initialisation and "
            "the batch order.",
        ]
    )


def _hardware_para(runs: list[RunRecord]) -> Para:
    man = [r.manifest for r in runs]
    gpus = distinct(m.get("gpu") for m in man)
    return Para(
        [
            "Hardware, from the run manifests: device ",
            U(joined(m.get("device") for m in man)),
            *([" (", U(", ".join(gpus)), ")"] if gpus else []),
            " on ",
            U(joined(m.get("machine") or m.get("platform") for m in man)),
            f" with {joined(m.get('torch_threads') for m in man)} torch thread(s); the "
            "package versions are in the table above.",
        ]
    )


def equivalence_margin(config: dict[str, Any]) -> float | None:
    """The study's equivalence margin (nats), under any key naming a margin."""
    for key, v in config.items():
        if isinstance(v, dict):
            found = equivalence_margin(v)
            if found is not None:
                return found
        elif "margin" in key and isinstance(v, int | float) and not isinstance(v, bool):
            return float(v)
    return None


def _stats_para(s: Summary, n_tests: int) -> Para:
    parts: list[str] = [
        "Each placement's eval loss (token-weighted mean negative log-likelihood, nats) is "
        "averaged over its finished seeds and reported with a 95 % Student t confidence "
        "interval ",
        Cite("student1908"),
        f". The {n_tests} pair{'' if n_tests == 1 else 's'} of placements "
        f"{'is' if n_tests == 1 else 'are'} compared with paired t-tests over the seeds both "
        "finished ",
        Cite("virtanen2020scipy"),
        "; their p-values are adjusted as one family with Holm's step-down procedure ",
        Cite("holm1979"),
        f" at α = {ALPHA}.",
    ]
    margin = equivalence_margin(s.study.config)
    if margin is None:
        parts.append(
            " No equivalence margin was set, so no pair is declared equivalent: a "
            "difference within noise is no evidence that two placements are alike."
        )
    else:
        parts += [
            f" Equivalence is tested against a margin of ±{margin:g} nats with two one-sided "
            "tests (TOST) ",
            Cite("schuirmann1987tost"),
            ".",
        ]
    return Para(parts)


def add_methods_section(doc: Document, table: TableFn, s: Summary, n_tests: int) -> None:
    """Methods: model, data, placements, training, hardware, statistics."""
    runs = trained_runs(s)
    pms = placement_methods(s)
    doc.add(Heading(2, ["Methods"]))
    doc.add(Heading(3, ["Base model and data"]))
    doc.add(_model_para(s, runs), _data_para(s, runs))
    doc.add(Heading(3, ["Placements"]))
    doc.add(placement_para(pms, runs), table(placements_table(pms)))
    doc.add(Heading(3, ["Training"]))
    doc.add(_training_para(s, runs), table(settings_table(runs)), _hardware_para(runs))
    doc.add(Heading(3, ["Statistical procedures"]))
    doc.add(_stats_para(s, n_tests))
    if s.zero_shot is not None:
        doc.add(
            Para(
                [
                    "The zero-shot baseline is the base model without adapters, evaluated on "
                    f"the same validation tokens (from the {s.zero_shot.source})."
                ]
            )
        )
