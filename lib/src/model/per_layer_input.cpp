#include "ctcal/model/per_layer_input.h"

#include <cmath>

#include <fmt/format.h>

#include "ctcal/error.h"
#include "ctcal/model/layer_ops.h"

namespace ctcal {

namespace {

// Rows `ids` (or rows [row0, row0 + n) when ids is null) of a 2-D float tensor [rows, width],
// columns [col0, col0 + cols), as fp32 -> out [n, cols]. Read in place from the checkpoint's mmap.
void gather_rows(const Checkpoint& ckpt, const std::string& name, const int32_t* ids, int64_t row0, int64_t n,
                 int64_t col0, int64_t cols, float* out) {
  const SafetensorsFile& shard = ckpt.shard_of(name);
  const TensorInfo& t = shard.info(name);
  CTCAL_ASSERT(t.shape.size() == 2 && col0 + cols <= t.shape[1], "a PLE tensor's shape was checked (check_model_tensors)");
  const unsigned char* base = shard.data(t);
  const std::size_t elem = dtype_size(t.dtype);
  const auto width = static_cast<std::size_t>(t.shape[1]);
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < n; ++r) {
    const auto row = static_cast<std::size_t>(ids ? ids[r] : row0 + r);
    convert_to_f32(base + (row * width + static_cast<std::size_t>(col0)) * elem, t.dtype, static_cast<std::size_t>(cols),
                   out + r * cols);
  }
}

}  // namespace

std::string per_layer_embedding_name(const ModelConfig& c) { return c.weight_prefix + "embed_tokens_per_layer.weight"; }
std::string per_layer_model_projection_name(const ModelConfig& c) { return c.weight_prefix + "per_layer_model_projection"; }
std::string per_layer_projection_norm_name(const ModelConfig& c) { return c.weight_prefix + "per_layer_projection_norm.weight"; }

void read_per_layer_input_weights(const Checkpoint& ckpt, const ModelConfig& c, int64_t layer, PerLayerInputWeights* w) {
  const int64_t p = c.per_layer_input_size, h = c.hidden_size;
  w->model_proj.w.resize(p, h);  // [P, hidden]: this layer's rows of [L P, hidden]
  gather_rows(ckpt, per_layer_model_projection_name(c) + ".weight", nullptr, layer * p, p, 0, h, w->model_proj.w.data());
  w->model_proj.b = Vector();
  if (!w->model_proj.w.allFinite())
    throw InputError(fmt::format("{}: {}.weight rows {}..{} hold NaN or Inf", ckpt.dir().string(),
                                 per_layer_model_projection_name(c), layer * p, (layer + 1) * p));
  w->proj_norm = read_norm(ckpt, c, per_layer_projection_norm_name(c), p);
  w->post_norm = read_norm(ckpt, c, c.layer_prefix(layer) + "post_per_layer_input_norm.weight", h);
}

void per_layer_input_rows(const Checkpoint& ckpt, const ModelConfig& c, int64_t layer, const PerLayerInputWeights& w,
                          const int32_t* ids, int64_t n, RowMatrix* out) {
  const int64_t p = c.per_layer_input_size, h = c.hidden_size;
  // e = embed_tokens[t] * sqrt(hidden) (Gemma4TextScaledWordEmbedding, as Decoder::embed_ids)
  RowMatrix e(n, h);  // [n, hidden]
  gather_rows(ckpt, c.top_tensor("embed_tokens.weight"), ids, 0, n, 0, h, e.data());
  e *= static_cast<float>(std::sqrt(static_cast<double>(h)));
  // per_layer_model_projection(e) * hidden^-0.5 (a Python float), then RMSNorm over P
  RowMatrix proj;  // [n, P]
  linear(e, w.model_proj, &proj);
  proj *= static_cast<float>(std::pow(static_cast<double>(h), -0.5));
  rms_norm_into(proj, w.proj_norm, c.rms_norm_eps, proj);
  // + embed_tokens_per_layer[t, l P : (l + 1) P] * sqrt(P), then * 2^-0.5
  out->resize(n, p);
  gather_rows(ckpt, per_layer_embedding_name(c), ids, 0, n, layer * p, p, out->data());
  *out *= static_cast<float>(std::sqrt(static_cast<double>(p)));
  *out += proj;
  *out *= static_cast<float>(std::pow(2.0, -0.5));
}

void add_per_layer_input(const ModelConfig& c, const PerLayerInputWeights& w, const RowMatrix& ple, Eigen::Ref<RowMatrix> x) {
  RowMatrix g, y;  // [n, P], [n, hidden]
  linear(x, w.gate, &g);
  gated_act_into(MlpAct::kGeluTanh, g, ple);  // gelu_tanh(gate(x)) * ple
  linear(g, w.proj, &y);
  rms_norm_into(y, w.post_norm, c.rms_norm_eps, y);
  x += y;
}

}  // namespace ctcal
