#include "ctcal/model/fixed_order_gemm.h"

#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "ctcal/error.h"
#include "ctcal/util/uninit_buffer.h"

namespace ctcal {

namespace {

// Blocking (performance only: no block size or partition changes any output's order). A task
// is kNc columns x a run of kMc-row blocks; it walks k in blocks of kKc, packs that block of W^T
// (kKc x kNc, L2) once for the whole run as panels of NR columns, and for each kMc-row block
// packs that block of x (kMc x kKc, L2) as micro-panels of MR rows, then runs MR x NR register
// tiles: each panel (kKc x NR, L1) against every micro-panel in turn. Tasks never wait for each
// other (no barrier: with more threads than cores a barrier waits for a descheduled thread).
constexpr int64_t kKc = 256;
constexpr int64_t kMc = 144;  // a multiple of both kernels' MR
constexpr int64_t kNc = 512;  // a multiple of both kernels' NR

// One panel of W^T from src = &w(first column, k0): k after k, the NR (cols real, then zeros)
// values w(column + j, k0 + k).
template <int NR>
void pack_w_panel_scalar(const float* src, int64_t in, int64_t cols, int64_t kc, float* panel) {
  // k outer: the NR rows of W are read side by side (NR streams), the panel written in order.
  for (int64_t k = 0; k < kc; ++k) {
    for (int64_t j = 0; j < cols; ++j) panel[k * NR + j] = src[j * in + k];
    for (int64_t j = cols; j < NR; ++j) panel[k * NR + j] = 0.0f;
  }
}

// The same for full panels with AVX2: 8 x 8 blocks (8 rows of W x 8 k) transposed in registers
// (a scalar copy ran at about one value per cycle: for few rows of x it cost more than the GEMM).
template <int NR>
__attribute__((target("avx2"))) void pack_w_panel_avx2(const float* src, int64_t in, int64_t kc, float* panel) {
  static_assert(NR % 8 == 0);
  const int64_t k8 = kc / 8 * 8;
  for (int64_t j0 = 0; j0 < NR; j0 += 8) {
    const float* s = src + j0 * in;
    for (int64_t k = 0; k < k8; k += 8) {
      __m256 r0 = _mm256_loadu_ps(s + 0 * in + k), r1 = _mm256_loadu_ps(s + 1 * in + k);
      __m256 r2 = _mm256_loadu_ps(s + 2 * in + k), r3 = _mm256_loadu_ps(s + 3 * in + k);
      __m256 r4 = _mm256_loadu_ps(s + 4 * in + k), r5 = _mm256_loadu_ps(s + 5 * in + k);
      __m256 r6 = _mm256_loadu_ps(s + 6 * in + k), r7 = _mm256_loadu_ps(s + 7 * in + k);
      const __m256 t0 = _mm256_unpacklo_ps(r0, r1), t1 = _mm256_unpackhi_ps(r0, r1);
      const __m256 t2 = _mm256_unpacklo_ps(r2, r3), t3 = _mm256_unpackhi_ps(r2, r3);
      const __m256 t4 = _mm256_unpacklo_ps(r4, r5), t5 = _mm256_unpackhi_ps(r4, r5);
      const __m256 t6 = _mm256_unpacklo_ps(r6, r7), t7 = _mm256_unpackhi_ps(r6, r7);
      const __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE);
      const __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xEE);
      const __m256 u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xEE);
      const __m256 u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xEE);
      float* d = panel + k * NR + j0;
      _mm256_store_ps(d + 0 * NR, _mm256_permute2f128_ps(u0, u4, 0x20));
      _mm256_store_ps(d + 1 * NR, _mm256_permute2f128_ps(u1, u5, 0x20));
      _mm256_store_ps(d + 2 * NR, _mm256_permute2f128_ps(u2, u6, 0x20));
      _mm256_store_ps(d + 3 * NR, _mm256_permute2f128_ps(u3, u7, 0x20));
      _mm256_store_ps(d + 4 * NR, _mm256_permute2f128_ps(u0, u4, 0x31));
      _mm256_store_ps(d + 5 * NR, _mm256_permute2f128_ps(u1, u5, 0x31));
      _mm256_store_ps(d + 6 * NR, _mm256_permute2f128_ps(u2, u6, 0x31));
      _mm256_store_ps(d + 7 * NR, _mm256_permute2f128_ps(u3, u7, 0x31));
    }
    for (int64_t k = k8; k < kc; ++k)
      for (int64_t j = 0; j < 8; ++j) panel[k * NR + j0 + j] = s[j * in + k];
  }
}

// Panel p of NR columns of W^T for k in [k0, k0 + kc) and columns [c0, c0 + nc): k after k,
// w(c0 + p * NR + j, k0 + k) for j < NR, zero past nc.
template <int NR>
void pack_w_panel(const float* w, int64_t in, int64_t c0, int64_t nc, int64_t k0, int64_t kc, int64_t p,
                  float* dst) {
  float* panel = dst + p * kc * NR;
  const int64_t cols = std::min<int64_t>(NR, nc - p * NR);
  const float* src = w + (c0 + p * NR) * in + k0;
  if (cols == NR)
    pack_w_panel_avx2<NR>(src, in, kc, panel);
  else
    pack_w_panel_scalar<NR>(src, in, cols, kc, panel);
}

// Micro-panels of MR rows of x for k in [k0, k0 + kc) and rows [r0, r0 + rows): micro-panel q
// holds, k after k, x(r0 + q * MR + i, k0 + k) for i < MR (the last one only its real rows).
template <int MR>
void pack_x(const float* x, int64_t ldx, int64_t r0, int64_t rows, int64_t k0, int64_t kc, float* dst) {
  for (int64_t q = 0; q * MR < rows; ++q) {
    float* panel = dst + q * kc * MR;
    const int64_t mr = std::min<int64_t>(MR, rows - q * MR);
    const float* src = x + (r0 + q * MR) * ldx + k0;
    if (mr == MR) {
      for (int64_t k = 0; k < kc; ++k)
        for (int64_t i = 0; i < MR; ++i) panel[k * MR + i] = src[i * ldx + k];
    } else {
      for (int64_t k = 0; k < kc; ++k)
        for (int64_t i = 0; i < mr; ++i) panel[k * MR + i] = src[i * ldx + k];
    }
  }
}

// c[r, 0..NR) (row stride ldc) for rows r < R: the running sums of micro-panel a against panel b
// over kc steps of k, one fma per k and output, in k order, from 0 when `first`, else from what c
// holds (the sums of the earlier k blocks).
struct Avx2 {
  static constexpr int MR = 6, NR = 16;
  template <int R>
  __attribute__((target("avx2,fma"))) static void tile(int64_t kc, const float* a, const float* b, float* c,
                                                        int64_t ldc, bool first) {
    __m256 acc0[R], acc1[R];
#pragma GCC unroll 6
    for (int r = 0; r < R; ++r) {
      acc0[r] = first ? _mm256_setzero_ps() : _mm256_loadu_ps(c + r * ldc);
      acc1[r] = first ? _mm256_setzero_ps() : _mm256_loadu_ps(c + r * ldc + 8);
    }
#pragma GCC unroll 4
    for (int64_t k = 0; k < kc; ++k) {
      const __m256 b0 = _mm256_load_ps(b + k * NR), b1 = _mm256_load_ps(b + k * NR + 8);
#pragma GCC unroll 6
      for (int r = 0; r < R; ++r) {
        const __m256 ar = _mm256_broadcast_ss(a + k * MR + r);
        acc0[r] = _mm256_fmadd_ps(ar, b0, acc0[r]);
        acc1[r] = _mm256_fmadd_ps(ar, b1, acc1[r]);
      }
    }
#pragma GCC unroll 6
    for (int r = 0; r < R; ++r) {
      _mm256_storeu_ps(c + r * ldc, acc0[r]);
      _mm256_storeu_ps(c + r * ldc + 8, acc1[r]);
    }
  }
  static void run(int rows, int64_t kc, const float* a, const float* b, float* c, int64_t ldc, bool first) {
    switch (rows) {
      case 6: return tile<6>(kc, a, b, c, ldc, first);
      case 5: return tile<5>(kc, a, b, c, ldc, first);
      case 4: return tile<4>(kc, a, b, c, ldc, first);
      case 3: return tile<3>(kc, a, b, c, ldc, first);
      case 2: return tile<2>(kc, a, b, c, ldc, first);
      default: return tile<1>(kc, a, b, c, ldc, first);
    }
  }
};

struct Avx512 {
  static constexpr int MR = 12, NR = 32;
  template <int R>
  __attribute__((target("avx512f"))) static void tile(int64_t kc, const float* a, const float* b, float* c,
                                                       int64_t ldc, bool first) {
    __m512 acc0[R], acc1[R];
#pragma GCC unroll 12
    for (int r = 0; r < R; ++r) {
      acc0[r] = first ? _mm512_setzero_ps() : _mm512_loadu_ps(c + r * ldc);
      acc1[r] = first ? _mm512_setzero_ps() : _mm512_loadu_ps(c + r * ldc + 16);
    }
#pragma GCC unroll 2
    for (int64_t k = 0; k < kc; ++k) {
      const __m512 b0 = _mm512_load_ps(b + k * NR), b1 = _mm512_load_ps(b + k * NR + 16);
#pragma GCC unroll 12
      for (int r = 0; r < R; ++r) {
        const __m512 ar = _mm512_set1_ps(a[k * MR + r]);
        acc0[r] = _mm512_fmadd_ps(ar, b0, acc0[r]);
        acc1[r] = _mm512_fmadd_ps(ar, b1, acc1[r]);
      }
    }
#pragma GCC unroll 12
    for (int r = 0; r < R; ++r) {
      _mm512_storeu_ps(c + r * ldc, acc0[r]);
      _mm512_storeu_ps(c + r * ldc + 16, acc1[r]);
    }
  }
  static void run(int rows, int64_t kc, const float* a, const float* b, float* c, int64_t ldc, bool first) {
    switch (rows) {
      case 12: return tile<12>(kc, a, b, c, ldc, first);
      case 11: return tile<11>(kc, a, b, c, ldc, first);
      case 10: return tile<10>(kc, a, b, c, ldc, first);
      case 9: return tile<9>(kc, a, b, c, ldc, first);
      case 8: return tile<8>(kc, a, b, c, ldc, first);
      case 7: return tile<7>(kc, a, b, c, ldc, first);
      case 6: return tile<6>(kc, a, b, c, ldc, first);
      case 5: return tile<5>(kc, a, b, c, ldc, first);
      case 4: return tile<4>(kc, a, b, c, ldc, first);
      case 3: return tile<3>(kc, a, b, c, ldc, first);
      case 2: return tile<2>(kc, a, b, c, ldc, first);
      default: return tile<1>(kc, a, b, c, ldc, first);
    }
  }
};

struct TaskBuffers {  // 64-byte aligned: the kernels' aligned panel loads
  UninitBuffer<float> w_panels;  // kKc x kNc
  UninitBuffer<float> x_panels;  // kMc x kKc
  UninitBuffer<float> edge;      // MR x NR: a tile past the last column, written back in part
};

template <typename K>
void gemm_tiled(const float* x, int64_t ldx, int64_t n, int64_t in, const float* w, int64_t out, float* y,
                int64_t ldy) {
  constexpr int MR = K::MR, NR = K::NR;
  static_assert(kMc % MR == 0 && kNc % NR == 0);
  // Runs of row blocks as long as about three tasks per thread allow: W is read once per run.
  const int64_t col_tasks = (out + kNc - 1) / kNc, row_blocks = (n + kMc - 1) / kMc;
  const int64_t threads = omp_get_max_threads();
  const int64_t runs = std::clamp<int64_t>((3 * threads + col_tasks - 1) / col_tasks, 1, row_blocks);
  const int64_t blocks_per_run = (row_blocks + runs - 1) / runs;
  const int64_t row_tasks = (row_blocks + blocks_per_run - 1) / blocks_per_run;
  const int64_t tasks = row_tasks * col_tasks;
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t task = 0; task < tasks; ++task) {
    // Column task major: tasks running at the same time read the same rows of W.
    const int64_t run_r0 = (task % row_tasks) * blocks_per_run * kMc;
    const int64_t run_end = std::min(n, run_r0 + blocks_per_run * kMc);
    const int64_t c0 = (task / row_tasks) * kNc, nc = std::min(kNc, out - c0);
    const int64_t panels = (nc + NR - 1) / NR;
    thread_local TaskBuffers buf;
    float* wp = buf.w_panels.fit(kKc * kNc);
    float* xp = buf.x_panels.fit(kMc * kKc);
    float* edge = buf.edge.fit(MR * NR);
    for (int64_t k0 = 0; k0 < in; k0 += kKc) {
      const int64_t kc = std::min(kKc, in - k0);
      const bool first = k0 == 0;
      for (int64_t p = 0; p < panels; ++p) pack_w_panel<NR>(w, in, c0, nc, k0, kc, p, wp);
      for (int64_t r0 = run_r0; r0 < run_end; r0 += kMc) {
        const int64_t rows = std::min(kMc, run_end - r0);
        pack_x<MR>(x, ldx, r0, rows, k0, kc, xp);
        for (int64_t p = 0; p < panels; ++p) {
          const int64_t cols = std::min<int64_t>(NR, nc - p * NR);
          const float* b = wp + p * kc * NR;
          for (int64_t q = 0; q * MR < rows; ++q) {
            const int mr = static_cast<int>(std::min<int64_t>(MR, rows - q * MR));
            const float* a = xp + q * kc * MR;
            float* c = y + (r0 + q * MR) * ldy + c0 + p * NR;
            // The next tile's rows of y, fetched while this one runs: a tile starts from what y
            // holds, and y (all the run's rows) left the caches since the last k block.
            {
              const bool next_q = (q + 1) * MR < rows;
              const float* cn = next_q ? c + MR * ldy : y + r0 * ldy + c0 + (p + 1) * NR;
              const int64_t nrows = next_q ? std::min<int64_t>(MR, rows - (q + 1) * MR) : std::min<int64_t>(MR, rows);
              if (next_q || p + 1 < panels)
                for (int64_t i = 0; i < nrows; ++i) {
                  __builtin_prefetch(cn + i * ldy, 1, 3);
                  __builtin_prefetch(cn + i * ldy + NR - 1, 1, 3);
                }
            }
            if (cols == NR) {
              K::run(mr, kc, a, b, c, ldy, first);
            } else {
              // The last columns: the same sums on an NR-wide copy, the real columns copied back.
              if (!first)
                for (int i = 0; i < mr; ++i) std::memcpy(edge + i * NR, c + i * ldy, static_cast<std::size_t>(cols) * sizeof(float));
              K::run(mr, kc, a, b, edge, NR, first);
              for (int i = 0; i < mr; ++i) std::memcpy(c + i * ldy, edge + i * NR, static_cast<std::size_t>(cols) * sizeof(float));
            }
          }
        }
      }
    }
  }
}

// For CPUs without FMA: the definition itself (std::fma rounds once, as the vector kernels do).
void gemm_scalar(const float* x, int64_t ldx, int64_t n, int64_t in, const float* w, int64_t out, float* y,
                 int64_t ldy) {
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < n; ++r)
    for (int64_t c = 0; c < out; ++c) {
      float acc = 0.0f;
      for (int64_t k = 0; k < in; ++k) acc = std::fma(x[r * ldx + k], w[c * in + k], acc);
      y[r * ldy + c] = acc;
    }
}

}  // namespace

GemmIsa best_gemm_isa() {
  static const GemmIsa isa = [] {
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f")) return GemmIsa::kAvx512;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return GemmIsa::kAvx2;
    return GemmIsa::kScalar;
  }();
  return isa;
}

void matmul_f32_fixed_order(const float* x, int64_t ldx, int64_t n, int64_t in, const float* w, int64_t out,
                            float* y, int64_t ldy, GemmIsa isa) {
  CTCAL_ASSERT(n >= 0 && in >= 0 && out >= 0 && ldx >= in && ldy >= out, "matmul_f32_fixed_order: bad shape");
  if (n == 0 || out == 0) return;
  if (in == 0) {  // empty sums
    for (int64_t r = 0; r < n; ++r) std::fill(y + r * ldy, y + r * ldy + out, 0.0f);
    return;
  }
  switch (isa) {
    case GemmIsa::kAvx512: return gemm_tiled<Avx512>(x, ldx, n, in, w, out, y, ldy);
    case GemmIsa::kAvx2: return gemm_tiled<Avx2>(x, ldx, n, in, w, out, y, ldy);
    case GemmIsa::kScalar: return gemm_scalar(x, ldx, n, in, w, out, y, ldy);
  }
}

}  // namespace ctcal
