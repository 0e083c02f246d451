"""The real SmolLM2-135M-Instruct, loaded from its GGUF wheel (installed by scripts/setup.sh).

Slow: the first use dequantizes 272 Q4_1 tensors (~60 s on a busy 2-core machine) into the
session's cache, which every test here then shares.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow

NAME = "smollm2-135m-instruct"
ATTENTION = ["q_proj", "k_proj", "v_proj", "o_proj"]
ALL_LINEAR = ATTENTION + ["gate_proj", "up_proj", "down_proj"]


@pytest.fixture(scope="session")
def smollm2(loraplace_cache):
    """(model, tokenizer) of the real SmolLM2, converted once per session cache."""
    from loraplace.models import load_model

    return load_model(NAME)


def test_plan_counts_equal_peft_on_the_loaded_model(smollm2, capsys):
    from peft import LoraConfig, get_peft_model

    from loraplace.cli import run_cli

    capsys.readouterr()
    code = run_cli(["plan", NAME, "attention", "mlp", "all-linear", "--rank", "8"])
    out = capsys.readouterr().out
    assert code == 0
    rows = {
        ln.split("│")[1].strip(): ln.split("│")[3].strip()
        for ln in out.splitlines()[:9]
        if ln.count("│") >= 5
    }
    assert rows == {"attention": "921,600", "mlp": "1,520,640", "all-linear": "2,442,240"}
    model, _ = smollm2
    counts = {}
    for name, targets in (("attention", ATTENTION), ("all-linear", ALL_LINEAR)):
        net = get_peft_model(model, LoraConfig(r=8, target_modules=targets))
        counts[name] = sum(p.numel() for p in net.parameters() if p.requires_grad)
        model = net.unload()
    assert counts == {"attention": 921_600, "all-linear": 2_442_240}


def test_greedy_answer_through_the_chat_template_and_one_loss(smollm2):
    import torch

    model, tokenizer = smollm2
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    ids = tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    out = model.generate(**ids, max_new_tokens=12, do_sample=False)
    answer = tokenizer.decode(out[0][ids["input_ids"].shape[1] :], skip_special_tokens=True)
    assert answer == "The capital of France is Paris."
    enc = tokenizer(
        "The capital of France is Paris. It is known for the Eiffel Tower.", return_tensors="pt"
    )
    with torch.no_grad():
        loss = model(**enc, labels=enc["input_ids"]).loss.item()
    assert enc["input_ids"].shape == (1, 16)
    assert loss == pytest.approx(2.07196, abs=2e-3)  # fp32 weights dequantized from Q4_1


def test_warm_plan_reads_the_cached_config_without_torch(smollm2, loraplace_cache):
    """A second plan converts nothing and never imports torch: that is why it takes ~1.5 s."""
    (entry,) = [p for p in (loraplace_cache / "gguf").iterdir() if p.name.endswith("-v1")]
    info = json.loads((entry / "loraplace_gguf.json").read_text())
    assert info["quant"] == "Q4_1" and info["tensor_types"] == {"F32": 61, "Q4_1": 210, "Q8_0": 1}
    code = (
        "import sys; from loraplace.cli import run_cli; "
        f"rc = run_cli(['plan', '{NAME}', 'all-linear', '--rank', '8']); "
        "print('torch' in sys.modules, rc)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert proc.stdout.strip().splitlines()[-1] == "False 0", proc.stdout + proc.stderr
    assert "converting" not in proc.stderr


CAPITALS = [
    ("France", "Paris"),
    ("Germany", "Berlin"),
    ("Italy", "Rome"),
    ("Spain", "Madrid"),
    ("Japan", "Tokyo"),
    ("Egypt", "Cairo"),
    ("Kenya", "Nairobi"),
    ("Peru", "Lima"),
    ("Norway", "Oslo"),
    ("Greece", "Athens"),
    ("Cuba", "Havana"),
    ("Chile", "Santiago"),
    ("Poland", "Warsaw"),
    ("Austria", "Vienna"),
    ("Ireland", "Dublin"),
    ("Portugal", "Lisbon"),
]


def test_a_users_messages_jsonl_end_to_end_with_the_chat_template(smollm2, tmp_path):
    """The user's own `messages` file: trained through SmolLM2's chat template, scored by
    exact match, and the report's Task accuracy table shows the stored accuracy."""
    import sqlite3

    from loraplace.cli import run_cli

    data = tmp_path / "capitals.jsonl"
    data.write_text(
        "".join(
            json.dumps(
                {
                    "messages": [
                        {"role": "user", "content": f"What is the capital of {c}? One word."},
                        {"role": "assistant", "content": city},
                    ]
                }
            )
            + "\n"
            for c, city in CAPITALS
        )
    )
    study = tmp_path / "study.yaml"
    study.write_text(
        f"name: capitals\nmodel: {NAME}\ndataset: {data}\nretain: null\n"
        "placements: [attention]\nseeds: [0]\nthreads: 2\n"
        "data: {val_fraction: 0.25}\n"
        "train: {steps: 2, batch_size: 4, lr: 1.0e-3, warmup_steps: 0, precision: fp32}\n"
        "eval:\n  every: 0\n  tasks:\n    - {name: capital, kind: exact_match, max_new_tokens: 6}\n"
    )
    out = tmp_path / "runs"
    assert run_cli(["run", str(study), "--out", str(out)]) == 0
    with sqlite3.connect(out / "loraplace.db") as db:
        rows = db.execute(
            "SELECT r.placement, m.name, m.value FROM metrics m JOIN runs r ON r.run_id = m.run_id "
            "WHERE m.name IN ('eval_loss', 'task:capital') ORDER BY r.placement, m.name"
        ).fetchall()
    got = {(p, n): v for p, n, v in rows}
    # 4 val examples: accuracy is a multiple of 1/4; zero-shot SmolLM2 answers in a sentence.
    assert got[("zero-shot", "task:capital")] == 0.0
    assert got[("attention", "task:capital")] * 4 == round(got[("attention", "task:capital")] * 4)
    assert got[("attention", "eval_loss")] < got[("zero-shot", "eval_loss")]
    assert run_cli(["report", str(out), "--out", str(tmp_path / "report")]) == 0
    text = (tmp_path / "report" / "report.md").read_text()
    table = text.split("## Task accuracy", 1)[1].split("\n## ", 1)[0]
    attention = next(ln for ln in table.splitlines() if ln.startswith("| attention |"))
    assert f"{100 * got[('attention', 'task:capital')]:.2f}" in attention
    assert "chat template" in text
