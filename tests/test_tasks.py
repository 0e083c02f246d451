"""Task metrics: exact match against a hand-written greedy decoder, choice against
transformers' own loss, and studies on prompt-completion and messages data end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from run_fixtures import OBJECTS, SUBJECTS, VERBS, tiny_study, write_tiny_model

from loraplace.cli import run_cli
from loraplace.store import Store
from loraplace.train.task_metrics import (
    TaskMetricSettings,
    choice,
    cut_at_stop,
    exact_match,
    normalize,
)

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return write_tiny_model(tmp_path_factory.mktemp("m") / "tiny-gpt2")


@pytest.fixture(scope="module")
def loaded(model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    return model, AutoTokenizer.from_pretrained(model_dir)


@pytest.mark.parametrize(
    "text, norm",
    [(" The Moon . ", "the moon"), ("a\n  bone", "a bone"), ("...", ""), ("T0 t1", "t0 t1")],
)
def test_normalize(text, norm):
    assert normalize(text) == norm


def test_cut_at_stop_uses_the_first_stop_string():
    assert cut_at_stop("a b\nc ; d", ("\n", ";")) == "a b"
    assert cut_at_stop("a b", ("\n",)) == "a b"


def _greedy(model, tok, prompt: list[int], n: int) -> str:
    """Greedy decoding by hand: argmax of the last position, up to n tokens or EOS."""
    ids = list(prompt)
    with torch.no_grad():
        for _ in range(n):
            nxt = int(model(input_ids=torch.tensor([ids])).logits[0, -1].argmax())
            if nxt == tok.eos_token_id:
                break
            ids.append(nxt)
    return tok.decode(ids[len(prompt) :])


def test_exact_match_agrees_with_a_hand_written_greedy_decoder(loaded):
    model, tok = loaded
    v = tok.get_vocab()
    prompts = [[v["the"], v["cat"]], [v["a"], v["dog"]], [v["my"], v["bird"], v["sees"]]]
    task = TaskMetricSettings(name="t", max_new_tokens=3, batch_size=2)
    refs = [_greedy(model, tok, p, 3) for p in prompts]
    examples = [
        {"prompt_ids": p, "reference": r, "choices": []} for p, r in zip(prompts, refs, strict=True)
    ]
    assert exact_match(model, tok, examples, task, "cpu") == 1.0
    examples[1]["reference"] = "not it"
    assert exact_match(model, tok, examples, task, "cpu") == pytest.approx(2 / 3)


def test_choice_picks_the_option_transformers_finds_most_likely(loaded):
    model, tok = loaded
    v = tok.get_vocab()
    prompt = [v["the"], v["cat"], v["sees"]]
    options = ["the moon", "a bone", "some seed"]
    logp = []
    for o in options:
        ids = prompt + [v[w] for w in o.split()]
        labels = [-100] * len(prompt) + ids[len(prompt) :]
        with torch.no_grad():  # the mean NLL over the option's tokens, times their count
            loss = model(input_ids=torch.tensor([ids]), labels=torch.tensor([labels])).loss
        logp.append(-float(loss) * (len(ids) - len(prompt)))
    best = options[max(range(3), key=logp.__getitem__)]
    task = TaskMetricSettings(name="c", kind="choice")
    ex = {"prompt_ids": prompt, "reference": best, "choices": options}
    assert choice(model, tok, [ex], task, "cpu") == 1.0
    wrong = next(o for o in options if o != best)
    assert choice(model, tok, [{**ex, "reference": wrong}], task, "cpu") == 0.0


# --- studies end to end -------------------------------------------------------------------

TEMPLATE = (
    "{% for m in messages %}{% if m.role == 'user' %}{{ m.content }} "
    "{% else %}{{ m.content }} {{ eos_token }} {% endif %}{% endfor %}"
)


def _pairs(n: int = 24):
    """subject verb -> the object of that subject: a mapping LoRA can learn."""
    return [(f"{SUBJECTS[i % 6]} {VERBS[i % 5]}", f"{OBJECTS[i % 6]} .") for i in range(n)]


def _write(tmp: Path, kind: str) -> Path:
    if kind == "prompt-completion":
        rows = [{"prompt": p, "completion": " " + c} for p, c in _pairs()]
    else:
        rows = [
            {"messages": [{"role": "user", "content": p}, {"role": "assistant", "content": c}]}
            for p, c in _pairs()
        ]
    path = tmp / f"{kind}.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["prompt-completion", "messages"])
def test_instruction_study_stores_accuracy_and_reports_it(tmp_path, capsys, kind):
    config = tiny_study(
        tmp_path,
        dataset=str(_write(tmp_path, kind)),
        placements=["seed-ffn"],
        seeds=[0],
        data={"val_fraction": 0.25, "chat_template": TEMPLATE},
    )
    config["train"].update(steps=4, block_size=16)
    config["eval"]["tasks"] = [{"name": "answer", "max_new_tokens": 4}]
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(config))
    assert run_cli(["run", str(path)]) == 0
    with Store(tmp_path / "out", create=False, writer=False) as store:
        runs = store.runs(store.study()["study_id"])
        metrics = store.metrics()
    assert [(r["placement"], r["status"]) for r in runs] == [
        ("zero-shot", "done"),
        ("seed-ffn", "done"),
    ]
    for r in runs:
        m = metrics[r["run_id"]]
        assert m["accuracy"] == m["task:answer"] and 0.0 <= m["accuracy"] <= 1.0
        # 6 val examples; the scored tokens are the answers' 2 words, "." and EOS.
        assert m["eval_tokens"] == 6 * 4
    capsys.readouterr()
    assert run_cli(["report", str(tmp_path / "out"), "--metric", "accuracy"]) == 0
    report = (tmp_path / "out" / "report" / "report.md").read_text()
    assert "Task accuracy" in report and "answer" in report


# --- aggregation over seeds -----------------------------------------------------------------

ACC = {"attention": [0.20, 0.30, 0.25], "mlp": [0.60, 0.70, 0.80]}


def _accuracy_store(path: Path) -> Path:
    from report_fixtures import _spec, modules

    from loraplace.runs import RunResult

    store = Store(path)
    store.add_study("s1", "acc", {"name": "acc"}, "loraplace run acc.yaml")
    results = [(_spec("acc", "zero-shot", "zero-shot", 0, ()), 0.05)]
    for label, role in (("attention", "attn.qkv"), ("mlp", "mlp.up")):
        mods = modules([(role, [0, 1, 2, 3])])
        results += [(_spec("acc", label, "lora", s, mods), a) for s, a in enumerate(ACC[label])]
    store.add_runs("s1", [spec for spec, _ in results])
    for spec, acc in results:
        metrics = {"eval_loss": 3.0 - acc, "task:answer": acc, "accuracy": acc}
        metrics.update(trainable_params=1000.0, train_time_s=1.0)
        store.save_result(RunResult(spec.run_id, "done", metrics=metrics))
    store.close()
    return path


def test_accuracy_aggregates_with_t_intervals_and_paired_tests(tmp_path):
    from scipy import stats

    from loraplace.analysis import read_study_data, summarize
    from loraplace.analysis.task_metrics import best_tests, resolve_metric, task_metrics, task_rows

    s = summarize(read_study_data(_accuracy_store(tmp_path / "a.db"), None), None)
    assert task_metrics(s) == ["task:answer", "accuracy"]
    assert resolve_metric(s, "answer") == "task:answer" and resolve_metric(s, "loss") == "loss"
    rows = {r.placement: r for r in task_rows(s, ["task:answer"])}
    for label, values in ACC.items():
        e = rows[label].values["task:answer"]
        half = stats.t.ppf(0.975, 2) * stats.sem(values)
        assert (e.mean, e.ci, e.n) == (pytest.approx(sum(values) / 3), pytest.approx(half), 3)
    best, tests = best_tests(list(rows.values()), "task:answer")
    assert best == "mlp" and [t.other for t in tests] == ["zero-shot", "attention"]
    p_att = stats.ttest_rel(ACC["mlp"], ACC["attention"]).pvalue
    p_zs = stats.ttest_1samp([a - 0.05 for a in ACC["mlp"]], 0).pvalue  # zero-shot: constant
    assert tests[1].test.p == pytest.approx(p_att) and tests[0].test.p == pytest.approx(p_zs)
    assert tests[1].test.p_holm == pytest.approx(min(1.0, 2 * min(p_att, p_zs)))
    assert tests[1].verdict == ("mlp higher" if tests[1].test.p_holm < 0.05 else "within noise")


def test_unknown_report_metric_is_one_line(tmp_path, capsys):
    _accuracy_store(tmp_path / "a.db")
    assert run_cli(["report", str(tmp_path / "a.db"), "--metric", "bleu"]) == 2
    err = capsys.readouterr().err
    assert "stores metric 'bleu'" in err and "loss, task:answer, accuracy" in err


def _llama_like(tok):
    """A tiny random LLaMA over the test vocabulary (RoPE: positions must be right)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=len(tok),
        max_position_embeddings=64,
        bos_token_id=0,
        eos_token_id=0,
        pad_token_id=0,
    )
    return LlamaForCausalLM(cfg).eval()


def _prompts(tok, n: int, seed: int = 0) -> list[dict]:
    """Prompts of 1 to 12 words (and one empty), so batches need left padding."""
    import random

    rng = random.Random(seed)
    words = [w for p in SUBJECTS + VERBS + OBJECTS for w in p.split()]
    out = [{"prompt_ids": [], "reference": "x", "choices": []}]
    for _ in range(n - 1):
        text = " ".join(rng.choice(words) for _ in range(rng.randint(1, 12)))
        out.append({"prompt_ids": tok(text)["input_ids"], "reference": "x", "choices": []})
    return out


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_batched_left_padded_generation_gives_the_one_by_one_answers(loaded, family):
    from loraplace.train.task_metrics import greedy_answers

    model, tok = loaded
    if family == "llama":
        model = _llama_like(tok)
    examples = _prompts(tok, 40)
    one = TaskMetricSettings(name="em", max_new_tokens=6, stop=(), batch_size=1)
    many = TaskMetricSettings(name="em", max_new_tokens=6, stop=(), batch_size=16)
    alone = greedy_answers(model, tok, examples, one, "cpu")
    batched = greedy_answers(model, tok, examples, many, "cpu")
    assert batched == alone
    assert len(set(alone)) > 5  # the answers differ by prompt: a real comparison
    hand = [_greedy(model, tok, ex["prompt_ids"] or [0], 6) for ex in examples[:5]]
    assert alone[:5] == hand


def test_prompts_near_the_context_end_go_alone():
    from loraplace.train.task_metrics import _batches

    examples = [{"prompt_ids": [1] * n} for n in (3, 60, 5, 2, 59)]
    # context 64, 6 new tokens: prompts up to 58 tokens batch; 59 and 60 go alone.
    assert list(_batches(examples, 2, room=58)) == [[3, 0], [2], [4], [1]]
