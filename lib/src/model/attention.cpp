#include "ctcal/model/attention.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <memory>

#include "ctcal/model/onednn_matmul.h"
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
  UninitBuffer<uint16_t> q16, p16;  // bf16 variant: the task's stacked queries and probabilities
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

// Position q sees every key k <= q (no sliding window).
constexpr int64_t kNoWindow = std::numeric_limits<int64_t>::max();

// One task: a sample, a kv head and `block` query rows. Costs differ (later rows see more keys),
// so the largest go first and threads take tasks dynamically. Each task writes its own rows of
// `out` and sums in a fixed order: the result is the same for any schedule.
struct Task {
  int64_t sample, kv_head, r0, cost;
};

// The first key a query block starting at r0 may see: causal keys start at 0, a window or a
// chunk cuts them (first_visible is non-decreasing in the position).
int64_t first_key(int64_t r0, const AttentionShape& c) { return c.first_visible(r0); }

std::vector<Task> make_tasks(const std::vector<SampleSpan>& samples, const AttentionShape& c, int64_t block) {
  std::vector<Task> tasks;
  for (std::size_t s = 0; s < samples.size(); ++s)
    for (int64_t r0 = 0; r0 < samples[s].length; r0 += block)
      for (int64_t g = 0; g < c.kv_heads; ++g) {
        const int64_t r1 = std::min(samples[s].length, r0 + block);
        const int64_t lo = first_key(r0, c);
        tasks.push_back({static_cast<int64_t>(s), g, r0, (r1 - r0) * (r1 - lo)});
      }
  std::stable_sort(tasks.begin(), tasks.end(), [](const Task& a, const Task& b) { return a.cost > b.cost; });
  return tasks;
}

// One task as its kernel sees it: query rows [r0, r1) of `span` for the query heads reading kv
// head g; the keys any of them may see are [lo, r1) (causal, optional window).
struct BlockTask {
  SampleSpan span;
  int64_t g, r0, r1, lo;
};

// Runs fn(thread's buffers, task) for every task of make_tasks in one parallel loop, largest
// first: the one task loop of the fp32 and the bf16 attention.
template <typename Fn>
void for_each_task(const std::vector<SampleSpan>& samples, const AttentionShape& c, int64_t block, Fn&& fn) {
  const std::vector<Task> tasks = make_tasks(samples, c, block);
  const auto n_tasks = static_cast<int64_t>(tasks.size());
#pragma omp parallel
  {
    TaskBuffers& buf = thread_buffers();
#pragma omp for schedule(dynamic, 1)
    for (int64_t t = 0; t < n_tasks; ++t) {
      const Task& task = tasks[static_cast<std::size_t>(t)];
      const SampleSpan& span = samples[static_cast<std::size_t>(task.sample)];
      const int64_t r1 = std::min(span.length, task.r0 + block);
      fn(buf, BlockTask{span, task.kv_head, task.r0, r1, first_key(task.r0, c)});
    }
  }
}

// Keys position pos sees within the key block [k0, k0 + cols): [first, last) (causal, optional
// window; first >= last when none).
struct Visible {
  int64_t first, last;
};
Visible visible_keys(int64_t pos, int64_t k0, int64_t cols, const AttentionShape& c) {
  return {std::clamp<int64_t>(c.first_visible(pos) - k0, 0, cols),
          std::clamp<int64_t>(pos + 1 - k0, 0, cols)};
}

// The bf16 variant pads each key block to a multiple of this many keys (AMX tiles hold 16 rows
// of 32 bf16 pairs; 64 keeps the kernels few).
constexpr int64_t kKeyGranule = 64;

// The bf16 variant's task GEMMs, planned once per call. They come in few shapes: M = rep * block
// query rows (a short block padded with zero rows) by a key block rounded up to kKeyGranule keys
// (the first blocks of a sample are short: padding them to key_block cost a third more work at
// 512 tokens). Which kernel a step uses depends on positions only, not on the thread.
struct Bf16Kernels {
  int64_t granule, key_block;
  std::vector<std::unique_ptr<TaskMatmulBf16>> scores, mix;  // [ceil(key_block / granule)]: q k^T, acc += p v

  Bf16Kernels(int64_t m_pad, int64_t d, int64_t kv_stride, int64_t key_block_)
      : granule(std::min(kKeyGranule, key_block_)), key_block(key_block_) {
    for (int64_t cols = granule; cols < key_block + granule; cols += granule) {
      const int64_t n_pad = std::min(cols, key_block);
      scores.push_back(std::make_unique<TaskMatmulBf16>(m_pad, n_pad, d, /*b_transposed=*/true, kv_stride,
                                                        /*accumulate=*/false));
      mix.push_back(std::make_unique<TaskMatmulBf16>(m_pad, d, n_pad, /*b_transposed=*/false, kv_stride,
                                                     /*accumulate=*/true));
    }
  }
  // The kernel for a step over `cols` keys, and the keys it covers.
  std::size_t index(int64_t cols) const { return static_cast<std::size_t>((cols + granule - 1) / granule - 1); }
  int64_t padded(int64_t cols) const { return std::min((static_cast<int64_t>(index(cols)) + 1) * granule, key_block); }
};

// qs [rep * block, d] = the block's rows of the rep query heads that share one kv head, stacked:
// row j * block + i = head j (of the group), position i, from q (the group's first head at
// position 0, row stride q_stride). Rows i >= rows are zero, so their scores and
// probabilities are exact zeros.
void stack_queries(uint16_t* qs, const uint16_t* q, int64_t rows, int64_t block, int64_t rep, int64_t d,
                   int64_t q_stride) {
  for (int64_t j = 0; j < rep; ++j) {
    uint16_t* dst = qs + j * block * d;
    for (int64_t i = 0; i < rows; ++i)
      std::memcpy(dst + i * d, q + i * q_stride + j * d, static_cast<std::size_t>(d) * sizeof(uint16_t));
    std::fill(dst + rows * d, dst + block * d, uint16_t{0});
  }
}

// One online-softmax step of a score row p [cols] (unscaled q.k): exp of the visible scores
// against the new running max, zeros elsewhere; updates the row's running max and sum and returns
// the factor by which the row's accumulated output must shrink (1 when the max did not move).
float softmax_step(float* p, int64_t cols, Visible vis, float scale, float* run_max, float* run_sum) {
  if (vis.first >= vis.last) {  // nothing visible in this key block
    std::fill(p, p + cols, 0.0f);
    return 1.0f;
  }
  float* live = p + vis.first;
  const int64_t n_live = vis.last - vis.first;
  const float new_max = std::max(*run_max, row_max(live, n_live));
  // Running max and sum in unscaled units; exp(-inf) = 0 for the first block.
  const float correction = std::exp((*run_max - new_max) * scale);
  const float block_sum = exp_shifted_sum(live, n_live, new_max, scale);
  std::fill(p, live, 0.0f);
  std::fill(p + vis.last, p + cols, 0.0f);
  *run_sum = *run_sum * correction + block_sum;
  *run_max = new_max;
  return correction;
}

// o [d] = the row's normalised output from its accumulator acc [d] and running max/sum.
void write_row(Eigen::Map<Eigen::RowVectorXf> o, const Eigen::Ref<const Eigen::RowVectorXf>& acc, float run_max,
               float run_sum, const AttentionShape& c, int64_t head) {
  if (!c.sinks) {
    o = acc / run_sum;
    return;
  }
  // softmax over [scores, sink] with the sink's column dropped: the sink adds exp(sink - m) to
  // the denominator. Both sides are rescaled to the larger of the row's max score and the sink
  // (as transformers subtracts the combined max).
  const float score_max = run_max * c.scale, sink = c.sinks[head];
  const float m = std::max(score_max, sink);
  const float keep = std::exp(score_max - m);
  o = acc * (keep / (run_sum * keep + std::exp(sink - m)));
}

// One task's online-softmax state over m stacked query rows, in the thread's buffers: the
// unnormalised output acc [m, d] (zeros) and each row's running max (-inf) and sum (0).
struct SoftmaxState {
  DenseMap acc;                         // [m, d]
  Eigen::Map<Eigen::VectorXf> run_max;  // [m]
  Eigen::Map<Eigen::VectorXf> run_sum;  // [m]

  SoftmaxState(TaskBuffers& buf, int64_t m, int64_t d)
      : acc(buf.out.fit(m * d), m, d), run_max(buf.stats.fit(2 * m), m), run_sum(buf.stats.data() + m, m) {
    acc.setZero();
    run_max.setConstant(-std::numeric_limits<float>::infinity());
    run_sum.setZero();
  }

  // The normalised outputs of positions [r0, r0 + rows) for the query heads reading kv head g,
  // into out (a sample's rows, stride q_dim). State row j * head_rows + i is head g * rep + j at
  // position r0 + i (head_rows: the rows stacked per head, >= rows).
  void write(float* out, int64_t r0, int64_t rows, int64_t head_rows, int64_t g, const AttentionShape& c) const {
    const int64_t d = c.head_dim, qd = c.q_dim(), rep = c.heads / c.kv_heads;
    for (int64_t j = 0; j < rep; ++j)
      for (int64_t i = 0; i < rows; ++i) {
        const int64_t row = j * head_rows + i;
        write_row(Eigen::Map<Eigen::RowVectorXf>(out + (r0 + i) * qd + (g * rep + j) * d, d), acc.row(row),
                  run_max[row], run_sum[row], c, g * rep + j);
      }
  }
};

}  // namespace

AttentionShape AttentionShape::plain(int64_t heads, int64_t kv_heads, int64_t head_dim,
                                     std::optional<int64_t> window) {
  AttentionShape s;
  s.heads = heads;
  s.kv_heads = kv_heads;
  s.head_dim = head_dim;
  s.window = window;
  s.scale = 1.0f / std::sqrt(static_cast<float>(head_dim));
  return s;
}

AttentionShape AttentionShape::of(const ModelConfig& c, int64_t layer) {
  AttentionShape s = plain(c.num_attention_heads, c.num_key_value_heads, c.head_dim, c.window(layer));
  if (c.query_pre_attn_scalar) s.scale = static_cast<float>(std::pow(*c.query_pre_attn_scalar, -0.5));
  // Granite: the softmax scale is attention_multiplier itself (GraniteMoeSharedAttention.scaling).
  if (c.attention_multiplier) s.scale = static_cast<float>(*c.attention_multiplier);
  return s;
}

void causal_attention(const float* q_all, const float* k_all, const float* v_all, float* out_all,
                      const std::vector<SampleSpan>& samples, const AttentionShape& c, int64_t block,
                      int64_t key_block) {
  const int64_t d = c.head_dim, qd = c.q_dim(), kvd = c.kv_dim(), rep = c.heads / c.kv_heads;
  const float scale = c.scale;
  for_each_task(samples, c, block, [&](TaskBuffers& buf, const BlockTask& task) {
    const float* q = q_all + task.span.offset * qd;  // this sample's rows
    const float* k = k_all + task.span.offset * kvd;
    const float* v = v_all + task.span.offset * kvd;
    float* out = out_all + task.span.offset * qd;
    const int64_t g = task.g, r0 = task.r0, r1 = task.r1, lo = task.lo, rows = r1 - r0, m_rows = rep * rows;
    // The block's rows of every query head reading kv head g, stacked: one GEMM instead of
    // n_rep small ones. qs: [rep * rows, d], row j * rows + i = head g * rep + j, position r0 + i.
    DenseMap qs(buf.q.fit(m_rows * d), m_rows, d);
    for (int64_t j = 0; j < rep; ++j)
      qs.middleRows(j * rows, rows) = ConstStridedMap(q + r0 * qd + (g * rep + j) * d, rows, d, Eigen::OuterStride<>(qd));
    SoftmaxState st(buf, m_rows, d);  // acc [rep * rows, d]
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
        const Visible vis = visible_keys(r0 + row % rows, k0, cols, c);
        const float correction = softmax_step(&p(row, 0), cols, vis, scale, &st.run_max[row], &st.run_sum[row]);
        if (correction != 1.0f) st.acc.row(row) *= correction;
      }
      st.acc.noalias() += p * vb;
    }
    st.write(out, r0, rows, rows, g, c);
  });
}

int64_t attention_bf16_scratch(const AttentionShape& c, int64_t rows, int64_t key_block) {
  return rows * c.q_dim() + 2 * (rows + key_block) * c.kv_dim();
}

void causal_attention_bf16(const float* q_all, const float* k_all, const float* v_all, float* out_all,
                           const std::vector<SampleSpan>& samples, const AttentionShape& c, int64_t block,
                           int64_t key_block, uint16_t* scratch) {
  const int64_t d = c.head_dim, qd = c.q_dim(), kvd = c.kv_dim(), rep = c.heads / c.kv_heads;
  const float scale = c.scale;
  int64_t n = 0;  // rows of q/k/v
  for (const SampleSpan& s : samples) n = std::max(n, s.offset + s.length);
  // q, k, v rounded to bf16 once ([n, q_dim], [n + key_block, kv_dim] x 2, in the caller's
  // scratch): a key block is read by every later query block. k and v end in key_block zero
  // rows, so a sample's last key block can be read whole in place; its rows past the sample are
  // masked out below.
  uint16_t* q16 = scratch;
  uint16_t* k16 = q16 + n * qd;
  uint16_t* v16 = k16 + (n + key_block) * kvd;
  round_rows_to_bf16(Eigen::Map<const RowMatrix>(q_all, n, qd), q16);
  round_rows_to_bf16(Eigen::Map<const RowMatrix>(k_all, n, kvd), k16);
  round_rows_to_bf16(Eigen::Map<const RowMatrix>(v_all, n, kvd), v16);
  std::fill(k16 + n * kvd, k16 + (n + key_block) * kvd, uint16_t{0});
  std::fill(v16 + n * kvd, v16 + (n + key_block) * kvd, uint16_t{0});
  const int64_t m_pad = rep * block;
  const Bf16Kernels kernels(m_pad, d, kvd, key_block);
  for_each_task(samples, c, block, [&](TaskBuffers& buf, const BlockTask& task) {
    const uint16_t* q = q16 + task.span.offset * qd;  // this sample's rows
    const uint16_t* k = k16 + task.span.offset * kvd;
    const uint16_t* v = v16 + task.span.offset * kvd;
    float* out = out_all + task.span.offset * qd;
    const int64_t g = task.g, r0 = task.r0, r1 = task.r1, lo = task.lo, rows = r1 - r0;
    uint16_t* qs = buf.q16.fit(m_pad * d);  // [rep * block, d]
    stack_queries(qs, q + r0 * qd + g * rep * d, rows, block, rep, d, qd);
    SoftmaxState st(buf, m_pad, d);  // acc [rep * block, d]
    float* p = buf.scores.fit(m_pad * key_block);   // [rep * block, n_pad] fp32 scores
    uint16_t* pb = buf.p16.fit(m_pad * key_block);  // [rep * block, n_pad] bf16 probabilities
    for (int64_t k0 = lo; k0 < r1; k0 += key_block) {
      const int64_t cols = std::min(r1, k0 + key_block) - k0;  // keys of the sample in this block
      const std::size_t kernel = kernels.index(cols);
      const int64_t n_pad = kernels.padded(cols);
      // Keys k0 .. k0 + n_pad of head g, in place ([n_pad, d], row stride kv_dim).
      kernels.scores[kernel]->run(qs, k + k0 * kvd + g * d, p);
      // Softmax in fp32 (running max and sum of the unrounded exps); the keys past `cols`
      // (later samples' rows or the zero tail) get probability 0.
      for (int64_t j = 0; j < rep; ++j)
        for (int64_t i = 0; i < rows; ++i) {
          const int64_t row = j * block + i;
          float* pr = p + row * n_pad;
          const Visible vis = visible_keys(r0 + i, k0, cols, c);
          const float correction = softmax_step(pr, cols, vis, scale, &st.run_max[row], &st.run_sum[row]);
          std::fill(pr + cols, pr + n_pad, 0.0f);
          if (correction != 1.0f) st.acc.row(row) *= correction;
        }
      // The probabilities rounded to bf16 for the P V product, as PyTorch's bf16 CPU flash
      // attention does.
      round_to_bf16(p, m_pad * n_pad, pb);  // the scores are finite: exps, or exact zeros
      kernels.mix[kernel]->run(pb, v + k0 * kvd + g * d, st.acc.data());
    }
    st.write(out, r0, rows, block, g, c);
  });
}

}  // namespace ctcal
