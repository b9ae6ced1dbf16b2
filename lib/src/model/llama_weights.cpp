#include "ctcal/model/llama_weights.h"

#include <cstring>

#include <fmt/ranges.h>

#include "ctcal/error.h"
#include "ctcal/io/quantized_weight.h"

namespace ctcal {

namespace {

std::string layer_prefix(int64_t layer) { return fmt::format("model.layers.{}.", layer); }

// A Linear weight stored quantized (compressed-tensors formats): dequantized to fp32 [out, in];
// nullopt for a float weight. (Hook for quantized inputs; the rest of the file reads floats.)
std::optional<DequantizedWeight> read_quantized(const Checkpoint& ckpt, const std::string& module,
                                                int64_t out, int64_t in) {
  const auto spec = ckpt.quantized_weight(module);
  if (!spec) return std::nullopt;
  DequantizedWeight d = dequantize_weight(tensor_getter(ckpt), module, *spec);
  if (d.shape != std::vector<int64_t>{out, in})
    throw InputError(fmt::format("{}: quantized weight '{}' has shape {}; expected {} from config.json",
                                 ckpt.dir().string(), module, shape_str(d.shape), shape_str({out, in})));
  return d;
}

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

std::vector<TensorSpec> layer_specs(const LlamaConfig& c, bool with_mlp) {
  const int64_t h = c.hidden_size, q = c.q_dim(), kv = c.kv_dim(), f = c.intermediate_size;
  std::vector<TensorSpec> s = {
      {"input_layernorm.weight", {h}},   {"self_attn.q_proj.weight", {q, h}},
      {"self_attn.k_proj.weight", {kv, h}}, {"self_attn.v_proj.weight", {kv, h}},
      {"self_attn.o_proj.weight", {h, q}},
  };
  if (c.attention_bias) {
    s.push_back({"self_attn.q_proj.bias", {q}});
    s.push_back({"self_attn.k_proj.bias", {kv}});
    s.push_back({"self_attn.v_proj.bias", {kv}});
    s.push_back({"self_attn.o_proj.bias", {h}});
  }
  if (with_mlp) {
    s.push_back({"post_attention_layernorm.weight", {h}});
    s.push_back({"mlp.gate_proj.weight", {f, h}});
    s.push_back({"mlp.up_proj.weight", {f, h}});
    s.push_back({"mlp.down_proj.weight", {h, f}});
    if (c.mlp_bias) {
      s.push_back({"mlp.gate_proj.bias", {f}});
      s.push_back({"mlp.up_proj.bias", {f}});
      s.push_back({"mlp.down_proj.bias", {h}});
    }
  }
  return s;
}

Vector read_vector(const Checkpoint& ckpt, const std::string& name, int64_t n) {
  std::vector<float> v = read_checked(ckpt, name, {n});
  return Eigen::Map<Vector>(v.data(), n);
}

void read_linear_bf16(const Checkpoint& ckpt, const std::string& name, int64_t out, int64_t in, bool bias, Linear* lp) {
  Linear& l = *lp;
  l.w = RowMatrix();
  if (auto d = read_quantized(ckpt, name, out, in)) {
    std::vector<uint16_t> bits(d->values.size());  // [out, in] bf16
    for (std::size_t i = 0; i < bits.size(); ++i) bits[i] = f32_to_bf16(d->values[i]);
    l.w_bf16 = std::make_shared<const PackedBf16Weights>(bits.data(), out, in);
    l.b = bias ? read_vector(ckpt, name + ".bias", out) : Vector();
    return;
  }
  const std::string wn = name + ".weight";
  check_tensor(ckpt, wn, {out, in});
  const TensorInfo& t = ckpt.info(wn);
  const unsigned char* p = ckpt.shard_of(wn).data(t);
  const auto n = static_cast<int64_t>(t.numel());
  // bf16 checkpoints are packed straight from the mmap; other dtypes are rounded first.
  std::vector<uint16_t> rounded;
  if (t.dtype != DType::kBF16) rounded.resize(t.numel());
  bool finite = true;
#pragma omp parallel for schedule(static) reduction(&& : finite)
  for (int64_t i = 0; i < n; ++i) {
    uint16_t v;
    if (t.dtype == DType::kBF16) {
      std::memcpy(&v, p + 2 * i, 2);
    } else {
      v = f32_to_bf16(load_as_f32(p, t.dtype, static_cast<std::size_t>(i)));
      rounded[static_cast<std::size_t>(i)] = v;
    }
    finite = finite && (v & 0x7F80u) != 0x7F80u;
  }
  if (!finite)
      throw InputError(fmt::format("{}: tensor '{}' contains NaN or Inf; the checkpoint is corrupt",
                                   ckpt.shard_of(wn).path().string(), wn));
  // The mmap may place a bf16 tensor at any even offset; oneDNN's reorder reads it unaligned.
  const auto* src = t.dtype == DType::kBF16 ? reinterpret_cast<const uint16_t*>(p) : rounded.data();
  l.w_bf16 = std::make_shared<const PackedBf16Weights>(src, out, in);
  l.b = bias ? read_vector(ckpt, name + ".bias", out) : Vector();
}

// Fills *lp, reusing its fp32 buffer when the shape is unchanged (every layer after the first):
// a fresh 64 MB matrix per projection and layer would be page-faulted in again each time.
void read_linear(const Checkpoint& ckpt, const std::string& name, int64_t out, int64_t in, bool bias, Linear* lp) {
  Linear& l = *lp;
  l.w_bf16.reset();
  if (auto d = read_quantized(ckpt, name, out, in)) {
    l.w = Eigen::Map<const RowMatrix>(d->values.data(), out, in);
    l.b = bias ? read_vector(ckpt, name + ".bias", out) : Vector();
    return;
  }
  const TensorInfo& t = ckpt.info(name + ".weight");
  check_tensor(ckpt, name + ".weight", {out, in});
  l.w.resize(out, in);  // keeps the allocation when out * in is unchanged
  const unsigned char* src = ckpt.shard_of(name + ".weight").data(t);
  const std::size_t row_bytes = static_cast<std::size_t>(in) * dtype_size(t.dtype);
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
                                 ckpt.shard_of(name + ".weight").path().string(),
                                 l.w.allFinite() ? name + ".bias" : name + ".weight"));
}

}  // namespace

std::vector<float> read_checked(const Checkpoint& ckpt, const std::string& name,
                                std::initializer_list<int64_t> shape) {
  check_tensor(ckpt, name, std::vector<int64_t>(shape));
  return ckpt.read_f32(name);
}

void check_model_tensors(const Checkpoint& ckpt, const LlamaConfig& c) {
  check_tensor(ckpt, "model.embed_tokens.weight", {c.vocab_size, c.hidden_size});
  check_tensor(ckpt, "model.norm.weight", {c.hidden_size});
  if (!c.tie_word_embeddings) check_tensor(ckpt, "lm_head.weight", {c.vocab_size, c.hidden_size});
  for (int64_t l = 0; l < c.num_hidden_layers; ++l)
    for (const auto& spec : layer_specs(c, true)) check_tensor(ckpt, layer_prefix(l) + spec.suffix, spec.shape);
}

namespace {
template <typename ReadLinear>
void load_layer(const Checkpoint& ckpt, const LlamaConfig& c, int64_t layer, bool with_mlp,
                ReadLinear read_linear, LayerWeights* wp) {
  const std::string p = layer_prefix(layer);
  const int64_t h = c.hidden_size, q = c.q_dim(), kv = c.kv_dim(), f = c.intermediate_size;
  LayerWeights& w = *wp;
  w.input_norm = read_vector(ckpt, p + "input_layernorm.weight", h);
  read_linear(ckpt, p + "self_attn.q_proj", q, h, c.attention_bias, &w.q);
  read_linear(ckpt, p + "self_attn.k_proj", kv, h, c.attention_bias, &w.k);
  read_linear(ckpt, p + "self_attn.v_proj", kv, h, c.attention_bias, &w.v);
  read_linear(ckpt, p + "self_attn.o_proj", h, q, c.attention_bias, &w.o);
  w.has_mlp = with_mlp;
  if (with_mlp) {
    w.post_norm = read_vector(ckpt, p + "post_attention_layernorm.weight", h);
    read_linear(ckpt, p + "mlp.gate_proj", f, h, c.mlp_bias, &w.gate);
    read_linear(ckpt, p + "mlp.up_proj", f, h, c.mlp_bias, &w.up);
    read_linear(ckpt, p + "mlp.down_proj", h, f, c.mlp_bias, &w.down);
  } else {
    w.post_norm = Vector();
    w.gate = w.up = w.down = Linear();  // nothing of an earlier layer's MLP stays resident
  }
}

}  // namespace

LayerWeights load_layer_weights(const Checkpoint& ckpt, const LlamaConfig& c, int64_t layer, bool with_mlp) {
  LayerWeights w;
  load_layer(ckpt, c, layer, with_mlp, read_linear, &w);
  return w;
}

void reload_layer_weights(const Checkpoint& ckpt, const LlamaConfig& c, int64_t layer, bool with_mlp, LayerWeights* w) {
  load_layer(ckpt, c, layer, with_mlp, read_linear, w);
}

LayerWeights load_layer_weights_bf16(const Checkpoint& ckpt, const LlamaConfig& c, int64_t layer, bool with_mlp) {
  LayerWeights w;
  load_layer(ckpt, c, layer, with_mlp, read_linear_bf16, &w);
  return w;
}

void to_bf16_weights(LayerWeights* w) {
  for (Linear* l : {&w->q, &w->k, &w->v, &w->o, &w->gate, &w->up, &w->down}) {
    if (l->w.size() == 0) continue;
    std::vector<uint16_t> plain(static_cast<std::size_t>(l->w.size()));  // [out, in] bf16 bits
    for (Eigen::Index i = 0; i < l->w.size(); ++i) plain[static_cast<std::size_t>(i)] = f32_to_bf16(l->w.data()[i]);
    l->w_bf16 = std::make_shared<const PackedBf16Weights>(plain.data(), l->w.rows(), l->w.cols());
    l->w = RowMatrix();
  }
}

void release_layer_pages(const Checkpoint& ckpt, int64_t layer) {
  const std::string p = layer_prefix(layer);
  for (const auto& name : ckpt.tensor_names())
    if (name.starts_with(p)) ckpt.shard_of(name).release(ckpt.info(name));
}

}  // namespace ctcal
