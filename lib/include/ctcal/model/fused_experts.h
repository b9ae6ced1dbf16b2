#pragma once
// What the readers of fused 3-D expert tensors share (gpt-oss: gpt_oss_experts.h, Llama 4:
// llama4_experts.h): the tensor names from the family table, the shape and dtype check, the
// input-major down_proj [E, I, H] read, and the finite check and bf16 packing after loading.
#include <string>
#include <utility>
#include <vector>

#include "ctcal/io/checkpoint.h"
#include "ctcal/model/layer_weights.h"
#include "ctcal/model/model_config.h"

namespace ctcal {

// Layer `p`'s fused gate_up and down tensor names ("...experts.gate_up_proj", "...experts.down_proj").
std::pair<std::string, std::string> fused_expert_names(const ModelConfig& c, const std::string& p);

// Throws InputError naming the file and tensor unless it has `shape` and a float dtype (or U8 when
// `uint8`: MXFP4 blocks / E8M0 scales). `layout` is added to the shape error.
void expect_expert_tensor(const Checkpoint& ckpt, const std::string& name, const std::vector<int64_t>& shape,
                          bool uint8 = false, const std::string& layout = "");

// down_proj[e] [I, H] (used as x @ W) of the float tensor `bytes` (`dtype`), transposed into
// down->w [H, I].
void read_input_major_down(const unsigned char* bytes, DType dtype, int64_t e, int64_t f, int64_t h, Linear* down);

// After loading: every expert's gate/up (from `gate_up_name`) and down (`down_name`) finite, else
// InputError naming the tensor; then packed to bf16 when `bf16`.
void finish_experts(const Checkpoint& ckpt, const std::string& gate_up_name, const std::string& down_name, bool bf16,
                    ExpertWeights* x);

}  // namespace ctcal
