#include "ctcal/model/layer_weights.h"

#include <cstring>
#include <set>
#include <type_traits>

#include <fmt/ranges.h>

#include "ctcal/error.h"
#include "ctcal/io/quantized_weight.h"
#include "ctcal/model/deltanet_shape.h"
#include "ctcal/model/gated_deltanet.h"
#include "ctcal/model/gpt_oss_experts.h"
#include "ctcal/model/llama4_experts.h"
#include "ctcal/model/linear_modules.h"
#include "ctcal/model/per_layer_input.h"
#include "ctcal/model/mamba2.h"

namespace ctcal {

namespace {

void check_tensor(const Checkpoint& ckpt, const std::string& name, std::vector<int64_t> shape) {
  if (name.ends_with(".weight")) {  // a quantized Linear weight: its shape from its own tensors
    const std::string module = name.substr(0, name.size() - 7);
    if (const auto spec = ckpt.quantized_weight(module)) {
      const auto got = quantized_weight_shape(tensor_getter(ckpt), module, *spec);
      if (got != shape)
        throw InputError(fmt::format("{}: quantized weight '{}' has shape {}; expected {} from config.json",
                                     ckpt.dir().string(), module, shape_str(got), shape_str(shape)));
      return;
    }
  }
  const TensorInfo& t = ckpt.info(name);
  if (t.shape != shape)
    throw InputError(fmt::format("{}: tensor '{}' has shape {}; expected {} from config.json",
                                 ckpt.shard_of(name).path().string(), name, shape_str(t.shape),
                                 shape_str(shape)));
  if (t.dtype != DType::kF32 && t.dtype != DType::kF16 && t.dtype != DType::kBF16)
    throw InputError(fmt::format("{}: tensor '{}' has dtype {}; expected F32, F16 or BF16",
                                 ckpt.shard_of(name).path().string(), name, dtype_name(t.dtype)));
}

struct TensorSpec {
  std::string suffix;
  std::vector<int64_t> shape;
};

// Rows [part.row0, part.row0 + out) of a fused projection's [part.rows, in] weight (Phi-3's
// qkv_proj / gate_up_proj); the whole tensor when part.rows == 0.
struct RowPart {
  int64_t row0 = 0, rows = 0;
  std::string tensor;           // the weight tensor's full name when it has no ".weight" suffix (fused experts)
  std::vector<int64_t> shape;   // its full shape when not [rows, in] (fused experts: [E, rows_per_expert, in])
};

// Rows [row0, row0 + out) of a [rows, in] tensor.
RowPart row_range(int64_t row0, int64_t rows) {
  RowPart p;
  p.row0 = row0;
  p.rows = rows;
  return p;
}

std::string weight_name(const std::string& name, const RowPart& part) {
  return part.tensor.empty() ? name + ".weight" : part.tensor;
}
std::vector<int64_t> weight_shape(int64_t out, int64_t in, const RowPart& part) {
  if (!part.shape.empty()) return part.shape;
  return {part.rows ? part.rows : out, in};
}

// "<block>.<correction_bias>" relative to the layer, in the layer's expert layout.
std::string correction_bias_suffix(const FamilySpec& fam, ExpertLayout layout) {
  const ExpertNames& n = fam.experts;
  return fmt::format("{}.{}", layout == ExpertLayout::kFused ? n.fused_block : n.block, n.correction_bias);
}

// Every tensor of one layer that is not a Linear's (norms, per-head norms, sinks), named from the
// family's table entry; the Linears are linear_modules'.
std::vector<TensorSpec> layer_specs(const ModelConfig& model, int64_t layer, bool with_mlp) {
  const ModelConfig c = model.at_layer(layer);  // the layer's own head_dim (Gemma 4)
  const int64_t h = c.hidden_size, d = c.head_dim;
  const FamilySpec& fam = *c.family;
  const NormNames& norm = fam.norms;
  const std::string attn = std::string(fam.attention.module) + ".";
  std::vector<TensorSpec> s;
  if (c.has_mixer(layer) && !norm.input.empty()) s.push_back({std::string(norm.input) + ".weight", {h}});
  if (c.is_mamba(layer)) {  // the Mamba2 mixer's parameters (Mamba2Weights)
    const Mamba2Names& n = fam.mamba;
    const Mamba2Config& mc = c.mamba;
    const std::string m = std::string(n.module) + ".";
    s.push_back({m + std::string(n.conv1d) + ".weight", {mc.conv_dim(), 1, mc.conv_kernel}});
    if (c.mamba_conv_bias) s.push_back({m + std::string(n.conv1d) + ".bias", {mc.conv_dim()}});
    for (std::string_view v : {n.dt_bias, n.a_log, n.d}) s.push_back({m + std::string(v), {mc.num_heads}});
    s.push_back({m + std::string(n.norm) + ".weight", {mc.intermediate_size()}});
  } else if (c.is_linear_attention(layer)) {  // the DeltaNet's parameters (GatedDeltaNetWeights)
    const LinearAttentionNames& n = fam.linear_attention;
    const LinearAttentionConfig& la = c.linear_attention;
    const std::string m = std::string(n.module) + ".";
    s.push_back({m + std::string(n.conv1d) + ".weight", {la.conv_dim(), 1, la.conv_kernel}});
    s.push_back({m + std::string(n.dt_bias), {la.num_v_heads}});
    s.push_back({m + std::string(n.a_log), {la.num_v_heads}});
    s.push_back({m + std::string(n.norm) + ".weight", {la.head_v_dim}});
  } else if (fam.attention_sinks && c.has_kv_cache(layer)) {
    s.push_back({attn + std::string(fam.attention.sinks), {c.num_attention_heads}});
  }
  if (c.qk_norm && c.has_kv_cache(layer)) {
    // [head_dim] per head, or [q_dim] / [kv_dim] over the whole projection (qk_norm_whole)
    s.push_back({attn + std::string(fam.attention.q_norm) + ".weight", {fam.qk_norm_whole ? c.q_dim() : d}});
    if (c.kv_source_of(layer) < 0)  // Gemma 4's KV-shared layers have no k_norm
      s.push_back({attn + std::string(fam.attention.k_norm) + ".weight", {fam.qk_norm_whole ? c.kv_dim() : d}});
  }
  if (!norm.attn_out.empty()) s.push_back({std::string(norm.attn_out) + ".weight", {h}});
  if (fam.gemma4_attention) s.push_back({"layer_scalar", {1}});  // Gemma4TextDecoderLayer's saved buffer
  if (with_mlp && c.per_layer_input_size > 0) s.push_back({"post_per_layer_input_norm.weight", {h}});  // Gemma 4's PLE
  if (with_mlp && fam.gemma4_attention && c.is_moe(layer)) {  // Gemma4TextDecoderLayer's MoE block
    for (std::string_view n : {norm.dense_out_moe, norm.experts_in, norm.experts_out}) s.push_back({std::string(n) + ".weight", {h}});
    s.push_back({"router.scale", {h}});
    s.push_back({"router.per_expert_scale", {c.num_experts}});
  }
  if (with_mlp && c.has_mlp_block(layer)) {
    if (!norm.mlp.empty()) s.push_back({std::string(norm.mlp) + ".weight", {h}});
    if (!norm.mlp_out.empty()) s.push_back({std::string(norm.mlp_out) + ".weight", {h}});
  }
  return s;
}

// Where a module's weight (its rows [row0, row0 + rows) for a fused one) is read from.
RowPart row_part(const LinearModule& m, int64_t row0) {
  RowPart part;
  if (!m.tensor_shape.empty()) {  // fused experts: a slice of a bare 3-D tensor
    part.row0 = m.row0 + row0;
    part.tensor = m.name;
    part.shape = m.tensor_shape;
  } else if (m.parts.size() > 1) {  // Phi-3's qkv_proj / gate_up_proj
    part = row_range(row0, m.out);
  }
  return part;
}

// A Linear weight stored quantized (compressed-tensors formats), dequantized to fp32: rows
// [part.row0, part.row0 + out) of it (all of a plain projection; a slice of a fused one), as
// [out, in]. nullopt for a float weight.
std::optional<std::vector<float>> read_quantized(const Checkpoint& ckpt, const std::string& name, int64_t out,
                                                 int64_t in, const RowPart& part) {
  if (!part.tensor.empty()) return std::nullopt;  // fused experts' bare tensors: never quantized by name
  const auto spec = ckpt.quantized_weight(name);
  if (!spec) return std::nullopt;
  DequantizedWeight d = dequantize_weight(tensor_getter(ckpt), name, *spec);  // [rows, in]
  const std::vector<int64_t> want = weight_shape(out, in, part);
  if (d.shape != want)
    throw InputError(fmt::format("{}: quantized weight '{}' has shape {}; expected {} from config.json",
                                 ckpt.dir().string(), name, shape_str(d.shape), shape_str(want)));
  const auto first = d.values.begin() + static_cast<std::ptrdiff_t>(part.row0 * in);
  return std::vector<float>(first, first + static_cast<std::ptrdiff_t>(out * in));
}

Vector read_vector(const Checkpoint& ckpt, const std::string& name, int64_t n) {
  std::vector<float> v = read_checked(ckpt, name, {n});
  return Eigen::Map<Vector>(v.data(), n);
}

// No bf16 value of bits [n] is NaN or Inf (exponent all ones), four values per 64-bit word: a
// lane t = (w & E) ^ E is zero exactly when its exponent is all ones, and the classic "has a
// zero lane" test finds one. Its lanes stay below 0x8000, so it never fires without a zero lane.
bool bf16_all_finite(const uint16_t* bits, int64_t n) {
  constexpr uint64_t kExp = 0x7F807F807F807F80ull, kOnes = 0x0001000100010001ull, kHigh = 0x8000800080008000ull;
  const int64_t words = n / 4;
  bool finite = true;
#pragma omp parallel for schedule(static) reduction(&& : finite)
  for (int64_t i = 0; i < words; ++i) {
    uint64_t w;
    std::memcpy(&w, bits + 4 * i, 8);
    const uint64_t t = (w & kExp) ^ kExp;
    finite = finite && ((t - kOnes) & ~t & kHigh) == 0;
  }
  for (int64_t i = 4 * words; i < n; ++i) finite = finite && (bits[i] & 0x7F80u) != 0x7F80u;
  return finite;
}

// The projection as bf16 bits: packed for oneDNN (the CPU's bf16 mode), or as plain rows
// (`plain_rows`: what the CUDA backend copies to the GPU).
void read_linear_bf16(const Checkpoint& ckpt, const std::string& name, int64_t out, int64_t in, bool bias, Linear* lp,
                      RowPart part = {}, bool plain_rows = false) {
  Linear& l = *lp;
  l.w = RowMatrix();
  l.w_bf16.reset();
  l.w_bf16_view = {};
  auto keep = [&](const uint16_t* bits) {  // [out, in]
    if (plain_rows)
      l.w_bf16_rows.assign(bits, bits + out * in);
    else
      l.w_bf16 = std::make_shared<const PackedBf16Weights>(bits, out, in);
  };
  if (auto q = read_quantized(ckpt, name, out, in, part)) {  // [out, in], exact in bf16 for FP8 inputs
    std::vector<uint16_t> bits(q->size());
    for (std::size_t i = 0; i < bits.size(); ++i) bits[i] = f32_to_bf16((*q)[i]);
    keep(bits.data());
    l.b = bias ? read_vector(ckpt, name + ".bias", out) : Vector();
    return;
  }
  const std::string wn = weight_name(name, part);
  check_tensor(ckpt, wn, weight_shape(out, in, part));
  const TensorInfo& t = ckpt.info(wn);
  const unsigned char* p = ckpt.shard_of(wn).data(t) + static_cast<std::size_t>(part.row0 * in) * dtype_size(t.dtype);
  const auto n = out * in;
  if (t.dtype == DType::kBF16) {
    // Read in place: one scan for NaN/Inf (four values per word), then the GPU's staging copy
    // (plain rows) or oneDNN's packing (which reads the mmap unaligned: a bf16 tensor may sit at
    // any even offset).
    const auto* bits = reinterpret_cast<const uint16_t*>(p);  // bf16 tensors sit at even offsets
    if (!bf16_all_finite(bits, n))
      throw InputError(fmt::format("{}: tensor '{}' contains NaN or Inf; the checkpoint is corrupt",
                                   ckpt.shard_of(wn).path().string(), wn));
    l.w_bf16_rows.clear();
    if (plain_rows)
      l.w_bf16_view = std::span<const uint16_t>(bits, static_cast<std::size_t>(n));
    else
      l.w_bf16 = std::make_shared<const PackedBf16Weights>(bits, out, in);
    l.b = bias ? read_vector(ckpt, name + ".bias", out) : Vector();
    return;
  }
  // Other dtypes are rounded to bf16 first (into the plain rows, or a buffer to pack from).
  std::vector<uint16_t> rounded;
  uint16_t* dst = nullptr;
  if (plain_rows) {
    l.w_bf16_rows.resize(static_cast<std::size_t>(n));
    dst = l.w_bf16_rows.data();
  } else {
    rounded.resize(static_cast<std::size_t>(n));
    dst = rounded.data();
  }
  bool finite = true;
#pragma omp parallel for schedule(static) reduction(&& : finite)
  for (int64_t i = 0; i < n; ++i) {
    const uint16_t v = f32_to_bf16(load_as_f32(p, t.dtype, static_cast<std::size_t>(i)));
    dst[i] = v;
    finite = finite && (v & 0x7F80u) != 0x7F80u;
  }
  if (!finite)
      throw InputError(fmt::format("{}: tensor '{}' contains NaN or Inf; the checkpoint is corrupt",
                                   ckpt.shard_of(wn).path().string(), wn));
  if (!plain_rows) l.w_bf16 = std::make_shared<const PackedBf16Weights>(rounded.data(), out, in);
  l.b = bias ? read_vector(ckpt, name + ".bias", out) : Vector();
}

// Fills *lp, reusing its fp32 buffer when the shape is unchanged (every layer after the first):
// a fresh 64 MB matrix per projection and layer would be page-faulted in again each time.
void read_linear(const Checkpoint& ckpt, const std::string& name, int64_t out, int64_t in, bool bias, Linear* lp,
                 RowPart part = {}) {
  Linear& l = *lp;
  l.w_bf16.reset();
  l.w_bf16_view = {};
  if (auto q = read_quantized(ckpt, name, out, in, part)) {  // [out, in]
    l.w = Eigen::Map<const RowMatrix>(q->data(), out, in);
    l.b = bias ? read_vector(ckpt, name + ".bias", out) : Vector();
    return;
  }
  const std::string wn = weight_name(name, part);
  const TensorInfo& t = ckpt.info(wn);
  check_tensor(ckpt, wn, weight_shape(out, in, part));
  l.w.resize(out, in);  // keeps the allocation when out * in is unchanged
  const std::size_t row_bytes = static_cast<std::size_t>(in) * dtype_size(t.dtype);
  const unsigned char* src = ckpt.shard_of(wn).data(t) + static_cast<std::size_t>(part.row0) * row_bytes;
  bool finite = true;
  // Rows converted (and checked) in parallel: with few calibration tokens, loading a 1B model's
  // layers single-threaded costs as much as the forward pass.
#pragma omp parallel for schedule(static) reduction(&& : finite)
  for (int64_t r = 0; r < out; ++r) {
    convert_to_f32(src + static_cast<std::size_t>(r) * row_bytes, t.dtype, static_cast<std::size_t>(in), l.w.row(r).data());
    finite = finite && l.w.row(r).allFinite();
  }
  l.b = bias ? read_vector(ckpt, name + ".bias", out) : Vector();
  if (!finite || (bias && !l.b.allFinite()))
    throw InputError(fmt::format("{}: tensor '{}' contains NaN or Inf; the checkpoint is corrupt",
                                 ckpt.shard_of(wn).path().string(), l.w.allFinite() ? name + ".bias" : wn));
}

}  // namespace

std::vector<float> read_checked(const Checkpoint& ckpt, const std::string& name,
                                std::initializer_list<int64_t> shape) {
  check_tensor(ckpt, name, std::vector<int64_t>(shape));
  return ckpt.read_f32(name);
}

ModelConfig load_model_config(const Checkpoint& ckpt) {
  ModelConfig c = parse_model_config(ckpt.config(), ckpt.config_path().string());
  const std::string alt(c.family->alt_weight_prefix);
  if (!alt.empty() && !ckpt.has(c.top_tensor("embed_tokens.weight")) && ckpt.has(alt + "embed_tokens.weight"))
    c.weight_prefix = alt;
  return c;
}

Vector read_norm(const Checkpoint& ckpt, const ModelConfig& cfg, const std::string& name, int64_t n) {
  Vector w = read_vector(ckpt, name, n);
  if (cfg.family->norm == NormKind::kRmsOnePlus) w.array() += 1.0f;  // (1.0 + weight.float()) in fp32
  return w;
}

void check_model_tensors(const Checkpoint& ckpt, const ModelConfig& c) {
  check_tensor(ckpt, c.top_tensor("embed_tokens.weight"), {c.vocab_size, c.hidden_size});
  check_tensor(ckpt, c.top_tensor("norm.weight"), {c.hidden_size});
  if (const int64_t pd = c.per_layer_input_size; pd > 0) {  // Gemma 4's per-layer input embeddings
    check_tensor(ckpt, per_layer_embedding_name(c), {c.vocab_size, c.num_hidden_layers * pd});
    check_tensor(ckpt, per_layer_model_projection_name(c) + ".weight", {c.num_hidden_layers * pd, c.hidden_size});
    check_tensor(ckpt, per_layer_projection_norm_name(c), {pd});
  }
  if (!c.tie_word_embeddings) check_tensor(ckpt, c.lm_head_module() + ".weight", {c.vocab_size, c.hidden_size});
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    const std::string p = c.layer_prefix(l);
    for (const auto& spec : layer_specs(c, l, true)) check_tensor(ckpt, p + spec.suffix, spec.shape);
    std::set<std::string> seen;  // fused experts: one tensor holds every expert's rows
    for (const LinearModule& m : linear_modules(c, l, true, expert_layout(ckpt, c, l))) {
      if (!seen.insert(m.weight_tensor()).second) continue;
      check_tensor(ckpt, m.weight_tensor(), m.tensor_shape.empty() ? std::vector<int64_t>{m.out, m.in} : m.tensor_shape);
      if (m.bias) check_tensor(ckpt, m.name + ".bias", {m.out});
    }
    if (c.is_moe(l) && c.family->moe_kind == MoeKind::kGptOss) check_gpt_oss_experts(ckpt, c, p);
    if (c.is_moe(l) && c.family->moe_kind == MoeKind::kLlama4) check_llama4_experts(ckpt, c, p);
    if (c.is_moe(l) && !c.family->experts.correction_bias.empty())  // [num_experts], where the layout keeps it
      check_tensor(ckpt, p + correction_bias_suffix(*c.family, expert_layout(ckpt, c, l)), {c.num_experts});
  }
}

namespace {

const auto kReadF32 = [](const Checkpoint& ck, const std::string& n, int64_t out, int64_t in, bool bias, Linear* l,
                         RowPart part = {}) { read_linear(ck, n, out, in, bias, l, std::move(part)); };
const auto kReadBf16 = [](const Checkpoint& ck, const std::string& n, int64_t out, int64_t in, bool bias, Linear* l,
                          RowPart part = {}) { read_linear_bf16(ck, n, out, in, bias, l, std::move(part)); };
const auto kReadBf16Rows = [](const Checkpoint& ck, const std::string& n, int64_t out, int64_t in, bool bias, Linear* l,
                              RowPart part = {}) { read_linear_bf16(ck, n, out, in, bias, l, std::move(part), true); };

// Reads module m into the projections it fills (a fused one's rows split among them).
template <typename ReadLinear>
void read_module(const Checkpoint& ckpt, const LinearModule& m, ReadLinear read_linear, LayerWeights* w) {
  const std::vector<Linear*> parts = linear_parts(w, m.role, m.expert);
  int64_t row0 = 0;
  for (std::size_t i = 0; i < parts.size(); ++i) {
    const int64_t rows = m.parts.at(i);
    read_linear(ckpt, m.name, rows, m.in, m.bias, parts[i], row_part(m, row0));
    row0 += rows;
  }
}

template <typename ReadLinear>
void load_layer(const Checkpoint& ckpt, const ModelConfig& model, int64_t layer, bool with_mlp,
                ReadLinear read_linear, LayerWeights* wp) {
  const ModelConfig c = model.at_layer(layer);  // the layer's own head_dim and KV heads (Gemma 4)
  const std::string p = c.layer_prefix(layer);
  const int64_t h = c.hidden_size;
  const FamilySpec& fam = *c.family;
  const NormNames& norm = fam.norms;
  const std::string attn = c.attention_module(layer) + ".";
  auto norm_or_empty = [&](std::string_view name) {
    return name.empty() ? Vector() : read_norm(ckpt, c, p + std::string(name) + ".weight", h);
  };
  LayerWeights& w = *wp;
  const bool linear_attention = c.is_linear_attention(layer);
  const bool attention = c.has_kv_cache(layer);  // an attention block (not linear attention, Mamba2 or an MLP block)
  with_mlp = with_mlp && c.has_mlp_block(layer);  // Nemotron-H's mixer blocks have no MLP
  w.input_norm = c.has_mixer(layer) ? norm_or_empty(norm.input) : Vector();  // OLMo 3 has none
  const bool qk_norm = c.qk_norm && attention;
  const int64_t q_norm_n = fam.qk_norm_whole ? c.q_dim() : c.head_dim;   // [q_dim] whole, [head_dim] per head
  const int64_t k_norm_n = fam.qk_norm_whole ? c.kv_dim() : c.head_dim;  // [kv_dim] whole, [head_dim] per head
  w.q_norm = qk_norm ? read_norm(ckpt, c, attn + std::string(fam.attention.q_norm) + ".weight", q_norm_n) : Vector();
  w.k_norm = qk_norm && c.kv_source_of(layer) < 0 ? read_norm(ckpt, c, attn + std::string(fam.attention.k_norm) + ".weight", k_norm_n)
                                                 : Vector();  // none on Gemma 4's KV-shared layers
  w.sinks = fam.attention_sinks && attention ? read_vector(ckpt, attn + std::string(fam.attention.sinks), c.num_attention_heads)
                                             : Vector();
  if (!attention) w.q = w.k = w.v = w.o = Linear();  // nothing of an earlier attention layer stays resident
  if (c.is_mamba(layer)) {
    // A fresh mixer per layer, as for the DeltaNet below.
    auto mb = std::make_shared<Mamba2Weights>();
    const Mamba2Names& n = fam.mamba;
    const Mamba2Config& mc = c.mamba;
    const std::string m = p + std::string(n.module) + ".";
    std::vector<float> conv = read_checked(ckpt, m + std::string(n.conv1d) + ".weight", {mc.conv_dim(), 1, mc.conv_kernel});
    mb->conv_w = Eigen::Map<RowMatrix>(conv.data(), mc.conv_dim(), mc.conv_kernel);  // [conv_dim, K]
    if (c.mamba_conv_bias) mb->conv_b = read_vector(ckpt, m + std::string(n.conv1d) + ".bias", mc.conv_dim());
    mb->dt_bias = read_vector(ckpt, m + std::string(n.dt_bias), mc.num_heads);
    mb->A_log = read_vector(ckpt, m + std::string(n.a_log), mc.num_heads);
    mb->D = read_vector(ckpt, m + std::string(n.d), mc.num_heads);
    mb->norm_w = read_vector(ckpt, m + std::string(n.norm) + ".weight", mc.intermediate_size());  // gated norm: w as is
    w.mamba = std::move(mb);
  } else {
    w.mamba.reset();
  }
  if (linear_attention) {
    // A fresh mixer per layer (a copy of this LayerWeights may share the previous one); q/k/v/o
    // of an earlier attention layer are dropped.
    w.q = w.k = w.v = w.o = Linear();
    auto la = std::make_shared<GatedDeltaNetWeights>();
    const LinearAttentionNames& n = fam.linear_attention;
    const LinearAttentionConfig& s = c.linear_attention;
    const std::string m = p + std::string(n.module) + ".";
    std::vector<float> conv = read_checked(ckpt, m + std::string(n.conv1d) + ".weight", {s.conv_dim(), 1, s.conv_kernel});
    la->conv1d = Eigen::Map<RowMatrix>(conv.data(), s.conv_dim(), s.conv_kernel);  // [conv_dim, kernel]
    la->dt_bias = read_vector(ckpt, m + std::string(n.dt_bias), s.num_v_heads);
    la->A_log = read_vector(ckpt, m + std::string(n.a_log), s.num_v_heads);
    la->norm = read_vector(ckpt, m + std::string(n.norm) + ".weight", s.head_v_dim);  // RMSNormGated: w as is
    w.linear_attn = std::move(la);
  } else {
    w.linear_attn.reset();
  }
  w.attn_out_norm = norm_or_empty(norm.attn_out);
  w.layer_scalar = fam.gemma4_attention ? read_checked(ckpt, p + "layer_scalar", {1}).at(0) : 1.0f;
  // Gemma 4's per-layer input (its gate / projection are Linear modules, read below): the layer's
  // slice of the model projection and the norms. With the MLP only: it follows the MLP block.
  w.has_ple = with_mlp && c.per_layer_input_size > 0;
  if (w.has_ple) read_per_layer_input_weights(ckpt, c, layer, &w.ple);
  else w.ple = PerLayerInputWeights();
  if (c.k_eq_v(layer)) w.v = Linear();  // V is k_proj's output (Gemma 4's attention_k_eq_v layers)
  if (c.kv_source_of(layer) >= 0) w.k = w.v = Linear();  // Gemma 4's KV-shared layers: an earlier layer's K/V
  w.has_mlp = with_mlp;
  w.mlp_norm = with_mlp ? norm_or_empty(norm.mlp) : Vector();
  w.mlp_out_norm = with_mlp ? norm_or_empty(norm.mlp_out) : Vector();
  // Nothing of an earlier layer's other MLP kind stays resident; the kept members' fp32 buffers
  // are reused.
  const bool moe = with_mlp && c.is_moe(layer);
  if (!with_mlp || moe) w.gate = w.up = w.down = Linear();
  if (!moe) w.experts = ExpertWeights();
  const bool gemma4_moe = moe && fam.gemma4_attention;
  w.dense_out_moe_norm = gemma4_moe ? norm_or_empty(norm.dense_out_moe) : Vector();
  w.experts_in_norm = gemma4_moe ? norm_or_empty(norm.experts_in) : Vector();
  w.experts_out_norm = gemma4_moe ? norm_or_empty(norm.experts_out) : Vector();
  if (gemma4_moe) {
    w.experts.router_scale = read_vector(ckpt, p + "router.scale", h);
    w.experts.per_expert_scale = read_vector(ckpt, p + "router.per_expert_scale", c.num_experts);
  }
  if (moe) {
    const auto n = static_cast<std::size_t>(c.num_experts);
    w.experts.gate.resize(n);
    w.experts.up.resize(n);
    w.experts.down.resize(n);
  }
  // Qwen3-Next's fused in-projections, fp32, until split below: qkvz [2 key_dim + 2 value_dim, hidden],
  // ba [2 num_v_heads, hidden]
  Linear qkvz, ba;
  for (const LinearModule& m : linear_modules(c, layer, with_mlp, expert_layout(ckpt, c, layer))) {
    if (m.role == LinearRole::kInProjQkvz || m.role == LinearRole::kInProjBa)
      kReadF32(ckpt, m.name, m.out, m.in, false, m.role == LinearRole::kInProjQkvz ? &qkvz : &ba);
    else if (m.kind == LinearKind::kRouter || m.kind == LinearKind::kLinearAttention || m.kind == LinearKind::kMamba ||
             m.kind == LinearKind::kPerLayerInput)
      // fp32 always: routing decisions as in fp32; the DeltaNet and the Mamba2 mixer run fp32
      // projections here (gated_deltanet.h, mamba2.h), in --compute-dtype bf16 too
      read_module(ckpt, m, kReadF32, &w);
    else
      read_module(ckpt, m, read_linear, &w);
  }
  if (linear_attention && fam.linear_attention.fused()) {
    // Qwen3NextGatedDeltaNet.fix_query_key_value_ordering as a row permutation (exact).
    split_qwen3_next_in_proj(qkvz.w, ba.w, deltanet_shape(c), w.linear_attn.get());
  }
  if (moe && !fam.experts.correction_bias.empty())  // [num_experts] fp32, for the choice only
    w.experts.correction_bias =
        read_vector(ckpt, p + correction_bias_suffix(fam, expert_layout(ckpt, c, layer)), c.num_experts);
  if (moe && fam.moe_kind == MoeKind::kGptOss)
    load_gpt_oss_experts(ckpt, c, p, std::is_same_v<ReadLinear, std::decay_t<decltype(kReadBf16)>>, &w.experts);
  if (moe && fam.moe_kind == MoeKind::kLlama4)
    load_llama4_experts(ckpt, c, p, std::is_same_v<ReadLinear, std::decay_t<decltype(kReadBf16)>>, &w.experts);
}

}  // namespace

LayerWeights load_layer_weights(const Checkpoint& ckpt, const ModelConfig& c, int64_t layer, bool with_mlp) {
  LayerWeights w;
  load_layer(ckpt, c, layer, with_mlp, kReadF32, &w);
  return w;
}

void reload_layer_weights(const Checkpoint& ckpt, const ModelConfig& c, int64_t layer, bool with_mlp, LayerWeights* w) {
  load_layer(ckpt, c, layer, with_mlp, kReadF32, w);
}

LayerWeights load_layer_weights_bf16(const Checkpoint& ckpt, const ModelConfig& c, int64_t layer, bool with_mlp) {
  LayerWeights w;
  load_layer(ckpt, c, layer, with_mlp, kReadBf16, &w);
  return w;
}

void reload_layer_weights_bf16_rows(const Checkpoint& ckpt, const ModelConfig& c, int64_t layer, bool with_mlp,
                                    LayerWeights* w) {
  load_layer(ckpt, c, layer, with_mlp, kReadBf16Rows, w);
}

void round_weights_to_bf16(const RowMatrix& w, uint16_t* out) {
  const float* src = w.data();
#pragma omp parallel for schedule(static)
  for (Eigen::Index i = 0; i < w.size(); ++i) out[i] = f32_to_bf16(src[i]);
}

void to_bf16_rows(LayerWeights* w) {
  for (Linear* l : {&w->q, &w->k, &w->v, &w->o, &w->gate, &w->up, &w->down}) {
    if (l->w.size() == 0) continue;
    l->w_bf16_view = {};
    l->w_bf16_rows.resize(static_cast<std::size_t>(l->w.size()));  // [out, in] bf16 bits
    round_weights_to_bf16(l->w, l->w_bf16_rows.data());
  }
}

void to_bf16_weights(LayerWeights* w) {
  std::vector<Linear*> all = {&w->q, &w->k, &w->v, &w->o, &w->gate, &w->up, &w->down};
  for (auto* v : {&w->experts.gate, &w->experts.up, &w->experts.down})  // the router stays fp32
    for (Linear& l : *v) all.push_back(&l);
  for (Linear* l : all)
    if (l->w.size() > 0) pack_weights_bf16(l);
}

void pack_weights_bf16(Linear* l) {
  std::vector<uint16_t> plain(static_cast<std::size_t>(l->w.size()));  // [out, in] bf16 bits
  round_weights_to_bf16(l->w, plain.data());
  l->w_bf16 = std::make_shared<const PackedBf16Weights>(plain.data(), l->w.rows(), l->w.cols());
  l->w = RowMatrix();
}

void release_layer_pages(const Checkpoint& ckpt, const ModelConfig& cfg, int64_t layer) {
  const std::string p = cfg.layer_prefix(layer);
  for (const auto& name : ckpt.tensor_names())
    if (name.starts_with(p)) ckpt.shard_of(name).release(ckpt.info(name));
}

void prefetch_layer_pages(const Checkpoint& ckpt, const ModelConfig& cfg, int64_t layer) {
  const std::string p = cfg.layer_prefix(layer);
  for (const auto& name : ckpt.tensor_names())
    if (name.starts_with(p)) ckpt.shard_of(name).prefetch(ckpt.info(name));
}

}  // namespace ctcal
