#include "ctcal/quant/key_envelope.h"

#include <algorithm>
#include <cmath>

#include "ctcal/error.h"

namespace ctcal {

void key_envelope(const HeadsView& v, int64_t half, const RowMatrix* rotation, std::vector<double>* env) {
  const int64_t d = v.head_dim;
  CTCAL_ASSERT(2 * half <= d, "rotary dims exceed head_dim");
  CTCAL_ASSERT(!rotation || (rotation->rows() == d && rotation->cols() == d), "rotation is [head_dim, head_dim]");
  env->assign(static_cast<std::size_t>(v.heads), 0.0);
  // With a rotation: per output j, the weight of pair p is sqrt(R_aj^2 + R_bj^2), of an
  // unrotated channel i |R_ij|. [head_dim - half, head_dim] in double.
  std::vector<double> weight;
  const int64_t groups = d - half;  // pairs, then pass-through channels
  if (rotation) {
    weight.resize(static_cast<std::size_t>(groups * d));
    for (int64_t j = 0; j < d; ++j) {
      for (int64_t p = 0; p < half; ++p) {
        const double a = (*rotation)(p, j), b = (*rotation)(p + half, j);
        weight[static_cast<std::size_t>(p * d + j)] = std::sqrt(a * a + b * b);
      }
      for (int64_t i = 2 * half; i < d; ++i)
        weight[static_cast<std::size_t>((i - half) * d + j)] = std::fabs((*rotation)(i, j));
    }
  }
  std::vector<double> r(static_cast<std::size_t>(groups));  // [groups]: pair norms, then |x_i|
  for (int64_t t = 0; t < v.seq; ++t)
    for (int64_t h = 0; h < v.heads; ++h) {
      for (int64_t p = 0; p < half; ++p) {
        const double a = v.at(t, h, p), b = v.at(t, h, p + half);
        r[static_cast<std::size_t>(p)] = std::sqrt(a * a + b * b);
      }
      for (int64_t i = 2 * half; i < d; ++i) r[static_cast<std::size_t>(i - half)] = std::fabs(v.at(t, h, i));
      double bound = 0;
      if (!rotation) {
        bound = *std::max_element(r.begin(), r.end());
      } else {
        for (int64_t j = 0; j < d; ++j) {
          double s = 0;
          for (int64_t g = 0; g < groups; ++g) s += r[static_cast<std::size_t>(g)] * weight[static_cast<std::size_t>(g * d + j)];
          bound = std::max(bound, s);
        }
      }
      double& e = (*env)[static_cast<std::size_t>(h)];
      e = std::max(e, bound);
    }
}

}  // namespace ctcal
