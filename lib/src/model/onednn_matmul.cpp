#include "ctcal/model/onednn_matmul.h"

#include <dnnl.hpp>
#include <omp.h>

#include <algorithm>
#include <cstring>
#include <exception>
#include <map>
#include <memory>
#include <new>
#include <mutex>
#include <string>
#include <tuple>
#include <vector>

#include "ctcal/error.h"
#include "ctcal/util/uninit_buffer.h"

namespace ctcal {

namespace {

using dt = dnnl::memory::data_type;
using tag = dnnl::memory::format_tag;
using dims = dnnl::memory::dims;

struct Engine {
  dnnl::engine engine{dnnl::engine::kind::cpu, 0};
  dnnl::stream stream{engine};
  // Primitives by (kind, rows, in, cols, out): creating one JIT-compiles kernels (milliseconds),
  // and calibration calls the same few shapes thousands of times.
  struct Kernel {
    dnnl::matmul prim;
    int64_t scratch_bytes = 0;  // user scratchpad size
  };
  std::map<std::tuple<int, int64_t, int64_t, int64_t, int64_t>, Kernel> cache;
  // Weight packing by tile shape (in, cols): the packed layout and the reorder into it. Every
  // layer packs the same few shapes; planning them per tile cost more than the copies.
  struct Packer {
    dnnl::memory::desc packed;  // [in, cols] in the layout the tile kernels read
    dnnl::reorder prim;         // plain W^T tile [in, cols] (tag ba) -> packed
  };
  std::map<std::pair<int64_t, int64_t>, Packer> packers;
  std::mutex mu;  // guards the maps; calls come from the layer loop, one at a time
};

Engine& engine() {
  static Engine e;
  return e;
}

// bf16 GEMMs run as a grid of fixed tiles, kTileRows x kTileCols of the output, each computed
// whole (all of `in`) by one thread with a single-threaded oneDNN kernel. oneDNN's own threading
// picks its blocking, and so its fp32 summation order, from the thread count: on the GPU
// machine's AMX, --threads 1, 2 and 16 gave three different results. Fixed tiles make every
// output element's sum the same for any thread count. 512 columns of bf16 weights for `in`
// 1024-2048 are 1-2 MB: a tile's weights stay in L2 while its rows stream past.
constexpr int64_t kTileRows = 256;
constexpr int64_t kTileCols = 512;

// Runs `create` with OpenMP's thread count at 1: oneDNN reads it to plan a primitive's
// blocking and threading, and tiles must be planned for the one thread that runs each.
template <typename F>
auto single_threaded(F create) {
  const int saved = omp_get_max_threads();
  omp_set_num_threads(1);
  try {
    auto r = create();
    omp_set_num_threads(saved);
    return r;
  } catch (...) {
    omp_set_num_threads(saved);
    throw;
  }
}

// The packed layout oneDNN's matmul picks for bf16 weights [in, cols] (for any row count the
// choice depends on in/cols and the ISA only: checked for 1..4096 rows; planned for the one thread
// that runs each tile kernel) and the reorder that packs one tile into it.
const Engine::Packer& packer(Engine& e, int64_t in, int64_t cols) {
  auto it = e.packers.find({in, cols});
  if (it != e.packers.end()) return it->second;
  const dnnl::memory::desc packed = single_threaded([&] {
    const dnnl::memory::desc src({kTileRows, in}, dt::bf16, tag::ab);
    const dnnl::memory::desc wei({in, cols}, dt::bf16, tag::any);
    const dnnl::memory::desc dst({kTileRows, cols}, dt::f32, tag::ab);
    return dnnl::matmul::primitive_desc(dnnl::matmul::desc(src, wei, dst), e.engine).weights_desc();
  });
  const dnnl::memory::desc plain({in, cols}, dt::bf16, tag::ba);
  Engine::Packer p{packed, dnnl::reorder(dnnl::reorder::primitive_desc(e.engine, plain, e.engine, packed))};
  return e.packers.emplace(std::make_pair(in, cols), std::move(p)).first->second;
}

// Large packed buffers are reused from layer to layer: each layer's fresh tens of MB would
// otherwise be page-faulted in again (on the GPU machine packing cost more than the GEMMs
// at 16 threads). The pool holds at most what one layer had.
class BufferPool {
 public:
  static BufferPool& get() {
    static BufferPool p;
    return p;
  }
  void* take(std::size_t bytes) {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = free_.find(bytes);
    if (it == free_.end()) return ::operator new(bytes, std::align_val_t(64));
    void* p = it->second;
    free_.erase(it);
    return p;
  }
  void give(void* p, std::size_t bytes) {
    std::lock_guard<std::mutex> lock(mu_);
    free_.emplace(bytes, p);
  }
  ~BufferPool() {
    for (auto& [bytes, p] : free_) ::operator delete(p, std::align_val_t(64));
  }

 private:
  std::multimap<std::size_t, void*> free_;
  std::mutex mu_;
};

// Per-thread stream and scratchpad for tile kernels running concurrently: a oneDNN stream and
// a library-managed scratchpad may not be shared between threads.
struct ThreadContext {
  std::unique_ptr<dnnl::stream> stream;
  UninitBuffer<unsigned char> scratch;
  // TaskMatmulBf16's own, so that the attention's kernels never reallocate the buffer the
  // projections' tiles use between their calls.
  UninitBuffer<unsigned char> task_scratch;
  UninitBuffer<float> tile_out;  // [rows, cols] of one tile, copied into the strided output
};

ThreadContext& thread_context(const dnnl::engine& eng) {
  thread_local ThreadContext ctx;
  if (!ctx.stream) ctx.stream = std::make_unique<dnnl::stream>(eng);
  return ctx;
}

}  // namespace

struct PackedBf16Weights::Impl {
  struct Tile {
    int64_t col0 = 0, cols = 0;
    std::size_t bytes = 0;
    void* data = nullptr;  // from BufferPool
    dnnl::memory mem;      // [in, cols] in oneDNN's packed layout, over `data`
  };
  std::vector<Tile> tiles;  // output columns [col0, col0 + cols)
  ~Impl() {
    for (auto& t : tiles) BufferPool::get().give(t.data, t.bytes);
  }
};

bool cpu_has_native_bf16() {
  const auto isa = dnnl::get_effective_cpu_isa();
  return isa == dnnl::cpu_isa::avx512_core_bf16 || isa == dnnl::cpu_isa::avx512_core_amx;
}

PackedBf16Weights::PackedBf16Weights(const uint16_t* w, int64_t out, int64_t in)
    : out_(out), in_(in), impl_(std::make_unique<Impl>()) {
  Engine& e = engine();
  std::vector<const Engine::Packer*> packers;  // [tiles]
  {
    std::lock_guard<std::mutex> lock(e.mu);
    for (int64_t c0 = 0; c0 < out; c0 += kTileCols) {
      Impl::Tile t;
      t.col0 = c0;
      t.cols = std::min(kTileCols, out - c0);
      packers.push_back(&packer(e, in, t.cols));  // map nodes stay put: the pointer outlives the lock
      t.bytes = packers.back()->packed.get_size();
      t.data = BufferPool::get().take(t.bytes);
      t.mem = dnnl::memory(packers.back()->packed, e.engine, t.data);
      impl_->tiles.push_back(std::move(t));
    }
  }
  // Each reorder is a plain data movement: the packed bytes are the same whoever packs a tile.
  // One tile per thread when the tiles keep at least half the threads busy (threading each small
  // tile cost more than its copy); otherwise (a MoE expert's one or two tiles) each tile with
  // every thread, in turn.
  const auto n_tiles = static_cast<int64_t>(impl_->tiles.size());
  auto pack = [&](int64_t i, dnnl::stream& stream) {
    Impl::Tile& t = impl_->tiles[static_cast<std::size_t>(i)];
    // Rows c0.. of W [out, in] row-major are the columns of W^T [in, out]: tag ba, no copy.
    dnnl::memory plain(dnnl::memory::desc({in, t.cols}, dt::bf16, tag::ba), e.engine,
                       const_cast<uint16_t*>(w + t.col0 * in));
    packers[static_cast<std::size_t>(i)]->prim.execute(stream, plain, t.mem);
    stream.wait();
  };
  if (2 * n_tiles >= omp_get_max_threads()) {
    std::exception_ptr error;  // an exception may not leave the parallel region: kept, rethrown after
    std::mutex error_mu;
#pragma omp parallel for schedule(dynamic, 1)
    for (int64_t i = 0; i < n_tiles; ++i) {
      try {
        pack(i, *thread_context(e.engine).stream);
      } catch (...) {
        std::lock_guard<std::mutex> lock(error_mu);
        if (!error) error = std::current_exception();
      }
    }
    if (error) std::rethrow_exception(error);
  } else {
    std::lock_guard<std::mutex> lock(e.mu);  // e.stream is shared
    for (int64_t i = 0; i < n_tiles; ++i) pack(i, e.stream);
  }
}

PackedBf16Weights::~PackedBf16Weights() = default;

void matmul_bf16(const uint16_t* x, int64_t n, const PackedBf16Weights& w, float* y) {
  Engine& e = engine();
  const int64_t in = w.in(), out = w.out();
  const auto& tiles = w.impl().tiles;
  // The kernels every tile shape needs (full and last row block x full and last column tile),
  // created up front so the parallel loop only reads.
  auto kernel = [&](int64_t rows, int64_t cols, const dnnl::memory::desc& wei) -> const Engine::Kernel* {
    auto key = std::make_tuple(1, rows, in, cols, out);
    auto it = e.cache.find(key);
    if (it == e.cache.end()) {
      const dnnl::memory::desc src({rows, in}, dt::bf16, dims{in, 1});
      // Dense tile output: oneDNN 2.6 falls back to its reference kernel for a strided dst.
      const dnnl::memory::desc dst({rows, cols}, dt::f32, tag::ab);
      dnnl::primitive_attr attr;
      attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
      auto pd = single_threaded([&] {
        return dnnl::matmul::primitive_desc(dnnl::matmul::desc(src, wei, dst), attr, e.engine);
      });
      // A reference kernel here would be ~100x slower: fail loudly instead of crawling.
      CTCAL_ASSERT(std::string(pd.impl_info_str()).rfind("ref", 0) != 0,
                   std::string("oneDNN chose its reference bf16 matmul: ") + pd.impl_info_str());
      it = e.cache.emplace(key, Engine::Kernel{dnnl::matmul(pd), static_cast<int64_t>(pd.scratchpad_desc().get_size())}).first;
    }
    return &it->second;
  };
  const int64_t row_blocks = (n + kTileRows - 1) / kTileRows;
  const auto n_tiles = static_cast<int64_t>(tiles.size());
  // Per column tile: the kernel for full row blocks and the one for the last (shorter) block.
  std::vector<const Engine::Kernel*> full_rows, last_rows;
  {
    std::lock_guard<std::mutex> lock(e.mu);
    for (const auto& t : tiles) {
      full_rows.push_back(kernel(std::min(kTileRows, n), t.cols, t.mem.get_desc()));
      last_rows.push_back(kernel(n - (row_blocks - 1) * kTileRows, t.cols, t.mem.get_desc()));
    }
  }
  const int64_t tasks = row_blocks * n_tiles;
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t task = 0; task < tasks; ++task) {
    // Column tile major: threads running at the same time share a tile's weights in L3.
    const int64_t ti = task / row_blocks, rb = task % row_blocks;
    const auto& tile = tiles[static_cast<std::size_t>(ti)];
    const int64_t r0 = rb * kTileRows, rows = std::min(kTileRows, n - r0);
    const Engine::Kernel& kern = *(rb + 1 == row_blocks ? last_rows : full_rows)[static_cast<std::size_t>(ti)];
    const int64_t scratch_bytes = std::max<int64_t>(kern.scratch_bytes, 1);
    ThreadContext& ctx = thread_context(e.engine);
    dnnl::memory src(dnnl::memory::desc({rows, in}, dt::bf16, dims{in, 1}), e.engine,
                     const_cast<uint16_t*>(x + r0 * in));
    float* tile_out = ctx.tile_out.fit(rows * tile.cols);
    dnnl::memory dst(dnnl::memory::desc({rows, tile.cols}, dt::f32, tag::ab), e.engine, tile_out);
    dnnl::memory scratch(dnnl::memory::desc({scratch_bytes}, dt::u8, tag::a), e.engine, ctx.scratch.fit(scratch_bytes));
    kern.prim.execute(*ctx.stream, {{DNNL_ARG_SRC, src}, {DNNL_ARG_WEIGHTS, tile.mem}, {DNNL_ARG_DST, dst},
                                {DNNL_ARG_SCRATCHPAD, scratch}});
    ctx.stream->wait();
    for (int64_t r = 0; r < rows; ++r)
      std::memcpy(y + (r0 + r) * out + tile.col0, tile_out + r * tile.cols, static_cast<std::size_t>(tile.cols) * sizeof(float));
  }
}

struct TaskMatmulBf16::Impl {
  dnnl::memory::desc a, b, c;
  dnnl::matmul prim;
  int64_t scratch_bytes = 1;
};

TaskMatmulBf16::TaskMatmulBf16(int64_t m, int64_t n, int64_t k, bool b_transposed, int64_t ldb, bool accumulate)
    : impl_(std::make_unique<Impl>()) {
  Engine& e = engine();
  Impl& t = *impl_;
  t.a = dnnl::memory::desc({m, k}, dt::bf16, tag::ab);
  t.b = dnnl::memory::desc({k, n}, dt::bf16, b_transposed ? dims{1, ldb} : dims{ldb, 1});
  t.c = dnnl::memory::desc({m, n}, dt::f32, tag::ab);
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  if (accumulate) {
    dnnl::post_ops ops;
    ops.append_sum(1.0f);
    attr.set_post_ops(ops);
  }
  std::lock_guard<std::mutex> lock(e.mu);
  auto pd = single_threaded([&] { return dnnl::matmul::primitive_desc(dnnl::matmul::desc(t.a, t.b, t.c), attr, e.engine); });
  CTCAL_ASSERT(std::string(pd.impl_info_str()).rfind("ref", 0) != 0,
               std::string("oneDNN chose its reference bf16 matmul: ") + pd.impl_info_str());
  t.prim = dnnl::matmul(pd);
  t.scratch_bytes = std::max<int64_t>(static_cast<int64_t>(pd.scratchpad_desc().get_size()), 1);
}

TaskMatmulBf16::~TaskMatmulBf16() = default;

void TaskMatmulBf16::run(const uint16_t* a, const uint16_t* b, float* c) const {
  const Impl& t = *impl_;
  const dnnl::engine& eng = engine().engine;
  ThreadContext& ctx = thread_context(eng);
  dnnl::memory am(t.a, eng, const_cast<uint16_t*>(a)), bm(t.b, eng, const_cast<uint16_t*>(b)), cm(t.c, eng, c);
  dnnl::memory scratch(dnnl::memory::desc({t.scratch_bytes}, dt::u8, tag::a), eng, ctx.task_scratch.fit(t.scratch_bytes));
  t.prim.execute(*ctx.stream, {{DNNL_ARG_SRC, am}, {DNNL_ARG_WEIGHTS, bm}, {DNNL_ARG_DST, cm}, {DNNL_ARG_SCRATCHPAD, scratch}});
  ctx.stream->wait();
}

void round_to_bf16(const float* x, int64_t n, uint16_t* out) {
  // Round to nearest even without the NaN branch of f32_to_bf16, so the loop vectorises.
  for (int64_t i = 0; i < n; ++i) {
    uint32_t bits;
    std::memcpy(&bits, x + i, 4);
    out[i] = static_cast<uint16_t>((bits + 0x7FFFu + ((bits >> 16) & 1u)) >> 16);
  }
}

void round_rows_to_bf16(const Eigen::Ref<const RowMatrix>& x, uint16_t* out) {
  const int64_t rows = x.rows(), cols = x.cols();
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) round_to_bf16(x.data() + r * x.outerStride(), cols, out + r * cols);
}

}  // namespace ctcal
