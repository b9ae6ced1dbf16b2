#include "ctcal/model/onednn_matmul.h"

#include <dnnl.hpp>

#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <string>
#include <tuple>

#include "ctcal/error.h"

namespace ctcal {

namespace {

using dt = dnnl::memory::data_type;
using tag = dnnl::memory::format_tag;

struct Engine {
  dnnl::engine engine{dnnl::engine::kind::cpu, 0};
  dnnl::stream stream{engine};
  // Primitives by (dtype, n, in, out): creating one JIT-compiles kernels (milliseconds), and
  // calibration calls the same few shapes thousands of times.
  std::map<std::tuple<int, int64_t, int64_t, int64_t>, dnnl::matmul> cache;
  std::mutex mu;  // one stream; calls come from the layer loop, one at a time
};

Engine& engine() {
  static Engine e;
  return e;
}

// The packed layout oneDNN's matmul picks for bf16 weights [in, out]. Rows of 256 stand in for
// any count: the choice depends on in/out and the ISA only (checked for 1..4096 rows).
dnnl::memory::desc packed_desc(Engine& e, int64_t in, int64_t out) {
  const dnnl::memory::desc src({256, in}, dt::bf16, tag::ab);
  const dnnl::memory::desc wei({in, out}, dt::bf16, tag::any);
  const dnnl::memory::desc dst({256, out}, dt::f32, tag::ab);
  return dnnl::matmul::primitive_desc(dnnl::matmul::desc(src, wei, dst), e.engine).weights_desc();
}

}  // namespace

struct PackedBf16Weights::Impl {
  dnnl::memory packed;  // owns its buffer, in the layout of packed.get_desc()
};

bool cpu_has_native_bf16() {
  const auto isa = dnnl::get_effective_cpu_isa();
  return isa == dnnl::cpu_isa::avx512_core_bf16 || isa == dnnl::cpu_isa::avx512_core_amx;
}

PackedBf16Weights::PackedBf16Weights(const uint16_t* w, int64_t out, int64_t in)
    : out_(out), in_(in), impl_(std::make_unique<Impl>()) {
  Engine& e = engine();
  std::lock_guard<std::mutex> lock(e.mu);
  // [out, in] row-major is [in, out] with tag ba: a view, no copy before the reorder.
  dnnl::memory plain(dnnl::memory::desc({in, out}, dt::bf16, tag::ba), e.engine, const_cast<uint16_t*>(w));
  impl_->packed = dnnl::memory(packed_desc(e, in, out), e.engine);
  dnnl::reorder(plain, impl_->packed).execute(e.stream, plain, impl_->packed);
  e.stream.wait();
}

PackedBf16Weights::~PackedBf16Weights() = default;

void matmul_bf16(const uint16_t* x, int64_t n, const PackedBf16Weights& w, float* y) {
  Engine& e = engine();
  std::lock_guard<std::mutex> lock(e.mu);
  const int64_t in = w.in(), out = w.out();
  const dnnl::memory::desc src_md({n, in}, dt::bf16, tag::ab);
  const dnnl::memory::desc dst_md({n, out}, dt::f32, tag::ab);
  dnnl::memory packed = w.impl().packed;  // a handle (shared), not a copy of the data
  dnnl::memory src(src_md, e.engine, const_cast<uint16_t*>(x));
  dnnl::memory dst(dst_md, e.engine, y);
  auto key = std::make_tuple(1, n, in, out);
  auto it = e.cache.find(key);
  if (it == e.cache.end()) {
    try {
      it = e.cache.emplace(key, dnnl::matmul(dnnl::matmul::primitive_desc(
                                    dnnl::matmul::desc(src_md, packed.get_desc(), dst_md), e.engine))).first;
    } catch (const dnnl::error&) {
      // The packed layout was chosen for 256 rows; should a kernel refuse it for this row count,
      // unpack for this call and use the plain layout (slower, same result).
      const dnnl::memory::desc plain_md({in, out}, dt::bf16, tag::ba);
      dnnl::memory plain(plain_md, e.engine);
      dnnl::reorder(packed, plain).execute(e.stream, packed, plain);
      dnnl::matmul(dnnl::matmul::primitive_desc(dnnl::matmul::desc(src_md, plain_md, dst_md), e.engine))
          .execute(e.stream, {{DNNL_ARG_SRC, src}, {DNNL_ARG_WEIGHTS, plain}, {DNNL_ARG_DST, dst}});
      e.stream.wait();
      return;
    }
  }
  it->second.execute(e.stream, {{DNNL_ARG_SRC, src}, {DNNL_ARG_WEIGHTS, packed}, {DNNL_ARG_DST, dst}});
  e.stream.wait();
}

void round_rows_to_bf16(const Eigen::Ref<const RowMatrix>& x, uint16_t* out) {
  const int64_t rows = x.rows(), cols = x.cols();
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    const float* src = x.data() + r * x.outerStride();
    uint16_t* dst = out + r * cols;
    // Round to nearest even without the NaN branch of f32_to_bf16, so the loop vectorises.
    for (int64_t c = 0; c < cols; ++c) {
      uint32_t bits;
      std::memcpy(&bits, src + c, 4);
      dst[c] = static_cast<uint16_t>((bits + 0x7FFFu + ((bits >> 16) & 1u)) >> 16);
    }
  }
}

bool use_onednn_f32() {
  static const bool on = [] {
    const char* v = std::getenv("CTCAL_GEMM");
    return !(v && std::string(v) == "eigen");
  }();
  return on;
}

void matmul_f32_onednn(const Eigen::Ref<const RowMatrix>& x, const RowMatrix& w, Eigen::Ref<RowMatrix> y) {
  const int64_t n = x.rows(), in = x.cols(), out = w.rows();
  Engine& e = engine();
  std::lock_guard<std::mutex> lock(e.mu);
  CTCAL_ASSERT(x.outerStride() == in && y.outerStride() == out, "dense views");
  const dnnl::memory::desc src_md({n, in}, dt::f32, tag::ab);
  const dnnl::memory::desc wei_md({in, out}, dt::f32, tag::ba);
  const dnnl::memory::desc dst_md({n, out}, dt::f32, tag::ab);
  auto key = std::make_tuple(0, n, in, out);
  auto it = e.cache.find(key);
  if (it == e.cache.end())
    it = e.cache.emplace(key, dnnl::matmul(dnnl::matmul::primitive_desc(dnnl::matmul::desc(src_md, wei_md, dst_md), e.engine))).first;
  dnnl::memory src(src_md, e.engine, const_cast<float*>(x.data()));
  dnnl::memory wei(wei_md, e.engine, const_cast<float*>(w.data()));
  dnnl::memory dst(dst_md, e.engine, y.data());
  it->second.execute(e.stream, {{DNNL_ARG_SRC, src}, {DNNL_ARG_WEIGHTS, wei}, {DNNL_ARG_DST, dst}});
  e.stream.wait();
}

}  // namespace ctcal
