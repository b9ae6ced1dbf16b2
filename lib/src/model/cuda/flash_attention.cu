// The fused attention kernel; see flash_attention.h for the contract. Layout of the work:
//
//   CTA (head h, item): W warps, each owning 16 of the item's 16 W query rows (W = 4 or 8).
//   shared memory:  Q [16 W, D]  |  K [2][BC, D]  |  V [2][BC, D]   (bf16, rows padded by 8 elements
//                   so that the 8 rows an ldmatrix reads fall in 8 different bank groups)
//   per key tile t: cp.async brings tile t + 1 while the warps compute tile t;
//                   S [16, BC] = Q K^T          (mma.m16n8k16, fp32 accumulators in registers)
//                   online softmax of S in base 2 (scale * log2(e) folded in), P rounded to bf16
//                   O [16, D] += P V            (P straight from S's accumulators: the m16n8
//                                                C layout of two key tiles is the m16k16 A layout)
//
// D: head_dim rounded up to a multiple of 16 (zero columns change nothing); BC: keys per tile.
#include "flash_attention.h"

#include <cuda_bf16.h>

#include <algorithm>
#include <climits>
#include <cmath>
#include <stdexcept>
#include <string>

namespace ctcal::cuda {

namespace {

constexpr float kLog2e = 1.4426950408889634f;

template <int D, int W>
struct Tiling {
  static constexpr int kRows = 16 * W;              // query rows per CTA
  static constexpr int kThreads = 32 * W;
  static constexpr int kKeys = D <= 128 ? 64 : 32;  // D = 256: fewer keys keep O and S in registers
  static constexpr int kStride = D + 8;             // elements per shared-memory row
  static constexpr std::size_t kSmemBytes = static_cast<std::size_t>(kRows + 4 * kKeys) * kStride * 2;
};

struct Params {
  const uint16_t* q;
  const uint16_t* k;
  const uint16_t* v;
  float* out;          // [rows, q_ld] fp32, or null when
  uint16_t* out_bf16;  // [rows, q_ld] bf16 is written instead
  int64_t q_ld, kv_ld;
  int head_dim, rep;
  int window;        // clamped to INT_MAX
  float scale_log2;  // scale * log2(e)
  const float* sinks;
  const FlashItem* items;
};

__device__ __forceinline__ uint32_t smem_address(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// 16 bytes global -> shared without passing through registers; zeros when !valid.
__device__ __forceinline__ void copy16_async(void* smem, const void* gmem, bool valid) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_address(smem)), "l"(gmem),
               "r"(valid ? 16 : 0));
}
__device__ __forceinline__ void commit_async() { asm volatile("cp.async.commit_group;\n" ::); }
// Waits until at most `pending` of this thread's committed groups are still in flight.
template <int pending>
__device__ __forceinline__ void wait_async() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(pending));
}

// Four 8x8 bf16 matrices from shared memory (lane i gives the row address of matrix i / 8).
__device__ __forceinline__ void load_matrices(uint32_t (&r)[4], const uint16_t* row) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_address(row)));
}
__device__ __forceinline__ void load_matrices_transposed(uint32_t (&r)[4], const uint16_t* row) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_address(row)));
}

// c [16, 8] fp32 += a [16, 16] bf16 . b [16, 8] bf16 (one warp).
__device__ __forceinline__ void mma(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
  const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);  // .x (lo) in the low half
  return *reinterpret_cast<const uint32_t*>(&v);
}

// rows [ROWS, D] of a [*, ld] bf16 tensor -> shared memory; rows >= valid_rows and columns >=
// head_dim become zeros (head_dim is a multiple of 8: a 16-byte piece is all in or all out).
template <int D, int W, int ROWS>
__device__ __forceinline__ void load_tile(uint16_t* smem, const uint16_t* g, int64_t ld, int valid_rows, int head_dim) {
  constexpr int kPieces = D / 8;
  for (int i = threadIdx.x; i < ROWS * kPieces; i += Tiling<D, W>::kThreads) {
    const int r = i / kPieces, c = i % kPieces;
    const bool valid = r < valid_rows && c * 8 < head_dim;
    copy16_async(smem + r * Tiling<D, W>::kStride + c * 8, valid ? g + r * ld + c * 8 : g, valid);
  }
}

template <int D, int W>
__global__ void __launch_bounds__(Tiling<D, W>::kThreads) flash_kernel(Params p) {
  constexpr int BC = Tiling<D, W>::kKeys, S = Tiling<D, W>::kStride, ROWS = Tiling<D, W>::kRows;
  extern __shared__ __align__(16) uint16_t smem[];
  uint16_t* q_s = smem;               // [ROWS, S]
  uint16_t* k_s = q_s + ROWS * S;     // [2, BC, S]
  uint16_t* v_s = k_s + 2 * BC * S;   // [2, BC, S]

  const FlashItem item = p.items[blockIdx.y];
  const int h = static_cast<int>(blockIdx.x), g = h / p.rep;
  const int warp = static_cast<int>(threadIdx.x) >> 5, lane = static_cast<int>(threadIdx.x) & 31;
  const int gid = lane >> 2, tig = lane & 3;  // the mma fragments' row group and column pair
  const int q0 = item.q0, len = item.length;
  const int q_last = min(q0 + ROWS, len) - 1;
  // Keys [k_begin, q_last]: what the block's first query may see back to its last query.
  const int k_begin = q0 >= p.window ? q0 - p.window + 1 : 0;
  const int n_tiles = (q_last + 1 - k_begin + BC - 1) / BC;
  const uint16_t* q_g = p.q + (static_cast<int64_t>(item.row0) + q0) * p.q_ld + static_cast<int64_t>(h) * p.head_dim;
  const uint16_t* k_g = p.k + static_cast<int64_t>(item.row0) * p.kv_ld + static_cast<int64_t>(g) * p.head_dim;
  const uint16_t* v_g = p.v + static_cast<int64_t>(item.row0) * p.kv_ld + static_cast<int64_t>(g) * p.head_dim;

  auto load_keys = [&](int t) {
    const int kt = k_begin + t * BC, valid = min(BC, q_last + 1 - kt);
    load_tile<D, W, BC>(k_s + (t & 1) * BC * S, k_g + static_cast<int64_t>(kt) * p.kv_ld, p.kv_ld, valid, p.head_dim);
    load_tile<D, W, BC>(v_s + (t & 1) * BC * S, v_g + static_cast<int64_t>(kt) * p.kv_ld, p.kv_ld, valid, p.head_dim);
  };
  load_tile<D, W, ROWS>(q_s, q_g, p.q_ld, q_last + 1 - q0, p.head_dim);
  load_keys(0);
  commit_async();

  // Rows gid and gid + 8 of this warp's 16: running max (base 2), this thread's share of the
  // running sum (the row's four threads add theirs at the end), output accumulators.
  const int row_a = q0 + warp * 16 + gid, row_b = row_a + 8;
  float m[2], l[2];
  if (p.sinks) {  // the sink is one more logit per row: it starts the max and the sum
    m[0] = m[1] = p.sinks[h] * kLog2e;
    l[0] = l[1] = tig == 0 ? 1.0f : 0.0f;
  } else {
    m[0] = m[1] = -INFINITY;
    l[0] = l[1] = 0.0f;
  }
  float o[D / 8][4];  // [d tiles of 8][c0..c3]: rows gid (c0, c1) and gid + 8 (c2, c3)
#pragma unroll
  for (int i = 0; i < D / 8; ++i) o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0.0f;
  uint32_t qf[D / 16][4];  // this warp's Q rows as A fragments, one per 16 columns

  for (int t = 0; t < n_tiles; ++t) {
    const int kt = k_begin + t * BC;
    if (t + 1 < n_tiles) load_keys(t + 1);
    commit_async();   // (an empty group on the last tile keeps the count uniform)
    wait_async<1>();  // everything but tile t + 1 has landed
    __syncthreads();
    if (t == 0) {
#pragma unroll
      for (int kk = 0; kk < D / 16; ++kk)
        load_matrices(qf[kk], q_s + (warp * 16 + (lane & 15)) * S + kk * 16 + (lane >> 4) * 8);
    }
    const uint16_t* kb = k_s + (t & 1) * BC * S;
    const uint16_t* vb = v_s + (t & 1) * BC * S;

    // S [16, BC] = Q K^T: B fragments are K's rows (keys) as stored, 16 keys per ldmatrix.x4.
    float sc[BC / 8][4];
#pragma unroll
    for (int i = 0; i < BC / 8; ++i) sc[i][0] = sc[i][1] = sc[i][2] = sc[i][3] = 0.0f;
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk) {
#pragma unroll
      for (int nt = 0; nt < BC / 16; ++nt) {
        uint32_t b[4];
        load_matrices(b, kb + (nt * 16 + (lane & 7) + ((lane >> 4) << 3)) * S + kk * 16 + ((lane >> 3) & 1) * 8);
        mma(sc[2 * nt], qf[kk], b[0], b[1]);
        mma(sc[2 * nt + 1], qf[kk], b[2], b[3]);
      }
    }

    // Scale to base-2 logits and mask: key k is seen by query q when k <= q and q - k < window.
    // Only tiles that reach past the block's first query or behind its last query's window
    // need the test.
    const bool masked = kt + BC - 1 > q0 || q_last - kt >= p.window;
    float tile_max[2] = {-INFINITY, -INFINITY};
#pragma unroll
    for (int nt = 0; nt < BC / 8; ++nt) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        float x = sc[nt][e] * p.scale_log2;
        if (masked) {
          const int key = kt + nt * 8 + tig * 2 + (e & 1), row = e < 2 ? row_a : row_b;
          if (key > row || row - key >= p.window) x = -INFINITY;
        }
        sc[nt][e] = x;
        tile_max[e >> 1] = fmaxf(tile_max[e >> 1], x);
      }
    }
    float shift[2];  // the new running max, or 0 while a row has seen nothing (avoids inf - inf)
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      tile_max[r] = fmaxf(tile_max[r], __shfl_xor_sync(0xffffffffu, tile_max[r], 1));
      tile_max[r] = fmaxf(tile_max[r], __shfl_xor_sync(0xffffffffu, tile_max[r], 2));
      const float m_new = fmaxf(m[r], tile_max[r]);
      shift[r] = m_new == -INFINITY ? 0.0f : m_new;
      const float rescale = exp2f(m[r] - shift[r]);
      m[r] = m_new;
      l[r] *= rescale;
#pragma unroll
      for (int i = 0; i < D / 8; ++i) {
        o[i][2 * r] *= rescale;
        o[i][2 * r + 1] *= rescale;
      }
    }
#pragma unroll
    for (int nt = 0; nt < BC / 8; ++nt) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const float pv = exp2f(sc[nt][e] - shift[e >> 1]);
        sc[nt][e] = pv;
        l[e >> 1] += pv;
      }
    }

    // O [16, D] += P V: P's A fragment for keys [16 kk, 16 kk + 16) is S's accumulators of key
    // tiles 2 kk and 2 kk + 1; V's B fragments come transposed from its stored rows.
#pragma unroll
    for (int kk = 0; kk < BC / 16; ++kk) {
      const uint32_t a[4] = {pack_bf16(sc[2 * kk][0], sc[2 * kk][1]), pack_bf16(sc[2 * kk][2], sc[2 * kk][3]),
                             pack_bf16(sc[2 * kk + 1][0], sc[2 * kk + 1][1]),
                             pack_bf16(sc[2 * kk + 1][2], sc[2 * kk + 1][3])};
#pragma unroll
      for (int dt = 0; dt < D / 16; ++dt) {
        uint32_t b[4];
        load_matrices_transposed(b, vb + (kk * 16 + (lane & 7) + ((lane >> 3) & 1) * 8) * S + dt * 16 + (lane >> 4) * 8);
        mma(o[2 * dt], a, b[0], b[1]);
        mma(o[2 * dt + 1], a, b[2], b[3]);
      }
    }
    __syncthreads();  // tile t's buffers are refilled by the next iteration's loads
  }

  // Normalize (each row's sum is spread over its four threads) and write fp32 or bf16.
  const int rows_valid = q_last + 1 - q0;
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    l[r] += __shfl_xor_sync(0xffffffffu, l[r], 1);
    l[r] += __shfl_xor_sync(0xffffffffu, l[r], 2);
    const int local = warp * 16 + gid + 8 * r;
    if (local >= rows_valid) continue;
    const float inv = 1.0f / l[r];
    const int64_t at = (static_cast<int64_t>(item.row0) + q0 + local) * p.q_ld + static_cast<int64_t>(h) * p.head_dim;
#pragma unroll
    for (int i = 0; i < D / 8; ++i) {
      const int col = i * 8 + tig * 2;
      if (col >= p.head_dim) continue;
      const float lo = o[i][2 * r] * inv, hi = o[i][2 * r + 1] * inv;
      if (p.out_bf16)  // the two columns' bf16 values as one 32-bit store (lo at the lower address)
        *reinterpret_cast<__nv_bfloat162*>(p.out_bf16 + at + col) = __floats2bfloat162_rn(lo, hi);
      else
        *reinterpret_cast<float2*>(p.out + at + col) = make_float2(lo, hi);
    }
  }
}

template <int D, int W>
void launch(const Params& p, int64_t heads, int64_t n_items, cudaStream_t stream) {
  using T = Tiling<D, W>;
  static bool configured = false;  // the dynamic shared memory above 48 KB needs an opt-in, once
  if (!configured) {
    const cudaError_t e = cudaFuncSetAttribute(flash_kernel<D, W>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                               static_cast<int>(T::kSmemBytes));
    if (e != cudaSuccess) throw std::runtime_error(std::string("flash attention: ") + cudaGetErrorString(e));
    configured = true;
  }
  for (int64_t i0 = 0; i0 < n_items; i0 += 65535) {  // gridDim.y is at most 65535
    Params part = p;
    part.items = p.items + i0;
    const dim3 grid(static_cast<unsigned>(heads), static_cast<unsigned>(std::min<int64_t>(65535, n_items - i0)));
    flash_kernel<D, W><<<grid, T::kThreads, T::kSmemBytes, stream>>>(part);
  }
  const cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess) throw std::runtime_error(std::string("flash attention launch: ") + cudaGetErrorString(e));
}

template <int W>
void by_head_dim(const Params& p, int64_t head_dim, int64_t heads, int64_t n_items, cudaStream_t stream) {
  if (head_dim <= 16) return launch<16, W>(p, heads, n_items, stream);
  if (head_dim <= 32) return launch<32, W>(p, heads, n_items, stream);
  if (head_dim <= 64) return launch<64, W>(p, heads, n_items, stream);
  if (head_dim <= 96) return launch<96, W>(p, heads, n_items, stream);
  if (head_dim <= 128) return launch<128, W>(p, heads, n_items, stream);
  return launch<256, W>(p, heads, n_items, stream);
}

}  // namespace

bool flash_attention_supports(int64_t head_dim) { return head_dim > 0 && head_dim % 8 == 0 && head_dim <= 256; }

std::vector<FlashItem> flash_items(const std::vector<SampleSpan>& spans, int query_rows) {
  std::vector<FlashItem> items;
  for (const auto& s : spans)
    for (int64_t q0 = 0; q0 < s.length; q0 += query_rows)
      items.push_back({static_cast<int32_t>(s.offset), static_cast<int32_t>(s.length), static_cast<int32_t>(q0), 0});
  // Heaviest first: the later a block's queries, the more keys (up to the window) it reads.
  std::stable_sort(items.begin(), items.end(), [](const FlashItem& a, const FlashItem& b) { return a.q0 > b.q0; });
  return items;
}

void flash_attention(const uint16_t* q, const uint16_t* k, const uint16_t* v, FlashOutput out, int64_t q_ld, int64_t kv_ld,
                     int64_t heads, int64_t kv_heads, int64_t head_dim, int64_t window, float scale,
                     const float* sinks, const FlashItem* items, int64_t n_items, int query_rows,
                     cudaStream_t stream) {
  if (n_items == 0 || heads == 0) return;
  if (query_rows != 64 && query_rows != 128)
    throw std::invalid_argument("flash attention: query_rows must be 64 or 128, not " + std::to_string(query_rows));
  if (!flash_attention_supports(head_dim))
    throw std::invalid_argument("flash attention: head_dim " + std::to_string(head_dim) + " is not supported");
  if ((out.f32 == nullptr) == (out.bf16 == nullptr))
    throw std::invalid_argument("flash attention: exactly one of the fp32 and bf16 outputs must be given");
  const Params p{q, k, v, out.f32, out.bf16, q_ld, kv_ld, static_cast<int>(head_dim), static_cast<int>(heads / kv_heads),
                 static_cast<int>(std::min<int64_t>(window, INT_MAX)), scale * kLog2e, sinks, items};
  if (query_rows == 128) return by_head_dim<8>(p, head_dim, heads, n_items, stream);
  return by_head_dim<4>(p, head_dim, heads, n_items, stream);
}

}  // namespace ctcal::cuda
