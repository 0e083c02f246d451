"""Writes the tiny configs under tests/configs/<family>/config.json (run once, by hand).

The files are committed; tests read them and never need the hub. Re-run this after a
transformers upgrade to refresh them: python tests/configs/make_configs.py
"""

from pathlib import Path

import transformers as T

HERE = Path(__file__).parent
TXT = dict(
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    vocab_size=100,
    bos_token_id=0,
    eos_token_id=0,
    pad_token_id=0,
)
VIS = dict(
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    image_size=28,
    patch_size=14,
)
MLA = dict(
    n_routed_experts=4,
    n_shared_experts=1,
    num_experts_per_tok=2,
    moe_intermediate_size=32,
    q_lora_rank=48,
    kv_lora_rank=32,
    qk_rope_head_dim=8,
    qk_nope_head_dim=16,
    v_head_dim=16,
    first_k_dense_replace=1,
)
CONFIGS = {
    # the numbers: E=8, H=256, I=512 -> 262,144 expert params per layer at r=16
    "mixtral": T.MixtralConfig(
        **{**TXT, "hidden_size": 256, "intermediate_size": 512}, num_local_experts=8
    ),
    "qwen2_moe": T.Qwen2MoeConfig(
        **TXT,
        num_experts=4,
        num_experts_per_tok=2,
        moe_intermediate_size=32,
        shared_expert_intermediate_size=64,
    ),
    "qwen3_moe": T.Qwen3MoeConfig(
        **TXT, num_experts=4, num_experts_per_tok=2, moe_intermediate_size=32
    ),
    "olmoe": T.OlmoeConfig(**TXT, num_experts=4, num_experts_per_tok=2),
    "deepseek_v2": T.DeepseekV2Config(**TXT, **MLA),
    "deepseek_v3": T.DeepseekV3Config(**TXT, **MLA, n_group=1, topk_group=1),
    "llava": T.LlavaConfig(
        text_config=T.LlamaConfig(**TXT),
        vision_config=T.CLIPVisionConfig(**VIS),
        image_token_index=99,
    ),
    "qwen2_vl": T.Qwen2VLConfig(
        text_config=dict(model_type="qwen2_vl_text", **TXT),
        vision_config=dict(
            depth=2,
            embed_dim=32,
            hidden_size=64,
            num_heads=4,
            mlp_ratio=2,
            in_chans=3,
            patch_size=14,
            spatial_merge_size=2,
        ),
        image_token_id=98,
        video_token_id=97,
    ),
    "gemma3": T.Gemma3Config(
        text_config=T.Gemma3TextConfig(**TXT, head_dim=16),
        vision_config=T.SiglipVisionConfig(**VIS),
        mm_tokens_per_image=4,
        image_token_index=99,
    ),
    "jamba": T.JambaConfig(
        **{**TXT, "num_hidden_layers": 4},
        attn_layer_period=2,
        attn_layer_offset=1,
        expert_layer_period=2,
        expert_layer_offset=1,
        num_experts=4,
        mamba_d_state=8,
        mamba_expand=2,
        mamba_dt_rank=16,
    ),
    "falcon_h1": T.FalconH1Config(
        **TXT,
        mamba_d_ssm=128,
        mamba_n_heads=8,
        mamba_d_head=16,
        mamba_d_state=8,
        mamba_n_groups=1,
    ),
}

if __name__ == "__main__":
    for family, config in CONFIGS.items():
        config.save_pretrained(HERE / family)
        print("wrote", HERE / family / "config.json")
