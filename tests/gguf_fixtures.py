"""A tiny LLaMA written as a GGUF file with the ``gguf`` package's own writer.

Two layers, hidden 64, GQA 4/2 heads, a 40-token byte-level BPE vocabulary: small enough to
write and dequantize in a second, with real Q8_0 blocks so the dequantizing path runs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

HIDDEN, FFN, LAYERS, HEADS, KV_HEADS = 64, 128, 2, 4, 2
# Byte-level BPE pieces ("Ġ" is a leading space); ids 0-2 are the special tokens.
TOKENS = (
    ["<unk>", "<s>", "</s>"]
    + list("abcdefghijklmnopqrstuvwxyz")
    + ["Ġ", "Ġa", "Ġb", "ab", "ba", "Ġt", "th", "he", "Ġth", "the", "Ġthe"]
)
MERGES = ["Ġ a", "Ġ b", "a b", "b a", "Ġ t", "t h", "h e", "Ġt h", "th e", "Ġth e"]


def tiny_llama_tensors(seed: int = 0) -> dict[str, np.ndarray]:
    """GGUF tensor name -> weights (PyTorch orientation: out x in)."""
    rng = np.random.default_rng(seed)
    kv = HIDDEN // HEADS * KV_HEADS

    def w(rows: int, cols: int) -> np.ndarray:
        return (rng.standard_normal((rows, cols)) * 0.05).astype(np.float32)

    out = {"token_embd.weight": w(len(TOKENS), HIDDEN)}
    for i in range(LAYERS):
        out |= {
            f"blk.{i}.attn_q.weight": w(HIDDEN, HIDDEN),
            f"blk.{i}.attn_k.weight": w(kv, HIDDEN),
            f"blk.{i}.attn_v.weight": w(kv, HIDDEN),
            f"blk.{i}.attn_output.weight": w(HIDDEN, HIDDEN),
            f"blk.{i}.ffn_gate.weight": w(FFN, HIDDEN),
            f"blk.{i}.ffn_up.weight": w(FFN, HIDDEN),
            f"blk.{i}.ffn_down.weight": w(HIDDEN, FFN),
            f"blk.{i}.attn_norm.weight": np.ones(HIDDEN, np.float32),
            f"blk.{i}.ffn_norm.weight": np.ones(HIDDEN, np.float32),
        }
    out["output_norm.weight"] = np.ones(HIDDEN, np.float32)
    return out


def write_tiny_gguf(
    path: Path,
    *,
    quant: str = "Q8_0",
    arch: str = "llama",
    seed: int = 0,
    raw_type: str | None = None,
) -> Path:
    """Write the tiny LLaMA to ``path``: matrices in ``quant`` (F32 or Q8_0), norms in F32.

    arch: the ``general.architecture`` recorded (another name makes an unsupported model).
    raw_type: store one matrix as this GGML type's bytes (one nothing can dequantize).
    """
    import gguf

    qtype = gguf.GGMLQuantizationType[quant]
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_name("tiny-gguf-llama")
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_Q8_0 if quant == "Q8_0" else 0)
    writer.add_context_length(128)
    writer.add_embedding_length(HIDDEN)
    writer.add_block_count(LAYERS)
    writer.add_feed_forward_length(FFN)
    writer.add_head_count(HEADS)
    writer.add_head_count_kv(KV_HEADS)
    writer.add_rope_dimension_count(HIDDEN // HEADS)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_vocab_size(len(TOKENS))
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(TOKENS)
    writer.add_token_types([3, 3, 3] + [1] * (len(TOKENS) - 3))
    writer.add_token_merges(MERGES)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_chat_template(
        "{% for m in messages %}<s>{{ m['role'] }} {{ m['content'] }}</s>{% endfor %}"
        "{% if add_generation_prompt %}<s>assistant {% endif %}"
    )
    for i, (name, t) in enumerate(tiny_llama_tensors(seed).items()):
        if raw_type is not None and i == 1:
            rtype = gguf.GGMLQuantizationType[raw_type]
            block, type_size = gguf.GGML_QUANT_SIZES[rtype]
            raw = np.zeros((t.shape[0], t.shape[1] // block * type_size), np.uint8)
            writer.add_tensor(name, raw, raw_dtype=rtype)  # shape read from the byte shape
        elif t.ndim == 2 and qtype != gguf.GGMLQuantizationType.F32:
            writer.add_tensor(name, gguf.quants.quantize(t, qtype), raw_dtype=qtype)
        else:
            writer.add_tensor(name, t)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
