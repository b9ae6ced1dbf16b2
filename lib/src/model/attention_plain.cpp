// The plain attention of model/attention.h: the formula as written, kept in lib so that every
// fast path (the CPU's blocked fp32 and bf16 attention, the CUDA kernels) has one reference.
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "ctcal/model/attention.h"

namespace ctcal {

void causal_attention_plain(const float* q, const float* k, const float* v, double* out, int64_t seq,
                            const AttentionShape& shape) {
  const int64_t d = shape.head_dim, qd = shape.q_dim(), kvd = shape.kv_dim();
  const int64_t n_rep = shape.heads / shape.kv_heads;
  const int64_t window = shape.window.value_or(std::numeric_limits<int64_t>::max());
  std::fill(out, out + seq * qd, 0.0);
  std::vector<double> p(static_cast<std::size_t>(seq));  // one row of probabilities [seq]
  for (int64_t h = 0; h < shape.heads; ++h) {
    const int64_t g = h / n_rep;  // the kv head this query head reads
    for (int64_t i = 0; i < seq; ++i) {
      // Keys j <= i within the window (transformers: i - j < window) and the chunk take part.
      const int64_t lo = std::max<int64_t>(shape.first_visible(i), i - window + 1);
      double mx = shape.sinks ? static_cast<double>(shape.sinks[h]) : -std::numeric_limits<double>::infinity();
      for (int64_t j = lo; j <= i; ++j) {
        double s = 0;
        for (int64_t x = 0; x < d; ++x) s += double(q[i * qd + h * d + x]) * double(k[j * kvd + g * d + x]);
        p[static_cast<std::size_t>(j)] = s * double(shape.scale);
        mx = std::max(mx, p[static_cast<std::size_t>(j)]);
      }
      // The sink joins the denominator only: its probability is dropped.
      double sum = shape.sinks ? std::exp(double(shape.sinks[h]) - mx) : 0.0;
      for (int64_t j = lo; j <= i; ++j) {
        double& pj = p[static_cast<std::size_t>(j)];
        pj = std::exp(pj - mx);
        sum += pj;
      }
      for (int64_t j = lo; j <= i; ++j) {
        const double w = p[static_cast<std::size_t>(j)] / sum;
        for (int64_t x = 0; x < d; ++x) out[i * qd + h * d + x] += w * double(v[j * kvd + g * d + x]);
      }
    }
  }
}

}  // namespace ctcal
