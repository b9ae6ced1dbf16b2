#!/usr/bin/env python3
"""Golden data for the decoder families beyond Llama (issue 14), made by transformers itself.

Pinned: torch 2.15.0 (PyPI wheel, run on the CPU), transformers 5.17.0, safetensors 0.8 (any 0.x reads the same files).
Runs on a CPU in a scratch venv (nothing of it enters the repository):

    python3 -m venv /root/.cache/ctcal/golden-venv
    /root/.cache/ctcal/golden-venv/bin/pip install torch "transformers==5.17.*" safetensors numpy
    /root/.cache/ctcal/golden-venv/bin/python tests/golden/make_family_golden.py --out tests/golden/data

For each case it (1) makes a tiny random model with AutoConfig.for_model + from_config, plants
large features (q/k/v scaled up, a few large k_proj rows, per-head V ranges, random norm weights
around 1, or around 0 for Gemma 3's (1 + w) norms) and writes it with save_pretrained in the
case's dtype (some configs rewritten to the classic hub spelling); (2) reloads it in float64 with
a registered attention implementation that records Q, K and V exactly where attention and the
KV cache see them (after q_norm/k_norm and RoPE, K/V before the GQA repeat) and then returns
the family's own eager attention, so sliding windows stay exact; (3) writes, in the format of
make_golden.py (so forward_golden_test.cpp runs every case): per-layer Q/K/V min/max per tensor
and per head (also after the Sylvester rotation H/sqrt(d) of R3/R2), the FP8 scales absmax/448
they imply, raw rows, logits and loss for fixed token ids. Samples (11 and 24 tokens) are longer
than every sliding window here (5 or 6). gpt-oss cases plant sinks, router and expert biases and
expert weights large enough to reach the SwiGLU clamp; gpt_oss_mxfp4 holds its experts in MXFP4
(random blocks/scales; the reference model runs transformers' own dequantization of them).
"""
import argparse
import contextlib
import importlib
import json
import math
import os
import re
import shutil
import sys

import torch
import transformers
from transformers import AttentionInterface, AutoConfig, AutoModelForCausalLM
from transformers import masking_utils

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_mamba2_golden import float32_casts_lifted  # noqa: E402  (the same lifting as the mixer's golden data)

SAMPLE_LENGTHS = [11, 24]
ROW_TOKENS = 2  # raw rows recorded for the first sample
CAPTURE = "ctcal_capture"

# name, model_type, config kwargs, dtype, config spelling ("v5" as saved, "classic" rewritten)
# The Qwen3.5 / Qwen3.5-MoE multimodal wrappers' shared parts: the text model's multimodal RoPE
# (text positions make it plain) and a one-block vision tower with its special token ids.
QWEN3_5_MM_ROPE = {"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.25,
                   "mrope_section": [2, 1, 1], "mrope_interleaved": True}
QWEN3_5_MM_WRAPPER = dict(
    vision_config=dict(depth=1, hidden_size=16, intermediate_size=32, num_heads=2, patch_size=4, spatial_merge_size=2,
                       temporal_patch_size=2, out_hidden_size=64, num_position_embeddings=16),
    image_token_id=98, video_token_id=99, vision_start_token_id=96, vision_end_token_id=97, tie_word_embeddings=False)

CASES = [
    ("qwen2_bias_bf16", "qwen2",
     dict(hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
          num_key_value_heads=2, vocab_size=96, max_position_embeddings=64, tie_word_embeddings=False,
          rope_parameters={"rope_type": "default", "rope_theta": 1000000.0}),
     torch.bfloat16, "classic"),
    ("qwen2_sliding_fp32", "qwen2",
     dict(hidden_size=64, intermediate_size=80, num_hidden_layers=3, num_attention_heads=4,
          num_key_value_heads=1, vocab_size=96, max_position_embeddings=64, tie_word_embeddings=True,
          use_sliding_window=True, sliding_window=6, max_window_layers=1,
          rope_parameters={"rope_type": "default", "rope_theta": 10000.0}),
     torch.float32, "v5"),
    ("qwen3_head_dim_bf16", "qwen3",
     dict(hidden_size=48, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
          num_key_value_heads=2, head_dim=32, vocab_size=96, max_position_embeddings=64,
          tie_word_embeddings=False, rope_parameters={"rope_type": "default", "rope_theta": 1000000.0}),
     torch.bfloat16, "classic"),
    ("qwen3_sliding_bias_fp32", "qwen3",
     dict(hidden_size=64, intermediate_size=96, num_hidden_layers=3, num_attention_heads=4,
          num_key_value_heads=2, head_dim=16, vocab_size=96, max_position_embeddings=64,
          tie_word_embeddings=True, attention_bias=True, use_sliding_window=True, sliding_window=5,
          max_window_layers=2, rope_parameters={"rope_type": "linear", "rope_theta": 10000.0, "factor": 2.0}),
     torch.float32, "v5"),
    ("gemma3_text_fp32", "gemma3_text",
     dict(hidden_size=64, intermediate_size=96, num_hidden_layers=3, num_attention_heads=4,
          num_key_value_heads=2, head_dim=16, vocab_size=96, max_position_embeddings=64,
          query_pre_attn_scalar=24, sliding_window=6,
          layer_types=["sliding_attention", "full_attention", "sliding_attention"],
          rope_parameters={"full_attention": {"rope_type": "linear", "rope_theta": 1000000.0, "factor": 4.0},
                           "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0}}),
     torch.float32, "v5"),
    ("gemma3_text_bf16_classic", "gemma3_text",
     dict(hidden_size=64, intermediate_size=80, num_hidden_layers=4, num_attention_heads=2,
          num_key_value_heads=1, head_dim=32, vocab_size=96, max_position_embeddings=64,
          query_pre_attn_scalar=32, sliding_window=5, final_logit_softcapping=30.0,
          sliding_window_pattern=2,
          rope_parameters={"full_attention": {"rope_type": "default", "rope_theta": 1000000.0},
                           "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0}}),
     torch.bfloat16, "gemma_classic"),
    ("gemma3_mm_fp32", "gemma3",
     dict(text_config=dict(hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                           num_key_value_heads=2, head_dim=16, vocab_size=100, max_position_embeddings=64,
                           query_pre_attn_scalar=16, sliding_window=6,
                           layer_types=["sliding_attention", "full_attention"]),
          vision_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                             image_size=16, patch_size=4),
          mm_tokens_per_image=4, boi_token_index=96, eoi_token_index=97, image_token_index=98),
     torch.float32, "v5"),
    ("phi3_longrope_fp32", "phi3",
     dict(hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
          num_key_value_heads=2, vocab_size=96, max_position_embeddings=64, original_max_position_embeddings=16,
          tie_word_embeddings=False, pad_token_id=0,
          rope_parameters={"rope_type": "longrope", "rope_theta": 10000.0,
                           "short_factor": [1.0, 1.1, 1.3, 1.6, 2.0, 2.5, 3.1, 3.8],
                           "long_factor": [1.0, 1.5, 2.2, 3.0, 4.1, 5.5, 7.2, 9.0]}),
     torch.float32, "v5"),
    ("phi3_partial_su_sliding_bf16", "phi3",
     dict(hidden_size=64, intermediate_size=80, num_hidden_layers=2, num_attention_heads=4,
          num_key_value_heads=4, vocab_size=96, max_position_embeddings=48, original_max_position_embeddings=12,
          sliding_window=7, tie_word_embeddings=True, pad_token_id=0,
          rope_parameters={"rope_type": "longrope", "rope_theta": 10000.0, "partial_rotary_factor": 0.5,
                           "short_factor": [1.0, 1.2, 1.7, 2.4], "long_factor": [1.0, 2.0, 3.5, 6.0]}),
     torch.bfloat16, "phi_classic"),
    ("qwen3_moe_fp32", "qwen3_moe",
     dict(hidden_size=64, intermediate_size=96, moe_intermediate_size=16, num_experts=8, num_experts_per_tok=2,
          norm_topk_prob=True, decoder_sparse_step=1, mlp_only_layers=[1], num_hidden_layers=3,
          num_attention_heads=4, num_key_value_heads=2, head_dim=16, vocab_size=96, max_position_embeddings=64,
          tie_word_embeddings=False, rope_parameters={"rope_type": "default", "rope_theta": 1000000.0}),
     torch.float32, "v5"),
    ("qwen3_moe_fused_sliding_bf16", "qwen3_moe",
     dict(hidden_size=64, intermediate_size=80, moe_intermediate_size=24, num_experts=6, num_experts_per_tok=3,
          norm_topk_prob=False, decoder_sparse_step=2, num_hidden_layers=4, num_attention_heads=4,
          num_key_value_heads=1, head_dim=32, vocab_size=96, max_position_embeddings=64, use_sliding_window=True,
          sliding_window=5, tie_word_embeddings=True,
          rope_parameters={"rope_type": "default", "rope_theta": 10000.0}),
     torch.bfloat16, "fused_experts"),
    ("mixtral_sliding_fp32", "mixtral",
     dict(hidden_size=64, intermediate_size=48, num_local_experts=4, num_experts_per_tok=2, num_hidden_layers=2,
          num_attention_heads=4, num_key_value_heads=2, vocab_size=96, max_position_embeddings=64,
          sliding_window=6, tie_word_embeddings=False,
          rope_parameters={"rope_type": "default", "rope_theta": 1000000.0}),
     torch.float32, "v5"),
    ("mixtral_fused_bf16", "mixtral",
     dict(hidden_size=64, intermediate_size=40, num_local_experts=8, num_experts_per_tok=2, num_hidden_layers=2,
          num_attention_heads=4, num_key_value_heads=4, vocab_size=96, max_position_embeddings=64,
          tie_word_embeddings=False, rope_parameters={"rope_type": "default", "rope_theta": 10000.0}),
     torch.bfloat16, "fused_experts"),
    # gpt-oss: sinks, q/k/v/o biases, alternating sliding/full layers (window 6 < samples), YaRN,
    # biased router (top-k then softmax), clamped SwiGLU experts stored fused [E, H, 2 I].
    ("gpt_oss_yarn_fp32", "gpt_oss",
     dict(hidden_size=64, intermediate_size=32, num_local_experts=4, num_experts_per_tok=2, num_hidden_layers=3,
          num_attention_heads=4, num_key_value_heads=2, head_dim=32, vocab_size=96, max_position_embeddings=256,
          sliding_window=6, tie_word_embeddings=False,
          rope_parameters={"rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0, "beta_fast": 32.0,
                           "beta_slow": 1.0, "truncate": False, "original_max_position_embeddings": 64}),
     torch.float32, "v5"),
    # hub spelling (rope_theta + rope_scaling, torch_dtype), truncated ramp, an explicit layer_types
    ("gpt_oss_classic_bf16", "gpt_oss",
     dict(hidden_size=64, intermediate_size=48, num_local_experts=6, num_experts_per_tok=3, num_hidden_layers=4,
          num_attention_heads=4, num_key_value_heads=1, head_dim=16, vocab_size=96, max_position_embeddings=128,
          sliding_window=5, tie_word_embeddings=False,
          layer_types=["sliding_attention", "full_attention", "full_attention", "sliding_attention"],
          rope_parameters={"rope_type": "yarn", "rope_theta": 150000.0, "factor": 8.0, "beta_fast": 16.0,
                           "beta_slow": 2.0, "original_max_position_embeddings": 32}),
     torch.bfloat16, "classic"),
    # experts in MXFP4 as the published checkpoints hold them (random blocks/scales; the reference
    # runs transformers' own convert_moe_packed_tensors of them in float64)
    ("gpt_oss_mxfp4", "gpt_oss",
     dict(hidden_size=64, intermediate_size=64, num_local_experts=4, num_experts_per_tok=2, num_hidden_layers=2,
          num_attention_heads=4, num_key_value_heads=2, head_dim=16, vocab_size=96, max_position_embeddings=128,
          sliding_window=6, tie_word_embeddings=False,
          rope_parameters={"rope_type": "yarn", "rope_theta": 150000.0, "factor": 32.0, "beta_fast": 32.0,
                           "beta_slow": 1.0, "truncate": False, "original_max_position_embeddings": 16}),
     torch.bfloat16, "mxfp4"),
    # Qwen3.5 dense (issue 28): gated DeltaNet layers (linear_attn) with gated full attention
    # (self_attn: q_proj rows [query | gate] per head, (1 + w) q/k norms, partial rotary 0.25) every
    # few layers. Three full-attention layers (2, 4 and 5, two in a row), samples longer than the
    # DeltaNet chunk (64) and the conv kernel (4); head_k_dim != head_v_dim, GQA 2; fp32 (< 1 MB).
    ("qwen3_5_text_fp32", "qwen3_5_text",
     dict(hidden_size=48, intermediate_size=64, num_hidden_layers=6, num_attention_heads=4,
          num_key_value_heads=2, head_dim=16, vocab_size=96, max_position_embeddings=256,
          tie_word_embeddings=False, linear_num_key_heads=2, linear_num_value_heads=4, linear_key_head_dim=16,
          linear_value_head_dim=24, linear_conv_kernel_dim=4,
          layer_types=["linear_attention", "linear_attention", "full_attention", "linear_attention",
                       "full_attention", "full_attention"],
          rope_parameters={"rope_type": "default", "rope_theta": 10000000.0, "partial_rotary_factor": 0.25,
                           "mrope_section": [2, 1, 1], "mrope_interleaved": True}),
     torch.float32, "v5"),
    # The multimodal wrapper (Qwen3_5ForConditionalGeneration: model.language_model.*, model.visual.*,
    # config under text_config), bf16, layer_types from full_attention_interval 2 (layers 1 and 3).
    ("qwen3_5_mm_bf16", "qwen3_5",
     dict(text_config=dict(hidden_size=64, intermediate_size=80, num_hidden_layers=4, num_attention_heads=2,
                           num_key_value_heads=1, head_dim=32, vocab_size=100, max_position_embeddings=256,
                           linear_num_key_heads=1, linear_num_value_heads=2, linear_key_head_dim=16,
                           linear_value_head_dim=16, linear_conv_kernel_dim=3, full_attention_interval=2,
                           rope_parameters=QWEN3_5_MM_ROPE),
          **QWEN3_5_MM_WRAPPER),
     torch.bfloat16, "v5"),
    # Qwen3.5-MoE (issue 28): Qwen3.5's layers with Qwen3_5MoeSparseMoeBlock on every layer (softmax
    # top-2 of 6, always renormalised; a shared expert of width 24 gated by sigmoid(shared_expert_gate)).
    # Full attention at layers 2 and 4 after linear ones; experts per expert as save_pretrained writes them.
    ("qwen3_5_moe_text_fp32", "qwen3_5_moe_text",
     dict(hidden_size=48, moe_intermediate_size=16, shared_expert_intermediate_size=24, num_experts=6,
          num_experts_per_tok=2, num_hidden_layers=5, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
          vocab_size=96, max_position_embeddings=256, tie_word_embeddings=False, linear_num_key_heads=2,
          linear_num_value_heads=4, linear_key_head_dim=16, linear_value_head_dim=24, linear_conv_kernel_dim=4,
          layer_types=["linear_attention", "linear_attention", "full_attention", "linear_attention",
                       "full_attention"],
          rope_parameters={"rope_type": "default", "rope_theta": 10000000.0, "partial_rotary_factor": 0.25,
                           "mrope_section": [2, 1, 1], "mrope_interleaved": True}),
     torch.float32, "v5"),
    # The multimodal wrapper (Qwen3_5MoeForConditionalGeneration: model.language_model.*, text_config),
    # bf16, full_attention_interval 2 (layers 1 and 3), experts in transformers 5's fused 3-D layout.
    ("qwen3_5_moe_mm_bf16", "qwen3_5_moe",
     dict(text_config=dict(hidden_size=64, moe_intermediate_size=24, shared_expert_intermediate_size=32,
                           num_experts=4, num_experts_per_tok=2, num_hidden_layers=4, num_attention_heads=2,
                           num_key_value_heads=1, head_dim=32, vocab_size=100, max_position_embeddings=256,
                           linear_num_key_heads=1, linear_num_value_heads=2, linear_key_head_dim=16,
                           linear_value_head_dim=16, linear_conv_kernel_dim=3, full_attention_interval=2,
                           rope_parameters=QWEN3_5_MM_ROPE),
          **QWEN3_5_MM_WRAPPER),
     torch.bfloat16, "fused_experts"),
    # Qwen3-Next (issue 28): the DeltaNet's in-projections fused per key head (in_proj_qkvz, in_proj_ba;
    # 2 key heads serving 4 value heads), a dense Qwen3NextMLP on layer 1 (mlp_only_layers), sparse MoE
    # with shared expert elsewhere, top-k not renormalised; full attention at layers 2 and 4.
    ("qwen3_next_fp32", "qwen3_next",
     dict(hidden_size=48, intermediate_size=40, moe_intermediate_size=16, shared_expert_intermediate_size=24,
          num_experts=6, num_experts_per_tok=2, norm_topk_prob=False, decoder_sparse_step=1, mlp_only_layers=[1],
          num_hidden_layers=5, num_attention_heads=4, num_key_value_heads=2, head_dim=16, vocab_size=96,
          max_position_embeddings=256, tie_word_embeddings=False, linear_num_key_heads=2, linear_num_value_heads=4,
          linear_key_head_dim=16, linear_value_head_dim=24, linear_conv_kernel_dim=4,
          layer_types=["linear_attention", "linear_attention", "full_attention", "linear_attention",
                       "full_attention"],
          rope_parameters={"rope_type": "default", "rope_theta": 10000000.0, "partial_rotary_factor": 0.25}),
     torch.float32, "v5"),
    # bf16, decoder_sparse_step 2 (MoE on layers 1 and 3, dense 0 and 2), norm_topk_prob by default
    # (true), one key head serving 3 value heads, full_attention_interval 2.
    ("qwen3_next_sparse_step_bf16", "qwen3_next",
     dict(hidden_size=64, intermediate_size=48, moe_intermediate_size=24, shared_expert_intermediate_size=32,
          num_experts=4, num_experts_per_tok=2, decoder_sparse_step=2, num_hidden_layers=4, num_attention_heads=2,
          num_key_value_heads=1, head_dim=32, vocab_size=96, max_position_embeddings=256, tie_word_embeddings=True,
          linear_num_key_heads=1, linear_num_value_heads=3, linear_key_head_dim=16, linear_value_head_dim=16,
          linear_conv_kernel_dim=4, full_attention_interval=2,
          rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.5}),
     torch.bfloat16, "v5"),
    # Nemotron-H (issue 28): one block per layer by layers_block_type: Mamba2 (8 heads x 8, 2 groups,
    # state 16, chunk 16, in/out_proj and conv biases, dt clamped below at 0.05), attention without
    # RoPE at layers 1 and 4, relu2 MLP blocks; backbone.embeddings / norm_f.
    ("nemotron_h_fp32", "nemotron_h",
     dict(hidden_size=64, intermediate_size=96, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
          vocab_size=96, max_position_embeddings=256, tie_word_embeddings=False, mamba_num_heads=8, mamba_head_dim=8,
          n_groups=2, ssm_state_size=16, conv_kernel=4, chunk_size=16, use_bias=True, use_conv_bias=True,
          time_step_min=0.05, layer_norm_epsilon=1e-5,
          layers_block_type=["linear_attention", "full_attention", "mlp", "linear_attention", "full_attention",
                             "mlp"]),
     torch.float32, "v5"),
    # bf16, the hub's spelling (hybrid_override_pattern "M-*M*-", num_hidden_layers, torch_dtype), MQA,
    # Mamba2 without projection biases, 4 heads x 16 in one group, chunk 32; attention at layers 2 and 4.
    ("nemotron_h_pattern_bf16", "nemotron_h",
     dict(hidden_size=48, intermediate_size=64, num_attention_heads=3, num_key_value_heads=1, head_dim=16,
          vocab_size=96, max_position_embeddings=256, tie_word_embeddings=False, mamba_num_heads=4, mamba_head_dim=16,
          n_groups=1, ssm_state_size=8, conv_kernel=3, chunk_size=32, use_bias=False, use_conv_bias=True,
          time_step_min=0.02, layers_block_type=["linear_attention", "mlp", "full_attention", "linear_attention",
                                                 "full_attention", "mlp"]),
     torch.bfloat16, "nemotron_classic"),
    # Nemotron-H with MoE blocks (NemotronHMoE, the hub's Nemotron-3 layout): Mamba2, MoE, attention,
    # MoE, attention; 8 ungated relu2 experts in 2 groups (one kept), top 2, scores renormalised and
    # scaled by 2.5, a planted e_score_correction_bias, an ungated relu2 shared expert of width 48.
    ("nemotron_h_moe_fp32", "nemotron_h",
     dict(hidden_size=64, intermediate_size=96, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
          vocab_size=96, max_position_embeddings=256, tie_word_embeddings=False, mamba_num_heads=8, mamba_head_dim=8,
          n_groups=2, ssm_state_size=16, conv_kernel=4, chunk_size=16, use_bias=False, use_conv_bias=True,
          time_step_min=0.05, layer_norm_epsilon=1e-5, n_routed_experts=8, num_experts_per_tok=2,
          moe_intermediate_size=32, moe_shared_expert_intermediate_size=48, n_group=2, topk_group=1,
          routed_scaling_factor=2.5, norm_topk_prob=True,
          layers_block_type=["linear_attention", "moe", "full_attention", "moe", "full_attention"]),
     torch.float32, "v5"),
    # Granite 4 hybrid (issue 28): Mamba2 at layers 0 and 2, attention with RoPE at 1 and 3 (softmax
    # scale attention_multiplier 0.125, not 16^-0.5), MoE top-2 of 4 (fused input_linear /
    # output_linear) plus shared_mlp, embedding_multiplier 3, residual_multiplier 0.5, logits / 2.5,
    # dt clamped to [0.02, 0.6], chunk 16.
    ("granitemoehybrid_fp32", "granitemoehybrid",
     dict(hidden_size=64, intermediate_size=32, shared_intermediate_size=48, num_local_experts=4, num_experts_per_tok=2,
          num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2, vocab_size=96,
          max_position_embeddings=256, tie_word_embeddings=False, position_embedding_type="rope",
          rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
          embedding_multiplier=3.0, attention_multiplier=0.125, residual_multiplier=0.5, logits_scaling=2.5,
          mamba_n_heads=8, mamba_n_groups=2, mamba_d_state=16, mamba_d_conv=4, mamba_expand=2, mamba_chunk_size=16,
          mamba_conv_bias=True, mamba_proj_bias=False, time_step_limit=[0.02, 0.6],
          layer_types=["linear_attention", "full_attention", "linear_attention", "full_attention"]),
     torch.float32, "v5"),
    # bf16, no experts (num_local_experts 0: shared_mlp alone), no RoPE (position_embedding_type null),
    # tied embeddings, Mamba2 projection biases without conv bias, attention at layers 0 and 3 of 5.
    ("granitemoehybrid_dense_nope_bf16", "granitemoehybrid",
     dict(hidden_size=48, intermediate_size=32, shared_intermediate_size=64, num_local_experts=0,
          num_hidden_layers=5, num_attention_heads=3, num_key_value_heads=1, vocab_size=96,
          max_position_embeddings=256, tie_word_embeddings=True, position_embedding_type=None,
          embedding_multiplier=2.0, attention_multiplier=0.2, residual_multiplier=0.7, logits_scaling=1.5,
          mamba_n_heads=4, mamba_n_groups=1, mamba_d_state=8, mamba_d_conv=4, mamba_expand=2, mamba_chunk_size=32,
          mamba_conv_bias=False, mamba_proj_bias=True,
          layer_types=["full_attention", "linear_attention", "linear_attention", "full_attention",
                       "linear_attention"]),
     torch.bfloat16, "v5"),
    # SmolLM3 (issue 29): NoPE layers. no_rope_layer_interval 2 (layers 1 and 3 without RoPE), and
    # use_sliding_window, which SmolLM3Config.__post_init__ gives exactly the NoPE layers (window 6).
    ("smollm3_nope_sliding_fp32", "smollm3",
     dict(hidden_size=64, intermediate_size=96, num_hidden_layers=4, num_attention_heads=4,
          num_key_value_heads=2, vocab_size=96, max_position_embeddings=64, no_rope_layer_interval=2, pad_token_id=0,
          use_sliding_window=True, sliding_window=6,
          rope_parameters={"rope_type": "default", "rope_theta": 2000000.0}),
     torch.float32, "v5"),
    # hub spelling (rope_theta + rope_scaling linear, torch_dtype, no layer_types), an explicit
    # no_rope_layers list (layer 1 without RoPE), untied head, GQA 4:1.
    ("smollm3_classic_bf16", "smollm3",
     dict(hidden_size=64, intermediate_size=80, num_hidden_layers=3, num_attention_heads=4,
          num_key_value_heads=1, head_dim=32, vocab_size=96, max_position_embeddings=64, no_rope_layers=[1, 0, 1], pad_token_id=0,
          tie_word_embeddings=False, rope_parameters={"rope_type": "linear", "rope_theta": 10000.0, "factor": 2.0}),
     torch.bfloat16, "classic"),
    # OLMo 3 (issue 29): post-norms only, q/k RMSNorm over the whole projection (GQA: k_norm over
    # kv_dim), Olmo3Config's default layer_types (layers 0-2 slide with window 6, layer 3 full), a
    # RoPE per layer type (YaRN on the full layer, another theta on the sliding ones).
    ("olmo3_sliding_fp32", "olmo3",
     dict(hidden_size=64, intermediate_size=96, num_hidden_layers=4, num_attention_heads=4,
          num_key_value_heads=2, vocab_size=96, max_position_embeddings=64, sliding_window=6,
          tie_word_embeddings=False,
          rope_parameters={"full_attention": {"rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0,
                                              "original_max_position_embeddings": 16},
                           "sliding_attention": {"rope_type": "default", "rope_theta": 50000.0}}),
     torch.float32, "v5"),
    # hub spelling (rope_theta + rope_scaling for the full layers only, as Olmo3Config reads it; no
    # layer_types: every 4th layer full), q/k/v/o biases, tied embeddings, window 5.
    ("olmo3_classic_bias_bf16", "olmo3",
     dict(hidden_size=64, intermediate_size=80, num_hidden_layers=5, num_attention_heads=2,
          num_key_value_heads=2, head_dim=32, vocab_size=96, max_position_embeddings=64, sliding_window=5,
          attention_bias=True, tie_word_embeddings=True,
          rope_parameters={"full_attention": {"rope_type": "linear", "rope_theta": 20000.0, "factor": 2.0},
                           "sliding_attention": {"rope_type": "default", "rope_theta": 500000.0}}),
     torch.bfloat16, "olmo_classic"),
    # GLM-4.5 (issue 29): partial rotary 0.5, q/k/v biases (o_proj none), a dense first layer
    # (first_k_dense_replace 1), then sigmoid routing with a planted correction bias, 8 experts in 2
    # groups (topk_group 1: the experts come from the better group), top 2 renormalised and scaled by
    # 2.5, an ungated shared expert; experts per expert as save_pretrained writes them.
    ("glm4_moe_grouped_fp32", "glm4_moe",
     dict(hidden_size=64, intermediate_size=96, moe_intermediate_size=16, n_routed_experts=8, num_experts_per_tok=2,
          n_group=2, topk_group=1, n_shared_experts=1, first_k_dense_replace=1, norm_topk_prob=True,
          routed_scaling_factor=2.5, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
          vocab_size=96, max_position_embeddings=64, attention_bias=True, use_qk_norm=False, partial_rotary_factor=0.5,
          tie_word_embeddings=False,
          rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.5}),
     torch.float32, "v5"),
    # bf16, per-head q/k norms (use_qk_norm), two dense layers, one group, top 3 of 6 not renormalised,
    # a shared expert twice the expert width (n_shared_experts 2), experts in the fused 3-D layout.
    ("glm4_moe_qk_norm_fused_bf16", "glm4_moe",
     dict(hidden_size=64, intermediate_size=80, moe_intermediate_size=24, n_routed_experts=6, num_experts_per_tok=3,
          n_shared_experts=2, first_k_dense_replace=2, norm_topk_prob=False, num_hidden_layers=4,
          num_attention_heads=4, num_key_value_heads=1, head_dim=32, vocab_size=96, max_position_embeddings=64,
          use_qk_norm=True, tie_word_embeddings=True,
          rope_parameters={"rope_type": "default", "rope_theta": 1000000.0, "partial_rotary_factor": 0.5}),
     torch.bfloat16, "fused_experts"),
    # MiniMax-M2 (issue 29): q/k RMSNorm over the whole projection, partial rotary 0.5, every layer a
    # sparse MoE (block_sparse_moe.experts.{e}.w1/w3/w2 of width intermediate_size, as save_pretrained
    # writes them) with sigmoid routing, the block's e_score_correction_bias planted, top 2 of 6; the
    # config with the hub's extra keys (rotary_dim, scoring_func, use_routing_bias) vLLM reads.
    ("minimax_m2_fp32", "minimax_m2",
     dict(hidden_size=64, intermediate_size=16, num_local_experts=6, num_experts_per_tok=2, num_hidden_layers=3,
          num_attention_heads=4, num_key_value_heads=2, head_dim=16, vocab_size=96, max_position_embeddings=64,
          tie_word_embeddings=False,
          rope_parameters={"rope_type": "default", "rope_theta": 5000000.0, "partial_rotary_factor": 0.5}),
     torch.float32, "minimax_hub"),
    # bf16, experts in transformers 5's fused layout (mlp.experts.gate_up_proj, mlp.gate, mlp.e_score_correction_bias),
    # GQA 4:1, head_dim 32 with rotary dim 16, top 3 of 4.
    ("minimax_m2_fused_bf16", "minimax_m2",
     dict(hidden_size=64, intermediate_size=24, num_local_experts=4, num_experts_per_tok=3, num_hidden_layers=2,
          num_attention_heads=4, num_key_value_heads=1, head_dim=32, vocab_size=96, max_position_embeddings=64,
          tie_word_embeddings=True,
          rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.5}),
     torch.bfloat16, "fused_experts"),
    # Llama 4 text (issue 29): layers 0 and 2 RoPE with chunked attention (chunk 8 < samples 11 / 24)
    # and the L2 q/k norm, layers 1 and 3 NoPE (no_rope_layer_interval 2) with global attention and
    # temperature-tuned queries (floor_scale 4, attn_scale 0.5: the scale grows from position 3 on);
    # interleave_moe_layer_step 2: layers 1 and 3 Llama4TextMoe (4 experts, top 1, shared expert), 0
    # and 2 dense (intermediate_size_mlp 96). Q is recorded as the attention interface receives it:
    # after the temperature scaling, which is where vLLM 0.34's Llama4Attention.forward hands q to
    # self.attn (models/llama4.py), so ForwardGolden holds ctcal's Q observation to that point.
    ("llama4_text_fp32", "llama4_text",
     dict(hidden_size=64, intermediate_size=32, intermediate_size_mlp=96, num_hidden_layers=4,
          num_attention_heads=4, num_key_value_heads=2, head_dim=16, vocab_size=96, max_position_embeddings=64,
          num_local_experts=4, num_experts_per_tok=1, interleave_moe_layer_step=2, no_rope_layer_interval=2,
          attention_chunk_size=8, attn_temperature_tuning=True, floor_scale=4, attn_scale=0.5, use_qk_norm=True,
          tie_word_embeddings=False, pad_token_id=0,
          rope_parameters={"rope_type": "default", "rope_theta": 500000.0}),
     torch.float32, "v5"),
    # bf16: explicit no_rope_layers (layer 1 NoPE) and moe_layers [0, 2] (layer 1 dense), top 2 of 4,
    # GQA 4:1, head_dim 32, chunk 6, floor_scale 3, llama3 RoPE, tied embeddings.
    ("llama4_text_bf16", "llama4_text",
     dict(hidden_size=64, intermediate_size=24, intermediate_size_mlp=80, num_hidden_layers=3,
          num_attention_heads=4, num_key_value_heads=1, head_dim=32, vocab_size=96, max_position_embeddings=64,
          num_local_experts=4, num_experts_per_tok=2, moe_layers=[0, 2], no_rope_layers=[1, 0, 1],
          attention_chunk_size=6, attn_temperature_tuning=True, floor_scale=3, attn_scale=0.3, use_qk_norm=True,
          tie_word_embeddings=True, pad_token_id=0,
          rope_parameters={"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
                           "high_freq_factor": 4.0, "original_max_position_embeddings": 16}),
     torch.bfloat16, "v5"),
    # Gemma 4 text (issue 29, stage 1: no per-layer input embeddings, no KV-shared layers, no MoE):
    # sliding layers 0 and 2 (window 5 < samples 11 / 24, head_dim 16, 2 KV heads, default RoPE) and
    # full layers 1 and 3 (global_head_dim 32, num_global_key_value_heads 1, proportional RoPE over a
    # quarter of the angles), attention_k_eq_v on the full layers (no v_proj: V = v_norm(k_proj x)),
    # scaling 1.0, weightless v_norm, a layer_scalar planted per layer, final_logit_softcapping.
    ("gemma4_text_fp32", "gemma4_text",
     dict(hidden_size=64, intermediate_size=96, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
          head_dim=16, global_head_dim=32, num_global_key_value_heads=1, attention_k_eq_v=True, vocab_size=128,
          vocab_size_per_layer_input=128, hidden_size_per_layer_input=0, num_kv_shared_layers=0, sliding_window=5,
          layer_types=["sliding_attention", "full_attention", "sliding_attention", "full_attention"],
          max_position_embeddings=64, final_logit_softcapping=30.0, tie_word_embeddings=True),
     torch.float32, "v5"),
    # bf16: two sliding layers then a full one with v_proj (no k_eq_v) and its own head_dim 32 (the
    # global KV heads = num_key_value_heads), attention biases, untied head, no softcapping, the full
    # layers' RoPE proportional with partial_rotary_factor 0.5.
    ("gemma4_text_bias_bf16", "gemma4_text",
     dict(hidden_size=64, intermediate_size=80, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
          head_dim=16, global_head_dim=32, attention_k_eq_v=False, attention_bias=True, vocab_size=128,
          vocab_size_per_layer_input=128, hidden_size_per_layer_input=0, num_kv_shared_layers=0, sliding_window=6,
          layer_types=["sliding_attention", "sliding_attention", "full_attention"], max_position_embeddings=64,
          tie_word_embeddings=False,
          rope_parameters={"sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
                           "full_attention": {"rope_type": "proportional", "partial_rotary_factor": 0.5,
                                              "rope_theta": 1000000.0}}),
     torch.bfloat16, "v5"),
    # Gemma 4 with per-layer input embeddings (stage 2): hidden_size_per_layer_input 8 over the whole
    # vocabulary; sliding layers 0-1 (window 5), a full k_eq_v layer 2 with its own head_dim 32 and
    # one KV head.
    ("gemma4_ple_fp32", "gemma4_text",
     dict(hidden_size=64, intermediate_size=96, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
          head_dim=16, global_head_dim=32, num_global_key_value_heads=1, attention_k_eq_v=True, vocab_size=128,
          vocab_size_per_layer_input=128, hidden_size_per_layer_input=8, num_kv_shared_layers=0, sliding_window=5,
          layer_types=["sliding_attention", "sliding_attention", "full_attention"], max_position_embeddings=64,
          tie_word_embeddings=True),
     torch.float32, "v5"),
    # Gemma 4 with KV-shared layers (stage 3): layers 3 (sliding) and 4 (full) of 5 attend with the
    # K/V of layers 2 and 1 (the last earlier layer of their type), their MLPs double-wide; PLE 8,
    # k_eq_v full layer 1 with head_dim 32 and one KV head, window 5.
    ("gemma4_kv_shared_fp32", "gemma4_text",
     dict(hidden_size=64, intermediate_size=48, num_hidden_layers=5, num_attention_heads=4, num_key_value_heads=2,
          head_dim=16, global_head_dim=32, num_global_key_value_heads=1, attention_k_eq_v=True, vocab_size=128,
          vocab_size_per_layer_input=128, hidden_size_per_layer_input=8, num_kv_shared_layers=2,
          use_double_wide_mlp=True, sliding_window=5,
          layer_types=["sliding_attention", "full_attention", "sliding_attention", "sliding_attention",
                       "full_attention"], max_position_embeddings=64, tie_word_embeddings=True),
     torch.float32, "v5"),
    # Gemma 4's MoE variant (stage 4: enable_moe_block): every layer the dense MLP plus 4 experts
    # (top 2, moe_intermediate_size 24, fused gate_up_proj / down_proj) routed by Gemma4TextRouter;
    # sliding layers 0-1 (window 6) and a full layer 2 (head_dim 32); no PLE.
    ("gemma4_moe_fp32", "gemma4_text",
     dict(hidden_size=64, intermediate_size=48, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
          head_dim=16, global_head_dim=32, vocab_size=128, vocab_size_per_layer_input=128,
          hidden_size_per_layer_input=0, num_kv_shared_layers=0, sliding_window=6, enable_moe_block=True,
          num_experts=4, top_k_experts=2, moe_intermediate_size=24,
          layer_types=["sliding_attention", "sliding_attention", "full_attention"], max_position_embeddings=64,
          tie_word_embeddings=False),
     torch.float32, "v5"),
    # The multimodal Gemma4ForConditionalGeneration (stage 5): gemma4_ple_fp32's text model shape under
    # text_config (PLE 8, k_eq_v full layer, windows 5) with a one-layer vision tower, bf16, untied
    # head; save_pretrained writes model.language_model.*, the towers beside it.
    ("gemma4_mm_bf16", "gemma4",
     dict(text_config=dict(hidden_size=64, intermediate_size=96, num_hidden_layers=3, num_attention_heads=4,
                           num_key_value_heads=2, head_dim=16, global_head_dim=32, num_global_key_value_heads=1,
                           attention_k_eq_v=True, vocab_size=128, vocab_size_per_layer_input=128,
                           hidden_size_per_layer_input=8, num_kv_shared_layers=0, sliding_window=5,
                           layer_types=["sliding_attention", "sliding_attention", "full_attention"],
                           max_position_embeddings=64),
          vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                             num_key_value_heads=2, head_dim=16, patch_size=4, position_embedding_size=64,
                             pooling_kernel_size=2),
          audio_config=None, boi_token_id=120, eoi_token_id=121, image_token_id=122, video_token_id=123,
          boa_token_id=124, eoa_token_index=125, audio_token_id=126, tie_word_embeddings=False),
     torch.bfloat16, "v5"),
    # The multimodal Llama4ForConditionalGeneration: llama4_text_fp32's text model shape under
    # text_config (layers 0/2 chunked RoPE, 1/3 NoPE, 1/3 MoE) with a one-layer vision tower;
    # save_pretrained writes language_model.model.* and language_model.lm_head.weight.
    ("llama4_mm_bf16", "llama4",
     dict(text_config=dict(hidden_size=64, intermediate_size=32, intermediate_size_mlp=96, num_hidden_layers=4,
                           num_attention_heads=4, num_key_value_heads=2, head_dim=16, vocab_size=96,
                           max_position_embeddings=64, num_local_experts=4, num_experts_per_tok=1,
                           interleave_moe_layer_step=2, no_rope_layer_interval=2, attention_chunk_size=8,
                           attn_temperature_tuning=True, floor_scale=4, attn_scale=0.5, use_qk_norm=True,
                           pad_token_id=0, rope_parameters={"rope_type": "default", "rope_theta": 500000.0}),
          vision_config=dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                             image_size=28, patch_size=14, vision_output_dim=32, projector_input_dim=32,
                             projector_output_dim=32),
          tie_word_embeddings=False),
     torch.bfloat16, "v5"),
]

# Each case's seeds come from its index in CASES; these cases keep theirs wherever they sit in the list
# (cases added on other branches may land before them).
CASE_SEED_INDEX = {"smollm3_nope_sliding_fp32": 22, "smollm3_classic_bf16": 23, "olmo3_sliding_fp32": 24,
                   "olmo3_classic_bias_bf16": 25, "glm4_moe_grouped_fp32": 26, "glm4_moe_qk_norm_fused_bf16": 27,
                   "minimax_m2_fp32": 28, "minimax_m2_fused_bf16": 29, "llama4_text_fp32": 30, "llama4_text_bf16": 31,
                   "llama4_mm_bf16": 40, "nemotron_h_moe_fp32": 41,
                   "gemma4_text_fp32": 32, "gemma4_text_bias_bf16": 33, "gemma4_ple_fp32": 34,
                   "gemma4_kv_shared_fp32": 35, "gemma4_moe_fp32": 36,
                   "gemma4_mm_bf16": 37}

# Cases whose samples must be longer than the default SAMPLE_LENGTHS (DeltaNet's chunk of 64).
CASE_SAMPLE_LENGTHS = {"qwen3_5_text_fp32": [70, 133], "qwen3_5_mm_bf16": [67, 100],
                       "qwen3_5_moe_text_fp32": [70, 133], "qwen3_5_moe_mm_bf16": [67, 100],
                       "qwen3_next_fp32": [70, 133], "qwen3_next_sparse_step_bf16": [67, 100],
                       # Mamba2 hybrids: several chunks (16 or 32 tokens) and a partial one
                       "nemotron_h_fp32": [70, 133], "nemotron_h_pattern_bf16": [67, 100], "nemotron_h_moe_fp32": [70, 133],
                       "granitemoehybrid_fp32": [70, 133], "granitemoehybrid_dense_nope_bf16": [67, 100]}


def sylvester(n):
    h = torch.ones(1, 1, dtype=torch.float64)
    while h.shape[0] < n:
        h = torch.cat([torch.cat([h, h], 1), torch.cat([h, -h], 1)], 0)
    assert h.shape[0] == n, "head_dim must be a power of two"
    return h


def text_model(model):
    """The decoder stack (model.model, or model.model.language_model for Gemma3ForConditionalGeneration,
    or model.language_model.model for Llama4ForConditionalGeneration)."""
    if not hasattr(model, "model"):
        return model.language_model.model
    inner = model.model
    return inner.language_model if hasattr(inner, "language_model") else inner


def spike_moe(layer):
    """Decisive routing (no near-ties between fp32 and fp64 logits) and, for Qwen3-Next / Qwen3.5-MoE,
    a shared-expert gate sigmoid(w x) that varies per token (init N(0, 0.02) keeps it at ~0.5).
    Returns the router module (or None)."""
    g4 = getattr(layer, "router", None)
    if g4 is not None and hasattr(g4, "per_expert_scale"):
        # Gemma 4 (Gemma4TextRouter beside the dense MLP): decisive routing, experts that matter next
        # to the dense MLP, and a router scale / per-expert scale that are not ones (deterministic).
        g4.proj.weight.mul_(20.0)
        layer.experts.gate_up_proj.mul_(10.0)
        layer.experts.down_proj.mul_(10.0)
        g4.scale.copy_(1.0 + 0.3 * torch.cos(torch.arange(g4.scale.numel(), dtype=g4.scale.dtype)))
        g4.per_expert_scale.copy_(torch.linspace(0.5, 1.5, g4.per_expert_scale.numel(), dtype=g4.per_expert_scale.dtype))
        return None
    block = getattr(layer, "mlp", None) or getattr(layer, "block_sparse_moe", None)  # Granite: block_sparse_moe
    ff = getattr(layer, "feed_forward", None)
    if block is None and ff is not None and hasattr(ff, "router"):
        # Llama 4 (Llama4TextMoe): the router is an nn.Linear subclass; its experts' bmm weights are
        # initialised at N(0, 0.02), scaled up so that the routed part matters next to the shared expert.
        ff.router.weight.mul_(20.0)
        ff.experts.gate_up_proj.mul_(10.0)
        ff.experts.down_proj.mul_(10.0)
        return None
    if block is None:  # Nemotron-H's blocks, Granite without experts
        return None
    router = getattr(block, "gate", None) or getattr(block, "router", None)
    if router is not None and not isinstance(router, torch.nn.Linear):
        router.weight.mul_(20.0)
    else:
        router = None
    shared_gate = getattr(block, "shared_expert_gate", None)
    if shared_gate is not None:
        shared_gate.weight.mul_(50.0)
    return router


def spike_mamba(m, g):
    """A Mamba2 mixer with decays and time steps that matter (as make_mamba2_golden.py's randomise):
    dt_bias in [-4, 1] (softplus spans ~0.02 .. 1.3: the clamps bite), A = -exp(A_log) in [-8, -0.02]
    (some heads forget within a token, others carry state across chunks), D ~ N(0, 1)."""
    m.dt_bias.copy_(torch.rand(m.dt_bias.shape, generator=g) * 5 - 4)
    m.A_log.copy_(torch.log(torch.rand(m.A_log.shape, generator=g) * 7.98 + 0.02))
    m.D.copy_(torch.randn(m.D.shape, generator=g))
    m.conv1d.weight.copy_(0.5 * torch.randn(m.conv1d.weight.shape, generator=g))
    if m.conv1d.bias is not None:
        m.conv1d.bias.copy_(0.2 * torch.randn(m.conv1d.bias.shape, generator=g))
    for lin in (m.in_proj, m.out_proj):
        if lin.bias is not None:
            lin.bias.copy_(0.1 * torch.randn(lin.bias.shape, generator=g))


def spike_weights(model, seed, one_plus):
    """Random-init models have tiny, featureless activations: scale q/k/v up, plant outliers."""
    g = torch.Generator().manual_seed(seed)
    center = 0.0 if one_plus else 1.0  # Gemma 3 norms multiply by (1 + w)
    with torch.no_grad():
        tm = text_model(model)
        cfg = model.config.get_text_config()
        if getattr(cfg, "is_heterogeneous", False):  # Gemma 4: dims per layer, read from the weights below
            head_dim, q_dim, kv_dim = None, None, None
        else:
            head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
            q_dim, kv_dim = cfg.num_attention_heads * head_dim, cfg.num_key_value_heads * head_dim
        for li, layer in enumerate(tm.layers):
            a = getattr(layer, "self_attn", None)
            mixer = getattr(layer, "mixer", None)  # Nemotron-H: every block's one module
            if a is None and mixer is not None and hasattr(mixer, "q_proj"):
                a = mixer  # a Nemotron-H attention block
            mamba = getattr(layer, "mamba", None) or (mixer if hasattr(mixer, "A_log") else None)
            if a is None and (mamba is not None or mixer is not None):
                # A Mamba2 layer (Nemotron-H, Granite 4) or a Nemotron-H MLP block: random norms
                # (the block norms and the mixer's gated norm, plain w), a mixer that matters, and
                # Granite's router made decisive.
                if mamba is not None:
                    spike_mamba(mamba, g)
                for name, mod in layer.named_modules():
                    if name.endswith("norm") and getattr(mod, "weight", None) is not None:
                        mod.weight.copy_(1.0 + 0.2 * torch.randn(mod.weight.shape, generator=g))
                spike_moe(layer)
                if hasattr(mixer, "experts") and hasattr(mixer, "shared_experts"):
                    # A Nemotron-H MoE block (NemotronHMoE): a decisive router, a correction that moves
                    # the choice (scores are sigmoids in (0, 1)), and experts whose relu2 output matters
                    # next to the shared expert's (init N(0, 0.02)).
                    mixer.gate.weight.copy_(torch.randn(mixer.gate.weight.shape, generator=g) * 0.4)
                    mixer.gate.e_score_correction_bias.copy_(0.3 * torch.randn(mixer.gate.e_score_correction_bias.shape,
                                                                               generator=g))
                    mixer.experts.up_proj.mul_(20.0)
                    mixer.experts.down_proj.mul_(20.0)
                continue
            if a is None:  # a linear-attention layer (Qwen3.5): random norms, decays that matter
                la = layer.linear_attn
                la.A_log.copy_(torch.log(torch.rand(la.A_log.shape, generator=g) * 4.0 + 0.01))
                la.dt_bias.copy_(0.5 * torch.randn(la.dt_bias.shape, generator=g))
                la.norm.weight.copy_(1.0 + 0.2 * torch.randn(la.norm.weight.shape, generator=g))  # plain w
                for name in ("input_layernorm", "post_attention_layernorm"):
                    w = getattr(layer, name).weight
                    w.copy_(center + 0.2 * torch.randn(w.shape, generator=g))
                spike_moe(layer)
                continue
            if hasattr(a, "qkv_proj"):  # Phi-3: q, k, v rows of one fused weight
                w = a.qkv_proj.weight
                q_w, k_w, v_w = w[:q_dim], w[q_dim:q_dim + kv_dim], w[q_dim + kv_dim:]
                layer_kv_dim = kv_dim
                linears = [a.qkv_proj, a.o_proj, layer.mlp.gate_up_proj, layer.mlp.down_proj]
            else:
                # Gemma 4's attention_k_eq_v layers have no v_proj (V is k_proj's output); its full
                # layers have their own head_dim and KV heads (k_proj's rows say how many).
                v_proj = getattr(a, "v_proj", None)
                linears = [m for m in layer.modules() if isinstance(m, torch.nn.Linear)]
                if getattr(a, "k_proj", None) is None:
                    # Gemma 4's KV-shared layers: q_proj only (K/V are an earlier layer's)
                    a.q_proj.weight.mul_(6.0)
                    for name, mod in layer.named_modules():
                        if name.endswith("norm") and getattr(mod, "weight", None) is not None:
                            mod.weight.copy_(center + 0.2 * torch.randn(mod.weight.shape, generator=g))
                    if hasattr(layer, "layer_scalar"):
                        layer.layer_scalar.fill_(0.6 + 0.3 * li)
                    continue
                q_w, k_w, v_w = a.q_proj.weight, a.k_proj.weight, v_proj.weight if v_proj is not None else None
                layer_kv_dim = k_w.shape[0]
            q_w.mul_(6.0)
            k_w.mul_(6.0)
            if v_w is not None:
                v_w.mul_(4.0)
            for r in torch.randint(0, layer_kv_dim, (3,), generator=g).tolist():
                k_w[r].mul_(8.0 + 4.0 * li)  # a few large key channels
            if v_w is not None:
                v_w[: layer_kv_dim // 2].mul_(3.0)  # kv heads differ in range
            if hasattr(layer, "layer_scalar"):  # Gemma 4: a saved buffer (ones at init) scaling the layer's output
                layer.layer_scalar.fill_(0.6 + 0.3 * li)
            router = spike_moe(layer)
            if router is not None and getattr(router, "bias", None) is not None:
                router.bias.copy_(0.5 * torch.randn(router.bias.shape, generator=g))
            # GLM-4.5 (on the router) and MiniMax-M2 (on the MoE block): a correction that moves the
            # choice (scores are sigmoids in (0, 1))
            for owner in (router, getattr(layer, "mlp", None)):
                bias = getattr(owner, "e_score_correction_bias", None) if owner is not None else None
                if bias is not None:
                    bias.copy_(0.3 * torch.randn(bias.shape, generator=g))
            if hasattr(a, "sinks"):  # gpt-oss: sinks that matter (init is N(0, 0.02))
                a.sinks.copy_(1.5 * torch.randn(a.sinks.shape, generator=g))
            ex = getattr(getattr(layer, "mlp", None), "experts", None)
            if ex is not None and hasattr(ex, "gate_up_proj_bias"):  # gpt-oss: reach the SwiGLU clamp at 7
                ex.gate_up_proj.mul_(40.0)
                ex.down_proj.mul_(10.0)
                ex.gate_up_proj_bias.copy_(0.5 * torch.randn(ex.gate_up_proj_bias.shape, generator=g))
                ex.down_proj_bias.copy_(0.5 * torch.randn(ex.down_proj_bias.shape, generator=g))
            for name, mod in layer.named_modules():
                if name.endswith("norm") and getattr(mod, "weight", None) is not None:  # Llama 4's qk_norm has none
                    mod.weight.copy_(center + 0.2 * torch.randn(mod.weight.shape, generator=g))
            for lin in linears:
                if lin.bias is not None:
                    lin.bias.copy_(0.5 * torch.randn(lin.bias.shape, generator=g))
        final = getattr(tm, "norm_f", None) or tm.norm  # Nemotron-H: norm_f
        final.weight.copy_(center + 0.2 * torch.randn(final.weight.shape, generator=g))
        if getattr(tm, "embed_tokens_per_layer", None) is not None:
            # Gemma 4's per-layer input embeddings: large enough to move the residual stream (init
            # N(0, 0.02) would leave them invisible), the shared projection norm around 1.
            tm.embed_tokens_per_layer.weight.mul_(40.0)
            tm.per_layer_model_projection.weight.mul_(10.0)
            w = tm.per_layer_projection_norm.weight
            w.copy_(1.0 + 0.2 * torch.randn(w.shape, generator=g))
            for layer in tm.layers:
                layer.per_layer_input_gate.weight.mul_(20.0)
                layer.per_layer_projection.weight.mul_(20.0)


def fuse_experts(model_dir):
    """Rewrites per-expert MoE tensors (as save_pretrained writes them) into transformers 5's fused
    layout: mlp.experts.gate_up_proj [E, 2 I, H] (gate rows first), mlp.experts.down_proj [E, H, I],
    router mlp.gate.weight (Mixtral's block_sparse_moe. renamed to mlp.)."""
    from safetensors.torch import load_file, save_file
    path = os.path.join(model_dir, "model.safetensors")
    sd = load_file(path)
    out, experts = {}, {}
    for name, t in sd.items():
        name = name.replace(".block_sparse_moe.", ".mlp.")
        parts = name.split(".")
        if ".mlp.experts." in name:
            i = parts.index("experts")
            prefix, e, proj = ".".join(parts[:i + 1]), int(parts[i + 1]), parts[i + 2]
            proj = {"w1": "gate_proj", "w3": "up_proj", "w2": "down_proj"}.get(proj, proj)
            experts.setdefault(prefix, {}).setdefault(proj, {})[e] = t
        else:
            out[name] = t
    for prefix, projs in experts.items():
        n = len(projs["gate_proj"])
        out[prefix + ".gate_up_proj"] = torch.stack(
            [torch.cat([projs["gate_proj"][e], projs["up_proj"][e]], 0) for e in range(n)]).contiguous()
        out[prefix + ".down_proj"] = torch.stack([projs["down_proj"][e] for e in range(n)]).contiguous()
    save_file(out, path, metadata={"format": "pt"})


def respell_config(path, spelling):
    """transformers 5 writes rope_parameters / layer_types / dtype; hub checkpoints mostly use the
    classic names (rope_theta + rope_scaling, rope_local_base_freq, sliding_window_pattern, torch_dtype)."""
    if spelling == "fused_experts":
        fuse_experts(os.path.dirname(path))
        return
    if spelling == "v5":
        return
    with open(path) as f:
        cfg = json.load(f)
    if spelling == "classic":
        rp = cfg.pop("rope_parameters")
        cfg["rope_theta"] = rp.pop("rope_theta")
        rtype = rp.pop("rope_type")
        cfg["rope_scaling"] = None if rtype == "default" and not rp else {"rope_type": rtype, **rp}
        if cfg.get("model_type") != "gpt_oss":  # gpt-oss hub configs list their layer_types
            cfg.pop("layer_types", None)
    elif spelling == "phi_classic":  # Phi-3.5 / Phi-4-mini hub layout, with the older "su" name
        rp = cfg.pop("rope_parameters")
        cfg["rope_theta"] = rp.pop("rope_theta")
        cfg["partial_rotary_factor"] = rp.pop("partial_rotary_factor", 1.0)
        rp.pop("rope_type")
        cfg["rope_scaling"] = {"type": "su", **rp}
    elif spelling == "nemotron_classic":  # Nemotron-H hub configs: the pattern string, num_hidden_layers
        pattern = {"linear_attention": "M", "full_attention": "*", "mlp": "-", "moe": "E"}
        types = cfg.pop("layers_block_type")
        cfg["hybrid_override_pattern"] = "".join(pattern[t] for t in types)
        cfg["num_hidden_layers"] = len(types)
    elif spelling == "minimax_hub":  # MiniMax-M2's hub config.json: keys transformers ignores, vLLM reads
        cfg["rotary_dim"] = int(cfg["head_dim"] * cfg["rope_parameters"]["partial_rotary_factor"])
        cfg["scoring_func"] = "sigmoid"
        cfg["use_routing_bias"] = True
        with open(path, "w") as f:
            json.dump(cfg, f, indent=2, sort_keys=True)
        return
    elif spelling == "olmo_classic":  # Olmo-3 hub layout: rope_theta + rope_scaling of the full layers
        full = cfg.pop("rope_parameters")["full_attention"]
        cfg["rope_theta"] = full.pop("rope_theta")
        rtype = full.pop("rope_type")
        cfg["rope_scaling"] = None if rtype == "default" and not full else {"rope_type": rtype, **full}
        cfg.pop("layer_types")
    elif spelling == "gemma_classic":
        rp = cfg.pop("rope_parameters")
        cfg["rope_theta"] = rp["full_attention"]["rope_theta"]
        cfg["rope_local_base_freq"] = rp["sliding_attention"]["rope_theta"]
        cfg["rope_scaling"] = None
        cfg.pop("layer_types")
        cfg["sliding_window_pattern"] = 2
    cfg["torch_dtype"] = cfg.pop("dtype")
    with open(path, "w") as f:
        json.dump(cfg, f, indent=2, sort_keys=True)


class Capture:
    """Q, K, V per layer as the attention implementation receives them: [B, H, S, D]."""

    def __init__(self):
        self.store = {}  # layer -> {"q": [tensors [H, S, D]], ...}

    def attention(self, module, query, key, value, attention_mask, **kwargs):
        layer = module.layer_idx
        q_seen, k_seen = query, key
        if type(module).__name__ == "Llama4TextAttention":
            # Llama 4 rotates interleaved pairs (2i, 2i+1); vLLM 0.34 permutes q_proj / k_proj rows to
            # [even dims | odd dims] per head (Llama4ForCausalLM.permute_qk_weight_for_rotary) and
            # caches K in that order: recorded so (min/max per head are unchanged; R3's rotation and
            # the raw rows are taken in vLLM's order, as ctcal observes them).
            d = query.shape[-1]
            perm = list(range(0, d, 2)) + list(range(1, d, 2))
            q_seen, k_seen = query[..., perm], key[..., perm]
        for site, t in (("q", q_seen), ("k", k_seen), ("v", value)):
            self.store.setdefault(layer, {}).setdefault(site, []).append(t[0].detach().clone())
        eager = importlib.import_module(type(module).__module__).eager_attention_forward
        return eager(module, query, key, value, attention_mask, **kwargs)


def stats(tensors, head_dim):
    """tensors: list of [H, S, D] float64 (one per sample)."""
    h = sylvester(head_dim) / math.sqrt(head_dim)
    cat = torch.cat(tensors, dim=1)  # [H, sum S, D]
    rot = cat @ h
    absmax = cat.abs().amax(dim=(1, 2))  # [H]
    return {
        "min": cat.min().item(), "max": cat.max().item(),
        "head_min": cat.amin(dim=(1, 2)).tolist(), "head_max": cat.amax(dim=(1, 2)).tolist(),
        "rot_min": rot.min().item(), "rot_max": rot.max().item(),
        "rot_head_min": rot.amin(dim=(1, 2)).tolist(), "rot_head_max": rot.amax(dim=(1, 2)).tolist(),
        "sample_absmax": [t.abs().max().item() for t in tensors],
        "sample_min": [t.min().item() for t in tensors],
        "sample_max": [t.max().item() for t in tensors],
        # FP8 E4M3 static_minmax scales in float64 (before rounding to the stored dtype)
        "scale_tensor": absmax.max().item() / 448.0,
        "scale_attn_head": (absmax / 448.0).tolist(),
    }


@contextlib.contextmanager
def type_casts_lifted():
    """float64 tensors stay float64 under .type(torch.float32) (float32_casts_lifted's twin)."""
    orig = torch.Tensor.type

    def keep_type(self, *a, **k):
        target = k.get("dtype", a[0] if a else None)
        if self.dtype == torch.float64 and target is torch.float32:
            return self
        return orig(self, *a, **k)

    torch.Tensor.type = keep_type
    try:
        yield
    finally:
        torch.Tensor.type = orig


def reference(model_dir, samples):
    """Q/K/V statistics per layer (null for a layer without attention: Qwen3.5's linear_attn)."""
    cfg = json.load(open(os.path.join(model_dir, "config.json")))
    cls = getattr(transformers, cfg["architectures"][0])
    cap = Capture()
    AttentionInterface.register(CAPTURE, cap.attention)  # before loading: from_pretrained checks the name
    moe = any(n in cls.__name__ for n in ("Moe", "Mixtral", "GptOss", "Qwen3Next", "MiniMax")) or \
        "moe" in cfg.get("layers_block_type", []) or cfg.get("enable_moe_block", False)  # Nemotron-H's, Gemma 4's
    extra = {"experts_implementation": "eager"} if moe else {}
    model = cls.from_pretrained(model_dir, dtype=torch.float64, attn_implementation=CAPTURE, **extra)
    model.eval()
    # Qwen3-Next / Qwen3.5-MoE: the absmax of the shared expert's Linear inputs per layer (gate_up:
    # the MoE block's input, down: act(gate) * up), what their FP8 static input scales come from.
    shared = {}

    def hook(layer, site):
        def f(_module, args):
            a = args[0].detach().abs().max().item()
            entry = shared.setdefault(layer, {})
            entry[site] = max(entry.get(site, 0.0), a)
        return f

    for name, mod in model.named_modules():
        m = re.search(r"layers\.(\d+)\.mlp\.shared_expert\.(gate_proj|down_proj)$", name)
        if m:
            mod.register_forward_pre_hook(hook(int(m.group(1)), "gate_up" if m.group(2) == "gate_proj" else "down"))
    logits, losses = [], []
    # The Mamba2 hybrids: transformers' mixer casts x, B, C, dt (.float()) and its gated norm
    # (.to(torch.float32)) to float32 whatever the model's dtype; lifted here so that the whole
    # reference is float64 (make_mamba2_golden.py checks the mixer with and without the casts).
    # Nemotron-H's MoE router (NemotronHTopkRouter) casts with .type(torch.float32): lifted the same
    # way, so that the expert outputs (in the router weights' dtype) stay float64 too.
    mamba = cfg.get("model_type") in ("nemotron_h", "granitemoehybrid")
    lifted = float32_casts_lifted() if mamba else contextlib.nullcontext()
    lifted_type = type_casts_lifted() if mamba else contextlib.nullcontext()
    with torch.no_grad(), lifted, lifted_type:
        for ids in samples:
            t = torch.tensor([ids])
            out = model(input_ids=t, labels=t, use_cache=False)
            logits.append(out.logits[0].tolist())
            losses.append(out.loss.item())
    attention = sorted(cap.store)
    n_layers = model.config.get_text_config().num_hidden_layers
    # Each layer's own head_dim (Gemma 4's full layers have a wider one than its sliding layers).
    layers = [{site: stats(cap.store[li][site], cap.store[li]["k"][0].shape[-1]) for site in ("q", "k", "v")}
              if li in cap.store else None for li in range(n_layers)]
    rows = {str(li): {site: cap.store[li][site][0][:, :ROW_TOKENS, :].tolist() for site in ("q", "k", "v")}
            for li in (attention[0], attention[-1])}
    out = {"layers": layers, "rows": rows, "logits": logits, "loss": losses}
    if len(attention) < n_layers:
        out["attention_layers"] = attention
    if shared:
        out["shared_expert_inputs"] = {str(li): v for li, v in sorted(shared.items())}
    return out


def mxfp4_experts(model, seed):
    """Random MXFP4 experts: per layer gate_up_proj_blocks [E, 2 I, H / 32, 16], _scales [E, 2 I, H / 32],
    down_proj_blocks [E, H, I / 32, 16], _scales [E, H, I / 32] (uint8), set into the float model as
    transformers' convert_moe_packed_tensors dequantizes them (exact in bf16). Returns {name: tensor}."""
    from transformers.integrations.mxfp4 import convert_moe_packed_tensors
    g = torch.Generator().manual_seed(seed)
    packed = {}
    for li, layer in enumerate(model.model.layers):
        ex = layer.mlp.experts
        e, h, two_i = ex.gate_up_proj.shape
        for proj, rows, cols in (("gate_up_proj", two_i, h), ("down_proj", h, two_i // 2)):
            blocks = torch.randint(0, 256, (e, rows, cols // 32, 16), generator=g, dtype=torch.int32).to(torch.uint8)
            # exponents 2^-5 .. 2^-2: products of ~1-sized inputs reach the clamp at 7 now and then
            scales = torch.randint(122, 126, (e, rows, cols // 32), generator=g, dtype=torch.int32).to(torch.uint8)
            deq = convert_moe_packed_tensors(blocks, scales, dtype=torch.float32)  # [E, cols, rows]
            with torch.no_grad():
                getattr(ex, proj).copy_(deq)
            packed[f"model.layers.{li}.mlp.experts.{proj}_blocks"] = blocks
            packed[f"model.layers.{li}.mlp.experts.{proj}_scales"] = scales
    return packed


def write_mxfp4(float_dir, d, packed):
    """The checkpoint as the hub holds gpt-oss: experts as *_blocks/*_scales, quantization_config mxfp4."""
    from safetensors.torch import load_file, save_file
    os.makedirs(d, exist_ok=True)
    sd = load_file(os.path.join(float_dir, "model.safetensors"))
    out = {k: v for k, v in sd.items() if not k.endswith(("experts.gate_up_proj", "experts.down_proj"))}
    out.update(packed)
    save_file(out, os.path.join(d, "model.safetensors"), metadata={"format": "pt"})
    cfg = json.load(open(os.path.join(float_dir, "config.json")))
    cfg["quantization_config"] = {"quant_method": "mxfp4", "modules_to_not_convert": [
        "model.layers.*.self_attn", "model.layers.*.mlp.router", "model.embed_tokens", "lm_head"]}
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2, sort_keys=True)


def make_case(name, model_type, kwargs, dtype, spelling, out_dir, seed):
    """Writes the case's checkpoint; returns (its directory, the float directory the reference loads)."""
    torch.manual_seed(seed)
    cfg = AutoConfig.for_model(model_type, **kwargs)
    wrappers = {"gemma3": transformers.Gemma3ForConditionalGeneration,
                "qwen3_5": transformers.Qwen3_5ForConditionalGeneration,
                "qwen3_5_moe": transformers.Qwen3_5MoeForConditionalGeneration,
                "llama4": transformers.Llama4ForConditionalGeneration,
                "gemma4": transformers.Gemma4ForConditionalGeneration}
    model = wrappers[model_type](cfg) if model_type in wrappers else AutoModelForCausalLM.from_config(cfg)
    spike_weights(model, seed, one_plus=model_type.startswith(("gemma3", "qwen3_5", "qwen3_next")))
    packed = mxfp4_experts(model, seed) if spelling == "mxfp4" else None
    model = model.to(dtype)
    d = os.path.join(out_dir, "models", name)
    shutil.rmtree(d, ignore_errors=True)
    if packed is None:
        model.save_pretrained(d)
        respell_config(os.path.join(d, "config.json"), spelling)
        return d, d
    float_dir = os.path.join(out_dir, "scratch", name)  # not committed: the float twin
    shutil.rmtree(float_dir, ignore_errors=True)
    model.save_pretrained(float_dir)
    write_mxfp4(float_dir, d, packed)
    return d, float_dir


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--only", nargs="*", help="case names (default: all)")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    masking_utils.AttentionMaskInterface.register(CAPTURE, masking_utils.eager_mask)
    meta = {"transformers": transformers.__version__, "torch": torch.__version__}
    for i, (name, model_type, kwargs, dtype, spelling) in enumerate(CASES):
        i = CASE_SEED_INDEX.get(name, i)
        g = torch.Generator().manual_seed(4321 + i)
        if args.only and name not in args.only:
            continue
        d, ref_dir = make_case(name, model_type, kwargs, dtype, spelling, args.out, 200 + i)
        vocab = kwargs.get("text_config", kwargs)["vocab_size"]
        vocab = min(vocab, 96)  # ordinary text tokens (below Gemma 3's image tokens)
        lengths = CASE_SAMPLE_LENGTHS.get(name, SAMPLE_LENGTHS)
        samples = [torch.randint(0, vocab, (n,), generator=g).tolist() for n in lengths]
        ref = reference(ref_dir, samples)
        ref.update({"case": name, "model_dir": f"models/{name}", "samples": samples, **meta})
        with open(os.path.join(args.out, f"{name}.json"), "w") as f:
            json.dump(ref, f)
        print(name, "done", flush=True)


if __name__ == "__main__":
    main()
