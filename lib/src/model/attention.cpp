#include "ctcal/model/attention.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "ctcal/model/tensor_types.h"
#include "ctcal/util/uninit_buffer.h"

namespace ctcal {

namespace {

using StridedMap = Eigen::Map<RowMatrix, 0, Eigen::OuterStride<>>;
using ConstStridedMap = Eigen::Map<const RowMatrix, 0, Eigen::OuterStride<>>;
using DenseMap = Eigen::Map<RowMatrix>;

// Per-thread buffers, grown to the largest task and kept for the thread's life (OpenMP reuses
// its threads): allocating a fresh score matrix per call cost 40 % of attention's time in
// zeroing and page faults.
struct TaskBuffers {
  UninitBuffer<float> q, scores, out, stats;
};

TaskBuffers& thread_buffers() {
  thread_local TaskBuffers b;
  return b;
}

// Softmax row kernels on Eigen's SIMD packets (16 floats with AVX-512). One fused pass each
// instead of Eigen expressions that walk the row 3-4 times. Loads are unaligned and the tail is
// padded to a full packet, so the operation order depends on the row length alone, never on
// the address: results do not depend on which thread's buffer holds the row.
using Packet = Eigen::internal::packet_traits<float>::type;
// sizeof, not unpacket_traits<Packet>: __m512 as a template argument drops its attributes (-Wignored-attributes).
constexpr int64_t kPacket = static_cast<int64_t>(sizeof(Packet) / sizeof(float));

// The last partial packet of x[i, n), padded with `pad`.
Packet load_tail(const float* x, int64_t i, int64_t n, float pad) {
  alignas(64) float tail[kPacket];
  for (int64_t j = 0; j < kPacket; ++j) tail[j] = i + j < n ? x[i + j] : pad;
  return Eigen::internal::pload<Packet>(tail);
}

float row_max(const float* x, int64_t n) {
  const float lowest = -std::numeric_limits<float>::infinity();
  Packet m = Eigen::internal::pset1<Packet>(lowest);
  int64_t i = 0;
  for (; i + kPacket <= n; i += kPacket) m = Eigen::internal::pmax(m, Eigen::internal::ploadu<Packet>(x + i));
  if (i < n) m = Eigen::internal::pmax(m, load_tail(x, i, n, lowest));
  return Eigen::internal::predux_max(m);
}

// x[j] = exp((x[j] - shift) * scale) for j < n; returns the sum of the new values (lane-wise
// partial sums, then the lanes: a fixed order).
float exp_shifted_sum(float* x, int64_t n, float shift, float scale) {
  using namespace Eigen::internal;
  const Packet sh = pset1<Packet>(shift), sc = pset1<Packet>(scale);
  Packet sum = pset1<Packet>(0.0f);
  int64_t i = 0;
  for (; i + kPacket <= n; i += kPacket) {
    const Packet e = pexp(pmul(psub(ploadu<Packet>(x + i), sh), sc));
    pstoreu(x + i, e);
    sum = padd(sum, e);
  }
  if (i < n) {
    // Padding with -inf gives exp = 0: the sum is unchanged.
    alignas(64) float tail[kPacket];
    pstore(tail, pexp(pmul(psub(load_tail(x, i, n, -std::numeric_limits<float>::infinity()), sh), sc)));
    for (int64_t j = 0; i + j < n; ++j) x[i + j] = tail[j];
    sum = padd(sum, pload<Packet>(tail));
  }
  return predux(sum);
}

}  // namespace

AttentionShape AttentionShape::plain(int64_t heads, int64_t kv_heads, int64_t head_dim,
                                     std::optional<int64_t> window) {
  return {heads, kv_heads, head_dim, window, 1.0f / std::sqrt(static_cast<float>(head_dim))};
}

AttentionShape AttentionShape::of(const ModelConfig& c, int64_t layer) {
  AttentionShape s = plain(c.num_attention_heads, c.num_key_value_heads, c.head_dim, c.window(layer));
  if (c.query_pre_attn_scalar) s.scale = static_cast<float>(std::pow(*c.query_pre_attn_scalar, -0.5));
  return s;
}

void causal_attention(const float* q_all, const float* k_all, const float* v_all, float* out_all,
                      const std::vector<SampleSpan>& samples, const AttentionShape& c, int64_t block,
                      int64_t key_block) {
  const int64_t d = c.head_dim, qd = c.q_dim(), kvd = c.kv_dim(), rep = c.heads / c.kv_heads;
  const float scale = c.scale;
  const int64_t no_window = std::numeric_limits<int64_t>::max();
  const int64_t window = c.window.value_or(no_window);
  // One task: a sample, a kv head and `block` query rows. Costs differ (later rows see more
  // keys), so the largest go first and threads take tasks dynamically. Each task writes its own
  // rows of `out` and sums in a fixed order: the result is the same for any schedule.
  struct Task {
    int64_t sample, kv_head, r0, cost;
  };
  std::vector<Task> tasks;
  for (std::size_t s = 0; s < samples.size(); ++s)
    for (int64_t r0 = 0; r0 < samples[s].length; r0 += block)
      for (int64_t g = 0; g < c.kv_heads; ++g) {
        const int64_t r1 = std::min(samples[s].length, r0 + block);
        const int64_t lo = window == no_window ? 0 : std::max<int64_t>(0, r0 - window + 1);
        tasks.push_back({static_cast<int64_t>(s), g, r0, (r1 - r0) * (r1 - lo)});
      }
  std::stable_sort(tasks.begin(), tasks.end(), [](const Task& a, const Task& b) { return a.cost > b.cost; });
  const auto n_tasks = static_cast<int64_t>(tasks.size());
#pragma omp parallel
  {
    TaskBuffers& buf = thread_buffers();
#pragma omp for schedule(dynamic, 1)
    for (int64_t t = 0; t < n_tasks; ++t) {
      const Task& task = tasks[static_cast<std::size_t>(t)];
      const SampleSpan& span = samples[static_cast<std::size_t>(task.sample)];
      const float* q = q_all + span.offset * qd;  // this sample's rows
      const float* k = k_all + span.offset * kvd;
      const float* v = v_all + span.offset * kvd;
      float* out = out_all + span.offset * qd;
      const int64_t g = task.kv_head, r0 = task.r0, seq = span.length;
      const int64_t r1 = std::min(seq, r0 + block), rows = r1 - r0, m_rows = rep * rows;
      // Keys any row of the block may see: causal limits them to [lo, r1).
      const int64_t lo = window == no_window ? 0 : std::max<int64_t>(0, r0 - window + 1);
      // The block's rows of every query head reading kv head g, stacked: one GEMM instead of
      // n_rep small ones. qs: [rep * rows, d], row j * rows + i = head g * rep + j, position r0 + i.
      DenseMap qs(buf.q.fit(m_rows * d), m_rows, d);
      for (int64_t j = 0; j < rep; ++j)
        qs.middleRows(j * rows, rows) = ConstStridedMap(q + r0 * qd + (g * rep + j) * d, rows, d, Eigen::OuterStride<>(qd));
      DenseMap acc(buf.out.fit(m_rows * d), m_rows, d);  // [rep * rows, d], unnormalised output
      acc.setZero();
      Eigen::Map<Eigen::VectorXf> run_max(buf.stats.fit(2 * m_rows), m_rows);   // [rep * rows]
      Eigen::Map<Eigen::VectorXf> run_sum(buf.stats.data() + m_rows, m_rows);  // [rep * rows]
      run_max.setConstant(-std::numeric_limits<float>::infinity());
      run_sum.setZero();
      // Online softmax over key blocks (flash attention): scores exist for one key block at a
      // time, [rep * rows, key_block], small enough to stay in L2.
      for (int64_t k0 = lo; k0 < r1; k0 += key_block) {
        const int64_t k1 = std::min(r1, k0 + key_block), cols = k1 - k0;
        ConstStridedMap kb(k + k0 * kvd + g * d, cols, d, Eigen::OuterStride<>(kvd));  // [cols, d]
        ConstStridedMap vb(v + k0 * kvd + g * d, cols, d, Eigen::OuterStride<>(kvd));  // [cols, d]
        DenseMap p(buf.scores.fit(m_rows * cols), m_rows, cols);  // [rep * rows, cols]
        // Raw scores q k^T; the 1/sqrt(d) scale is applied inside the exp below (softmax of
        // s * x with s > 0 has its maximum at the same place). Written as (qs * kb^T) * scale,
        // Eigen materialised a scaled, transposed copy of kb: half of attention's own time.
        p.noalias() = qs * kb.transpose();
        for (int64_t row = 0; row < m_rows; ++row) {
          // Keys k0 + j visible to position pos: j in [first, last) (causal, optional window).
          const int64_t pos = r0 + row % rows;
          const int64_t first = window == no_window ? 0 : std::clamp<int64_t>(pos - window + 1 - k0, 0, cols);
          const int64_t last = std::clamp<int64_t>(pos + 1 - k0, 0, cols);
          auto pr = p.row(row);
          if (first >= last) {  // nothing visible in this key block
            pr.setZero();
            continue;
          }
          float* live = &pr[first];
          const int64_t n_live = last - first;
          const float new_max = std::max(run_max[row], row_max(live, n_live));
          // Running max and sum in unscaled units; exp(-inf) = 0 for the first block.
          const float correction = std::exp((run_max[row] - new_max) * scale);
          const float block_sum = exp_shifted_sum(live, n_live, new_max, scale);
          pr.head(first).setZero();
          pr.tail(cols - last).setZero();
          run_sum[row] = run_sum[row] * correction + block_sum;
          run_max[row] = new_max;
          if (correction != 1.0f) acc.row(row) *= correction;
        }
        acc.noalias() += p * vb;
      }
      for (int64_t j = 0; j < rep; ++j)
        for (int64_t i = 0; i < rows; ++i) {
          Eigen::Map<Eigen::RowVectorXf> o(out + (r0 + i) * qd + (g * rep + j) * d, d);
          const int64_t row = j * rows + i;
          if (!c.sinks) {
            o = acc.row(row) / run_sum[row];
            continue;
          }
          // softmax over [scores, sink] with the sink's column dropped: the sink adds
          // exp(sink - m) to the denominator. Both sides are rescaled to the larger of the
          // row's max score and the sink (as transformers subtracts the combined max).
          const float score_max = run_max[row] * scale, sink = c.sinks[g * rep + j];
          const float m = std::max(score_max, sink);
          const float keep = std::exp(score_max - m);
          o = acc.row(row) * (keep / (run_sum[row] * keep + std::exp(sink - m)));
        }
    }
  }
}

}  // namespace ctcal
