"""Tiny configs of every model family loraplace knows, shared by the placement tests."""

import warnings
from pathlib import Path

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForImageTextToText,
    GPT2Config,
    GPTNeoXConfig,
    LlamaConfig,
    MistralConfig,
    OPTConfig,
    Phi3Config,
    Qwen2Config,
)

V = 100  # vocabulary of the tiny configs

FAMILIES = {
    "gpt2": lambda: GPT2Config(
        n_layer=2, n_embd=32, n_head=4, vocab_size=V, n_positions=64, bos_token_id=0, eos_token_id=0
    ),
    "llama": lambda: LlamaConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=V,
        bos_token_id=0,
        eos_token_id=0,
        pad_token_id=0,
    ),
    "mistral": lambda: MistralConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=V,
        bos_token_id=0,
        eos_token_id=0,
    ),
    "qwen2": lambda: Qwen2Config(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=V,
        bos_token_id=0,
        eos_token_id=0,
    ),
    "gpt_neox": lambda: GPTNeoXConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        vocab_size=V,
        bos_token_id=0,
        eos_token_id=0,
    ),
    "opt": lambda: OPTConfig(
        hidden_size=32,
        ffn_dim=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        vocab_size=V,
        word_embed_proj_dim=32,
        bos_token_id=0,
        eos_token_id=0,
        pad_token_id=0,
    ),
    "phi3": lambda: Phi3Config(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=V,
        pad_token_id=0,
        bos_token_id=0,
        eos_token_id=0,
    ),
}


SAVED_CONFIGS = Path(__file__).parent / "configs"  # config.json of the newer families


def peft_model_of_saved_config(family: str, lora: LoraConfig) -> PeftModel:
    """A seeded tiny model of tests/configs/<family> (causal LM, else image-text) under PEFT."""
    config = AutoConfig.from_pretrained(SAVED_CONFIGS / family)
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # PEFT's notes on fused experts and towers
        try:
            model = AutoModelForCausalLM.from_config(config)
        except ValueError:
            model = AutoModelForImageTextToText.from_config(config)
        return get_peft_model(model, lora)
