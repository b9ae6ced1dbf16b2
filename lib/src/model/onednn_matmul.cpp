#include "ctcal/model/onednn_matmul.h"

#include <dnnl.hpp>

#include <cstdlib>
#include <cstring>
#include <string>
#include <map>
#include <mutex>
#include <tuple>

#include "ctcal/dtype.h"
#include "ctcal/error.h"

namespace ctcal {

namespace {

struct Engine {
  dnnl::engine engine{dnnl::engine::kind::cpu, 0};
  dnnl::stream stream{engine};
  std::map<std::tuple<int64_t, int64_t, int64_t>, dnnl::matmul> cache;  // (n, in, out)
  std::mutex mu;
};

Engine& engine() {
  static Engine e;
  return e;
}

}  // namespace

bool cpu_has_native_bf16() {
  const auto isa = dnnl::get_effective_cpu_isa();
  return isa == dnnl::cpu_isa::avx512_core_bf16 || isa == dnnl::cpu_isa::avx512_core_amx;
}

void matmul_bf16(const Eigen::Ref<const RowMatrix>& x, const std::vector<uint16_t>& w, int64_t out,
                 Eigen::Ref<RowMatrix> y) {
  using dt = dnnl::memory::data_type;
  using tag = dnnl::memory::format_tag;
  const int64_t n = x.rows(), in = x.cols();
  CTCAL_ASSERT(static_cast<int64_t>(w.size()) == in * out, "bf16 weight size");
  Engine& e = engine();
  std::lock_guard<std::mutex> lock(e.mu);  // one stream; calls come from the layer loop only
  // Activations rounded to bf16, row-major [n, in].
  std::vector<uint16_t> xb(static_cast<std::size_t>(n * in));
  for (int64_t r = 0; r < n; ++r) {
    const float* src = x.data() + r * x.outerStride();
    uint16_t* dst = xb.data() + r * in;
    // Round to nearest even without the NaN branch of f32_to_bf16, so the loop vectorises
    // (activations are finite: every layer's output is checked).
    for (int64_t c = 0; c < in; ++c) {
      uint32_t bits;
      std::memcpy(&bits, src + c, 4);
      dst[c] = static_cast<uint16_t>((bits + 0x7FFFu + ((bits >> 16) & 1u)) >> 16);
    }
  }
  const dnnl::memory::desc src_md({n, in}, dt::bf16, tag::ab);
  const dnnl::memory::desc wei_md({in, out}, dt::bf16, tag::ba);  // W^T as a view of [out, in]
  const dnnl::memory::desc dst_md({n, out}, dt::f32, tag::ab);
  auto key = std::make_tuple(n, in, out);
  auto it = e.cache.find(key);
  if (it == e.cache.end())
    it = e.cache.emplace(key, dnnl::matmul(dnnl::matmul::primitive_desc(dnnl::matmul::desc(src_md, wei_md, dst_md), e.engine))).first;
  CTCAL_ASSERT(y.outerStride() == out, "bf16 matmul writes a dense [n, out] view");
  dnnl::memory src(src_md, e.engine, xb.data());
  dnnl::memory wei(wei_md, e.engine, const_cast<uint16_t*>(w.data()));
  dnnl::memory dst(dst_md, e.engine, y.data());
  it->second.execute(e.stream, {{DNNL_ARG_SRC, src}, {DNNL_ARG_WEIGHTS, wei}, {DNNL_ARG_DST, dst}});
  e.stream.wait();
}

bool use_onednn_f32() {
  static const bool on = [] {
    const char* v = std::getenv("CTCAL_GEMM");
    return !(v && std::string(v) == "eigen");
  }();
  return on;
}

void matmul_f32_onednn(const Eigen::Ref<const RowMatrix>& x, const RowMatrix& w, Eigen::Ref<RowMatrix> y) {
  using dt = dnnl::memory::data_type;
  using tag = dnnl::memory::format_tag;
  const int64_t n = x.rows(), in = x.cols(), out = w.rows();
  Engine& e = engine();
  std::lock_guard<std::mutex> lock(e.mu);
  CTCAL_ASSERT(x.outerStride() == in && y.outerStride() == out, "dense views");
  const dnnl::memory::desc src_md({n, in}, dt::f32, tag::ab);
  const dnnl::memory::desc wei_md({in, out}, dt::f32, tag::ba);
  const dnnl::memory::desc dst_md({n, out}, dt::f32, tag::ab);
  auto key = std::make_tuple(-n, in, out);  // negative n: the f32 entries of the cache
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
