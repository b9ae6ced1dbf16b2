#include "ctcal/eval/linear_fake_quant.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "ctcal/dtype.h"
#include "ctcal/error.h"

namespace ctcal {

namespace {

bool is_linear_input(Site s) {
  return s == Site::kQkvInput || s == Site::kOProjInput || s == Site::kGateUpInput || s == Site::kDownInput ||
         s == Site::kMambaInProjInput || s == Site::kMambaOutProjInput;
}

// absmax / 448 in fp32; an all-zero span gets float32 eps (compressed-tensors' calculate_qparams
// replaces a zero scale by the dtype's eps).
float dynamic_scale(const float* x, int64_t n) {
  float a = 0.0f;
  for (int64_t i = 0; i < n; ++i) a = std::max(a, std::fabs(x[i]));
  const float s = a / 448.0f;
  return s > 0.0f ? s : std::numeric_limits<float>::epsilon();
}

}  // namespace

float fp8_fake_quant(float x, float scale) {
  return f8e4m3_to_f32(f32_to_f8e4m3(std::clamp(x / scale, -448.0f, 448.0f))) * scale;
}

LinearInputFakeQuant::LinearInputFakeQuant(std::map<std::pair<int64_t, Site>, InputQuantSpec> inputs,
                                           ActivationQuantizer* inner)
    : inputs_(std::move(inputs)), inner_(inner) {}

bool LinearInputFakeQuant::quantizes(int64_t layer, Site site) const {
  if (is_linear_input(site)) return inputs_.count({layer, site}) != 0;
  return inner_ && inner_->quantizes(layer, site);
}

void LinearInputFakeQuant::apply(int64_t layer, Site site, float* data, int64_t seq, int64_t heads, int64_t head_dim,
                                 int64_t row_stride) {
  if (!is_linear_input(site)) {
    inner_->apply(layer, site, data, seq, heads, head_dim, row_stride);
    return;
  }
  CTCAL_ASSERT(heads == 1, "a Linear input is one row of `head_dim` columns per token");
  const InputQuantSpec& q = inputs_.at({layer, site});
  const int64_t width = head_dim;
  float tensor_scale = 0.0f;
  if (q.static_scale) {
    tensor_scale = static_cast<float>(*q.static_scale);
  } else if (q.strategy == Strategy::kTensor) {
    float a = 0.0f;
    for (int64_t t = 0; t < seq; ++t) a = std::max(a, dynamic_scale(data + t * row_stride, width));
    tensor_scale = a;
  }
  const int64_t span = q.static_scale || q.strategy != Strategy::kGroup ? width : q.group_size;
  CTCAL_ASSERT(span > 0, "group_size of a group strategy");
#pragma omp parallel for schedule(static)
  for (int64_t t = 0; t < seq; ++t) {
    float* row = data + t * row_stride;  // [width]
    for (int64_t c0 = 0; c0 < width; c0 += span) {
      const int64_t n = std::min(span, width - c0);
      const float s = tensor_scale > 0.0f ? tensor_scale : dynamic_scale(row + c0, n);
      for (int64_t c = c0; c < c0 + n; ++c) row[c] = fp8_fake_quant(row[c], s);
    }
  }
}

}  // namespace ctcal
